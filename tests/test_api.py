"""The Python API, as a scheduled function calls it: a config built from a
dict, no shell, no config file, plans and receipts in S3. Errors are
``bmxgc.BmxgcError`` subclasses carrying the CLI's exit code."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import bmxgc
from apply_support import Hooks, World, empty_world, request_error
from ops_support import held_objects, s3_json
from servers import sqlite_file

ORPHANS = [f"books/{n}/image_00.webp" for n in (101, 102, 103)]


@pytest.fixture
def scene(bucket: Any, tmp_path: Path) -> World:
    scene = empty_world(bucket, sqlite_file(tmp_path / "app.db"), tmp_path)
    scene.config_path.unlink()  # the API needs no file
    scene.reference(f"{n}/image_00.webp" for n in range(1, 11))
    scene.books(range(1, 11))
    scene.books([101, 102, 103])
    return scene


def test_api_plan_apply_undo_from_a_dict_with_plans_in_s3(scene: World, make_bucket: Any, tmp_path: Path) -> None:
    store = make_bucket()
    config = bmxgc.config_from_dict(scene.config_doc(plans_dir=f"s3://{store.name}/gc/"))

    planned = bmxgc.plan(config)
    assert planned.plan.stats.orphans == 3
    assert planned.path is not None and planned.path.startswith(f"s3://{store.name}/gc/")

    applied = bmxgc.apply(config, planned.path, auto_approve=True)
    assert applied.deleted == 3
    assert all(scene.now(k) is None for k in ORPHANS)
    assert s3_json(store.client, applied.receipt_path)["status"] == "complete"

    undone = bmxgc.undo(config=config, auto_approve=True)
    assert sorted(r.key for r in undone.restored) == ORPHANS
    assert all(scene.now(k) is not None for k in ORPHANS)

    [entry] = bmxgc.history(config)
    assert entry.state == "undone" and entry.orphans == 3
    assert held_objects(scene.client, scene.name) == []  # no lock left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # nothing written to disk


def test_api_recover_from_a_dict(scene: World, tmp_path: Path) -> None:
    config = bmxgc.config_from_dict(scene.config_doc(plans_dir=str(tmp_path / "plans")))
    scene.bucket.delete(ORPHANS[0])
    since = datetime.now(timezone.utc) - timedelta(minutes=5)
    looked = bmxgc.recover(config, since=since)
    assert not looked.applied and [i.key for i in looked.plan.restores] == [ORPHANS[0]]
    assert scene.now(ORPHANS[0]) is None
    done = bmxgc.recover(config, since=since, auto_approve=True)
    assert done.applied and done.restored == 1
    assert scene.now(ORPHANS[0]) is not None


def test_api_recover_that_cannot_restore_raises_with_what_it_did(scene: World, tmp_path: Path, hooked: Hooks) -> None:
    """Fails on the old code: recover returned, and only the CLI exited 1."""
    from bmxgc.errors import PartialFailure
    from bmxgc.results import RecoverResult

    config = bmxgc.config_from_dict(scene.config_doc(plans_dir=str(tmp_path / "plans")))
    scene.bucket.delete(ORPHANS[0])
    hooked("before-send.s3.DeleteObjects", request_error(1, 400, "ExpiredToken", []))
    with pytest.raises(PartialFailure) as failed:
        bmxgc.recover(config, since=datetime.now(timezone.utc) - timedelta(minutes=5), auto_approve=True)
    assert failed.value.exit_code == 1 and "1 of 1 objects could not be restored" in str(failed.value)
    assert isinstance(failed.value.result, RecoverResult) and failed.value.result.errors == 1
    assert scene.now(ORPHANS[0]) is None


def test_api_unlock_is_there(scene: World, tmp_path: Path) -> None:
    config = bmxgc.config_from_dict(scene.config_doc(plans_dir=str(tmp_path / "plans")))
    assert bmxgc.unlock(config, auto_approve=True).startswith("No lock on s3://")


def test_api_errors_are_bmxgc_errors_with_exit_codes(scene: World, tmp_path: Path) -> None:
    from bmxgc.errors import ConfigError, GateRefused, PlanFileError, ServiceError

    with pytest.raises(bmxgc.BmxgcError) as bad:
        bmxgc.config_from_dict(scene.config_doc(prefix=""))
    assert isinstance(bad.value, ConfigError) and bad.value.exit_code == 1
    assert "s3.prefix" in str(bad.value)

    with pytest.raises(ConfigError) as unknown:
        bmxgc.config_from_dict({**scene.config_doc(), "dry_run": True})
    assert "dry_run" in str(unknown.value)

    config = bmxgc.config_from_dict(scene.config_doc(plans_dir=str(tmp_path / "plans")))
    with pytest.raises(bmxgc.BmxgcError) as nothing:
        bmxgc.undo(config=config, auto_approve=True)  # no receipt yet
    assert nothing.value.exit_code == 1 and "no apply receipt" in str(nothing.value)

    path = bmxgc.plan(config).path
    assert path is not None
    doc = json.loads(Path(path).read_text())
    doc["orphans"][0]["key"] = "books/1/image_00.webp"  # a live object slipped in
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc))
    with pytest.raises(PlanFileError) as tampered:
        bmxgc.apply(config, edited, auto_approve=True)
    assert tampered.value.exit_code == 3

    with pytest.raises(GateRefused) as consent:
        bmxgc.apply(config, path)  # no terminal, no auto_approve
    assert consent.value.exit_code == 3 and consent.value.gate == "consent"
    assert all(scene.now(k) is not None for k in ORPHANS)

    bmxgc.apply(config, path, auto_approve=True)
    with pytest.raises(GateRefused) as twice:
        bmxgc.apply(config, path, auto_approve=True)
    assert twice.value.exit_code == 3

    with pytest.raises(ConfigError) as window:
        bmxgc.recover(config, since=datetime.now(timezone.utc), until=datetime(2000, 1, 1, tzinfo=timezone.utc))
    assert window.value.exit_code == 1

    nowhere = bmxgc.config_from_dict(
        {**scene.config_doc(plans_dir=str(tmp_path / "plans")), "database": {"url": f"sqlite:///{tmp_path}/missing.db"}}
    )
    with pytest.raises(ServiceError) as down:
        bmxgc.plan(nowhere)
    assert down.value.exit_code == 1
