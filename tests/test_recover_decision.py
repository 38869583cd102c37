"""What recover restores without a receipt, from a listing alone (pure)."""

from __future__ import annotations

from datetime import timedelta

from bmxgc.recover_decision import find_recoverable
from support import NOW, version

SINCE, UNTIL = NOW - timedelta(hours=1), NOW


def test_a_marker_in_the_window_over_a_version_is_restored() -> None:
    rows = [
        version("books/a", vid="m1", marker=True, age=timedelta(minutes=10)),
        version("books/a", vid="v1", latest=False, age=timedelta(days=2)),
        version("books/b", vid="w1"),
    ]
    scan = find_recoverable(rows, SINCE, UNTIL)
    [item] = scan.items
    assert (item.key, item.delete_marker_version_id, item.restores_version_id) == ("books/a", "m1", "v1")
    assert item.stacked_delete_marker_version_ids is None
    assert (scan.markers_in_window, scan.versions_listed, scan.nothing_beneath) == (1, 3, [])


def test_a_key_deleted_twice_in_the_window_loses_both_markers() -> None:
    rows = [
        version("books/a", vid="m2", marker=True, age=timedelta(minutes=5)),
        version("books/a", vid="m1", marker=True, latest=False, age=timedelta(minutes=10)),
        version("books/a", vid="v1", latest=False, age=timedelta(days=2)),
    ]
    [item] = find_recoverable(rows, SINCE, UNTIL).items
    assert (item.delete_marker_version_id, item.stacked_delete_marker_version_ids) == ("m2", ["m1"])


def test_keys_deleted_before_the_window_or_with_nothing_beneath_are_left() -> None:
    rows = [
        version("books/a", vid="m2", marker=True, age=timedelta(minutes=5)),
        version("books/a", vid="m1", marker=True, latest=False, age=timedelta(days=1)),
        version("books/a", vid="v1", latest=False, age=timedelta(days=2)),
        version("books/c", vid="m3", marker=True, age=timedelta(minutes=5)),
        version("books/d", vid="m4", marker=True, age=timedelta(days=3)),
        version("books/d", vid="v4", latest=False, age=timedelta(days=4)),
    ]
    scan = find_recoverable(rows, SINCE, UNTIL)
    assert scan.items == [] and scan.nothing_beneath == ["books/a", "books/c"] and scan.markers_in_window == 2


def test_bmxgc_own_lock_objects_are_never_restored() -> None:
    rows = [
        version(".bmxgc/locks/books%2F.json", vid="m1", marker=True, age=timedelta(minutes=5)),
        version(".bmxgc/locks/books%2F.json", vid="v1", latest=False, age=timedelta(minutes=6)),
    ]
    assert find_recoverable(rows, SINCE, UNTIL).items == []
