"""``bmxgc recover``: undo deletions that have no receipt (the incident's case).

Without ``--auto-approve`` it writes a recovery plan and changes nothing;
with it, it removes the delete markers found, up to 1,000 per request, and
writes a receipt of its own.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from datetime import datetime

from bmxgc import __version__, interrupts, lock, s3
from bmxgc.config import Config
from bmxgc.errors import ConfigError, Interrupted, PartialFailure
from bmxgc.executor import Sent, send_batches
from bmxgc.model import (
    EARLIEST,
    LATEST,
    KeyFailure,
    RecoveryItem,
    RecoveryPlan,
    RecoveryStats,
    TimeOutOfRange,
    RestoredEntry,
    parse_rfc3339,
    rfc3339,
    utc_now,
)
from bmxgc.planfile import PLACEHOLDER_HASH, render, seal
from bmxgc.planner import spread_sample
from bmxgc.naming import receipt_for_plan, recovery_plan_name
from bmxgc.receipt import Journal
from bmxgc.recover_decision import RecoveryScan, find_recoverable
from bmxgc.results import RecoverResult
from bmxgc.store import create_once, plans_store


def parse_time(text: str, flag: str) -> datetime:
    """A time from the command line; one before 1970 (S3 keeps nothing older)
    means 'since the beginning', so it is read as 1970."""
    try:
        moment = parse_rfc3339(text)
    except TimeOutOfRange as exc:
        moment = EARLIEST if exc.early else LATEST
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not an RFC 3339 time; write e.g. 2026-11-28T12:00:00Z") from None
    if moment >= LATEST:
        raise ConfigError(f"{flag}: {text!r} is too far in the future; write e.g. 2026-11-28T12:00:00Z")
    return max(moment, EARLIEST)


def recover_scope(config: Config, prefix: str | None, whole_bucket: bool) -> str:
    """The prefix to recover under: --prefix, '' for --whole-bucket, else the config's."""
    if whole_bucket and prefix is not None:
        raise ConfigError("--prefix and --whole-bucket: give one or the other")
    if whole_bucket:
        return ""
    if prefix is not None:
        if not prefix.strip("/"):
            raise ConfigError("--prefix: an empty prefix is refused; pass --whole-bucket to recover the whole bucket")
        return prefix
    return config.s3.prefix


def recover(
    config: Config,
    *,
    since: datetime,
    until: datetime | None = None,
    prefix: str | None = None,
    whole_bucket: bool = False,
    auto_approve: bool = False,
    client: s3.S3Client | None = None,
) -> RecoverResult:
    """Find the keys deleted in [since, until] that can be brought back and write
    the recovery plan; with ``auto_approve``, remove their markers. Raises
    PartialFailure (exit 1; ``result`` says what was done) when some could not be."""
    scope = recover_scope(config, prefix, whole_bucket)
    until = until or utc_now()
    if until < since:
        raise ConfigError(f"--until {rfc3339(until)} is before --since {rfc3339(since)}")
    client = s3.client_for(config.s3, client)
    bucket = config.s3.bucket
    store = plans_store(config, client)
    with lock.held(client, bucket, scope, command="recover", plan_hash="(recover)") as held:
        scan = find_recoverable(s3.list_versions(client, bucket, scope), since, until)
        now = utc_now()
        plan = _recovery_plan(bucket, scope, since, until, scan, now)
        name = recovery_plan_name(now, plan.plan_hash)
        plan_location = create_once(store, name, render(plan), read_only=True)
        if auto_approve and plan.restores:
            journal = Journal.create(
                store,
                receipt_for_plan(name),
                kind="recover",
                plan_hash=plan.plan_hash,
                bucket=bucket,
                prefix=scope,
                overrides={},
                undo_until=None,
            )
            try:
                restored, failed = _remove_markers(
                    client, bucket, plan.restores, journal, config.s3.delete_concurrency
                )
            except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the request in flight is recorded
                raise Interrupted(
                    f"interrupted: {len(journal.receipt.restored):,} of {len(plan.restores):,} objects were "
                    f"restored (receipt {journal.location}, status partial); run the same 'bmxgc recover' "
                    "again: it restores only what is still deleted",
                    interrupts.exit_code(exc),
                ) from None
    if not auto_approve or not plan.restores:
        dry_run = RecoverResult(plan, plan_location, scan.nothing_beneath, applied=False)
        lock.check_released(held, dry_run)
        return dry_run
    result = RecoverResult(
        plan,
        plan_location,
        scan.nothing_beneath,
        applied=True,
        receipt_location=journal.location,
        restored=restored,
        errors=failed,
    )
    lock.check_released(held, result)
    if failed:
        raise PartialFailure(
            f"{failed:,} of {len(plan.restores):,} objects could not be restored (see 'errors' in "
            f"{journal.location}); {restored:,} were. Run the same 'bmxgc recover' again: it restores "
            "only what is still deleted",
            result,
        )
    return result


def _recovery_plan(
    bucket: str, scope: str, since: datetime, until: datetime, scan: RecoveryScan, now: datetime
) -> RecoveryPlan:
    items = scan.items
    body = RecoveryPlan(
        format_version=1,
        kind="recovery",
        bmxgc_version=__version__,
        created_at=rfc3339(now),
        plan_hash=PLACEHOLDER_HASH,
        bucket=bucket,
        prefix=scope,
        since=rfc3339(since),
        until=rfc3339(until),
        stats=RecoveryStats(
            versions_listed=scan.versions_listed,
            delete_markers_in_window=scan.markers_in_window,
            to_restore=len(items),
            nothing_beneath=len(scan.nothing_beneath),
            bytes_to_restore=sum(i.restores_size for i in items),
        ),
        sample_keys=spread_sample([i.key for i in items]),
        restores=items,
    )
    return seal(body)


Entry = tuple[int, str, str]  # index of the item, key, marker version id
Answer = tuple[list[Entry], s3.DeleteOutcome]


class _Restoring:
    """The recover receipt as the executor's journal: after each request, the
    keys whose every marker is gone are recorded restored (a key deleted twice
    has two markers, possibly in two requests), and the keys S3 refused, failed."""

    def __init__(self, journal: Journal, items: list[RecoveryItem], entries: list[Entry]) -> None:
        self.journal = journal
        self.items = items
        self.left = collections.Counter(index for index, _key, _marker in entries)
        self.failed: set[int] = set()

    def intend(self, request: int, batch: Sequence[Entry]) -> None:
        """Nothing to note: the recovery plan, written first, lists every marker."""

    def record(self, request: int, answer: Answer) -> None:
        batch, outcome = answer
        done = {(key, vid) for key, vid, _marker in outcome.deleted}
        done_keys = {key for key, vid, _marker in outcome.deleted if vid is None}  # an answer without VersionId
        # A marker that is already gone is removed: LocalStack answers
        # NoSuchVersion where S3 and Ceph answer success (a rerun, a resent batch).
        done_keys |= {key for key, code, _message in outcome.errors if code == "NoSuchVersion"}
        errors = [e for e in outcome.errors if e[1] != "NoSuchVersion"]
        restored: list[RestoredEntry] = []
        for index, key, marker in batch:
            if (key, marker) not in done and key not in done_keys:
                self.failed.add(index)
                continue
            self.left[index] -= 1
            if self.left[index] == 0 and index not in self.failed:
                item = self.items[index]
                restored.append(
                    RestoredEntry(
                        key=item.key,
                        version_id=item.restores_version_id,
                        removed_delete_marker_version_id=item.delete_marker_version_id,
                    )
                )
        self.journal.record_restored(restored, [KeyFailure(key=k, code=c, message=m) for k, c, m in errors])

    def interrupted(self) -> None:
        self.journal.finish(failed=True)


def _remove_markers(
    client: s3.S3Client, bucket: str, items: list[RecoveryItem], journal: Journal, concurrency: int
) -> tuple[int, int]:
    """Remove every item's markers through the executor, 1,000 per request; a
    key is restored once all of its markers are gone. A failed request is
    recorded as failed for its keys and the run goes on, as undo's does; a
    rerun finds what is still deleted."""
    entries = [
        (index, item.key, marker)
        for index, item in enumerate(items)
        for marker in [item.delete_marker_version_id, *(item.stacked_delete_marker_version_ids or [])]
    ]
    send_batches(
        entries,
        _Restoring(journal, items, entries),
        lambda batch, _n: Sent((batch, s3.delete_batch(client, bucket, [(k, m, None) for _i, k, m in batch]))),
        failed=lambda batch, exc: (
            batch,
            s3.DeleteOutcome(deleted=[], errors=sorted({(key, "RequestFailed", str(exc)) for _i, key, _m in batch})),
        ),
        concurrency=concurrency,
    )
    journal.finish()
    return len(journal.receipt.restored), len(journal.receipt.errors)
