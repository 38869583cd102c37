#!/usr/bin/env python3
"""How many S3 requests and seconds `bmxgc apply` and `bmxgc undo` take for 10,000 orphans.

A script, not a test: it prints a table and the checks, and exits 0 only if
every check holds.

    python benchmarks/bench_apply.py                      # 12,000 objects, 10,000 orphans
    python benchmarks/bench_apply.py --objects 6000       # 5,000 orphans, quicker

What it does, reusing bench_plan.py's server, database and measuring:

1. Starts moto's ``ThreadedMotoServer`` in a child process and loads
   ``--objects`` objects under ``books/`` and ``--other`` under ``listings/``
   through its in-process backend (``bench_plan.serve``).
2. Writes a SQLite database that references one object in
   ``--referenced-every`` (default 6: 2,000 of 12,000), so the other 10,000
   are orphans, an orphan ratio of 83%. That is above the default
   ``max_orphan_ratio`` of 0.5, so apply gets ``max_orphan_ratio=0.9``
   (``--max-orphan-ratio``), as an operator would pass on the command line;
   the receipt records it as an override.
3. Runs ``plan``, ``apply`` (``auto_approve=True``) and ``undo``
   (``auto_approve=True``) from ``bmxgc.commands``, each measured on its own:
   S3 requests by operation, HTTP attempts, seconds inside requests, wall and
   CPU time, and the moto server's CPU time.
4. Checks the bucket itself, read from moto's backend in the server process
   (no request, no listing; over HTTP with a separate, uncounted client if
   moto's internals move): after apply exactly the orphans have a delete
   marker as their latest version, the one the receipt names, over the
   version they had; after undo every key has exactly the versions it had at
   the start (key -> [(VersionId, ETag)]). And the request budgets: at most
   one DeleteObjects per 1,000 keys, at most one ListObjectVersions per
   1,000 versions under the prefix for each listing (apply lists once, undo
   twice: before its deletes, and after them to check its work), plus the
   lock's listings of its folder.

moto's ListObjectVersions copies every version in the bucket for every page
(O(N^2), see FACTS.md). Undo lists the prefix with the markers in it
(22,000 versions at the default size), which takes moto minutes, not S3's
tens of milliseconds per page: the wall time is mostly moto's.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_plan import (  # noqa: E402 - after the sys.path insert
    BUCKET,
    OTHER_PREFIX,
    PREFIX,
    REGION,
    Measurement,
    _maxrss_kib,
    book_key,
    make_config,
    make_database,
    measured,
    mib,
    serve,
)

# key -> its versions, latest first: (VersionId, ETag), ETag None for a delete marker.
Snapshot = dict[str, tuple[tuple[str, str | None], ...]]


# --------------------------------------------------------------------------
# Talking to the server process
# --------------------------------------------------------------------------


class Server:
    """The child process running moto, and the requests it answers on its pipe."""

    def __init__(self, conn: Connection, endpoint: str) -> None:
        self.conn = conn
        self.endpoint = endpoint
        self.snapshot_method = ""

    def ask(self, request: str, timeout: float = 600) -> Any:
        self.conn.send(request)
        if not self.conn.poll(timeout):
            raise RuntimeError(f"the moto server did not answer {request!r} within {timeout:.0f} s")
        return self.conn.recv()

    def cpu(self) -> float:
        return float(self.ask("cpu"))

    def snapshot(self) -> Snapshot:
        """Every key's versions in the bucket, latest first."""
        raw = self.ask("versions")
        if raw is not None:
            self.snapshot_method = "moto's backend (no request)"
            return {
                key: tuple(reversed([(vid, etag) for vid, etag in versions]))
                for key, versions in raw.items()
                if versions
            }
        self.snapshot_method = "ListObjectVersions over HTTP (separate, uncounted client)"
        return _snapshot_over_http(self.endpoint)


def _snapshot_over_http(endpoint: str) -> Snapshot:
    from bmxgc import s3

    client = s3.make_client(endpoint, REGION)
    rows: dict[str, list[tuple[bool, Any, str, str | None]]] = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket=BUCKET):
        for v in page.get("Versions", []):
            entry = (bool(v["IsLatest"]), v["LastModified"], v["VersionId"], v["ETag"].strip('"'))
            rows.setdefault(v["Key"], []).append(entry)
        for d in page.get("DeleteMarkers", []):
            marker = (bool(d["IsLatest"]), d["LastModified"], d["VersionId"], None)
            rows.setdefault(d["Key"], []).append(marker)

    def latest_first(entry: tuple[bool, Any, str, str | None]) -> tuple[bool, float]:
        return (not entry[0], -entry[1].timestamp())

    return {
        key: tuple((vid, etag) for _l, _m, vid, etag in sorted(entries, key=latest_first))
        for key, entries in rows.items()
    }


# --------------------------------------------------------------------------
# One measured command
# --------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    m: Measurement
    result: Any
    server_cpu: float
    rss_kib: int
    versions: int = 0  # versions under the prefix when the command ran
    keys: int = 0  # keys it deleted (apply) or restored (undo)


def run_phase(name: str, server: Server, client: Any, command: Callable[[], Any]) -> Phase:
    cpu_before = server.cpu()
    m = Measurement()
    with measured(client, m):
        result = command()
    return Phase(name, m, result, server.cpu() - cpu_before, _maxrss_kib())


# --------------------------------------------------------------------------
# Checks of the bucket
# --------------------------------------------------------------------------


def without_lock_folder(snapshot: Snapshot) -> Snapshot:
    from bmxgc.config import LOCK_FOLDER

    return {k: v for k, v in snapshot.items() if not k.startswith(LOCK_FOLDER)}


def versions_under(snapshot: Snapshot, prefix: str) -> int:
    return sum(len(v) for k, v in snapshot.items() if k.startswith(prefix))


def check_start(before: Snapshot, expected_keys: int) -> str | None:
    if len(before) != expected_keys:
        return f"{len(before):,} keys in the bucket, expected {expected_keys:,}"
    odd = [k for k, v in before.items() if len(v) != 1 or v[0][1] is None]
    return f"{len(odd):,} keys do not have exactly one version, e.g. {odd[0]}" if odd else None


def check_after_apply(
    before: Snapshot, after: Snapshot, orphans: set[str], markers: dict[str, str]
) -> str | None:
    """Exactly the orphans gained one delete marker (the receipt's), latest,
    over the version they had; every other key is as it was."""
    problems: list[str] = []
    if set(after) != set(before):
        problems.append(f"keys appeared or vanished: {sorted(set(after) ^ set(before))[:3]}")
    for key, old in before.items():
        new = after.get(key)
        if key in orphans:
            expected = ((markers.get(key, "<no marker in the receipt>"), None), *old)
            if new != expected:
                problems.append(f"orphan {key}: {new} (expected {expected})")
        elif new != old:
            problems.append(f"kept key {key} changed: {old} -> {new}")
    if problems:
        return f"{len(problems):,} differences, first: {problems[0]}"
    return None


def check_same(before: Snapshot, after: Snapshot) -> str | None:
    differ = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if differ:
        k = differ[0]
        return f"{len(differ):,} keys differ, first {k}: {before.get(k)} -> {after.get(k)}"
    return None


def lock_released(snapshot: Snapshot) -> str | None:
    from bmxgc.lock import lock_key

    key = lock_key(PREFIX)
    history = snapshot.get(key, ())
    if history and history[0][1] is not None:
        return f"{key} still has a current version (the lock is held)"
    return None


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def per(count: int, unit: int, of: int) -> str:
    return f"{count / (of / unit):.2f}" if of else "-"


def table(phases: list[Phase]) -> list[str]:
    operations = sorted({op for p in phases for op in p.m.calls})
    rows: list[tuple[str, list[str]]] = [
        ("versions under books/ when run", [f"{p.versions:,}" for p in phases]),
        ("keys deleted / restored", [f"{p.keys:,}" if p.name != "plan" else "-" for p in phases]),
        ("", []),
        ("S3 requests, total", [f"{sum(p.m.calls.values()):,}" for p in phases]),
    ]
    rows += [(f"  {op}", [f"{p.m.calls.get(op, 0):,}" for p in phases]) for op in operations]
    rows += [
        ("HTTP attempts (incl. retries)", [f"{p.m.attempts:,}" for p in phases]),
        (
            "ListObjectVersions per 1,000 versions",
            [per(p.m.calls.get("ListObjectVersions", 0), 1000, p.versions) for p in phases],
        ),
        (
            "DeleteObjects per 10,000 keys",
            [
                per(p.m.calls.get("DeleteObjects", 0), 10_000, p.keys) if p.name != "plan" else "-"
                for p in phases
            ],
        ),
        ("", []),
        ("wall time", [f"{p.m.wall:.2f} s" for p in phases]),
        ("  inside S3 requests (moto)", [f"{sum(p.m.op_seconds.values()):.2f} s" for p in phases]),
    ]
    rows += [
        (f"    {op}", [f"{p.m.op_seconds.get(op, 0.0):.2f} s" if p.m.calls.get(op) else "-" for p in phases])
        for op in ("ListObjectVersions", "DeleteObjects")
    ]
    rows += [
        ("  bmxgc, between requests", [f"{p.m.wall - sum(p.m.op_seconds.values()):.2f} s" for p in phases]),
        ("CPU time, bmxgc's process", [f"{p.m.cpu:.2f} s" for p in phases]),
        ("CPU time, moto server process", [f"{p.server_cpu:.2f} s" for p in phases]),
        ("peak RSS of bmxgc's process, so far", [mib(p.rss_kib * 1024) for p in phases]),
    ]
    width = max(len(k) for k, _ in rows)
    cols = [max(12, *(len(v[i]) for _, v in rows if v)) for i in range(len(phases))]
    head = f"{'measure':<{width}}" + "".join(f"  {p.name:>{c}}" for p, c in zip(phases, cols))
    lines = [head, "-" * width + "".join("  " + "-" * c for c in cols)]
    for k, values in rows:
        lines.append(f"{k:<{width}}" + "".join(f"  {v:>{c}}" for v, c in zip(values, cols)) if k else "")
    return lines


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


@dataclass
class Run:
    """What one plan -> apply -> undo round trip measured and left behind."""

    planned: Phase
    applied: Phase
    undone: Phase
    before: Snapshot
    after_apply: Snapshot
    after_undo: Snapshot
    seconds: float

    @property
    def markers(self) -> dict[str, str]:
        return {e.key: e.delete_marker_version_id for e in self.applied.result.receipt.deleted}


def round_trip(config: Any, server: Server, client: Any, max_orphan_ratio: float) -> Run:
    from bmxgc.commands.apply import apply
    from bmxgc.commands.plan import plan
    from bmxgc.commands.undo import undo

    started = time.perf_counter()
    before = server.snapshot()
    planned = run_phase("plan", server, client, lambda: plan(config, client=client))
    planned.versions = planned.result.plan.stats.versions_listed

    def apply_plan() -> Any:
        path = planned.result.path
        return apply(config, path, auto_approve=True, max_orphan_ratio=max_orphan_ratio, client=client)

    applied = run_phase("apply", server, client, apply_plan)
    applied.versions = versions_under(before, PREFIX)
    applied.keys = len(applied.result.receipt.deleted)
    after_apply = server.snapshot()

    undone = run_phase("undo", server, client, lambda: undo(config, auto_approve=True, client=client))
    undone.versions = versions_under(after_apply, PREFIX)
    undone.keys = len(undone.result.restored)
    after_undo = server.snapshot()
    return Run(planned, applied, undone, before, after_apply, after_undo, time.perf_counter() - started)


def checks(run: Run, expected_orphans: set[str], keys_in_bucket: int) -> list[tuple[str, str | None]]:
    """(what is checked, None or what went wrong)."""
    receipt = run.applied.result.receipt
    markers = run.markers
    undone = run.undone.result
    found: list[tuple[str, str | None]] = [
        ("the bucket starts with one version per key", check_start(run.before, keys_in_bucket)),
        (
            f"the plan holds exactly the {len(expected_orphans):,} expected orphans",
            None
            if {o.key for o in run.planned.result.plan.orphans} == expected_orphans
            else "the plan's orphans differ from the expected ones",
        ),
        (
            "apply: receipt complete, every orphan deleted, no errors",
            None
            if receipt.status == "complete"
            and set(markers) == expected_orphans
            and not receipt.errors
            and not receipt.pending
            else f"status {receipt.status}, {len(markers):,} deleted, {len(receipt.errors):,} errors",
        ),
        (
            "after apply: exactly the orphans have the receipt's delete marker as latest",
            check_after_apply(
                without_lock_folder(run.before), without_lock_folder(run.after_apply), expected_orphans, markers
            ),
        ),
        (
            "undo: every deleted key restored, none skipped, no errors",
            None
            if run.undone.keys == len(expected_orphans)
            and not undone.skipped
            and not undone.errors
            and not undone.already_restored
            else f"{run.undone.keys:,} restored, {len(undone.skipped):,} skipped, {len(undone.errors):,} "
            f"errors, {len(undone.already_restored):,} already restored",
        ),
        (
            "after undo: every key has its original versions (VersionId, ETag)",
            check_same(without_lock_folder(run.before), without_lock_folder(run.after_undo)),
        ),
        (
            "the lock is released after apply and after undo",
            lock_released(run.after_apply) or lock_released(run.after_undo),
        ),
    ]
    for p in (run.applied, run.undone):
        deletes = p.m.calls.get("DeleteObjects", 0)
        lists = p.m.calls.get("ListObjectVersions", 0)
        most_deletes, most_lists = math.ceil(p.keys / 1000), math.ceil(p.versions / 1000)
        if p is run.undone:
            # undo checks its own work: a second listing, without the markers it removed
            most_lists += math.ceil((p.versions - p.keys) / 1000)
        most_lists += LOCK_LISTS
        found.append(
            (
                f"{p.name}: DeleteObjects {deletes} <= one per 1,000 keys ({most_deletes})",
                None if deletes <= most_deletes else "too many delete requests",
            )
        )
        found.append(
            (
                f"{p.name}: ListObjectVersions {lists} <= one per 1,000 versions a listing, and the lock's ({most_lists})",
                None if lists <= most_lists else "too many list requests",
            )
        )
    return found


# The lock is taken and checked with ListObjectVersions of its folder (one or two a command).
LOCK_LISTS = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--objects", type=int, default=12_000, help="objects under books/ (default 12000: 10,000 orphans)"
    )
    parser.add_argument(
        "--referenced-every",
        type=int,
        default=6,
        metavar="K",
        help="the database references object i when i %% K == 0 (default 6: one in six)",
    )
    parser.add_argument(
        "--other", type=int, default=1_000, help="objects under listings/, outside the prefix (default 1000)"
    )
    parser.add_argument(
        "--max-orphan-ratio", type=float, default=0.9, help="passed to apply, as the CLI flag (default 0.9)"
    )
    parser.add_argument(
        "--http-load", action="store_true", help="load the bucket with PUTs over HTTP (slow; ~200/s)"
    )
    args = parser.parse_args(argv)
    every = int(args.referenced_every)
    if every < 1 or args.objects < 1:
        parser.error("--objects and --referenced-every must be at least 1")

    def referenced(i: int) -> bool:
        return i % every == 0

    expected_orphans = {book_key(i) for i in range(args.objects) if not referenced(i)}
    # The default max_deletes (10,000) refuses more orphans than that.
    safety = {"max_deletes": len(expected_orphans)} if len(expected_orphans) > 10_000 else {}

    # Dummy credentials for the loopback server only.
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    os.environ.pop("BMXGC_DATABASE_URL", None)
    from bmxgc import s3

    ctx = mp.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    process = ctx.Process(target=serve, args=(child_end, args.objects, args.other, args.http_load), daemon=True)
    process.start()
    try:
        if not parent_end.poll(600):
            print("error: the moto server did not come up within 600 s", file=sys.stderr)
            return 1
        setup = parent_end.recv()
        server = Server(parent_end, setup["endpoint"])
        with tempfile.TemporaryDirectory(prefix="bmxgc-bench-apply-") as tmp:
            workdir = Path(tmp)
            database = workdir / "app.db"
            referenced_rows = make_database(database, args.objects, referenced)
            config = make_config(setup["endpoint"], database, workdir / "plans", safety)
            client = s3.make_client(setup["endpoint"], REGION)
            run = round_trip(config, server, client, args.max_orphan_ratio)
            parent_end.send("stop")
            if parent_end.poll(60):
                parent_end.recv()
            receipt = run.applied.result.receipt
            receipt_size = Path(run.applied.result.receipt_path).stat().st_size
            found = checks(run, expected_orphans, args.objects + args.other)

        plan = run.planned.result.plan
        ratio = plan.stats.orphan_ratio
        lines = [
            f"bmxgc apply/undo benchmark: {args.objects:,} objects under {PREFIX} ({referenced_rows:,} "
            f"referenced, {len(expected_orphans):,} orphans), {args.other:,} under {OTHER_PREFIX}",
            f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; bucket loaded in "
            f"{setup['load_seconds']:.1f} s via {setup['load_method']}; moto model reset per page: "
            f"{'yes' if setup['resetting'] else 'NO'}",
            f"volume gate: orphan ratio {ratio:.2%} (default max_orphan_ratio 0.5); apply(..., "
            f"max_orphan_ratio={args.max_orphan_ratio:g}), as the CLI's --max-orphan-ratio; "
            + (
                f"safety.max_deletes = {safety['max_deletes']:,} in the config"
                if safety
                else "safety.max_deletes at its default 10,000"
            ),
            f"bucket snapshots for the checks: {server.snapshot_method}",
            "",
            *table([run.planned, run.applied, run.undone]),
            "",
            f"receipt: {receipt_size / 1024:,.0f} KiB, status {receipt.status}, overrides {receipt.overrides}",
            f"plan warnings: {len(plan.warnings)}" + "".join(f"\n  - {w}" for w in plan.warnings),
            f"total wall time, plan + apply + undo + snapshots: {run.seconds:.0f} s",
            "",
        ]
        for name, problem in found:
            lines.append(f"check ok      {name}" if problem is None else f"check FAILED  {name}: {problem}")
        print("\n".join(lines))
        return 0 if all(problem is None for _, problem in found) else 1
    finally:
        if process.is_alive():
            process.terminate()
        process.join(10)


if __name__ == "__main__":
    sys.exit(main())
