"""``plan --cross-check``: a second opinion on the declared references.

An image is also named in a column nobody declared (``listings.cover_key``
holds the key without ``books/``, ``notes.body`` the full key). The plan must
say so (table, column, key), record it, and apply must refuse it until the
column is declared. Against moto's S3 server and, each time, a database of
its own in PostgreSQL and in SQLite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from apply_support import World, empty_world
from ops_support import read_json
from servers import Database, postgres_db, sqlite_file
from support import CliResult, assert_one_line_error

Cli = Callable[..., CliResult]

COVER = "books/1001/image_00.webp"  # named in listings.cover_key, without books/
NOTED = "books/1002/image_00.webp"  # named in notes.body, in full
TRUE_ORPHAN = "books/1003/image_00.webp"  # named nowhere
LIVE = [f"books/{n}/image_00.webp" for n in range(1, 11)]


@pytest.fixture(params=["postgresql", "sqlite"])
def app_db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "postgresql":
        return postgres_db(request.getfixturevalue("postgres"))
    return sqlite_file(tmp_path / "app.db")


@pytest.fixture
def scene(bucket: Any, app_db: Database, tmp_path: Path) -> World:
    scene = empty_world(bucket, app_db, tmp_path)
    scene.reference(k.removeprefix("books/") for k in LIVE)
    scene.books(range(1, 11))
    scene.books([1001, 1002, 1003])
    db = scene.db
    db.execute("CREATE TABLE listings (id INTEGER PRIMARY KEY, title TEXT, cover_key VARCHAR(200), price INTEGER)")
    db.insert(
        "listings",
        ["id", "title", "cover_key", "price"],
        [(1, "A first edition", COVER.removeprefix("books/"), 120), (2, "Atlas", "7/image_00.webp", 40)],
    )
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    db.insert("notes", ["id", "body"], [(1, NOTED), (2, "nothing to see")])
    return scene


COVERS = {"name": "covers", "query": "SELECT cover_key FROM listings", "keys": ["books/{value}"]}
NOTES = {"name": "notes", "query": "SELECT body FROM notes"}


def plan_cli(cli: Cli, scene: World, *extra: str) -> tuple[CliResult, dict[str, Any]]:
    result = cli("-c", scene.config_path, "plan", "--cross-check", *extra)
    assert result.code == 0, result.output
    return result, read_json(result.saved_path())


def hits(plan: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(h["table"], h["column"], h["key"]) for h in plan["cross_check"]]


def test_cross_check_undeclared_columns_warned_recorded_and_refused(scene: World, cli: Cli) -> None:
    result, plan = plan_cli(cli, scene)

    assert hits(plan) == [("listings", "cover_key", COVER), ("notes", "body", NOTED)]
    warnings = [w for w in plan["warnings"] if w.startswith("cross-check")]
    assert len(warnings) == 2
    assert "listings.cover_key" in warnings[0] and COVER in warnings[0]
    assert "notes.body" in warnings[1] and NOTED in warnings[1]
    for warning in warnings:
        assert warning in result.out
    # Every undeclared text column was scanned, and only those.
    assert sorted(plan["cross_check_columns"]) == ["listings.cover_key", "listings.title", "notes.body"]
    assert [o["key"] for o in plan["orphans"]] == [COVER, NOTED, TRUE_ORPHAN]

    before = scene.versions()
    refused = cli("-c", scene.config_path, "apply", result.saved_path(), "--auto-approve")
    assert refused.code == 3, refused.output
    assert "refused by gate 'scope'" in refused.err
    assert COVER in refused.err and "listings.cover_key" in refused.err
    assert NOTED in refused.err and "notes.body" in refused.err
    assert scene.versions() == before


def test_cross_check_declared_column_is_not_scanned_and_keeps_its_key(scene: World, cli: Cli) -> None:
    scene.write_config(extra_references=[COVERS])
    _, plan = plan_cli(cli, scene)
    assert hits(plan) == [("notes", "body", NOTED)]
    assert "listings.cover_key" not in plan["cross_check_columns"]
    assert "listings.title" in plan["cross_check_columns"]
    assert COVER not in [o["key"] for o in plan["orphans"]]

    scene.write_config(extra_references=[COVERS, NOTES])
    result, plan = plan_cli(cli, scene)
    assert hits(plan) == []
    assert not [w for w in plan["warnings"] if w.startswith("cross-check")]
    assert sorted(plan["cross_check_columns"]) == ["listings.title"]
    assert [o["key"] for o in plan["orphans"]] == [TRUE_ORPHAN]

    applied = cli("-c", scene.config_path, "apply", result.saved_path(), "--auto-approve")
    assert applied.code == 0, applied.output
    assert scene.now(TRUE_ORPHAN) is None
    for key in [COVER, NOTED, *LIVE]:
        now = scene.now(key)
        assert now is not None and now[1] == f"bytes of {key}".encode(), key


def test_cross_check_table_flag_restricts_the_scan(scene: World, cli: Cli) -> None:
    _, plan = plan_cli(cli, scene, "--cross-check-table", "listings")
    assert hits(plan) == [("listings", "cover_key", COVER)]
    assert sorted(plan["cross_check_columns"]) == ["listings.cover_key", "listings.title"]
    _, plan = plan_cli(cli, scene, "--cross-check-table", "notes", "--cross-check-table", "listings")
    assert hits(plan) == [("listings", "cover_key", COVER), ("notes", "body", NOTED)]


def test_cross_check_unknown_table_is_an_error(scene: World, cli: Cli) -> None:
    result = cli("-c", scene.config_path, "plan", "--cross-check", "--cross-check-table", "listingz")
    assert_one_line_error(result, 1, "listingz")
    assert not (scene.folder / "plans").exists() or not list((scene.folder / "plans").iterdir())


def test_cross_check_without_the_flag_scans_nothing(scene: World, cli: Cli) -> None:
    result = cli("-c", scene.config_path, "plan")
    assert result.code == 0, result.output
    plan = read_json(result.saved_path())
    assert "cross_check" not in plan and "cross_check_columns" not in plan
    assert [o["key"] for o in plan["orphans"]] == [COVER, NOTED, TRUE_ORPHAN]


def test_cross_check_quoted_table_and_column_names(scene: World, cli: Cli) -> None:
    quoted = '"Order Lines"'
    scene.db.execute(f'CREATE TABLE {quoted} (id INTEGER PRIMARY KEY, "ImageKey" TEXT)')
    scene.db.insert(quoted, ["id", '"ImageKey"'], [(1, TRUE_ORPHAN.removeprefix("books/"))])
    _, plan = plan_cli(cli, scene)
    assert ("Order Lines", "ImageKey", TRUE_ORPHAN) in hits(plan)


def test_cross_check_postgresql_enum_and_json_columns(bucket: Any, postgres: Any, tmp_path: Path, cli: Cli) -> None:
    """An app's enum column must not break the scan (an orphan key is no valid enum value)."""
    db = postgres_db(postgres)
    scene = empty_world(bucket, db, tmp_path)
    scene.reference(k.removeprefix("books/") for k in LIVE)
    scene.books(range(1, 11))
    scene.books([1001])
    db.execute("CREATE TYPE listing_state AS ENUM ('draft', 'live')")
    db.execute("CREATE TABLE listings (id INTEGER PRIMARY KEY, state listing_state, cover_key TEXT, meta JSONB)")
    db.insert(
        "listings",
        ["id", "state", "cover_key", "meta"],
        [(1, "live", COVER.removeprefix("books/"), '{"k": "v"}')],
    )
    _, plan = plan_cli(cli, scene)
    assert hits(plan) == [("listings", "cover_key", COVER)]


def test_cross_check_table_limit_is_warned_and_lifted_by_the_flag(bucket: Any, tmp_path: Path, cli: Cli) -> None:
    from bmxgc.references import CROSS_CHECK_MAX_TABLES

    # book_images sorts before t000..t049: the last of these is the one not scanned.
    scene = empty_world(bucket, sqlite_file(tmp_path / "app.db"), tmp_path, table_name="book_images")
    scene.reference(k.removeprefix("books/") for k in LIVE)
    scene.books(range(1, 11))
    scene.books([1003])
    for n in range(CROSS_CHECK_MAX_TABLES):  # with book_images: one table over the limit
        scene.db.execute(f"CREATE TABLE t{n:03d} (id INTEGER PRIMARY KEY, note TEXT)")
    scene.db.execute(f"INSERT INTO t{CROSS_CHECK_MAX_TABLES - 1:03d} (id, note) VALUES (1, '1003/image_00.webp')")
    last = f"t{CROSS_CHECK_MAX_TABLES - 1:03d}"

    result, plan = plan_cli(cli, scene)
    assert plan["cross_check_tables_not_scanned"] == [last]
    assert hits(plan) == []
    [warning] = [w for w in plan["warnings"] if "not scanned" in w]
    assert last in warning and "--cross-check-table" in warning
    assert warning in result.out

    _, plan = plan_cli(cli, scene, "--cross-check-table", last)
    assert hits(plan) == [(last, "note", TRUE_ORPHAN)]
