#!/usr/bin/env python3
"""Where `bmxgc apply` and `bmxgc undo` spend their time: phases, then cProfile.

    python benchmarks/profile_apply.py                          # 100,000 objects, 90% referenced, 20 ms
    python benchmarks/profile_apply.py --objects 1000000        # 100,000 orphans in 1M
    python benchmarks/profile_apply.py --objects 1000000 --profile --list-concurrency 1 --delete-concurrency 1

Starts ``s3_endpoint.py`` with ``--objects`` objects, writes the database and
config as ``bench_scale.py`` does, runs ``bmxgc plan`` (not measured), then
``bmxgc apply --auto-approve`` and ``bmxgc undo --auto-approve`` in this
process (``bmxgc.cli.main``). For each it prints the wall and CPU (all
threads: ``time.process_time``) of the command and of its phases (the
command's own functions, timed by wrapping them), and the CPU that
``s3.parse_listing`` took on whichever thread it ran (the listing's parse,
which ``profile_plan.py`` covers). With ``--profile`` it also runs each under
cProfile (which sees only the main thread: ``--list-concurrency 1
--delete-concurrency 1`` puts every page and every delete there) and prints
own time by package and the top functions, as ``profile_plan.py`` does.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import functools
import gc
import importlib
import io
import os
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_scale import Endpoint, make_database, write_config  # noqa: E402
from profile_plan import group_of  # noqa: E402

# (module, attribute): the phases of apply and undo, timed where they are called.
PHASES = (
    ("bmxgc.commands.apply", "parse_plan_text"),
    ("bmxgc.commands.apply", "last_applied"),
    ("bmxgc.commands.apply", "check_not_applied"),
    ("bmxgc.commands.apply", "check_connection"),
    ("bmxgc.commands.apply", "_check_drift"),
    ("bmxgc.commands.apply", "read_references"),
    ("bmxgc.commands.apply", "group_by_key"),
    ("bmxgc.commands.apply", "find_drift"),
    ("bmxgc.commands.apply", "_delete_all"),
    ("bmxgc.commands.undo", "load_receipt"),
    ("bmxgc.commands.undo", "_decide"),
    ("bmxgc.commands.undo", "plan_undo"),
    ("bmxgc.commands.undo", "_remove_markers"),
    ("bmxgc.commands.undo", "_verify"),
    ("bmxgc.receipt:Journal", "intend"),
    ("bmxgc.receipt:Journal", "record"),
    ("bmxgc.receipt:Journal", "finish"),
    ("bmxgc.s3", "delete_batch"),
    ("bmxgc.commands.apply", "_outcome_entries"),
    ("bmxgc.commands.undo:_Record", "finish"),
)


class Clock:
    """Wall and whole-process CPU inside each wrapped function (outermost call only)."""

    def __init__(self) -> None:
        self.wall: collections.defaultdict[str, float] = collections.defaultdict(float)
        self.cpu: collections.defaultdict[str, float] = collections.defaultdict(float)
        self.depth: dict[str, int] = collections.Counter()
        self.parse_thread_cpu = 0.0
        self.parse_lock = threading.Lock()
        self.undo: list[Callable[[], None]] = []
        self.gc_seconds: collections.defaultdict[int, float] = collections.defaultdict(float)
        self.gc_count: collections.Counter[int] = collections.Counter()
        self._gc_start = 0.0
        self.active: list[str] = []  # the wrapped functions under way (on any thread), innermost last
        self.gc_in: collections.defaultdict[str, float] = collections.defaultdict(float)

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_count[info["generation"]] += 1
            self.gc_seconds[info["generation"]] += time.perf_counter() - self._gc_start
            if info["generation"] == 2:
                self.gc_in[self.active[-1] if self.active else "(no phase)"] += time.perf_counter() - self._gc_start

    def wrap(self, where: str, name: str) -> None:
        module, _, cls = where.partition(":")
        owner: Any = importlib.import_module(module)
        if cls:
            owner = getattr(owner, cls)
        original = getattr(owner, name)
        label = f"{cls or module.rsplit('.', 1)[-1]}.{name}"

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.depth[label] += 1
            self.active.append(label)
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.active.remove(label)
                self.depth[label] -= 1
                if not self.depth[label]:
                    self.wall[label] += time.perf_counter() - wall
                    self.cpu[label] += time.process_time() - cpu

        setattr(owner, name, timed)
        self.undo.append(lambda: setattr(owner, name, original))

    def wrap_parse(self) -> None:
        from bmxgc import s3

        original = s3.parse_listing

        def timed(body: bytes) -> Any:
            start = time.thread_time()
            try:
                return original(body)
            finally:
                with self.parse_lock:
                    self.parse_thread_cpu += time.thread_time() - start

        s3.parse_listing = timed
        self.undo.append(lambda: setattr(s3, "parse_listing", original))

    def restore(self) -> None:
        for undo in reversed(self.undo):
            undo()


def run(step: str, argv: list[str], profile: bool) -> tuple[int, float, float, Clock, cProfile.Profile | None]:
    from bmxgc.cli import main as bmxgc_main

    clock = Clock()
    for where, name in PHASES:
        clock.wrap(where, name)
    clock.wrap_parse()
    gc.callbacks.append(clock.on_gc)
    profiler = cProfile.Profile() if profile else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    try:
        code = bmxgc_main(argv)
    finally:
        if profiler:
            profiler.disable()
        clock.restore()
        gc.callbacks.remove(clock.on_gc)
    return code, time.perf_counter() - wall, time.process_time() - cpu, clock, profiler


def report(step: str, code: int, wall: float, cpu: float, clock: Clock, profiler: cProfile.Profile | None, top: int) -> None:
    print(f"\n=== bmxgc {step}: exit {code}; wall {wall:.2f} s, CPU {cpu:.2f} s (all threads)")
    print(f"  {'s3.parse_listing (thread CPU, any thread)':44} {'':>8} {clock.parse_thread_cpu:8.2f} s CPU")
    for label in clock.wall:
        print(f"  {label:44} {clock.wall[label]:8.2f} s wall {clock.cpu[label]:8.2f} s CPU")
    for generation in sorted(clock.gc_count):
        print(f"  garbage collector, generation {generation}: {clock.gc_count[generation]:6,} collections, {clock.gc_seconds[generation]:6.2f} s")
    for label, seconds in sorted(clock.gc_in.items(), key=lambda item: -item[1]):
        print(f"    full collections during {label}: {seconds:.2f} s")
    if profiler is None:
        return
    stats = pstats.Stats(profiler)
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in raw.values())
    groups: collections.Counter[str] = collections.Counter()
    for (filename, _, function), (_, _, tt, _, _) in raw.items():
        groups[group_of(filename, function)] += tt
    print("  own time by package (profiled seconds)")
    for name, tt in groups.most_common():
        print(f"    {name:34} {tt:7.2f} s  {tt / total:6.1%}")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:20000])
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:20000])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--variant", choices=("ref90", "orphans"), default="ref90")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--profile", action="store_true", help="cProfile each command too (main thread only)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--list-concurrency", type=int)
    parser.add_argument("--delete-concurrency", type=int)
    parser.add_argument("--steps", default="apply,undo")
    parser.add_argument("--save", type=Path, help="keep each profile as SAVE.STEP for python -m pstats")
    args = parser.parse_args(argv)
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    os.environ.pop("BMXGC_DATABASE_URL", None)
    endpoint = Endpoint(args.objects, 0, args.latency_ms, 0.0)
    code = 0
    try:
        with tempfile.TemporaryDirectory(prefix="bmxgc-profile-") as tmp:
            work = Path(tmp)
            config = work / "bmxgc.toml"
            make_database(work / "app.db", args.objects, args.variant)
            write_config(config, endpoint.url, work / "app.db", work / "plans", args.objects)
            extra = "".join(
                f"{name} = {value}\n"
                for name, value in (("list_concurrency", args.list_concurrency), ("delete_concurrency", args.delete_concurrency))
                if value is not None
            )
            config.write_text(config.read_text(encoding="utf-8").replace("[s3]\n", f"[s3]\n{extra}", 1), encoding="utf-8")
            from bmxgc.cli import main as bmxgc_main

            plan = work / "plans" / "plan.json"
            plan.parent.mkdir(exist_ok=True)
            started = time.perf_counter()
            if bmxgc_main(["-c", str(config), "plan", "--out", str(plan)]) != 0:
                return 1
            print(f"plan: {time.perf_counter() - started:.1f} s (not measured)")
            argvs = {
                "apply": ["-c", str(config), "apply", str(plan), "--auto-approve"],
                "undo": ["-c", str(config), "undo", "--auto-approve"],
            }
            for step in args.steps.split(","):
                result = run(step, argvs[step], args.profile)
                report(step, *result, top=args.top)
                if args.save and result[4] is not None:
                    result[4].dump_stats(f"{args.save}.{step}")
                code = code or result[0]
    finally:
        endpoint.stop()
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
