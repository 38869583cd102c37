"""Copy-paste safe (issue 9 item 6): every command bmxgc prints for the
operator to run next carries the same -c as the command that printed it, and
-c/--config is accepted after the subcommand as well as before it."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from apply_support import World


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no bmxgc.toml and no BMXGC_CONFIG: only -c finds the config."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("BMXGC_CONFIG", raising=False)
    return folder


def printed(output: str, subcommand: str) -> list[list[str]]:
    """The 'bmxgc ... SUBCOMMAND ...' command lines in ``output``, as argv after 'bmxgc'."""
    found = re.findall(rf"bmxgc (-c \S+ {subcommand}\b[^'\n]*)", output)
    return [shlex.split(f)[:] for f in found]


def test_printed_apply_and_undo_commands_carry_c_and_run_as_copied(world: World, cli: Any, elsewhere: Path) -> None:
    planned = cli("-c", world.config_path, "plan")
    assert planned.code == 0, planned.output
    assert f"bmxgc apply " not in planned.out  # never the command without -c
    (apply_args,) = printed(planned.out, "apply")
    assert apply_args[:2] == ["-c", str(world.config_path)]
    applied = cli(*apply_args, "--auto-approve")
    assert applied.code == 0, applied.output
    assert "bmxgc undo " not in applied.out
    (undo_args,) = printed(applied.out, "undo")
    undone = cli(*undo_args, "--auto-approve")
    assert undone.code == 0, undone.output
    world.assert_orphans_restored()


def test_config_option_after_the_subcommand(world: World, cli: Any, elsewhere: Path) -> None:
    planned = cli("plan", "-c", world.config_path)
    assert planned.code == 0, planned.output
    (apply_args,) = printed(planned.out, "apply")
    assert apply_args[:2] == ["-c", str(world.config_path)]
    history = cli("history", "--config", world.config_path)
    assert history.code == 0, history.output
    assert "planned" in history.out


def test_config_option_twice_with_different_paths_is_an_error(world: World, cli: Any, elsewhere: Path) -> None:
    result = cli("-c", world.config_path, "plan", "-c", "other.toml")
    assert result.code == 1
    assert "-c" in result.err and "twice" in result.err
    assert not list(world.plans_dir.glob("*.json")) if world.plans_dir.exists() else True


def test_lock_refusal_unlock_command_carries_c(world: World, cli: Any, elsewhere: Path) -> None:
    plan = world.plan()
    key = ".bmxgc/locks/" + "books%2F.json"
    holder = {"user": "alice", "host": "ci-runner-7", "pid": "4242", "command": "apply",
              "plan_hash": "sha256:" + "b" * 64, "acquired_at": "2026-01-01T00:00:00Z"}
    world.client.put_object(Bucket=world.name, Key=key, Body=json.dumps(holder).encode())
    result = cli("apply", plan, "-c", world.config_path, "--auto-approve")
    assert result.code == 3, result.output
    assert re.search(rf"bmxgc -c {re.escape(str(world.config_path))} unlock", result.err), result.err
    assert not re.search(r"bmxgc unlock", result.err)
