"""A scheduled function as a user writes it, type-checked with mypy --strict
by tests/test_typing.py: the API's names, arguments and results are typed."""

from __future__ import annotations

from datetime import datetime, timezone

import bmxgc
from bmxgc.results import ApplyResult, HistoryEntry, PlanResult, RecoverResult, UndoResult


def nightly(path: str) -> int:
    config = bmxgc.load_config(path)
    planned: PlanResult = bmxgc.plan(config)
    orphans: int = planned.plan.stats.orphans
    if planned.path is None:
        return orphans
    applied: ApplyResult = bmxgc.apply(config, planned.path, auto_approve=True)
    undone: UndoResult = bmxgc.undo(path, applied.receipt_path, auto_approve=True)
    recovered: RecoverResult = bmxgc.recover(config, since=datetime(2026, 1, 1, tzinfo=timezone.utc))
    entries: list[HistoryEntry] = bmxgc.history(config)
    message: str = bmxgc.unlock(config, auto_approve=True)
    try:
        bmxgc.verify(planned.path)
    except bmxgc.BmxgcError as exc:
        return exc.exit_code
    return applied.deleted + len(undone.restored) + recovered.restored + len(entries) + len(message)
