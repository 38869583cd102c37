"""``bmxgc history``: the plans and receipts in plans_dir, newest first.

One bad file never hides the others: a plan, receipt or undo record that
cannot be read is listed as unreadable, with the reason, and every other file
as usual.
"""

from __future__ import annotations


from collections.abc import Callable

from bmxgc import s3
from bmxgc.config import Config
from bmxgc.errors import PlanFileError
from bmxgc.gates import Baseline, baseline_of, offline_refusal
from bmxgc.model import Plan, Receipt, RecoveryPlan, UndoRecord, utc_now
from bmxgc.naming import (
    DOCUMENT_SUFFIX,
    RECEIPT_SUFFIX,
    is_plan_name,
    plan_for,
    receipt_for_plan,
    undo_record_for_plan,
)
from bmxgc.planfile import PLAN, RECOVERY_PLAN, UNDO_RECORD, read
from bmxgc.receipt import last_applied_plan, load_receipt
from bmxgc.results import HistoryEntry
from bmxgc.store import Store, plans_store


def history(config: Config, *, client: s3.S3Client | None = None) -> list[HistoryEntry]:
    store = plans_store(config, client)
    names = set(store.names())
    documents = {n for n in names if n.endswith(DOCUMENT_SUFFIX)}
    plans = {n for n in documents if is_plan_name(n)}
    baselines: dict[tuple[str, str], Baseline | None] = {}

    def verdict(plan: Plan) -> str | None:
        """The gate apply's offline gates would refuse ``plan`` with today, or None."""
        where = (plan.bucket, plan.prefix)
        if where not in baselines:
            baselines[where] = baseline_of(last_applied_plan(store, plan.bucket, plan.prefix))
        # A planned plan has no receipt, so it is never its own baseline.
        refusal = offline_refusal(plan, config, baselines[where], utc_now()) if plan.orphans else None
        return refusal.gate if refusal else None

    entries = [_entry(store, name, names, verdict) for name in plans]
    # Receipts and undo records are read with their plan; one whose plan is
    # not here (written with --out elsewhere) gets its own row all the same.
    for name in sorted(documents - plans):
        if plan_for(name) not in plans:
            if name.endswith(RECEIPT_SUFFIX):
                entries.append(_receipt_entry(store, name, names))
            elif receipt_for_plan(name) not in names:
                entries.append(_record_entry(store, name))
    # A plan whose receipt or undo record is unreadable: that file gets its own row too.
    entries += [
        _unreadable(e.problem[0], e.problem[1]) for e in list(entries) if e.problem and e.problem[0] != e.name
    ]
    return sorted(entries, key=lambda e: (e.when, e.name), reverse=True)


def _unreadable(name: str, reason: str) -> HistoryEntry:
    return HistoryEntry("?", name, "?", "?", None, "unreadable", problem=(name, reason))


def _why(exc: PlanFileError, store: Store, name: str) -> str:
    return str(exc).removeprefix(store.location(name) + ": ")


def _receipt_entry(store: Store, name: str, names: set[str]) -> HistoryEntry:
    """A receipt whose plan is not in plans_dir: its own row, from the receipt."""
    try:
        receipt: Receipt = load_receipt(store, name)
    except PlanFileError as exc:
        return _unreadable(name, _why(exc, store, name))
    by = f"{receipt.applied_by.get('user', '?')}@{receipt.applied_by.get('host', '?')}"
    if receipt.kind == "recover":
        return HistoryEntry(receipt.started_at, name, receipt.bucket, receipt.prefix, len(receipt.restored), "recovered", by)
    state = {"complete": "applied", "partial": "partial", "in_progress": "in progress"}[receipt.status]
    problem = None
    record_name = undo_record_for_plan(name)
    if record_name in names:
        try:
            if _undone(store, record_name):
                state = "undone"
        except PlanFileError as exc:
            state, problem = "undo record unreadable", (record_name, _why(exc, store, record_name))
    count = len(receipt.deleted) + len(receipt.errors)
    return HistoryEntry(receipt.started_at, name, receipt.bucket, receipt.prefix, count, state, by, problem)


def _record_entry(store: Store, name: str) -> HistoryEntry:
    """An undo record with neither its plan nor its receipt here."""
    try:
        record: UndoRecord = read(store.read(name) or "", store.location(name), UNDO_RECORD)
    except PlanFileError as exc:
        return _unreadable(name, _why(exc, store, name))
    restored = sum(len(run.restored or []) for run in record.runs)
    when = max((run.at for run in record.runs), default="?")
    last = record.runs[-1].by if record.runs else {}
    by = f"{last.get('user', '?')}@{last.get('host', '?')}" if last else ""
    state = "undone" if restored else "undo (nothing restored)"
    return HistoryEntry(when, name, record.bucket, record.prefix, restored, state, by)


def _entry(
    store: Store,
    name: str,
    names: set[str],
    verdict: Callable[[Plan], str | None],
) -> HistoryEntry:
    try:
        found: Plan | RecoveryPlan = read(store.read(name) or "", store.location(name), PLAN, RECOVERY_PLAN)
    except PlanFileError as exc:
        return _unreadable(name, _why(exc, store, name))
    receipt_name = receipt_for_plan(name)
    if isinstance(found, RecoveryPlan):
        state, by, problem = _receipt_state(store, receipt_name, names, "recovery (not run)", "recovered")
        count = found.stats.to_restore
        return HistoryEntry(found.created_at, name, found.bucket, found.prefix, count, state, by, problem)
    state, by, problem = _receipt_state(store, receipt_name, names, "planned", None)
    if state == "planned" and (gate := verdict(found)) is not None:
        state = f"will be refused ({gate})"
    if state in ("applied", "partial", "in progress"):
        record_name = undo_record_for_plan(name)
        try:
            if _undone(store, record_name):
                state = "undone"
        except PlanFileError as exc:
            state, problem = "undo record unreadable", (record_name, _why(exc, store, record_name))
    return HistoryEntry(found.created_at, name, found.bucket, found.prefix, found.stats.orphans, state, by, problem)


def _receipt_state(
    store: Store, receipt_name: str, names: set[str], without: str, done: str | None
) -> tuple[str, str, tuple[str, str] | None]:
    """The state a receipt gives its plan (``without`` when there is none;
    ``done`` for any status, else the status's own word), who ran it, and a problem."""
    if receipt_name not in names:
        return without, "", None
    try:
        receipt: Receipt = load_receipt(store, receipt_name)
    except PlanFileError as exc:
        return "receipt unreadable", "", (receipt_name, _why(exc, store, receipt_name))
    state = done or {"complete": "applied", "partial": "partial", "in_progress": "in progress"}[receipt.status]
    by = f"{receipt.applied_by.get('user', '?')}@{receipt.applied_by.get('host', '?')}"
    return state, by, None


def _undone(store: Store, record_name: str) -> bool:
    """Whether an undo run restored anything; PlanFileError if the record is unreadable."""
    text = store.read(record_name)
    if text is None:
        return False
    record: UndoRecord = read(text, store.location(record_name), UNDO_RECORD)
    return any(run.restored for run in record.runs)
