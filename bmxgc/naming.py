"""Where bmxgc's own files and objects are named: pure, the one place to look.

plans_dir holds, for each plan ``STEM.json``: its receipt
``STEM.receipt.json`` and its undo record ``STEM.undo.json``. A recovery plan
is ``STAMP-recover-HASH.json`` and its receipt follows the same rule. Locks
live in the scanned bucket under ``LOCK_FOLDER``, which no scanned prefix may
cover.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath

LOCK_FOLDER = ".bmxgc/"
DOCUMENT_SUFFIX = ".json"
RECEIPT_SUFFIX = ".receipt.json"
UNDO_SUFFIX = ".undo.json"
JOURNAL_SUFFIX = ".journal"  # STEM.receipt.journal: the receipt's write-ahead lines while a run goes on
_HASH_PREFIX = "sha256:"


def _stamp(created: datetime) -> str:
    return created.strftime("%Y%m%dT%H%M%SZ")


def plan_file_name(created: datetime, plan_hash: str) -> str:
    """``20261128T120000Z-0123456789ab.json``: sorts by time, names the plan."""
    return f"{_stamp(created)}-{plan_hash.removeprefix(_HASH_PREFIX)[:12]}{DOCUMENT_SUFFIX}"


def recovery_plan_name(created: datetime, plan_hash: str) -> str:
    return f"{_stamp(created)}-recover-{plan_hash.removeprefix(_HASH_PREFIX)[:12]}{DOCUMENT_SUFFIX}"


def is_plan_name(name: str) -> bool:
    """A plan or recovery plan in plans_dir (not a receipt or undo record)."""
    return name.endswith(DOCUMENT_SUFFIX) and not name.endswith((RECEIPT_SUFFIX, UNDO_SUFFIX))


def stem(name: str) -> str:
    """What a plan, its receipt and its undo record share: ``STEM`` of ``STEM.receipt.json``."""
    return name.removesuffix(RECEIPT_SUFFIX).removesuffix(UNDO_SUFFIX).removesuffix(DOCUMENT_SUFFIX)


def receipt_name_for(plan_location: str) -> str:
    """``plans/20261128T120000Z-abc.json`` -> ``20261128T120000Z-abc.receipt.json``."""
    return PurePosixPath(plan_location.replace("\\", "/")).stem + RECEIPT_SUFFIX


def undo_record_name(receipt_name: str) -> str:
    return receipt_name.removesuffix(RECEIPT_SUFFIX) + UNDO_SUFFIX


def undo_record_for_plan(plan_name: str) -> str:
    return stem(plan_name) + UNDO_SUFFIX


def plan_for(name: str) -> str:
    """The plan file a receipt or undo record belongs to: ``STEM.json``."""
    return stem(name) + DOCUMENT_SUFFIX


def receipt_for_plan(plan_name: str) -> str:
    return stem(plan_name) + RECEIPT_SUFFIX
