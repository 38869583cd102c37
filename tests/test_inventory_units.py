"""The inventory path's parts without servers: the manifest's checks, the one
DuckDB module, the streamed references (SQLite)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bmxgc.errors import InventoryError, InventoryRefused
from bmxgc.manifest import check_age, newest_report_folders, parse_manifest, schema_fields
from inventory_support import CSV_FIELDS, ORC_SCHEMA, PARQUET_SCHEMA

ROOT = Path(__file__).resolve().parent.parent
URL = "s3://inv/inventories/src/cfg/2026-11-30T01-00Z/manifest.json"


def manifest(**changes: Any) -> bytes:
    doc = {
        "sourceBucket": "src",
        "destinationBucket": "arn:aws:s3:::inv",
        "version": "2016-11-30",
        "creationTimestamp": "1796000000000",
        "fileFormat": "CSV",
        "fileSchema": ", ".join(CSV_FIELDS),
        "files": [{"key": "inventories/src/cfg/data/a.csv.gz", "size": 10, "MD5checksum": "0" * 32}],
        **changes,
    }
    return json.dumps(doc).encode()


def parsed(body: bytes, bucket: str = "src") -> Any:
    return parse_manifest(URL, body, hashlib.md5(body).hexdigest() + "\n", bucket)


@pytest.mark.unit
def test_schema_fields_of_each_format() -> None:
    assert schema_fields("CSV", "Bucket, Key,VersionId") == ["Bucket", "Key", "VersionId"]
    assert schema_fields("Parquet", PARQUET_SCHEMA)[:4] == ["bucket", "key", "version_id", "is_latest"]
    assert schema_fields("ORC", ORC_SCHEMA)[:3] == ["bucket", "key", "version_id"]


@pytest.mark.unit
def test_manifest_checks() -> None:
    good = parsed(manifest())
    assert (good.bucket, good.source_bucket, good.file_format, good.creation_ms) == ("inv", "src", "CSV", 1796000000000)
    with pytest.raises(InventoryRefused, match="manifest.checksum"):
        parse_manifest(URL, manifest(), "f" * 32, "src")
    with pytest.raises(InventoryRefused, match="of bucket 'src', not of s3.bucket 'mine'"):
        parsed(manifest(), bucket="mine")
    with pytest.raises(InventoryError, match="unknown fileFormat 'XML'"):
        parsed(manifest(fileFormat="XML"))
    with pytest.raises(InventoryError, match="creationTimestamp"):
        parsed(manifest(creationTimestamp="yesterday"))
    with pytest.raises(InventoryError, match="not JSON"):
        parsed(b"{not json")
    with pytest.raises(InventoryError, match="lists no data files"):
        parsed(manifest(files=[]))


@pytest.mark.unit
def test_age_is_the_reports_creation_time() -> None:
    m = parsed(manifest())
    made = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=1796000000000)
    check_age(m, made + timedelta(hours=23), timedelta(hours=24), "24h")
    with pytest.raises(InventoryRefused, match="older than safety.max_plan_age = 24h"):
        check_age(m, made + timedelta(hours=25), timedelta(hours=24), "24h")
    with pytest.raises(InventoryRefused, match="in the future"):
        check_age(m, made - timedelta(hours=1), timedelta(hours=24), "24h")


@pytest.mark.unit
def test_newest_report_folders_ignore_data_and_hive() -> None:
    folders = [
        "p/src/cfg/2026-11-28T01-00Z/", "p/src/cfg/data/", "p/src/cfg/hive/", "p/src/cfg/2026-11-30T01-00Z/",
    ]
    assert newest_report_folders(folders) == ["p/src/cfg/2026-11-30T01-00Z/", "p/src/cfg/2026-11-28T01-00Z/"]


@pytest.mark.unit
def test_only_the_engine_module_imports_duckdb() -> None:
    importers = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "bmxgc").rglob("*.py")
        if re.search(r"^\s*(import duckdb|from duckdb)", p.read_text(encoding="utf-8"), re.M)
    )
    assert importers == ["bmxgc/inventory_engine.py"]


def test_stream_references_sends_batches_and_keeps_no_keys(sqlite_db: Any) -> None:
    from bmxgc.config import ReferenceSource
    from bmxgc.references import STREAM_ROWS, read_references, stream_references

    table = sqlite_db.table([f"{i}.webp" for i in range(STREAM_ROWS * 2 + 7)] + [None, ""])
    sources = [ReferenceSource(name="s", query=f"SELECT s3_key FROM {table}", keys=["a/{value}", "b/{value}"])]
    batches: list[tuple[str, list[str]]] = []
    streamed = stream_references(sqlite_db.url, sources, lambda name, keys: batches.append((name, list(keys))))
    assert all(len(keys) <= STREAM_ROWS for _n, keys in batches) and {n for n, _k in batches} == {"s"}
    read = read_references(sqlite_db.url, sources)
    assert sorted(k for _n, keys in batches for k in keys) == sorted(k for _i, k in read.every_key())
    (result,) = streamed.sources
    assert (result.rows, result.skipped_null, result.skipped_empty, result.keys) == (STREAM_ROWS * 2 + 9, 1, 1, set())


@pytest.mark.unit
@pytest.mark.parametrize(
    ("inventory", "needle"),
    [
        ({"memory_limit": "lots"}, "inventory.memory_limit"),
        ({"manifest": "https://bucket/manifest.json"}, "inventory.manifest"),
        ({"threads": 0}, "inventory.threads"),
        ({"spill": "/tmp"}, "inventory.spill"),
    ],
)
def test_bad_inventory_settings_name_the_key(inventory: dict[str, Any], needle: str) -> None:
    from bmxgc.config import config_from_dict
    from bmxgc.errors import ConfigError
    from support import config_doc

    with pytest.raises(ConfigError, match=re.escape(needle)):
        config_from_dict({**config_doc(), "inventory": inventory})


@pytest.mark.unit
def test_inventory_settings_defaults() -> None:
    from bmxgc.config import config_from_dict
    from support import config_doc

    settings = config_from_dict(config_doc()).inventory
    assert (settings.manifest, settings.memory_limit, settings.temp_directory, settings.threads) == (None, "1GiB", None, None)
