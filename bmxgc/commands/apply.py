"""``bmxgc apply``: re-verify a plan against live state, then delete reversibly.

The gates run in docs/reference.md's order; the first that doubts refuses, and nothing
in the bucket has changed. Deletion writes delete markers (no version ids),
in batches of up to 1,000, with the receipt written ahead of every batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from bmxgc import gates, interrupts, lock, s3
from bmxgc.config import Config, ReferenceSource
from bmxgc.drift import KeyHistory, find_drift, group_by_key, markers_above
from bmxgc.errors import ConfigError, DriftError, GateRefused, Interrupted, PartialFailure, ServiceError
from bmxgc.executor import Sent, collector_spares_what_exists, send_batches
from bmxgc.live import live_histories
from bmxgc.model import (
    DeletedEntry,
    KeyFailure,
    ObjectVersion,
    Plan,
    Receipt,
    rfc3339,
    utc_now,
)
from bmxgc.planfile import parse_plan_text
from bmxgc.gates import baseline_of
from bmxgc.naming import plan_for, receipt_name_for
from bmxgc.overlap import read_while_listing
from bmxgc.receipt import Journal, check_not_applied, last_applied_plan
from bmxgc.references import check_connection, read_references, redact_url
from bmxgc.results import ApplyResult
from bmxgc.store import Store, plans_store, read_document

# The rows apply takes from its listing while it reads the references: the
# listing's first pages, listed on one connection (s3.SEQUENTIAL_PAGES).
EARLY_ROWS = s3.SEQUENTIAL_PAGES * s3.MAX_KEYS_PER_REQUEST

Confirm = gates.Confirm
# type_count(question) -> what the operator typed (the number of objects to delete).
TypeCount = Callable[[str], str]
# progress(deleted so far, total)
DeleteProgress = Callable[[int, int], None]


def apply(
    config: Config,
    plan_path: str | os.PathLike[str],
    *,
    auto_approve: bool = False,
    max_orphan_ratio: float | None = None,
    allow_jump: bool = False,
    expect_deletes: int | None = None,
    confirm: Confirm | None = None,
    type_count: TypeCount | None = None,
    now: datetime | None = None,
    client: s3.S3Client | None = None,
    progress: DeleteProgress | None = None,
) -> ApplyResult:
    """Apply a reviewed plan. Raises GateRefused (exit 3) on any doubt,
    PartialFailure (exit 1) when some keys could not be deleted."""
    location = str(plan_path)
    client = s3.client_for(config.s3, client)
    with collector_spares_what_exists():
        plan = parse_plan_text(read_document(location, client), location)  # gate 1: integrity
    database_url = config.database_url()
    gates.check_environment(plan, config, redact_url(database_url))  # gate 2
    gates.check_sources(plan, config)
    gates.check_freshness(plan, config, now or utc_now())  # gate 3
    gates.check_scope(plan, config)  # gate 4, offline part
    limits = gates.volume_limits(plan, config, max_orphan_ratio)
    gates.check_plan_figures(plan)  # gate 5: the plan's own figures, then its volume
    gates.check_volume(gates.VolumeFigures.of_plan(plan), limits, plan.prefix)
    store = plans_store(config, client)
    baseline = last_applied(store, plan)
    gates.check_jump(gates.VolumeFigures.of_plan(plan), baseline, allowed=allow_jump, this=plan_for(receipt_name_for(location)))
    if allow_jump or expect_deletes is not None:
        # An overridden jump: the operator states the count, even with --auto-approve.
        typed = None
        if expect_deletes is None and type_count is not None:
            typed = type_count(_count_question(plan, baseline))
        gates.check_expected_count(expect_deletes, typed, len(plan.orphans))
    if allow_jump:
        limits = gates.Limits(
            max_orphan_ratio=limits.max_orphan_ratio,
            max_deletes=limits.max_deletes,
            overrides={**limits.overrides, "allow_jump": True, "expected_deletes": len(plan.orphans)},
        )
    receipt_name = receipt_name_for(location)
    check_not_applied(store, plan.plan_hash, receipt_name)  # gate 1: no receipt has this plan_hash
    sources = _sources(plan, config)
    min_age = gates.min_age_in_force(plan, config)
    check_connection(database_url, config.database)  # an unreachable database fails before the lock
    with lock.held(client, plan.bucket, plan.prefix, command="apply", plan_hash=plan.plan_hash) as held:  # gate 6
        gates.check_versioning(s3.versioning_status(client, plan.bucket), plan.bucket)  # gate 7
        # Gates 4 (age, near misses) and 5 again, from live state, then gate 8.
        jump = None if allow_jump else baseline
        _check_drift(client, plan, database_url, sources, config=config, limits=limits, min_age=min_age, now=now, baseline=jump)
        if not auto_approve:  # gate 9
            gates.check_consent(confirm, _consent_summary(plan), command="apply")
            # Time passed at the prompt: look again just before deleting.
            _check_drift(client, plan, database_url, sources, config=config, limits=limits, min_age=min_age, now=now, baseline=jump)
        # Again under the lock: a copy of this plan may have been applied (and
        # undone) while this apply waited for it.
        check_not_applied(store, plan.plan_hash, receipt_name)
        undo_days = s3.noncurrent_expiry_days(client, plan.bucket, plan.prefix)
        undo_until = rfc3339(utc_now() + timedelta(days=undo_days)) if undo_days is not None else None
        journal = Journal.create(
            store,
            receipt_name,
            kind="apply",
            plan_hash=plan.plan_hash,
            bucket=plan.bucket,
            prefix=plan.prefix,
            overrides=dict(limits.overrides),
            undo_until=undo_until,
            prefix_versions=plan.stats.versions_listed,
        )
        try:
            _delete_all(client, plan, journal, progress, config.s3.delete_concurrency)
        except ServiceError as exc:
            # A request failed after botocore's retries: say what was already
            # deleted and how to take it back, not only what S3 answered.
            raise PartialFailure(
                f"{exc}. {len(journal.receipt.deleted):,} of {len(plan.orphans):,} objects were deleted "
                f"before this (receipt {journal.location}, status partial); run 'bmxgc undo "
                f"{journal.location}' to restore them, or plan again and apply to finish",
                ApplyResult(plan=plan, receipt=journal.receipt, receipt_path=journal.location),
            ) from None
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the batch in flight is recorded
            done = len(journal.receipt.deleted)
            raise Interrupted(
                f"interrupted: {done:,} of {len(plan.orphans):,} objects were deleted (receipt "
                f"{journal.location}, status partial); run 'bmxgc undo {journal.location}' to restore "
                "them, or plan again and apply to finish",
                interrupts.exit_code(exc),
                ApplyResult(plan=plan, receipt=journal.receipt, receipt_path=journal.location),
            ) from None
        except ConfigError as exc:
            # The receipt could not be updated (plans_dir full, say). What is on
            # disk holds every batch's intent, which is all undo needs.
            raise PartialFailure(
                f"{exc}. {len(journal.receipt.deleted):,} of {len(plan.orphans):,} objects were deleted "
                f"before this; the receipt {journal.location} holds every batch that was sent: make room in "
                f"plans_dir, then run 'bmxgc undo {journal.location}' to restore them, or plan again and apply "
                "to finish",
                ApplyResult(plan=plan, receipt=journal.receipt, receipt_path=journal.location),
            ) from None
    result = ApplyResult(plan=plan, receipt=journal.receipt, receipt_path=journal.location)
    lock.check_released(held, result)
    if journal.receipt.errors:
        raise PartialFailure(
            f"{len(journal.receipt.errors):,} of {len(plan.orphans):,} objects could not be deleted "
            f"(see 'errors' in {journal.location}); {len(journal.receipt.deleted):,} were. Plan again "
            f"and apply to retry the rest, or run 'bmxgc undo {journal.location}' to restore them",
            result,
        )
    return result


def _sources(plan: Plan, config: Config) -> list[ReferenceSource]:
    """Today's sources only: apply never runs SQL read from a plan file (the
    environment gate has checked that the plan's sources are these)."""
    return list(config.references)


def _check_drift(
    client: s3.S3Client,
    plan: Plan,
    database_url: str,
    sources: Sequence[ReferenceSource],
    *,
    config: Config,
    limits: gates.Limits,
    min_age: timedelta,
    now: datetime | None,
    baseline: gates.Baseline | None = None,
) -> None:
    """Read the references and list the whole prefix now (the per-key shortcut
    could not count the prefix's objects), then decide from what is live:
    age and near misses (gate 4), volume (gate 5), drift (gate 8)."""
    planned = {o.key for o in plan.orphans}
    # Grouped by key: the key ranges may come in any order (a key's rows stay in one), so no connection waits.
    rows = s3.list_versions(client, plan.bucket, plan.prefix, concurrency=config.s3.list_concurrency, ordered=False)
    # The references are read on a thread while the listing's first pages (round
    # trips on one connection) come in: both now, under the lock, before anything
    # is deleted; no row is counted before they are all read.
    references, listed = read_while_listing(
        lambda: read_references(database_url, sources, timeouts=config.database), rows, EARLY_ROWS
    )
    tally = gates.LiveTally(references.keys)
    live = group_by_key(tally.observe(listed), planned)
    gates.check_live_age(plan.orphans, live, min_age, now or utc_now())
    gates.check_live_near_misses(plan, config, references, tally.found_keys)
    figures = tally.figures(plan.orphans, live)
    gates.check_volume(figures, limits, plan.prefix, live=True)
    gates.check_jump(figures, baseline, allowed=False, live=True)
    referenced_now = {key: name for key in planned if (name := references.source_name(key)) is not None}
    offences = find_drift(plan.orphans, live, referenced_now)
    if offences:
        raise DriftError(offences)


def last_applied(store: Store, plan: Plan) -> gates.Baseline | None:
    """The jump gate's baseline: see ``receipt.last_applied_plan``."""
    return baseline_of(last_applied_plan(store, plan.bucket, plan.prefix, plan.plan_hash))


def _count_question(plan: Plan, baseline: gates.Baseline | None) -> str:
    since = f" since {baseline.name}, the last applied plan" if baseline else ""
    return (
        f"--allow-jump: the figures jumped{since}. Type the number of objects this apply "
        f"deletes (from the plan, s3://{plan.bucket}/{plan.prefix})"
    )


def _consent_summary(plan: Plan) -> str:
    s = plan.stats
    return (
        f"bmxgc will delete {s.orphans:,} objects ({s.orphan_bytes:,} bytes) from "
        f"s3://{plan.bucket}/{plan.prefix}, plan {plan.plan_hash}.\n"
        "Each becomes a delete marker; 'bmxgc undo' restores them."
    )


# Sends of one batch at most: the first, and resends of the keys S3's listing
# shows were not deleted after a lost answer or a server error.
MAX_SENDS = 3


Answer = tuple[list[DeletedEntry], list[KeyFailure]]


class _Receipt:
    """The receipt as the executor's journal: pending batch before, entries after."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def intend(self, request: int, batch: Sequence[ObjectVersion]) -> None:
        self.journal.intend(batch, request)

    def record(self, request: int, answer: Answer) -> None:
        self.journal.record(*answer, request=request)

    def interrupted(self) -> None:
        # A batch whose outcome is unknown stays 'pending' in the receipt: undo finds its markers.
        self.journal.finish(failed=True)


def _delete_all(
    client: s3.S3Client, plan: Plan, journal: Journal, progress: DeleteProgress | None, concurrency: int
) -> None:
    send_batches(
        plan.orphans,
        _Receipt(journal),
        lambda todo, n: _send(client, plan, todo, n),
        progress=progress,
        concurrency=concurrency,
    )
    with collector_spares_what_exists():
        journal.finish()


def _send(client: s3.S3Client, plan: Plan, todo: list[ObjectVersion], send: int) -> Sent[ObjectVersion, Answer]:
    """One DeleteObjects for the batch, sent once (never retried blind: done
    twice, it stacks two markers per key). When the answer is lost, is a server
    error, or leaves a key in doubt, S3's listing says what happened to each
    key: deleted keys are recorded with their marker, keys still current are
    sent again (the executor journals intent first), up to MAX_SENDS requests in all."""
    failure: str | None = None
    try:
        outcome = s3.delete_batch(client, plan.bucket, [(o.key, None, o.etag) for o in todo])
    except s3.RequestInDoubt as exc:
        failure = str(exc)
        deleted: list[DeletedEntry] = []
        errors: list[KeyFailure] = []
        unsure: list[ObjectVersion] = todo
    else:
        deleted, errors, unsure = _outcome_entries(todo, outcome)
    not_deleted: list[ObjectVersion] = []
    if unsure:
        found, not_deleted, odd = _look_up(client, plan, unsure)
        deleted += found
        errors += odd
    if not_deleted and send < MAX_SENDS:
        return Sent((deleted, errors), again=not_deleted)
    why = failure or "S3 reported neither a delete marker nor an error"
    errors += [
        KeyFailure(
            key=o.key,
            version_id=o.version_id,
            code="NotDeleted",
            message=f"still current after {send} DeleteObjects request(s); last: {why}",
        )
        for o in not_deleted
    ]
    return Sent((deleted, errors))


def _look_up(
    client: s3.S3Client, plan: Plan, unsure: Sequence[ObjectVersion]
) -> tuple[list[DeletedEntry], list[ObjectVersion], list[KeyFailure]]:
    """What S3 did to keys whose answer is unknown: deleted (marker(s) on the
    planned version: recorded with the latest marker; undo removes every one
    stacked there), not deleted (the planned version is still current), or
    neither (an error for the key: undo judges it from live state)."""
    hint = plan.stats.versions_listed + len(plan.orphans) if plan.stats.versions_listed else None
    live = live_histories(client, plan.bucket, plan.prefix, {o.key for o in unsure}, hint)
    deleted: list[DeletedEntry] = []
    not_deleted: list[ObjectVersion] = []
    errors: list[KeyFailure] = []
    for o in unsure:
        history = live.get(o.key, KeyHistory())
        above = markers_above(history, o.version_id)
        latest = history.latest
        if above is not None and latest is not None and latest.version_id == o.version_id:
            not_deleted.append(o)
        elif above and latest is not None and latest.is_delete_marker and latest.version_id == above[0].version_id:
            deleted.append(DeletedEntry(key=o.key, version_id=o.version_id, delete_marker_version_id=latest.version_id))
        else:
            now = "no version" if latest is None else f"latest {'delete marker' if latest.is_delete_marker else 'version'} {latest.version_id}"
            errors.append(
                KeyFailure(
                    key=o.key,
                    version_id=o.version_id,
                    code="Unverified",
                    message=f"after a DeleteObjects in doubt, S3 shows {now}, not the planned version or a marker on it",
                )
            )
    return deleted, not_deleted, errors


def _outcome_entries(
    batch: Sequence[ObjectVersion], outcome: s3.DeleteOutcome
) -> tuple[list[DeletedEntry], list[KeyFailure], list[ObjectVersion]]:
    """S3's answer, key by key: deleted with a marker id, failed, and in doubt.
    In doubt: a ``Deleted`` entry without ``DeleteMarkerVersionId`` (Ceph answers
    so when the latest is already a marker) or a key S3 did not mention; the
    caller looks those up in S3's listing."""
    by_key = {o.key: o for o in batch}
    deleted = [
        DeletedEntry(key=key, version_id=by_key[key].version_id, delete_marker_version_id=marker)
        for key, _sent, marker in outcome.deleted
        if key in by_key and marker
    ]
    errors = [
        KeyFailure(key=key, code=code, message=message, version_id=by_key[key].version_id if key in by_key else None)
        for key, code, message in outcome.errors
    ]
    answered = {d.key for d in deleted} | {e.key for e in errors}
    unsure = [o for o in batch if o.key not in answered]
    return deleted, errors, unsure
