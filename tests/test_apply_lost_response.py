"""Apply never retries a DeleteObjects blind: after a lost or failed answer it
finds out from S3 what happened to each key (issue 10, item 1, apply side),
and undo removes every marker apply stacked above a deleted version."""

from __future__ import annotations

import collections
from typing import Any

from apply_support import (
    Hooks,
    _fake_response,
    World,
    plain_client,
    request_error,
)
from delete_faults import answers_without_marker_ids, done_twice, forward, lose_answer, lost_answers, requested, result_xml


def markers_per_key(world: World) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for key, _vid, marker, _latest, _etag, _size in world.snapshot():
        if marker:
            counts[key] += 1
    return dict(counts)


def test_lost_delete_answer_is_not_retried_blind_and_undo_restores_everything(
    world: World, cli: Any, hooked: Hooks
) -> None:
    start = world.snapshot()
    plan = world.plan()
    attempts: list[str] = []
    # S3 deletes, the answer is lost (read timeout): botocore would send it again.
    hooked("before-send.s3.DeleteObjects", lost_answers(plain_client(world.bucket.endpoint), world.name, attempts, lambda n: n == 1))
    applied = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert applied.code == 0, applied.output
    assert len(attempts) == 1  # sent once; S3's listing said what happened
    assert markers_per_key(world) == {key: 1 for key in world.orphan_keys}
    receipt = world.receipt(plan)
    assert receipt["status"] == "complete" and receipt["errors"] == [] and receipt["pending"] == []
    latest = {row[0]: row[1] for row in world.snapshot() if row[3]}
    assert sorted((d["key"], d["delete_marker_version_id"]) for d in receipt["deleted"]) == sorted(
        (key, latest[key]) for key in world.orphan_keys
    )

    hooked.clear()
    undone = cli("-c", world.config_path, "undo", "--auto-approve")
    assert undone.code == 0, undone.output
    assert "6 restored" in undone.out
    world.assert_orphans_restored()
    assert world.snapshot() == start


def test_delete_request_failing_without_work_is_sent_again_and_completes(
    world: World, cli: Any, hooked: Hooks
) -> None:
    plan = world.plan()
    attempts: list[str] = []
    # A 500 for the whole request, S3 did nothing: apply looks, then sends it again.
    hooked("before-send.s3.DeleteObjects", _first_attempts_fail(1, attempts))
    applied = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert applied.code == 0, applied.output
    assert len(attempts) == 2
    assert markers_per_key(world) == {key: 1 for key in world.orphan_keys}
    assert all(world.current(k) is None for k in world.orphan_keys)
    assert world.receipt(plan)["status"] == "complete"


def _first_attempts_fail(n: int, attempts: list[str]) -> Any:
    inner = request_error(1, 500, "InternalError", attempts)

    def hook(request: Any, **kw: Any) -> Any:
        if len(attempts) < n:
            return inner(request, **kw)
        attempts.append(request.url)
        return None

    return hook


def test_delete_request_failing_every_time_records_errors_and_exits_1(world: World, cli: Any, hooked: Hooks) -> None:
    start = world.snapshot()
    plan = world.plan()
    attempts: list[str] = []
    hooked("before-send.s3.DeleteObjects", request_error(1, 500, "InternalError", attempts))
    applied = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert applied.code == 1, applied.output
    assert "6 of 6 objects could not be deleted" in applied.err
    assert 2 <= len(attempts) <= 4  # a bounded number of sends, each after a look at S3
    receipt = world.receipt(plan)
    assert receipt["status"] == "partial" and receipt["pending"] == []
    assert sorted(e["key"] for e in receipt["errors"]) == sorted(world.orphan_keys)
    assert world.snapshot() == start
    hooked.clear()
    undone = cli("-c", world.config_path, "undo", "--auto-approve")
    assert undone.code == 0, undone.output
    assert world.snapshot() == start


def test_deleted_entry_without_marker_id_is_looked_up_and_recorded(world: World, cli: Any, hooked: Hooks) -> None:
    start = world.snapshot()
    plan = world.plan()
    odd = {world.orphan_keys[0], world.orphan_keys[3]}
    hooked("before-send.s3.DeleteObjects", answers_without_marker_ids(plain_client(world.bucket.endpoint), world.name, odd))
    applied = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert applied.code == 0, applied.output
    receipt = world.receipt(plan)
    latest = {row[0]: row[1] for row in world.snapshot() if row[3]}
    assert sorted((d["key"], d["delete_marker_version_id"]) for d in receipt["deleted"]) == sorted(
        (key, latest[key]) for key in world.orphan_keys
    )
    assert receipt["errors"] == []
    hooked.clear()
    undone = cli("-c", world.config_path, "undo", "--auto-approve")
    assert undone.code == 0, undone.output
    assert "6 restored" in undone.out
    assert world.snapshot() == start


def test_undo_removes_every_marker_a_request_done_twice_stacked(world: World, cli: Any, hooked: Hooks) -> None:
    """S3 carried out one DeleteObjects twice: two markers on each key, the
    receipt names the upper one. Undo removes both."""
    start = world.snapshot()
    plan = world.plan()
    hooked("before-send.s3.DeleteObjects", done_twice(plain_client(world.bucket.endpoint), world.name))
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    hooked.clear()
    assert markers_per_key(world) == {key: 2 for key in world.orphan_keys}

    undone = cli("-c", world.config_path, "undo", "--auto-approve")
    assert undone.code == 0, undone.output
    assert "6 restored" in undone.out
    world.assert_orphans_restored()
    assert world.snapshot() == start
    again = cli("-c", world.config_path, "undo", "--auto-approve")
    assert again.code == 0 and "0 restored" in again.out and "6 already restored" in again.out
    assert world.snapshot() == start


def test_after_a_half_done_lost_request_only_the_rest_is_sent_again_with_intent_journaled_first(
    world: World, cli: Any, hooked: Hooks
) -> None:
    """The first request reaches S3 for half of the keys, then the connection
    drops. Apply sends again only the keys S3 shows still current, after
    writing them to the receipt's pending list; each key ends with one marker."""
    start = world.snapshot()
    plan = world.plan()
    side = plain_client(world.bucket.endpoint)
    sent: list[list[str]] = []
    pending_then: list[list[str]] = []

    def hook(request: Any, **_kw: Any) -> Any:
        entries = requested(request)
        sent.append(sorted(e["Key"] for e in entries))
        receipt = world.receipt(plan)
        pending_then.append(sorted(k["key"] for batch in receipt["pending"] for k in batch["keys"]))
        if len(sent) == 1:
            forward(side, world.name, entries[::2])
            raise lose_answer(request, "closed")
        return None

    hooked("before-send.s3.DeleteObjects", hook)
    applied = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert applied.code == 0, applied.output
    assert len(sent) == 2
    assert sent[0] == sorted(world.orphan_keys)
    assert sent[1] == sorted(set(world.orphan_keys) - set(sorted(world.orphan_keys)[::2]))
    assert pending_then == sent  # each request's keys were journaled before it was sent
    assert markers_per_key(world) == {key: 1 for key in world.orphan_keys}
    receipt = world.receipt(plan)
    assert sorted(d["key"] for d in receipt["deleted"]) == sorted(world.orphan_keys)
    assert receipt["status"] == "complete" and receipt["pending"] == []

    hooked.clear()
    assert cli("-c", world.config_path, "undo", "--auto-approve").code == 0
    assert world.snapshot() == start


def test_request_carried_out_after_apply_stopped_waiting_is_undone_too(world: World, cli: Any, hooked: Hooks) -> None:
    """The first request times out before S3 gets to it; apply sees nothing
    deleted and sends again; then S3 carries out the first request late: a
    second marker lands on top of the one the receipt records. Undo removes both."""
    start = world.snapshot()
    plan = world.plan()
    side = plain_client(world.bucket.endpoint)
    late: list[list[dict[str, str]]] = []

    def hook(request: Any, **_kw: Any) -> Any:
        entries = requested(request)
        if not late:
            late.append(entries)
            raise lose_answer(request)
        answer = forward(side, world.name, entries)
        forward(side, world.name, late[0])  # the first request, carried out late
        return _fake_response(request, 200, result_xml(answer.get("Deleted", [])))

    hooked("before-send.s3.DeleteObjects", hook)
    applied = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert applied.code == 0, applied.output
    hooked.clear()
    assert markers_per_key(world) == {key: 2 for key in world.orphan_keys}

    undone = cli("-c", world.config_path, "undo", "--auto-approve")
    assert undone.code == 0, undone.output
    assert "6 restored" in undone.out
    assert world.snapshot() == start
