#!/usr/bin/env python3
"""Where `bmxgc plan`'s wall time goes, phase by phase (reading the references,
listing the prefix alone, the whole plan), against the generated endpoint.

    python benchmarks/phases_plan.py --objects 1000000

Each phase runs in this process, timed with wall and CPU clocks; the endpoint's
own CPU (its process) is read from its /_bench/stats before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_scale import Endpoint, make_database, write_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--variant", choices=("ref90", "orphans"), default="ref90")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    endpoint = Endpoint(args.objects, 0, args.latency_ms, 0.0)
    try:
        with tempfile.TemporaryDirectory(prefix="bmxgc-phases-") as tmp:
            work = Path(tmp)
            make_database(work / "app.db", args.objects, args.variant)
            write_config(work / "bmxgc.toml", endpoint.url, work / "app.db", work / "plans", args.objects)
            from bmxgc import s3
            from bmxgc.cli import main as bmxgc_main
            from bmxgc.config import load_config
            from bmxgc.references import read_references

            config = load_config(work / "bmxgc.toml")

            def timed(name: str, step: object) -> None:
                before = endpoint.stats().get("cpu_seconds", 0.0)
                wall, cpu = time.perf_counter(), time.process_time()
                result = step()  # type: ignore[operator]
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                server = endpoint.stats().get("cpu_seconds", 0.0) - before
                print(f"{name:<28} wall {wall:6.2f} s   CPU {cpu:6.2f} s   endpoint CPU {server:6.2f} s   {result}")

            timed("read references", lambda: len(read_references(
                config.database_url(), config.references, timeouts=config.database, prefix=config.s3.prefix).keys))
            client = s3.client_for(config.s3)
            timed("list (plan's order)", lambda: sum(1 for _ in s3.list_versions(
                client, config.s3.bucket, config.s3.prefix, concurrency=config.s3.list_concurrency, ordered=False)))
            timed("whole plan (CLI)", lambda: bmxgc_main(
                ["-c", str(work / "bmxgc.toml"), "plan", "--out", str(work / "plan.json")]))
    finally:
        endpoint.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
