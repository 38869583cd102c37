"""docs/reference.md (issue 9 item 11): every command, flag and config key of
this bmxgc is in it, the README links it, nothing in the repository points
outside the repository, and every exit code the reference and the README
state is the one the command line returns."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
from pydantic import BaseModel

from bmxgc.cli import cli as bmxgc_cli
from bmxgc.config import Config

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    files = [ROOT / line for line in out.stdout.splitlines()]
    # Files added in this worktree but not committed yet count too.
    new = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard", *patterns], cwd=ROOT, capture_output=True, text=True
    )
    return files + [ROOT / line for line in new.stdout.splitlines()]


def test_readme_links_the_reference() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/reference.md)" in readme


def test_no_link_points_outside_the_repository_or_nowhere() -> None:
    bad = []
    for doc in tracked("*.md"):
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#", 1)[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                bad.append(f"{doc.relative_to(ROOT)}: {target}")
    assert bad == []


def test_nothing_names_the_contract_users_do_not_have() -> None:
    here = Path(__file__).resolve()
    named = [
        str(p.relative_to(ROOT))
        for p in tracked("*.md", "*.py", "*.toml", "*.yml", "*.json")
        if p != here and p.exists() and re.search(r"SPEC\.md|shared/SPEC", p.read_text(encoding="utf-8", errors="replace"))
    ]
    assert named == []


def test_every_command_and_flag_is_in_the_reference() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    missing = []
    for name, command in bmxgc_cli.commands.items():
        if f"bmxgc {name}" not in text:
            missing.append(f"bmxgc {name}")
        for param in command.params:
            if isinstance(param, click.Option):
                if not any(f"`{opt}" in text for opt in param.opts):
                    missing.append(f"{name} {param.opts}")
    for param in bmxgc_cli.params:
        if isinstance(param, click.Option) and not any(opt in text for opt in param.opts):
            missing.append(str(param.opts))
    assert missing == []


def config_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        annotation: Any = field.annotation
        inner = getattr(annotation, "__args__", (None,))[0]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += config_keys(annotation, f"{prefix}{name}.")
        elif isinstance(inner, type) and issubclass(inner, BaseModel):
            keys += config_keys(inner, f"{prefix}{name}[].")
        else:
            keys.append(prefix + name)
    return keys


def test_every_config_key_is_in_the_reference() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    keys = config_keys(Config)
    assert "s3.bucket" in keys and "references[].query" in keys and "safety.protect" in keys
    assert [k for k in keys if f"`{k}`" not in text] == []


def exit_table(path: Path) -> dict[int, str]:
    text = path.read_text(encoding="utf-8")
    table = text[text.index("| code | meaning |"):]
    return {int(code): meaning for code, meaning in re.findall(r"^\| `(\d+)` \| (.*) \|$", table, re.M)}


def test_readme_and_reference_state_the_same_exit_codes() -> None:
    reference = exit_table(REFERENCE)
    from bmxgc import errors, interrupts

    codes = {errors.EXIT_OK, errors.EXIT_ERROR, errors.EXIT_CHANGES, errors.EXIT_REFUSED}
    assert sorted(reference) == sorted(codes | {interrupts.SIGINT_EXIT, interrupts.SIGTERM_EXIT})
    assert exit_table(ROOT / "README.md") == reference
    # A missing file is a bad argument (1), never a refusal (3).
    assert "does not exist" in reference[1] and "does not exist" not in reference[3]


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "missing.json"],
        ["show", "missing.json"],
        ["diff", "missing.json", "missing.json"],
    ],
)
def test_a_missing_plan_exits_1_as_the_reference_says(cli: Any, tmp_path: Path, monkeypatch: Any, args: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli(*args)
    assert result.code == 1, result.output
    assert "missing.json" in result.err and "Traceback" not in result.output


def test_apply_and_undo_of_a_missing_file_exit_1(world: Any, cli: Any, tmp_path: Path) -> None:
    for args in (["apply", tmp_path / "missing.json", "--auto-approve"], ["undo", tmp_path / "missing.receipt.json", "--auto-approve"]):
        result = cli("-c", world.config_path, *args)
        assert result.code == 1, result.output
        assert "missing" in result.err
