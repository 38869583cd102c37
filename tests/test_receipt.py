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


ORPHAN_B = ObjectVersion(key="books/b", version_id="v2", etag="e", size=1, last_modified="2026-11-28T12:00:00Z")
ORPHAN_C = ObjectVersion(key="books/c", version_id="v3", etag="e", size=1, last_modified="2026-11-28T12:00:00Z")


def test_with_batches_in_flight_together_an_outcome_clears_only_its_own_batch(tmp_path: Path) -> None:
    # Three requests in flight (delete_concurrency): the answer to the second
    # leaves the first and the third pending, in the receipt kept current and
    # in the one rebuilt from the journal after a crash (undo reads that one).
    from bmxgc.receipt import load_receipt
    from bmxgc.undo_decision import targets

    store = LocalStore(tmp_path)
    j = journal(store, "p.receipt.json")
    j.intend([ORPHAN], request=0)
    j.intend([ORPHAN_B], request=1)
    j.intend([ORPHAN_C], request=2)
    j.record([DeletedEntry(key="books/b", version_id="v2", delete_marker_version_id="m2")], [], request=1)
    shown = json.loads((tmp_path / "p.receipt.json").read_text())
    assert [b["keys"][0]["key"] for b in shown["pending"]] == ["books/a", "books/c"]
    assert [e["key"] for e in shown["deleted"]] == ["books/b"]
    # Killed here: the receipt is read back from the journal.
    rebuilt = load_receipt(store, "p.receipt.json")
    assert rebuilt.status == "in_progress"
    assert [k.key for batch in rebuilt.pending for k in batch.keys] == ["books/a", "books/c"]
    assert [e.key for e in rebuilt.deleted] == ["books/b"]
    assert set(targets(rebuilt)) == {"books/a", "books/b", "books/c"}
    j.record([], [KeyFailure(key="books/a", code="AccessDenied", message="no", version_id="v1")], request=0)
    j.record([DeletedEntry(key="books/c", version_id="v3", delete_marker_version_id="m3")], [], request=2)
    j.finish()
    done = json.loads((tmp_path / "p.receipt.json").read_text())
    assert done["status"] == "partial" and done["pending"] == []
    assert [e["key"] for e in done["deleted"]] == ["books/b", "books/c"]


def test_a_journal_written_one_batch_at_a_time_by_an_earlier_bmxgc_still_replays(tmp_path: Path) -> None:
    # Lines without request numbers: an outcome answers every pending batch.
    from bmxgc.receipt import replay_journal

    head = {"format_version": 1, "kind": "apply", "plan_hash": HASH_A, "bucket": "b", "prefix": "books/",
            "started_at": "2026-11-28T12:00:00Z", "status": "in_progress"}
    pending = {"sent_at": "2026-11-28T12:00:01Z", "keys": [ORPHAN._asdict()]}
    lines = [
        {"receipt": head},
        {"intend": pending},
        {"record": {"deleted": [{"key": "books/a", "version_id": "v1", "delete_marker_version_id": "m1"}], "errors": []}},
        {"intend": {**pending, "keys": [ORPHAN_B._asdict()]}},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines)
    receipt = replay_journal(text, "old.receipt.journal")
    assert [e.key for e in receipt.deleted] == ["books/a"]
    assert [k.key for batch in receipt.pending for k in batch.keys] == ["books/b"]


class CountingStore(LocalStore):
    """A plans_dir that notes which documents were read whole (it reads as LocalStore does)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.whole: list[str] = []

    def read(self, name: str) -> str | None:
        self.whole.append(name)
        return super().read(name)


def _applied(store: LocalStore, name: str, created_hour: int, *, keys: int = 1500, status: str = "complete") -> str:
    """A plan ``name`` made at ``created_hour`` and its receipt of ``keys`` deletes."""
    from datetime import datetime, timezone

    from bmxgc.planfile import render
    from bmxgc.naming import receipt_for_plan
    from support import make_plan

    plan = make_plan([f"books/{created_hour}-{i}" for i in range(4)], [f"books/{created_hour}-0"],
                     now=datetime(2026, 11, 28, created_hour, tzinfo=timezone.utc))
    (store.folder / name).write_text(render(plan), encoding="utf-8")
    j = Journal.create(store, receipt_for_plan(name), kind="apply", plan_hash=plan.plan_hash, bucket="bkt",
                       prefix="books/", overrides={}, undo_until=None)
    j.record([DeletedEntry(key=f"books/{i:06d}", version_id="v", delete_marker_version_id="m") for i in range(keys)], [])
    if status == "complete":
        j.finish()
    return str(plan.plan_hash)


def test_the_jump_gates_baseline_is_found_from_receipt_heads_and_one_plan_read_whole(tmp_path: Path) -> None:
    from bmxgc.receipt import last_applied_plan

    store = CountingStore(tmp_path)
    _applied(store, "a.json", 1)
    newest = _applied(store, "b.json", 3)
    _applied(store, "c.json", 2)
    _applied(store, "d.json", 5, status="in_progress")  # never finished: no baseline
    this = _applied(store, "e.json", 4)  # the plan being applied: excluded by its hash
    assert all((tmp_path / n).stat().st_size > HEAD_BYTES for n in store.names() if n.endswith(".receipt.json"))

    found = last_applied_plan(store, "bkt", "books/", this)

    assert found is not None and found[0] == "b.json" and found[1].plan_hash == newest
    # Heads only, but for the run that never finished: its receipt, kept current
    # while it ran, has its status at the end (it is read whole, with its journal).
    assert [n for n in store.whole if n.endswith(".receipt.json")] == ["d.receipt.json"]
    assert [n for n in store.whole if not n.startswith("d.")] == ["b.json"]  # the baseline, checked whole


def test_the_baseline_skips_a_newest_plan_that_no_longer_verifies(tmp_path: Path) -> None:
    from bmxgc.receipt import last_applied_plan

    store = LocalStore(tmp_path)
    older = _applied(store, "a.json", 1, keys=10)
    _applied(store, "b.json", 3, keys=10)
    text = (tmp_path / "b.json").read_text(encoding="utf-8")
    (tmp_path / "b.json").write_text(text.replace('"objects_scanned": 4', '"objects_scanned": 40'), encoding="utf-8")
    found = last_applied_plan(store, "bkt", "books/")
    assert found is not None and found[0] == "a.json" and found[1].plan_hash == older
