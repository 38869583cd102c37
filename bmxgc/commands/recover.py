"""``bmxgc recover``: undo deletions that have no receipt (the incident's case).

Without ``--auto-approve`` it writes a recovery plan and changes nothing;
with it, it removes the delete markers found, up to 1,000 per request, and
writes a receipt of its own.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from datetime import datetime

from bmxgc import __version__, lock, s3
from bmxgc.config import Config
from bmxgc.errors import ConfigError, ServiceError
from bmxgc.model import (
    KeyFailure,
    RecoveryItem,
    RecoveryPlan,
    RestoredEntry,
    parse_rfc3339,
    rfc3339,
    utc_now,
)
from bmxgc.planfile import PLACEHOLDER_HASH, document, seal
from bmxgc.planner import spread_sample
from bmxgc.receipt import RECEIPT_SUFFIX, Journal, to_json
from bmxgc.recovery import RecoveryScan, find_recoverable
from bmxgc.store import create_once, plans_store


@dataclass(frozen=True)
class RecoverResult:
    plan: RecoveryPlan
    plan_location: str
    nothing_beneath: list[str]
    applied: bool
    receipt_location: str | None = None
    restored: int = 0
    errors: int = 0


def parse_time(text: str, flag: str) -> datetime:
    try:
        return parse_rfc3339(text)
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not an RFC 3339 time; write e.g. 2026-11-28T12:00:00Z") from None


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
    scope = recover_scope(config, prefix, whole_bucket)
    until = until or utc_now()
    if until < since:
        raise ConfigError(f"--until {rfc3339(until)} is before --since {rfc3339(since)}")
    client = client or s3.client_for(config.s3)
    bucket = config.s3.bucket
    store = plans_store(config, client)
    with lock.held(client, bucket, scope, command="recover", plan_hash="(recover)") as held:
        scan = find_recoverable(s3.list_versions(client, bucket, scope), since, until)
        now = utc_now()
        plan = _recovery_plan(bucket, scope, since, until, scan, now)
        name = f"{now:%Y%m%dT%H%M%SZ}-recover-{plan.plan_hash.removeprefix('sha256:')[:12]}.json"
        plan_location = create_once(store, name, to_json(document(plan)), read_only=True)
        if auto_approve and plan.restores:
            journal = Journal.create(
                store,
                name.removesuffix(".json") + RECEIPT_SUFFIX,
                kind="recover",
                plan_hash=plan.plan_hash,
                bucket=bucket,
                prefix=scope,
                overrides={},
                undo_until=None,
            )
            restored, failed = _remove_markers(client, bucket, plan.restores, journal)
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
        stats={
            "versions_listed": scan.versions_listed,
            "delete_markers_in_window": scan.markers_in_window,
            "to_restore": len(items),
            "nothing_beneath": len(scan.nothing_beneath),
            "bytes_to_restore": sum(i.restores_size for i in items),
        },
        sample_keys=spread_sample([i.key for i in items]),
        restores=items,
    )
    return seal(body)


def _remove_markers(
    client: s3.S3Client, bucket: str, items: list[RecoveryItem], journal: Journal
) -> tuple[int, int]:
    """Remove every item's markers, 1,000 per request; a key is restored once
    all of its markers are gone (a key deleted twice has two)."""
    entries = [
        (index, item.key, marker)
        for index, item in enumerate(items)
        for marker in [item.delete_marker_version_id, *(item.stacked_delete_marker_version_ids or [])]
    ]
    left = collections.Counter(index for index, _key, _marker in entries)
    failed: set[int] = set()
    for start in range(0, len(entries), s3.MAX_KEYS_PER_REQUEST):
        batch = entries[start : start + s3.MAX_KEYS_PER_REQUEST]
        try:
            outcome = s3.delete_batch(client, bucket, [(key, marker, None) for _index, key, marker in batch])
        except ServiceError as exc:
            # As undo does: record the batch as failed and go on; a rerun
            # finds what is still deleted.
            outcome = s3.DeleteOutcome(
                deleted=[], errors=sorted({(key, "RequestFailed", str(exc)) for _i, key, _m in batch})
            )
        done = {(key, vid) for key, vid, _marker in outcome.deleted}
        done_keys = {key for key, vid, _marker in outcome.deleted if vid is None}  # an answer without VersionId
        # A marker that is already gone is removed: LocalStack answers
        # NoSuchVersion where S3 and Ceph answer success (a rerun, a resent batch).
        done_keys |= {key for key, code, _message in outcome.errors if code == "NoSuchVersion"}
        errors = [e for e in outcome.errors if e[1] != "NoSuchVersion"]
        restored: list[RestoredEntry] = []
        for index, key, marker in batch:
            if (key, marker) not in done and key not in done_keys:
                failed.add(index)
                continue
            left[index] -= 1
            if left[index] == 0 and index not in failed:
                item = items[index]
                restored.append(
                    RestoredEntry(
                        key=item.key,
                        version_id=item.restores_version_id,
                        removed_delete_marker_version_id=item.delete_marker_version_id,
                    )
                )
        journal.record_restored(restored, [KeyFailure(key=k, code=c, message=m) for k, c, m in errors])
    journal.finish()
    return len(journal.receipt.restored), len(journal.receipt.errors)
