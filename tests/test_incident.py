"""The incident, end to end: S3 holds books/515/image_00.webp, the database holds 515/image_00.webp.

The bucket also holds listings/, images/, lambda/ and prompts/, which the
original job deleted because it listed the whole bucket. bmxgc must refuse the
whole-bucket config, say loudly that the naive mapping is wrong, never put a
key outside the prefix in a plan, and with the right mapping plan exactly the
true orphans.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from apply_support import World, empty_world
from servers import Bucket, Database
from support import CliResult, assert_one_line_error, orphan_keys, read_plan

Cli = Callable[..., CliResult]

BOOKS = 60  # books 1..60 have images in S3
BOOKS_IN_DB = 50  # books 51..60 were removed from the database: their images are the true orphans
IMAGES = 3
OTHER = {"listings/": 40, "images/": 15, "lambda/": 3, "prompts/": 2}


def book_key(book: int, image: int) -> str:
    return f"books/{book}/image_{image:02d}.webp"


ALL_BOOK_KEYS = sorted(book_key(b, i) for b in range(1, BOOKS + 1) for i in range(IMAGES))
TRUE_ORPHANS = sorted(book_key(b, i) for b in range(BOOKS_IN_DB + 1, BOOKS + 1) for i in range(IMAGES))
OTHER_KEYS = [f"{prefix}item_{i:03d}.json" for prefix, n in OTHER.items() for i in range(n)] + ["favicon.ico"]


@pytest.fixture
def incident(bucket: Bucket, pg: Database, tmp_path: Path) -> World:
    """The incident's bucket and tables: image keys stored WITHOUT books/ in the
    world's table (its book_images reference), listing keys stored in full."""
    world = empty_world(bucket, pg, tmp_path)
    bucket.put_many(ALL_BOOK_KEYS, b"webp-bytes")
    bucket.put_many(OTHER_KEYS, b"{}")
    world.reference(f"{b}/image_{i:02d}.webp" for b in range(1, BOOKS_IN_DB + 1) for i in range(IMAGES))
    listing_images = pg.table(f"listings/item_{i:03d}.json" for i in range(30))
    world.extra_references = [{"name": "listing_images", "query": f"SELECT s3_key FROM {listing_images}"}]
    return world


def test_incident_whole_bucket_config_is_refused_before_any_listing(cli: Cli, incident: World) -> None:
    result = cli("-c", incident.write_config(keys=["{value}"], prefix=""), "plan")
    assert_one_line_error(result, 1, "s3.prefix")
    assert not (incident.folder / "plans").exists()


def test_incident_naive_mapping_is_flagged_loudly(cli: Cli, incident: World) -> None:
    result = cli("-c", incident.write_config(keys=["{value}"]), "plan", "--detailed-exitcode")
    assert result.code == 3  # apply would refuse it: CI can tell
    doc = read_plan(result.saved_path())
    first = doc["warnings"][0]
    assert "0 of 180 referenced keys exist under books/: the key mapping is probably wrong" in first
    assert 'keys = ["books/{value}"]' in first
    assert any("(orphan ratio 1.00), above max_orphan_ratio 0.5" in w for w in doc["warnings"])
    # The operator sees it first, before any count.
    assert result.out.startswith("Warnings")
    assert result.out.index("key mapping is probably wrong") < result.out.index("Plan: 180 to delete.")
    stats = doc["stats"]
    assert stats["referenced_found"] == 0
    assert stats["referenced_outside_prefix"] == 180  # 150 unprefixed book keys + 30 listing keys
    assert stats["orphan_ratio"] == 1.0


def test_incident_naive_mapping_never_plans_a_key_outside_the_prefix(cli: Cli, incident: World) -> None:
    result = cli("-c", incident.write_config(keys=["{value}"]), "plan")
    doc = read_plan(result.saved_path())
    keys = orphan_keys(doc)
    assert keys == ALL_BOOK_KEYS  # every book image looks orphaned: that is what the warning is for
    assert all(k.startswith("books/") for k in keys + doc["sample_orphan_keys"])
    assert doc["stats"]["objects_scanned"] == len(ALL_BOOK_KEYS)
    for other in OTHER_KEYS:
        assert other not in result.saved_path().read_text(encoding="utf-8")


def test_incident_correct_mapping_plans_exactly_the_true_orphans(cli: Cli, incident: World) -> None:
    result = cli("-c", incident.write_config(keys=["books/{value}"]), "plan", "--detailed-exitcode")
    assert result.code == 2
    doc = read_plan(result.saved_path())
    assert orphan_keys(doc) == TRUE_ORPHANS
    assert doc["warnings"] == []
    stats = doc["stats"]
    assert stats["objects_scanned"] == BOOKS * IMAGES
    assert stats["referenced_found"] == BOOKS_IN_DB * IMAGES
    assert stats["dangling_references"] == 0
    assert stats["orphans"] == len(TRUE_ORPHANS) == 30
    assert stats["orphan_ratio"] == 30 / 180
    assert f"Plan: {len(TRUE_ORPHANS)} to delete." in result.out


def test_incident_other_prefix_is_planned_on_its_own(cli: Cli, incident: World) -> None:
    """listings/ is another prefix with its own source: only what that source does not keep is orphaned."""
    result = cli("-c", incident.write_config(keys=["books/{value}"], prefix="listings/"), "plan")
    doc = read_plan(result.saved_path())
    assert orphan_keys(doc) == [f"listings/item_{i:03d}.json" for i in range(30, 40)]
    assert doc["stats"]["objects_scanned"] == 40


def test_incident_diff_from_naive_to_correct_plan(cli: Cli, incident: World) -> None:
    naive = cli("-c", incident.write_config("naive.toml", keys=["{value}"]), "plan").saved_path()
    good = cli("-c", incident.write_config("good.toml", keys=["books/{value}"]), "plan").saved_path()
    result = cli("diff", naive, good)
    assert result.code == 0
    assert "no longer orphans (150):" in result.out
    assert "stats.orphans: 180 -> 30" in result.out
    assert "Diff: 0 added, 150 removed, 0 changed." in result.out


def test_incident_naive_plan_markdown_carries_the_warning(cli: Cli, incident: World) -> None:
    naive = cli("-c", incident.write_config(keys=["{value}"]), "plan").saved_path()
    out = cli("show", naive, "--format", "markdown").out
    assert "key mapping is probably wrong" in out
    assert "[!WARNING]" in out


def _mixed(db: Database) -> str:
    """Some rows were written with the prefix, most without: both happen in real apps."""
    values = [
        f"books/{b}/image_{i:02d}.webp" if b % 5 == 0 else f"{b}/image_{i:02d}.webp"
        for b in range(1, BOOKS_IN_DB + 1)
        for i in range(IMAGES)
    ]
    return db.table(values)


def _mixed_config(incident: World, templates: list[str]) -> Path:
    mixed = {"name": "mixed", "query": f"SELECT s3_key FROM {_mixed(incident.db)}", "keys": templates}
    return incident.write_config("mixed.toml", references=[mixed], extra_references=[])


def test_incident_mixed_prefixed_and_unprefixed_values_with_both_templates(cli: Cli, incident: World) -> None:
    doc = read_plan(cli("-c", _mixed_config(incident, ["books/{value}", "{value}"]), "plan").saved_path())
    assert orphan_keys(doc) == TRUE_ORPHANS


def test_incident_mixed_values_with_one_template_are_flagged_as_dangling(cli: Cli, incident: World) -> None:
    """books/books/5/... does not exist: the prefixed rows show up as dangling, and their images as orphans."""
    result = cli("-c", _mixed_config(incident, ["books/{value}"]), "plan")
    doc = read_plan(result.saved_path())
    prefixed_rows = (BOOKS_IN_DB // 5) * IMAGES
    assert doc["stats"]["dangling_references"] == prefixed_rows
    assert any(w.startswith(f"{prefixed_rows} referenced keys under books/ do not exist") for w in doc["warnings"])
    assert len(orphan_keys(doc)) == len(TRUE_ORPHANS) + prefixed_rows


def test_incident_plans_are_identical_in_content_for_identical_state(incident: World) -> None:
    from datetime import timezone, datetime

    from bmxgc.commands.plan import plan
    from bmxgc.config import load_config

    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    config = load_config(incident.write_config(keys=["books/{value}"]))
    first: Any = plan(config, write=False, now=now).plan
    second: Any = plan(config, write=False, now=now).plan
    assert first.plan_hash == second.plan_hash
    assert [o.key for o in first.orphans] == TRUE_ORPHANS
