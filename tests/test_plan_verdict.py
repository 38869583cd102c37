"""CI can tell a refused plan (issue 9 item 8): ``plan --detailed-exitcode``
exits 3 when apply's offline gates would refuse what it wrote, 2 only for a
plan apply can take, 0 for no orphans; ``history`` shows such a plan as
"will be refused" with the gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from apply_support import World, build_world
from support import write_toml


def history_states(cli: Any, world: World) -> dict[str, str]:
    result = cli("-c", world.config_path, "history")
    assert result.code == 0, result.output
    rows = [line.split() for line in result.out.splitlines()[1:] if line.strip()]
    return {row[-1]: " ".join(row[1:-4]) for row in rows}


def test_detailed_exitcode_2_for_a_plan_apply_can_take(world: World, cli: Any) -> None:
    result = cli("-c", world.config_path, "plan", "--detailed-exitcode")
    assert result.code == 2, result.output
    assert "Apply will refuse" not in result.out
    assert history_states(cli, world)[result.saved_path().name] == "planned"


def test_detailed_exitcode_3_for_a_broken_mapping(world: World, cli: Any) -> None:
    world.doc["references"][0]["keys"] = ["{value}"]  # the incident's mapping
    write_toml(world.config_path, world.doc)
    result = cli("-c", world.config_path, "plan", "--detailed-exitcode")
    assert result.code == 3, result.output
    assert "Apply will refuse this plan (refused by gate 'volume'" in result.out
    path = result.saved_path()
    assert path.exists()  # the plan is written all the same, for review
    assert history_states(cli, world)[path.name] == "will be refused (volume)"


def test_detailed_exitcode_3_for_cross_check_hits(world: World, cli: Any) -> None:
    # An orphan's key is named in a column no source declares.
    world.db.execute("CREATE TABLE listings (id INTEGER PRIMARY KEY, cover TEXT)")
    world.db.execute(f"INSERT INTO listings (id, cover) VALUES (1, '{world.orphan_keys[0]}')")
    result = cli("-c", world.config_path, "plan", "--cross-check", "--detailed-exitcode")
    assert result.code == 3, result.output
    assert "refused by gate 'scope'" in result.out
    assert history_states(cli, world)[result.saved_path().name] == "will be refused (scope)"


def test_detailed_exitcode_3_for_a_jump_since_the_last_applied_plan(
    bucket: Any, sqlite_db: Any, tmp_path: Path, cli: Any
) -> None:
    world = build_world(bucket, sqlite_db, tmp_path, live=280, orphans=20, fast=True)
    world.apply(world.plan())
    world.db.execute(f"DELETE FROM {world.table} WHERE id > 100")  # 180 fewer references: a jump
    world.write_config(safety={"max_orphan_ratio": 1})
    result = cli("-c", world.config_path, "plan", "--detailed-exitcode")
    assert result.code == 3, result.output
    assert "refused by gate 'jump'" in result.out
    assert history_states(cli, world)[result.saved_path().name] == "will be refused (jump)"


def test_detailed_exitcode_0_without_orphans(bucket: Any, sqlite_db: Any, tmp_path: Path, cli: Any) -> None:
    world = build_world(bucket, sqlite_db, tmp_path, live=3, orphans=0)
    result = cli("-c", world.config_path, "plan", "--detailed-exitcode")
    assert result.code == 0, result.output

