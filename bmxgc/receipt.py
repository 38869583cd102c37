"""Receipts: the write-ahead journal of an apply, and the record of an undo.

Every change is written to a temporary file, fsynced, renamed over the
receipt, and the folder fsynced, so a process killed at any instant leaves
either the previous receipt or the next one, never half of one. A batch's
intent is on disk before its DeleteObjects request is sent.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bmxgc.config import describe_validation_error
from bmxgc.errors import GateRefused, PlanFileError
from bmxgc.model import (
    FORMAT_VERSION,
    DeletedEntry,
    KeyFailure,
    ObjectVersion,
    PendingBatch,
    Receipt,
    rfc3339,
    utc_now,
)

RECEIPT_SUFFIX = ".receipt.json"
UNDO_SUFFIX = ".undo.json"


def receipt_path_for(plans_dir: Path, plan_path: Path) -> Path:
    return plans_dir / f"{plan_path.stem}{RECEIPT_SUFFIX}"


def undo_record_path(receipt_path: Path) -> Path:
    return receipt_path.with_name(receipt_path.name.removesuffix(RECEIPT_SUFFIX) + UNDO_SUFFIX)


def who() -> dict[str, str]:
    """Who is acting, for receipts and locks: user, host and process id."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {"user": user, "host": socket.gethostname(), "pid": str(os.getpid())}


def write_json_atomically(path: Path, document: Any) -> None:
    """Replace ``path`` with ``document``; durable when this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".bmxgc-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_receipt(path: Path) -> Receipt:
    """Read a receipt: ``format_version`` first, then the schema."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanFileError(f"{path}: receipt not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanFileError(f"{path}: not a readable receipt: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format_version") != FORMAT_VERSION:
        version = raw.get("format_version") if isinstance(raw, dict) else None
        raise PlanFileError(f"{path}: unknown receipt format_version {version!r}; use the bmxgc that wrote it")
    try:
        return Receipt.model_validate(raw)
    except ValidationError as exc:
        raise PlanFileError(f"{path}: not a valid receipt: {describe_validation_error(exc)}") from None


def newest_receipt(plans_dir: Path) -> Path:
    """The receipt in ``plans_dir`` that was started last."""
    candidates = sorted(plans_dir.glob(f"*{RECEIPT_SUFFIX}")) if plans_dir.is_dir() else []
    if not candidates:
        raise PlanFileError(f"{plans_dir}: no receipt found; name one: bmxgc undo PATH")
    return max(candidates, key=lambda p: (load_receipt(p).started_at, p.name))


class Journal:
    """The receipt of one apply, kept on disk as the apply goes.

    ``create`` refuses an existing receipt: a plan is applied once.
    """

    def __init__(self, path: Path, receipt: Receipt) -> None:
        self.path = path
        self.receipt = receipt

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        kind: str,
        plan_hash: str,
        bucket: str,
        prefix: str,
        overrides: dict[str, Any],
        undo_until: str | None,
    ) -> Journal:
        if path.exists():
            raise GateRefused(
                "integrity",
                f"{path} already exists: this plan was applied before; "
                f"run 'bmxgc undo {path}' to take it back, or plan again",
            )
        receipt = Receipt.model_validate(
            {
                "format_version": FORMAT_VERSION,
                "kind": kind,
                "plan_hash": plan_hash,
                "bucket": bucket,
                "prefix": prefix,
                "started_at": rfc3339(utc_now()),
                "status": "in_progress",
                "overrides": overrides,
                "applied_by": who(),
                "undo_until": undo_until,
            }
        )
        journal = cls(path, receipt)
        journal._flush()
        return journal

    def _flush(self) -> None:
        write_json_atomically(self.path, self.receipt.model_dump(mode="json"))

    def _update(self, **changes: Any) -> None:
        self.receipt = self.receipt.model_copy(update=changes)
        self._flush()

    def intend(self, batch: Sequence[ObjectVersion]) -> None:
        """Record a batch before its request is sent."""
        pending = PendingBatch(sent_at=rfc3339(utc_now()), keys=list(batch))
        self._update(pending=[*self.receipt.pending, pending])

    def record(
        self,
        deleted: Sequence[DeletedEntry],
        errors: Sequence[KeyFailure],
    ) -> None:
        """Record the answer to the pending batch and clear it."""
        self._update(
            deleted=[*self.receipt.deleted, *deleted],
            errors=[*self.receipt.errors, *errors],
            pending=[],
        )

    def finish(self, *, failed: bool = False) -> None:
        partial = failed or bool(self.receipt.errors) or bool(self.receipt.pending)
        self._update(status="partial" if partial else "complete", finished_at=rfc3339(utc_now()))
