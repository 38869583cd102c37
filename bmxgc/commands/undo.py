"""``bmxgc undo``: make current again exactly what an apply deleted."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from bmxgc import lock, s3
from bmxgc.config import Config
from bmxgc.drift import KeyHistory
from bmxgc.errors import BmxgcError, GateRefused, PartialFailure, PlanFileError, ServiceError
from bmxgc.live import live_histories
from bmxgc.model import Receipt, parse_rfc3339, rfc3339, utc_now
from bmxgc.planfile import strict_json
from bmxgc.receipt import load_receipt, newest_receipt, to_json, undo_record_name, who
from bmxgc.restore import Restore, RestorePlan, Skip, Window, apply_window, plan_undo, targets
from bmxgc.store import Store, open_location, plans_store

Confirm = Callable[[str], bool]


@dataclass(frozen=True)
class UndoResult:
    receipt_path: str
    record_path: str
    restored: list[Restore]  # verified: the deleted version is current again
    skipped: list[Skip]
    already_restored: list[str]
    errors: list[tuple[str, str, str]]  # key, code, message: markers S3 did not remove
    not_restored: list[tuple[str, str]] = field(default_factory=list)  # key, what S3 shows now
    record_error: str | None = None  # why the undo record could not be written

    @property
    def still_deleted(self) -> list[tuple[str, str]]:
        """Every key undo leaves without its deleted version or a newer real one, and why."""
        failed = {key: f"{code}: {message}" for key, code, message in self.errors}
        left = [(key, f"{failed[key]}; {found}" if key in failed else found) for key, found in self.not_restored]
        return left + [(s.key, s.reason) for s in self.skipped if s.still_deleted]


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
    client = client or s3.client_for(config.s3)
    if receipt_path is not None:
        store, name = open_location(str(receipt_path), client)
    else:
        store = plans_store(config, client)
        name = newest_receipt(store)
    receipt = load_receipt(store, name)
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
    runs = _earlier_runs(store, record_name)
    window = apply_window(receipt, utc_now(), _first_run_at(runs))
    with lock.held(client, receipt.bucket, receipt.prefix, command="undo", plan_hash=receipt.plan_hash) as held:
        decided = _decide(client, receipt, window)
        if decided.restores and not auto_approve:
            if confirm is None:
                raise GateRefused(
                    "consent", "no terminal to ask for approval; pass --auto-approve to undo without asking"
                )
            summary = (
                f"bmxgc will restore {len(decided.restores):,} objects in s3://{receipt.bucket}/"
                f"{receipt.prefix} by removing the delete markers apply wrote "
                f"({len(decided.skips):,} left alone, {len(decided.already_restored):,} already restored)."
            )
            if not confirm(summary):
                raise GateRefused("consent", "undo cancelled: only 'yes' approves")
        record = _Record(store, record_name, runs, name, receipt)
        errors = _remove_markers(client, receipt.bucket, decided.restores, record.intend)
        restored, not_restored = _verify(client, receipt, decided.restores)
        failed = {key for key, _found in not_restored}
        errors = [e for e in errors if e[0] in failed]
        result = UndoResult(
            path, store.location(record_name), restored, decided.skips, decided.already_restored, errors, not_restored
        )
        result = replace(result, record_error=record.finish(result))
    lock.check_released(held, result)
    _raise_unless_done(result)
    return result


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


def _first_run_at(runs: list[Any]) -> datetime | None:
    times: list[datetime] = []
    for run in runs:
        try:
            times.append(parse_rfc3339(str(run["at"])))
        except (KeyError, TypeError, ValueError):
            continue
    return min(times) if times else None


def _decide(client: s3.S3Client, receipt: Receipt, window: Window) -> RestorePlan:
    keys = set(targets(receipt))
    # Apply added one delete marker per key it deleted (more where a request was done twice).
    hint = receipt.prefix_versions + len(keys) if receipt.prefix_versions is not None else None
    live = live_histories(client, receipt.bucket, receipt.prefix, keys, hint)
    return plan_undo(receipt, live, window)


def _verify(
    client: s3.S3Client, receipt: Receipt, restores: list[Restore]
) -> tuple[list[Restore], list[tuple[str, str]]]:
    """Undo checks its own work: a key counts as restored only when S3 lists the
    version apply deleted as its latest again, whatever DeleteObjects answered."""
    if not restores:
        return [], []
    hint = receipt.prefix_versions + len(restores) if receipt.prefix_versions is not None else None
    live = live_histories(client, receipt.bucket, receipt.prefix, {r.key for r in restores}, hint)
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


def _earlier_runs(store: Store, record_name: str) -> list[Any]:
    """The runs in the undo record beside the receipt (none before the first undo)."""
    existing = store.read(record_name)
    if existing is None:
        return []
    try:
        runs = strict_json(existing).get("runs", [])
        if not isinstance(runs, list):
            raise ValueError
        return runs
    except (ValueError, AttributeError):
        raise PlanFileError(
            f"{store.location(record_name)}: the undo record is unreadable; move it aside and undo again"
        ) from None


def _remove_markers(
    client: s3.S3Client, bucket: str, restores: list[Restore], intend: Callable[[list[str]], None]
) -> list[tuple[str, str, str]]:
    """Remove every marker of every restore, up to 1,000 per request, each batch
    noted in the record first. Removing a version by id is idempotent: botocore's
    retries apply."""
    entries = [(r.key, marker) for r in restores for marker in r.markers]
    errors: list[tuple[str, str, str]] = []
    for start in range(0, len(entries), s3.MAX_KEYS_PER_REQUEST):
        batch = entries[start : start + s3.MAX_KEYS_PER_REQUEST]
        intend([key for key, _marker in batch])
        try:
            outcome = s3.delete_batch(client, bucket, [(key, marker, None) for key, marker in batch])
        except ServiceError as exc:
            errors += [(key, "RequestFailed", str(exc)) for key, _marker in batch]
            continue
        errors += outcome.errors
    return errors


class _Record:
    """The undo record beside the receipt: one entry per undo run, written
    before each batch (what it intends) and at the end (what it restored, left
    alone, and could not restore). It is a log, not a guard: undo decides from
    live state every time, so a record that cannot be written (disk full) does
    not stop a restore; the failure is reported and the run exits 1."""

    def __init__(self, store: Store, name: str, runs: list[Any], receipt_name: str, receipt: Receipt) -> None:
        self.store = store
        self.name = name
        self.runs = runs
        self.receipt_name = receipt_name
        self.receipt = receipt
        self.run: dict[str, Any] = {"at": rfc3339(utc_now()), "by": who(), "status": "in_progress", "intended": []}

    def intend(self, keys: list[str]) -> None:
        self.run["intended"] = [*self.run["intended"], *keys]
        self._write()

    def finish(self, result: UndoResult) -> str | None:
        """Write the run's outcome; why it could not be written, or None."""
        self.run = {
            "at": self.run["at"],
            "by": self.run["by"],
            "restored": [
                {
                    "key": r.key,
                    "version_id": r.restores_version_id,
                    "removed_delete_marker": r.marker_version_id,
                    **({"removed_stacked_delete_markers": list(r.stacked)} if r.stacked else {}),
                }
                for r in result.restored
            ],
            "skipped": [{"key": s.key, "reason": s.reason} for s in result.skipped],
            "already_restored": len(result.already_restored),
            "not_restored": [{"key": k, "found": found} for k, found in result.not_restored],
            "errors": [{"key": k, "code": c, "message": m} for k, c, m in result.errors],
        }
        return self._write()

    def _write(self) -> str | None:
        document = {
            "format_version": 1,
            "receipt": self.receipt_name,
            "plan_hash": self.receipt.plan_hash,
            "bucket": self.receipt.bucket,
            "prefix": self.receipt.prefix,
            "runs": [*self.runs, self.run],
        }
        try:
            self.store.replace(self.name, to_json(document))
        except (OSError, BmxgcError) as exc:
            return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return None
