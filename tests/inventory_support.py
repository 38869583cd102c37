"""S3 Inventory reports for tests, made from the bucket's real listing.

A report is written the way S3 Inventory writes one: data files under
``<prefix>/<source bucket>/<config id>/data/``, and a dated folder holding
``manifest.json`` and ``manifest.checksum`` (the manifest's MD5 in hex).
CSV files are gzip'd, every field quoted, keys URL-encoded; Parquet files
are written by DuckDB (``COPY ... TO ... (FORMAT PARQUET)``) with S3's
Parquet column names; ORC files by pyarrow.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, quote_plus

CSV_FIELDS = ("Bucket", "Key", "VersionId", "IsLatest", "IsDeleteMarker", "Size", "LastModifiedDate", "ETag", "StorageClass")
PARQUET_SCHEMA = (
    "message s3.inventory { required binary bucket (STRING); required binary key (STRING); "
    "optional binary version_id (STRING); optional boolean is_latest; optional boolean is_delete_marker; "
    "optional int64 size; optional int64 last_modified_date (TIMESTAMP(MILLIS,true)); "
    "optional binary e_tag (STRING); optional binary storage_class (STRING);}"
)
ORC_SCHEMA = (
    "struct<bucket:string,key:string,version_id:string,is_latest:boolean,is_delete_marker:boolean,"
    "size:bigint,last_modified_date:timestamp,e_tag:string,storage_class:string>"
)
SNAKE = {
    "Bucket": "bucket", "Key": "key", "VersionId": "version_id", "IsLatest": "is_latest",
    "IsDeleteMarker": "is_delete_marker", "Size": "size", "LastModifiedDate": "last_modified_date",
    "ETag": "e_tag", "StorageClass": "storage_class",
}


@dataclass(frozen=True)
class Row:
    """One inventory row: a version or a delete marker."""

    bucket: str
    key: str
    version_id: str
    is_latest: bool
    is_delete_marker: bool
    size: int | None
    last_modified: datetime
    etag: str | None


def listed_rows(client: Any, bucket: str) -> list[Row]:
    """Every version and delete marker of ``bucket`` as ListObjectVersions gives them."""
    rows: list[Row] = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            rows.append(
                Row(bucket, v["Key"], v["VersionId"], v["IsLatest"], False, v["Size"], v["LastModified"], v["ETag"].strip('"'))
            )
        for m in page.get("DeleteMarkers", []):
            rows.append(Row(bucket, m["Key"], m["VersionId"], m["IsLatest"], True, None, m["LastModified"], None))
    return rows


def _ms_time(moment: datetime) -> str:
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def csv_bytes(rows: list[Row], encode: Callable[[str], str] = lambda k: quote_plus(k, safe="")) -> bytes:
    """A gzip'd CSV data file: every field quoted, keys URL-encoded (S3: '+' for a space)."""
    text = io.StringIO()
    writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for r in rows:
        writer.writerow([
            r.bucket, encode(r.key), r.version_id, str(r.is_latest).lower(), str(r.is_delete_marker).lower(),
            "" if r.size is None else str(r.size), _ms_time(r.last_modified), r.etag or "", "STANDARD",
        ])
    return gzip.compress(text.getvalue().encode("utf-8"))


def parquet_bytes(rows: list[Row], folder: Path) -> bytes:
    """A Parquet data file with S3 Inventory's column names, written by DuckDB."""
    import duckdb

    path = folder / f"{uuid.uuid4().hex}.parquet"
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t (bucket VARCHAR, key VARCHAR, version_id VARCHAR, is_latest BOOLEAN, "
        "is_delete_marker BOOLEAN, size BIGINT, last_modified_date TIMESTAMP_MS, e_tag VARCHAR, storage_class VARCHAR)"
    )
    con.executemany(
        "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, make_timestamp(? * 1000)::TIMESTAMP_MS, ?, 'STANDARD')",
        [
            [r.bucket, r.key, r.version_id, r.is_latest, r.is_delete_marker, r.size,
             int(r.last_modified.timestamp() * 1000), r.etag]
            for r in rows
        ],
    )
    con.execute(f"COPY t TO '{path}' (FORMAT PARQUET)")
    con.close()
    return path.read_bytes()


def orc_bytes(rows: list[Row], folder: Path) -> bytes:
    import pyarrow as pa
    import pyarrow.orc as orc

    table = pa.table({
        "bucket": [r.bucket for r in rows], "key": [r.key for r in rows],
        "version_id": [r.version_id for r in rows], "is_latest": [r.is_latest for r in rows],
        "is_delete_marker": [r.is_delete_marker for r in rows], "size": [r.size for r in rows],
        "last_modified_date": [r.last_modified for r in rows], "e_tag": [r.etag for r in rows],
        "storage_class": ["STANDARD" for _ in rows],
    })
    path = folder / f"{uuid.uuid4().hex}.orc"
    orc.write_table(table, str(path))
    return path.read_bytes()


@dataclass
class Report:
    """A report uploaded to the inventory bucket, and what a test may spoil in it."""

    client: Any
    bucket: str
    folder: str  # <prefix>/<source>/<config id>/
    report: str  # <folder><date>/
    manifest: dict[str, Any]
    data_keys: list[str]

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.report}manifest.json"

    @property
    def folder_url(self) -> str:
        return f"s3://{self.bucket}/{self.folder}"

    def put_manifest(self, manifest: dict[str, Any] | None = None, checksum: str | None = None) -> None:
        body = json.dumps(manifest or self.manifest, indent=2).encode()
        self.client.put_object(Bucket=self.bucket, Key=self.report + "manifest.json", Body=body)
        self.client.put_object(
            Bucket=self.bucket, Key=self.report + "manifest.checksum",
            Body=(checksum if checksum is not None else hashlib.md5(body).hexdigest()).encode() + b"\n",
        )


def upload_report(
    client: Any,
    inventory_bucket: str,
    rows: list[Row],
    fmt: str,
    created: datetime,
    tmp: Path,
    *,
    source_bucket: str | None = None,
    prefix: str = "inventories",
    config_id: str = "all-versions",
    files: int = 2,
    encode: Callable[[str], str] | None = None,
    schema: str | None = None,
) -> Report:
    """Write ``rows`` as an S3 Inventory report made at ``created`` (split over ``files`` data files)."""
    source = source_bucket or rows[0].bucket
    folder = f"{prefix}/{source}/{config_id}/"
    report = folder + created.astimezone(timezone.utc).strftime("%Y-%m-%dT%H-%MZ") + "/"
    chunks = [rows[i::files] for i in range(files)]
    entries, keys = [], []
    for chunk in chunks:
        if fmt == "CSV":
            body, ext = (csv_bytes(chunk, encode) if encode else csv_bytes(chunk)), "csv.gz"
        elif fmt == "Parquet":
            body, ext = parquet_bytes(chunk, tmp), "parquet"
        else:
            body, ext = orc_bytes(chunk, tmp), "orc"
        key = f"{folder}data/{uuid.uuid4()}.{ext}"
        client.put_object(Bucket=inventory_bucket, Key=key, Body=body)
        entries.append({"key": key, "size": len(body), "MD5checksum": hashlib.md5(body).hexdigest()})
        keys.append(key)
    manifest = {
        "sourceBucket": source,
        "destinationBucket": f"arn:aws:s3:::{inventory_bucket}",
        "version": "2016-11-30",
        "creationTimestamp": str(int(created.timestamp() * 1000)),
        "fileFormat": fmt,
        "fileSchema": schema or {"CSV": ", ".join(CSV_FIELDS), "Parquet": PARQUET_SCHEMA, "ORC": ORC_SCHEMA}[fmt],
        "files": entries,
    }
    made = Report(client, inventory_bucket, folder, report, manifest, keys)
    made.put_manifest()
    return made


def shifted(rows: list[Row], key: str, when: datetime) -> list[Row]:
    """``rows`` with ``key``'s LastModifiedDate said to be ``when``."""
    return [replace(r, last_modified=when) if r.key == key else r for r in rows]


__all__ = ["Report", "Row", "listed_rows", "upload_report", "shifted", "quote", "quote_plus"]
