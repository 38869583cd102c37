"""The Python API: what the CLI does, callable from a scheduled function.

Each function takes a ``Config`` (from ``load_config`` or ``config_from_dict``),
a path to a TOML file, or None for the CLI's lookup (env ``BMXGC_CONFIG``,
then ``./bmxgc.toml``), and returns the command's result or raises a
``BmxgcError`` carrying the exit code the CLI would use.
"""

from __future__ import annotations

import os
from typing import Any

from bmxgc.commands.apply import apply as _apply
from bmxgc.commands.history import history as _history
from bmxgc.commands.inspect import diff, verify
from bmxgc.review import PlanDiff, summary
from bmxgc.commands.plan import plan as _plan
from bmxgc.commands.recover import recover as _recover
from bmxgc.commands.undo import undo as _undo
from bmxgc.config import Config, load_config
from bmxgc.results import ApplyResult, HistoryEntry, PlanResult, RecoverResult, UndoResult

ConfigLike = Config | str | os.PathLike[str] | None

# Offline, as on the command line: verify(path) -> Plan, diff(old, new) -> PlanDiff,
# summary(plan) -> the dict `show --format json` prints.
__all__ = ["plan", "apply", "undo", "recover", "history", "verify", "diff", "summary", "PlanDiff"]


def _config(config: ConfigLike) -> Config:
    return config if isinstance(config, Config) else load_config(config)


def plan(config: ConfigLike = None, **options: Any) -> PlanResult:
    """``bmxgc plan``; options: out, write, cross_check, cross_check_tables, now, client."""
    return _plan(_config(config), **options)


def apply(plan_path: str | os.PathLike[str], config: ConfigLike = None, **options: Any) -> ApplyResult:
    """``bmxgc apply PLAN``; options: auto_approve, max_orphan_ratio, confirm, now, client."""
    return _apply(_config(config), plan_path, **options)


def undo(receipt_path: str | os.PathLike[str] | None = None, config: ConfigLike = None, **options: Any) -> UndoResult:
    """``bmxgc undo [RECEIPT]``; options: auto_approve, confirm, client."""
    return _undo(_config(config), receipt_path, **options)


def recover(config: ConfigLike = None, **options: Any) -> RecoverResult:
    """``bmxgc recover``; options: since (required), until, prefix, whole_bucket, auto_approve, client."""
    return _recover(_config(config), **options)


def history(config: ConfigLike = None, **options: Any) -> list[HistoryEntry]:
    """``bmxgc history``."""
    return _history(_config(config), **options)
