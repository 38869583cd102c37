#!/usr/bin/env python3
"""``bmxgc plan --inventory`` at 1M and 10M objects: wall, CPU, peak RSS, next to the listing plan.

    python benchmarks/bench_inventory.py --sizes 1000000 --compare-listing-up-to 1000000
    python benchmarks/bench_inventory.py --sizes 10000000 --json benchmarks/results/DATE-inventory-10m.json

For each size N it starts the local S3 endpoint (``s3_endpoint.py``, its own
process, ``--latency-ms`` per request) with N generated objects under
``books/``, writes an S3 Inventory report of exactly those objects (the same
keys, version ids, ETags, sizes and times the endpoint lists) as Parquet
files of up to 1,000,000 rows with S3's column names (pyarrow, from the
test extra), uploads them with a ``manifest.json`` and ``manifest.checksum``
to the endpoint, and writes a SQLite table referencing 9 objects in 10
(``ref90`` of bench_scale.py: every tenth object is an orphan, N*0.9
reference rows). Then, each in a child process measured alone
(``os.wait4``: wall, user+system CPU, peak RSS of that process):

1. ``bmxgc plan --inventory MANIFEST`` ([inventory] memory_limit from
   ``--memory-limit``, default 1GiB); checked: exactly the expected
   orphans (every tenth object, in key order).
2. For N <= ``--compare-listing-up-to``: ``bmxgc plan`` by listing the same
   prefix; checked: its ``orphans`` section is byte for byte the inventory
   plan's.

The report (generation and upload) is not measured. Exit 0 only if every
check held.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_scale import Endpoint, Run, bmxgc, machine_line, make_database, run_child, write_config  # noqa: E402
from s3_endpoint import (  # noqa: E402
    BASE_EPOCH,
    BUCKET,
    PREFIX,
    base_etag,
    base_size,
    base_version_id,
    book_key,
)

ROWS_PER_FILE = 1_000_000
REPORT = "inventory/bench/all-versions/"


def write_parquet(path: Path, start: int, stop: int) -> None:
    """Objects ``start..stop`` of the endpoint's model as an S3 Inventory Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    idx = range(start, stop)
    table = pa.table(
        {
            "bucket": pa.array([BUCKET] * len(idx)),
            "key": pa.array([book_key(i) for i in idx]),
            "version_id": pa.array([base_version_id(i) for i in idx]),
            "is_latest": pa.array([True] * len(idx)),
            "is_delete_marker": pa.array([False] * len(idx)),
            "size": pa.array([base_size(i) for i in idx], pa.int64()),
            "last_modified_date": pa.array(
                [(BASE_EPOCH + (i * 31) % 31_000_000) * 1000 for i in idx], pa.timestamp("ms", tz="UTC")
            ),
            "e_tag": pa.array([base_etag(i) for i in idx]),
        }
    )
    pq.write_table(table, path, compression="snappy")


def upload_report(endpoint: str, objects: int, folder: Path) -> tuple[str, int]:
    """The report's files on the endpoint; the manifest's URL and the report's bytes."""
    import boto3

    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="bench", aws_secret_access_key="bench",
    )
    files, total = [], 0
    for n, start in enumerate(range(0, objects, ROWS_PER_FILE)):
        path = folder / f"part-{n:04d}.parquet"
        write_parquet(path, start, min(objects, start + ROWS_PER_FILE))
        body = path.read_bytes()
        key = f"{REPORT}data/{path.name}"
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
        files.append({"key": key, "size": len(body), "MD5checksum": hashlib.md5(body).hexdigest()})
        total += len(body)
        path.unlink()
    created = time.time()
    stamp = time.strftime("%Y-%m-%dT%H-%MZ", time.gmtime(created))
    manifest = json.dumps(
        {
            "sourceBucket": BUCKET,
            "destinationBucket": f"arn:aws:s3:::{BUCKET}",
            "version": "2016-11-30",
            "creationTimestamp": str(int(created * 1000)),
            "fileFormat": "Parquet",
            "fileSchema": (
                "message s3.inventory { required binary bucket (STRING); required binary key (STRING); "
                "optional binary version_id (STRING); optional boolean is_latest; optional boolean "
                "is_delete_marker; optional int64 size; optional int64 last_modified_date "
                "(TIMESTAMP(MILLIS,true)); optional binary e_tag (STRING);}"
            ),
            "files": files,
        }
    ).encode()
    client.put_object(Bucket=BUCKET, Key=f"{REPORT}{stamp}/manifest.json", Body=manifest)
    client.put_object(Bucket=BUCKET, Key=f"{REPORT}{stamp}/manifest.checksum", Body=hashlib.md5(manifest).hexdigest().encode())
    return f"s3://{BUCKET}/{REPORT}{stamp}/manifest.json", total


def orphans_section(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return text[text.index('\n  "orphans": [') :]


def check_orphans(path: Path, objects: int) -> str | None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    keys = [o["key"] for o in doc["orphans"]]
    expected = [book_key(i) for i in range(0, objects, 10)]
    if keys != expected:
        return f"{len(keys):,} orphans, expected {len(expected):,} (every tenth object, in key order)"
    return None


def one_size(objects: int, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"objects": objects, "ok": True, "problems": []}
    endpoint = Endpoint(objects, 1000, args.latency_ms, 0.0)
    try:
        with tempfile.TemporaryDirectory(prefix="bmxgc-bench-inventory-") as tmp:
            folder = Path(tmp)
            started = time.perf_counter()
            references = make_database(folder / "app.db", objects, "ref90")
            url, report_bytes = upload_report(endpoint.url, objects, folder)
            result.update(references=references, report_bytes=report_bytes, setup_s=round(time.perf_counter() - started, 1))
            print(f"{objects:,} objects: {references:,} references, report {report_bytes / 2**20:,.0f} MiB, "
                  f"set up in {result['setup_s']} s", flush=True)
            config = folder / "bmxgc.toml"
            write_config(config, endpoint.url, folder / "app.db", folder / "plans", objects)
            with config.open("a", encoding="utf-8") as f:
                f.write(f'\n[inventory]\nmemory_limit = "{args.memory_limit}"\n')
            runs: list[Run] = []
            inventory_plan = folder / "inventory-plan.json"
            run = run_child("bmxgc", "plan --inventory", bmxgc(["-c", str(config), "plan", "--inventory", url, "--out", str(inventory_plan)]), endpoint, folder)
            runs.append(run)
            problem = f"exit {run.rc}: {run.output[-500:]}" if run.rc != 0 else check_orphans(inventory_plan, objects)
            if problem:
                result["problems"].append(f"plan --inventory: {problem}")
            if objects <= args.compare_listing_up_to and run.rc == 0:
                listed_plan = folder / "listed-plan.json"
                listed = run_child("bmxgc", "plan (listing)", bmxgc(["-c", str(config), "plan", "--out", str(listed_plan)]), endpoint, folder)
                runs.append(listed)
                if listed.rc != 0:
                    result["problems"].append(f"plan: exit {listed.rc}: {listed.output[-500:]}")
                elif orphans_section(listed_plan) != orphans_section(inventory_plan):
                    result["problems"].append("the orphans sections of the listing and inventory plans differ")
                else:
                    result["orphans_identical_to_listing"] = True
            for r in runs:
                r.output = r.output[-2000:]
                print(f"  {r.step:<18} wall {r.wall:7.1f} s  cpu {r.cpu:7.1f} s  peak RSS {r.rss_mib:7.0f} MiB  "
                      f"requests {r.total_requests:,}  load {r.load:.1f}", flush=True)
            result["runs"] = [asdict(r) for r in runs]
    finally:
        endpoint.stop()
    result["ok"] = not result["problems"]
    for problem in result["problems"]:
        print(f"  PROBLEM: {problem}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000", help="comma-separated object counts (default 1000000)")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--memory-limit", default="1GiB", help="[inventory] memory_limit (default 1GiB)")
    parser.add_argument("--compare-listing-up-to", type=int, default=1_000_000, help="also plan by listing up to this N")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    machine = machine_line()
    print(machine, flush=True)
    results = [one_size(int(n), args) for n in args.sizes.split(",")]
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1)
            + "\n",
            encoding="utf-8",
        )
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
