"""Near-miss references (issue 10, item 11): a referenced key that does not
exist but would match an orphan after normalising (padding, a leading '/', a
URL, another letter case, the prefix written twice) is named by plan,
recorded in the plan, and makes apply refuse until the mapping handles it or
``safety.ignore_near_misses`` says to ignore it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from apply_support import World, build_world
from support import NOW, read_plan, references_of, spec_hash, version, write_toml

ORPHAN = "books/515/image_00.webp"


def plan_for(values: list[str], template: str = "books/{value}", orphans: tuple[str, ...] = (ORPHAN,)) -> Any:
    """A plan (pure planner) of ``orphans`` plus one referenced object, with the
    source's ``values`` mapped through ``template``."""
    from bmxgc.config import ReferenceSource, SafetySettings
    from bmxgc.planner import ScanContext, build_plan

    live_value = "1/live.webp"
    keys = {template.replace("{value}", v) for v in [*values, live_value]}
    listing = [version(k) for k in [*orphans, "books/1/live.webp"]]
    sources = [ReferenceSource(name="book_images", query="SELECT s3_key FROM t", keys=[template])]
    return build_plan(
        listing,
        references_of([keys]),
        sources,
        SafetySettings(min_age="0s"),
        ScanContext(bucket="bkt", prefix="books/", bucket_versioning="Enabled", database="sqlite:///x.db"),
        NOW,
    )


@pytest.mark.parametrize(
    ("value", "template", "shape"),
    [
        (" 515/image_00.webp", "books/{value}", "padding"),
        ("515/image_00.webp\t", "books/{value}", "padding"),
        ("/515/image_00.webp", "books/{value}", "leading_slash"),
        ("/books/515/image_00.webp", "{value}", "leading_slash"),
        ("https://cdn.example.com/books/515/image_00.webp", "books/{value}", "url"),
        ("https://cdn.example.com/books/515/image_00.webp", "{value}", "url"),
        ("https://s3.us-west-2.amazonaws.com/bkt/books/515/image_00.webp", "{value}", "url"),
        ("s3://bkt/books/515/image_00.webp", "{value}", "url"),
        ("s3://bkt/515/image_00.webp", "books/{value}", "url"),
        ("515/IMAGE_00.webp", "books/{value}", "case"),
        ("Books/515/image_00.webp", "{value}", "case"),
        ("books/515/image_00.webp", "books/{value}", "prefix_repeated"),
    ],
    ids=[
        "leading-space", "trailing-tab", "slash", "slash-outside-prefix", "https", "https-full-key",
        "https-path-style-bucket", "s3-url", "s3-url-value", "case", "case-outside-prefix", "prefix-twice",
    ],
)
def test_each_near_miss_shape_is_found_recorded_and_warned(value: str, template: str, shape: str) -> None:
    plan = plan_for([value], template)
    reference = template.replace("{value}", value)
    assert [(n.key, n.reference, n.shape) for n in plan.near_misses or []] == [(ORPHAN, reference, shape)]
    (warning,) = [w for w in plan.warnings if w.startswith("near miss")]
    assert f"({shape})" in warning and "1 referenced key" in warning
    assert repr(reference) in warning and ORPHAN in warning
    assert "apply refuses" in warning and "ignore_near_misses" in warning


def test_no_near_miss_for_a_plain_dangling_reference() -> None:
    plan = plan_for(["999/gone.webp", " 998/gone.webp"])
    assert plan.near_misses is None
    assert not [w for w in plan.warnings if w.startswith("near miss")]
    assert plan.stats.dangling_references == 2


def test_near_misses_grouped_by_shape_with_counts() -> None:
    orphans = tuple(f"books/{i}/a.webp" for i in range(5))
    plan = plan_for([f" {i}/a.webp" for i in range(3)] + ["/4/a.webp"], orphans=orphans)
    shapes = sorted(n.shape for n in plan.near_misses or [])
    assert shapes == ["leading_slash", "padding", "padding", "padding"]
    warnings = [w for w in plan.warnings if w.startswith("near miss")]
    assert len(warnings) == 2
    assert any("(padding): 3 referenced keys" in w for w in warnings)


def test_old_plan_without_the_new_fields_still_verifies() -> None:
    import json

    from bmxgc.planfile import parse_plan_text, render_plan_json

    doc = json.loads(render_plan_json(plan_for(["999/gone.webp"])))
    assert "near_misses" not in doc  # left out when there are none
    del doc["safety"]["ignore_near_misses"]  # as a plan made before this key existed
    doc["plan_hash"] = spec_hash(doc)
    old = parse_plan_text(json.dumps(doc), "old.json")
    assert old.near_misses is None and old.safety.ignore_near_misses is False


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def padded(bucket: Any, sqlite_db: Any, tmp_path: Path) -> World:
    """The app stored one orphan's key with a leading space and another as a URL."""
    world = build_world(bucket, sqlite_db, tmp_path, live=12, orphans=6)
    world.add_reference(" " + world.orphan_keys[0].removeprefix("books/"))
    world.add_reference(f"https://{world.name}.s3.amazonaws.com/{world.orphan_keys[1]}")
    return world


def test_plan_with_near_misses_refused_by_apply_bucket_unchanged(padded: World, cli: Any) -> None:
    made = cli("-c", padded.config_path, "plan")
    assert made.code == 0, made.output
    doc = read_plan(made.saved_path())
    assert sorted((n["key"], n["shape"]) for n in doc["near_misses"]) == [
        (padded.orphan_keys[0], "padding"), (padded.orphan_keys[1], "url")
    ]
    assert "near miss (padding)" in made.out and "near miss (url)" in made.out
    before = padded.snapshot()
    result = cli("-c", padded.config_path, "apply", made.saved_path(), "--auto-approve")
    assert result.code == 3, result.output
    assert "refused by gate 'scope'" in result.err
    assert f"{padded.orphan_keys[0]}: near miss (padding)" in result.err
    assert "ignore_near_misses" in result.err
    assert padded.snapshot() == before


def test_near_misses_ignored_when_the_config_says_so(padded: World, cli: Any) -> None:
    padded.write_config(safety={"ignore_near_misses": True})
    made = cli("-c", padded.config_path, "plan")
    assert made.code == 0, made.output
    doc = read_plan(made.saved_path())
    assert doc["safety"]["ignore_near_misses"] is True
    assert len(doc["near_misses"]) == 2  # still recorded for the reviewer
    result = cli("-c", padded.config_path, "apply", made.saved_path(), "--auto-approve")
    assert result.code == 0, result.output
    assert all(padded.current(k) is None for k in padded.orphan_keys)


def test_near_misses_not_ignored_when_only_the_plan_said_so(padded: World, cli: Any) -> None:
    padded.write_config(safety={"ignore_near_misses": True})
    made = cli("-c", padded.config_path, "plan")
    padded.write_config(safety={"ignore_near_misses": False})
    before = padded.snapshot()
    result = cli("-c", padded.config_path, "apply", made.saved_path(), "--auto-approve")
    assert result.code == 3 and "refused by gate 'scope'" in result.err, result.output
    assert padded.snapshot() == before


def test_mapping_that_handles_them_gives_a_clean_plan(padded: World, cli: Any) -> None:
    padded.doc["references"][0]["query"] = (
        f"SELECT TRIM(REPLACE(s3_key, 'https://{padded.name}.s3.amazonaws.com/books/', '')) FROM {padded.table}"
    )
    write_toml(padded.config_path, padded.doc)
    made = cli("-c", padded.config_path, "plan")
    assert made.code == 0, made.output
    doc = read_plan(made.saved_path())
    assert "near_misses" not in doc
    assert sorted(o["key"] for o in doc["orphans"]) == padded.orphan_keys[2:]


def test_near_misses_edited_out_of_the_plan_are_found_again_at_apply(padded: World, cli: Any) -> None:
    import json

    made = cli("-c", padded.config_path, "plan")
    assert made.code == 0, made.output
    doc = read_plan(made.saved_path())
    del doc["near_misses"]
    doc["warnings"] = [w for w in doc["warnings"] if not w.startswith("near miss")]
    doc["plan_hash"] = spec_hash(doc)
    forged = made.saved_path().with_name("forged.json")
    forged.write_text(json.dumps(doc), encoding="utf-8")
    before = padded.snapshot()
    result = cli("-c", padded.config_path, "apply", forged, "--auto-approve")
    assert result.code == 3 and "refused by gate 'scope'" in result.err, result.output
    assert f"{padded.orphan_keys[1]}: near miss (url)" in result.err
    assert padded.snapshot() == before
