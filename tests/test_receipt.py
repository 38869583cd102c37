"""Receipts in plans_dir: the journal an apply keeps, and finding a plan's receipt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bmxgc.errors import GateRefused, InputNotFound, PlanFileError
from bmxgc.model import DeletedEntry, KeyFailure, ObjectVersion
from bmxgc.receipt import HEAD_BYTES, Journal, check_not_applied, find_receipt, newest_receipt, read_header
from bmxgc.store import LocalStore

HASH_A = "sha256:" + "a" * 64
HASH_B = "sha256:" + "b" * 64
ORPHAN = ObjectVersion(key="books/a", version_id="v1", etag="e", size=1, last_modified="2026-11-28T12:00:00Z")


def journal(store: LocalStore, name: str, plan_hash: str = HASH_A, kind: str = "apply") -> Journal:
    return Journal.create(
        store, name, kind=kind, plan_hash=plan_hash, bucket="b", prefix="books/", overrides={}, undo_until=None
    )


def test_the_journal_writes_intent_before_and_outcome_after(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    j = journal(store, "p.receipt.json")
    j.intend([ORPHAN])
    pending = json.loads((tmp_path / "p.receipt.json").read_text())
    assert pending["status"] == "in_progress" and pending["pending"][0]["keys"][0]["key"] == "books/a"
    j.record([DeletedEntry(key="books/a", version_id="v1", delete_marker_version_id="m1")], [])
    j.finish()
    done = json.loads((tmp_path / "p.receipt.json").read_text())
    assert done["status"] == "complete" and done["pending"] == [] and done["deleted"][0]["delete_marker_version_id"] == "m1"


def test_a_journal_with_errors_finishes_partial(tmp_path: Path) -> None:
    j = journal(LocalStore(tmp_path), "p.receipt.json")
    j.record([], [KeyFailure(key="books/a", code="AccessDenied", message="no")])
    j.finish()
    assert j.receipt.status == "partial"


def test_a_plan_is_applied_once_whatever_its_receipt_is_called(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    journal(store, "first.receipt.json")
    assert find_receipt(store, HASH_A)[0] == "first.receipt.json"
    with pytest.raises(GateRefused, match="this plan was applied before"):
        check_not_applied(store, HASH_A, "copy.receipt.json")
    with pytest.raises(GateRefused, match="receipt of another plan"):
        check_not_applied(store, HASH_B, "first.receipt.json")
    check_not_applied(store, HASH_B, "second.receipt.json")


def test_an_unreadable_receipt_blocks_apply_but_not_undo(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    journal(store, "good.receipt.json")
    (tmp_path / "bad.receipt.json").write_text("{not json")
    with pytest.raises(GateRefused, match="bad.receipt.json is unreadable"):
        check_not_applied(store, HASH_B, "new.receipt.json")
    assert newest_receipt(store) == "good.receipt.json"


def test_newest_receipt_is_the_newest_apply(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(InputNotFound, match="no apply receipt found"):
        newest_receipt(store)
    journal(store, "old.receipt.json")
    journal(store, "recover.receipt.json", HASH_B, kind="recover")
    assert newest_receipt(store) == "old.receipt.json"


def test_the_header_is_read_from_the_first_kilobytes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    j = journal(store, "big.receipt.json")
    j.record([DeletedEntry(key=f"books/{i:06d}", version_id="v", delete_marker_version_id="m") for i in range(2000)], [])
    assert (tmp_path / "big.receipt.json").stat().st_size > HEAD_BYTES
    header = read_header(store, "big.receipt.json")
    assert (header.plan_hash, header.kind) == (HASH_A, "apply")
    (tmp_path / "dup.receipt.json").write_text('{"format_version": 1, "format_version": 1}')
    with pytest.raises(PlanFileError, match="duplicate key"):
        read_header(store, "dup.receipt.json")
