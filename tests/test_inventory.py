"""`bmxgc plan --inventory`: a plan from an S3 Inventory report (CSV, Parquet;
ORC refused), checked, joined by DuckDB, equal to the plan made by listing."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import pytest

from apply_support import World, empty_world
from inventory_support import Report, listed_rows, shifted, upload_report
from servers import Bucket, Database
from support import CliResult, assert_one_line_error, read_plan, spec_hash, write_toml

Cli = Callable[..., CliResult]

# Keys whose order differs between UTF-8 bytes and other orders, and keys
# that URL-encoding must round-trip: '+', a literal '%20', spaces, a tab.
ORPHANS = [
    "books/3/a.webp",
    "books/plus+sign.webp",
    "books/pct%20literal.webp",
    "books/space orphan.webp",
    "books/tab\tkey.webp",
    "books/\u00e9-composed.webp",
    "books/e\u0301-decomposed.webp",
    "books/\U0001F600.webp",
    "books/\uFFFD.webp",
    "books/UPPER.webp",
    "books/revived.webp",
]
REFERENCED = ["books/1/a.webp", "books/2/a.webp", "books/sp ace.webp"]
# Values in the table (keys = ["books/{value}"]): three found, one near miss
# (padding: ' 3/a.webp' names books/3/a.webp once trimmed), one dangling.
VALUES = ["1/a.webp", "2/a.webp", "sp ace.webp", " 3/a.webp", "404.webp"]


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def scene(bucket: Bucket, sqlite_db: Database, tmp_path: Path) -> World:
    world = empty_world(bucket, sqlite_db, tmp_path)
    for key in REFERENCED + ORPHANS + ["other/x.webp", "bookshelf/y.webp", "books/gone.webp"]:
        bucket.put(key, f"bytes of {key}".encode())
    bucket.put("books/3/a.webp", b"a newer version")  # the first becomes noncurrent
    bucket.delete("books/gone.webp")  # latest is a delete marker: not an object
    bucket.delete("books/revived.webp")
    bucket.put("books/revived.webp", b"back again")  # a marker below a current version
    world.reference(VALUES)
    world.write_config(safety={"min_age": "0s"})
    return world


@pytest.fixture
def inventory_bucket(make_bucket: Callable[..., Bucket]) -> Bucket:
    return make_bucket(versioned=False)


def orphans_section(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return text[text.index('\n  "orphans": ['):]


def report_of(scene: World, inventory_bucket: Bucket, tmp_path: Path, fmt: str, **kw: Any) -> Report:
    return upload_report(
        inventory_bucket.client, inventory_bucket.name, listed_rows(scene.client, scene.name), fmt,
        kw.pop("created", now()), tmp_path, **kw,
    )


def plan_ok(cli: Cli, *args: Any) -> dict[str, Any]:
    result = cli(*args)
    assert result.code == 0, result.output
    return read_plan(result.saved_path())


# --------------------------------------------------------------------------- the same plan as listing


@pytest.mark.parametrize("fmt", ["CSV", "Parquet"])
def test_inventory_plan_has_byte_identical_orphans_to_listing(
    cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path, fmt: str
) -> None:
    listed = tmp_path / "listed.json"
    plan_ok(cli, "-c", scene.config_path, "plan", "--out", listed)
    report = report_of(scene, inventory_bucket, tmp_path, fmt)
    from_inventory = tmp_path / "inventory.json"
    result = cli("-c", scene.config_path, "plan", "--inventory", report.url, "--out", from_inventory)
    assert result.code == 0, result.output
    assert f"from the S3 Inventory report {report.url}" in result.out
    doc = read_plan(from_inventory)
    assert orphans_section(from_inventory) == orphans_section(listed)
    assert [o["key"] for o in doc["orphans"]] == sorted(ORPHANS, key=lambda k: k.encode("utf-8"))
    listed_doc = read_plan(listed)
    assert doc["stats"] == listed_doc["stats"]
    assert doc["warnings"] == listed_doc["warnings"]
    assert doc["near_misses"] == listed_doc["near_misses"]
    assert doc["near_misses"][0]["key"] == "books/3/a.webp"
    assert doc["stats"]["dangling_references"] == 2  # books/404.webp and "books/ 3/a.webp"
    assert doc["stats"]["versions_listed"] == listed_doc["stats"]["versions_listed"] == len(
        [r for r in listed_rows(scene.client, scene.name) if r.key.startswith("books/")]
    )
    # The plan says where it came from; a listed plan does not.
    body = report.client.get_object(Bucket=report.bucket, Key=report.report + "manifest.json")["Body"].read()
    created = int(report.manifest["creationTimestamp"])
    assert doc["inventory"] == {
        "manifest": report.url,
        "created_at": datetime.fromtimestamp(created // 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "creation_timestamp": created,
        "checksum": hashlib.md5(body).hexdigest(),
        "file_format": fmt,
        "files": 2,
    }
    assert "inventory" not in listed_doc
    assert doc["plan_hash"] == spec_hash(doc)
    assert cli("verify", from_inventory).code == 0


def test_csv_keys_encoded_with_percent_20_decode_the_same(
    cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path
) -> None:
    listed = tmp_path / "listed.json"
    plan_ok(cli, "-c", scene.config_path, "plan", "--out", listed)
    report = report_of(scene, inventory_bucket, tmp_path, "CSV", encode=lambda k: quote(k, safe="/"))
    inv = tmp_path / "inventory.json"
    plan_ok(cli, "-c", scene.config_path, "plan", "--inventory", report.url, "--out", inv)
    assert orphans_section(inv) == orphans_section(listed)


def test_config_names_the_inventory_folder_and_the_newest_complete_report_is_used(
    cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path
) -> None:
    older = report_of(scene, inventory_bucket, tmp_path, "Parquet", created=now() - timedelta(hours=2))
    scene.bucket.put("books/newer-orphan.webp", b"x")
    newest = report_of(scene, inventory_bucket, tmp_path, "Parquet")
    doc = scene.config_doc(safety={"min_age": "0s"})
    doc["inventory"] = {"manifest": newest.folder_url, "memory_limit": "256MB"}
    config = write_toml(tmp_path / "inventory.toml", doc)
    plan = plan_ok(cli, "-c", config, "plan")
    assert plan["inventory"]["manifest"] == newest.url
    assert "books/newer-orphan.webp" in [o["key"] for o in plan["orphans"]]
    # A newer report still being written (no manifest.checksum yet) is passed over.
    later = older.folder + "9999-01-01T00-00Z/"
    inventory_bucket.client.put_object(Bucket=inventory_bucket.name, Key=later + "manifest.json", Body=b"{}")
    plan = plan_ok(cli, "-c", config, "plan")
    assert plan["inventory"]["manifest"] == newest.url


def test_folder_without_a_complete_report_is_an_error(
    cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path
) -> None:
    folder = "inventories/src/cfg/"
    inventory_bucket.client.put_object(
        Bucket=inventory_bucket.name, Key=folder + "2026-11-29T01-00Z/manifest.json", Body=b"{}"
    )
    result = cli("-c", scene.config_path, "plan", "--inventory", f"s3://{inventory_bucket.name}/{folder}")
    assert_one_line_error(result, 1, "no complete report", "manifest.checksum")
    assert not scene.plans_dir.exists() or list(scene.plans_dir.iterdir()) == []


# --------------------------------------------------------------------------- refusals and errors


def test_report_of_another_bucket_is_refused(
    cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path
) -> None:
    before = scene.snapshot()
    report = report_of(scene, inventory_bucket, tmp_path, "CSV", source_bucket="someone-elses-bucket")
    result = cli("-c", scene.config_path, "plan", "--inventory", report.url)
    assert_one_line_error(result, 3, "someone-elses-bucket", scene.name)
    assert scene.snapshot() == before
    assert not scene.plans_dir.exists() or list(scene.plans_dir.iterdir()) == []


def test_manifest_checksum_mismatch_is_refused(
    cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path
) -> None:
    report = report_of(scene, inventory_bucket, tmp_path, "Parquet")
    report.put_manifest(checksum="0" * 32)
    result = cli("-c", scene.config_path, "plan", "--inventory", report.url)
    assert_one_line_error(result, 3, "manifest.checksum", "0" * 32)


def test_data_file_md5_mismatch_is_refused(
    cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path
) -> None:
    report = report_of(scene, inventory_bucket, tmp_path, "CSV")
    # The data file is replaced after the manifest was written: its MD5 no longer matches.
    inventory_bucket.client.put_object(Bucket=inventory_bucket.name, Key=report.data_keys[1], Body=b"spoiled")
    result = cli("-c", scene.config_path, "plan", "--inventory", report.url)
    assert_one_line_error(result, 3, report.data_keys[1], "MD5")


def test_missing_fields_are_named(cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path) -> None:
    report = report_of(scene, inventory_bucket, tmp_path, "CSV")
    manifest = dict(report.manifest, fileSchema="Bucket, Key, Size, LastModifiedDate, ETag")
    report.put_manifest(manifest)
    result = cli("-c", scene.config_path, "plan", "--inventory", report.url)
    assert_one_line_error(result, 1, "VersionId, IsLatest, IsDeleteMarker", "IncludedObjectVersions = All")


def test_parquet_missing_etag_is_named(cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path) -> None:
    report = report_of(scene, inventory_bucket, tmp_path, "Parquet")
    report.put_manifest(dict(report.manifest, fileSchema=report.manifest["fileSchema"].replace(" e_tag ", " etag_x ")))
    result = cli("-c", scene.config_path, "plan", "--inventory", report.url)
    line = assert_one_line_error(result, 1, "lacks the field(s) ETag;")
    assert "VersionId" not in line.split(";")[0]


def test_orc_report_is_refused_with_what_to_do(
    cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path
) -> None:
    report = report_of(scene, inventory_bucket, tmp_path, "ORC")
    result = cli("-c", scene.config_path, "plan", "--inventory", report.url)
    assert_one_line_error(result, 1, "ORC", "Parquet")


def test_manifest_older_than_max_plan_age_is_refused(
    cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path
) -> None:
    report = report_of(scene, inventory_bucket, tmp_path, "Parquet", created=now() - timedelta(hours=25))
    result = cli("-c", scene.config_path, "plan", "--inventory", report.url)
    assert_one_line_error(result, 3, "older than safety.max_plan_age = 24h")
    scene.write_config(safety={"min_age": "0s", "max_plan_age": "2d"})
    assert cli("-c", scene.config_path, "plan", "--inventory", report.url).code == 0


@pytest.mark.parametrize(
    "url",
    ["https://bucket/manifest.json", "s3:///manifest.json", "bucket/inventory/"],
)
def test_inventory_argument_that_is_not_an_s3_url_is_an_error(cli: Cli, scene: World, url: str) -> None:
    assert_one_line_error(cli("-c", scene.config_path, "plan", "--inventory", url), 1, "--inventory", "s3://")


def test_manifest_that_does_not_exist_is_an_error(cli: Cli, scene: World, inventory_bucket: Bucket) -> None:
    url = f"s3://{inventory_bucket.name}/nothing/here/manifest.json"
    assert_one_line_error(cli("-c", scene.config_path, "plan", "--inventory", url), 1, url, "no such object")


# --------------------------------------------------------------------------- time: the report's, not now


def test_min_age_counts_from_the_inventorys_time(
    cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path
) -> None:
    """An object 90 minutes old now but 30 minutes old when the report was made is
    young for min_age = 1h: the report cannot know whether its row came later."""
    made = now() - timedelta(hours=1)
    rows = shifted(listed_rows(scene.client, scene.name), "books/UPPER.webp", made - timedelta(minutes=30))
    rows = [r if r.key == "books/UPPER.webp" else type(r)(**{**r.__dict__, "last_modified": made - timedelta(days=2)}) for r in rows]
    report = upload_report(inventory_bucket.client, inventory_bucket.name, rows, "CSV", made, tmp_path)
    scene.write_config(safety={"min_age": "1h"})
    doc = plan_ok(cli, "-c", scene.config_path, "plan", "--inventory", report.url)
    keys = [o["key"] for o in doc["orphans"]]
    assert "books/UPPER.webp" not in keys
    assert doc["stats"]["skipped_young"] == 1
    assert len(keys) == len(ORPHANS) - 1


def test_object_newer_than_the_inventory_is_never_an_orphan(
    cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path
) -> None:
    report = report_of(scene, inventory_bucket, tmp_path, "Parquet")
    scene.bucket.put("books/uploaded-after-the-report.webp", b"new")
    doc = plan_ok(cli, "-c", scene.config_path, "plan", "--inventory", report.url)
    assert "books/uploaded-after-the-report.webp" not in [o["key"] for o in doc["orphans"]]


# --------------------------------------------------------------------------- downstream unchanged


def test_inventory_plan_applies_and_undoes(cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path) -> None:
    scene.write_config(safety={"min_age": "0s", "max_orphan_ratio": 1.0, "ignore_near_misses": True})
    report = report_of(scene, inventory_bucket, tmp_path, "Parquet")
    result = cli("-c", scene.config_path, "plan", "--inventory", report.url)
    assert result.code == 0, result.output
    plan_path = result.saved_path()
    applied = cli("-c", scene.config_path, "apply", plan_path, "--auto-approve")
    assert applied.code == 0, applied.output
    assert scene.bucket.current_keys() & set(ORPHANS) == set()
    undone = cli("-c", scene.config_path, "undo", "--auto-approve")
    assert undone.code == 0, undone.output
    assert set(ORPHANS) <= scene.bucket.current_keys()


def test_drift_since_the_report_is_refused_at_apply(
    cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path
) -> None:
    scene.write_config(safety={"min_age": "0s", "max_orphan_ratio": 1.0, "ignore_near_misses": True})
    report = report_of(scene, inventory_bucket, tmp_path, "CSV")
    scene.bucket.put("books/UPPER.webp", b"changed after the report")
    result = cli("-c", scene.config_path, "plan", "--inventory", report.url)
    before = scene.snapshot()
    applied = cli("-c", scene.config_path, "apply", result.saved_path(), "--auto-approve")
    assert applied.code == 3 and "refused by gate 'drift'" in applied.err, applied.output
    assert "books/UPPER.webp" in applied.err
    assert scene.snapshot() == before


def test_temporary_files_are_removed_after_a_plan_and_after_a_refusal(
    cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path
) -> None:
    doc = scene.config_doc(safety={"min_age": "0s"})
    doc["inventory"] = {"temp_directory": "scratch"}
    config = write_toml(tmp_path / "scratch.toml", doc)
    report = report_of(scene, inventory_bucket, tmp_path, "CSV")
    assert cli("-c", config, "plan", "--inventory", report.url).code == 0
    assert list((tmp_path / "scratch").iterdir()) == []  # relative to the config's folder
    inventory_bucket.client.put_object(Bucket=inventory_bucket.name, Key=report.data_keys[0], Body=b"spoiled")
    assert cli("-c", config, "plan", "--inventory", report.url).code == 3
    assert list((tmp_path / "scratch").iterdir()) == []


def test_a_key_listed_twice_as_current_is_an_error(
    cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path
) -> None:
    rows = listed_rows(scene.client, scene.name)
    twice = rows + [r for r in rows if r.key == "books/UPPER.webp"]
    report = upload_report(inventory_bucket.client, inventory_bucket.name, twice, "Parquet", now(), tmp_path)
    result = cli("-c", scene.config_path, "plan", "--inventory", report.url)
    assert_one_line_error(result, 1, "books/UPPER.webp", "twice")


def test_protect_misread_pattern_and_a_prefix_that_is_not_a_folder_match_listing(
    cli: Cli, scene: World, inventory_bucket: Bucket, tmp_path: Path
) -> None:
    scene.bucket.put("books/[draft].webp", b"a key that looks like a pattern")
    safety = {"min_age": "0s", "protect": ["books/UPPER*", "books/[draft].webp"]}
    doc = scene.config_doc(prefix="books", safety=safety)
    doc["s3"]["prefix_is_folder"] = False
    config = write_toml(tmp_path / "not-a-folder.toml", doc)
    listed = tmp_path / "listed.json"
    plan_ok(cli, "-c", config, "plan", "--out", listed)
    report = report_of(scene, inventory_bucket, tmp_path, "CSV")
    inv = tmp_path / "inventory.json"
    plan = plan_ok(cli, "-c", config, "plan", "--inventory", report.url, "--out", inv)
    listed_doc = read_plan(listed)
    assert orphans_section(inv) == orphans_section(listed)
    assert (plan["stats"], plan["warnings"]) == (listed_doc["stats"], listed_doc["warnings"])
    assert plan["stats"]["skipped_protected"] == 1
    assert any("bookshelf/y.webp" in w for w in plan["warnings"])  # outside books/, inside "books"
    assert any("=books/[draft].webp" in w for w in plan["warnings"])  # the misread pattern
