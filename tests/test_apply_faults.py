"""S3 misbehaving at the HTTP layer, and how many requests apply and undo make.

Faults are injected with botocore event hooks on the S3 client bmxgc makes
(``before-send`` runs for every HTTP attempt and may answer instead of the
server), never by replacing bmxgc's own functions: per-key errors inside a
200 DeleteResult, and 503 SlowDown answers that botocore's retries absorb.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import pytest

from apply_support import (
    Hooks,
    World,
    batches,
    build_world,
    failing_keys_proxy,
    plain_client,
    request_error,
    slow_down,
)
from bmxgc.errors import DriftError, PartialFailure


# --------------------------------------------------------------------------- per-key errors


def test_apply_some_keys_fail_exits_1_records_errors_and_deletes_the_rest(
    world: World, cli: Any, hooked: Hooks
) -> None:
    start = world.snapshot()
    failing = {world.orphan_keys[1], world.orphan_keys[4]}
    hooked(
        "before-send.s3.DeleteObjects",
        failing_keys_proxy(plain_client(world.bucket.endpoint), world.name, lambda key: key in failing),
    )
    plan = world.plan()
    result = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert result.code == 1, result.output
    assert "2 of 6 objects could not be deleted" in result.err
    assert "bmxgc.toml undo" in result.err  # says how to take it back

    receipt = world.receipt(plan)
    assert receipt["status"] == "partial"
    assert receipt["finished_at"]
    assert sorted((e["key"], e["code"]) for e in receipt["errors"]) == sorted((k, "InternalError") for k in failing)
    assert all(e["message"] for e in receipt["errors"])
    assert sorted(d["key"] for d in receipt["deleted"]) == sorted(set(world.orphan_keys) - failing)
    for key in world.orphan_keys:
        if key in failing:
            assert world.current(key) == world.original[key]
        else:
            assert world.current(key) is None
    assert world.lock_keys() == []

    undone = cli("-c", world.config_path, "undo", "--auto-approve")
    assert undone.code == 0, undone.output
    assert "4 restored" in undone.out
    world.assert_orphans_restored()
    assert world.snapshot() == start


def test_undo_some_keys_fail_exits_1_and_rerun_restores_the_rest(world: World, cli: Any, hooked: Hooks) -> None:
    start = world.snapshot()
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    stuck = world.orphan_keys[2]
    hooked(
        "before-send.s3.DeleteObjects",
        failing_keys_proxy(plain_client(world.bucket.endpoint), world.name, lambda key: key == stuck, code="SlowDown"),
    )
    first = cli("-c", world.config_path, "undo", "--auto-approve")
    assert first.code == 1, first.output
    assert "could not be restored" in first.err and "bmxgc.toml undo" in first.err
    assert world.current(stuck) is None
    assert all(world.current(k) is not None for k in world.orphan_keys if k != stuck)
    record = json.loads((world.plans_dir / f"{plan.stem}.undo.json").read_text(encoding="utf-8"))
    assert [(e["key"], e["code"]) for e in record["runs"][0]["errors"]] == [(stuck, "SlowDown")]

    # Run again once S3 behaves: only the stuck key is left to do.
    hooked.clear()
    result = world.undo()
    assert [r.key for r in result.restored] == [stuck]
    assert len(result.already_restored) == 5
    world.assert_orphans_restored()
    assert world.snapshot() == start


def test_apply_request_failing_midway_exits_1_says_what_was_deleted_and_undo_restores(
    big: World, cli: Any, hooked: Hooks
) -> None:
    """Credentials expire between batches: the first 1,000 are gone, the
    request for the rest fails without retries."""
    big.one_request_at_a_time()  # "between batches": the second request is the second batch's
    start = big.snapshot()
    plan = big.plan()
    attempts: list[str] = []
    hooked("before-send.s3.DeleteObjects", request_error(2, 400, "ExpiredToken", attempts))
    result = cli("-c", big.config_path, "apply", plan, "--auto-approve")
    assert result.code == 1, result.output
    assert len(attempts) == 2
    receipt_path = big.receipt_path(plan)
    assert "ExpiredToken" in result.err
    assert "1,000 of 1,005 objects were deleted" in result.err
    assert f"bmxgc.toml undo {receipt_path}" in result.err
    receipt = big.receipt(plan)
    assert receipt["status"] == "partial" and len(receipt["deleted"]) == 1_000
    assert big.lock_keys() == []

    hooked.clear()
    undone = cli("-c", big.config_path, "undo", receipt_path, "--auto-approve")
    assert undone.code == 0, undone.output
    assert "1,000 restored" in undone.out
    assert big.snapshot() == start


def test_apply_credentials_expire_midway_message_survives_lock_release_failure(
    big: World, cli: Any, hooked: Hooks
) -> None:
    """Expired credentials fail the next batch and the lock's release too: the
    operator still learns what was deleted and how to undo it."""
    big.one_request_at_a_time()  # the second request is the second batch's
    plan = big.plan()
    hooked("before-send.s3.DeleteObjects", request_error(2, 400, "ExpiredToken", []))
    hooked("before-send.s3.DeleteObject", request_error(1, 400, "ExpiredToken", []))
    result = cli("-c", big.config_path, "apply", plan, "--auto-approve")
    assert result.code == 1, result.output
    assert "1,000 of 1,005 objects were deleted" in result.err
    assert f"bmxgc.toml undo {big.receipt_path(plan)}" in result.err
    assert "bmxgc.toml unlock" in result.err
    assert big.lock_keys() != []


# --------------------------------------------------------------------------- throttling


def test_apply_throttled_twice_succeeds_through_botocore_retries(world: World) -> None:
    plan = world.plan()
    client = world.s3_client()
    attempts: list[str] = []
    client.meta.events.register("before-send.s3.DeleteObjects", slow_down(2, attempts))
    result = world.apply(plan, client=client)
    assert len(attempts) == 3  # two 503 SlowDown answers, then the real request
    assert result.deleted == 6
    receipt = world.receipt(plan)
    assert receipt["status"] == "complete" and receipt["errors"] == []
    assert all(world.current(k) is None for k in world.orphan_keys)


def test_undo_throttled_listing_succeeds_through_retries(world: World) -> None:
    plan = world.plan()
    world.apply(plan)
    client = world.s3_client()
    attempts: list[str] = []
    client.meta.events.register("before-send.s3.ListObjectVersions", slow_down(1, attempts))
    result = world.undo(client=client)
    assert len(attempts) >= 2
    assert len(result.restored) == 6
    world.assert_orphans_restored()


# --------------------------------------------------------------------------- request counts


@pytest.fixture
def big(bucket: Any, sqlite_db: Any, tmp_path: Path) -> World:
    return build_world(bucket, sqlite_db, tmp_path, live=5, orphans=1_005, fast=True, safety={"max_orphan_ratio": 1.0})


def test_apply_and_undo_request_counts_scale_per_thousand(big: World) -> None:
    plan = big.plan()
    versions = len(big.orphan_keys) + len(big.live_keys)

    calls: collections.Counter[str] = collections.Counter()
    result = big.apply(plan, client=big.s3_client(calls))
    assert result.deleted == 1_005
    assert calls["DeleteObjects"] == batches(1_005) == 2
    assert calls["ListObjectVersions"] <= batches(versions)  # one listing pass
    assert sum(calls.values()) <= batches(1_005) + batches(versions) + 6  # lock, versioning, lifecycle

    calls.clear()
    undone = big.undo(client=big.s3_client(calls))
    assert len(undone.restored) == 1_005
    assert calls["DeleteObjects"] == batches(1_005) == 2
    # now with the markers; a second pass checks that each key is current again
    assert calls["ListObjectVersions"] <= 2 * batches(versions + 1_005)
    assert sum(calls.values()) <= 2 + 2 * batches(versions + 1_005) + 4
    big.assert_orphans_restored()


def test_apply_with_consent_lists_twice_at_most(world: World) -> None:
    plan = world.plan()
    calls: collections.Counter[str] = collections.Counter()
    world.apply(plan, auto_approve=False, confirm=lambda _summary: True, client=world.s3_client(calls))
    versions = len(world.orphan_keys) + len(world.live_keys)
    assert calls["ListObjectVersions"] <= 2 * batches(versions)  # before asking, and again after
    assert calls["DeleteObjects"] == 1


def test_apply_few_orphans_in_large_prefix_lists_the_prefix_and_sees_drift(
    bucket: Any, sqlite_db: Any, tmp_path: Path
) -> None:
    few = build_world(bucket, sqlite_db, tmp_path, live=1_001, orphans=1, fast=True)
    plan = few.plan()
    few.bucket.put(few.orphan_keys[0], b"re-uploaded")
    before = few.snapshot()
    calls: collections.Counter[str] = collections.Counter()
    with pytest.raises(DriftError) as excinfo:
        few.apply(plan, client=few.s3_client(calls))
    assert [o.key for o in excinfo.value.offences] == [few.orphan_keys[0]]
    # The whole prefix (2 pages): apply counts its objects for the volume gate.
    assert calls["ListObjectVersions"] == 2
    assert few.snapshot() == before


def test_undo_few_keys_in_large_prefix_lists_key_by_key_and_restores(
    bucket: Any, sqlite_db: Any, tmp_path: Path
) -> None:
    few = build_world(bucket, sqlite_db, tmp_path, live=1_001, orphans=1, fast=True)
    few.apply(few.plan())
    calls: collections.Counter[str] = collections.Counter()
    undone = few.undo(client=few.s3_client(calls))
    assert [r.key for r in undone.restored] == few.orphan_keys
    # one key's history before and after (its check), not passes over 1,003 versions (2 pages)
    assert calls["ListObjectVersions"] == 2
    few.assert_orphans_restored()


def test_apply_partial_failure_is_exit_1_through_api(world: World) -> None:
    client = world.s3_client()
    doomed = world.orphan_keys[0]
    client.meta.events.register(
        "before-send.s3.DeleteObjects",
        failing_keys_proxy(plain_client(world.bucket.endpoint), world.name, lambda key: key == doomed),
    )
    with pytest.raises(PartialFailure) as excinfo:
        world.apply(world.plan(), client=client)
    assert excinfo.value.exit_code == 1
    assert excinfo.value.result.deleted == 5  # type: ignore[attr-defined]
