"""The jump gate (gate 5, against the last applied plan): the wrong-database
story of issue 9, replayed through the CLI. An applied plan of 20 orphans,
then a plan against a database left with 2 rows: apply refuses even with
--max-orphan-ratio 1 --auto-approve, and nothing suggests an override value."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from apply_support import World, build_world
from bmxgc.errors import GateRefused
try:
    from bmxgc.gates import Baseline, VolumeFigures, check_jump
except ImportError: pass

OVERRIDE_VALUE = re.compile(r"--(max-orphan-ratio|allow-jump|expect-deletes)[ =]+[0-9]")


@pytest.fixture
def story(bucket: Any, sqlite_db: Any, tmp_path: Path) -> tuple[World, Path]:
    """280 referenced objects and 20 orphans, the 20 applied; then the
    database has 2 rows left (the wrong database), and a new plan."""
    world = build_world(bucket, sqlite_db, tmp_path, live=280, orphans=20, fast=True)
    first = world.plan()
    world.apply(first)
    assert world.receipt(first)["status"] == "complete"
    world.db.execute(f"DELETE FROM {world.table} WHERE id > 2")
    from bmxgc.commands.plan import plan as make_plan

    second = make_plan(world.config())
    assert second.plan.stats.orphans == 278 and second.plan.stats.referenced_keys == 2
    return world, Path(second.path or "")


def test_wrong_database_story_refused_by_jump_gate_despite_ratio_override(story: tuple[World, Path], cli: Any) -> None:
    world, plan = story
    shown = cli("-c", world.config_path, "show", plan)
    assert shown.code == 0
    before = world.snapshot()
    result = cli("-c", world.config_path, "apply", plan, "--max-orphan-ratio", "1", "--auto-approve")
    assert result.code == 3, result.output
    assert "refused by gate 'jump'" in result.err
    assert "fell by more than half, from 280 to 2" in result.err
    assert "from 20 to 278" in result.err
    # Both plans' figures side by side: the applied one's and this one's.
    (row,) = [line for line in result.err.splitlines() if line.strip().startswith("referenced keys")]
    assert re.search(r"\b280\s+2\s*$", row), row
    assert world.snapshot() == before
    for output in (shown.output, result.output):
        assert not OVERRIDE_VALUE.search(output), output
    planned = cli("-c", world.config_path, "plan")
    assert not OVERRIDE_VALUE.search(planned.output) and "--max-orphan-ratio" not in planned.output


def test_jump_override_without_the_count_and_no_terminal_refused(story: tuple[World, Path], cli: Any) -> None:
    world, plan = story
    before = world.snapshot()
    result = cli("-c", world.config_path, "apply", plan, "--max-orphan-ratio", "1", "--auto-approve", "--allow-jump")
    assert result.code == 3, result.output
    assert "refused by gate 'jump'" in result.err and "number of objects" in result.err
    assert not OVERRIDE_VALUE.search(result.output)
    assert world.snapshot() == before


def test_jump_override_with_a_wrong_count_refused(story: tuple[World, Path], cli: Any) -> None:
    world, plan = story
    before = world.snapshot()
    args = ("--max-orphan-ratio", "1", "--auto-approve", "--allow-jump", "--expect-deletes", "298")
    result = cli("-c", world.config_path, "apply", plan, *args)
    assert result.code == 3, result.output
    assert "'298' is not the number of objects" in result.err
    assert world.snapshot() == before


def test_jump_override_with_the_count_applies_and_is_recorded(story: tuple[World, Path], cli: Any) -> None:
    world, plan = story
    args = ("--max-orphan-ratio", "1", "--auto-approve", "--allow-jump", "--expect-deletes", "278")
    result = cli("-c", world.config_path, "apply", plan, *args)
    assert result.code == 0, result.output
    overrides = world.receipt(plan)["overrides"]
    assert overrides == {"max_orphan_ratio": 1.0, "allow_jump": True, "expected_deletes": 278}


def test_jump_override_typed_count_through_the_api(story: tuple[World, Path]) -> None:
    world, plan = story
    asked: list[str] = []

    def answer_yes(question: str) -> str:
        asked.append(question)
        return "yes"

    before = world.snapshot()
    with pytest.raises(GateRefused, match="not the number"):
        world.apply(plan, max_orphan_ratio=1.0, allow_jump=True, type_count=answer_yes)
    assert world.snapshot() == before and asked
    world.apply(plan, max_orphan_ratio=1.0, allow_jump=True, type_count=lambda q: "278")
    assert world.receipt(plan)["overrides"]["allow_jump"] is True


def test_ratio_override_alone_never_waves_the_jump_through(story: tuple[World, Path]) -> None:
    world, plan = story
    with pytest.raises(GateRefused) as excinfo:
        world.apply(plan, max_orphan_ratio=1.0)
    assert excinfo.value.gate == "jump"


# --------------------------------------------------------------------------- pure


def base(referenced: int, orphans: int) -> Baseline:
    return Baseline("old.json", "2026-11-28T12:00:00Z", VolumeFigures(300, referenced, referenced, orphans))


@pytest.mark.parametrize(
    ("referenced", "orphans", "refused"),
    [
        (140, 20, False),  # exactly half: not more than half
        (139, 20, True),
        (280, 120, False),  # grew by 100: not more than 100
        (280, 121, True),
        (280, 40, False),  # doubled, but by 20
        (280, 39, False),
    ],
)
def test_check_jump_thresholds(referenced: int, orphans: int, refused: bool) -> None:
    figures = VolumeFigures(300 if orphans < 300 else orphans, referenced, referenced, orphans)
    if refused:
        with pytest.raises(GateRefused):
            check_jump(figures, base(280, 20), allowed=False)
    else:
        check_jump(figures, base(280, 20), allowed=False)


def test_check_jump_no_applied_plan_or_allowed_passes() -> None:
    figures = VolumeFigures(300, 2, 2, 298)
    check_jump(figures, None, allowed=False)
    check_jump(figures, base(280, 20), allowed=True)
    with pytest.raises(GateRefused):
        check_jump(figures, base(280, 20), allowed=False)



def test_jump_from_live_figures_refuses_a_plan_whose_own_figures_look_fine(
    bucket: Any, sqlite_db: Any, tmp_path: Path, cli: Any
) -> None:
    # The plan was made against the right database; by apply time the
    # references read now have fallen to 2 (a replica that lost its data).
    world = build_world(bucket, sqlite_db, tmp_path, live=280, orphans=20, fast=True)
    world.apply(world.plan())
    bucket.put_many([f"books/{800_000 + i}/image_00.webp" for i in range(5)], body=b"same bytes")
    from bmxgc.commands.plan import plan as make_plan

    second = make_plan(world.config())
    assert second.plan.stats.orphans == 5 and second.refusal is None
    world.db.execute(f"DELETE FROM {world.table} WHERE id > 2")
    before = world.snapshot()
    result = cli("-c", world.config_path, "apply", second.path, "--auto-approve")
    assert result.code == 3, result.output
    assert "refused by gate 'jump'" in result.err and "(live figures now)" in result.err
    assert "from 280 to 2" in result.err
    assert world.snapshot() == before
