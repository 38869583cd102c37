"""Right file, right message (issue 9 item 7): a plan given to undo, a receipt
given to apply, verify or show, an undo record given to verify or undo: one
line saying what the file is and which file was meant, exit 3, nothing changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from apply_support import World


@pytest.fixture
def files(world: World, cli: Any) -> dict[str, Path]:
    """A plan applied and undone: its plan, receipt and undo record in plans_dir."""
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    receipt = world.receipt_path(plan)
    assert cli("-c", world.config_path, "undo", receipt, "--auto-approve").code == 0
    record = receipt.with_name(receipt.name.replace(".receipt.json", ".undo.json"))
    assert record.exists()
    return {"plan": plan, "receipt": receipt, "undo record": record}


def one_line(result: Any) -> str:
    assert result.code == 3, result.output
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.output and "required" not in result.err and "more problems" not in result.err
    return str(lines[0])


@pytest.mark.parametrize(
    ("command", "given", "wanted", "meant"),
    [
        ("undo", "plan", "a receipt", "receipt"),
        ("undo", "undo record", "a receipt", "receipt"),
        ("apply", "receipt", "a plan", "plan"),
        ("apply", "undo record", "a plan", "plan"),
        ("verify", "receipt", "a plan", "plan"),
        ("verify", "undo record", "a plan", "plan"),
        ("show", "receipt", "a plan", "plan"),
        ("diff", "receipt", "a plan", "plan"),
    ],
)
def test_wrong_kind_of_file_says_what_it_is_and_which_was_meant(
    world: World, cli: Any, files: dict[str, Path], command: str, given: str, wanted: str, meant: str
) -> None:
    path = files[given]
    before = world.snapshot()
    args: list[Any] = [path, files["plan"]] if command == "diff" else [path]
    extra = ["--auto-approve"] if command in ("undo", "apply") else []
    line = one_line(cli("-c", world.config_path, command, *args, *extra))
    article = "an" if given[0] in "aeiou" else "a"
    assert f"{path} is {article} {given}, not {wanted}" in line, line
    assert files[meant].name in line, line  # which file was meant
    assert world.snapshot() == before
