"""The planner, pure: listed versions and referenced keys in, orphans, stats and warnings out."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from bmxgc.planner import matches_protect, spread_sample
from support import NOW, make_plan, spec_hash, version


def _keys(plan: object) -> list[str]:
    return [o.key for o in plan.orphans]  # type: ignore[attr-defined]


def test_planner_orphans_are_unreferenced_current_objects() -> None:
    plan = make_plan(["books/1/a", "books/1/b", "books/2/a"], ["books/1/a"])
    assert _keys(plan) == ["books/1/b", "books/2/a"]
    assert plan.stats.objects_scanned == 3
    assert plan.stats.referenced_found == 1
    assert plan.stats.orphans == 2


def test_planner_orphan_records_version_etag_size_and_time() -> None:
    row = version("books/x", vid="vid-123", etag="abc", size=42, age=timedelta(days=2))
    plan = make_plan([], listing=[row])
    (orphan,) = plan.orphans
    assert (orphan.key, orphan.version_id, orphan.etag, orphan.size) == ("books/x", "vid-123", "abc", 42)
    assert orphan.last_modified == "2026-11-26T12:00:00Z"


def test_planner_delete_markers_and_noncurrent_versions_are_not_objects() -> None:
    listing = [
        # overwritten: two versions, only the latest is an object
        version("books/overwritten", vid="new", size=5),
        version("books/overwritten", vid="old", latest=False, size=500),
        # deleted: its latest is a delete marker, so it is not an object at all
        version("books/deleted", vid="marker", marker=True),
        version("books/deleted", vid="before", latest=False, size=700),
        # an old marker under a re-uploaded object
        version("books/reuploaded", vid="again", size=7),
        version("books/reuploaded", vid="old-marker", latest=False, marker=True),
    ]
    plan = make_plan([], listing=listing)
    assert plan.stats.objects_scanned == 2
    assert plan.stats.bytes_scanned == 12
    assert plan.stats.versions_listed == 6
    assert [(o.key, o.version_id) for o in plan.orphans] == [("books/overwritten", "new"), ("books/reuploaded", "again")]


def test_planner_referenced_key_whose_latest_is_a_delete_marker_is_dangling() -> None:
    listing = [version("books/gone", marker=True), version("books/gone", vid="v0", latest=False), version("books/here")]
    plan = make_plan([], ["books/gone", "books/here"], listing=listing)
    assert plan.orphans == []
    assert plan.stats.referenced_found == 1
    assert plan.stats.dangling_references == 1


def test_planner_min_age_skips_young_objects() -> None:
    listing = [
        version("books/old", age=timedelta(hours=25)),
        version("books/young", age=timedelta(hours=23)),
        version("books/brand-new", age=timedelta(seconds=1)),
    ]
    plan = make_plan([], listing=listing, safety={"min_age": "24h"})
    assert _keys(plan) == ["books/old"]
    assert plan.stats.skipped_young == 2
    assert plan.stats.objects_scanned == 3


def test_planner_min_age_zero_keeps_nothing_back() -> None:
    plan = make_plan([], listing=[version("books/now", age=timedelta(0))], safety={"min_age": "0s"})
    assert _keys(plan) == ["books/now"]
    assert plan.stats.skipped_young == 0


def test_planner_object_newer_than_now_is_young() -> None:
    # A clock that is behind S3's must not turn a fresh upload into an orphan.
    plan = make_plan([], listing=[version("books/future", age=-timedelta(minutes=5))], safety={"min_age": "0s"})
    assert plan.orphans == []
    assert plan.stats.skipped_young == 1


def test_planner_protect_globs_keep_matching_keys() -> None:
    keys = ["books/keep/a.webp", "books/keep/deep/b.webp", "books/1/cover.png", "books/1/x.webp", "books/2/y.webp"]
    plan = make_plan(keys, safety={"protect": ["books/keep/*", "*.png"]})
    assert _keys(plan) == ["books/1/x.webp", "books/2/y.webp"]
    assert plan.stats.skipped_protected == 3
    assert plan.safety.protect == ["books/keep/*", "*.png"]


def test_planner_protect_is_case_sensitive() -> None:
    plan = make_plan(["books/A.PNG", "books/a.png"], safety={"protect": ["*.png"]})
    assert _keys(plan) == ["books/A.PNG"]


def test_planner_referenced_object_counts_as_found_not_protected_or_young() -> None:
    listing = [version("books/keep/ref", age=timedelta(0))]
    plan = make_plan([], ["books/keep/ref"], listing=listing, safety={"protect": ["books/keep/*"], "min_age": "24h"})
    assert plan.stats.referenced_found == 1
    assert plan.stats.skipped_protected == 0
    assert plan.stats.skipped_young == 0


def test_planner_stats_bytes_ratio_and_references() -> None:
    listing = [version(f"books/{i}", size=100) for i in range(8)]
    referenced = ["books/0", "books/1", "books/missing", "listings/elsewhere"]
    plan = make_plan([], referenced, listing=listing)
    s = plan.stats
    assert (s.objects_scanned, s.bytes_scanned) == (8, 800)
    assert (s.referenced_keys, s.referenced_found) == (4, 2)
    assert s.dangling_references == 1  # books/missing
    assert s.referenced_outside_prefix == 1  # listings/elsewhere
    assert (s.orphans, s.orphan_bytes) == (6, 600)
    assert s.orphan_ratio == 0.75


def test_planner_ratio_is_zero_when_nothing_scanned() -> None:
    plan = make_plan([], ["books/a"])
    assert plan.stats.objects_scanned == 0
    assert plan.stats.orphan_ratio == 0


def test_planner_orphans_sorted_in_s3_byte_order() -> None:
    keys = ["books/b", "books/\U0001f600", "books/\ufffd", "books/B", "books/a", "books/é", "books/e\u0301"]
    plan = make_plan(reversed(keys))
    got = _keys(plan)
    assert got == sorted(keys, key=lambda k: k.encode("utf-8"))
    assert got.index("books/\ufffd") < got.index("books/\U0001f600")  # UTF-8, not UTF-16, order


def test_planner_sample_is_all_orphans_when_few() -> None:
    plan = make_plan([f"books/{i:02d}" for i in range(5)])
    assert plan.sample_orphan_keys == _keys(plan)


def test_planner_sample_spreads_twenty_keys_over_many() -> None:
    plan = make_plan([f"books/{i:04d}" for i in range(1000)])
    sample = plan.sample_orphan_keys
    assert len(sample) == 20
    assert sample[0] == "books/0000" and sample[-1] == "books/0999"
    assert sample == sorted(set(sample))
    assert len({k[:8] for k in sample}) == 10  # from all over the list, not the first twenty


def test_spread_sample_includes_ends_and_is_capped() -> None:
    keys = [str(i) for i in range(21)]
    sample = spread_sample(keys, 20)
    assert len(sample) == 20 and sample[0] == "0" and sample[-1] == "20"


def test_matches_protect_star_crosses_slashes() -> None:
    assert matches_protect("books/a/b/c.webp", ["books/*"]) == "books/*"
    assert matches_protect("books/a/b/c.webp", ["listings/*"]) is None


def test_planner_healthy_plan_has_no_warnings() -> None:
    plan = make_plan([f"books/{i}" for i in range(10)], [f"books/{i}" for i in range(8)])
    assert plan.warnings == []


def test_planner_warns_when_sources_return_no_keys() -> None:
    plan = make_plan(["books/a", "books/b"], [])
    assert plan.warnings and "returned no keys" in plan.warnings[0]
    assert not any("mapping is probably wrong" in w for w in plan.warnings)


def test_planner_warns_mapping_wrong_when_no_referenced_key_exists() -> None:
    s3_keys = [f"books/{b}/image_0{i}.webp" for b in range(10) for i in range(3)]
    db_values = [f"{b}/image_0{i}.webp" for b in range(10) for i in range(3)]
    plan = make_plan(s3_keys, db_values)
    first = plan.warnings[0]
    assert "0 of 30 referenced keys exist under books/: the key mapping is probably wrong" in first
    assert 'books/{value}' in first  # says what to write instead
    assert "do not apply" in first


def test_planner_mapping_warning_uses_thousands_separators() -> None:
    plan = make_plan(["books/x"], [f"{i}/image_00.webp" for i in range(5089)])
    assert "0 of 5,089 referenced keys exist under books/" in plan.warnings[0]


def test_planner_mapping_warning_comes_before_ratio_warning() -> None:
    plan = make_plan(["books/a", "books/b"], ["a", "b"])
    mapping = next(i for i, w in enumerate(plan.warnings) if "mapping is probably wrong" in w)
    ratio = next(i for i, w in enumerate(plan.warnings) if "max_orphan_ratio" in w)
    assert mapping < ratio == mapping + 1


def test_planner_warns_ratio_above_max_explaining_never_suggesting_an_override() -> None:
    plan = make_plan([f"books/{i}" for i in range(3)], ["books/0"], safety={"max_orphan_ratio": 0.5})
    (warning,) = [w for w in plan.warnings if "max_orphan_ratio" in w]
    assert "2 of the 3 objects under books/" in warning and "nothing references" in warning
    assert "apply will refuse" in warning
    for cause in ("wrong or empty database", "lagging replica", "key mapping", "truncated table"):
        assert cause in warning
    assert all("--max-orphan-ratio" not in w for w in plan.warnings)


def test_planner_jump_and_empty_references_warnings_explain_without_an_override() -> None:
    plan = make_plan([f"books/{i}" for i in range(3)], [], safety={"max_orphan_ratio": 0.5})
    (empty,) = [w for w in plan.warnings if "returned no keys" in w]
    assert "3 objects under books/" in empty and "lagging replica" in empty
    assert all("--max-orphan-ratio" not in w for w in plan.warnings)


def test_planner_ratio_equal_to_max_does_not_warn() -> None:
    plan = make_plan(["books/a", "books/b"], ["books/a"], safety={"max_orphan_ratio": 0.5})
    assert plan.stats.orphan_ratio == 0.5
    assert not any("max_orphan_ratio" in w for w in plan.warnings)


def test_planner_warns_when_orphans_exceed_max_deletes() -> None:
    keys = [f"books/{i}" for i in range(10)]
    at_limit = make_plan(keys, keys[:7], safety={"max_deletes": 3})
    assert not any("max_deletes" in w for w in at_limit.warnings)
    over = make_plan(keys, keys[:6], safety={"max_deletes": 3})
    (warning,) = [w for w in over.warnings if "max_deletes" in w]
    assert "4 orphans exceed max_deletes 3" in warning


@pytest.mark.parametrize("status", ["Disabled", "Suspended"])
def test_planner_warns_when_bucket_not_versioned(status: str) -> None:
    plan = make_plan(["books/a"], ["books/a"], versioning=status)
    (warning,) = plan.warnings
    assert "not versioned" in warning and status in warning and "could not be undone" in warning


def test_planner_warns_when_undo_window_shorter_than_a_day() -> None:
    # S3's shortest rule is 1 day, rounded to midnight UTC: it can leave undo under a day.
    for days in (0, 1):
        short = make_plan(["books/a"], ["books/a"], undo_days=days)
        assert any("lifecycle rule" in w and "NoncurrentVersionExpiration" in w for w in short.warnings)
    assert make_plan(["books/a"], ["books/a"], undo_days=2).warnings == []


def test_planner_warns_when_nothing_is_under_the_prefix() -> None:
    plan = make_plan([], ["books/a"], prefix="book/")
    assert any("no objects under book/" in w and "typo" in w for w in plan.warnings)


def test_planner_warns_about_dangling_references() -> None:
    plan = make_plan(["books/a"], ["books/a", "books/b", "books/c"])
    (warning,) = plan.warnings
    assert warning.startswith("2 referenced keys under books/ do not exist")


def test_planner_warns_about_skipped_null_and_empty_values() -> None:
    plan = make_plan(["books/a"], ["books/a"], nulls=2, empties=1)
    (warning,) = plan.warnings
    assert "source0: 2 NULL, 1 empty" in warning
    assert plan.references[0].skipped_null == 2 and plan.references[0].skipped_empty == 1


def test_planner_warns_about_prefix_without_trailing_slash() -> None:
    plan = make_plan(["books/a", "books-old/b"], ["books/a", "books-old/b"], prefix="books")
    (warning,) = plan.warnings
    assert "'books' does not end with '/'" in warning


def test_planner_warnings_most_serious_first() -> None:
    plan = make_plan(
        ["books/a"], [], versioning="Disabled", undo_days=0, prefix="books", safety={"max_deletes": 0}, nulls=1
    )
    order = ["returned no keys", "max_orphan_ratio", "max_deletes", "not versioned", "lifecycle", "NULL", "'/'"]
    positions = [next(i for i, w in enumerate(plan.warnings) if needle in w) for needle in order]
    assert positions == sorted(positions)
    assert len(plan.warnings) == len(order)


def test_planner_plan_hash_matches_spec() -> None:
    from bmxgc.planfile import plan_to_dict

    plan = make_plan(["books/é", "books/😀"], ["books/x"])
    assert plan.plan_hash == spec_hash(plan_to_dict(plan))


def test_planner_records_settings_and_time() -> None:
    plan = make_plan(["books/a"], safety={"max_deletes": 7, "protect": ["x/*"]})
    assert plan.created_at == "2026-11-28T12:00:00Z"
    assert plan.safety.max_deletes == 7 and plan.safety.min_age == "0s"
    assert plan.bucket == "bkt" and plan.prefix == "books/" and plan.bucket_versioning == "Enabled"
    assert plan.format_version == 1


def test_planner_same_input_same_plan() -> None:
    listing = [version(f"books/{i}") for i in range(50)]
    first = make_plan([], ["books/3"], listing=listing)
    second = make_plan([], ["books/3"], listing=list(reversed(listing)))
    assert first.plan_hash == second.plan_hash


def test_planner_now_changes_hash() -> None:
    assert make_plan(["books/a"]).plan_hash != make_plan(["books/a"], now=NOW + timedelta(seconds=1)).plan_hash


def test_protect_pattern_language_glob_and_exact_key() -> None:
    from bmxgc.planner import matches_protect

    assert matches_protect("books/d.webp", ["books/[draft].webp"]) == "books/[draft].webp"
    assert matches_protect("books/[draft].webp", ["books/[draft].webp"]) is None  # a character class
    assert matches_protect("books/[draft].webp", ["=books/[draft].webp"]) == "=books/[draft].webp"
    assert matches_protect("books/[draft].webp", ["books/[[]draft].webp"]) == "books/[[]draft].webp"
    assert matches_protect("books/d.webp", ["=books/[draft].webp"]) is None  # no wildcards after '='
    assert matches_protect("books/x*", ["=books/x*"]) == "=books/x*"
    assert matches_protect("books/xy", ["=books/x*"]) is None
    assert matches_protect("Books/a", ["books/*"]) is None  # case-sensitive
    assert matches_protect("books/a/b/c", ["books/*"]) == "books/*"  # * crosses '/'
    assert matches_protect("books/ab", ["books/?"]) is None and matches_protect("books/a", ["books/?"])
    assert matches_protect("books/b", ["books/[!a]"]) and not matches_protect("books/a", ["books/[!a]"])


def test_planner_gives_the_same_plan_whatever_order_the_listing_comes_in() -> None:
    """plan lists the prefix's key ranges in parallel and takes pages as they
    come: the plan (orphans, figures, warnings, hash) is the one of S3's order."""
    import random

    keys = [f"books/{i:03d}" for i in range(60)] + [f"books-old/{i}" for i in range(8)] + ["booksX", "books\u00e9"]
    referenced = keys[::3]
    in_order = sorted(keys, key=lambda k: k.encode())
    listing = [version(k) for k in in_order] + [version(k, latest=False, vid="old") for k in in_order[::5]]
    shuffled = list(listing)
    random.Random(7).shuffle(shuffled)
    first = make_plan(keys, referenced, prefix="books", listing=listing)
    again = make_plan(keys, referenced, prefix="books", listing=shuffled)
    assert again.plan_hash == first.plan_hash and again == first
    assert "e.g. books-old/0, books-old/1, books-old/2" in first.warnings[-1]
