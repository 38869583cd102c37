"""``bmxgc undo``: make current again exactly what an apply deleted."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from bmxgc import gates, interrupts, lock, s3
from bmxgc.config import Config
from bmxgc.drift import KeyHistory
from bmxgc.errors import BmxgcError, GateRefused, Interrupted, PartialFailure, PlanFileError, ServiceError
from bmxgc.executor import Sent, collector_spares_what_exists, send_batches
from bmxgc.live import live_histories
from bmxgc.model import (
    KeyFailure,
    Receipt,
    UndoNotRestored,
    UndoRecord,
    UndoRestored,
    UndoRun,
    UndoSkipped,
    parse_rfc3339,
    rfc3339,
    utc_now,
    who,
)
from bmxgc.naming import JOURNAL_SUFFIX, undo_record_name
from bmxgc.planfile import UNDO_RECORD, read, render, strict_json
from bmxgc.receipt import load_receipt, newest_receipt_read
from bmxgc.undo_decision import Restore, RestorePlan, Skip, Window, apply_window, plan_undo, targets
from bmxgc.results import UndoResult
from bmxgc.store import Store, open_location, plans_store

Confirm = gates.Confirm
log = logging.getLogger("bmxgc")


def undo(
    config: Config,
    receipt_path: str | os.PathLike[str] | None = None,
    *,
    auto_approve: bool = False,
    confirm: Confirm | None = None,
    client: s3.S3Client | None = None,
) -> UndoResult:
    """Restore what the receipt's apply deleted (the newest receipt if none is named).

    Raises PartialFailure (exit 1) when an object stays deleted, or when the
    undo record could not be written; its ``result`` says what was restored."""
    client = s3.client_for(config.s3, client)
    with collector_spares_what_exists():
        if receipt_path is not None:
            store, name = open_location(str(receipt_path), client)
            receipt = load_receipt(store, name)
        else:
            store = plans_store(config, client)
            name, receipt = newest_receipt_read(store)  # read once, to find it
    path = store.location(name)
    if receipt.kind != "apply":
        raise GateRefused(
            "integrity", f"{path} is the receipt of a {receipt.kind}, which deleted nothing; nothing to undo"
        )
    if (receipt.bucket, receipt.prefix) != (config.s3.bucket, config.s3.prefix):
        raise GateRefused(
            "environment",
            f"{path} is for s3://{receipt.bucket}/{receipt.prefix}, the config for "
            f"s3://{config.s3.bucket}/{config.s3.prefix}; use the config the apply used",
        )
    record_name = undo_record_name(name)
    about = describe_receipt(path, receipt)
    with lock.held(
        client,
        receipt.bucket,
        receipt.prefix,
        command="undo",
        plan_hash=receipt.plan_hash,
        take_over=lambda holder: _crashed_apply_of(receipt, holder),
    ) as held:
        if held.took_over:
            log.warning("took over the lock of the crashed apply of this receipt (%s)", held.took_over)
        # Under the lock: no other undo of this receipt writes the record meanwhile.
        runs = _earlier_runs(store, record_name)
        window = apply_window(receipt, utc_now(), _first_run_at(runs))
        listing = config.s3.list_concurrency
        decided = _decide(client, receipt, window, _restored_keys(runs), listing)
        if decided.restores and not auto_approve:
            summary = (
                f"{about}\n"
                f"bmxgc will restore {len(decided.restores):,} objects in s3://{receipt.bucket}/"
                f"{receipt.prefix} by removing the delete markers apply wrote "
                f"({len(decided.skips):,} left alone, {len(decided.already_restored):,} already restored)."
            )
            gates.check_consent(confirm, summary, command="undo")
        record = _Record(store, record_name, runs, name, receipt, took_over=held.took_over)
        try:
            errors = _remove_markers(client, receipt.bucket, decided.restores, record, config.s3.delete_concurrency)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the request in flight is recorded
            raise Interrupted(
                f"interrupted: undo stopped before it finished (what it intended is in "
                f"{store.location(record_name)}); run 'bmxgc undo {path}' again: it restores only what "
                "is still deleted",
                interrupts.exit_code(exc),
            ) from None
        restored, not_restored = _verify(client, receipt, decided.restores, listing)
        failed = {key for key, _found in not_restored}
        errors = [e for e in errors if e[0] in failed]
        result = UndoResult(
            path, store.location(record_name), restored, decided.skips, decided.already_restored, errors, not_restored
        )
        with collector_spares_what_exists():
            result = replace(result, record_error=record.finish(result), receipt_summary=about)
    lock.check_released(held, result)
    _raise_unless_done(result)
    return result


def _crashed_apply_of(receipt: Receipt, holder: lock.LockInfo) -> bool:
    """The lock is this receipt's own apply's, taken on this host, whose process
    is gone: undo of that apply may take it over (anywhere else, 'bmxgc unlock')."""
    h = holder.holder
    return h.get("command") == "apply" and h.get("plan_hash") == receipt.plan_hash and holder.dead_here()


def describe_receipt(path: str, receipt: Receipt) -> str:
    """Which apply an undo takes back, for its prompt and its output."""
    by = receipt.applied_by
    who = f" by {by.get('user', '?')}@{by.get('host', '?')}" if by else ""
    return (
        f"Receipt {path}: plan {receipt.plan_hash}, applied {receipt.started_at}{who}, "
        f"{len(receipt.deleted):,} objects deleted ({receipt.status})"
    )


def _raise_unless_done(result: UndoResult) -> None:
    """Exit 0 only when every key's deleted version (or a newer real one) is
    current, as checked after the deletes, and the record is written."""
    counts = (
        f"{len(result.restored):,} restored, {len(result.skipped):,} left alone, "
        f"{len(result.already_restored):,} already restored"
    )
    again = f"run 'bmxgc undo {result.receipt_path}' again"
    left = result.still_deleted
    problems: list[str] = []
    if left:
        problems.append(
            f"{len(left):,} objects could not be restored and are still deleted "
            f"(see {result.record_path if not result.record_error else 'below'}); "
            f"{again}: it restores only what is still deleted"
        )
    if result.record_error:
        problems.append(
            f"the objects restored are restored, but the undo record {result.record_path} could not be "
            f"written: {result.record_error}; {again} once it can be: it restores nothing twice and writes the record"
        )
    if problems:
        details = [f"  {key}: {found}" for key, found in left[:20]]
        if len(left) > 20:
            details.append(f"  ... and {len(left) - 20:,} more")
        raise PartialFailure(f"Undo incomplete: {counts}; " + "; ".join(problems), result, details)


def _first_run_at(runs: list[UndoRun]) -> datetime | None:
    return min((parse_rfc3339(run.at) for run in runs), default=None)


def _restored_keys(runs: list[UndoRun]) -> set[str]:
    """The keys earlier undo runs of this receipt restored."""
    return {entry.key for run in runs for entry in run.restored or []}


def _decide(
    client: s3.S3Client, receipt: Receipt, window: Window, restored_before: set[str], concurrency: int
) -> RestorePlan:
    """From live state under the lock: the histories of the keys apply may have
    deleted (the prefix listed once, over ``concurrency`` connections, or a few
    keys one by one when that is cheaper)."""
    keys = set(targets(receipt))
    # Apply added one delete marker per key it deleted (more where a request was done twice).
    hint = receipt.prefix_versions + len(keys) if receipt.prefix_versions is not None else None
    live = live_histories(client, receipt.bucket, receipt.prefix, keys, hint, concurrency)
    with collector_spares_what_exists():
        return plan_undo(receipt, live, window, restored_before)


def _verify(
    client: s3.S3Client, receipt: Receipt, restores: list[Restore], concurrency: int
) -> tuple[list[Restore], list[tuple[str, str]]]:
    """Undo checks its own work: a key counts as restored only when S3 lists the
    version apply deleted as its latest again, whatever DeleteObjects answered.
    This is a listing made after the deletes, never the one undo decided from."""
    if not restores:
        return [], []
    hint = receipt.prefix_versions + len(restores) if receipt.prefix_versions is not None else None
    live = live_histories(client, receipt.bucket, receipt.prefix, {r.key for r in restores}, hint, concurrency)
    restored: list[Restore] = []
    not_restored: list[tuple[str, str]] = []
    for r in restores:
        latest = live.get(r.key, KeyHistory()).latest
        if latest is not None and not latest.is_delete_marker and latest.version_id == r.restores_version_id:
            restored.append(r)
        elif latest is None:
            not_restored.append((r.key, "no version of it is listed after undo"))
        else:
            kind = "delete marker" if latest.is_delete_marker else "version"
            not_restored.append(
                (r.key, f"after undo its latest is {kind} {latest.version_id}, not version {r.restores_version_id}")
            )
    return restored, not_restored


def _earlier_runs(store: Store, record_name: str) -> list[UndoRun]:
    """The runs in the undo record beside the receipt (none before the first undo)."""
    existing = store.read(record_name)
    if existing is None:
        return []
    location = store.location(record_name)
    try:
        record: UndoRecord = read(existing, location, UNDO_RECORD)
    except PlanFileError as exc:
        raise PlanFileError(
            f"{location}: the undo record is unreadable ({str(exc).removeprefix(location + ': ')}); "
            "move it aside and undo again"
        ) from None
    runs = list(record.runs)
    # A run killed before its end is 'in_progress' with what it intended in the journal beside the record.
    lines = store.read_journal(undo_journal_name(record_name))
    if runs and runs[-1].status == "in_progress" and lines is not None:
        intended = list(runs[-1].intended or [])
        for line in lines.split("\n")[:-1]:  # a last line without its newline was cut off: never sent
            try:
                intended += [str(key) for key in strict_json(line)["intend"]]
            except (ValueError, TypeError, KeyError):
                raise PlanFileError(
                    f"{store.location(undo_journal_name(record_name))}: not an undo journal; move it aside and "
                    "undo again"
                ) from None
        runs[-1] = runs[-1].model_copy(update={"intended": intended})
    return runs


def undo_journal_name(record_name: str) -> str:
    """``STEM.undo.json`` -> ``STEM.undo.journal``: a run's intent, a line per batch."""
    return record_name.removesuffix(".json") + JOURNAL_SUFFIX


Marker = tuple[str, str]  # key, the delete marker's version id
KeyError_ = tuple[str, str, str]  # key, code, message


def _remove_markers(
    client: s3.S3Client, bucket: str, restores: list[Restore], record: _Record, concurrency: int
) -> list[KeyError_]:
    """Remove every marker of every restore through the executor, each batch
    noted in the record first. Removing a version by id is idempotent:
    botocore's retries apply, and a failed request is an error for its keys."""
    with collector_spares_what_exists():  # the live histories, the decision: built before, left alone
        entries: list[Marker] = [(r.key, marker) for r in restores for marker in r.markers]
        send_batches(
            entries,
            record,
            # Quiet: S3 answers with the errors only; what was restored, _verify reads from a listing.
            lambda batch, _n: Sent(s3.delete_batch(client, bucket, [(k, m, None) for k, m in batch], quiet=True).errors),
            failed=lambda batch, exc: [(key, "RequestFailed", str(exc)) for key, _marker in batch],
            concurrency=concurrency,
        )
    return record.errors


class _Record:
    """The undo record beside the receipt: one entry per undo run, written
    before each batch (what it intends) and at the end (what it restored, left
    alone, and could not restore). It is a log, not a guard: undo decides from
    live state every time, so a record that cannot be written (disk full) does
    not stop a restore; the failure is reported and the run exits 1."""

    def __init__(
        self,
        store: Store,
        name: str,
        runs: list[UndoRun],
        receipt_name: str,
        receipt: Receipt,
        *,
        took_over: str | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.runs = runs
        self.receipt_name = receipt_name
        self.receipt = receipt
        self.took_over = took_over
        self.run = UndoRun(
            at=rfc3339(utc_now()), by=who(), status="in_progress", intended=[], took_over_lock=took_over
        )
        self.errors: list[KeyError_] = []  # markers S3 did not remove
        self._started = False

    # The executor's journal: intent before each request, S3's errors after it.
    # The record is written when the first batch goes out and at the end; each
    # batch's keys are appended to the journal beside it (linear, not the whole
    # record per batch), which the next undo reads back if this one is killed.
    def intend(self, request: int, batch: Sequence[Marker]) -> None:
        keys = [key for key, _marker in batch]
        journal = undo_journal_name(self.name)
        try:
            if not self._started:
                self._started = True
                self._write()  # the earlier runs, with a killed run's intent read back from its journal
                self.store.remove_journal(journal)
        except (OSError, BmxgcError):
            pass
        if self.run.intended is not None:
            self.run.intended.extend(keys)
        try:
            self.store.append_line(journal, json.dumps({"intend": keys}, ensure_ascii=False) + "\n")
        except (OSError, BmxgcError):
            pass  # a log, not a guard: finish reports a record it cannot write

    def record(self, request: int, answer: list[KeyError_]) -> None:
        self.errors += answer

    def interrupted(self) -> None:
        """The run stays 'in_progress' in the record: a rerun decides from live state."""

    def finish(self, result: UndoResult) -> str | None:
        """Write the run's outcome; why it could not be written, or None."""
        self.run = UndoRun(
            at=self.run.at,
            by=self.run.by,
            restored=[
                UndoRestored(
                    key=r.key,
                    version_id=r.restores_version_id,
                    removed_delete_marker=r.marker_version_id,
                    removed_stacked_delete_markers=list(r.stacked) or None,
                )
                for r in result.restored
            ],
            skipped=[UndoSkipped(key=s.key, reason=s.reason) for s in result.skipped],
            already_restored=len(result.already_restored),
            not_restored=[UndoNotRestored(key=k, found=found) for k, found in result.not_restored],
            errors=[KeyFailure(key=k, code=c, message=m) for k, c, m in result.errors],
            took_over_lock=self.took_over,
        )
        failed = self._write()
        if failed is None:
            try:
                self.store.remove_journal(undo_journal_name(self.name))
            except OSError:
                pass
        return failed

    def _write(self) -> str | None:
        record = UndoRecord(
            format_version=1,
            receipt=self.receipt_name,
            plan_hash=self.receipt.plan_hash,
            bucket=self.receipt.bucket,
            prefix=self.receipt.prefix,
            runs=[*self.runs, self.run],
        )
        try:
            self.store.replace(self.name, render(record))
        except (OSError, BmxgcError) as exc:
            return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return None
