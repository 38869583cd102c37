#!/usr/bin/env python3
"""Check the bench endpoint against moto: same orphans, same requests, same listings.

    python benchmarks/check_endpoint.py                # 2,500 objects, about a minute
    python benchmarks/check_endpoint.py --objects 5000

It loads the same keys (``s3_endpoint.book_key``) into moto's S3 server and
into ``s3_endpoint.py`` (both in their own processes), runs bmxgc's plan,
apply and undo against each through botocore's real parser (the command
functions with a client counting every request by operation), and compares:

- the plan's orphan keys, and the requests by operation of plan, apply, undo;
- the listing of the prefix after apply and after undo, as (key, delete
  marker?, latest?) rows, read with a separate uncounted client, in pages of
  1,000 and in pages of 7 (which ends pages inside a key's versions, so
  ``KeyMarker``/``VersionIdMarker`` are exercised);
- then, against the endpoint only, a plan with SlowDown answered to 30% of
  requests: the same orphans, and the extra attempts are botocore's retries;
- and, in this process, ``check_pages.py --quick``: the endpoint's fast
  ListObjectVersions pages against its one-Version-at-a-time reference (the
  listing compared with moto above), byte for byte.

Exit 0 only if everything matches. Version ids, ETags and dates differ by
design and are not compared.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_plan import Measurement, measured  # noqa: E402
from s3_endpoint import BUCKET, PREFIX, book_key  # noqa: E402
from bench_scale import Endpoint, make_database  # noqa: E402
import check_pages  # noqa: E402

REGION = "us-east-1"


def serve_moto(conn: Any, objects: int) -> None:
    """Child process: moto's server with the endpoint's keys, until killed."""
    import logging

    import boto3
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server._server.server_port  # noqa: SLF001 - moto exposes no accessor
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    for i in range(objects):
        backend.put_object(BUCKET, book_key(i), b"webp" * (1 + i % 50))
    for j in range(20):
        backend.put_object(BUCKET, f"listings/{j:06d}/listing.json", b"{}")
    conn.send(endpoint)
    while True:
        time.sleep(3600)


def config(endpoint: str, database: Path, plans_dir: Path, objects: int) -> Any:
    from bmxgc.config import config_from_dict

    return config_from_dict(
        {
            "plans_dir": str(plans_dir),
            "s3": {"bucket": BUCKET, "prefix": PREFIX, "endpoint_url": endpoint, "region": REGION},
            "database": {"url": f"sqlite:///{database}"},
            "references": [{"name": "book_images", "query": "SELECT s3_key FROM book_images", "keys": [PREFIX + "{value}"]}],
            "safety": {"min_age": "0s", "max_orphan_ratio": 1.0, "max_deletes": max(objects, 10_000)},
        }
    )


def listing(endpoint: str, page_size: int) -> tuple[list[tuple[str, bool, bool]], int]:
    """Rows (key, is delete marker, is latest) under the prefix in S3's order, and the page count."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    rows: list[tuple[str, bool, bool]] = []
    pages = 0
    kwargs: dict[str, Any] = {"Bucket": BUCKET, "Prefix": PREFIX, "MaxKeys": page_size}
    while True:
        page = client.list_object_versions(**kwargs)
        pages += 1
        # The XML interleaves versions and markers in order; botocore splits them: merge back by key order,
        # latest first within a key.
        entries = [(v["Key"], False, v["IsLatest"]) for v in page.get("Versions", [])]
        entries += [(d["Key"], True, d["IsLatest"]) for d in page.get("DeleteMarkers", [])]
        rows += sorted(entries, key=lambda e: (e[0].encode(), not e[2]))
        if not page.get("IsTruncated"):
            return rows, pages
        kwargs["KeyMarker"] = page["NextKeyMarker"]
        kwargs["VersionIdMarker"] = page["NextVersionIdMarker"]


def round_trip(name: str, endpoint: str, database: Path, work: Path, objects: int) -> dict[str, Any]:
    from bmxgc import s3
    from bmxgc.commands.apply import apply
    from bmxgc.commands.plan import plan
    from bmxgc.commands.undo import undo

    cfg = config(endpoint, database, work / name, objects)
    client = s3.make_client(endpoint, REGION)
    out: dict[str, Any] = {}
    m = Measurement()
    with measured(client, m):
        planned = plan(cfg, client=client)
    out["orphans"] = [o.key for o in planned.plan.orphans]
    out["plan"] = dict(m.calls)
    m = Measurement()
    with measured(client, m):
        applied = apply(cfg, planned.path, auto_approve=True, client=client)
    out["apply"] = dict(m.calls)
    out["apply_status"] = applied.receipt.status
    out["after_apply"] = listing(endpoint, 1000)
    out["after_apply_small_pages"] = listing(endpoint, 7)
    m = Measurement()
    with measured(client, m):
        undone = undo(cfg, auto_approve=True, client=client)
    out["undo"] = dict(m.calls)
    out["restored"] = len(undone.restored)
    out["after_undo"] = listing(endpoint, 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2_500)
    args = parser.parse_args(argv)
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    os.environ.pop("BMXGC_DATABASE_URL", None)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    moto = ctx.Process(target=serve_moto, args=(child, args.objects), daemon=True)
    moto.start()
    ours = Endpoint(args.objects, 20, latency_ms=0, slowdown=0)
    problems: list[str] = []
    try:
        if not parent.poll(300):
            print("error: moto did not start", file=sys.stderr)
            return 1
        moto_url = parent.recv()
        with tempfile.TemporaryDirectory(prefix="bmxgc-check-") as tmp:
            work = Path(tmp)
            database = work / "app.db"
            make_database(database, args.objects, "ref90")
            before = {"moto": listing(moto_url, 1000), "endpoint": listing(ours.url, 1000)}
            results = {
                "moto": round_trip("moto", moto_url, database, work, args.objects),
                "endpoint": round_trip("endpoint", ours.url, database, work, args.objects),
            }
            a, b = results["moto"], results["endpoint"]
            lines = [("listing before", before["moto"][1], before["endpoint"][1], before["moto"] == before["endpoint"])]
            for item in ("orphans", "plan", "apply", "apply_status", "after_apply", "after_apply_small_pages", "undo", "restored", "after_undo"):
                same = a[item] == b[item]
                show = {
                    "orphans": lambda r: f"{len(r):,} keys",
                    "after_apply": lambda r: f"{len(r[0]):,} rows, {r[1]} pages",
                    "after_apply_small_pages": lambda r: f"{len(r[0]):,} rows, {r[1]} pages",
                    "after_undo": lambda r: f"{len(r[0]):,} rows, {r[1]} pages",
                }.get(item, lambda r: r)
                lines.append((item, show(a[item]), show(b[item]), same))
            lines.append(("after undo == before", "", "", a["after_undo"] == before["moto"] and b["after_undo"] == before["endpoint"]))
            print(f"bench endpoint vs moto, {args.objects:,} objects under {PREFIX}, 90% referenced, via bmxgc's commands\n")
            for item, x, y, same in lines:
                print(f"{'same' if same else 'DIFFERENT':9}  {item:24}  moto: {x}\n{'':9}  {'':24}  endpoint: {y}")
                if not same:
                    problems.append(item)

            # SlowDown: the same plan, through botocore's retries.
            ours.control("/_bench/config?slowdown=0.3", "POST")
            ours.reset()
            from bmxgc import s3
            from bmxgc.commands.plan import plan

            client = s3.make_client(ours.url, REGION)
            m = Measurement()
            with measured(client, m):
                slowed = plan(config(ours.url, database, work / "slow", args.objects), client=client)
            stats = ours.stats()
            same = [o.key for o in slowed.plan.orphans] == a["orphans"]
            print(
                f"\n{'same' if same else 'DIFFERENT':9}  plan with 30% SlowDown: {len(slowed.plan.orphans):,} orphans; "
                f"requests {dict(m.calls)}, HTTP attempts {m.attempts}; endpoint answered SlowDown to "
                f"{sum(stats['slowdown'].values())} of {sum(stats['requests'].values())}"
            )
            if not same or m.attempts <= sum(m.calls.values()):
                problems.append("slowdown")

            print("\nThe endpoint's fast pages against its reference (check_pages.py --quick):")
            if check_pages.main(["--quick"]) != 0:
                problems.append("pages")
    finally:
        ours.stop()
        moto.terminate()
        moto.join(10)
    print("\nok: the endpoint answers bmxgc as moto does" if not problems else f"\nFAILED: {', '.join(problems)}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
