"""Undo never reports success on a deleted object (issue 10, items 2, 4 and 17):
it restores keys apply recorded as errors, checks its own work against live
state, and reports what it restored even when its record cannot be written."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from typing import Any

from apply_support import (
    Hooks,
    World,
    plain_client,
)
from delete_faults import claims_without_work, error_after_work


def test_undo_restores_keys_apply_recorded_as_errors(world: World, cli: Any, hooked: Hooks) -> None:
    """S3 deleted the key but answered InternalError for it: the receipt lists it
    under errors; undo must still look at it and bring it back."""
    start = world.snapshot()
    plan = world.plan()
    odd = {world.orphan_keys[2]}
    hooked("before-send.s3.DeleteObjects", error_after_work(plain_client(world.bucket.endpoint), world.name, odd))
    applied = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert applied.code == 1, applied.output
    assert "bmxgc.toml undo" in applied.err
    assert [e["key"] for e in world.receipt(plan)["errors"]] == sorted(odd)
    assert world.current(world.orphan_keys[2]) is None  # deleted, whatever S3 said
    hooked.clear()

    undone = cli("-c", world.config_path, "undo", "--auto-approve")
    assert undone.code == 0, undone.output
    assert "6 restored" in undone.out
    world.assert_orphans_restored()
    assert world.snapshot() == start


def test_undo_checks_its_own_work_and_names_what_stays_deleted(world: World, cli: Any, hooked: Hooks) -> None:
    """S3 answers 'Deleted' for a marker it did not remove: undo must not
    believe it. It names the key, counts 5 restored, exits 1; a rerun finishes."""
    start = world.snapshot()
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    stuck = world.orphan_keys[4]
    hooked("before-send.s3.DeleteObjects", claims_without_work(plain_client(world.bucket.endpoint), world.name, {stuck}))
    undone = cli("-c", world.config_path, "undo", "--auto-approve")
    assert undone.code == 1, undone.output
    assert "6 restored" not in undone.output
    assert "5 restored" in undone.output
    assert stuck in undone.output and "delete marker" in undone.output
    assert world.current(stuck) is None
    record = json.loads((world.plans_dir / f"{plan.stem}.undo.json").read_text(encoding="utf-8"))
    [run] = record["runs"]
    assert sorted(r["key"] for r in run["restored"]) == sorted(set(world.orphan_keys) - {stuck})
    assert [n["key"] for n in run["not_restored"]] == [stuck]

    hooked.clear()
    again = cli("-c", world.config_path, "undo", "--auto-approve")
    assert again.code == 0, again.output
    assert "1 restored" in again.out and "5 already restored" in again.out
    assert world.snapshot() == start


def test_undo_record_unwritable_still_reports_what_was_restored(world: World, cli: Any) -> None:
    """The disk is full when undo writes its record (here: a file size limit of
    the undo process, a real EFBIG from the filesystem, as root too). The
    objects are restored: undo says so, says why the record is missing, exits 1;
    a rerun once the disk has room restores nothing and exits 0."""
    start = world.snapshot()
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0

    def small_files_only() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    proc = subprocess.run(
        [sys.executable, "-m", "bmxgc", "-c", str(world.config_path), "undo", "--auto-approve"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=120,
        stdin=subprocess.DEVNULL,
        preexec_fn=small_files_only,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "6 restored" in output
    assert "record" in output and "could not be written" in output and "too large" in output.lower()
    assert "Traceback" not in output
    world.assert_orphans_restored()
    assert world.snapshot() == start
    assert world.lock_keys() == []

    rerun = cli("-c", world.config_path, "undo", "--auto-approve")
    assert rerun.code == 0, rerun.output
    assert "0 restored" in rerun.out and "6 already restored" in rerun.out
    assert world.snapshot() == start
