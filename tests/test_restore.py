"""Undo's decisions: a pure function of a receipt and the live histories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bmxgc.drift import group_by_key
from bmxgc.model import Receipt
from bmxgc.restore import Restore, plan_undo
from support import version


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


def live(*rows: Any) -> Any:
    return group_by_key(rows, {r.key for r in rows})


def test_plan_undo_marker_still_latest_is_restored() -> None:
    decided = plan_undo(
        receipt(deleted=[("books/a", "v1", "m1")]),
        live(version("books/a", vid="m1", marker=True), version("books/a", vid="v1", latest=False)),
    )
    assert decided.restores == [Restore("books/a", "m1", "v1")]
    assert decided.skips == [] and decided.already_restored == []


def test_plan_undo_marker_gone_counts_as_already_restored() -> None:
    decided = plan_undo(receipt(deleted=[("books/a", "v1", "m1")]), live(version("books/a", vid="v1")))
    assert decided.restores == []
    assert decided.already_restored == ["books/a"]


def test_plan_undo_newer_version_since_is_left_alone_and_reported() -> None:
    decided = plan_undo(
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
    decided = plan_undo(
        receipt(pending=[[("books/a", "v1")]]),
        live(version("books/a", vid="m9", marker=True), version("books/a", vid="v1", latest=False)),
    )
    assert decided.restores == [Restore("books/a", "m9", "v1")]


def test_plan_undo_crash_before_request_landed_nothing_to_restore() -> None:
    decided = plan_undo(receipt(pending=[[("books/a", "v1")]]), live(version("books/a", vid="v1")))
    assert decided.restores == [] and decided.skips == []
    assert decided.already_restored == ["books/a"]


def test_plan_undo_crash_then_reupload_left_alone() -> None:
    rows = (
        version("books/a", vid="m9", marker=True),
        version("books/a", vid="v2", latest=False),
        version("books/a", vid="v1", latest=False),
    )
    decided = plan_undo(receipt(pending=[[("books/a", "v1")]]), live(*rows))
    assert decided.restores == []
    assert [s.key for s in decided.skips] == ["books/a"]


def test_plan_undo_pending_key_already_recorded_is_not_doubled() -> None:
    rows = (version("books/a", vid="m1", marker=True), version("books/a", vid="v1", latest=False))
    decided = plan_undo(
        receipt(deleted=[("books/a", "v1", "m1")], pending=[[("books/a", "v1")]]), live(*rows)
    )
    assert decided.restores == [Restore("books/a", "m1", "v1")]


def test_plan_undo_pending_key_with_no_version_left_is_skipped() -> None:
    decided = plan_undo(receipt(pending=[[("books/a", "v1")]]), {})
    assert [s.key for s in decided.skips] == ["books/a"]
    assert decided.restores == []


def test_plan_undo_pending_key_restored_by_earlier_run_keeps_a_later_delete() -> None:
    # A first undo restored the crash-time key; someone deleted it again since.
    # That marker is theirs: a second undo must not remove it.
    rows = (version("books/a", vid="m7", marker=True), version("books/a", vid="v1", latest=False))
    decided = plan_undo(receipt(pending=[[("books/a", "v1")]]), live(*rows), restored_before={"books/a"})
    assert decided.restores == []
    assert decided.already_restored == ["books/a"]


def test_plan_undo_deleted_again_since_is_reported_as_such() -> None:
    decided = plan_undo(
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
