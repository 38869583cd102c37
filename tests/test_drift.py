"""Drift: what the plan expected against what a listing and the sources say now."""

from __future__ import annotations

from bmxgc.drift import find_drift, group_by_key
from bmxgc.model import ObjectVersion
from support import version


def planned(key: str, vid: str = "v1", etag: str = "e1", size: int = 10) -> ObjectVersion:
    return ObjectVersion(key=key, version_id=vid, etag=etag, size=size, last_modified="2026-10-01T00:00:00Z")


def test_group_by_key_keeps_only_planned_keys() -> None:
    rows = [version("books/a", vid="v1"), version("books/b", vid="v2"), version("books/a", vid="m", marker=True)]
    live = group_by_key(rows, {"books/a"})
    assert set(live) == {"books/a"}
    assert [v.version_id for v in live["books/a"].versions] == ["v1"]
    assert [m.version_id for m in live["books/a"].markers] == ["m"]


def test_find_drift_unchanged_objects_no_drift() -> None:
    live = group_by_key([version("books/a", vid="v1", etag="e1", size=10)], {"books/a"})
    assert find_drift([planned("books/a")], live, {}) == []


def test_find_drift_object_reuploaded_shows_planned_and_now() -> None:
    rows = [
        version("books/a", vid="v2", etag="e2", size=99),
        version("books/a", vid="v1", etag="e1", latest=False),
    ]
    [offence] = find_drift([planned("books/a")], group_by_key(rows, {"books/a"}), {})
    assert offence.key == "books/a"
    assert "planned v1 (etag e1, 10 bytes)" in offence.reason
    assert "now: version v2 (etag e2, 99 bytes)" in offence.reason


def test_find_drift_same_version_other_etag_is_drift() -> None:
    live = group_by_key([version("books/a", vid="v1", etag="other")], {"books/a"})
    [offence] = find_drift([planned("books/a")], live, {})
    assert "etag other" in offence.reason


def test_find_drift_object_deleted_since_plan() -> None:
    rows = [version("books/a", vid="m1", marker=True), version("books/a", vid="v1", etag="e1", latest=False)]
    [offence] = find_drift([planned("books/a")], group_by_key(rows, {"books/a"}), {})
    assert "deleted (latest is a delete marker)" in offence.reason


def test_find_drift_object_gone_entirely() -> None:
    [offence] = find_drift([planned("books/a")], {}, {})
    assert "gone" in offence.reason


def test_find_drift_planned_key_referenced_now_names_source() -> None:
    live = group_by_key([version("books/a", vid="v1", etag="e1")], {"books/a"})
    [offence] = find_drift([planned("books/a")], live, {"books/a": "book_images"})
    assert "now referenced by source 'book_images'" in offence.reason


def test_find_drift_reports_every_drifted_key_in_plan_order() -> None:
    keys = [f"books/{i:02}" for i in range(30)]
    orphans = [planned(k) for k in keys]
    rows = [version(k, vid="v1", etag="e1") for k in keys[:5]]  # the other 25 are gone
    offences = find_drift(orphans, group_by_key(rows, set(keys)), {})
    assert [o.key for o in offences] == keys[5:]
