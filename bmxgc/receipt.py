"""Receipts: the write-ahead journal of an apply (or recover), and undo records.

Every change to a receipt replaces it atomically and durably (a fsynced
temporary file renamed into place, or one S3 PUT), so a process killed at
any instant leaves the previous receipt or the next one, never half of one.
A batch's intent is stored before its DeleteObjects request is sent.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError

from bmxgc.config import describe_validation_error
from bmxgc.errors import AlreadyExists, GateRefused, InputNotFound, PlanFileError
from bmxgc.model import (
    FORMAT_VERSION,
    DeletedEntry,
    KeyFailure,
    ObjectVersion,
    PendingBatch,
    Receipt,
    RestoredEntry,
    rfc3339,
    utc_now,
)
from bmxgc.store import Store

RECEIPT_SUFFIX = ".receipt.json"
UNDO_SUFFIX = ".undo.json"


def receipt_name_for(plan_location: str) -> str:
    """``plans/20261128T120000Z-abc.json`` -> ``20261128T120000Z-abc.receipt.json``."""
    return PurePosixPath(plan_location.replace("\\", "/")).stem + RECEIPT_SUFFIX


def undo_record_name(receipt_name: str) -> str:
    return receipt_name.removesuffix(RECEIPT_SUFFIX) + UNDO_SUFFIX


def who() -> dict[str, str]:
    """Who is acting, for receipts and locks: user, host and process id."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {"user": user, "host": socket.gethostname(), "pid": str(os.getpid())}


def to_json(document: Any) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def parse_receipt(text: str, source: str) -> Receipt:
    """Read a receipt: ``format_version`` first, then the schema."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(f"{source}: not a receipt: invalid JSON ({exc})") from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise PlanFileError(
            f"{source}: unknown receipt format_version {version!r}; use the bmxgc that wrote it"
        )
    try:
        return Receipt.model_validate(raw)
    except ValidationError as exc:
        raise PlanFileError(
            f"{source}: not a valid receipt: {describe_validation_error(exc, unknown='unknown field')}"
        ) from None


def load_receipt(store: Store, name: str) -> Receipt:
    text = store.read(name)
    if text is None:
        raise InputNotFound(f"{store.location(name)}: receipt not found; check the path")
    return parse_receipt(text, store.location(name))


def newest_receipt(store: Store) -> str:
    """The name of the apply receipt in ``store`` that was started last."""
    receipts = [(load_receipt(store, n), n) for n in store.names() if n.endswith(RECEIPT_SUFFIX)]
    applies = [(r.started_at, n) for r, n in receipts if r.kind == "apply"]
    if not applies:
        raise InputNotFound(f"{store.location('')}: no apply receipt found; name one: bmxgc undo PATH")
    return max(applies)[1]


def already_applied(receipt_location: str) -> GateRefused:
    """The refusal for a plan whose receipt exists: a plan is applied once."""
    return GateRefused(
        "integrity",
        f"{receipt_location} exists: this plan was applied before; run "
        f"'bmxgc undo {receipt_location}' to take it back, or plan again",
    )


class Journal:
    """The receipt of one apply or recover, kept in its store as the work goes.

    ``create`` refuses an existing receipt: a plan is applied once.
    """

    def __init__(self, store: Store, name: str, receipt: Receipt) -> None:
        self.store = store
        self.name = name
        self.receipt = receipt

    @property
    def location(self) -> str:
        return self.store.location(self.name)

    @classmethod
    def create(
        cls,
        store: Store,
        name: str,
        *,
        kind: str,
        plan_hash: str,
        bucket: str,
        prefix: str,
        overrides: dict[str, Any],
        undo_until: str | None,
        prefix_versions: int | None = None,
    ) -> Journal:
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
                "prefix_versions": prefix_versions,
            }
        )
        try:
            store.create(name, to_json(receipt.model_dump(mode="json")))
        except AlreadyExists:
            raise already_applied(store.location(name)) from None
        return cls(store, name, receipt)

    def _update(self, **changes: Any) -> None:
        self.receipt = self.receipt.model_copy(update=changes)
        self.store.replace(self.name, to_json(self.receipt.model_dump(mode="json")))

    def intend(self, batch: Sequence[ObjectVersion]) -> None:
        """Record a batch before its request is sent."""
        pending = PendingBatch(sent_at=rfc3339(utc_now()), keys=list(batch))
        self._update(pending=[*self.receipt.pending, pending])

    def record(self, deleted: Sequence[DeletedEntry], errors: Sequence[KeyFailure]) -> None:
        """Record the answer to the pending batch and clear it."""
        self._update(
            deleted=[*self.receipt.deleted, *deleted],
            errors=[*self.receipt.errors, *errors],
            pending=[],
        )

    def record_restored(self, restored: Sequence[RestoredEntry], errors: Sequence[KeyFailure]) -> None:
        """Record what one batch of a recover brought back."""
        self._update(
            restored=[*self.receipt.restored, *restored],
            errors=[*self.receipt.errors, *errors],
        )

    def finish(self, *, failed: bool = False) -> None:
        partial = failed or bool(self.receipt.errors) or bool(self.receipt.pending)
        self._update(status="partial" if partial else "complete", finished_at=rfc3339(utc_now()))
