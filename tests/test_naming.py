"""Every name bmxgc gives its files, in one place."""

from __future__ import annotations

from datetime import datetime, timezone

from bmxgc.naming import (
    is_plan_name,
    plan_file_name,
    receipt_for_plan,
    receipt_name_for,
    recovery_plan_name,
    stem,
    undo_record_for_plan,
    undo_record_name,
)

WHEN = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
HASH = "sha256:" + "0123456789abcdef" * 4


def test_plan_and_recovery_plan_names_sort_by_time_and_name_the_hash() -> None:
    assert plan_file_name(WHEN, HASH) == "20261128T120000Z-0123456789ab.json"
    assert recovery_plan_name(WHEN, HASH) == "20261128T120000Z-recover-0123456789ab.json"


def test_a_plan_its_receipt_and_its_undo_record_share_a_stem() -> None:
    plan = "20261128T120000Z-0123456789ab.json"
    assert receipt_for_plan(plan) == receipt_name_for(f"plans/{plan}") == "20261128T120000Z-0123456789ab.receipt.json"
    assert undo_record_name(receipt_for_plan(plan)) == undo_record_for_plan(plan) == "20261128T120000Z-0123456789ab.undo.json"
    assert receipt_name_for("C:\\plans\\x.json") == "x.receipt.json"
    assert {stem(plan), stem(receipt_for_plan(plan)), stem(undo_record_for_plan(plan))} == {"20261128T120000Z-0123456789ab"}


def test_only_plans_are_plan_names() -> None:
    assert is_plan_name("a.json") and not is_plan_name("a.receipt.json") and not is_plan_name("a.undo.json")
    assert not is_plan_name("notes.txt")
