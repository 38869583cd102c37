"""One apply or undo at a time per bucket and prefix: the S3 lock object, a
stale lock reported with holder and age, ``bmxgc unlock``, and two applies
racing for the same prefix."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from apply_support import Hooks, World, plant_foreign_lock, request_error
from bmxgc.errors import GateRefused
from bmxgc.model import rfc3339, utc_now
from ops_support import versions
from support import LOCKS, assert_one_line_error

LOCK_KEY = LOCKS + "books%2F.json"


def plant_stale_lock(world: World, age: timedelta) -> str:
    """A lock left by an apply on another machine that died ``age`` ago; its ETag."""
    return str(plant_foreign_lock(world, age)["ETag"])


def lock_etag(world: World) -> str | None:
    try:
        return str(world.client.head_object(Bucket=world.name, Key=LOCK_KEY)["ETag"])
    except world.client.exceptions.ClientError:
        return None


def test_apply_stale_lock_refused_naming_holder_and_age(world: World, cli: Any) -> None:
    plan = world.plan()
    plant_stale_lock(world, timedelta(hours=3, minutes=5))
    before = world.snapshot()
    result = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert result.code == 3, result.output
    assert "refused by gate 'lock'" in result.err
    assert "ghost@build-box-9 pid 4242" in result.err
    assert "3h 5m ago" in result.err
    assert "bmxgc.toml unlock" in result.err
    assert world.snapshot() == before


def test_unlock_without_terminal_or_auto_approve_refused_lock_kept(world: World, cli: Any) -> None:
    etag = plant_stale_lock(world, timedelta(hours=2))
    result = cli("-c", world.config_path, "unlock")
    assert result.code == 3, result.output
    assert "ghost@build-box-9" in result.err and "--auto-approve" in result.err
    assert lock_etag(world) == etag


def test_unlock_auto_approve_breaks_lock_then_apply_proceeds(world: World, cli: Any) -> None:
    plan = world.plan()
    plant_stale_lock(world, timedelta(days=2))
    result = cli("-c", world.config_path, "unlock", "--auto-approve")
    assert result.code == 0, result.output
    assert "ghost@build-box-9" in result.out and "2d" in result.out
    assert lock_etag(world) is None
    applied = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert applied.code == 0, applied.output
    assert all(world.current(k) is None for k in world.orphan_keys)


def test_unlock_with_no_lock_says_so(world: World, cli: Any) -> None:
    result = cli("-c", world.config_path, "unlock", "--auto-approve")
    assert result.code == 0
    assert "No lock" in result.out


def test_unlock_confirm_declined_keeps_lock(world: World) -> None:
    from bmxgc.commands.unlock import unlock

    etag = plant_stale_lock(world, timedelta(hours=1))
    asked: list[str] = []
    def decline(text: str) -> bool:
        asked.append(text)
        return False

    try:
        unlock(world.config(), confirm=decline)
    except GateRefused as refusal:
        assert refusal.gate == "consent"
    else:
        raise AssertionError("unlock went ahead without a yes")
    assert "ghost@build-box-9" in asked[0]
    assert lock_etag(world) == etag


def test_lock_released_after_apply_and_undo(world: World) -> None:
    plan = world.plan()
    world.apply(plan)
    assert world.lock_keys() == []
    world.undo()
    assert world.lock_keys() == []


def test_apply_two_at_once_exactly_one_deletes(world: World, tmp_path: Path) -> None:
    plan = world.plan()
    # The same reviewed plan, handed to two operators (two file names, two receipts).
    twin = tmp_path / "twin" / plan.name
    twin.parent.mkdir()
    shutil.copy(plan, twin)
    barrier = threading.Barrier(2, timeout=20)
    outcomes: dict[str, Any] = {}

    def run(name: str, path: Path) -> None:
        client = world.s3_client()

        # Both reach the lock's conditional PUT at the same moment.
        def wait(**_kw: Any) -> None:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass

        client.meta.events.register("before-call.s3.PutObject", wait)
        try:
            outcomes[name] = world.apply(path, client=client)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcomes[name] = exc

    threads = [threading.Thread(target=run, args=(n, p)) for n, p in (("a", plan), ("b", twin))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    winners = [o for o in outcomes.values() if not isinstance(o, Exception)]
    losers = [o for o in outcomes.values() if isinstance(o, Exception)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert winners[0].deleted == 6
    assert isinstance(losers[0], GateRefused), repr(losers[0])
    assert losers[0].gate == "lock", losers[0]
    # Each orphan got exactly one delete marker: nothing was deleted twice.
    markers = [row for row in world.snapshot() if row[2]]
    assert sorted(row[0] for row in markers) == sorted(world.orphan_keys)
    assert world.lock_keys() == []


def test_apply_refused_and_lock_release_failing_still_shows_refusal(world: World, cli: Any, hooked: Hooks) -> None:
    """S3 stops answering between the refusal and the lock's release: the
    operator still sees the refusal (exit 3), and that the lock stays."""
    plan = world.plan()
    world.bucket.delete(world.orphan_keys[0])  # drift
    before = world.snapshot()
    hooked("before-send.s3.DeleteObject", request_error(1, 400, "ExpiredToken", []))
    result = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert result.code == 3, result.output
    assert "refused by gate 'drift'" in result.err
    assert f"{world.orphan_keys[0]}: planned" in result.err  # the key-by-key report is still there
    assert "could not be released" in result.err and "bmxgc.toml unlock" in result.err
    assert world.lock_keys() == [LOCK_KEY]
    assert world.snapshot() == before


def test_apply_waiting_for_consent_holds_lock_with_owner_and_plan(world: World, cli: Any) -> None:
    """While one operator reads the prompt, the lock names them, and a second
    apply (another machine, same prefix) is refused naming the first."""
    plan = world.plan()
    plan_hash = json.loads(plan.read_text(encoding="utf-8"))["plan_hash"]
    seen: dict[str, Any] = {}

    def at_the_prompt(_summary: str) -> bool:
        seen["lock"] = json.loads(world.client.get_object(Bucket=world.name, Key=LOCK_KEY)["Body"].read())
        seen["other"] = cli("-c", world.config_path, "apply", plan, "--auto-approve")
        return False

    try:
        world.apply(plan, auto_approve=False, confirm=at_the_prompt)
    except GateRefused as refusal:
        assert refusal.gate == "consent"
    holder = seen["lock"]
    assert holder["command"] == "apply" and holder["plan_hash"] == plan_hash
    assert {"user", "host", "pid", "acquired_at"} <= set(holder)
    other = seen["other"]
    assert other.code == 3 and "refused by gate 'lock'" in other.err
    assert f"{holder['user']}@{holder['host']} pid {holder['pid']}" in other.err
    assert world.lock_keys() == []
    assert all(world.current(k) is not None for k in world.orphan_keys)


def test_apply_refused_by_whole_bucket_lock_then_unlock_whole_bucket(world: World, cli: Any) -> None:
    # A whole-bucket recover (lock .bmxgc/locks/.json) guards books/ too.
    plan = world.plan()
    holder = {"user": "ops", "host": "laptop-1", "pid": "77", "command": "recover", "plan_hash": "(recover)",
              "acquired_at": rfc3339(utc_now() - timedelta(minutes=4))}
    world.client.put_object(Bucket=world.name, Key=LOCKS + ".json", Body=json.dumps(holder).encode())
    before = world.snapshot()
    result = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert result.code == 3, result.output
    assert "refused by gate 'lock'" in result.err and "ops@laptop-1" in result.err
    assert "bmxgc.toml unlock --whole-bucket" in result.err
    assert world.snapshot() == before
    assert lock_etag(world) is None  # apply gave its own books/ lock back
    hint = cli("-c", world.config_path, "unlock", "--auto-approve")
    assert hint.code == 0 and "bmxgc.toml unlock --whole-bucket" in hint.out
    broken = cli("-c", world.config_path, "unlock", "--whole-bucket", "--auto-approve")
    assert broken.code == 0 and "ops@laptop-1" in broken.out
    applied = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert applied.code == 0, applied.output


def test_apply_refused_by_lock_on_a_prefix_inside_its_own(world: World, cli: Any) -> None:
    plan = world.plan()
    world.client.put_object(
        Bucket=world.name, Key=LOCKS + "books%2F2024%2F.json", Body=json.dumps({"user": "x"}).encode()
    )
    before = world.snapshot()
    result = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert result.code == 3 and "bmxgc.toml unlock --prefix books/2024/" in result.err
    assert world.snapshot() == before


# --------------------------------------------------------------------------- a live holder (issue 10, item 12)


def _apply_at_its_prompt(world: World, plan: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``bmxgc apply PLAN`` in its own process, on a terminal (a pty), stopped at
    its consent prompt: it holds the lock and is alive. Returns the process and
    the pty's master side (write 'no' there to let it go)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bmxgc", "-c", str(world.config_path), "apply", str(plan)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while b"Enter a value" not in seen:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"apply did not reach its prompt (exit {proc.returncode}): {seen!r}")
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            seen += os.read(master, 4096)
    return proc, master


def test_unlock_refuses_the_lock_of_an_apply_still_running_on_this_host(world: World, cli: Any) -> None:
    plan = world.plan()
    proc, master = _apply_at_its_prompt(world, plan)
    try:
        etag = lock_etag(world)
        assert etag is not None
        before = versions(world.client, world.name, locks=True)
        for args in (("unlock", "--auto-approve"), ("unlock",)):
            refused = cli("-c", world.config_path, *args)
            assert refused.code == 3, refused.output
            line = assert_one_line_error(refused, 3, "refused by gate 'lock'", f"pid {proc.pid}", "still running")
            assert "stop it" in line and "wait" in line and "--break-live-lock" in line
            assert lock_etag(world) == etag
            assert versions(world.client, world.name, locks=True) == before
        # Forced, with a flag that says so (and consent): the lock goes.
        broken = cli("-c", world.config_path, "unlock", "--break-live-lock", "--auto-approve")
        assert broken.code == 0, broken.output
        assert f"pid {proc.pid}" in broken.out
        assert lock_etag(world) is None
        os.write(master, b"no\n")
        assert proc.wait(timeout=60) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert world.snapshot() == {row for row in before if not row[0].startswith(".bmxgc/")}


def test_break_live_lock_still_asks_for_consent(world: World, cli: Any) -> None:
    """The flag lifts only the refusal of a live holder: with no terminal and
    no --auto-approve, nothing is broken."""
    from bmxgc import lock
    from bmxgc.commands.unlock import unlock

    with lock.held(world.s3_client(), world.name, "books/", command="apply", plan_hash="sha256:" + "d" * 64) as held:
        try:
            unlock(world.config(), break_live_lock=True)
        except GateRefused as refusal:
            assert refusal.gate == "consent"
        else:
            raise AssertionError("a live lock was broken without consent")
        assert lock_etag(world) == f'"{held.etag}"'


# --------------------------------------------------------------------------- an unreadable lock (issue 10, item 14)


@pytest.mark.parametrize(
    "body",
    [b"[1,2]", b"null", b"{}", b'{"user": "x", "note": "no host, no pid"}', b"\xff\xfe\x00 not UTF-8", b"{not json"],
    ids=["list", "null", "empty-object", "missing-fields", "not-utf8", "not-json"],
)
def test_unreadable_lock_is_named_by_apply_and_broken_by_unlock_with_consent(
    world: World, cli: Any, body: bytes
) -> None:
    plan = world.plan()
    world.client.put_object(Bucket=world.name, Key=LOCK_KEY, Body=body)
    etag = lock_etag(world)
    before = world.snapshot()

    applied = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert_one_line_error(applied, 3, "refused by gate 'lock'", LOCK_KEY, "unreadable", "bmxgc.toml unlock")
    assert "unexpected" not in applied.err
    assert world.snapshot() == before
    assert lock_etag(world) == etag

    asked = cli("-c", world.config_path, "unlock")  # no terminal, no --auto-approve
    assert_one_line_error(asked, 3, "unreadable", "--auto-approve")
    assert lock_etag(world) == etag

    broken = cli("-c", world.config_path, "unlock", "--auto-approve")
    assert broken.code == 0, broken.output
    assert "unreadable" in broken.out and LOCK_KEY in broken.out
    assert lock_etag(world) is None
    assert world.snapshot() == before

    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
