"""Apply's gates decide from live state, not from what the plan says about
itself (issue 10: forged stats, age at apply, SQL from the plan, a prefix that
is not a folder, --out inside the prefix, protect patterns taken literally).

Each refusal exits 3 (or 1 for a config or argument error) and leaves the
bucket's whole version listing unchanged. Against moto's S3 server over HTTP
and a SQLite database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from apply_support import PREFIX, World, build_world
from support import assert_one_line_error, read_plan, refused, spec_hash, write_toml


def refused_unread(result: Any, named: str) -> str:
    """Refused before any gate: the plan file itself is not a valid plan."""
    assert result.code == 3, f"exit {result.code}\n{result.out}\n{result.err}"
    assert "not a plan file" in result.err or "not a valid plan" in result.err, result.err
    assert named in result.err, result.err
    assert "Traceback" not in result.output
    assert "Apply complete" not in result.out
    return str(result.err)


def forge(plan: Path, change: Any) -> Path:
    """The plan edited by ``change(doc)`` and rehashed: anyone can do this."""
    doc = json.loads(plan.read_text(encoding="utf-8"))
    change(doc)
    doc["plan_hash"] = spec_hash(doc)
    out = plan.with_name("forged-" + plan.name)
    out.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return out


def naive_plan(world: World) -> Path:
    """The incident's mapping: the database holds 515/..., S3 books/515/...;
    with keys = ["{value}"] every object under books/ looks like an orphan."""
    from bmxgc.commands.plan import plan as make_plan

    world.doc["references"][0]["keys"] = ["{value}"]
    write_toml(world.config_path, world.doc)
    return Path(make_plan(world.config()).path or "")


# --------------------------------------------------------------------------- item 5: forged stats


@pytest.fixture
def twenty(bucket: Any, sqlite_db: Any, tmp_path: Path) -> World:
    """20 objects under books/: 14 referenced, 6 orphans."""
    return build_world(bucket, sqlite_db, tmp_path, live=14, orphans=6)


def test_forged_self_consistent_stats_of_a_wrong_mapping_refused_by_live_figures(twenty: World, cli: Any) -> None:
    # The incident re-enacted: the naive mapping makes all 20 objects orphans;
    # the stats are rewritten to look like a healthy 20 of 200, consistently.
    plan = naive_plan(twenty)
    assert read_plan(plan)["stats"]["orphans"] == 20

    def healthy(doc: dict[str, Any]) -> None:
        doc["stats"].update(
            objects_scanned=200, referenced_keys=190, referenced_found=180, orphan_ratio=0.1, dangling_references=0
        )
        doc["warnings"] = []

    forged = forge(plan, healthy)
    before = twenty.snapshot()
    err = refused(cli("-c", twenty.config_path, "apply", forged, "--auto-approve"), "volume")
    assert "none of the 14 referenced keys exist under books/" in err
    assert twenty.snapshot() == before


def test_forged_ratio_consistent_with_forged_count_refused_by_live_ratio(bucket: Any, sqlite_db: Any, tmp_path: Path, cli: Any) -> None:
    heavy = build_world(bucket, sqlite_db, tmp_path, live=4, orphans=6)  # 6 of 10: 0.6 > 0.5
    plan = heavy.plan()
    forged = forge(plan, lambda doc: doc["stats"].update(objects_scanned=100, orphan_ratio=0.06))
    before = heavy.snapshot()
    err = refused(cli("-c", heavy.config_path, "apply", forged, "--auto-approve"), "volume")
    assert "6 of the 10 objects under books/ now" in err
    assert heavy.snapshot() == before


def test_forged_orphan_count_below_max_deletes_refused(world: World, cli: Any) -> None:
    # max_deletes = 2 let 6 through when stats.orphans said 2.
    world.write_config(safety={"max_deletes": 10})
    plan = world.plan()
    world.write_config(safety={"max_deletes": 2})
    forged = forge(plan, lambda doc: doc["stats"].update(orphans=2, orphan_ratio=2 / 18))
    before = world.snapshot()
    err = refused(cli("-c", world.config_path, "apply", forged, "--auto-approve"), "volume")
    assert "stats.orphans" in err and "6 orphans" in err
    assert world.snapshot() == before


def test_live_volume_counts_the_planned_orphans_that_exist_now() -> None:
    # The live count decides, whatever the plan's figures say.
    from bmxgc import gates
    from bmxgc.errors import GateRefused

    figures = gates.VolumeFigures(objects=18, referenced_keys=12, referenced_found=12, orphans=6)
    with pytest.raises(GateRefused, match="6 planned orphans exist now"):
        gates.check_volume(figures, gates.Limits(max_orphan_ratio=1.0, max_deletes=2, overrides={}), PREFIX, live=True)


def test_forged_nan_ratio_refused(bucket: Any, sqlite_db: Any, tmp_path: Path, cli: Any) -> None:
    heavy = build_world(bucket, sqlite_db, tmp_path, live=4, orphans=6)
    plan = heavy.plan()
    forged = forge(plan, lambda doc: doc["stats"].update(orphan_ratio=float("nan")))
    assert "NaN" in forged.read_text()
    before = heavy.snapshot()
    # JSON has no NaN: the file is refused as it is read, before any gate.
    refused_unread(cli("-c", heavy.config_path, "apply", forged, "--auto-approve"), "NaN")
    assert heavy.snapshot() == before


def test_forged_nan_safety_ratio_refused(bucket: Any, sqlite_db: Any, tmp_path: Path, cli: Any) -> None:
    heavy = build_world(bucket, sqlite_db, tmp_path, live=4, orphans=6)
    plan = heavy.plan()
    forged = forge(plan, lambda doc: doc["safety"].update(max_orphan_ratio=float("nan")))
    before = heavy.snapshot()
    refused_unread(cli("-c", heavy.config_path, "apply", forged, "--auto-approve"), "NaN")
    assert heavy.snapshot() == before


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda doc: doc["stats"].update(orphan_bytes=1), "stats.orphan_bytes"),
        (lambda doc: doc["stats"].update(orphan_ratio=0.01), "stats.orphan_ratio"),
    ],
    ids=["bytes", "ratio"],
)
def test_plan_figures_inconsistent_with_content_refused(world: World, cli: Any, change: Any, named: str) -> None:
    forged = forge(world.plan(), change)
    before = world.snapshot()
    err = refused(cli("-c", world.config_path, "apply", forged, "--auto-approve"), "volume")
    assert named in err
    assert world.snapshot() == before


def test_plan_with_a_negative_figure_refused_as_it_is_read(world: World, cli: Any) -> None:
    forged = forge(world.plan(), lambda doc: doc["stats"].update(referenced_found=-1))
    before = world.snapshot()
    refused_unread(cli("-c", world.config_path, "apply", forged, "--auto-approve"), "stats.referenced_found")
    assert world.snapshot() == before


def test_apply_lists_the_whole_prefix_even_for_a_few_keys(bucket: Any, sqlite_db: Any, tmp_path: Path) -> None:
    # The per-key shortcut cannot count the prefix's objects: apply must list it.
    import collections

    many = build_world(bucket, sqlite_db, tmp_path, live=1200, orphans=1, fast=True)
    plan = many.plan()
    calls: collections.Counter[str] = collections.Counter()
    client = many.s3_client()
    client.meta.events.register(  # listings of the prefix, not of the lock folder
        "before-parameter-build.s3.ListObjectVersions",
        lambda params, **kw: calls.update(["prefix"] if not params["Prefix"].startswith(".bmxgc/") else []),
    )
    many.apply(plan, client=client)
    assert calls["prefix"] == 2  # the prefix's two pages, not one request for the key
    assert all(many.current(k) is None for k in many.orphan_keys)


# --------------------------------------------------------------------------- item 6: age at apply


def test_min_age_raised_since_the_plan_refuses_young_objects(world: World, cli: Any) -> None:
    plan = world.plan()  # min_age "0s": seconds-old objects are orphans
    world.write_config(safety={"min_age": "24h"})
    before = world.snapshot()
    err = refused(cli("-c", world.config_path, "apply", plan, "--auto-approve"), "scope")
    assert world.orphan_keys[0] in err and "younger than min_age 1d" in err
    assert world.snapshot() == before


def test_plan_min_age_stricter_than_config_is_enforced(world: World, cli: Any) -> None:
    # A plan that says min_age 24h but lists seconds-old objects (edited): the
    # plan's own min_age is enforced against live LastModified.
    forged = forge(world.plan(), lambda doc: doc["safety"].update(min_age="24h"))
    before = world.snapshot()
    err = refused(cli("-c", world.config_path, "apply", forged, "--auto-approve"), "scope")
    assert "younger than min_age 1d" in err
    assert world.snapshot() == before


# --------------------------------------------------------------------------- item 7: no SQL from the plan


def test_plan_borne_vacuum_into_runs_nowhere_and_is_refused(world: World, cli: Any) -> None:
    target = world.root / "stolen.db"

    def add_source(doc: dict[str, Any]) -> None:
        doc["references"].append(
            {"name": "evil", "query": f"VACUUM INTO '{target}'", "keys": ["{value}"],
             "rows": 0, "skipped_null": 0, "skipped_empty": 0}
        )

    forged = forge(world.plan(), add_source)
    before = world.snapshot()
    err = refused(cli("-c", world.config_path, "apply", forged, "--auto-approve"), "environment")
    assert "references" in err and "evil" in err
    assert not target.exists()
    assert world.snapshot() == before


def test_plan_with_another_query_for_the_same_source_refused(world: World, cli: Any) -> None:
    forged = forge(world.plan(), lambda doc: doc["references"][0].update(query="SELECT s3_key FROM elsewhere"))
    before = world.snapshot()
    err = refused(cli("-c", world.config_path, "apply", forged, "--auto-approve"), "environment")
    assert "book_images" in err
    assert world.snapshot() == before


def test_config_source_changed_since_the_plan_refused(world: World, cli: Any) -> None:
    plan = world.plan()
    world.doc["references"][0]["keys"] = ["books/{value}", "thumbs/{value}"]
    write_toml(world.config_path, world.doc)
    before = world.snapshot()
    err = refused(cli("-c", world.config_path, "apply", plan, "--auto-approve"), "environment")
    assert "book_images" in err and "keys" in err
    assert world.snapshot() == before


# --------------------------------------------------------------------------- item 10: prefix without '/'


@pytest.fixture
def lookalikes(world: World) -> World:
    for key in ("booksellers/list.csv", "books-old/x.webp"):
        world.bucket.put(key, b"not under books/")
    return world


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_prefix_without_slash_refused_at_plan_and_apply(lookalikes: World, cli: Any, command: str) -> None:
    plan = lookalikes.plan()
    lookalikes.write_config(prefix="books")
    before = lookalikes.snapshot()
    args = ["apply", str(plan), "--auto-approve"] if command == "apply" else ["plan"]
    result = cli("-c", lookalikes.config_path, *args)
    assert_one_line_error(result, 1, "s3.prefix", "prefix_is_folder")
    assert lookalikes.snapshot() == before
    assert sorted(p.name for p in lookalikes.plans_dir.iterdir()) == [plan.name]


def test_prefix_not_a_folder_when_the_config_says_so_warns_what_it_covers(lookalikes: World, cli: Any) -> None:
    lookalikes.doc["s3"].update(prefix="books", prefix_is_folder=False)
    write_toml(lookalikes.config_path, lookalikes.doc)
    result = cli("-c", lookalikes.config_path, "plan")
    assert result.code == 0, result.output
    doc = read_plan(result.saved_path())
    (warning,) = [w for w in doc["warnings"] if "not a folder" in w]
    assert "2 objects outside books/" in warning
    assert "books-old/x.webp" in warning and "booksellers/list.csv" in warning


# --------------------------------------------------------------------------- item 18: --out inside the prefix


def test_plan_out_inside_the_scanned_prefix_refused(world: World, cli: Any) -> None:
    before = world.snapshot()
    result = cli("-c", world.config_path, "plan", "--out", f"s3://{world.name}/books/plans/x.json")
    assert_one_line_error(result, 1, "--out", "inside the scanned prefix books/")
    assert world.snapshot() == before


def test_plan_out_in_the_same_bucket_outside_the_prefix_is_written(world: World, cli: Any) -> None:
    result = cli("-c", world.config_path, "plan", "--out", f"s3://{world.name}/bmxgc-plans/x.json")
    assert result.code == 0, result.output
    assert world.client.head_object(Bucket=world.name, Key="bmxgc-plans/x.json")


# --------------------------------------------------------------------------- item 19: protect patterns


@pytest.fixture
def draft(world: World) -> World:
    world.bucket.put("books/[draft].webp", b"a draft")
    world.bucket.put("books/d.webp", b"matched by the class [draft]")
    return world


def test_protect_literal_form_keeps_a_key_with_brackets(draft: World, cli: Any) -> None:
    draft.write_config(safety={"protect": ["=books/[draft].webp"]})
    result = cli("-c", draft.config_path, "plan")
    assert result.code == 0, result.output
    doc = read_plan(result.saved_path())
    keys = [o["key"] for o in doc["orphans"]]
    assert "books/[draft].webp" not in keys
    assert "books/d.webp" in keys  # the literal form is not a character class
    assert doc["stats"]["skipped_protected"] == 1
    assert not [w for w in doc["warnings"] if "protect" in w]


def test_protect_bracket_pattern_that_misses_its_own_key_warns(draft: World, cli: Any) -> None:
    draft.write_config(safety={"protect": ["books/[draft].webp"]})
    result = cli("-c", draft.config_path, "plan")
    assert result.code == 0, result.output
    doc = read_plan(result.saved_path())
    (warning,) = [w for w in doc["warnings"] if "protect pattern" in w]
    assert "'books/[draft].webp'" in warning and "character class" in warning
    assert "=books/[draft].webp" in warning  # what to write instead
    assert "books/[draft].webp" in [o["key"] for o in doc["orphans"]]


def test_protect_added_today_in_literal_form_refuses_apply(draft: World, cli: Any) -> None:
    made = cli("-c", draft.config_path, "plan")
    assert made.code == 0, made.output
    draft.write_config(safety={"protect": ["=books/[draft].webp"]})
    before = draft.snapshot()
    err = refused(cli("-c", draft.config_path, "apply", made.saved_path(), "--auto-approve"), "scope")
    assert "books/[draft].webp: matches protect pattern '=books/[draft].webp'" in err
    assert draft.snapshot() == before
