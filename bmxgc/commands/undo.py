"""``bmxgc undo``: make current again exactly what an apply deleted."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bmxgc import lock, s3
from bmxgc.config import Config
from bmxgc.errors import GateRefused, PartialFailure, PlanFileError, ServiceError
from bmxgc.live import live_histories
from bmxgc.model import Receipt, rfc3339, utc_now
from bmxgc.planfile import strict_json
from bmxgc.receipt import load_receipt, newest_receipt, to_json, undo_record_name, who
from bmxgc.restore import Restore, RestorePlan, Skip, plan_undo
from bmxgc.store import Store, open_location, plans_store

Confirm = Callable[[str], bool]


@dataclass(frozen=True)
class UndoResult:
    receipt_path: str
    record_path: str
    restored: list[Restore]
    skipped: list[Skip]
    already_restored: list[str]
    errors: list[tuple[str, str, str]]


def undo(
    config: Config,
    receipt_path: str | os.PathLike[str] | None = None,
    *,
    auto_approve: bool = False,
    confirm: Confirm | None = None,
    client: s3.S3Client | None = None,
) -> UndoResult:
    """Restore what the receipt's apply deleted (the newest receipt if none is named)."""
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
    restored_before = {r["key"] for run in runs for r in run.get("restored", [])}
    with lock.held(client, receipt.bucket, receipt.prefix, command="undo", plan_hash=receipt.plan_hash):
        decided = _decide(client, receipt, restored_before)
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
        errors = _remove_markers(client, receipt.bucket, decided.restores)
    failed = {key for key, _code, _msg in errors}
    restored = [r for r in decided.restores if r.key not in failed]
    record = _append_record(store, record_name, runs, name, receipt, restored, decided, errors)
    result = UndoResult(path, record, restored, decided.skips, decided.already_restored, errors)
    if errors:
        raise PartialFailure(
            f"{len(errors):,} objects could not be restored (see {record}); run 'bmxgc undo {path}' "
            "again: it restores only what is still deleted",
            result,
        )
    return result


def _decide(client: s3.S3Client, receipt: Receipt, restored_before: set[str]) -> RestorePlan:
    keys = {e.key for e in receipt.deleted} | {k.key for b in receipt.pending for k in b.keys}
    # Apply added one delete marker per key it deleted.
    hint = receipt.prefix_versions + len(keys) if receipt.prefix_versions is not None else None
    live = live_histories(client, receipt.bucket, receipt.prefix, keys, hint)
    return plan_undo(receipt, live, restored_before)


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


def _remove_markers(client: s3.S3Client, bucket: str, restores: list[Restore]) -> list[tuple[str, str, str]]:
    errors: list[tuple[str, str, str]] = []
    for start in range(0, len(restores), s3.MAX_KEYS_PER_REQUEST):
        batch = restores[start : start + s3.MAX_KEYS_PER_REQUEST]
        try:
            outcome = s3.delete_batch(client, bucket, [(r.key, r.marker_version_id, None) for r in batch])
        except ServiceError as exc:
            errors += [(r.key, "RequestFailed", str(exc)) for r in batch]
            continue
        errors += outcome.errors
    return errors


def _append_record(
    store: Store,
    record: str,
    runs: list[Any],
    receipt_name: str,
    receipt: Receipt,
    restored: list[Restore],
    decided: RestorePlan,
    errors: list[tuple[str, str, str]],
) -> str:
    """Beside the receipt, one entry per undo run: what it restored and left alone."""
    runs.append(
        {
            "at": rfc3339(utc_now()),
            "by": who(),
            "restored": [
                {"key": r.key, "version_id": r.restores_version_id, "removed_delete_marker": r.marker_version_id}
                for r in restored
            ],
            "skipped": [{"key": s.key, "reason": s.reason} for s in decided.skips],
            "already_restored": len(decided.already_restored),
            "errors": [{"key": k, "code": c, "message": m} for k, c, m in errors],
        }
    )
    return store.replace(
        record,
        to_json({
            "format_version": 1,
            "receipt": receipt_name,
            "plan_hash": receipt.plan_hash,
            "bucket": receipt.bucket,
            "prefix": receipt.prefix,
            "runs": runs,
        }),
    )
