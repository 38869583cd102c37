"""The Python API: what the CLI does, callable from a scheduled function.

Every function that needs a config takes it first: a ``Config`` (from
``load_config`` or ``config_from_dict``), a path to a TOML file, or None for
the CLI's lookup (env ``BMXGC_CONFIG``, then ``./bmxgc.toml``). Each returns
the command's typed result (``bmxgc.results``) or raises a ``BmxgcError``
carrying the exit code the CLI would use; nothing here exits the process.
``client`` is an S3 client to use instead of one made from ``[s3]``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from bmxgc import s3
from bmxgc.commands.apply import apply as _apply
from bmxgc.commands.history import history as _history
from bmxgc.commands.inspect import diff, verify
from bmxgc.commands.plan import plan as _plan
from bmxgc.commands.recover import recover as _recover
from bmxgc.commands.undo import undo as _undo
from bmxgc.commands.unlock import unlock as _unlock
from bmxgc.config import Config, load_config
from bmxgc.executor import Progress
from bmxgc.gates import Confirm
from bmxgc.results import ApplyResult, HistoryEntry, PlanResult, RecoverResult, UndoResult
from bmxgc.review import PlanDiff, summary

ConfigLike = Config | str | os.PathLike[str] | None
PathLike = str | os.PathLike[str]

# Offline, as on the command line: verify(path) -> PlanSummary (the plan without its
# orphans, every one of which was checked), diff(old, new) -> PlanDiff,
# summary(plan) -> the dict `show --format json` prints.
__all__ = [
    "ConfigLike", "PlanDiff", "apply", "diff", "history", "plan", "recover", "summary", "undo", "unlock", "verify",
]


def _config(config: ConfigLike) -> Config:
    return config if isinstance(config, Config) else load_config(config)


def plan(
    config: ConfigLike = None,
    *,
    out: str | Path | None = None,
    write: bool = True,
    cross_check: bool = False,
    cross_check_tables: Sequence[str] = (),
    inventory: str | None = None,
    now: datetime | None = None,
    client: s3.S3Client | None = None,
) -> PlanResult:
    """``bmxgc plan``: the plan, and where it was written (None with ``write=False``).
    ``inventory``: plan from that S3 Inventory report instead of listing."""
    return _plan(
        _config(config), out=out, write=write, cross_check=cross_check, cross_check_tables=cross_check_tables,
        inventory=inventory, now=now, client=client,
    )


def apply(
    config: ConfigLike,
    plan: PathLike,
    *,
    auto_approve: bool = False,
    max_orphan_ratio: float | None = None,
    allow_jump: bool = False,
    expect_deletes: int | None = None,
    confirm: Confirm | None = None,
    type_count: Callable[[str], str] | None = None,
    now: datetime | None = None,
    client: s3.S3Client | None = None,
    progress: Progress | None = None,
) -> ApplyResult:
    """``bmxgc apply PLAN``. Without ``auto_approve``, ``confirm(summary)`` must return True.
    With ``allow_jump``, ``expect_deletes`` or ``type_count(question)`` gives the number of
    objects the plan deletes."""
    return _apply(
        _config(config), plan, auto_approve=auto_approve, max_orphan_ratio=max_orphan_ratio,
        allow_jump=allow_jump, expect_deletes=expect_deletes, confirm=confirm, type_count=type_count,
        now=now, client=client, progress=progress,
    )


def undo(
    config: ConfigLike = None,
    receipt: PathLike | None = None,
    *,
    auto_approve: bool = False,
    confirm: Confirm | None = None,
    client: s3.S3Client | None = None,
) -> UndoResult:
    """``bmxgc undo [RECEIPT]`` (the newest receipt in plans_dir when None)."""
    return _undo(_config(config), receipt, auto_approve=auto_approve, confirm=confirm, client=client)


def recover(
    config: ConfigLike = None,
    *,
    since: datetime,
    until: datetime | None = None,
    prefix: str | None = None,
    whole_bucket: bool = False,
    auto_approve: bool = False,
    client: s3.S3Client | None = None,
) -> RecoverResult:
    """``bmxgc recover``. Raises PartialFailure (its ``result`` the RecoverResult)
    when some markers could not be removed."""
    return _recover(
        _config(config), since=since, until=until, prefix=prefix, whole_bucket=whole_bucket,
        auto_approve=auto_approve, client=client,
    )


def history(config: ConfigLike = None, *, client: s3.S3Client | None = None) -> list[HistoryEntry]:
    """``bmxgc history``: newest first."""
    return _history(_config(config), client=client)


def unlock(
    config: ConfigLike = None,
    *,
    prefix: str | None = None,
    whole_bucket: bool = False,
    auto_approve: bool = False,
    break_live_lock: bool = False,
    confirm: Confirm | None = None,
    client: s3.S3Client | None = None,
) -> str:
    """``bmxgc unlock``: what was done, as the CLI prints it."""
    return _unlock(
        _config(config), prefix=prefix, whole_bucket=whole_bucket, auto_approve=auto_approve,
        break_live_lock=break_live_lock, confirm=confirm, client=client,
    )
