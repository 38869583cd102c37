#!/usr/bin/env python3
"""How many S3 requests, how much CPU time and memory `bmxgc plan` takes.

A script, not a test: it prints a table and exits 0 when the plan holds exactly
the expected orphans.

    python benchmarks/bench_plan.py                 # 10,000 objects
    python benchmarks/bench_plan.py --objects 20000 --other 2000

What it does:

1. Starts moto's ``ThreadedMotoServer`` on a free loopback port in a child
   process, creates a versioned bucket and loads ``--objects`` objects under
   ``books/`` plus ``--other`` under ``listings/`` through the server's
   in-process backend (seconds, not minutes; a thread pool of PUTs over HTTP
   is the fallback if moto's internals move).
2. Writes a SQLite database whose one table references ~80% of the ``books/``
   objects, stored WITHOUT the ``books/`` prefix (as in the incident), and a
   config mapping them back with ``keys = ["books/{value}"]``.
3. Calls ``bmxgc.commands.plan.plan(config, client=client)`` once, counting
   S3 requests by operation (``before-call.s3``) and HTTP attempts
   (``before-send.s3``), CPU time (``time.process_time``), wall time, and the
   growth of the peak RSS (``resource.getrusage``). Then, unless
   ``--no-tracemalloc``, a second identical call under ``tracemalloc`` for the
   peak of Python allocations (tracing slows Python down several-fold, so it
   does not share a run with the timing).

The server runs in its own process so that its CPU time and memory (moto
copies every version of the bucket for every ListObjectVersions page: O(N^2))
are not counted as bmxgc's. The server process resets moto's model-instance
registry before each ListObjectVersions page; otherwise it keeps every
returned object for its dashboard and grows without bound.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import resource
import socket
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

BUCKET = "bmxgc-bench"
PREFIX = "books/"
OTHER_PREFIX = "listings/"
REGION = "us-east-1"


def book_key(i: int) -> str:
    """The i-th object under the prefix: books/<book>/image_<nn>.webp, 3 per book."""
    return f"{PREFIX}{i // 3}/image_{i % 3:02d}.webp"


def is_referenced(i: int) -> bool:
    """Four objects in five are referenced by the database (80%)."""
    return i % 5 != 0


# --------------------------------------------------------------------------
# The S3 server, in a child process
# --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reset_models_before_each_listing() -> bool:
    """Wrap moto's ListObjectVersions so the dashboard registry is emptied first."""
    try:
        from moto.core.model_instances import reset_model_data
        from moto.s3.models import S3Backend
    except ImportError:
        return False
    original = S3Backend.list_object_versions

    def list_object_versions(self: Any, *args: Any, **kwargs: Any) -> Any:
        reset_model_data()
        return original(self, *args, **kwargs)

    S3Backend.list_object_versions = list_object_versions  # type: ignore[method-assign]
    return True


def _load_in_process(objects: int, other: int) -> bool:
    """PUT through the backend the server serves from; False if unreachable."""
    try:
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
        backend.get_bucket(BUCKET)
    except Exception:  # noqa: BLE001 - moto's internals are not an API
        return False
    for i in range(objects):
        backend.put_object(BUCKET, book_key(i), b"webp" * (1 + i % 50))
    for i in range(other):
        backend.put_object(BUCKET, f"{OTHER_PREFIX}{i}/listing.json", b"{}")
    return True


def _bucket_versions() -> dict[str, list[tuple[str, str | None]]] | None:
    """Every key's versions, oldest first, as (version id, ETag; None for a
    delete marker), read from the backend the server serves from. None if
    moto's internals are out of reach. Costs no request and no listing."""
    try:
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.s3.models import FakeDeleteMarker, s3_backends

        bucket = s3_backends[DEFAULT_ACCOUNT_ID]["global"].get_bucket(BUCKET)
        return {
            key: [
                (v.version_id, None if isinstance(v, FakeDeleteMarker) else v.etag.strip('"'))
                for v in versions
            ]
            for key, versions in bucket.keys.iterlists()
        }
    except Exception:  # noqa: BLE001 - moto's internals are not an API
        return None


def _load_over_http(client: Any, objects: int, other: int) -> None:
    keys = [(book_key(i), b"webp" * (1 + i % 50)) for i in range(objects)]
    keys += [(f"{OTHER_PREFIX}{i}/listing.json", b"{}") for i in range(other)]

    def put(item: tuple[str, bytes]) -> None:
        client.put_object(Bucket=BUCKET, Key=item[0], Body=item[1])

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, keys))


def serve(conn: Connection, objects: int, other: int, http_load: bool = False) -> None:
    """Child process: run the server, load the bucket, report, then answer
    requests until 'stop': 'cpu' (this process's CPU seconds so far) and
    'versions' (see _bucket_versions)."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        how = "in-process backend"
        if http_load or not _load_in_process(objects, other):
            how = "HTTP PUTs (thread pool)"
            _load_over_http(client, objects, other)
        resetting = _reset_models_before_each_listing()
        conn.send(
            {
                "endpoint": endpoint,
                "load_seconds": time.perf_counter() - started,
                "load_method": how,
                "resetting": resetting,
            }
        )
        cpu_before = time.process_time()
        while (request := conn.recv()) != "stop":
            if request == "cpu":
                conn.send(time.process_time())
            elif request == "versions":
                conn.send(_bucket_versions())
            else:
                conn.send(None)
        conn.send({"server_cpu_seconds": time.process_time() - cpu_before})
    finally:
        server.stop()


# --------------------------------------------------------------------------
# The database and the config
# --------------------------------------------------------------------------


def make_database(path: Path, objects: int, referenced: Callable[[int], bool] = is_referenced) -> int:
    """A SQLite file whose book_images rows reference the objects ``referenced(i)``."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE book_images (id INTEGER PRIMARY KEY, s3_key TEXT)")
    rows = [(book_key(i).removeprefix(PREFIX),) for i in range(objects) if referenced(i)]
    db.executemany("INSERT INTO book_images (s3_key) VALUES (?)", rows)
    db.commit()
    db.close()
    return len(rows)


def make_config(endpoint: str, database: Path, plans_dir: Path, safety: dict[str, Any] | None = None) -> Any:
    """The config: ``min_age = "0s"`` plus any other ``safety`` settings given."""
    from bmxgc.config import config_from_dict

    return config_from_dict(
        {
            "plans_dir": str(plans_dir),
            "s3": {"bucket": BUCKET, "prefix": PREFIX, "endpoint_url": endpoint, "region": REGION},
            "database": {"url": f"sqlite:///{database}"},
            "references": [
                {
                    "name": "book_images",
                    "query": "SELECT s3_key FROM book_images",
                    "keys": [PREFIX + "{value}"],
                }
            ],
            "safety": {"min_age": "0s", **(safety or {})},
        }
    )


# --------------------------------------------------------------------------
# One measured plan
# --------------------------------------------------------------------------


@dataclass
class Measurement:
    plan: Any = None
    path: str | Path | None = None  # PlanResult.path: a local path or an s3:// URL
    wall: float = 0.0
    cpu: float = 0.0
    maxrss_growth_kib: int = 0
    traced_peak: int | None = None
    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    attempts: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    list_seconds: list[float] = field(default_factory=list)
    op_seconds: dict[str, float] = field(default_factory=dict)  # seconds inside requests, by operation


def _maxrss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


@contextmanager
def measured(client: Any, m: Measurement, *, traced: bool = False) -> Iterator[dict[str, float]]:
    """Measure the body of the ``with`` into ``m``: S3 requests by operation,
    HTTP attempts, seconds spent per operation, wall and CPU time, peak RSS
    growth and (``traced``) the tracemalloc peak. Yields the time marks:
    ``start``, ``first_s3_call`` and ``last_list_page``, when they happened."""
    marks: dict[str, float] = {}
    sent: dict[str, float] = {}

    def before_call(model: Any, **_: Any) -> None:
        m.calls[model.name] += 1
        now = time.perf_counter()
        marks.setdefault("first_s3_call", now)
        sent[model.name] = now

    def before_send(**_: Any) -> None:
        m.attempts += 1

    def after_call(model: Any, **_: Any) -> None:
        now = time.perf_counter()
        elapsed = now - sent.pop(model.name, now)
        m.op_seconds[model.name] = m.op_seconds.get(model.name, 0.0) + elapsed
        if model.name == "ListObjectVersions":
            m.list_seconds.append(elapsed)
            marks["last_list_page"] = now

    handlers: list[tuple[str, Callable[..., None]]] = [
        ("before-call.s3", before_call),
        ("before-send.s3", before_send),
        ("after-call.s3", after_call),
    ]
    for event, handler in handlers:
        client.meta.events.register(event, handler)
    try:
        if traced:
            tracemalloc.start()
            tracemalloc.reset_peak()
        rss_before = _maxrss_kib()
        cpu_before = time.process_time()
        marks["start"] = start = time.perf_counter()
        yield marks
        m.wall = time.perf_counter() - start
        m.cpu = time.process_time() - cpu_before
        m.maxrss_growth_kib = _maxrss_kib() - rss_before
        if traced:
            m.traced_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    finally:
        for event, handler in handlers:
            client.meta.events.unregister(event, handler)


def measure_plan(config: Any, client: Any, *, traced: bool) -> Measurement:
    from bmxgc.commands.plan import plan

    m = Measurement()
    with measured(client, m, traced=traced) as marks:
        result = plan(config, client=client)
    m.plan, m.path = result.plan, result.path
    start = marks["start"]
    first = marks.get("first_s3_call", start)
    last = marks.get("last_list_page", first)
    end = start + m.wall
    m.phases = {
        "read references (SQLite)": first - start,
        "S3: versioning, lifecycle, list + classify": last - first,
        "sort, hash, write plan file": end - last,
    }
    return m


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def mib(size_bytes: float) -> str:
    return f"{size_bytes / 1024 / 1024:,.1f} MiB"


def report(
    args: argparse.Namespace,
    setup: dict[str, Any],
    referenced_rows: int,
    run: Measurement,
    traced: Measurement | None,
    server_cpu: float,
) -> list[str]:
    stats = run.plan.stats
    lists = run.calls.get("ListObjectVersions", 0)
    per_thousand = lists / (stats.versions_listed / 1000) if stats.versions_listed else 0.0
    rows: list[tuple[str, str]] = [
        ("objects under books/ (scanned)", f"{stats.objects_scanned:,}"),
        ("objects under listings/ (not scanned)", f"{args.other:,}"),
        ("versions listed", f"{stats.versions_listed:,}"),
        ("reference rows (SQLite)", f"{referenced_rows:,}"),
        ("orphans found", f"{stats.orphans:,} (ratio {stats.orphan_ratio:.2%})"),
        ("", ""),
        ("S3 requests, total", f"{sum(run.calls.values()):,}"),
    ]
    rows += [(f"  {name}", f"{count:,}") for name, count in sorted(run.calls.items())]
    rows += [
        ("HTTP attempts (incl. retries)", f"{run.attempts:,}"),
        ("list requests per 1,000 versions", f"{per_thousand:.2f}"),
        ("", ""),
        ("wall time", f"{run.wall:.2f} s"),
    ]
    rows += [(f"  {phase}", f"{seconds:.2f} s") for phase, seconds in run.phases.items()]
    if run.list_seconds:
        rows.append(
            (
                "  ListObjectVersions page, mean (max)",
                f"{sum(run.list_seconds) / len(run.list_seconds):.2f} s "
                f"({max(run.list_seconds):.2f} s)",
            )
        )
    rows += [
        ("CPU time, bmxgc's process", f"{run.cpu:.2f} s"),
        ("CPU time, moto server process", f"{server_cpu:.2f} s (both runs; not bmxgc's)"),
        ("peak RSS growth during plan", f"{mib(run.maxrss_growth_kib * 1024)}"),
    ]
    if traced is not None and traced.traced_peak is not None:
        rows.append(("peak Python allocations (tracemalloc)", mib(traced.traced_peak)))
        rows.append(("  wall time of the traced run", f"{traced.wall:.2f} s"))
    if run.path is not None and Path(run.path).is_file():
        rows.append(("plan file size", f"{Path(run.path).stat().st_size / 1024:,.0f} KiB"))
    width = max(len(k) for k, _ in rows)
    lines = [
        f"bmxgc plan benchmark: {args.objects:,} objects under {PREFIX}, "
        f"{args.other:,} under {OTHER_PREFIX}",
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
        f"bucket loaded in {setup['load_seconds']:.1f} s via {setup['load_method']}; "
        f"moto model reset per page: {'yes' if setup['resetting'] else 'NO'}",
        "",
        f"{'measure':<{width}}  value",
        f"{'-' * width}  {'-' * 30}",
    ]
    lines += [f"{k:<{width}}  {v}" if k else "" for k, v in rows]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000, help="objects under books/ (default 10000)")
    parser.add_argument(
        "--other", type=int, default=1_000, help="objects under listings/, outside the prefix (default 1000)"
    )
    parser.add_argument("--no-tracemalloc", action="store_true", help="skip the second, traced run")
    parser.add_argument(
        "--http-load", action="store_true", help="load the bucket with PUTs over HTTP (slow; ~200/s)"
    )
    args = parser.parse_args(argv)

    # Dummy credentials for the loopback server only.
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    os.environ.pop("BMXGC_DATABASE_URL", None)
    from bmxgc import s3

    ctx = mp.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    server = ctx.Process(target=serve, args=(child_end, args.objects, args.other, args.http_load), daemon=True)
    server.start()
    try:
        if not parent_end.poll(600):
            print("error: the moto server did not come up within 600 s", file=sys.stderr)
            return 1
        setup = parent_end.recv()
        with tempfile.TemporaryDirectory(prefix="bmxgc-bench-") as tmp:
            workdir = Path(tmp)
            database = workdir / "app.db"
            referenced_rows = make_database(database, args.objects)
            client = s3.make_client(setup["endpoint"], REGION)
            run = measure_plan(make_config(setup["endpoint"], database, workdir / "plans-1"), client, traced=False)
            traced = None
            if not args.no_tracemalloc:
                traced = measure_plan(
                    make_config(setup["endpoint"], database, workdir / "plans-2"), client, traced=True
                )
            parent_end.send("stop")
            server_cpu = parent_end.recv()["server_cpu_seconds"] if parent_end.poll(60) else float("nan")
            print("\n".join(report(args, setup, referenced_rows, run, traced, server_cpu)))
            expected = {book_key(i) for i in range(args.objects) if not is_referenced(i)}
            got = {o.key for o in run.plan.orphans}
            outside = [k for k in got if not k.startswith(PREFIX)]
            ok = got == expected and not outside
            if traced is not None:
                ok = ok and {o.key for o in traced.plan.orphans} == expected
            print()
            print(
                "check: the plan holds exactly the expected orphans"
                if ok
                else f"check FAILED: {len(got ^ expected):,} keys differ from the expected orphans"
            )
            return 0 if ok else 1
    finally:
        if server.is_alive():
            server.terminate()
        server.join(10)


if __name__ == "__main__":
    sys.exit(main())
