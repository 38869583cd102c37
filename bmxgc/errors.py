"""One exception root for everything bmxgc refuses or fails at.

Each error carries the data a caller needs (the gate, the offending keys) and
the exit code docs/reference.md assigns; ``cli.py`` is the one place that turns them
into a message and an exit status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_REFUSED = 3


class BmxgcError(Exception):
    """Root of bmxgc's errors. ``str(err)`` is one line for the operator."""

    exit_code = EXIT_ERROR

    def details(self) -> list[str]:
        """Further lines (offending keys, drift) printed after the message."""
        return []


class ConfigError(BmxgcError):
    """The config file or an argument is wrong. Exit 1."""


class ServiceError(BmxgcError):
    """S3 or the database could not be reached or answered with an error. Exit 1."""


class LockNotReleased(ServiceError):
    """The command finished, but its lock could not be released. Exit 1;
    ``result`` is what the command did (shown before the error)."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class ReferenceQueryError(BmxgcError):
    """A ``[[references]]`` query failed or returned something unusable. Exit 1."""


class InputNotFound(BmxgcError):
    """A plan, receipt or other file named on the command line does not exist. Exit 1."""


class AlreadyExists(BmxgcError):
    """A plan or receipt would overwrite an existing one. Exit 1; nothing written."""


class PlanFileError(BmxgcError):
    """A plan or receipt file is malformed, of an unknown version, or forged. Exit 3."""

    exit_code = EXIT_REFUSED


@dataclass(frozen=True)
class Offence:
    """One key a gate objects to, and why."""

    key: str
    reason: str


class GateRefused(BmxgcError):
    """A safety gate refused an apply, undo or recover. Exit 3, nothing changed."""

    exit_code = EXIT_REFUSED
    shown = 20

    def __init__(self, gate: str, message: str, offences: Sequence[Offence] = ()) -> None:
        super().__init__(f"refused by gate '{gate}': {message}")
        self.gate = gate
        self.offences = list(offences)

    def details(self) -> list[str]:
        lines = [f"  {o.key}: {o.reason}" for o in self.offences[: self.shown]]
        hidden = len(self.offences) - self.shown
        if hidden > 0:
            lines.append(f"  ... and {hidden:,} more ({len(self.offences):,} in all)")
        return lines


class DriftError(GateRefused):
    """Live state no longer matches the plan; holds the drifted keys."""

    def __init__(self, offences: Sequence[Offence]) -> None:
        super().__init__(
            "drift",
            f"{len(offences):,} planned object(s) changed since the plan was made; "
            "nothing was deleted; run 'bmxgc plan' again and review the new plan",
            offences,
        )


class PartialFailure(BmxgcError):
    """Apply or undo finished, but some keys failed. Exit 1; ``result`` says what was done."""

    def __init__(self, message: str, result: object = None, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.result = result
        self._details = list(details)

    def details(self) -> list[str]:
        return self._details


class Interrupted(BmxgcError):
    """SIGINT (exit 130) or SIGTERM (exit 143) stopped a command; the message
    says what was done and how to take it back, ``result`` holds it."""

    def __init__(self, message: str, exit_code: int, result: object = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.result = result


class InventoryError(BmxgcError):
    """An S3 Inventory report that bmxgc cannot plan from: not found, incomplete,
    without the fields it needs, of a format it does not read. Exit 1."""


class InventoryRefused(BmxgcError):
    """An S3 Inventory report refused for this plan: a checksum that does not
    match, another bucket's report, a report older than max_plan_age. Exit 3."""

    exit_code = EXIT_REFUSED
