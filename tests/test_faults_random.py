"""Random S3 faults during apply and undo, many times (issue 10, "Done when").

Each run builds a small world (30 orphans, batches of 8 so that apply sends
four DeleteObjects), then applies and undoes with a seeded random fault on
each DeleteObjects attempt: the answer lost after S3 did the work (read
timeout or closed connection, so botocore's own retry logic runs), a timeout
before S3 saw it, a 5xx with or without the work done, a 503 SlowDown,
per-key errors with or without the work done, the request done twice, an
answer without marker ids, or (undo) an answer claiming work not done.

After every run: apply's and undo's exit codes match the bucket (0 only when
every key is deleted, resp. restored, as checked in S3's listing; when undo
exits 1 it names every key it left deleted), a fault-free undo then restores
every key's latest version exactly as listed before apply, and one more undo
restores nothing, changes nothing and exits 0.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from apply_support import (
    Hooks,
    World,
    _fake_response,
    build_world,
    plain_client,
    snapshot,
)
from delete_faults import forward, lose_answer, requested, result_xml

RUNS = 30
ORPHANS = 30
BATCH = 8

APPLY_FAULTS = {
    "pass": 5,
    "lost": 3,  # S3 did it, the answer never came
    "timeout": 1,  # the request never reached S3
    "5xx": 1,  # 500 for the whole request, nothing done
    "5xx_after_work": 1,  # done, then a 500
    "slowdown": 1,  # 503 SlowDown: botocore's retries
    "key_errors": 1,  # some keys fail, not done
    "errors_after_work": 1,  # all done, some reported as failed
    "twice": 1,  # S3 did the request twice
    "no_marker_ids": 1,  # done, some Deleted entries lack marker ids (Ceph)
}
# Undo's DeleteObjects remove versions by id: botocore retries them (with its
# backoff sleeps), so answers lost or failing are fewer here, to keep the test short.
UNDO_FAULTS = {
    "pass": 8, "lost": 2, "timeout": 1, "5xx": 1, "5xx_after_work": 1, "slowdown": 0,
    "key_errors": 2, "errors_after_work": 1, "twice": 1, "no_marker_ids": 0,
    "lie": 2,  # "Deleted" for markers it did not remove
}


def _error_xml(code: str) -> bytes:
    return f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>injected</Message></Error>".encode()


def chaos(rng: random.Random, side: Any, bucket: str, weights: dict[str, int], log: list[str]) -> Callable[..., Any]:
    faults = [f for f, w in weights.items() if w]
    odds = [weights[f] for f in faults]

    def hook(request: Any, **_kw: Any) -> Any:
        entries = requested(request)
        fault = rng.choices(faults, odds)[0]
        log.append(fault)
        some = {e["Key"] for e in entries if rng.random() < 0.4}
        if fault == "pass":
            return None
        if fault == "lost":
            forward(side, bucket, entries)
            raise lose_answer(request, rng.choice(["timeout", "closed"]))
        if fault == "timeout":
            raise lose_answer(request)
        if fault == "5xx":
            return _fake_response(request, 500, _error_xml("InternalError"))
        if fault == "5xx_after_work":
            forward(side, bucket, entries)
            return _fake_response(request, rng.choice([500, 503]), _error_xml(rng.choice(["InternalError", "ServiceUnavailable"])))
        if fault == "slowdown":
            return _fake_response(request, 503, _error_xml("SlowDown"))
        if fault == "key_errors":
            answer = forward(side, bucket, [e for e in entries if e["Key"] not in some])
            return _fake_response(request, 200, result_xml(answer.get("Deleted", []), [(k, "InternalError") for k in sorted(some)]))
        if fault == "errors_after_work":
            answer = forward(side, bucket, entries)
            done = [d for d in answer.get("Deleted", []) if d["Key"] not in some]
            return _fake_response(request, 200, result_xml(done, [(k, "InternalError") for k in sorted(some)]))
        if fault == "twice":
            forward(side, bucket, entries)
            answer = forward(side, bucket, entries)
            return _fake_response(request, 200, result_xml(answer.get("Deleted", [])))
        if fault == "no_marker_ids":
            answer = forward(side, bucket, entries)
            return _fake_response(request, 200, result_xml(answer.get("Deleted", []), drop_marker_ids=frozenset(some)))
        if fault == "lie":
            answer = forward(side, bucket, [e for e in entries if e["Key"] not in some])
            return _fake_response(request, 200, result_xml([*answer.get("Deleted", []), *[e for e in entries if e["Key"] in some]]))
        raise AssertionError(fault)

    return hook


def latest_rows(world: World) -> dict[str, tuple[str, bool]]:
    """key -> (latest version id, is a delete marker)."""
    return {row[0]: (row[1], row[2]) for row in snapshot(world.client, world.name) if row[3]}


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches and list pages of 8, so 30 orphans make 4 DeleteObjects."""
    from bmxgc import s3

    monkeypatch.setattr(s3, "MAX_KEYS_PER_REQUEST", BATCH)


def test_random_faults_in_apply_and_undo_then_undo_restores_exactly(
    make_bucket: Any, sqlite_db: Any, tmp_path: Path, cli: Any, hooked: Hooks, small_batches: None
) -> None:
    began = time.monotonic()
    seen: set[str] = set()
    for run in range(RUNS):
        seed = 1000 + run
        rng = random.Random(seed)
        world = build_world(
            make_bucket(), sqlite_db, tmp_path / f"run{run}", live=12, orphans=ORPHANS, fast=True,
            safety={"max_orphan_ratio": 1.0},
        )
        before = latest_rows(world)
        plan = world.plan()
        side = plain_client(world.bucket.endpoint)
        where = f"run {run} (seed {seed})"

        # ---- apply under faults: its exit code must match the bucket
        log: list[str] = []
        hooked.clear()
        hooked("before-send.s3.DeleteObjects", chaos(rng, side, world.name, APPLY_FAULTS, log))
        applied = cli("-c", world.config_path, "apply", plan, "--auto-approve")
        seen.update(log)
        hooked.clear()
        now = latest_rows(world)
        receipt = world.receipt(plan)
        all_deleted = all(now[k][1] for k in world.orphan_keys)
        assert applied.code in (0, 1), (where, log, applied.output)
        if applied.code == 0:
            assert all_deleted, (where, log)
            assert receipt["status"] == "complete" and not receipt["errors"] and not receipt["pending"], where
        else:
            assert receipt["status"] == "partial", (where, log)
            assert receipt["errors"] or not all_deleted or receipt["pending"], (where, log)
            assert "bmxgc.toml undo" in applied.err, where
        assert world.lock_keys() == [], where

        # ---- undo under faults, in half of the runs: exit 0 only if all is restored
        if rng.random() < 0.5:
            log = []
            hooked("before-send.s3.DeleteObjects", chaos(rng, side, world.name, UNDO_FAULTS, log))
            undone = cli("-c", world.config_path, "undo", "--auto-approve")
            seen.update("undo:" + f for f in log)
            hooked.clear()
            now = latest_rows(world)
            left = [k for k in world.orphan_keys if now[k] != before[k]]
            assert undone.code in (0, 1), (where, log, undone.output)
            if undone.code == 0:
                assert left == [], (where, log, undone.output)
            else:
                assert left, (where, log, undone.output)  # a refusal would be 3; 1 means something stayed
                for key in left:
                    assert key in undone.output, (where, key, undone.output)

        # ---- a fault-free undo restores every key's latest version exactly
        final = cli("-c", world.config_path, "undo", "--auto-approve")
        assert final.code == 0, (where, final.output)
        assert latest_rows(world) == before, where
        settled = world.snapshot()
        again = cli("-c", world.config_path, "undo", "--auto-approve")
        assert again.code == 0 and "0 restored" in again.out, (where, again.output)
        assert world.snapshot() == settled, where
    # The seeds exercised every kind of fault, in apply and in undo.
    assert set(APPLY_FAULTS) <= seen, seen
    assert {"undo:lost", "undo:lie", "undo:key_errors"} <= seen, seen
    assert time.monotonic() - began < 120
