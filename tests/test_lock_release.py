"""A lock release that fails (S3 stops answering just then) never loses what
the command did: apply's receipt and summary, undo's record and summary,
recover's dry-run output. The command exits 1 and says how to unlock."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

from apply_support import Hooks, World, request_error
from support import LOCKS
from bmxgc.model import rfc3339, utc_now


def release_fails(hooked: Hooks) -> None:
    # DeleteObject is the lock's release (deletes go through DeleteObjects).
    hooked("before-send.s3.DeleteObject", request_error(1, 400, "ExpiredToken", []))


def assert_told_to_unlock(result: Any) -> None:
    assert result.code == 1, result.output
    assert "could not be released" in result.err, result.err
    assert re.search(r"'bmxgc -c \S+ unlock", result.err), result.err  # copy-paste safe: this run's -c
    assert "Traceback" not in result.err


def test_apply_whose_release_fails_still_prints_its_summary_and_keeps_its_receipt(
    world: World, cli: Any, hooked: Hooks
) -> None:
    plan = world.plan()
    release_fails(hooked)
    result = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert_told_to_unlock(result)
    assert "Apply complete! 6 deleted, 0 failed" in result.out
    assert world.receipt(plan)["status"] == "complete"
    assert all(world.current(k) is None for k in world.orphan_keys)


def test_undo_whose_release_fails_still_prints_its_summary_and_writes_its_record(
    world: World, cli: Any, hooked: Hooks
) -> None:
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    release_fails(hooked)
    result = cli("-c", world.config_path, "undo", "--auto-approve")
    assert_told_to_unlock(result)
    assert "Undo complete! 6 restored" in result.out
    record = world.plans_dir / f"{plan.stem}.undo.json"
    assert record.exists(), sorted(p.name for p in world.plans_dir.iterdir())
    world.assert_orphans_restored()


def test_recover_dry_run_whose_release_fails_still_prints_what_it_would_restore(
    world: World, cli: Any, hooked: Hooks
) -> None:
    since = rfc3339(utc_now() - timedelta(minutes=1))
    for key in world.orphan_keys:
        world.bucket.delete(key)
    release_fails(hooked)
    result = cli("-c", world.config_path, "recover", "--since", since)
    assert_told_to_unlock(result)
    assert "to restore" in result.out and "6" in result.out, result.out
