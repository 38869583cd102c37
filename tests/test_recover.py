"""``bmxgc recover``: the incident replayed with no receipt, against moto's S3 server.

The incident's job deleted objects across books/, listings/, images/ and
others with plain DeleteObjects (delete markers) and left no receipt. recover
must put back every one of them (same version id, same bytes), leave a key
uploaded again since as it is, touch no marker outside its window, and never
resurrect bmxgc's own lock objects.
"""

from __future__ import annotations

import collections
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from apply_support import Hooks, World, build_world, empty_world, request_error
from servers import S3_SERVER, Database
from ops_support import (
    delete_plainly,
    held_objects,
    next_second,
    read_json,
    saved,
    stamp,
    versions,
)
from support import CliResult, assert_one_line_error, config_doc, write_toml

Cli = Callable[..., CliResult]

INCIDENT = {
    "books/": [f"books/{n}/image_00.webp" for n in (515, 516, 517, 518, 519, 520)],
    "listings/": [f"listings/{n}/cover.jpg" for n in range(1, 5)],
    "images/": [f"images/logo-{n}.png" for n in range(1, 4)],
    "lambda/": ["lambda/handler.zip"],
    "prompts/": ["prompts/system.txt"],
}
REUPLOADED = "books/517/image_00.webp"  # uploaded again by the app after the incident
UNTOUCHED = ["config/settings.json", "books/999/image_00.webp"]  # never deleted
EARLIER = "prompts/retired.txt"  # deleted on purpose a while before the incident


def body(key: str) -> bytes:
    return f"original bytes of {key}".encode()


def lay_out_incident(world: World, *, edges: bool) -> World:
    """The bucket after the incident: every key in INCIDENT deleted by one plain
    DeleteObjects, REUPLOADED uploaded again since, EARLIER deleted before."""
    for key in [k for keys in INCIDENT.values() for k in keys] + UNTOUCHED + [EARLIER]:
        world.put(key, body(key))
    world.bucket.delete(EARLIER)
    # With edges, the incident starts in a later second than the earlier deletion.
    world.since = next_second() if edges else datetime.now(timezone.utc) - timedelta(minutes=5)
    delete_plainly(world.client, world.name, [k for keys in INCIDENT.values() for k in keys])
    world.put(REUPLOADED, b"new bytes from the app")
    return world


def assert_reupload_kept(world: World) -> None:
    assert world.now(REUPLOADED) == (world.uploaded[REUPLOADED]["version_id"], b"new bytes from the app")


@pytest.fixture
def incident(bucket: Any, sqlite_db: Database, tmp_path: Path) -> World:
    return lay_out_incident(empty_world(bucket, sqlite_db, tmp_path), edges=False)


def restorable(prefixes: list[str]) -> list[str]:
    return [k for p in prefixes for k in INCIDENT[p] if k != REUPLOADED]


ALL = list(INCIDENT)


# --------------------------------------------------------------------------- restoring


def test_recover_whole_bucket_restores_every_deleted_object_and_keeps_reupload(
    bucket: Any, sqlite_db: Database, tmp_path: Path, cli: Cli
) -> None:
    incident = lay_out_incident(empty_world(bucket, sqlite_db, tmp_path), edges=True)
    next_second()
    late = "listings/99/cover.jpg"  # deleted after the window
    incident.put(late, body(late))
    until = next_second() - timedelta(seconds=1)
    bucket.delete(late)

    result = incident.recover(cli, "--until", stamp(until), "--whole-bucket", "--auto-approve")

    assert result.code == 0, result.output
    wanted = restorable(ALL)
    assert f"Recover complete! {len(wanted)} restored, 0 failed." in result.out
    assert "(whole bucket)" in result.out
    incident.assert_restored(wanted + UNTOUCHED)
    assert_reupload_kept(incident)
    incident.assert_still_deleted([EARLIER, late])  # markers outside the window: untouched
    receipt = read_json(saved(result.out, "Receipt"))
    assert receipt["kind"] == "recover" and receipt["status"] == "complete"
    assert receipt["prefix"] == "" and receipt["bucket"] == incident.name
    assert {(r["key"], r["version_id"]) for r in receipt["restored"]} == {
        (k, incident.original[k]["version_id"]) for k in wanted
    }


def test_recover_prefix_restores_only_that_prefix(incident: World, cli: Cli) -> None:
    result = incident.recover(cli, "--prefix", "listings/", "--auto-approve")
    assert result.code == 0, result.output
    assert f"{len(INCIDENT['listings/'])} restored" in result.out
    incident.assert_restored(INCIDENT["listings/"])
    incident.assert_still_deleted(restorable(["books/", "images/", "lambda/", "prompts/"]))


def test_recover_without_prefix_uses_the_config_prefix(incident: World, cli: Cli) -> None:
    result = incident.recover(cli, "--auto-approve")
    assert result.code == 0, result.output
    assert f"s3://{incident.name}/books/" in result.out
    incident.assert_restored(restorable(["books/"]))
    assert_reupload_kept(incident)
    incident.assert_still_deleted(restorable(["listings/", "images/", "lambda/", "prompts/"]))


def test_recover_without_auto_approve_changes_nothing_but_saves_the_plan(incident: World, cli: Cli) -> None:
    before = versions(incident.client, incident.name)
    result = incident.recover(cli, "--whole-bucket")
    assert result.code == 0, result.output
    assert versions(incident.client, incident.name) == before
    assert held_objects(incident.client, incident.name) == []  # no lock left behind
    assert "Nothing was changed" in result.out and "--auto-approve" in result.out
    location = saved(result.out, "Recovery plan")
    plan = read_json(location)
    assert Path(location).parent == incident.folder / "plans"
    assert plan["kind"] == "recovery" and plan["prefix"] == ""
    wanted = restorable(ALL) + [EARLIER]  # without edges the earlier deletion falls in the window too
    assert {(r["key"], r["restores_version_id"]) for r in plan["restores"]} == {
        (k, incident.original[k]["version_id"]) for k in wanted
    }
    assert plan["stats"]["to_restore"] == len(wanted)
    # What each restore brings back is shown, as a plan shows its orphans.
    for key in wanted:  # fewer than 20: every one is shown
        assert f"+ {key}: {incident.original[key]['version_id']}" in result.out
    assert not list((incident.folder / "plans").glob("*.receipt.json"))


def test_recover_dry_run_then_approve_in_the_same_second(incident: World, cli: Cli) -> None:
    # The operator looks first, then approves at once: the second run must not
    # trip over the first run's recovery plan file.
    looked = incident.recover(cli, "--prefix", "images/")
    approved = incident.recover(cli, "--prefix", "images/", "--auto-approve")
    assert looked.code == 0, looked.output
    assert approved.code == 0, approved.output
    incident.assert_restored(INCIDENT["images/"])
    assert read_json(saved(approved.out, "Recovery plan"))["stats"]["to_restore"] == len(INCIDENT["images/"])
    assert read_json(saved(approved.out, "Receipt"))["kind"] == "recover"


def test_recover_second_run_restores_nothing_and_undo_refuses_its_receipt(incident: World, cli: Cli) -> None:
    first = incident.recover(cli, "--whole-bucket", "--auto-approve")
    assert first.code == 0, first.output
    receipt = saved(first.out, "Receipt")
    after_first = versions(incident.client, incident.name)

    second = incident.recover(cli, "--whole-bucket", "--auto-approve")
    assert second.code == 0, second.output
    assert "Nothing to restore." in second.out
    assert versions(incident.client, incident.name) == after_first

    named = cli("-c", incident.config_path, "undo", receipt, "--auto-approve")
    assert_one_line_error(named, 3, "recover")
    newest = cli("-c", incident.config_path, "undo", "--auto-approve")
    assert newest.code == 1 and "no apply receipt" in newest.err, newest.output
    assert versions(incident.client, incident.name) == after_first
    incident.assert_restored(restorable(ALL))


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--prefix", ""], "--prefix"),
        (["--prefix", "/"], "--prefix"),
        (["--prefix", "books/", "--whole-bucket"], "--whole-bucket"),
        (["--until", "2000-01-01T00:00:00Z"], "--until"),
        (["--until", "yesterday"], "--until"),
    ],
    ids=["empty-prefix", "slash-prefix", "prefix-and-whole-bucket", "until-before-since", "until-not-a-time"],
)
def test_recover_bad_arguments_refused_bucket_unchanged(
    incident: World, cli: Cli, args: list[str], needle: str
) -> None:
    before = versions(incident.client, incident.name, locks=True)
    result = incident.recover(cli, *args, "--auto-approve")
    assert_one_line_error(result, 1, needle)
    assert versions(incident.client, incident.name, locks=True) == before
    assert not (incident.folder / "plans").exists()


def test_recover_since_not_a_time_refused(incident: World, cli: Cli) -> None:
    result = cli("-c", incident.config_path, "recover", "--since", "last tuesday", "--whole-bucket")
    assert_one_line_error(result, 1, "--since", "RFC 3339")


def test_recover_without_since_is_a_usage_error_exit_1(incident: World, cli: Cli) -> None:
    result = cli("-c", incident.config_path, "recover", "--whole-bucket")
    assert result.code == 1
    assert "--since" in result.err


# --------------------------------------------------------------------------- cost


def test_recover_over_a_thousand_keys_one_request_per_thousand(bucket: Any, tmp_path: Path) -> None:
    from bmxgc import s3
    from bmxgc.api import recover
    from bmxgc.config import load_config

    keys = [f"books/{n}/image_00.webp" for n in range(1, 1101)]
    bucket.put_many(keys, b"webp")
    delete_plainly(bucket.client, bucket.name, keys)
    listed = 2 * len(keys)  # under books/: each key's version and its delete marker
    config = load_config(
        write_toml(tmp_path / "bmxgc.toml", config_doc(bucket=bucket.name, endpoint=bucket.endpoint))
    )
    client = s3.make_client(bucket.endpoint, "us-east-1")
    calls: collections.Counter[str] = collections.Counter()
    client.meta.events.register("before-call.s3", lambda model, **kw: calls.update([model.name]))
    client.meta.events.register(  # the lock's own listings of .bmxgc/locks/ are not the scan's
        "before-parameter-build.s3.ListObjectVersions",
        lambda params, **kw: calls.update(["lock listing"] if params["Prefix"].startswith(".bmxgc/") else []),
    )

    result = recover(
        config, since=datetime.now(timezone.utc) - timedelta(minutes=5), auto_approve=True, client=client
    )

    assert result.restored == len(keys) and result.errors == 0
    assert len(bucket.current_keys()) == len(keys)
    assert calls["ListObjectVersions"] - calls["lock listing"] <= math.ceil(listed / 1000)
    assert calls["DeleteObjects"] == math.ceil(len(keys) / 1000)
    assert calls["DeleteObjectVersion"] == 0 and calls["DeleteObject"] <= 1  # at most the lock's release


# --------------------------------------------------------------------------- bmxgc's own objects


def test_recover_whole_bucket_never_resurrects_lock_objects(bucket: Any, sqlite_db: Any, tmp_path: Path, cli: Cli) -> None:
    since = datetime.now(timezone.utc) - timedelta(minutes=5)
    world = build_world(bucket, sqlite_db, tmp_path)
    world.apply(world.plan())
    world.undo()
    # The lock leaves no trace now; bmxgc before it left a version and a
    # delete marker per command: such a trace, in the window.
    bucket.put(".bmxgc/locks/books%2F.json", b"{}")
    bucket.delete(".bmxgc/locks/books%2F.json")
    locks = [r for r in versions(bucket.client, bucket.name, locks=True) if r[0].startswith(".bmxgc/")]
    assert any(marker and latest for _k, _v, marker, latest, _e, _s in locks)  # markers in the window
    bucket.delete("listings/1/cover.jpg")  # and one real deletion

    result = cli("-c", world.config_path, "recover", "--since", stamp(since), "--whole-bucket", "--auto-approve")

    assert result.code == 0, result.output
    assert "1 restored" in result.out
    assert held_objects(bucket.client, bucket.name) == []
    assert ".bmxgc/" not in result.out
    receipt = read_json(saved(result.out, "Receipt"))
    assert [r["key"] for r in receipt["restored"]] == ["listings/1/cover.jpg"]
    # No lock is stuck: apply still works on the prefix. (A plan made in the
    # same second would be the very plan applied above, refused as applied.)
    next_second()
    world.apply(world.plan())
    assert all(world.current(k) is None for k in world.orphan_keys)


def test_recover_restores_bmxgc_apply_deletions_too(bucket: Any, sqlite_db: Any, tmp_path: Path, cli: Cli) -> None:
    """With the receipt lost, recover brings back what an apply deleted."""
    since = datetime.now(timezone.utc) - timedelta(minutes=5)
    world = build_world(bucket, sqlite_db, tmp_path)
    world.apply(world.plan())
    result = cli("-c", world.config_path, "recover", "--since", stamp(since), "--auto-approve")
    assert result.code == 0, result.output
    world.assert_orphans_restored()


def test_recover_key_deleted_twice_in_the_window_comes_back(incident: World, cli: Cli) -> None:
    """The job ran twice: a second plain delete stacks a second marker on the first."""
    again = INCIDENT["listings/"][:2]
    delete_plainly(incident.client, incident.name, again)
    looked = incident.recover(cli, "--prefix", "listings/")
    plan = read_json(saved(looked.out, "Recovery plan"))
    stacked = {r["key"]: r.get("stacked_delete_marker_version_ids") for r in plan["restores"]}
    if S3_SERVER == "ceph":  # Ceph writes no second marker when the latest is already one
        assert all(stacked[k] is None for k in again)
    else:
        assert all(stacked[k] and len(stacked[k]) == 1 for k in again)
    assert all(stacked[k] is None for k in INCIDENT["listings/"][2:])

    result = incident.recover(cli, "--prefix", "listings/", "--auto-approve")
    assert result.code == 0, result.output
    assert f"{len(INCIDENT['listings/'])} restored, 0 failed" in result.out
    incident.assert_restored(INCIDENT["listings/"])


def test_recover_brings_back_the_newest_version_deleted_in_the_window(incident: World, cli: Cli) -> None:
    key = INCIDENT["images/"][0]  # deleted, uploaded again, deleted again
    newer = incident.bucket.put(key, b"second upload")["VersionId"]
    incident.bucket.delete(key)
    result = incident.recover(cli, "--prefix", "images/", "--auto-approve")
    assert result.code == 0, result.output
    assert incident.now(key) == (newer, b"second upload")


def test_recover_leaves_a_key_already_deleted_before_the_window(
    bucket: Any, sqlite_db: Database, tmp_path: Path, cli: Cli
) -> None:
    incident = lay_out_incident(empty_world(bucket, sqlite_db, tmp_path), edges=True)
    # EARLIER was deleted on purpose before the window; the job deleted it again inside it.
    delete_plainly(incident.client, incident.name, [EARLIER])
    result = incident.recover(cli, "--prefix", "prompts/", "--auto-approve")
    assert result.code == 0, result.output
    incident.assert_still_deleted([EARLIER])
    incident.assert_restored(INCIDENT["prompts/"])
    plan = read_json(saved(result.out, "Recovery plan"))
    assert [r["key"] for r in plan["restores"]] == INCIDENT["prompts/"]
    # Ceph writes no second marker on EARLIER (its latest is already one): nothing in the window.
    assert plan["stats"]["nothing_beneath"] == (0 if S3_SERVER == "ceph" else 1)


def test_recover_request_failing_exits_1_receipt_partial_and_rerun_finishes(
    incident: World, cli: Cli, hooked: Hooks
) -> None:
    attempts: list[str] = []
    hooked("before-send.s3.DeleteObjects", request_error(1, 400, "ExpiredToken", attempts))
    failed = incident.recover(cli, "--whole-bucket", "--auto-approve")
    assert failed.code == 1, failed.output
    receipt = read_json(Path(saved(failed.out, "Receipt")))
    assert receipt["status"] == "partial" and receipt["finished_at"]
    assert {e["code"] for e in receipt["errors"]} == {"RequestFailed"}
    assert receipt["restored"] == []
    incident.assert_still_deleted(restorable(ALL))

    hooked.clear()
    next_second()  # the same second's recovery plan is the one that failed
    again = incident.recover(cli, "--whole-bucket", "--auto-approve")
    assert again.code == 0, again.output
    incident.assert_restored(restorable(ALL))
    assert_reupload_kept(incident)
