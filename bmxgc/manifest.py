"""An S3 Inventory report's manifest.json: read, checked, and which one to use. Pure.

S3 Inventory writes, under ``<destination prefix>/<source bucket>/<config id>/``,
one folder per report (``2026-11-30T01-00Z/``) holding ``manifest.json``
and ``manifest.checksum`` (the MD5 of manifest.json, in hex), and the data
files it lists under ``data/``. See docs/inventory.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bmxgc.errors import InventoryError, InventoryRefused
from bmxgc.validation import describe_validation_error

MANIFEST = "manifest.json"
CHECKSUM = "manifest.checksum"
# The fields a plan needs, as S3 names them in a CSV report's fileSchema.
REQUIRED_FIELDS = ("Key", "VersionId", "IsLatest", "IsDeleteMarker", "Size", "LastModifiedDate", "ETag")
# The same fields as Parquet and ORC reports name their columns.
COLUMN_NAMES = {
    "Bucket": "bucket",
    "Key": "key",
    "VersionId": "version_id",
    "IsLatest": "is_latest",
    "IsDeleteMarker": "is_delete_marker",
    "Size": "size",
    "LastModifiedDate": "last_modified_date",
    "ETag": "e_tag",
}
FORMATS = ("CSV", "Parquet")
REPORT_FOLDER = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}-[0-9]{2}Z/$")
_PARQUET_FIELD = re.compile(r"\b(?:required|optional|repeated)\s+\w+\s+(\w+)")
_ORC_FIELD = re.compile(r"[<,]\s*(\w+)\s*:")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class _DataFile(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    key: str = Field(min_length=1)
    size: int | None = Field(default=None, ge=0)
    md5: str = Field(alias="MD5checksum", pattern=r"^[0-9a-fA-F]{32}$")


class _ManifestDoc(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sourceBucket: str = Field(min_length=1)
    destinationBucket: str = ""
    creationTimestamp: str = Field(pattern=r"^[0-9]{1,15}$")
    fileFormat: str
    fileSchema: str
    files: list[_DataFile]


@dataclass(frozen=True)
class DataFile:
    key: str
    size: int | None
    md5: str


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: where it is, what it says, and its own MD5."""

    url: str  # s3://bucket/.../manifest.json
    bucket: str  # where its data files are (the manifest's own bucket)
    source_bucket: str
    creation_ms: int
    file_format: str  # "CSV" or "Parquet"
    columns: tuple[str, ...]  # fileSchema's field names, in order (CSV: the columns of the file)
    files: tuple[DataFile, ...]
    checksum: str  # MD5 hex of manifest.json

    @property
    def created(self) -> datetime:
        return EPOCH + timedelta(milliseconds=self.creation_ms)


def schema_fields(file_format: str, schema: str) -> list[str]:
    """fileSchema's field names: CSV ``"Bucket, Key, ..."``; Parquet
    ``"message s3.inventory { required binary bucket (UTF8); ...}"``; ORC
    ``"struct<bucket:string,key:string,...>"``."""
    if file_format == "CSV":
        return [name.strip() for name in schema.split(",") if name.strip()]
    if file_format == "Parquet":
        return _PARQUET_FIELD.findall(schema)
    return _ORC_FIELD.findall(schema)


def check_checksum(url: str, body: bytes, checksum_text: str) -> str:
    """The manifest's MD5, refused unless manifest.checksum says the same."""
    actual = hashlib.md5(body).hexdigest()
    claimed = checksum_text.strip().lower()
    if claimed != actual:
        raise InventoryRefused(
            f"inventory {url}: manifest.json does not match its manifest.checksum (it says "
            f"{claimed[:32]!r}, the manifest's MD5 is {actual}); the report is incomplete or was altered: "
            "use another report"
        )
    return actual


def parse_manifest(url: str, body: bytes, checksum_text: str, bucket: str) -> Manifest:
    """``manifest.json``'s bytes, checked against its checksum, its format, its
    fields and the config's ``bucket``; one-line errors naming the problem."""
    checksum = check_checksum(url, body, checksum_text)
    try:
        doc = _ManifestDoc.model_validate(json.loads(body.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InventoryError(f"inventory {url}: not a manifest.json: not JSON ({exc})") from None
    except ValidationError as exc:
        raise InventoryError(
            f"inventory {url}: not an S3 Inventory manifest: {describe_validation_error(exc)}"
        ) from None
    if doc.sourceBucket != bucket:
        raise InventoryRefused(
            f"inventory {url} is a report of bucket {doc.sourceBucket!r}, not of s3.bucket {bucket!r}: "
            "name the inventory of the configured bucket"
        )
    file_format = next((f for f in (*FORMATS, "ORC") if f.lower() == doc.fileFormat.lower()), doc.fileFormat)
    if file_format == "ORC":
        raise InventoryError(
            f"inventory {url}: ORC reports are not read by bmxgc (its engine, DuckDB, has no ORC reader); "
            "set the inventory configuration's format to Parquet (or CSV) and plan from its next report"
        )
    if file_format not in FORMATS:
        raise InventoryError(
            f"inventory {url}: unknown fileFormat {doc.fileFormat!r}; bmxgc reads CSV and Parquet reports"
        )
    columns = schema_fields(file_format, doc.fileSchema)
    present = set(columns) if file_format == "CSV" else {n for n, c in COLUMN_NAMES.items() if c in columns}
    missing = [name for name in REQUIRED_FIELDS if name not in present]
    if missing:
        raise InventoryError(
            f"inventory {url}: the report lacks the field(s) {', '.join(missing)}; configure the inventory "
            "with IncludedObjectVersions = All and the optional fields Size, LastModifiedDate and ETag, "
            "then plan from its next report"
        )
    if not doc.files:
        raise InventoryError(f"inventory {url}: the manifest lists no data files")
    return Manifest(
        url=url,
        bucket=url.removeprefix("s3://").partition("/")[0],
        source_bucket=doc.sourceBucket,
        creation_ms=int(doc.creationTimestamp),
        file_format=file_format,
        columns=tuple(columns),
        files=tuple(DataFile(key=f.key, size=f.size, md5=f.md5.lower()) for f in doc.files),
        checksum=checksum,
    )


def check_age(manifest: Manifest, now: datetime, max_age: timedelta, max_age_text: str) -> None:
    """A report older than ``safety.max_plan_age`` is refused, and one from the future."""
    age = now - manifest.created
    if age > max_age:
        raise InventoryRefused(
            f"inventory {manifest.url} was made at {_when(manifest.created)}, {_hours(age)} ago, "
            f"older than safety.max_plan_age = {max_age_text}: plan from a newer report"
        )
    if age < -timedelta(minutes=5):
        raise InventoryRefused(
            f"inventory {manifest.url} says it was made at {_when(manifest.created)}, in the future: "
            "check the report and this machine's clock"
        )


def _when(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _hours(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours:.1f}h" if hours < 48 else f"{hours / 24:.1f}d"


def newest_report_folders(folders: list[str]) -> list[str]:
    """The dated report folders of an inventory configuration's folder, newest first."""
    return sorted((f for f in folders if REPORT_FOLDER.match(f.rsplit("/", 2)[-2] + "/")), reverse=True)


def is_manifest_url(url: str) -> bool:
    return url.endswith("/" + MANIFEST)
