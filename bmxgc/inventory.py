"""``plan --inventory``: the plan's objects from an S3 Inventory report, joined
with the references by the embedded engine (bmxgc/inventory_engine.py) running
bmxgc/inventory_sql.py.

The manifest is checked (checksum, bucket, fields, format, age), its data
files are downloaded into a temporary folder (removed afterwards) with their
MD5 checked, the references are streamed into the engine in batches, and the
join's unreferenced objects come back sorted by key: ``protect`` and the
near-miss check run over them here, and ``planner.assemble_plan`` makes the
same plan as a listing would. See docs/inventory.md.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bmxgc import inventory_sql as sql
from bmxgc import s3
from bmxgc.config import Config
from bmxgc.errors import InventoryError, InventoryRefused
from bmxgc.manifest import (
    CHECKSUM,
    EPOCH,
    MANIFEST,
    Manifest,
    check_age,
    is_manifest_url,
    newest_report_folders,
    parse_manifest,
)
from bmxgc.model import InventorySource, NearMiss, VersionEntry, rfc3339
from bmxgc.planner import (
    BEYOND_SAMPLE,
    ScanContext,
    Tally,
    _match_near_miss,
    assemble_plan,
    literal_misreadings,
    matches_protect,
    shown_reference,
)
from bmxgc.model import Plan
from bmxgc.references import stream_references

if TYPE_CHECKING:  # DuckDB is loaded only when a plan is made from an inventory (about 35 MiB)
    from bmxgc.inventory_engine import Engine

Progress = Callable[[int], None]
OrphanRow = tuple[str, str, str, int, int]


def find_manifest(client: s3.S3Client, url: str, bucket: str) -> Manifest:
    """The manifest ``url`` names (a manifest.json, or an inventory configuration's
    folder: its newest report with both manifest.json and manifest.checksum), checked."""
    where, key = s3.split_url(url)
    if is_manifest_url(url):
        return _read_manifest(client, where, key, bucket, required=True)  # type: ignore[return-value]
    folder = key if key.endswith("/") or not key else key + "/"
    reports = newest_report_folders(s3.list_folders(client, where, folder))
    for report in reports:
        names = set(s3.list_keys(client, where, report))
        if report + MANIFEST in names and report + CHECKSUM in names:
            found = _read_manifest(client, where, report + MANIFEST, bucket, required=False)
            if found is not None:
                return found
    raise InventoryError(
        f"inventory s3://{where}/{folder}: no complete report ({len(reports)} dated folder(s), none with both "
        f"{MANIFEST} and {CHECKSUM}); name the inventory configuration's folder "
        "(s3://DEST/PREFIX/SOURCE-BUCKET/CONFIG-ID/) or a manifest.json"
    )


def _read_manifest(client: s3.S3Client, where: str, key: str, bucket: str, *, required: bool) -> Manifest | None:
    url = f"s3://{where}/{key}"
    body = s3.get_object_bytes(client, where, key)
    if body is None:
        if not required:
            return None
        raise InventoryError(f"inventory {url}: no such object; check the URL (s3://BUCKET/PATH/manifest.json)")
    checksum_key = key[: -len(MANIFEST)] + CHECKSUM
    checksum = s3.get_object_bytes(client, where, checksum_key)
    if checksum is None:
        if not required:
            return None
        raise InventoryError(
            f"inventory {url}: no {CHECKSUM} beside it, so the report is not complete (S3 writes it last); "
            "wait for it, or name another report"
        )
    return parse_manifest(url, body[0], checksum[0].decode("utf-8", "replace"), bucket)


def download(client: s3.S3Client, manifest: Manifest, folder: Path) -> list[Path]:
    """Each data file into ``folder``, its MD5 (and size) checked against the manifest."""
    paths = []
    for index, data in enumerate(manifest.files):
        suffix = ".csv.gz" if manifest.file_format == "CSV" else ".parquet"
        path = folder / f"data-{index:05d}{suffix}"
        digest = hashlib.md5()
        size = 0
        with path.open("wb") as out:

            def sink(chunk: bytes) -> None:
                nonlocal size
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)

            found = s3.download_object(client, manifest.bucket, data.key, sink)
        url = f"s3://{manifest.bucket}/{data.key}"
        if not found:
            raise InventoryError(
                f"inventory {manifest.url}: its data file {url} does not exist; the report is incomplete: "
                "name another report"
            )
        if digest.hexdigest() != data.md5 or (data.size is not None and size != data.size):
            raise InventoryRefused(
                f"inventory {manifest.url}: data file {url} does not match the manifest (MD5 "
                f"{digest.hexdigest()}, {size:,} bytes; the manifest says {data.md5}"
                f"{f', {data.size:,} bytes' if data.size is not None else ''}); the report was altered or "
                "damaged: name another report"
            )
        paths.append(path)
    return paths


def plan_from_inventory(
    config: Config,
    manifest: Manifest,
    client: s3.S3Client,
    database_url: str,
    context: ScanContext,
    now: datetime,
    progress: Progress | None = None,
) -> Plan:
    """The plan of ``config``'s prefix from the (checked) ``manifest``'s report."""
    safety, settings = config.safety, config.inventory
    check_age(manifest, now, safety.max_plan_age_delta, safety.max_plan_age)
    prefix = context.prefix
    young_after = manifest.creation_ms - int(safety.min_age_delta / timedelta(milliseconds=1))
    parent = config.base_dir / settings.temp_directory if settings.temp_directory else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bmxgc-inventory-", dir=parent) as folder:
        work = Path(folder)
        files = download(client, manifest, work)
        from bmxgc.inventory_engine import Engine  # here: a listing plan never loads DuckDB

        with Engine(work, memory_limit=settings.memory_limit, threads=settings.threads) as engine:
            references = stream_references(
                database_url, config.references, engine.add_references, progress, timeouts=config.database
            )
            engine.load_inventory(manifest.file_format, files, manifest.columns, prefix)
            tally, rows, near_misses = _join(engine, config, context, young_after, manifest)
    # DuckDB's memory is given back before the orphans become records and the plan is written.
    orphans = [
        VersionEntry(
            key=key,
            version_id=version_id,
            is_latest=True,
            is_delete_marker=False,
            last_modified=EPOCH + timedelta(milliseconds=modified_ms),
            etag=etag,
            size=size,
        ).as_object()
        for key, version_id, etag, size, modified_ms in rows
    ]
    del rows
    inventory_context = ScanContext(
        bucket=context.bucket,
        prefix=context.prefix,
        bucket_versioning=context.bucket_versioning,
        database=context.database,
        undo_window_days=context.undo_window_days,
        previous=context.previous,
        inventory=InventorySource(
            manifest=manifest.url,
            created_at=rfc3339(manifest.created),
            creation_timestamp=manifest.creation_ms,
            checksum=manifest.checksum,
            file_format=manifest.file_format,
            files=len(manifest.files),
        ),
    )
    return assemble_plan(tally, orphans, near_misses, references, config.references, safety, inventory_context, now)


def _join(
    engine: Engine, config: Config, context: ScanContext, young_after: int, manifest: Manifest
) -> tuple[Tally, list[OrphanRow], list[NearMiss]]:
    """The join's figures, its orphans (in key order: key, version id, ETag, size,
    LastModified in ms) and the near misses."""
    safety, prefix = config.safety, context.prefix
    (versions,) = engine.one(sql.VERSIONS_UNDER_PREFIX, {"prefix": prefix})
    scanned, bytes_scanned, found = engine.one(sql.SCANNED, {})
    referenced_keys, under_prefix = engine.one(sql.REFERENCED, {"prefix": prefix})
    folder = prefix if prefix.endswith("/") else prefix + "/"
    beyond, beyond_sample = 0, []
    if not prefix.endswith("/"):
        (beyond,) = engine.one(sql.BEYOND_FOLDER_COUNT, {"folder": folder})
        beyond_sample = [k for (k,) in engine.rows(sql.BEYOND_FOLDER_SAMPLE, {"folder": folder, "limit": BEYOND_SAMPLE})]
    misread = sorted(literal_misreadings(safety.protect))
    misread_existing = [k for (k,) in engine.rows(sql.EXISTING_KEYS, {"keys": misread})] if misread else []
    skipped_protected = skipped_young = 0
    orphans: list[OrphanRow] = []  # tuples: a tenth of a record's memory while DuckDB holds its own
    previous = None
    for key, version_id, etag, size, modified_ms, young in engine.rows(sql.UNREFERENCED, {"young_after": young_after}):
        if key == previous:
            raise InventoryError(
                f"inventory {manifest.url}: the report lists {key!r} twice as a current object; "
                "it is damaged or merged from two reports: name another report"
            )
        previous = key
        if modified_ms is None or not etag:
            # S3 gives every object both: without its time min_age cannot be judged,
            # without its ETag apply's DeleteObjects would have no condition.
            missing = "a LastModifiedDate" if modified_ms is None else "an ETag"
            raise InventoryError(
                f"inventory {manifest.url}: the report lists {key!r} as a current object without {missing}; "
                "it is damaged: name another report"
            )
        if matches_protect(key, safety.protect):
            skipped_protected += 1
        elif young:
            skipped_young += 1
        else:
            orphans.append((key, version_id, etag, size, modified_ms))
    tally = Tally(
        versions=versions,
        scanned=scanned,
        bytes_scanned=int(bytes_scanned),
        found=found,
        skipped_young=skipped_young,
        skipped_protected=skipped_protected,
        referenced_keys=referenced_keys,
        referenced_under_prefix=under_prefix,
        beyond=beyond,
        beyond_sample=beyond_sample,
        misread_existing=misread_existing,
    )
    near_misses = _near_misses(engine, config, orphans, context) if orphans else []
    return tally, orphans, near_misses


def _near_misses(engine: Engine, config: Config, orphans: list[OrphanRow], context: ScanContext) -> list[NearMiss]:
    """As ``planner.find_near_misses``, over each source's unfound keys streamed from the engine in key order."""
    orphan_keys = {o[0] for o in orphans}
    orphans_by_lower: dict[str, str] = {}
    for key in sorted(orphan_keys):
        orphans_by_lower.setdefault(key.lower(), key)
    misses: list[NearMiss] = []
    for source in config.references:
        for (reference,) in engine.rows(sql.UNFOUND_OF_SOURCE, {"source": source.name}):
            match = _match_near_miss(
                reference, source.keys, orphan_keys, orphans_by_lower, context.bucket, context.prefix
            )
            if match is not None:
                misses.append(
                    NearMiss(key=match[0], reference=shown_reference(reference), shape=match[1], source=source.name)
                )
    return misses
