"""`bmxgc plan` end to end: moto's S3 server over HTTP, a real PostgreSQL (or SQLite), the real CLI."""

from __future__ import annotations

import collections
import os
import re
import stat
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest

from bmxgc import s3
from bmxgc.commands.plan import plan as run_plan
from bmxgc.config import load_config
from bmxgc.model import utc_now
from apply_support import World, empty_world
from servers import AWS_SECRET, Bucket, Database, PostgresServer, free_port
from support import (
    PLAN_NAME,
    CliResult,
    assert_one_line_error,
    orphan_keys,
    pages_needed,
    read_plan,
    spec_hash,
    write_toml,
)

Cli = Callable[..., CliResult]


@pytest.fixture
def scene(bucket: Bucket, pg: Database, tmp_path: Path) -> World:
    return empty_world(bucket, pg, tmp_path)


@pytest.fixture
def sqlite_scene(bucket: Bucket, sqlite_db: Database, tmp_path: Path) -> World:
    return empty_world(bucket, sqlite_db, tmp_path)


def _books(scene: World, live: int = 3, dead: int = 2) -> str:
    """books/<n>/image_00.webp for live + dead books; the table holds the live ones, unprefixed."""
    for n in range(1, live + dead + 1):
        scene.bucket.put(f"books/{n}/image_00.webp", b"img" * n)
    return scene.db.table(f"{n}/image_00.webp" for n in range(1, live + 1))


def _plan_of(result: CliResult) -> dict[str, Any]:
    assert result.code in (0, 2), result.output
    return read_plan(result.saved_path())


# --------------------------------------------------------------------------- the plan file


def test_plan_writes_read_only_hashed_file_in_plans_dir(cli: Cli, scene: World) -> None:
    config = scene.write_config(table=_books(scene, live=3, dead=2))
    result = cli("-c", config, "plan")
    assert result.code == 0, result.output
    path = result.saved_path()
    assert path.parent == scene.folder / "plans"
    assert re.fullmatch(PLAN_NAME, path.name)
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    doc = read_plan(path)
    assert doc["plan_hash"] == spec_hash(doc)
    assert path.name.endswith(doc["plan_hash"].removeprefix("sha256:")[:12] + ".json")
    assert orphan_keys(doc) == ["books/4/image_00.webp", "books/5/image_00.webp"]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left


def test_plan_file_records_scope_sources_and_settings(cli: Cli, scene: World) -> None:
    table = _books(scene)
    config = scene.write_config(table=table, safety={"max_deletes": 77, "protect": ["books/keep/*"]})
    doc = _plan_of(cli("-c", config, "plan"))
    assert (doc["format_version"], doc["bucket"], doc["prefix"]) == (1, scene.bucket.name, "books/")
    assert doc["bucket_versioning"] == "Enabled"
    assert doc["references"][0]["name"] == "book_images"
    assert doc["references"][0]["query"] == f"SELECT s3_key FROM {table}"
    assert doc["references"][0]["keys"] == ["books/{value}"]
    assert doc["safety"]["max_deletes"] == 77 and doc["safety"]["protect"] == ["books/keep/*"]
    assert doc["safety"]["min_age"] == "0s"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["created_at"])
    assert doc["database"].startswith("postgresql+psycopg2://app@127.0.0.1:")
    s = doc["stats"]
    assert (s["objects_scanned"], s["referenced_keys"], s["referenced_found"], s["orphans"]) == (5, 3, 3, 2)
    assert s["bytes_scanned"] == 3 * (1 + 2 + 3 + 4 + 5) and s["orphan_bytes"] == 3 * (4 + 5)
    assert s["orphan_ratio"] == 0.4
    assert doc["sample_orphan_keys"] == orphan_keys(doc)


def test_plan_output_reads_like_terraform(cli: Cli, scene: World) -> None:
    table = _books(scene, live=3, dead=2)
    scene.db.execute(f"INSERT INTO {table} (id, s3_key) VALUES (100, '99/missing.webp')")
    result = cli("-c", scene.write_config(table=table), "plan")
    assert result.code == 0
    out = result.out
    lines = out.splitlines()
    assert lines[0].startswith("Warnings (1):")
    assert "1 referenced keys under books/ do not exist" in lines[1]
    order = ["Warnings", "objects scanned", "orphans", "books/4/image_00.webp", "Plan: 2 to delete.", "Saved:", "Hash:"]
    positions = [out.index(needle) for needle in order]
    assert positions == sorted(positions)
    assert f"Hash:   {read_plan(result.saved_path())['plan_hash']}" in out
    assert result.err == ""  # no progress when stderr is not a terminal


def test_plan_without_orphans_says_so(cli: Cli, scene: World) -> None:
    result = cli("-c", scene.write_config(table=_books(scene, live=3, dead=0)), "plan")
    assert result.code == 0
    assert "Plan: 0 to delete." in result.out
    assert "Warnings" not in result.out
    assert read_plan(result.saved_path())["orphans"] == []


def test_plan_detailed_exitcode_is_2_with_orphans(cli: Cli, scene: World) -> None:
    result = cli("-c", scene.write_config(table=_books(scene, live=1, dead=1)), "plan", "--detailed-exitcode")
    assert result.code == 2
    assert "Plan: 1 to delete." in result.out and result.saved_path().exists()


def test_plan_detailed_exitcode_is_0_without_orphans(cli: Cli, scene: World) -> None:
    result = cli("-c", scene.write_config(table=_books(scene, live=2, dead=0)), "plan", "--detailed-exitcode")
    assert result.code == 0
    assert "Plan: 0 to delete." in result.out


def test_plan_without_detailed_exitcode_is_0_with_orphans(cli: Cli, scene: World) -> None:
    assert cli("-c", scene.write_config(table=_books(scene, live=1, dead=3)), "plan").code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "--bogus"],
        ["plan", "--out"],
        ["plan", "--detailed-exitcode=yes"],
        ["no-such-command"],
        ["show"],
        ["show", "plan.json", "--format", "yaml"],
        ["diff", "only-one.json"],
        ["--no-such-global", "plan"],
    ],
)
def test_plan_usage_error_exits_1(cli: Cli, args: list[str]) -> None:
    result = cli(*args)
    assert result.code == 1, result.output
    assert "Traceback" not in result.output
    assert "Error:" in result.err


def test_plan_out_writes_exactly_there(cli: Cli, scene: World) -> None:
    out = scene.folder / "review" / "my-plan.json"
    result = cli("-c", scene.write_config(table=_books(scene)), "plan", "--out", out)
    assert result.code == 0
    assert result.saved_path() == out
    assert stat.S_IMODE(out.stat().st_mode) == 0o444
    assert orphan_keys(read_plan(out)) == ["books/4/image_00.webp", "books/5/image_00.webp"]
    assert not (scene.folder / "plans").exists() or not list((scene.folder / "plans").glob("*.json"))


def test_plan_out_never_overwrites(cli: Cli, scene: World) -> None:
    out = scene.folder / "existing.json"
    out.write_text("an earlier, reviewed plan\n", encoding="utf-8")
    result = cli("-c", scene.write_config(table=_books(scene)), "plan", "--out", out)
    # Not 0, and not 2 (which would read as "orphans found" to a CI script).
    assert_one_line_error(result, 1, str(out), "already exists")
    assert out.read_text(encoding="utf-8") == "an earlier, reviewed plan\n"


def test_plan_plans_dir_is_relative_to_the_config_file(cli: Cli, scene: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = scene.write_config(table=_books(scene), name="conf/bmxgc.toml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = cli("-c", config, "plan")
    assert result.code == 0
    assert Path(result.saved_path()).resolve().parent == (tmp_path / "conf" / "plans").resolve()
    assert list(elsewhere.iterdir()) == []


def test_plan_runs_as_a_separate_process(cli_process: Cli, scene: World) -> None:
    config = scene.write_config(table=_books(scene, live=2, dead=1))
    result = cli_process("-c", config, "plan", "--detailed-exitcode")
    assert result.code == 2, result.output
    assert "Plan: 1 to delete." in result.out
    assert result.err == ""
    assert orphan_keys(read_plan(result.saved_path())) == ["books/3/image_00.webp"]


def test_plan_env_database_url_wins_over_config(cli: Cli, scene: World, monkeypatch: pytest.MonkeyPatch) -> None:
    table = _books(scene)
    config = scene.write_config(table=table, database_url=f"sqlite:///{scene.folder / 'not-this-one.db'}")
    monkeypatch.setenv("BMXGC_DATABASE_URL", scene.db.url)
    doc = _plan_of(cli("-c", config, "plan"))
    assert doc["stats"]["referenced_found"] == 3
    assert doc["database"].startswith("postgresql+psycopg2://app@")
    assert not (scene.folder / "not-this-one.db").exists()


def test_plan_config_from_bmxgc_config_env(cli: Cli, scene: World, monkeypatch: pytest.MonkeyPatch) -> None:
    config = scene.write_config(table=_books(scene), name="somewhere/else.toml")
    monkeypatch.setenv("BMXGC_CONFIG", str(config))
    result = cli("plan")
    assert result.code == 0, result.output
    assert result.saved_path().parent == config.parent / "plans"


def test_plan_missing_bucket_is_one_line_error(cli: Cli, scene: World, make_bucket: Callable[..., Bucket]) -> None:
    table = scene.db.table(["1/a"])
    ghost = Bucket(scene.bucket.client, scene.bucket.name + "-ghost", scene.bucket.endpoint)
    result = cli("-c", scene.write_config(table=table, bucket=ghost.name), "plan")
    assert_one_line_error(result, 1, "NoSuchBucket")


# --------------------------------------------------------------------------- what counts as an orphan


def test_plan_min_age_default_keeps_fresh_uploads(cli: Cli, scene: World) -> None:
    config = scene.write_config(table=_books(scene, live=1, dead=4), safety={"min_age": "24h"})
    result = cli("-c", config, "plan", "--detailed-exitcode")
    assert result.code == 0
    doc = read_plan(result.saved_path())
    assert doc["orphans"] == []
    assert doc["stats"]["skipped_young"] == 4


def test_plan_min_age_counts_from_now(scene: World) -> None:
    config = load_config(scene.write_config(table=_books(scene, live=1, dead=2), safety={"min_age": "24h"}))
    soon = run_plan(config, write=False, now=utc_now() + timedelta(hours=23))
    assert soon.plan.orphans == [] and soon.plan.stats.skipped_young == 2
    later = run_plan(config, write=False, now=utc_now() + timedelta(hours=25))
    assert [o.key for o in later.plan.orphans] == ["books/2/image_00.webp", "books/3/image_00.webp"]
    assert later.plan.stats.skipped_young == 0


def test_plan_protect_globs_are_never_orphans(cli: Cli, scene: World) -> None:
    table = _books(scene, live=1, dead=1)
    for key in ["books/keep/a.webp", "books/keep/deep/b.webp", "books/9/cover.png"]:
        scene.bucket.put(key)
    config = scene.write_config(table=table, safety={"protect": ["books/keep/*", "*.png"]})
    doc = _plan_of(cli("-c", config, "plan"))
    assert orphan_keys(doc) == ["books/2/image_00.webp"]
    assert doc["stats"]["skipped_protected"] == 3


def test_plan_delete_markers_and_noncurrent_versions_are_not_objects(cli: Cli, scene: World) -> None:
    table = scene.db.table(["live"])
    scene.bucket.put("books/live")
    scene.bucket.put("books/overwritten", b"old-version")
    newest = scene.bucket.put("books/overwritten", b"new")
    scene.bucket.put("books/deleted", b"gone")
    scene.bucket.delete("books/deleted")
    doc = _plan_of(cli("-c", scene.write_config(table=table), "plan"))
    assert doc["stats"]["objects_scanned"] == 2
    assert doc["stats"]["bytes_scanned"] == 1 + 3  # b"x" (books/live) and b"new"
    assert [(o["key"], o["version_id"], o["size"]) for o in doc["orphans"]] == [
        ("books/overwritten", newest["VersionId"], 3)
    ]
    assert doc["orphans"][0]["etag"] == newest["ETag"].strip('"')


def test_plan_unusual_keys_come_through_intact(cli: Cli, scene: World) -> None:
    names = [
        "with space.webp", "a+b.webp", "a%20b.webp", "cafe\u0301.webp", "caf\u00e9.webp",
        "\U0001f600.webp", "tab\there", "日本語/画像.png", "quote\"s", "per%cent",
    ]
    for name in names:
        scene.bucket.put(f"books/{name}")
    referenced = names[::2]  # includes the composed é, not the decomposed one
    table = scene.db.table(referenced)
    result = cli("-c", scene.write_config(table=table), "plan")
    doc = _plan_of(result)
    assert orphan_keys(doc) == sorted(f"books/{n}" for n in names[1::2])
    assert "books/cafe\u0301.webp" in orphan_keys(doc) and "books/caf\u00e9.webp" not in orphan_keys(doc)
    assert doc["stats"]["referenced_found"] == len(referenced)
    assert cli("verify", result.saved_path()).code == 0


# --------------------------------------------------------------------------- scale: pages of 1,000


def _counted_plan(scene: World, config: Path, s3_calls: Callable[[Any], collections.Counter[str]]) -> tuple[Any, collections.Counter[str]]:
    client = s3.make_client(scene.bucket.endpoint, "us-east-1")
    calls = s3_calls(client)
    result = run_plan(load_config(config), client=client, write=False)
    return result.plan, calls


def test_plan_pages_past_1000_objects(scene: World, s3_calls: Callable[[Any], collections.Counter[str]]) -> None:
    scene.bucket.put_many(f"books/{i:05d}/image_00.webp" for i in range(1100))
    scene.bucket.put_many(f"listings/{i}" for i in range(30))
    table = scene.db.table(f"{i:05d}/image_00.webp" for i in range(0, 1100, 2))
    plan, calls = _counted_plan(scene, scene.write_config(table=table), s3_calls)
    assert plan.stats.objects_scanned == 1100
    assert plan.stats.orphans == 550 and plan.stats.referenced_found == 550
    assert calls["ListObjectVersions"] == pages_needed(1100) == 2
    # Never a request per key: only listing plus the two bucket settings.
    assert set(calls) <= {"ListObjectVersions", "GetBucketVersioning", "GetBucketLifecycleConfiguration"}
    assert sum(calls.values()) <= 4


def test_plan_pages_past_1000_versions(scene: World, s3_calls: Callable[[Any], collections.Counter[str]]) -> None:
    keys = [f"books/{i:04d}" for i in range(600)]
    scene.bucket.put_many(keys, b"first")
    scene.bucket.put_many(keys, b"second")
    table = scene.db.table(f"{i:04d}" for i in range(500))
    plan, calls = _counted_plan(scene, scene.write_config(table=table), s3_calls)
    assert plan.stats.objects_scanned == 600
    assert plan.stats.bytes_scanned == 600 * len(b"second")
    assert [o.key for o in plan.orphans] == keys[500:]
    assert calls["ListObjectVersions"] == pages_needed(1200) == 2


# --------------------------------------------------------------------------- every warning, end to end


def _warnings(result: CliResult) -> list[str]:
    doc = _plan_of(result)
    for warning in doc["warnings"]:
        assert warning in result.out  # what the file says, the operator sees
    return list(doc["warnings"])


def test_plan_warns_when_sources_return_no_keys(cli: Cli, scene: World) -> None:
    scene.bucket.put("books/1/a.webp")
    (warning, *_) = _warnings(cli("-c", scene.write_config(table=scene.db.table([])), "plan"))
    assert "returned no keys" in warning


def test_plan_warns_when_ratio_above_max(cli: Cli, scene: World) -> None:
    config = scene.write_config(table=_books(scene, live=1, dead=3), safety={"max_orphan_ratio": 0.5})
    warnings = _warnings(cli("-c", config, "plan"))
    assert any("nothing references 3 of the 4 objects" in w and "(orphan ratio 0.75), above max_orphan_ratio 0.5" in w for w in warnings)


def test_plan_warns_when_max_deletes_exceeded(cli: Cli, scene: World) -> None:
    config = scene.write_config(table=_books(scene, live=2, dead=3), safety={"max_deletes": 2})
    warnings = _warnings(cli("-c", config, "plan"))
    assert any("3 orphans exceed max_deletes 2" in w for w in warnings)


def test_plan_warns_when_bucket_not_versioned(cli: Cli, scene: World, make_bucket: Callable[..., Bucket]) -> None:
    plain = make_bucket(versioned=False)
    plain.put("books/1/image_00.webp")
    table = scene.db.table(["1/image_00.webp"])
    warnings = _warnings(cli("-c", scene.write_config(table=table, bucket=plain.name), "plan"))
    assert len(warnings) == 1 and "is not versioned" in warnings[0] and plain.name in warnings[0]


@pytest.mark.moto_only  # NoncurrentDays 0: S3 and Ceph RGW refuse such a rule (InvalidArgument)
def test_plan_warns_when_lifecycle_undo_window_under_a_day(cli: Cli, scene: World) -> None:
    table = _books(scene, live=2, dead=0)
    scene.bucket.client.put_bucket_lifecycle_configuration(
        Bucket=scene.bucket.name,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "expire-old-versions",
                    "Status": "Enabled",
                    "Filter": {"Prefix": "books/"},
                    "NoncurrentVersionExpiration": {"NoncurrentDays": 0},
                }
            ]
        },
    )
    warnings = _warnings(cli("-c", scene.write_config(table=table), "plan"))
    assert len(warnings) == 1 and "NoncurrentVersionExpiration" in warnings[0]


def test_plan_no_warning_for_a_long_undo_window(cli: Cli, scene: World) -> None:
    table = _books(scene, live=2, dead=0)
    scene.bucket.client.put_bucket_lifecycle_configuration(
        Bucket=scene.bucket.name,
        LifecycleConfiguration={
            "Rules": [{"ID": "r", "Status": "Enabled", "Filter": {"Prefix": ""}, "NoncurrentVersionExpiration": {"NoncurrentDays": 30}}]
        },
    )
    assert _warnings(cli("-c", scene.write_config(table=table), "plan")) == []


def test_plan_warns_about_dangling_references(cli: Cli, scene: World) -> None:
    scene.bucket.put("books/1/a")
    table = scene.db.table(["1/a", "2/missing", "3/missing"])
    doc_result = cli("-c", scene.write_config(table=table), "plan")
    (warning,) = _warnings(doc_result)
    assert warning.startswith("2 referenced keys under books/ do not exist")
    assert read_plan(doc_result.saved_path())["stats"]["dangling_references"] == 2


def test_plan_warns_about_null_and_empty_values(cli: Cli, scene: World) -> None:
    scene.bucket.put("books/1/a")
    table = scene.db.table(["1/a", None, "", None])
    result = cli("-c", scene.write_config(table=table), "plan")
    (warning,) = _warnings(result)
    assert "book_images: 2 NULL, 1 empty" in warning
    ref = read_plan(result.saved_path())["references"][0]
    assert (ref["rows"], ref["skipped_null"], ref["skipped_empty"]) == (4, 2, 1)


def test_plan_warns_about_prefix_without_trailing_slash(cli: Cli, scene: World) -> None:
    scene.bucket.put("books/1/a")
    scene.bucket.put("books-old/1/a")
    table = scene.db.table(["books/1/a"])
    config = scene.write_config(table=table, keys=["{value}"], prefix="books")
    doc = tomllib.loads(config.read_text(encoding="utf-8"))
    doc["s3"]["prefix_is_folder"] = False  # without it, such a prefix is refused
    result = cli("-c", write_toml(config, doc), "plan")
    warnings = _warnings(result)
    assert any("'books' does not end with '/'" in w for w in warnings)
    assert orphan_keys(read_plan(result.saved_path())) == ["books-old/1/a"]  # what the warning is about


# --------------------------------------------------------------------------- the database: read-only, clear errors


def test_plan_with_sqlite_database(cli: Cli, sqlite_scene: World) -> None:
    table = _books(sqlite_scene, live=2, dead=2)
    doc = _plan_of(cli("-c", sqlite_scene.write_config(table=table), "plan"))
    assert orphan_keys(doc) == ["books/3/image_00.webp", "books/4/image_00.webp"]
    assert doc["database"] == sqlite_scene.db.url


@pytest.mark.integration  # PostgreSQL through request.getfixturevalue
@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_plan_query_that_writes_fails_and_database_is_unchanged(
    cli: Cli, kind: str, request: pytest.FixtureRequest
) -> None:
    scene: World = request.getfixturevalue("scene" if kind == "postgresql" else "sqlite_scene")
    table = _books(scene)
    query = f"INSERT INTO {table} (id, s3_key) VALUES (1000, 'sneaky') RETURNING s3_key"
    result = cli("-c", scene.write_config(references=[{"name": "writer", "query": query}]), "plan")
    assert_one_line_error(result, 1, "references 'writer'")
    assert len(scene.db.rows(table)) == 3
    assert not (scene.folder / "plans").exists()


def test_plan_query_with_two_columns_is_one_line_error(cli: Cli, scene: World) -> None:
    table = _books(scene)
    query = f"SELECT id, s3_key FROM {table}"
    result = cli("-c", scene.write_config(references=[{"name": "two", "query": query}]), "plan")
    assert_one_line_error(result, 1, "references 'two'", "2 columns")


def test_plan_query_returning_numbers_is_one_line_error(cli: Cli, sqlite_scene: World) -> None:
    table = _books(sqlite_scene)
    query = f"SELECT id FROM {table}"
    result = cli("-c", sqlite_scene.write_config(references=[{"name": "ids", "query": query}]), "plan")
    assert_one_line_error(result, 1, "references 'ids'", "must return text")


# --------------------------------------------------------------------------- no secret anywhere


def _assert_no_secrets(secrets: list[str], *texts: str) -> None:
    for text in texts:
        for secret in [*secrets, AWS_SECRET]:
            assert secret not in text


def test_plan_never_writes_or_prints_the_passwords(cli: Cli, scene: World, postgres: PostgresServer) -> None:
    assert postgres.password in scene.db.url or postgres.secrets()[1] in scene.db.url  # the config holds it
    table = _books(scene)
    scene.db.execute(f"INSERT INTO {table} (id, s3_key) VALUES (50, NULL)")
    result = cli("-c", scene.write_config(table=table), "plan", "--detailed-exitcode")
    assert result.code == 2
    path = result.saved_path()
    _assert_no_secrets(postgres.secrets(), path.read_text(encoding="utf-8"), result.out, result.err)
    doc = read_plan(path)
    assert doc["database"] == f"postgresql+psycopg2://app@127.0.0.1:{postgres.port}/postgres"
    for fmt in ("text", "markdown", "json"):
        shown = cli("show", path, "--format", fmt)
        assert shown.code == 0
        _assert_no_secrets(postgres.secrets(), shown.out, shown.err)


def test_plan_password_in_env_url_is_not_recorded(cli: Cli, scene: World, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    table = _books(scene)
    monkeypatch.setenv("BMXGC_DATABASE_URL", scene.db.url + "?sslmode=disable")
    result = cli("-c", scene.write_config(table=table, database_url=None), "plan")
    assert result.code == 0, result.output
    _assert_no_secrets(postgres.secrets(), result.saved_path().read_text(encoding="utf-8"), result.out, result.err)


@pytest.mark.parametrize("failure", ["wrong_password", "unreachable_port", "failing_query"])
def test_plan_database_errors_never_show_the_password(
    cli: Cli, scene: World, postgres: PostgresServer, failure: str
) -> None:
    table = _books(scene)
    wrong = "wrong-PASSWORD-" + os.urandom(4).hex()
    url, query, needle = {
        "wrong_password": (postgres.url_with_password(wrong), f"SELECT s3_key FROM {table}", "password authentication failed"),
        "unreachable_port": (scene.db.url.replace(f":{postgres.port}/", f":{free_port()}/"), "SELECT 'x'", "127.0.0.1"),
        "failing_query": (scene.db.url, "SELECT s3_key FROM no_such_table", "no_such_table"),
    }[failure]
    result = cli("-c", scene.write_config(references=[{"name": "src", "query": query}], database_url=url), "plan")
    assert_one_line_error(result, 1, needle)
    _assert_no_secrets([*postgres.secrets(), wrong], result.out, result.err)
    assert not (scene.folder / "plans").exists()


# --------------------------------------------------------------------------- repeat runs and progress


def test_plan_same_state_same_second_keeps_one_file(scene: World) -> None:
    config = load_config(scene.write_config(table=_books(scene)))
    now = utc_now().replace(microsecond=0)
    first = run_plan(config, now=now)
    second = run_plan(config, now=now)  # same content, same name: not an error, not a second file
    assert first.path == second.path
    assert first.plan.plan_hash == second.plan.plan_hash
    assert len(list((scene.folder / "plans").glob("*.json"))) == 1
    scene.bucket.put("books/77/image_00.webp")
    third = run_plan(config, now=now)  # another state in the same second: its own file
    assert third.path != first.path
    assert len(list((scene.folder / "plans").glob("*.json"))) == 2


def test_plan_progress_goes_to_stderr_only_on_a_terminal(scene: World) -> None:
    import pty
    import subprocess
    import sys

    config = scene.write_config(table=_books(scene))
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bmxgc", "-c", str(config), "plan"],
            stdout=subprocess.PIPE,
            stderr=slave,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    terminal = b"".join(chunks).decode("utf-8", errors="replace")
    stdout = proc.stdout.decode("utf-8")
    assert proc.returncode == 0
    assert "listing: 5 versions listed" in terminal
    assert "versions listed" not in stdout and "\r" not in stdout
    assert "Plan: 2 to delete." in stdout


# --------------------------------------------------------------------------- S3 unreachable or misconfigured


def _config_with_endpoint(scene: World, endpoint: str) -> Path:
    doc = scene.config_doc(references=[{"name": "src", "query": f"SELECT s3_key FROM {scene.db.table(['1/a'])}"}])
    doc["s3"]["endpoint_url"] = endpoint
    return write_toml(scene.folder / "bmxgc.toml", doc)


def test_plan_unreachable_s3_is_one_line_error(cli: Cli, scene: World) -> None:
    result = cli("-c", _config_with_endpoint(scene, f"http://127.0.0.1:{free_port()}"), "plan")
    assert_one_line_error(result, 1, "s3.endpoint_url")
    _assert_no_secrets(scene.db.secrets, result.out, result.err)
    assert not (scene.folder / "plans").exists()


def test_plan_endpoint_without_scheme_is_one_line_error(cli: Cli, scene: World) -> None:
    result = cli("-c", _config_with_endpoint(scene, "localhost:9000"), "plan")
    assert_one_line_error(result, 1, "localhost:9000")
