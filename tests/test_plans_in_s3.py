"""``plans_dir = "s3://bucket/prefix/"``: plans, receipts and undo records kept
in S3 (a scheduled function has no lasting disk). Against moto's S3 server,
references in SQLite."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import pytest

from apply_support import World, empty_world
from ops_support import held_objects, me, s3_json, saved
from servers import sqlite_file
from support import PLAN_NAME, CliResult, assert_one_line_error

Cli = Callable[..., CliResult]

ORPHANS = [f"books/{n}/image_00.webp" for n in (101, 102, 103)]


@pytest.fixture
def scene(bucket: Any, tmp_path: Path) -> World:
    scene = empty_world(bucket, sqlite_file(tmp_path / "app.db"), tmp_path)
    scene.reference(f"{n}/image_00.webp" for n in range(1, 11))
    scene.books(range(1, 11))
    scene.books([101, 102, 103])
    return scene


def run(cli: Cli, scene: World, *args: Any) -> CliResult:
    result = cli("-c", scene.config_path, *args)
    assert result.code == 0, result.output
    return result


def test_plans_dir_in_another_bucket_holds_the_whole_story(scene: World, make_bucket: Any, cli: Cli) -> None:
    store = make_bucket()
    scene.write_config(plans_dir=f"s3://{store.name}/plans/")

    plan_url = saved(run(cli, scene, "plan").out, "Saved")
    assert plan_url.startswith(f"s3://{store.name}/plans/")
    assert re.match(PLAN_NAME, plan_url.rsplit("/", 1)[1])
    assert s3_json(store.client, plan_url)["stats"]["orphans"] == 3
    assert not (scene.folder / "plans").exists()  # nothing on local disk

    applied = run(cli, scene, "apply", plan_url, "--auto-approve")
    receipt_url = saved(applied.out, "Receipt")
    assert receipt_url == plan_url.removesuffix(".json") + ".receipt.json"
    receipt = s3_json(store.client, receipt_url)
    assert receipt["status"] == "complete" and len(receipt["deleted"]) == 3
    assert all(scene.now(k) is None for k in ORPHANS)

    undone = run(cli, scene, "undo", "--auto-approve")  # finds the newest receipt in S3
    assert "3 restored" in undone.out
    assert all(scene.now(k) is not None for k in ORPHANS)
    record_url = saved(undone.out, "Record")
    assert record_url.startswith(f"s3://{store.name}/plans/")
    assert len(s3_json(store.client, record_url)["runs"][0]["restored"]) == 3

    history = run(cli, scene, "history").out
    [line] = [line for line in history.splitlines() if plan_url.rsplit("/", 1)[1] in line]
    assert " undone " in line and me() in line
    assert not (scene.folder / "plans").exists()


def test_plans_dir_in_the_scanned_bucket_outside_the_prefix(scene: World, cli: Cli) -> None:
    scene.write_config(plans_dir=f"s3://{scene.name}/bmxgc-plans/")
    plan_url = saved(run(cli, scene, "plan").out, "Saved")
    assert plan_url.startswith(f"s3://{scene.name}/bmxgc-plans/")
    run(cli, scene, "apply", plan_url, "--auto-approve")
    assert all(scene.now(k) is None for k in ORPHANS)
    # The plan and its receipt are objects of the scanned bucket, never orphans.
    kept = held_objects(scene.client, scene.name, "bmxgc-plans/")
    assert sorted(kept) == sorted(
        [plan_url.split("/", 3)[3], plan_url.split("/", 3)[3].removesuffix(".json") + ".receipt.json"]
    )
    again = run(cli, scene, "plan")
    assert "Plan: 0 to delete." in again.out


def test_plans_dir_in_s3_never_overwrites(scene: World, make_bucket: Any, cli: Cli) -> None:
    store = make_bucket()
    scene.write_config(plans_dir=f"s3://{store.name}/plans/")
    out = f"s3://{store.name}/plans/reviewed.json"
    run(cli, scene, "plan", "--out", out)
    first = store.client.get_object(Bucket=store.name, Key="plans/reviewed.json")["Body"].read()
    scene.books([104])  # another plan, same name
    result = cli("-c", scene.config_path, "plan", "--out", out)
    assert result.code == 1, result.output  # an existing file is a bad argument
    assert_one_line_error(result, result.code, out, "already exists")
    versions = store.client.list_object_versions(Bucket=store.name, Prefix="plans/reviewed.json")
    assert len(versions.get("Versions", [])) == 1
    assert store.client.get_object(Bucket=store.name, Key="plans/reviewed.json")["Body"].read() == first


@pytest.mark.parametrize("inside", ["books/plans/", "books/", "books"], ids=["below", "same", "no-slash"])
def test_plans_dir_inside_the_scanned_prefix_refused(scene: World, cli: Cli, inside: str) -> None:
    scene.write_config(plans_dir=f"s3://{scene.name}/{inside}")
    before = scene.versions(locks=True)
    result = cli("-c", scene.config_path, "plan")
    assert_one_line_error(result, 1, "plans_dir")
    assert scene.versions(locks=True) == before


def test_plans_dir_same_prefix_name_in_another_bucket_is_fine(scene: World, make_bucket: Any, cli: Cli) -> None:
    store = make_bucket()
    scene.write_config(plans_dir=f"s3://{store.name}/books/")
    assert saved(run(cli, scene, "plan").out, "Saved").startswith(f"s3://{store.name}/books/")


def test_plans_dir_in_s3_undo_takes_the_newest_receipt(scene: World, make_bucket: Any, cli: Cli) -> None:
    from ops_support import next_second

    store = make_bucket()
    scene.write_config(plans_dir=f"s3://{store.name}/plans/")
    first = saved(run(cli, scene, "plan").out, "Saved")
    run(cli, scene, "apply", first, "--auto-approve")
    next_second()  # receipts are ordered by when their apply started (whole seconds)
    scene.books([104, 105])
    second = saved(run(cli, scene, "plan").out, "Saved")
    run(cli, scene, "apply", second, "--auto-approve")

    undone = run(cli, scene, "undo", "--auto-approve")
    assert "2 restored" in undone.out
    assert second.removesuffix(".json") in saved(undone.out, "Record")
    assert all(scene.now(k) is None for k in ORPHANS)  # the first apply stands
    assert scene.now("books/104/image_00.webp") is not None
    states = {line.split()[1] for line in run(cli, scene, "history").out.splitlines()[1:]}
    assert states == {"applied", "undone"}
