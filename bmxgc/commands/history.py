"""``bmxgc history``: the plans and receipts in plans_dir, newest first."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bmxgc import s3
from bmxgc.config import Config
from bmxgc.errors import PlanFileError
from bmxgc.planfile import parse_plan_text
from bmxgc.receipt import RECEIPT_SUFFIX, UNDO_SUFFIX, load_receipt
from bmxgc.store import Store, plans_store


@dataclass(frozen=True)
class HistoryEntry:
    when: str
    name: str
    bucket: str
    prefix: str
    orphans: int
    state: str  # planned, applied, partial, in progress, undone, recovery, recovered, unreadable
    applied_by: str = ""


def history(config: Config, *, client: s3.S3Client | None = None) -> list[HistoryEntry]:
    store = plans_store(config, client)
    names = set(store.names())
    entries = [
        _entry(store, name, names)
        for name in names
        if name.endswith(".json") and not name.endswith((RECEIPT_SUFFIX, UNDO_SUFFIX))
    ]
    return sorted(entries, key=lambda e: (e.when, e.name), reverse=True)


def _entry(store: Store, name: str, names: set[str]) -> HistoryEntry:
    text = store.read(name) or ""
    stem = name.removesuffix(".json")
    receipt_name = stem + RECEIPT_SUFFIX
    try:
        raw = json.loads(text)
        if isinstance(raw, dict) and raw.get("kind") == "recovery":
            return _recovery_entry(store, name, raw, receipt_name in names)
        plan = parse_plan_text(text, store.location(name))
    except (PlanFileError, ValueError):
        return HistoryEntry("?", name, "?", "?", 0, "unreadable (bmxgc verify says why)")
    state, by = "planned", ""
    if receipt_name in names:
        receipt = load_receipt(store, receipt_name)
        state = {"complete": "applied", "partial": "partial", "in_progress": "in progress"}[receipt.status]
        by = f"{receipt.applied_by.get('user', '?')}@{receipt.applied_by.get('host', '?')}"
        if _undone(store, stem + UNDO_SUFFIX):
            state = "undone"
    return HistoryEntry(plan.created_at, name, plan.bucket, plan.prefix, plan.stats.orphans, state, by)


def _recovery_entry(store: Store, name: str, raw: dict[str, object], applied: bool) -> HistoryEntry:
    stats = raw.get("stats")
    count = int(stats.get("to_restore", 0)) if isinstance(stats, dict) else 0
    by = ""
    if applied:
        receipt = load_receipt(store, name.removesuffix(".json") + RECEIPT_SUFFIX)
        by = f"{receipt.applied_by.get('user', '?')}@{receipt.applied_by.get('host', '?')}"
    return HistoryEntry(
        str(raw.get("created_at", "?")),
        name,
        str(raw.get("bucket", "?")),
        str(raw.get("prefix", "?")),
        count,
        "recovered" if applied else "recovery (not run)",
        by,
    )


def _undone(store: Store, record_name: str) -> bool:
    text = store.read(record_name)
    if text is None:
        return False
    try:
        runs = json.loads(text).get("runs", [])
    except (ValueError, AttributeError):
        return False
    return any(run.get("restored") for run in runs)
