#!/usr/bin/env python3
"""Where `bmxgc plan` spends its CPU: cProfile plus the cyclic garbage collector.

    python benchmarks/profile_plan.py                         # 100,000 objects, 90% referenced, 20 ms
    python benchmarks/profile_plan.py --objects 1000000 --variant orphans --top 40
    python benchmarks/profile_plan.py --list-concurrency 1    # every page parsed on the main thread

Starts ``s3_endpoint.py`` (its own process) with ``--objects`` objects,
writes the database and config as ``bench_scale.py`` does, and runs
``bmxgc -c CONFIG plan --out PLAN`` (``bmxgc.cli.main``, the CLI's entry point) in this process
under cProfile, with ``gc.callbacks`` timing every collection. Prints the
top functions by own time, own time grouped by package, and the collections
by generation with their time. ``--save PATH`` keeps the profile for
``python -m pstats``. cProfile sees only the main thread: with the default
``[s3] list_concurrency`` most pages are fetched and parsed on the listing's
own threads, so ``--list-concurrency 1`` is the way to see where a page's
CPU goes.
"""

from __future__ import annotations

import argparse
import cProfile
import collections
import gc
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_scale import Endpoint, make_database, write_config  # noqa: E402

GROUPS = (
    ("dateutil", "dateutil (LastModified parsing)"),
    ("botocore/parsers", "botocore XML parser"),
    ("xml/etree", "xml.etree"),
    ("botocore", "botocore, other"),
    ("urllib3", "urllib3"),
    ("http/client", "http.client"),
    ("socket", "socket"),
    ("pydantic", "pydantic"),
    ("sqlalchemy", "SQLAlchemy"),
    ("bmxgc", "bmxgc"),
    ("json", "json"),
)


BUILTINS = (
    ("xml.etree", "xml.etree (C parser)"),
    ("socket", "socket I/O"),
    ("select", "socket I/O"),
    ("sqlite3", "sqlite3"),
    ("marshal", "imports"),
    ("compile", "imports"),
    ("exec", "imports"),
    ("strptime", "time/datetime"),
    ("datetime", "time/datetime"),
    ("_hashlib", "hashing"),
    ("sha256", "hashing"),
)


def group_of(filename: str, function: str) -> str:
    if filename == "~":
        for needle, name in BUILTINS:
            if needle in function:
                return name
        return "other built-ins (C)"
    for needle, name in GROUPS:
        if needle in filename:
            return name
    if "importlib" in filename:
        return "imports"
    return "other"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--variant", choices=("ref90", "orphans"), default="ref90")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--save", type=Path)
    parser.add_argument(
        "--list-concurrency",
        type=int,
        help="[s3] list_concurrency (cProfile sees only the main thread: 1 profiles every page)",
    )
    args = parser.parse_args(argv)
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    os.environ.pop("BMXGC_DATABASE_URL", None)
    endpoint = Endpoint(args.objects, 0, args.latency_ms, 0.0)
    try:
        with tempfile.TemporaryDirectory(prefix="bmxgc-profile-") as tmp:
            work = Path(tmp)
            make_database(work / "app.db", args.objects, args.variant)
            write_config(work / "bmxgc.toml", endpoint.url, work / "app.db", work / "plans", args.objects)
            if args.list_concurrency is not None:
                config = (work / "bmxgc.toml").read_text(encoding="utf-8")
                config = config.replace("[s3]\n", f"[s3]\nlist_concurrency = {args.list_concurrency}\n", 1)
                (work / "bmxgc.toml").write_text(config, encoding="utf-8")
            from bmxgc.cli import main as bmxgc_main

            collections_by_gen: collections.Counter[int] = collections.Counter()
            gc_seconds: collections.Counter[int] = collections.Counter()
            started: dict[str, float] = {}

            def on_gc(phase: str, info: dict[str, int]) -> None:
                if phase == "start":
                    started["t"] = time.perf_counter()
                else:
                    collections_by_gen[info["generation"]] += 1
                    gc_seconds[info["generation"]] += time.perf_counter() - started.pop("t", time.perf_counter())

            profile = cProfile.Profile()
            argv_plan = ["-c", str(work / "bmxgc.toml"), "plan", "--out", str(work / "plan.json")]
            gc.callbacks.append(on_gc)
            wall, cpu = time.perf_counter(), time.process_time()
            profile.enable()
            try:
                code = bmxgc_main(argv_plan)
            finally:
                profile.disable()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            gc.callbacks.remove(on_gc)
    finally:
        endpoint.stop()
    print(f"bmxgc plan, {args.objects:,} objects ({args.variant}), {args.latency_ms:g} ms per request, under cProfile")
    print(f"exit {code}; wall {wall:.1f} s, CPU {cpu:.1f} s (cProfile adds its own overhead)\n")
    stats = pstats.Stats(profile)
    if args.save:
        stats.dump_stats(str(args.save))
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in raw.values())
    groups: collections.Counter[str] = collections.Counter()
    for (filename, _, function), (_, _, tt, _, _) in raw.items():
        groups[group_of(filename, function)] += tt
    print("own time by package (profiled seconds; GC time is charged to whatever function triggered it)")
    for name, tt in groups.most_common():
        print(f"  {name:34} {tt:7.2f} s  {tt / total:6.1%}")
    print(f"  {'total':34} {total:7.2f} s\n")
    print("cyclic garbage collector (gc.callbacks)")
    for gen in sorted(collections_by_gen):
        print(f"  generation {gen}: {collections_by_gen[gen]:6,} collections, {gc_seconds[gen]:6.2f} s")
    print()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.top)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:20000])
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
