"""Every apply gate refuses with exit 3, names itself, and leaves the bucket
exactly as it was (every version and delete marker compared before/after).
Against moto's S3 server over HTTP; references in SQLite or PostgreSQL."""

from __future__ import annotations

import re

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from apply_support import PREFIX, World, build_world
from bmxgc.errors import GateRefused
from bmxgc.model import parse_rfc3339
from support import refused, spec_hash


def apply_cli(cli: Any, world: World, plan: Path, *extra: str) -> Any:
    return cli("-c", world.config_path, "apply", plan, *extra)


def rewrite_plan(plan: Path, change: Any, *, rehash: bool) -> Path:
    """A copy of the plan with ``change(doc)`` applied (hash recomputed or not)."""
    doc = json.loads(plan.read_text(encoding="utf-8"))
    change(doc)
    if rehash:
        doc["plan_hash"] = spec_hash(doc)
    out = plan.with_name("edited-" + plan.name)
    out.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return out


# --------------------------------------------------------------------------- 1 integrity


def test_apply_tampered_plan_refused_bucket_unchanged(world: World, cli: Any) -> None:
    plan = world.plan()
    # Someone slips a live object into the reviewed plan.
    live = world.original[world.live_keys[0]]

    def add_live(doc: dict[str, Any]) -> None:
        doc["orphans"].append(
            {"key": world.live_keys[0], "version_id": live["version_id"], "etag": live["etag"], "size": 1,
             "last_modified": doc["created_at"]}
        )
        doc["orphans"].sort(key=lambda o: o["key"].encode())  # in order: only the hash can tell

    tampered = rewrite_plan(plan, add_live, rehash=False)
    before = world.snapshot()
    result = apply_cli(cli, world, tampered, "--auto-approve")
    assert result.code == 3, result.output
    assert "plan_hash does not match" in result.err
    assert world.snapshot() == before


def test_apply_unknown_format_version_refused_bucket_unchanged(world: World, cli: Any) -> None:
    plan = world.plan()
    newer = rewrite_plan(plan, lambda doc: doc.update(format_version=2), rehash=True)
    before = world.snapshot()
    result = apply_cli(cli, world, newer, "--auto-approve")
    assert result.code == 3, result.output
    assert "unknown format_version 2" in result.err
    assert world.snapshot() == before


def test_apply_missing_plan_file_refused(world: World, cli: Any) -> None:
    result = apply_cli(cli, world, world.root / "nope.json", "--auto-approve")
    assert result.code == 1  # a bad argument, not a plan that failed verification
    assert "not found" in result.err


# --------------------------------------------------------------------------- 2 environment


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"bucket": "some-other-bucket"}, "s3.bucket"),
        ({"prefix": "listings/"}, "s3.prefix"),
        ({"database_url": "sqlite:///other.db"}, "database.url"),
    ],
    ids=["bucket", "prefix", "database"],
)
def test_apply_other_environment_refused_bucket_unchanged(
    world: World, cli: Any, change: dict[str, Any], named: str
) -> None:
    plan = world.plan()
    world.write_config(**change)
    before = world.snapshot()
    err = refused(apply_cli(cli, world, plan, "--auto-approve"), "environment")
    assert named in err
    assert world.snapshot() == before


# --------------------------------------------------------------------------- 3 freshness


def test_apply_plan_older_than_max_plan_age_refused_bucket_unchanged(world: World) -> None:
    plan = world.plan()
    created = parse_rfc3339(json.loads(plan.read_text())["created_at"])
    before = world.snapshot()
    with pytest.raises(GateRefused) as excinfo:
        world.apply(plan, now=created + timedelta(hours=25))
    assert excinfo.value.gate == "freshness"
    assert excinfo.value.exit_code == 3
    assert "plan' again" in str(excinfo.value)
    assert world.snapshot() == before
    # The same plan, a little younger, applies: the gate measured age, not something else.
    world.apply(plan, now=created + timedelta(hours=23))
    assert all(world.current(k) is None for k in world.orphan_keys)


def test_apply_stricter_max_plan_age_today_refused(world: World, cli: Any) -> None:
    plan = world.plan()
    created = parse_rfc3339(json.loads(plan.read_text())["created_at"])
    world.write_config(safety={"max_plan_age": "1h"})
    before = world.snapshot()
    with pytest.raises(GateRefused, match="freshness"):
        world.apply(plan, now=created + timedelta(hours=2))
    assert world.snapshot() == before


# --------------------------------------------------------------------------- 4 scope


def test_apply_protect_pattern_added_today_refused_bucket_unchanged(world: World, cli: Any) -> None:
    plan = world.plan()
    protected = world.orphan_keys[1]
    pattern = protected.rsplit("/", 1)[0] + "/*"
    world.write_config(safety={"protect": [pattern]})
    before = world.snapshot()
    err = refused(apply_cli(cli, world, plan, "--auto-approve"), "scope")
    assert f"{protected}: matches protect pattern {pattern!r}" in err
    assert world.orphan_keys[0] not in err  # only the protected key is named
    assert world.snapshot() == before


def test_apply_plan_with_cross_check_hit_refused_bucket_unchanged(world: World, cli: Any) -> None:
    # An undeclared column still uses one orphan (without the prefix, as the app stores keys).
    key = world.orphan_keys[3]
    world.db.execute("CREATE TABLE listings (id INTEGER PRIMARY KEY, cover TEXT)")
    world.db.execute(f"INSERT INTO listings (id, cover) VALUES (1, {world.db.param})", (key.removeprefix(PREFIX),))
    made = cli("-c", world.config_path, "plan", "--cross-check")
    assert made.code == 0, made.output
    plan = made.saved_path()
    before = world.snapshot()
    err = refused(apply_cli(cli, world, plan, "--auto-approve"), "scope")
    assert key in err and "listings.cover" in err
    assert world.snapshot() == before


# --------------------------------------------------------------------------- 5 volume


@pytest.fixture
def heavy(bucket: Any, sqlite_db: Any, tmp_path: Path) -> World:
    """6 of 10 objects under the prefix are orphans: ratio 0.6 > the default 0.5."""
    return build_world(bucket, sqlite_db, tmp_path, live=4, orphans=6)


def test_apply_orphan_ratio_above_max_refused_bucket_unchanged(heavy: World, cli: Any) -> None:
    plan = heavy.plan()
    before = heavy.snapshot()
    err = refused(apply_cli(cli, heavy, plan, "--auto-approve"), "volume")
    assert "6 of the 10 objects under" in err and "nothing references" in err
    for cause in ("wrong or empty database", "lagging replica", "key mapping", "truncated table"):
        assert cause in err
    assert not re.search(r"--max-orphan-ratio\s*=?\s*[0-9]", err)  # never hands out the override
    assert heavy.snapshot() == before


def test_apply_max_orphan_ratio_override_applies_and_is_recorded(heavy: World, cli: Any) -> None:
    plan = heavy.plan()
    result = apply_cli(cli, heavy, plan, "--auto-approve", "--max-orphan-ratio", "0.6")
    assert result.code == 0, result.output
    assert "max_orphan_ratio=0.6" in result.out
    assert heavy.receipt(plan)["overrides"] == {"max_orphan_ratio": 0.6}
    assert all(heavy.current(k) is None for k in heavy.orphan_keys)


def test_apply_max_orphan_ratio_override_below_ratio_still_refused(heavy: World, cli: Any) -> None:
    plan = heavy.plan()
    before = heavy.snapshot()
    refused(apply_cli(cli, heavy, plan, "--auto-approve", "--max-orphan-ratio", "0.55"), "volume")
    assert heavy.snapshot() == before


def test_apply_more_orphans_than_max_deletes_refused_bucket_unchanged(world: World, cli: Any) -> None:
    plan = world.plan()
    world.write_config(safety={"max_deletes": 5})
    before = world.snapshot()
    err = refused(apply_cli(cli, world, plan, "--auto-approve"), "volume")
    assert "max_deletes 5" in err
    assert world.snapshot() == before


def test_apply_wrong_key_mapping_refused_even_with_override(world: World, cli: Any) -> None:
    # The incident's mapping: the database holds 515/image_00.webp, S3 books/515/image_00.webp.
    world.doc["references"][0]["keys"] = ["{value}"]
    from support import write_toml

    write_toml(world.config_path, world.doc)
    from bmxgc.commands.plan import plan as make_plan

    naive = Path(make_plan(world.config()).path or "")
    before = world.snapshot()
    err = refused(apply_cli(cli, world, naive, "--auto-approve", "--max-orphan-ratio", "1"), "volume")
    assert "mapping is wrong" in err
    assert world.snapshot() == before


# --------------------------------------------------------------------------- 6 lock


def test_apply_lock_held_by_another_refused_bucket_unchanged(world: World, cli: Any) -> None:
    plan = world.plan()
    key = ".bmxgc/locks/" + "books%2F.json"
    holder = {"user": "alice", "host": "ci-runner-7", "pid": "4242", "command": "apply",
              "plan_hash": "sha256:" + "b" * 64, "acquired_at": "2026-01-01T00:00:00Z"}
    world.client.put_object(Bucket=world.name, Key=key, Body=json.dumps(holder).encode())
    before = world.snapshot()
    err = refused(apply_cli(cli, world, plan, "--auto-approve"), "lock")
    assert "alice@ci-runner-7" in err and "pid 4242" in err
    assert "bmxgc.toml unlock" in err
    assert world.snapshot() == before
    assert world.lock_keys() == [key]  # the other holder's lock is left alone


# --------------------------------------------------------------------------- 7 reversibility


def test_apply_unversioned_bucket_refused_bucket_unchanged(make_bucket: Any, sqlite_db: Any, tmp_path: Path, cli: Any) -> None:
    unversioned = build_world(make_bucket(versioned=False), sqlite_db, tmp_path)
    plan = unversioned.plan()
    before = unversioned.snapshot()
    err = refused(apply_cli(cli, unversioned, plan, "--auto-approve"), "reversibility")
    assert "enable versioning" in err
    assert unversioned.snapshot() == before
    assert unversioned.lock_keys() == []  # the lock was released


# --------------------------------------------------------------------------- 8 drift


def test_apply_planned_object_reuploaded_refused_key_by_key(world: World, cli: Any) -> None:
    plan = world.plan()
    key = world.orphan_keys[2]
    world.bucket.put(key, b"a new upload with other bytes")
    new = world.current(key)
    assert new is not None
    before = world.snapshot()
    err = refused(apply_cli(cli, world, plan, "--auto-approve"), "drift")
    line = next(line for line in err.splitlines() if line.strip().startswith(key))
    assert f"planned {world.original[key]['version_id']}" in line
    assert f"now: version {new['version_id']}" in line
    assert "1 planned object(s) changed" in err
    assert world.snapshot() == before  # no other orphan was deleted either


def test_apply_planned_object_deleted_since_refused(world: World, cli: Any) -> None:
    plan = world.plan()
    key = world.orphan_keys[0]
    world.bucket.delete(key)
    before = world.snapshot()
    err = refused(apply_cli(cli, world, plan, "--auto-approve"), "drift")
    assert f"{key}: planned" in err and "deleted" in err
    assert world.snapshot() == before


def test_apply_planned_key_referenced_by_new_row_refused(pg_world: World, cli: Any) -> None:
    plan = pg_world.plan()
    key = pg_world.orphan_keys[4]
    pg_world.add_reference(key.removeprefix(PREFIX))  # the app now uses it
    before = pg_world.snapshot()
    err = refused(apply_cli(cli, pg_world, plan, "--auto-approve"), "drift")
    assert f"{key}: now referenced by source 'book_images'" in err
    assert pg_world.snapshot() == before


def test_apply_drift_report_lists_first_twenty_and_a_count(bucket: Any, sqlite_db: Any, tmp_path: Path, cli: Any) -> None:
    many = build_world(bucket, sqlite_db, tmp_path, live=30, orphans=25)
    plan = many.plan()
    many.client.delete_objects(Bucket=many.name, Delete={"Objects": [{"Key": k} for k in many.orphan_keys]})
    before = many.snapshot()
    err = refused(apply_cli(cli, many, plan, "--auto-approve"), "drift")
    assert sum(1 for line in err.splitlines() if line.startswith("  books/")) == 20
    assert "and 5 more (25 in all)" in err
    assert many.snapshot() == before


# --------------------------------------------------------------------------- 9 consent


def test_apply_no_terminal_no_auto_approve_refused_bucket_unchanged(world: World, cli: Any) -> None:
    plan = world.plan()
    before = world.snapshot()
    err = refused(apply_cli(cli, world, plan), "consent")
    assert "--auto-approve" in err
    assert world.snapshot() == before
    assert world.lock_keys() == []


def test_apply_confirm_answering_no_refused_bucket_unchanged(world: World) -> None:
    plan = world.plan()
    asked: list[str] = []
    before = world.snapshot()

    def decline(summary: str) -> bool:
        asked.append(summary)
        return False

    with pytest.raises(GateRefused) as excinfo:
        world.apply(plan, auto_approve=False, confirm=decline)
    assert excinfo.value.gate == "consent"
    assert len(asked) == 1 and "delete 6 objects" in asked[0]
    assert world.snapshot() == before
    # Declining leaves no receipt: the plan can still be applied later.
    assert not world.receipt_path(plan).exists()


def test_apply_confirm_answering_yes_deletes(world: World) -> None:
    plan = world.plan()
    result = world.apply(plan, auto_approve=False, confirm=lambda summary: True)
    assert result.deleted == 6
    assert all(world.current(k) is None for k in world.orphan_keys)
    assert all(world.current(k) is not None for k in world.live_keys)


def test_apply_cli_prompt_only_yes_approves(world: World, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """With a terminal, Terraform's prompt: 'y' is not 'yes'."""
    import io

    from bmxgc.cli import main

    plan = world.plan()

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    before = world.snapshot()
    monkeypatch.setattr("sys.stdin", Tty("y\n"))
    assert main(["-c", str(world.config_path), "apply", str(plan)]) == 3
    out = capsys.readouterr()
    assert "Only 'yes' will be accepted" in out.out
    assert world.snapshot() == before
    monkeypatch.setattr("sys.stdin", Tty("yes\n"))
    assert main(["-c", str(world.config_path), "apply", str(plan)]) == 0
    assert all(world.current(k) is None for k in world.orphan_keys)


def test_apply_refusal_writes_no_receipt(world: World, cli: Any) -> None:
    plan = world.plan()
    world.write_config(safety={"protect": ["books/*"]})
    refused(apply_cli(cli, world, plan, "--auto-approve"), "scope")
    assert sorted(os.listdir(world.plans_dir)) == [plan.name]
