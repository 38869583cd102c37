"""``history`` lists every receipt, undo record and recovery in plans_dir,
whether or not its plan is there (issue 9 item 9): plans written with --out
elsewhere are applied and undone with their receipts in plans_dir."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from apply_support import World
from ops_support import next_second


def history_rows(cli: Any, world: World) -> dict[str, tuple[str, str]]:
    """file name -> (state, count) from 'bmxgc history'."""
    result = cli("-c", world.config_path, "history")
    assert result.code == 0, result.output
    rows = [line.split() for line in result.out.splitlines()[1:] if line.strip()]
    return {row[-1]: (" ".join(row[1:-4]), row[-4]) for row in rows}


def test_history_lists_receipts_undo_records_and_recoveries_whose_plans_are_elsewhere(
    world: World, cli: Any, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    undone = elsewhere / "undone.json"
    assert cli("-c", world.config_path, "plan", "--out", undone).code == 0
    assert cli("-c", world.config_path, "apply", undone, "--auto-approve").code == 0
    assert cli("-c", world.config_path, "undo", "--auto-approve").code == 0
    next_second()
    applied = elsewhere / "applied.json"
    assert cli("-c", world.config_path, "plan", "--out", applied).code == 0
    assert cli("-c", world.config_path, "apply", applied, "--auto-approve").code == 0
    since = "2000-01-01T00:00:00Z"
    recovered = cli("-c", world.config_path, "recover", "--since", since, "--auto-approve")
    assert recovered.code == 0, recovered.output
    # The recovery plan moved out of plans_dir: its receipt stays.
    (recovery_plan,) = [p for p in world.plans_dir.glob("*-recover-*.json") if ".receipt." not in p.name]
    shutil.move(recovery_plan, elsewhere / recovery_plan.name)
    # An undo record whose receipt is gone too.
    orphan_record = world.plans_dir / "undone.undo.json"
    shutil.copy(orphan_record, world.plans_dir / "lost.undo.json")

    rows = history_rows(cli, world)
    assert rows["undone.receipt.json"] == ("undone", "6")
    assert rows["applied.receipt.json"] == ("applied", "6")
    recovery_receipt = recovery_plan.name.replace(".json", ".receipt.json")
    assert rows[recovery_receipt] == ("recovered", "6")
    assert rows["lost.undo.json"] == ("undone", "6")
    assert "undone.json" not in rows and "applied.json" not in rows  # not in plans_dir
