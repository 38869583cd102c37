"""``bmxgc history`` and the trend warning: what plans_dir says about the past.

Against moto's S3 server, references in SQLite (the trend and history read
plans_dir, not the database).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from apply_support import World, empty_world, failing_keys_proxy, plain_client
from ops_support import me, next_second, read_json
from servers import sqlite_file
from support import CliResult

Cli = Callable[..., CliResult]


@pytest.fixture
def scene(bucket: Any, tmp_path: Path) -> World:
    return empty_world(bucket, sqlite_file(tmp_path / "app.db"), tmp_path)


def history_rows(cli: Cli, config: Path) -> list[list[str]]:
    """``bmxgc history`` as rows of cells (WHEN, STATE, ORPHANS, WHERE, BY, FILE)."""
    result = cli("-c", config, "history")
    assert result.code == 0, result.output
    lines = result.out.strip().splitlines()
    assert lines[0].split()[:3] == ["WHEN", "STATE", "ORPHANS"], result.out
    rows = []
    for line in lines[1:]:
        cells = line.split()
        # A state may be two words ("in progress"): WHEN first, FILE last, BY before it.
        rows.append([cells[0], " ".join(cells[1:-4]), cells[-4], cells[-3], cells[-2], cells[-1]])
    return rows


# --------------------------------------------------------------------------- history


def test_history_lists_plans_newest_first_with_state_and_applier(scene: World, cli: Cli) -> None:
    from bmxgc.commands.apply import apply
    from bmxgc.commands.plan import plan
    from bmxgc.commands.undo import undo
    from bmxgc.config import load_config
    from bmxgc.errors import PartialFailure
    from bmxgc import s3

    scene.reference(f"{n}/image_00.webp" for n in range(1, 11))
    scene.books(range(1, 11))
    scene.books([101, 102, 103])
    config = load_config(scene.config_path)
    # Plans a minute apart, as a daily job's would be days apart (created_at has whole seconds).
    start = datetime.now(timezone.utc)

    def made(minutes: int) -> Path:
        return Path(plan(config, now=start + timedelta(seconds=minutes * 60)).path or "")

    undone = made(1)
    apply(config, undone, auto_approve=True)
    undo(config, auto_approve=True)

    applied = made(2)
    apply(config, applied, auto_approve=True)

    scene.books([201, 202, 203])
    partial = made(3)
    client = s3.make_client(scene.bucket.endpoint, "us-east-1")
    client.meta.events.register(
        "before-send.s3.DeleteObjects",
        failing_keys_proxy(plain_client(scene.bucket.endpoint), scene.name, lambda k: k == "books/202/image_00.webp"),
    )
    with pytest.raises(PartialFailure):
        apply(config, partial, auto_approve=True, client=client)

    planned = made(4)  # books/202 is still there

    rows = history_rows(cli, scene.config_path)
    assert [(r[1], r[5]) for r in rows] == [
        ("planned", planned.name),
        ("partial", partial.name),
        ("applied", applied.name),
        ("undone", undone.name),
    ]
    assert [r[2] for r in rows] == ["1", "3", "3", "3"]
    assert [r[4] for r in rows] == ["-", me(), me(), me()]
    assert all(r[3] == f"s3://{scene.name}/books/" for r in rows)
    whens = [r[0] for r in rows]
    assert whens == sorted(whens, reverse=True) and len(set(whens)) == 4


def test_history_empty_plans_dir_says_so(scene: World, cli: Cli) -> None:
    result = cli("-c", scene.config_path, "history")
    assert result.code == 0, result.output
    assert "No plans yet." in result.out


def test_history_shows_recoveries(scene: World, cli: Cli) -> None:
    keys = scene.books([1, 2])
    scene.bucket.delete(keys[0])
    since = (datetime.now(timezone.utc) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    looked = cli("-c", scene.config_path, "recover", "--since", since)
    assert looked.code == 0, looked.output
    next_second()
    done = cli("-c", scene.config_path, "recover", "--since", since, "--auto-approve")
    assert done.code == 0, done.output
    rows = history_rows(cli, scene.config_path)
    assert [r[1] for r in rows] == ["recovered", "recovery (not run)"]
    assert rows[0][4] == me() and rows[1][4] == "-"


# --------------------------------------------------------------------------- trend warning

OBJECTS = 400


@pytest.fixture
def crowd(scene: World) -> World:
    """400 objects under books/, all referenced to begin with."""
    scene.books(range(1, OBJECTS + 1), fast=True)
    scene.reference(f"{n}/image_00.webp" for n in range(1, OBJECTS + 1))
    return scene


def orphans_now(scene: World, count: int) -> None:
    """Unreference the last books so that ``count`` of them are orphans (row id n is book n)."""
    scene.db.execute(f"DELETE FROM {scene.table} WHERE id > {OBJECTS - count}")


def plan_cli(cli: Cli, config: Path, *extra: str) -> tuple[CliResult, dict[str, Any]]:
    result = cli("-c", config, "plan", *extra)
    assert result.code == 0, result.output
    return result, read_json(result.saved_path())


def trend(plan: dict[str, Any]) -> list[str]:
    return [w for w in plan["warnings"] if "jumped" in w]


def test_trend_orphans_jump_warns_naming_the_previous_plan(crowd: World, cli: Cli) -> None:
    orphans_now(crowd, 20)
    first, _ = plan_cli(cli, crowd.config_path)
    orphans_now(crowd, 140)
    second, doc = plan_cli(cli, crowd.config_path)
    assert doc["stats"]["orphans"] == 140
    [warning] = trend(doc)
    assert first.saved_path().name in warning
    assert "20" in warning and "140" in warning
    assert first.saved_path().name in second.out and "jumped" in second.out


@pytest.mark.parametrize(
    ("before", "after"),
    [(20, 20), (20, 120), (150, 290), (140, 20)],
    ids=["same", "doubled-by-only-100", "up-140-not-doubled", "fell"],
)
def test_trend_small_change_does_not_warn(crowd: World, cli: Cli, before: int, after: int) -> None:
    orphans_now(crowd, before)
    plan_cli(cli, crowd.config_path)
    if after < before:
        crowd.reference(f"{n}/image_00.webp" for n in range(OBJECTS - before + 1, OBJECTS - after + 1))
    else:
        orphans_now(crowd, after)
    _, doc = plan_cli(cli, crowd.config_path)
    assert doc["stats"]["orphans"] == after
    assert trend(doc) == []


def test_trend_just_over_the_threshold_warns(crowd: World, cli: Cli) -> None:
    orphans_now(crowd, 20)
    plan_cli(cli, crowd.config_path)
    orphans_now(crowd, 121)  # more than doubled, and by 101
    _, doc = plan_cli(cli, crowd.config_path)
    assert len(trend(doc)) == 1


def test_trend_ignores_plans_of_another_prefix_or_bucket(crowd: World, make_bucket: Any, cli: Cli) -> None:
    orphans_now(crowd, 150)
    _, baseline = plan_cli(cli, crowd.config_path)
    assert baseline["stats"]["orphans"] == 150
    next_second()
    # Newer plans in the same plans_dir: another prefix (5 orphans) and another bucket (0).
    for n in range(5):
        crowd.bucket.put(f"listings/{n}.json", b"{}")
    listings = crowd.write_config("listings.toml", prefix="listings/")
    _, other_prefix = plan_cli(cli, listings)
    assert other_prefix["stats"]["orphans"] == 5
    empty = make_bucket()
    other_bucket = crowd.write_config("other-bucket.toml", bucket=empty.name)
    _, nothing = plan_cli(cli, other_bucket)
    assert nothing["stats"]["orphans"] == 0

    orphans_now(crowd, 290)  # a jump from 5 or from 0, not from 150
    _, doc = plan_cli(cli, crowd.config_path)
    assert trend(doc) == []
    orphans_now(crowd, 320)  # from the newest books/ plan (290): still no jump
    _, doc = plan_cli(cli, crowd.config_path)
    assert trend(doc) == []


# --------------------------------------------------------------------------- one bad file does not block the rest


def test_history_lists_unreadable_files_with_the_reason_and_the_rest_normally(scene: World, cli: Cli) -> None:
    from bmxgc.commands.apply import apply
    from bmxgc.commands.plan import plan
    from bmxgc.config import load_config

    scene.reference(f"{n}/image_00.webp" for n in range(1, 4))
    scene.books(range(1, 4))
    scene.books([101])
    config = load_config(scene.config_path)
    start = datetime.now(timezone.utc)
    applied = Path(plan(config, now=start + timedelta(seconds=60)).path or "")
    apply(config, applied, auto_approve=True)
    broken_receipt = Path(plan(config, now=start + timedelta(seconds=120)).path or "")
    planned = Path(plan(config, now=start + timedelta(seconds=180)).path or "")
    plans = planned.parent
    # The receipt of the second plan is damaged, and a plan file is not JSON at all.
    (plans / f"{broken_receipt.stem}.receipt.json").write_text('{"format_version": 1,', encoding="utf-8")
    (plans / "20200101T000000Z-garbage.json").write_text("not json\n", encoding="utf-8")

    result = cli("-c", scene.config_path, "history")
    assert result.code == 0, result.output
    table, _, notes = result.out.partition("\n\n")
    rows = {line.split()[-1]: line for line in table.splitlines()[1:]}
    assert " applied " in rows[applied.name] and me() in rows[applied.name]
    assert " planned " in rows[planned.name]
    assert "receipt unreadable" in rows[broken_receipt.name]
    assert " unreadable " in rows[f"{broken_receipt.stem}.receipt.json"]
    assert " unreadable " in rows["20200101T000000Z-garbage.json"]
    # Each unreadable file again below the table, with the reason.
    reasons = {line.split(":", 1)[0].strip(): line for line in notes.splitlines() if line.strip()}
    assert "invalid JSON" in reasons[f"{broken_receipt.stem}.receipt.json"]
    assert "invalid JSON" in reasons["20200101T000000Z-garbage.json"]


def test_history_shows_an_undo_record_with_duplicate_keys_as_unreadable(scene: World, cli: Cli) -> None:
    from bmxgc.commands.apply import apply
    from bmxgc.commands.plan import plan
    from bmxgc.commands.undo import undo
    from bmxgc.config import load_config

    scene.reference(["1/image_00.webp"])
    scene.books([1, 2])
    config = load_config(scene.config_path)
    made = Path(plan(config).path or "")
    apply(config, made, auto_approve=True)
    undo(config, auto_approve=True)
    record = made.parent / f"{made.stem}.undo.json"
    text = record.read_text(encoding="utf-8")
    record.write_text(text.replace('"runs":', '"runs": [],\n "runs":', 1), encoding="utf-8")
    result = cli("-c", scene.config_path, "history")
    assert result.code == 0, result.output
    assert "undo record unreadable" in result.out
    assert f"{made.stem}.undo.json: " in result.out and "duplicate" in result.out


def test_history_shows_a_recovery_plan_with_duplicate_keys_as_unreadable(scene: World, cli: Cli) -> None:
    keys = scene.books([1, 2])
    scene.bucket.delete(keys[0])
    since = (datetime.now(timezone.utc) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    looked = cli("-c", scene.config_path, "recover", "--since", since)
    assert looked.code == 0, looked.output
    [recovery] = [p for p in (scene.folder / "plans").iterdir() if "-recover-" in p.name]
    text = recovery.read_text(encoding="utf-8")
    recovery.chmod(0o644)
    recovery.write_text(text.replace('"bucket":', '"bucket": "elsewhere",\n "bucket":', 1), encoding="utf-8")
    result = cli("-c", scene.config_path, "history")
    assert result.code == 0, result.output
    [row] = [line for line in result.out.splitlines() if line.endswith(recovery.name)]
    assert row.split()[1] == "unreadable"
    assert f'{recovery.name}: not a plan file: duplicate key "bucket"' in result.out
