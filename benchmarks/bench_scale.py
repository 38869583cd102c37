#!/usr/bin/env python3
"""bmxgc against the naive script at 10k, 100k and 1M objects: requests, wall, CPU, peak RSS.

    python benchmarks/bench_scale.py                                   # 10,000 and 100,000; 1M plan only
    python benchmarks/bench_scale.py --sizes 10000,100000,1000000 --latency-ms 20
    python benchmarks/bench_scale.py --sizes 10000 --variants ref90 --latency-ms 5 --json out.json

For each size N it starts the local S3 endpoint (``s3_endpoint.py``, its own
process) with N generated objects under ``books/``, and for each variant
(``ref90``: 90% of the objects referenced, every tenth an orphan;
``orphans``: every object but one an orphan, one reference so that apply's
gates let it through) writes a SQLite database and a bmxgc config, then runs,
each in a child process measured on its own (``os.wait4``: wall seconds,
user+system CPU seconds, peak RSS of that process alone):

1. ``bmxgc plan``, then the naive plan (``naive.py plan``) on the same data;
   both must find the same orphans.
2. ``bmxgc apply --auto-approve`` (``max_orphan_ratio = 1.0`` and
   ``max_deletes = N`` in the config), checked on the endpoint: exactly the
   orphans have a delete marker as their latest version; then ``bmxgc undo
   --auto-approve``, checked: the prefix is back as it started.
3. The naive apply (one DeleteObject per key) and undo (one DeleteObject per
   marker), capped at ``--naive-delete-cap`` keys (default 2,000): their
   wall and CPU are extrapolated to all orphans from the per-key loop's own
   time (startup counted once), and their requests are the orphan count.
   The table marks such figures with ``~``. The bucket is checked back as it
   started afterwards.

Apply and undo run only for N <= ``--apply-up-to`` (default 100,000).
S3 requests are counted by the endpoint, by operation (every HTTP attempt,
retries included; SlowDown answers are counted apart). The table gives
bmxgc, naive and bmxgc/naive beside each other. ``--json PATH`` keeps every
figure. Exit 0 only if every check held.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import s3_endpoint  # noqa: E402 - after the sys.path insert
from s3_endpoint import BUCKET, PREFIX, book_key  # noqa: E402

VARIANTS = ("ref90", "orphans")
STEPS = ("plan", "verify", "show", "diff", "apply", "undo")


# --------------------------------------------------------------------------
# The endpoint
# --------------------------------------------------------------------------


class Endpoint:
    """s3_endpoint.py in its own process, and its control paths."""

    def __init__(self, objects: int, other: int, latency_ms: float, slowdown: float) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self.process = ctx.Process(
            target=s3_endpoint.serve_in_child, args=(child, objects, other, latency_ms, slowdown, 1), daemon=True
        )
        self.process.start()
        if not parent.poll(60):
            raise RuntimeError("the endpoint did not start within 60 s")
        self.url: str = parent.recv()

    def control(self, path: str, method: str = "GET") -> dict[str, Any]:
        request = urllib.request.Request(self.url + path, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=120) as answer:
            result: dict[str, Any] = json.loads(answer.read())
            return result

    def reset(self) -> None:
        self.control("/_bench/reset", "POST")

    def stats(self) -> dict[str, Any]:
        return self.control("/_bench/stats")

    def state(self) -> dict[str, Any]:
        return self.control(f"/_bench/state?prefix={PREFIX}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


# --------------------------------------------------------------------------
# Data: database and config
# --------------------------------------------------------------------------


def referenced(variant: str, i: int) -> bool:
    return i % 10 != 0 if variant == "ref90" else i == 1


def make_database(path: Path, objects: int, variant: str) -> int:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE book_images (id INTEGER PRIMARY KEY, s3_key TEXT)")
    rows = ((book_key(i).removeprefix(PREFIX),) for i in range(objects) if referenced(variant, i))
    db.executemany("INSERT INTO book_images (s3_key) VALUES (?)", rows)
    db.commit()
    count = int(db.execute("SELECT count(*) FROM book_images").fetchone()[0])
    db.close()
    return count


def write_config(path: Path, endpoint: str, database: Path, plans_dir: Path, max_deletes: int) -> None:
    path.write_text(
        f"""plans_dir = "{plans_dir}"

[s3]
bucket = "{BUCKET}"
prefix = "{PREFIX}"
endpoint_url = "{endpoint}"
region = "us-east-1"

[database]
url = "sqlite:///{database}"

[[references]]
name = "book_images"
query = "SELECT s3_key FROM book_images"
keys = ["{PREFIX}{{value}}"]

[safety]
max_orphan_ratio = 1.0
max_deletes = {max_deletes}
min_age = "24h"
""",
        encoding="utf-8",
    )


# --------------------------------------------------------------------------
# One measured child process
# --------------------------------------------------------------------------


@dataclass
class Run:
    """One command in a child process."""

    who: str  # bmxgc or naive
    step: str  # plan, apply, undo
    rc: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    rss_mib: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)
    slowdown: dict[str, int] = field(default_factory=dict)
    output: str = ""
    estimated: bool = False  # wall, CPU and requests extrapolated from a capped run
    measured_keys: int = 0  # naive apply/undo: keys actually deleted/restored
    load: float = 0.0  # the machine's 1-minute load average when it ended (other work competes for CPU)

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


class Launcher:
    """A small process that starts every measured child and waits for it.

    A child's peak RSS (``ru_maxrss``) starts at the RSS of the process it
    was forked from: forked from this harness, which holds the expected keys
    (and, at 1M, hundreds of MiB), a 45 MiB ``verify`` would read as the
    harness's size. Forked from this launcher (a bare interpreter, ~10 MiB,
    started first), each figure is the child's own."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], out: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "env": env, "out": out}) + "\n")
        self.process.stdin.flush()
        result: dict[str, Any] = json.loads(self.process.stdout.readline())
        return result

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(10)


LAUNCHER = """
import json, os, subprocess, sys, time
for line in sys.stdin:
    job = json.loads(line)
    with open(job["out"], "wb") as out:
        started = time.perf_counter()
        child = subprocess.Popen(job["argv"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 cwd=job["cwd"], env=job["env"])
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
                      "maxrss_kib": usage.ru_maxrss}), flush=True)
"""
LAUNCHERS: list[Launcher] = []


def run_child(who: str, step: str, argv: list[str], endpoint: Endpoint, cwd: Path) -> Run:
    """Run ``argv`` as a child (started by the launcher); its own wall, CPU (user+system) and peak RSS."""
    endpoint.reset()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "PYTHONHASHSEED": "0"}
    env.pop("BMXGC_DATABASE_URL", None)
    env.pop("BMXGC_CONFIG", None)
    if not LAUNCHERS:
        LAUNCHERS.append(Launcher())
    with tempfile.NamedTemporaryFile() as out:
        result = LAUNCHERS[0].run(argv, cwd, env, out.name)
        text = Path(out.name).read_bytes().decode("utf-8", "replace")
    stats = endpoint.stats()
    return Run(
        who=who,
        step=step,
        rc=result["rc"],
        wall=result["wall"],
        cpu=result["cpu"],
        rss_mib=result["maxrss_kib"] / 1024,  # KiB on Linux
        requests=dict(sorted(stats["requests"].items())),
        slowdown=dict(sorted(stats["slowdown"].items())),
        output=text,
        load=os.getloadavg()[0],
    )


def bmxgc(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "bmxgc", *args]


def naive(args: list[str]) -> list[str]:
    return [sys.executable, str(HERE / "naive.py"), *args]


def extrapolate(run: Run, orphans: int) -> None:
    """A capped naive apply/undo: scale the per-key loop to every orphan."""
    result = json.loads(run.output.strip().splitlines()[-1])
    keys = int(result["keys"])
    run.measured_keys = keys
    if keys == 0 or keys >= orphans:
        return
    factor = orphans / keys
    run.wall += result["loop_wall"] * (factor - 1)
    run.cpu += result["loop_cpu"] * (factor - 1)
    run.requests = {op: math.ceil(n * factor) if op == "DeleteObject" else n for op, n in run.requests.items()}
    run.estimated = True


# --------------------------------------------------------------------------
# One scenario: a size and a variant
# --------------------------------------------------------------------------


@dataclass
class Scenario:
    objects: int
    variant: str
    orphans: int = 0
    referenced_rows: int = 0
    runs: list[Run] = field(default_factory=list)
    checks: list[tuple[str, str | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def run(self, who: str, step: str) -> Run | None:
        return next((r for r in self.runs if r.who == who and r.step == step), None)

    @property
    def ok(self) -> bool:
        return all(problem is None for _, problem in self.checks)


def plan_orphan_keys(path: Path, expected_count: int) -> list[str] | None:
    """The plan's orphan keys (None when too many to read cheaply; the count is checked instead)."""
    if expected_count > 200_000:
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return [o["key"] for o in data["orphans"]]


def plan_stats(path: Path) -> dict[str, Any]:
    """The plan's ``stats`` without parsing the orphans: they come after it."""
    with path.open(encoding="utf-8") as f:
        head = f.read(1 << 16)
    start = head.index('"stats"')
    brace = head.index("{", start)
    depth = 0
    for n in range(brace, len(head)):
        depth += {"{": 1, "}": -1}.get(head[n], 0)
        if depth == 0:
            stats: dict[str, Any] = json.loads(head[brace : n + 1])
            return stats
    raise ValueError("no stats in the plan's first 64 KiB")


def second_plan(plan_path: Path, out: Path) -> int:
    """A later plan of the same prefix for ``diff``: one orphan in 100 gone, made a second later.
    Written by bmxgc's own code in this (unmeasured) process."""
    from datetime import timedelta

    from bmxgc.model import rfc3339
    from bmxgc.planfile import load_plan, plan_chunks, seal
    from bmxgc.store import LocalStore

    plan = load_plan(plan_path)
    kept = [o for n, o in enumerate(plan.orphans) if n % 100 != 50]
    later = seal(plan.model_copy(update={"orphans": kept, "created_at": rfc3339(plan.created + timedelta(seconds=1))}))
    LocalStore(out.parent).create(out.name, plan_chunks(later))
    return len(plan.orphans) - len(kept)


def plan_file_steps(sc: Scenario, plan_path: Path, workdir: Path, config: Path, endpoint: Endpoint,
                    say: Any, check: Any, measured: Any) -> None:
    """``bmxgc verify``, ``show`` and ``diff`` of the plan file, each against the naive
    reading (json.load and the rehash of docs/plan-file.md; diff: two dicts by key)."""
    later = workdir / "plan-later.json"
    made = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--second-plan", str(plan_path), str(later)],
        check=True, capture_output=True, text=True,
    )
    gone = int(made.stdout.strip())
    for who, step, cmd, expect in (
        ("bmxgc", "verify", bmxgc(["-c", str(config), "verify", str(plan_path)]), "OK: "),
        ("naive", "verify", naive(["verify", str(plan_path)]), '"orphans"'),
        ("bmxgc", "show", bmxgc(["-c", str(config), "show", str(plan_path)]), f"Plan: {sc.orphans:,} to delete."),
        ("naive", "show", naive(["verify", str(plan_path)]), '"orphans"'),
        ("bmxgc", "diff", bmxgc(["-c", str(config), "diff", str(plan_path), str(later)]),
         f"Diff: 0 added, {gone:,} removed, 0 changed."),
        ("naive", "diff", naive(["diff", str(plan_path), str(later)]), f'"removed": {gone}'),
    ):
        say(f"{who} {step}")
        r = measured(run_child(who, step, cmd, endpoint, workdir))
        check(f"{who} {step} exits 0 and says {expect!r}",
              None if r.rc == 0 and expect in r.output else f"exit {r.rc}: {r.output[-600:]}")


def scenario(
    endpoint: Endpoint, objects: int, variant: str, workdir: Path, args: argparse.Namespace
) -> Scenario:
    sc = Scenario(objects, variant)
    expected = [book_key(i) for i in range(objects) if not referenced(variant, i)]
    sc.orphans = len(expected)
    workdir.mkdir(parents=True)
    database = workdir / "app.db"
    sc.referenced_rows = make_database(database, objects, variant)
    config = workdir / "bmxgc.toml"
    write_config(config, endpoint.url, database, workdir / "plans", max(objects, 10_000))
    plan_path = workdir / "plan.json"
    start_state = endpoint.state()

    def say(text: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {objects:,} {variant}: {text}", file=sys.stderr, flush=True)

    def check(what: str, problem: str | None) -> None:
        sc.checks.append((what, problem))
        if problem:
            say(f"CHECK FAILED: {what}: {problem}")

    def measured(run: Run) -> Run:
        sc.runs.append(run)
        say(f"{run.who} {run.step}: rc {run.rc}, {run.wall:.1f} s wall, {run.cpu:.1f} s CPU, "
            f"{run.rss_mib:.0f} MiB, {run.total_requests:,} requests")
        return run

    # 1. plan, both ways
    say("bmxgc plan")
    p = measured(run_child("bmxgc", "plan", bmxgc(["-c", str(config), "plan", "--out", str(plan_path)]), endpoint, workdir))
    check("bmxgc plan exits 0", None if p.rc == 0 else f"exit {p.rc}: {p.output[-600:]}")
    if p.rc != 0:
        return sc
    stats = plan_stats(plan_path)
    keys = plan_orphan_keys(plan_path, sc.orphans)
    if keys is None:
        check(f"bmxgc plan: {sc.orphans:,} orphans", None if stats["orphans"] == sc.orphans else f"{stats['orphans']:,}")
    else:
        check(f"bmxgc plan: exactly the {sc.orphans:,} expected orphans", None if keys == expected else "orphans differ")
    say("naive plan")
    naive_plan = workdir / "naive-plan.json"
    n = measured(run_child("naive", "plan", naive(["plan", "--endpoint", endpoint.url, "--database", str(database), "--out", str(naive_plan)]), endpoint, workdir))
    check("naive plan exits 0", None if n.rc == 0 else f"exit {n.rc}: {n.output[-600:]}")
    if n.rc == 0:
        naive_keys = json.loads(naive_plan.read_text(encoding="utf-8"))
        check("naive plan finds the same orphans", None if naive_keys == expected else f"{len(naive_keys):,} keys, differ")
        del naive_keys
    del keys

    # 1b. the plan file: verify, show, and diff against a second plan
    plan_file_steps(sc, plan_path, workdir, config, endpoint, say, check, measured)

    if objects > args.apply_up_to:
        sc.notes.append(f"apply and undo not run above --apply-up-to {args.apply_up_to:,}")
        return sc

    # 2. bmxgc apply and undo
    say("bmxgc apply")
    a = measured(run_child("bmxgc", "apply", bmxgc(["-c", str(config), "apply", str(plan_path), "--auto-approve"]), endpoint, workdir))
    check("bmxgc apply exits 0", None if a.rc == 0 else f"exit {a.rc}: {a.output[-600:]}")
    state = endpoint.state()
    check(
        "after bmxgc apply: exactly the orphans have a delete marker as latest",
        None
        if state["keys_whose_latest_is_a_marker"] == sc.orphans == state["overlay_keys"] == state["delete_markers"]
        else f"{state}",
    )
    say("bmxgc undo")
    u = measured(run_child("bmxgc", "undo", bmxgc(["-c", str(config), "undo", "--auto-approve"]), endpoint, workdir))
    check("bmxgc undo exits 0", None if u.rc == 0 else f"exit {u.rc}: {u.output[-600:]}")
    state = endpoint.state()
    check("after bmxgc undo: the prefix is as it started", None if state == start_state else f"{state}")

    # 3. naive apply and undo, capped
    cap = min(args.naive_delete_cap, sc.orphans)
    if cap < sc.orphans:
        sc.notes.append(f"naive apply/undo measured on {cap:,} of {sc.orphans:,} keys and extrapolated (~)")
    receipt = workdir / "naive-receipt.json"
    say(f"naive apply ({cap:,} keys)")
    na = measured(run_child("naive", "apply", naive(["apply", "--endpoint", endpoint.url, "--plan", str(naive_plan), "--receipt", str(receipt), "--limit", str(cap)]), endpoint, workdir))
    check("naive apply exits 0", None if na.rc == 0 else f"exit {na.rc}: {na.output[-600:]}")
    state = endpoint.state()
    check(f"after naive apply: {cap:,} markers", None if state["keys_whose_latest_is_a_marker"] == cap else f"{state}")
    say("naive undo")
    nu = measured(run_child("naive", "undo", naive(["undo", "--endpoint", endpoint.url, "--receipt", str(receipt)]), endpoint, workdir))
    check("naive undo exits 0", None if nu.rc == 0 else f"exit {nu.rc}: {nu.output[-600:]}")
    state = endpoint.state()
    check("after naive undo: the prefix is as it started", None if state == start_state else f"{state}")
    if na.rc == 0:
        extrapolate(na, sc.orphans)
    if nu.rc == 0:
        extrapolate(nu, sc.orphans)
    return sc


# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    if not b:
        return "-"
    r = a / b
    if r >= 0.1 or r == 0:
        return f"{r:.2f}×"
    return f"{r:.{1 - math.floor(math.log10(r))}f}×"  # two significant digits, no exponent


def fmt_count(n: float) -> str:
    return f"{n:,.0f}"


def table(sc: Scenario) -> list[str]:
    steps = [s for s in STEPS if sc.run("bmxgc", s) or sc.run("naive", s)]
    ops = sorted({op for r in sc.runs for op in r.requests})
    head = "| measure |" + "".join(f" {s}: bmxgc | naive | ratio |" for s in steps)
    lines = [head, "|---|" + "---:|---:|---:|" * len(steps)]

    def row(name: str, value: Any, fmt: Any, scaled: bool = True) -> None:
        cells = []
        for s in steps:
            b, n = sc.run("bmxgc", s), sc.run("naive", s)
            bv = value(b) if b else None
            nv = value(n) if n else None
            mark = "~" if n is not None and n.estimated and scaled and nv else ""
            cells.append(
                f" {fmt(bv) if bv is not None else '-'} | {mark}{fmt(nv) if nv is not None else '-'} | "
                f"{ratio(bv, nv) if bv is not None and nv is not None else '-'} |"
            )
        lines.append(f"| {name} |" + "".join(cells))

    row("S3 requests", lambda r: r.total_requests, fmt_count)
    for op in ops:
        row(f"· {op}", lambda r, op=op: r.requests.get(op, 0), fmt_count, op == "DeleteObject")
    if any(r.slowdown for r in sc.runs):
        row("· (SlowDown answers)", lambda r: sum(r.slowdown.values()), fmt_count)
    row("wall, s", lambda r: r.wall, lambda v: f"{v:,.1f}")
    row("client CPU, s", lambda r: r.cpu, lambda v: f"{v:,.1f}")
    row("peak RSS, MiB", lambda r: r.rss_mib, lambda v: f"{v:,.0f}", scaled=False)
    return lines


def report(scenarios: list[Scenario], args: argparse.Namespace, machine: str) -> list[str]:
    out = [
        f"bmxgc vs naive, local S3 endpoint ({args.latency_ms:g} ms per request"
        + (f", SlowDown to {args.slowdown:.0%} of requests" if args.slowdown else "")
        + f"), {machine}",
        "",
    ]
    loads = [r.load for sc in scenarios for r in sc.runs]
    if loads and max(loads) > 0:  # runs saved before the load was recorded have 0
        out[-1:-1] = [
            f"load average (1 min) after each run: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs "
            "(wall time includes waiting for a CPU; client CPU does not)"
        ]
    for sc in scenarios:
        label = "90% referenced" if sc.variant == "ref90" else "every object but one an orphan"
        out.append(
            f"### {sc.objects:,} objects, {label}: {sc.orphans:,} orphans, {sc.referenced_rows:,} reference rows"
        )
        out.append("")
        out += table(sc)
        for note in sc.notes:
            out.append(f"\n{note}")
        failed = [f"{what}: {problem}" for what, problem in sc.checks if problem]
        out.append("")
        out.append(f"checks: {len(sc.checks) - len(failed)} of {len(sc.checks)} hold" + "".join(f"\n  FAILED {f}" for f in failed))
        out.append("")
    return out


def machine_line() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import boto3
    import botocore

    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}, "
        f"boto3 {boto3.__version__}, botocore {botocore.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="object counts, comma-separated")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="ref90, orphans (comma-separated)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="endpoint latency per request (default 20)")
    parser.add_argument("--slowdown", type=float, default=0.0, help="fraction of requests answered 503 SlowDown")
    parser.add_argument("--apply-up-to", type=int, default=100_000, help="run apply/undo only up to this size")
    parser.add_argument(
        "--naive-delete-cap", type=int, default=2_000, help="keys the naive apply/undo really delete (default 2000)"
    )
    parser.add_argument("--other", type=int, default=1_000, help="objects under listings/, outside the prefix")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (plans, receipts, databases)")
    parser.add_argument("--from-json", type=Path, metavar="PATH", help="print the table of a run saved with --json")
    parser.add_argument("--second-plan", nargs=2, type=Path, metavar=("PLAN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.second_plan:
        print(second_plan(*args.second_plan))
        return 0
    if args.from_json:
        return reprint(args.from_json)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    if set(variants) - set(VARIANTS):
        parser.error(f"unknown variant(s) {sorted(set(variants) - set(VARIANTS))}; known: {', '.join(VARIANTS)}")
    LAUNCHERS.append(Launcher())  # first, while this process is small
    machine = machine_line()
    started = time.perf_counter()
    scenarios: list[Scenario] = []
    workroot = Path(tempfile.mkdtemp(prefix="bmxgc-scale-"))
    try:
        for size in sizes:
            endpoint = Endpoint(size, args.other, args.latency_ms, args.slowdown)
            try:
                for variant in variants:
                    scenarios.append(scenario(endpoint, size, variant, workroot / f"{size}-{variant}", args))
                    if args.json:
                        dump(args.json, scenarios, args, machine)
            finally:
                endpoint.stop()
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(workroot)], check=False)
        else:
            print(f"work folder kept: {workroot}", file=sys.stderr)
    for launcher in LAUNCHERS:
        launcher.stop()
    print("\n".join(report(scenarios, args, machine)))
    print(f"total: {time.perf_counter() - started:,.0f} s")
    if args.json:
        dump(args.json, scenarios, args, machine)
    return 0 if all(sc.ok for sc in scenarios) else 1


def reprint(path: Path) -> int:
    data = json.loads(path.read_text(encoding="utf-8"))
    scenarios = []
    for raw in data["scenarios"]:
        runs = [Run(**r) for r in raw.pop("runs")]
        sc = Scenario(**raw, runs=runs)
        sc.checks = [tuple(c) for c in sc.checks]  # type: ignore[misc]
        scenarios.append(sc)
    print("\n".join(report(scenarios, argparse.Namespace(**data["args"]), data["machine"])))
    return 0 if all(sc.ok for sc in scenarios) else 1


def dump(path: Path, scenarios: list[Scenario], args: argparse.Namespace, machine: str) -> None:
    data = {
        "machine": machine,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "scenarios": [
            {**{k: v for k, v in asdict(sc).items() if k != "runs"},
             "runs": [{k: v for k, v in asdict(r).items() if k != "output"} for r in sc.runs]}
            for sc in scenarios
        ],
    }
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
