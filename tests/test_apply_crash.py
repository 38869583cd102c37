"""A process killed mid-apply (SIGKILL, no cleanup of any kind) leaves a receipt
from which undo restores everything that was deleted.

The apply runs in a child process through the Python API; a botocore event
hook on its own S3 client kills it at the chosen instant of the 2nd
DeleteObjects call: before the request is sent (between batches), or after
S3 answered but before the receipt recorded the answer (inside a batch).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from apply_support import World, build_world

ORPHANS = 1_005  # two DeleteObjects batches: 1,000 + 5
LIVE = 5

DRIVER = textwrap.dedent(
    """
    import os, signal, sys

    from bmxgc import s3
    from bmxgc.commands.apply import apply
    from bmxgc.config import load_config

    config_path, plan_path, event = sys.argv[1:4]
    config = load_config(config_path)
    client = s3.make_client(config.s3.endpoint_url, config.s3.region)
    calls = []

    def die(**_kw):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    client.meta.events.register(event, die)
    apply(config, plan_path, auto_approve=True, client=client)
    print("apply finished without being killed")
    """
)


@pytest.fixture
def big(bucket: Any, sqlite_db: Any, tmp_path: Path) -> World:
    return build_world(
        bucket, sqlite_db, tmp_path, live=LIVE, orphans=ORPHANS, fast=True, safety={"max_orphan_ratio": 1.0}
    )


def latest_rows(world: World) -> dict[str, tuple[str, bool]]:
    """key -> (latest version id, is a delete marker)."""
    return {key: (vid, marker) for key, vid, marker, latest, _e, _s in world.snapshot() if latest}


@pytest.mark.parametrize(
    ("event", "deleted_in_s3"),
    [
        ("before-call.s3.DeleteObjects", 1_000),  # killed between batches
        ("after-call.s3.DeleteObjects", 1_005),  # killed inside a batch: S3 deleted, receipt not updated
    ],
    ids=["between-batches", "inside-batch"],
)
def test_apply_killed_then_undo_restores_everything_deleted(
    big: World, cli: Any, tmp_path: Path, event: str, deleted_in_s3: int
) -> None:
    big.one_request_at_a_time()  # "between batches" and "inside a batch" as one connection sends them
    start = big.snapshot()
    plan = big.plan()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")

    proc = subprocess.run(
        [sys.executable, str(driver), str(big.config_path), str(plan), event],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr

    latest = latest_rows(big)
    gone = [k for k in big.orphan_keys if latest[k][1]]
    assert len(gone) == deleted_in_s3
    assert all(not latest[k][1] for k in big.live_keys)

    receipt = big.receipt(plan)
    assert receipt["status"] == "in_progress"
    assert len(receipt["deleted"]) == 1_000  # only the first batch's answer was recorded
    assert receipt["finished_at"] is None

    # The dead process still holds the lock. Another command is refused and
    # told who it was; the undo of that very apply takes the lock over (this
    # host, its process gone), says so, and restores everything: one command.
    blocked = cli("-c", big.config_path, "recover", "--since", receipt["started_at"], "--auto-approve")
    assert blocked.code == 3, blocked.output
    assert "refused by gate 'lock'" in blocked.err
    assert "no longer running" in blocked.err and "bmxgc.toml unlock" in blocked.err

    undone = cli("-c", big.config_path, "undo", "--auto-approve")
    assert undone.code == 0, undone.output
    assert "took over the lock of the crashed apply" in undone.err, undone.output
    assert f"{deleted_in_s3:,} restored" in undone.out
    assert big.lock_keys() == []

    # Every planned object is current again with its original version id,
    # and the bucket holds exactly the versions it began with.
    end = big.snapshot()
    latest = {key: (vid, marker) for key, vid, marker, is_latest, _e, _s in end if is_latest}
    for key in big.orphan_keys:
        assert latest[key] == (big.original[key]["version_id"], False), key
    assert end == start

    # And a second undo finds nothing left to do.
    again = cli("-c", big.config_path, "undo", big.receipt_path(plan), "--auto-approve")
    assert again.code == 0 and "0 restored" in again.out
    assert big.snapshot() == start
