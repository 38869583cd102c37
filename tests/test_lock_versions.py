"""The lock without trusting conditional requests, and no trace in the bucket.

Runs on every server the suite runs on (BMXGC_TEST_S3=moto|localstack|ceph).
Each race test runs twice: with ``If-None-Match`` sent as bmxgc sends it
(honoured by moto and LocalStack, ignored by Ceph RGW in a versioned
bucket), and with the header taken off the lock's PUT on the client side, so
that the version protocol alone has to exclude the other process on every
server. The applies are real processes (``python -m bmxgc``-like, through a
small wrapper that only adds botocore hooks), started together; a barrier in
the wrapper makes both PUT their lock version before either lists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from apply_support import World, plant_foreign_lock
from support import LOCKS
from bmxgc.model import rfc3339, utc_now
from ops_support import versions

LOCK_KEY = LOCKS + "books%2F.json"

# The bmxgc CLI with two client-side hooks on the lock's PutObject: take off
# If-None-Match (STRIP=1), and wait after the PUT until COUNT processes have
# done theirs (files in BARRIER), at most 20 s.
WRAPPER = r'''
import os, sys, time, pathlib
import boto3.session

barrier = pathlib.Path(os.environ["BMXGC_TEST_BARRIER"])
count = int(os.environ.get("BMXGC_TEST_COUNT", "2"))
strip = os.environ.get("BMXGC_TEST_STRIP") == "1"

def before(params, context, **kw):
    if str(params.get("Key", "")).startswith(".bmxgc/locks/"):
        context["lock_put"] = True
        if strip:
            params.pop("IfNoneMatch", None)

def after(context, **kw):
    if not context.get("lock_put") or context.get("barrier_done"):
        return
    context["barrier_done"] = True
    (barrier / str(os.getpid())).touch()
    deadline = time.monotonic() + 20
    while len(list(barrier.iterdir())) < count and time.monotonic() < deadline:
        time.sleep(0.02)

_client = boto3.session.Session.client

def client(self, *args, **kwargs):
    made = _client(self, *args, **kwargs)
    made.meta.events.register("before-parameter-build.s3.PutObject", before)
    made.meta.events.register("after-call.s3.PutObject", after)
    return made

boto3.session.Session.client = client
from bmxgc.cli import main
sys.exit(main(sys.argv[1:]))
'''

CONDITIONAL = pytest.mark.parametrize("strip", [False, True], ids=["if-none-match-sent", "if-none-match-ignored"])


def start(tmp_path: Path, args: list[str], *, strip: bool, count: int) -> subprocess.Popen[str]:
    wrapper = tmp_path / "bmxgc_hooked.py"
    wrapper.write_text(WRAPPER, encoding="utf-8")
    barrier = tmp_path / "barrier"
    barrier.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "BMXGC_TEST_BARRIER": str(barrier),
        "BMXGC_TEST_COUNT": str(count),
        "BMXGC_TEST_STRIP": "1" if strip else "0",
    }
    return subprocess.Popen(
        [sys.executable, str(wrapper), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def everything(world: World) -> set[Any]:
    """The bucket's whole version listing, bmxgc's lock folder included."""
    return versions(world.client, world.name, locks=True)


def without_latest(rows: set[Any]) -> set[Any]:
    return {(k, v, m, e, s) for k, v, m, _latest, e, s in rows}


def plant_live_foreign_lock(world: World) -> str:
    """A live lock of an apply running on another machine; its version id."""
    return str(plant_foreign_lock(world, timedelta(seconds=30))["VersionId"])


def assert_only_intended_markers(world: World, before: set[Any], after: set[Any]) -> None:
    """After an apply: one new delete marker per orphan, nothing else added or removed."""
    added = without_latest(after) - without_latest(before)
    removed = without_latest(before) - without_latest(after)
    assert removed == set(), removed
    assert sorted(row[0] for row in added) == sorted(world.orphan_keys), added
    assert all(row[2] for row in added), added  # delete markers only
    latest_markers = {row[0] for row in after if row[2] and row[3]}
    assert latest_markers == set(world.orphan_keys)


@CONDITIONAL
def test_two_applies_started_together_as_processes_exactly_one_runs(
    world: World, tmp_path: Path, strip: bool
) -> None:
    plan = world.plan()
    twin = tmp_path / "twin" / plan.name  # the same reviewed plan, handed to two operators
    twin.parent.mkdir()
    shutil.copy(plan, twin)
    before = everything(world)
    procs = [
        start(tmp_path, ["-c", str(world.config_path), "apply", str(p), "--auto-approve"], strip=strip, count=2)
        for p in (plan, twin)
    ]
    results = [finish(p) for p in procs]
    codes = sorted(code for code, _out, _err in results)
    assert codes == [0, 3], results
    loser = next(r for r in results if r[0] == 3)
    assert "refused by gate 'lock'" in loser[2], loser
    assert "Traceback" not in loser[2]
    # Each orphan got exactly one delete marker, and no lock version is left.
    after = everything(world)
    assert_only_intended_markers(world, before, after)
    assert not any(row[0].startswith(LOCKS) for row in after)


@CONDITIONAL
def test_apply_against_a_foreign_live_lock_is_refused_and_the_lock_is_intact(
    world: World, tmp_path: Path, strip: bool
) -> None:
    plan = world.plan()
    foreign = plant_live_foreign_lock(world)
    before = everything(world)
    proc = start(tmp_path, ["-c", str(world.config_path), "apply", str(plan), "--auto-approve"], strip=strip, count=1)
    code, out, err = finish(proc)
    assert code == 3, (out, err)
    assert "refused by gate 'lock'" in err and "ghost@build-box-9" in err, err
    # The foreign lock is the same single version; nothing else changed either.
    assert everything(world) == before
    lock_rows = [row for row in before if row[0] == LOCK_KEY]
    assert [row[1] for row in lock_rows] == [foreign]


def test_unlock_removes_exactly_the_holders_version_and_leaves_no_marker(world: World, cli: Any) -> None:
    before = everything(world)
    plant_live_foreign_lock(world)
    result = cli("-c", world.config_path, "unlock", "--auto-approve")
    assert result.code == 0, result.output
    assert "ghost@build-box-9" in result.out
    assert everything(world) == before  # no version, no delete marker left


def test_a_refused_apply_leaves_the_whole_listing_unchanged(world: World, cli: Any) -> None:
    plan = world.plan()
    before = everything(world)
    # No terminal and no --auto-approve: refused at the consent gate, under the lock.
    result = cli("-c", world.config_path, "apply", plan)
    assert result.code == 3, result.output
    assert "refused by gate 'consent'" in result.err
    assert everything(world) == before


def test_apply_then_undo_twice_leaves_the_whole_listing_as_it_was(world: World, cli: Any) -> None:
    plan = world.plan()
    before = everything(world)
    applied = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert applied.code == 0, applied.output
    assert_only_intended_markers(world, before, everything(world))
    undone = cli("-c", world.config_path, "undo", "--auto-approve")
    assert undone.code == 0, undone.output
    assert everything(world) == before
    again = cli("-c", world.config_path, "undo", "--auto-approve")
    assert again.code == 0, again.output
    assert everything(world) == before


def test_recover_leaves_no_lock_trace(world: World, cli: Any) -> None:
    plan = world.plan()
    before = everything(world)
    since = rfc3339(utc_now() - timedelta(minutes=1))
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    result = cli("-c", world.config_path, "recover", "--since", since, "--auto-approve")
    assert result.code == 0, result.output
    assert everything(world) == before


# --------------------------------------------------------------------------- which versions are live (pure)


def _entry(version_id: str, second: int, *, marker: bool = False, latest: bool = False) -> Any:
    from datetime import datetime, timezone

    from bmxgc.model import VersionEntry

    return VersionEntry(
        key=LOCK_KEY,
        version_id=version_id,
        is_latest=latest,
        is_delete_marker=marker,
        last_modified=datetime(2026, 1, 1, 0, 0, second, tzinfo=timezone.utc),
    )


def test_live_versions_are_oldest_first_in_the_servers_order_not_by_time() -> None:
    from bmxgc.lock import live_versions

    # All in the same second (whole-second LastModified): the listing's order decides.
    listed = [_entry("c", 5, latest=True), _entry("b", 5), _entry("a", 5)]
    assert [v.version_id for v in live_versions(listed)] == ["a", "b", "c"]


def test_versions_under_a_delete_marker_are_dead_and_a_tie_counts_as_under() -> None:
    from bmxgc.lock import live_versions

    # What bmxgc before this design left: a version and a marker on top.
    assert live_versions([_entry("old", 1), _entry("m", 2, marker=True, latest=True)]) == []
    # A new contender after it; the old version, in the marker's second, is dead.
    listed = [_entry("new", 3, latest=True), _entry("old", 2), _entry("m", 2, marker=True)]
    assert [v.version_id for v in live_versions(listed)] == ["new"]
    # A version in the very second of the marker is dead even when it is the latest:
    # every contender must see the same versions live.
    assert live_versions([_entry("same", 2, latest=True), _entry("m", 2, marker=True)]) == []
