"""``bmxgc history``: the plans and receipts in plans_dir, newest first.

One bad file never hides the others: a plan, receipt or undo record that
cannot be read is listed as unreadable, with the reason, and every other file
as usual.
"""

from __future__ import annotations


from bmxgc import s3
from bmxgc.config import Config
from bmxgc.errors import PlanFileError
from bmxgc.planfile import parse_plan_text, parse_recovery_plan, strict_json
from bmxgc.naming import RECEIPT_SUFFIX, UNDO_SUFFIX
from bmxgc.receipt import load_receipt
from bmxgc.results import HistoryEntry
from bmxgc.store import Store, plans_store


def history(config: Config, *, client: s3.S3Client | None = None) -> list[HistoryEntry]:
    store = plans_store(config, client)
    names = set(store.names())
    documents = {n for n in names if n.endswith(".json")}
    plans = {n for n in documents if not n.endswith((RECEIPT_SUFFIX, UNDO_SUFFIX))}
    entries = [_entry(store, name, names) for name in plans]
    # Receipts and undo records are read with their plan; one whose plan is
    # not here (applied from elsewhere) is listed only if it is unreadable.
    for name in sorted(documents - plans):
        stem = name.removesuffix(RECEIPT_SUFFIX).removesuffix(UNDO_SUFFIX)
        if stem + ".json" not in plans:
            reason = _unreadable_reason(store, name)
            if reason is not None:
                entries.append(_unreadable(name, reason))
    # A plan whose receipt or undo record is unreadable: that file gets its own row too.
    entries += [
        _unreadable(e.problem[0], e.problem[1]) for e in list(entries) if e.problem and e.problem[0] != e.name
    ]
    return sorted(entries, key=lambda e: (e.when, e.name), reverse=True)


def _unreadable(name: str, reason: str) -> HistoryEntry:
    return HistoryEntry("?", name, "?", "?", None, "unreadable", problem=(name, reason))


def _why(exc: PlanFileError, store: Store, name: str) -> str:
    return str(exc).removeprefix(store.location(name) + ": ")


def _unreadable_reason(store: Store, name: str) -> str | None:
    try:
        if name.endswith(RECEIPT_SUFFIX):
            load_receipt(store, name)
        else:
            _undone(store, name)
    except PlanFileError as exc:
        return _why(exc, store, name)
    return None


def _entry(store: Store, name: str, names: set[str]) -> HistoryEntry:
    stem = name.removesuffix(".json")
    receipt_name = stem + RECEIPT_SUFFIX
    try:
        text = store.read(name) or ""
        try:
            plan = parse_plan_text(text, store.location(name))
        except PlanFileError:
            if not _is_recovery_plan(text):
                raise
            return _recovery_entry(store, name, text, receipt_name in names)
    except PlanFileError as exc:
        return _unreadable(name, _why(exc, store, name))
    state, by, problem = "planned", "", None
    if receipt_name in names:
        try:
            receipt = load_receipt(store, receipt_name)
        except PlanFileError as exc:
            state, problem = "receipt unreadable", (receipt_name, _why(exc, store, receipt_name))
        else:
            state = {"complete": "applied", "partial": "partial", "in_progress": "in progress"}[receipt.status]
            by = f"{receipt.applied_by.get('user', '?')}@{receipt.applied_by.get('host', '?')}"
            try:
                if _undone(store, stem + UNDO_SUFFIX):
                    state = "undone"
            except PlanFileError as exc:
                state, problem = "undo record unreadable", (stem + UNDO_SUFFIX, _why(exc, store, stem + UNDO_SUFFIX))
    return HistoryEntry(plan.created_at, name, plan.bucket, plan.prefix, plan.stats.orphans, state, by, problem)


def _is_recovery_plan(text: str) -> bool:
    try:
        raw = strict_json(text)
    except ValueError:
        return False
    return isinstance(raw, dict) and raw.get("kind") == "recovery"


def _recovery_entry(store: Store, name: str, text: str, applied: bool) -> HistoryEntry:
    recovery = parse_recovery_plan(text, store.location(name))
    by, state, problem = "", "recovery (not run)", None
    if applied:
        receipt_name = name.removesuffix(".json") + RECEIPT_SUFFIX
        try:
            receipt = load_receipt(store, receipt_name)
        except PlanFileError as exc:
            state, problem = "receipt unreadable", (receipt_name, _why(exc, store, receipt_name))
        else:
            state = "recovered"
            by = f"{receipt.applied_by.get('user', '?')}@{receipt.applied_by.get('host', '?')}"
    count = recovery.stats.get("to_restore", 0)
    return HistoryEntry(
        recovery.created_at, name, recovery.bucket, recovery.prefix, count, state, by, problem
    )


def _undone(store: Store, record_name: str) -> bool:
    """Whether an undo run restored anything; PlanFileError if the record is unreadable."""
    text = store.read(record_name)
    if text is None:
        return False
    try:
        record = strict_json(text)
        runs = record.get("runs") if isinstance(record, dict) else None
        if not isinstance(runs, list) or not all(isinstance(run, dict) for run in runs):
            raise ValueError("no list of runs")
    except ValueError as exc:
        raise PlanFileError(f"{store.location(record_name)}: not an undo record: {exc}") from None
    return any(run.get("restored") for run in runs)
