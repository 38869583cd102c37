"""Undo's decisions: a pure function of a receipt and the live histories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bmxgc.drift import group_by_key
from bmxgc.model import Receipt
from bmxgc.undo_decision import Restore, Window, apply_window, plan_undo
from support import NOW, version
from datetime import timedelta


def receipt(
    deleted: Sequence[tuple[str, str, str]] = (),
    pending: Sequence[Sequence[tuple[str, str]]] = (),
    errors: Sequence[str] = (),
) -> Receipt:
    def obj(key: str, vid: str) -> dict[str, Any]:
        return {"key": key, "version_id": vid, "etag": "e", "size": 1, "last_modified": "2026-10-01T00:00:00Z"}

    return Receipt.model_validate(
        {
            "format_version": 1,
            "plan_hash": "sha256:" + "a" * 64,
            "bucket": "bkt",
            "prefix": "books/",
            "started_at": "2026-11-28T12:00:00Z",
            "status": "in_progress",
            "deleted": [{"key": k, "version_id": v, "delete_marker_version_id": m} for k, v, m in deleted],
            "errors": [{"key": k, "code": "AccessDenied", "message": "no"} for k in errors],
            "pending": [{"sent_at": "2026-11-28T12:00:01Z", "keys": [obj(k, v) for k, v in batch]} for batch in pending],
        }
    )


def decide(r: Receipt, rows: Any) -> Any:
    return plan_undo(r, rows, WINDOW)


def live(*rows: Any) -> Any:
    return group_by_key(rows, {r.key for r in rows})


# The apply of these receipts started at support.NOW (12:00:00) and never finished.
WINDOW = apply_window(receipt(), now=NOW + timedelta(minutes=5))
IN_APPLY = timedelta(0)  # a row written when the apply ran (age from NOW)


def test_plan_undo_marker_still_latest_is_restored() -> None:
    decided = decide(
        receipt(deleted=[("books/a", "v1", "m1")]),
        live(version("books/a", vid="m1", marker=True), version("books/a", vid="v1", latest=False)),
    )
    assert decided.restores == [Restore("books/a", "m1", "v1")]
    assert decided.skips == [] and decided.already_restored == []


def test_plan_undo_marker_gone_counts_as_already_restored() -> None:
    decided = decide(receipt(deleted=[("books/a", "v1", "m1")]), live(version("books/a", vid="v1")))
    assert decided.restores == []
    assert decided.already_restored == ["books/a"]


def test_plan_undo_newer_version_since_is_left_alone_and_reported() -> None:
    decided = decide(
        receipt(deleted=[("books/a", "v1", "m1")]),
        live(
            version("books/a", vid="v2"),
            version("books/a", vid="v1", latest=False),
            version("books/a", vid="m1", marker=True, latest=False),
        ),
    )
    assert decided.restores == []
    [skip] = decided.skips
    assert skip.key == "books/a" and "v2" in skip.reason and "left alone" in skip.reason


def test_plan_undo_crash_mid_batch_restores_marker_on_planned_version() -> None:
    decided = decide(
        receipt(pending=[[("books/a", "v1")]]),
        live(version("books/a", vid="m9", marker=True, age=IN_APPLY), version("books/a", vid="v1", latest=False)),
    )
    assert decided.restores == [Restore("books/a", "m9", "v1")]


def test_plan_undo_crash_before_request_landed_nothing_to_restore() -> None:
    decided = decide(receipt(pending=[[("books/a", "v1")]]), live(version("books/a", vid="v1")))
    assert decided.restores == [] and decided.skips == []
    assert decided.already_restored == ["books/a"]


def test_plan_undo_crash_then_reupload_left_alone() -> None:
    rows = (
        version("books/a", vid="m9", marker=True),
        version("books/a", vid="v2", latest=False),
        version("books/a", vid="v1", latest=False),
    )
    decided = decide(receipt(pending=[[("books/a", "v1")]]), live(*rows))
    assert decided.restores == []
    assert [s.key for s in decided.skips] == ["books/a"]


def test_plan_undo_pending_key_already_recorded_is_not_doubled() -> None:
    rows = (version("books/a", vid="m1", marker=True), version("books/a", vid="v1", latest=False))
    decided = decide(
        receipt(deleted=[("books/a", "v1", "m1")], pending=[[("books/a", "v1")]]), live(*rows)
    )
    assert decided.restores == [Restore("books/a", "m1", "v1")]


def test_plan_undo_pending_key_with_no_version_left_is_skipped() -> None:
    decided = decide(receipt(pending=[[("books/a", "v1")]]), {})
    assert [s.key for s in decided.skips] == ["books/a"]
    assert decided.restores == []


def test_plan_undo_pending_key_restored_by_earlier_run_keeps_a_later_delete() -> None:
    # A first undo restored the crash-time key; someone deleted it again since.
    # That marker is theirs: a second undo must not remove it.
    # That marker is written after the apply's window: it is left alone, and
    # reported, since the object is deleted (not "already restored").
    rows = (
        version("books/a", vid="m7", marker=True, age=-timedelta(hours=2)),
        version("books/a", vid="v1", latest=False),
    )
    decided = decide(receipt(pending=[[("books/a", "v1")]]), live(*rows))
    assert decided.restores == [] and decided.already_restored == []
    [skip] = decided.skips
    assert skip.still_deleted and "m7" in skip.reason and "outside the apply's time window" in skip.reason


def test_plan_undo_deleted_again_since_is_reported_as_such() -> None:
    decided = decide(
        receipt(deleted=[("books/a", "v1", "m1")]),
        live(
            version("books/a", vid="m2", marker=True),
            version("books/a", vid="m1", marker=True, latest=False),
            version("books/a", vid="v1", latest=False),
        ),
    )
    assert decided.restores == []
    [skip] = decided.skips
    assert "deleted again since" in skip.reason and "m2" in skip.reason


def test_plan_undo_recorded_marker_and_every_marker_beneath_it_are_removed() -> None:
    # A request S3 did twice: m1 beneath m2, the receipt names m2.
    rows = (
        version("books/a", vid="m2", marker=True, age=IN_APPLY),
        version("books/a", vid="m1", marker=True, latest=False, age=IN_APPLY),
        version("books/a", vid="v1", latest=False),
    )
    decided = decide(receipt(deleted=[("books/a", "v1", "m2")]), live(*rows))
    assert decided.restores == [Restore("books/a", "m2", "v1", ("m1",))]
    assert decided.restores[0].markers == ("m2", "m1")


def test_plan_undo_recorded_marker_gone_and_another_on_the_key_is_left_alone_as_still_deleted() -> None:
    # Apply's recorded marker was removed (an earlier undo); the marker on v1
    # now may be a later apply's, written within this apply's time window:
    # never removed, never "already restored", reported as still deleted.
    rows = (
        version("books/a", vid="m1", marker=True, age=IN_APPLY),
        version("books/a", vid="v1", latest=False),
    )
    decided = decide(receipt(deleted=[("books/a", "v1", "m2")]), live(*rows))
    assert decided.restores == []
    assert decided.already_restored == []
    assert [(s.key, s.still_deleted) for s in decided.skips] == [("books/a", True)]
    assert "m2 is gone" in decided.skips[0].reason


def test_plan_undo_error_keys_are_judged_from_live_state() -> None:
    rows = (
        version("books/a", vid="m1", marker=True, age=IN_APPLY),
        version("books/a", vid="v1", latest=False),
        version("books/b", vid="w1"),
    )
    decided = decide(receipt(errors=["books/a", "books/b"]), live(*rows))
    assert decided.restores == [Restore("books/a", "m1", "v1")]
    assert decided.already_restored == ["books/b"]


def test_plan_undo_marker_outside_window_is_left_alone_and_counts_as_deleted() -> None:
    rows = (
        version("books/a", vid="m0", marker=True, age=timedelta(days=1)),
        version("books/a", vid="v1", latest=False, age=timedelta(days=2)),
    )
    decided = decide(receipt(pending=[[("books/a", "v1")]]), live(*rows))
    assert decided.restores == []
    [skip] = decided.skips
    assert skip.still_deleted and "m0" in skip.reason


def test_plan_undo_window_allows_clock_skew() -> None:
    # S3's clock 10 minutes behind this host's: still the apply's marker.
    rows = (
        version("books/a", vid="m1", marker=True, age=timedelta(minutes=10)),
        version("books/a", vid="v1", latest=False, age=timedelta(days=2)),
    )
    decided = decide(receipt(pending=[[("books/a", "v1")]]), live(*rows))
    assert decided.restores == [Restore("books/a", "m1", "v1")]


def test_apply_window_of_a_crashed_apply_ends_at_its_first_undo() -> None:
    first_undo = NOW + timedelta(minutes=30)
    window = apply_window(receipt(), now=NOW + timedelta(days=1), first_undo=first_undo)
    assert window == Window(NOW - timedelta(minutes=15), first_undo + timedelta(minutes=15))


def test_plan_undo_marker_on_top_of_the_recorded_one_in_the_apply_window_is_apply_s() -> None:
    # A request S3 carried out after apply had given up on its answer and sent the key again.
    rows = (
        version("books/a", vid="m3", marker=True, age=IN_APPLY),
        version("books/a", vid="m2", marker=True, latest=False, age=IN_APPLY),
        version("books/a", vid="v1", latest=False),
    )
    decided = decide(receipt(deleted=[("books/a", "v1", "m2")]), live(*rows))
    assert decided.restores == [Restore("books/a", "m3", "v1", ("m2",))]
