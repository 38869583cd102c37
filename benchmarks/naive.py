#!/usr/bin/env python3
"""The naive baseline bmxgc is measured against: the script people write first.

    python benchmarks/naive.py plan  --endpoint URL --database app.db --out orphans.json
    python benchmarks/naive.py apply --endpoint URL --plan orphans.json --receipt markers.json [--limit 2000]
    python benchmarks/naive.py undo  --endpoint URL --receipt markers.json
    python benchmarks/naive.py verify PLAN             # bmxgc's plan file: json.load, rehash
    python benchmarks/naive.py diff OLD_PLAN NEW_PLAN  # json.load both, keys compared in dicts

- plan: every reference row into a Python set (``books/`` + value), every
  current key under the prefix into another set (boto3's paginator over
  ListObjectVersions, delete markers and noncurrent versions skipped, objects
  younger than ``--min-age-hours`` kept), the difference sorted and written
  as a JSON list of keys.
- apply: one DeleteObject per key (a delete marker), each marker's version id
  kept and written at the end.
- undo: one DeleteObject per marker, by its version id.
- verify: a bmxgc plan file read whole with ``json.load`` and rehashed, as
  docs/plan-file.md shows (the five lines); diff: both read whole, orphans
  by key in two dicts, compared.

No gates, no lock, no drift check, no journal: what it does not do is why
bmxgc exists; this is only the floor of what the work costs. ``--limit``
stops apply after that many keys (a per-key delete at 20 ms a request costs
20 s per 1,000 keys); the benchmark extrapolates from the loop's own time,
which this script prints on stdout as JSON with the startup time apart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sqlite3
import sys
import time
from typing import Any

BUCKET = "bench"
PREFIX = "books/"


def client(endpoint: str) -> Any:
    """boto3's client with the retries bmxgc uses (standard mode, 8 attempts),
    so that SlowDown answers (``--slowdown``) cost both the same way."""
    import boto3
    from botocore.config import Config

    retries = Config(retries={"mode": "standard", "max_attempts": 8})
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=retries)


def plan(args: argparse.Namespace) -> dict[str, Any]:
    s3 = client(args.endpoint)
    db = sqlite3.connect(f"file:{args.database}?mode=ro", uri=True)
    referenced = {PREFIX + value for (value,) in db.execute("SELECT s3_key FROM book_images")}
    db.close()
    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=args.min_age_hours)
    live: set[str] = set()
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET, Prefix=PREFIX):
        for version in page.get("Versions", []):
            if version["IsLatest"] and version["LastModified"] < cutoff:
                live.add(version["Key"])
    orphans = sorted(live - referenced)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(orphans, f)
    return {"objects": len(live), "referenced": len(referenced), "orphans": len(orphans)}


def apply(args: argparse.Namespace) -> dict[str, Any]:
    s3 = client(args.endpoint)
    with open(args.plan, encoding="utf-8") as f:
        orphans: list[str] = json.load(f)
    todo = orphans if args.limit is None else orphans[: args.limit]
    markers: list[tuple[str, str]] = []
    wall, cpu = time.perf_counter(), time.process_time()
    for key in todo:
        answer = s3.delete_object(Bucket=BUCKET, Key=key)
        markers.append((key, answer["VersionId"]))
    loop = {"loop_wall": time.perf_counter() - wall, "loop_cpu": time.process_time() - cpu}
    with open(args.receipt, "w", encoding="utf-8") as f:
        json.dump(markers, f)
    return {"keys": len(markers), "of": len(orphans), **loop}


def undo(args: argparse.Namespace) -> dict[str, Any]:
    s3 = client(args.endpoint)
    with open(args.receipt, encoding="utf-8") as f:
        markers: list[tuple[str, str]] = json.load(f)
    wall, cpu = time.perf_counter(), time.process_time()
    for key, marker in markers:
        s3.delete_object(Bucket=BUCKET, Key=key, VersionId=marker)
    loop = {"loop_wall": time.perf_counter() - wall, "loop_cpu": time.process_time() - cpu}
    return {"keys": len(markers), **loop}


def _load_checked(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        doc: dict[str, Any] = json.load(handle)
    body = {k: v for k, v in doc.items() if k != "plan_hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if "sha256:" + hashlib.sha256(canonical).hexdigest() != doc["plan_hash"]:
        raise SystemExit(f"{path}: MISMATCH")
    return doc


def verify(args: argparse.Namespace) -> dict[str, Any]:
    return {"orphans": len(_load_checked(args.plan)["orphans"])}


def diff(args: argparse.Namespace) -> dict[str, Any]:
    old = {o["key"]: o for o in _load_checked(args.old)["orphans"]}
    new = {o["key"]: o for o in _load_checked(args.new)["orphans"]}
    changed = [k for k, o in new.items() if k in old and (old[k]["version_id"], old[k]["etag"]) != (o["version_id"], o["etag"])]
    return {"added": len(new.keys() - old.keys()), "removed": len(old.keys() - new.keys()), "changed": len(changed)}


def main(argv: list[str] | None = None) -> int:
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--database", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--min-age-hours", type=float, default=24)
    a = sub.add_parser("apply")
    a.add_argument("--endpoint", required=True)
    a.add_argument("--plan", required=True)
    a.add_argument("--receipt", required=True)
    a.add_argument("--limit", type=int)
    u = sub.add_parser("undo")
    u.add_argument("--endpoint", required=True)
    u.add_argument("--receipt", required=True)
    v = sub.add_parser("verify")
    v.add_argument("plan")
    d = sub.add_parser("diff")
    d.add_argument("old")
    d.add_argument("new")
    args = parser.parse_args(argv)
    result = {"plan": plan, "apply": apply, "undo": undo, "verify": verify, "diff": diff}[args.command](args)
    result["total_wall"] = time.perf_counter() - started_wall
    result["total_cpu"] = time.process_time() - started_cpu
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
