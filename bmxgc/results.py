"""What each command returns: plain data, the Python API's typed results. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from bmxgc.errors import GateRefused
from bmxgc.model import Plan, Receipt, RecoveryPlan
from bmxgc.undo_decision import Restore, Skip


@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    path: str | None  # where the plan was written (a path or an s3:// URL); None if not written
    # What apply's offline gates would refuse this plan with today (None: nothing).
    refusal: GateRefused | None = None


@dataclass(frozen=True)
class ApplyResult:
    plan: Plan
    receipt: Receipt
    receipt_path: str  # a path or an s3:// URL

    @property
    def deleted(self) -> int:
        return len(self.receipt.deleted)


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
    receipt_summary: str = ""  # which apply this undid: plan hash, when, by whom, how many

    @property
    def still_deleted(self) -> list[tuple[str, str]]:
        """Every key undo leaves without its deleted version or a newer real one, and why."""
        failed = {key: f"{code}: {message}" for key, code, message in self.errors}
        left = [(key, f"{failed[key]}; {found}" if key in failed else found) for key, found in self.not_restored]
        return left + [(s.key, s.reason) for s in self.skipped if s.still_deleted]


@dataclass(frozen=True)
class RecoverResult:
    plan: RecoveryPlan
    plan_location: str
    nothing_beneath: list[str]
    applied: bool
    receipt_location: str | None = None
    restored: int = 0
    errors: int = 0


@dataclass(frozen=True)
class HistoryEntry:
    when: str
    name: str
    bucket: str
    prefix: str
    orphans: int | None  # None when the file cannot be read
    # planned, applied, partial, in progress, undone, recovery (not run),
    # recovered, unreadable, receipt unreadable, undo record unreadable
    state: str
    applied_by: str = ""
    # Why a file is unreadable: (file name, reason), for this entry's own file
    # or its receipt or undo record.
    problem: tuple[str, str] | None = None
