"""Apply then undo against moto's S3 server: what was deleted comes back with
its original version id, ETag and bytes; receipts say what happened; undo is
idempotent and leaves newer uploads alone."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from bmxgc.errors import GateRefused

from apply_support import OUTSIDE, PREFIX, World, build_world

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def apply_ok(cli: Any, world: World, plan: Path) -> Any:
    result = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert result.code == 0, result.output
    return result


def undo_ok(cli: Any, world: World, *receipt: Path) -> Any:
    result = cli("-c", world.config_path, "undo", *receipt, "--auto-approve")
    assert result.code == 0, result.output
    return result


def test_apply_undo_incident_round_trip_restores_versions_etags_and_bytes(pg_world: World, cli: Any) -> None:
    world = pg_world
    start = world.snapshot()
    plan = world.plan()
    plan_doc = json.loads(plan.read_text(encoding="utf-8"))

    applied = apply_ok(cli, world, plan)
    assert "6 deleted, 0 failed" in applied.out
    for key in world.orphan_keys:
        assert world.current(key) is None, f"{key} still current"
    for key in world.live_keys + OUTSIDE:
        assert world.current(key) == world.original[key], f"{key} was touched"

    # The receipt, as docs/reference.md names its fields.
    receipt = world.receipt(plan)
    assert receipt["format_version"] == 1
    assert receipt["plan_hash"] == plan_doc["plan_hash"]
    assert (receipt["bucket"], receipt["prefix"]) == (world.name, PREFIX)
    assert RFC3339.match(receipt["started_at"]) and RFC3339.match(receipt["finished_at"])
    assert receipt["started_at"] <= receipt["finished_at"]
    assert receipt["status"] == "complete"
    assert receipt["overrides"] == {}
    assert receipt["errors"] == []
    assert sorted(d["key"] for d in receipt["deleted"]) == sorted(world.orphan_keys)
    markers = {m[0]: m[1] for m in world.snapshot() if m[2] and m[3]}  # latest delete markers
    for entry in receipt["deleted"]:
        assert set(entry) >= {"key", "version_id", "delete_marker_version_id"}
        assert entry["version_id"] == world.original[entry["key"]]["version_id"]
        assert entry["delete_marker_version_id"] == markers[entry["key"]]

    undone = undo_ok(cli, world, world.receipt_path(plan))
    assert "6 restored" in undone.out
    world.assert_orphans_restored()
    # Exactly as it began, plus the six markers' history gone: undo removes only its markers.
    assert world.snapshot() == start
    assert world.lock_keys() == []


def test_undo_twice_second_restores_nothing_changes_nothing(world: World, cli: Any) -> None:
    plan = world.plan()
    apply_ok(cli, world, plan)
    undo_ok(cli, world)
    after_first = world.snapshot()
    second = undo_ok(cli, world)
    assert "0 restored" in second.out and "6 already restored" in second.out
    assert world.snapshot() == after_first
    world.assert_orphans_restored()


def test_undo_after_newer_upload_leaves_it_current_and_reports_it(world: World, cli: Any) -> None:
    plan = world.plan()
    apply_ok(cli, world, plan)
    key = world.orphan_keys[1]
    world.bucket.put(key, b"uploaded again after the apply")
    newer = world.current(key)
    assert newer is not None

    undone = undo_ok(cli, world)
    assert "5 restored, 1 left alone" in undone.out
    assert key in undone.out and newer["version_id"] in undone.out
    assert world.current(key) == newer  # the new upload stays current
    for other in world.orphan_keys:
        if other != key:
            assert world.current(other)["version_id"] == world.original[other]["version_id"]  # type: ignore[index]

    record = json.loads((world.plans_dir / f"{plan.stem}.undo.json").read_text(encoding="utf-8"))
    [run] = record["runs"]
    assert [s["key"] for s in run["skipped"]] == [key]
    assert sorted(r["key"] for r in run["restored"]) == sorted(set(world.orphan_keys) - {key})


def test_undo_record_beside_receipt_appends_each_run(world: World, cli: Any) -> None:
    plan = world.plan()
    apply_ok(cli, world, plan)
    undo_ok(cli, world)
    undo_ok(cli, world)
    record_path = world.receipt_path(plan).with_name(f"{plan.stem}.undo.json")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    assert record["plan_hash"] == world.receipt(plan)["plan_hash"]
    first, second = record["runs"]
    assert sorted(r["key"] for r in first["restored"]) == sorted(world.orphan_keys)
    for r in first["restored"]:
        assert r["version_id"] == world.original[r["key"]]["version_id"]
    assert second["restored"] == [] and second["already_restored"] == 6
    # The receipt itself is left as apply wrote it.
    assert world.receipt(plan)["status"] == "complete"


def test_undo_without_receipt_named_picks_newest(bucket: Any, sqlite_db: Any, tmp_path: Path, cli: Any) -> None:
    world = build_world(bucket, sqlite_db, tmp_path, live=12, orphans=3)
    first_plan = world.plan()
    apply_ok(cli, world, first_plan)
    time.sleep(1.05)  # receipts record started_at to the second
    later = [f"{PREFIX}2000/late-{i}.webp" for i in range(3)]
    for key in later:
        answer = world.bucket.put(key, b"later orphan")
        world.original[key] = {"version_id": answer["VersionId"], "etag": answer["ETag"].strip('"'), "body": b"later orphan"}
    first_keys, world.orphan_keys = world.orphan_keys, later
    second_plan = world.plan()
    apply_ok(cli, world, second_plan)

    undone = undo_ok(cli, world)
    assert second_plan.stem in undone.out
    world.assert_orphans_restored()  # the later apply's objects
    assert all(world.current(k) is None for k in first_keys)  # the earlier apply untouched


def test_apply_same_plan_twice_refused(world: World, cli: Any) -> None:
    plan = world.plan()
    apply_ok(cli, world, plan)
    before = world.snapshot()
    again = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert again.code == 3, again.output
    assert "applied before" in again.err and "bmxgc.toml undo" in again.err
    assert world.snapshot() == before
    # Even after undo: the receipt stays, so the old plan is not replayed.
    undo_ok(cli, world)
    restored = world.snapshot()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 3
    assert world.snapshot() == restored


def test_undo_no_terminal_no_auto_approve_refused_nothing_restored(world: World, cli: Any) -> None:
    plan = world.plan()
    apply_ok(cli, world, plan)
    before = world.snapshot()
    result = cli("-c", world.config_path, "undo")
    assert result.code == 3
    assert "refused by gate 'consent'" in result.err
    assert world.snapshot() == before


def test_undo_with_other_prefix_config_refused(world: World, cli: Any) -> None:
    plan = world.plan()
    apply_ok(cli, world, plan)
    receipt = world.receipt_path(plan)
    world.write_config(prefix="listings/")
    before = world.snapshot()
    result = cli("-c", world.config_path, "undo", receipt, "--auto-approve")
    assert result.code == 3 and "environment" in result.err
    assert world.snapshot() == before


def test_apply_undo_output_and_files_hold_no_password(pg_world: World, cli: Any, monkeypatch: Any) -> None:
    world = pg_world
    # The password travels only in the environment, as docs/reference.md says; the
    # config file's URL is the same one without it.
    monkeypatch.setenv("BMXGC_DATABASE_URL", world.db.url)
    from sqlalchemy.engine import make_url

    without_password = make_url(world.db.url).set(password=None).render_as_string(hide_password=False)
    world.write_config(database_url=without_password)
    made = cli("-c", world.config_path, "plan")
    assert made.code == 0, made.output
    plan = made.saved_path()
    outputs = [made.output]
    outputs.append(cli("-c", world.config_path, "apply", plan, "--auto-approve").output)
    # A refusal prints the database URLs it compared: still without password.
    monkeypatch.setenv("BMXGC_DATABASE_URL", world.db.url.replace("127.0.0.1", "localhost"))
    outputs.append(cli("-c", world.config_path, "apply", plan, "--auto-approve").output)
    monkeypatch.setenv("BMXGC_DATABASE_URL", world.db.url)
    outputs.append(cli("-c", world.config_path, "undo", "--auto-approve").output)
    files = [p.read_text(encoding="utf-8") for p in world.plans_dir.iterdir()]
    assert len(files) >= 3  # plan, receipt, undo record
    for secret in [*world.db.secrets, os.environ["AWS_SECRET_ACCESS_KEY"]]:
        for text in outputs + files:
            assert secret not in text
    world.assert_orphans_restored()


def _expire_noncurrent(world: World, prefix: str, days: int) -> None:
    world.client.put_bucket_lifecycle_configuration(
        Bucket=world.name,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "expire-old-versions",
                    "Status": "Enabled",
                    "Filter": {"Prefix": prefix},
                    "NoncurrentVersionExpiration": {"NoncurrentDays": days},
                }
            ]
        },
    )


def test_apply_noncurrent_expiry_rule_receipt_records_undo_window(world: World, cli: Any) -> None:
    from datetime import timedelta

    from bmxgc.model import parse_rfc3339, utc_now

    _expire_noncurrent(world, PREFIX, 30)
    plan = world.plan()
    applied = apply_ok(cli, world, plan)
    until = world.receipt(plan)["undo_until"]
    assert until is not None
    assert abs(parse_rfc3339(until) - (utc_now() + timedelta(days=30))) < timedelta(minutes=5)
    assert f"Undo possible until {until}" in applied.out


def test_apply_expiry_rule_on_other_prefix_no_undo_deadline(world: World, cli: Any) -> None:
    _expire_noncurrent(world, "listings/", 1)
    plan = world.plan()
    apply_ok(cli, world, plan)
    assert world.receipt(plan).get("undo_until") is None


def test_apply_undo_round_trip_unusual_keys(world: World, cli: Any) -> None:
    """Spaces, '+', '%20', decomposed and composed 'é', an emoji, a tab, XML's
    special characters: each is deleted and restored as exactly itself."""
    unusual = [
        "books/a b+c%20d/e\u0301.webp",
        "books/\u00e9.webp",
        "books/\U0001F600.jpg",
        "books/tab\there.jpg",
        "books/amp&lt;<x>.jpg",
        "books/q'\"uote.jpg",
    ]
    for key in unusual:
        answer = world.bucket.put(key, key.encode())
        world.original[key] = {"version_id": answer["VersionId"], "etag": answer["ETag"].strip('"'), "body": key.encode()}
    world.orphan_keys += unusual
    world.write_config(safety={"max_orphan_ratio": 0.6})
    start = world.snapshot()
    plan = world.plan()
    assert "12 deleted" in apply_ok(cli, world, plan).out
    assert all(world.current(k) is None for k in unusual)
    assert "12 restored" in undo_ok(cli, world).out
    world.assert_orphans_restored()
    assert world.snapshot() == start


def test_undo_edited_receipt_never_deletes_a_real_version(world: World, cli: Any) -> None:
    """A receipt whose marker id was changed to a live object's version id:
    undo removes only delete markers, so the object is left alone."""
    plan = world.plan()
    apply_ok(cli, world, plan)
    path = world.receipt_path(plan)
    receipt = json.loads(path.read_text(encoding="utf-8"))
    victim = world.live_keys[0]
    receipt["deleted"][0]["key"] = victim
    receipt["deleted"][0]["delete_marker_version_id"] = world.original[victim]["version_id"]
    path.write_text(json.dumps(receipt), encoding="utf-8")
    undone = undo_ok(cli, world, path)
    assert "5 restored" in undone.out
    assert world.current(victim) == world.original[victim]
    versions = world.client.list_object_versions(Bucket=world.name, Prefix=victim)["Versions"]
    assert [v["VersionId"] for v in versions] == [world.original[victim]["version_id"]]


def test_undo_names_the_receipt_it_takes_back_in_its_prompt_and_output(world: World, cli: Any) -> None:
    # 'bmxgc undo' with no argument picks the newest receipt: the operator must
    # see which apply that is before typing 'yes', and after.
    plan = world.plan()
    world.apply(plan)
    receipt_path = world.receipt_path(plan)
    receipt = world.receipt(plan)
    asked: list[str] = []

    def confirm(summary: str) -> bool:
        asked.append(summary)
        return False

    with pytest.raises(GateRefused):
        world.undo(None, auto_approve=False, confirm=confirm)
    by = receipt["applied_by"]
    expected = (
        f"Receipt {receipt_path}: plan {receipt['plan_hash']}, applied {receipt['started_at']} "
        f"by {by['user']}@{by['host']}, {len(world.orphan_keys)} objects deleted (complete)"
    )
    assert asked and asked[0].splitlines()[0] == expected
    undone = cli("-c", world.config_path, "undo", "--auto-approve")
    assert undone.code == 0, undone.output
    assert undone.out.splitlines()[0] == expected
    world.assert_orphans_restored()
