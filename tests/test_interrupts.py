"""Ctrl-C and SIGTERM during apply: the batch in flight is recorded, the lock
released, and the operator told what was deleted, where the receipt is and the
command that takes it back; exit 130 (SIGINT) or 143 (SIGTERM)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from apply_support import World, build_world
from servers import Database
from support import write_toml
from slow_deletes_cli import MARK

RUNNER = Path(__file__).with_name("slow_deletes_cli.py")


@pytest.fixture
def big_world(bucket: object, sqlite_db: Database, tmp_path: Path) -> World:
    return build_world(bucket, sqlite_db, tmp_path, live=1400, orphans=1300, fast=True)


def _apply_interrupted(world: World, plan: Path, signum: int) -> tuple[int, str]:
    proc = subprocess.Popen(
        [sys.executable, str(RUNNER), "-c", str(world.config_path), "apply", str(plan), "--auto-approve"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(RUNNER.parent), os.environ.get("PYTHONPATH", "")])},
    )
    assert proc.stderr is not None
    seen: list[str] = []
    for line in proc.stderr:
        seen.append(line)
        if line.strip() == MARK:  # the first batch's answer is in flight
            proc.send_signal(signum)
            break
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out + "".join(seen) + err


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["sigint", "sigterm"])
def test_apply_interrupted_records_the_batch_in_flight_and_says_how_to_undo(
    big_world: World, cli: object, signum: int, code: int
) -> None:
    world = big_world
    world.one_request_at_a_time()  # the second batch waits for the first's answer
    plan = world.plan()
    returncode, output = _apply_interrupted(world, plan, signum)

    assert returncode == code, output
    assert "Traceback" not in output
    receipt_path = world.receipt_path(plan)
    assert "1,000 of 1,300 objects were deleted" in output, output
    assert f"bmxgc -c {world.config_path} undo {receipt_path}" in output, output
    # The batch in flight finished and was recorded; the next one was never sent.
    deleted_now = [k for k in world.orphan_keys if world.current(k) is None]
    assert len(deleted_now) == 1000
    receipt = json.loads(receipt_path.read_text(encoding="utf-8"))
    assert receipt["status"] == "partial"
    assert sorted(e["key"] for e in receipt["deleted"]) == sorted(deleted_now)
    assert receipt["pending"] == []
    assert world.lock_keys() == []  # released

    undone = cli("-c", world.config_path, "undo", receipt_path, "--auto-approve")  # type: ignore[operator]
    assert undone.code == 0, undone.output
    world.assert_orphans_restored()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["sigint", "sigterm"])
def test_apply_interrupted_with_several_requests_in_flight_records_each_and_sends_no_more(
    bucket: object, sqlite_db: Database, tmp_path: Path, cli: object, signum: int, code: int
) -> None:
    # [s3] delete_concurrency = 2 and three batches: the first two go out
    # together; the signal comes while their answers are in flight. Both are
    # recorded, the third is never sent.
    world = build_world(bucket, sqlite_db, tmp_path, live=100, orphans=2500, fast=True, safety={"max_orphan_ratio": 1.0})
    world.doc["s3"]["delete_concurrency"] = 2
    write_toml(world.config_path, world.doc)
    plan = world.plan()
    returncode, output = _apply_interrupted(world, plan, signum)

    assert returncode == code, output
    assert "Traceback" not in output
    receipt_path = world.receipt_path(plan)
    assert "2,000 of 2,500 objects were deleted" in output, output
    deleted_now = [k for k in world.orphan_keys if world.current(k) is None]
    assert len(deleted_now) == 2000
    receipt = json.loads(receipt_path.read_text(encoding="utf-8"))
    assert receipt["status"] == "partial"
    assert sorted(e["key"] for e in receipt["deleted"]) == sorted(deleted_now)
    assert [e["key"] for e in receipt["deleted"]] == sorted(deleted_now)  # in the plan's order, batch by batch
    assert receipt["pending"] == []
    assert world.lock_keys() == []

    undone = cli("-c", world.config_path, "undo", receipt_path, "--auto-approve")  # type: ignore[operator]
    assert undone.code == 0, undone.output
    world.assert_orphans_restored()


def test_undo_after_a_killed_apply_takes_over_its_dead_lock_and_restores_everything(
    big_world: World, cli: object
) -> None:
    # SIGKILL: no handler runs, the lock stays. The undo of that very apply, on
    # the same host, takes the dead lock over (and says so): one command.
    world = big_world
    plan = world.plan()
    returncode, output = _apply_interrupted(world, plan, signal.SIGKILL)
    assert returncode == -signal.SIGKILL, output
    assert world.lock_keys() != []  # the dead apply's lock is still there
    receipt_path = world.receipt_path(plan)

    undone = cli("-c", world.config_path, "undo", "--auto-approve")  # type: ignore[operator]

    assert undone.code == 0, undone.output
    assert "took over the lock of the crashed apply" in undone.err, undone.output
    world.assert_orphans_restored()
    assert world.lock_keys() == []
    record = json.loads(receipt_path.with_name(plan.stem + ".undo.json").read_text(encoding="utf-8"))
    assert "apply of sha256:" in record["runs"][-1]["took_over_lock"]


def test_undo_does_not_take_over_a_lock_whose_apply_still_runs(world: World, cli: object) -> None:
    # The holder is alive (this very test process stands for it): refused as before.
    from bmxgc import lock

    plan = world.plan()
    receipt_path = world.receipt_path(plan)
    world.apply(plan)
    receipt = json.loads(receipt_path.read_text(encoding="utf-8"))
    config = world.config()
    with lock.held(world.s3_client(), world.name, config.s3.prefix, command="apply", plan_hash=receipt["plan_hash"]):
        before = world.snapshot()
        undone = cli("-c", world.config_path, "undo", "--auto-approve")  # type: ignore[operator]
        assert undone.code == 3, undone.output
        assert "refused by gate 'lock'" in undone.err
        assert world.snapshot() == before
