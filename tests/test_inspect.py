"""`show`, `verify` and `diff`: offline, and a tampered or malformed plan is exit 3 with one clear line."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import pytest

from bmxgc.planfile import default_file_name, render_plan_json
from support import CliResult, assert_one_line_error, make_plan, read_plan, version

Cli = Callable[..., CliResult]

KEYS = [f"books/{i}/image_00.webp" for i in range(1, 9)]


def write(plan: Any, folder: Path) -> Path:
    """A plan file exactly as bmxgc renders and names it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / default_file_name(plan)
    path.write_text(render_plan_json(plan), encoding="utf-8")
    return path


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    """Eight objects, five referenced: three orphans, one dangling reference (a warning)."""
    return write(make_plan(KEYS, KEYS[:5] + ["books/99/missing.webp"]), tmp_path / "plans")


# --------------------------------------------------------------------------- verify


def test_verify_intact_plan_exits_0(cli: Cli, plan_file: Path) -> None:
    result = cli("verify", plan_file)
    assert result.code == 0
    doc = read_plan(plan_file)
    assert result.out.startswith(f"OK: {plan_file}")
    assert doc["plan_hash"] in result.out and "3 orphans" in result.out
    assert result.err == ""


def test_verify_missing_file_is_one_line_error(cli: Cli, tmp_path: Path) -> None:
    result = cli("verify", tmp_path / "nope.json")
    assert_one_line_error(result, 1, "nope.json", "not found")


# --------------------------------------------------------------------------- show


def test_show_text_has_verdict_warnings_and_hash(cli: Cli, plan_file: Path) -> None:
    result = cli("show", plan_file)
    assert result.code == 0
    doc = read_plan(plan_file)
    out = result.out
    assert out.startswith("Warnings (1):")
    assert "1 referenced keys under books/ do not exist" in out
    assert "Plan: 3 to delete." in out
    assert doc["plan_hash"] in out
    for key in doc["sample_orphan_keys"]:
        assert key in out
    assert out.index("Warnings") < out.index("objects scanned") < out.index("Plan: 3 to delete.")


def test_show_is_the_default_text_format(cli: Cli, plan_file: Path) -> None:
    assert cli("show", plan_file).out == cli("show", plan_file, "--format", "text").out


def test_show_markdown_is_a_pr_comment(cli: Cli, plan_file: Path) -> None:
    result = cli("show", plan_file, "--format", "markdown")
    assert result.code == 0
    doc = read_plan(plan_file)
    out = result.out
    assert out.startswith("### bmxgc plan: 3 to delete from `s3://bkt/books/`")
    assert "| objects scanned | 8 (80 B) |" in out
    assert "| **orphans** | **3** (30 B) |" in out
    assert "1 referenced keys under books/ do not exist" in out  # the warning
    assert "`SELECT s3_key FROM t`" in out  # the source
    for key in doc["sample_orphan_keys"]:
        assert key in out
    assert f"`{doc['plan_hash']}`" in out
    assert out.index("WARNING") < out.index("| objects scanned")


def test_show_markdown_without_warnings_says_so(cli: Cli, tmp_path: Path) -> None:
    path = write(make_plan(KEYS, KEYS[:6]), tmp_path)
    out = cli("show", path, "--format", "markdown").out
    assert "No warnings." in out and "WARNING" not in out


def test_show_markdown_keeps_table_intact_with_pipes_in_values(cli: Cli, tmp_path: Path) -> None:
    plan = make_plan(["books/a|b"], database="postgresql://app@db/a|b")
    out = cli("show", write(plan, tmp_path), "--format", "markdown").out
    database_row = next(line for line in out.splitlines() if line.startswith("| database"))
    assert len(re.findall(r"(?<!\\)\|", database_row)) == 3  # two cells: the pipe in the value is escaped
    assert "a\\|b" in database_row


def test_show_json_is_the_plan_without_orphans(cli: Cli, plan_file: Path) -> None:
    result = cli("show", plan_file, "--format", "json")
    assert result.code == 0
    summary = json.loads(result.out)
    doc = read_plan(plan_file)
    assert "orphans" not in summary
    assert summary == {k: v for k, v in doc.items() if k != "orphans"}
    assert summary["stats"]["orphans"] == 3 and summary["plan_hash"] == doc["plan_hash"]


def test_show_json_keeps_unicode_exact(cli: Cli, tmp_path: Path) -> None:
    path = write(make_plan(["books/caf\u00e9", "books/cafe\u0301", "books/😀"]), tmp_path)
    summary = json.loads(cli("show", path, "--format", "json").out)
    assert summary["sample_orphan_keys"] == ["books/cafe\u0301", "books/caf\u00e9", "books/😀"]


# --------------------------------------------------------------------------- diff


def test_diff_lists_keys_added_and_removed_and_stat_changes(cli: Cli, tmp_path: Path) -> None:
    old = write(make_plan(KEYS, KEYS[:5]), tmp_path / "old")  # orphans 6, 7, 8
    new = write(make_plan(KEYS + ["books/9/image_00.webp"], KEYS[:6]), tmp_path / "new")  # 7, 8, 9
    result = cli("diff", old, new)
    assert result.code == 0
    out = result.out
    assert "+ books/9/image_00.webp" in out
    assert "- books/6/image_00.webp" in out
    assert "books/7/image_00.webp" not in out  # in both: not news
    assert "stats.objects_scanned: 8 -> 9" in out
    assert "stats.referenced_found: 5 -> 6" in out
    assert "Diff: 1 added, 1 removed, 0 changed." in out


def test_diff_reports_same_key_with_another_version(cli: Cli, tmp_path: Path) -> None:
    old = write(make_plan([], listing=[version("books/a", vid="v1")]), tmp_path / "old")
    new = write(make_plan([], listing=[version("books/a", vid="v2")]), tmp_path / "new")
    out = cli("diff", old, new).out
    assert "~ books/a: v1 -> v2" in out
    assert "Diff: 0 added, 0 removed, 1 changed." in out


def test_diff_reports_warning_and_setting_changes(cli: Cli, tmp_path: Path) -> None:
    old = write(make_plan(KEYS, KEYS), tmp_path / "old")
    new = write(make_plan(KEYS, [k.removeprefix("books/") for k in KEYS], safety={"max_deletes": 5}), tmp_path / "new")
    out = cli("diff", old, new).out
    assert "safety.max_deletes: 10,000 -> 5" in out
    assert "mapping is probably wrong" in out  # a warning that appeared
    assert "Diff: 8 added, 0 removed, 0 changed." in out


def test_diff_of_a_plan_with_itself_is_empty(cli: Cli, plan_file: Path) -> None:
    result = cli("diff", plan_file, plan_file)
    assert result.code == 0
    assert result.out.strip() == "Diff: 0 added, 0 removed, 0 changed."


def test_diff_shows_many_keys_in_short(cli: Cli, tmp_path: Path) -> None:
    many = [f"books/{i:04d}" for i in range(300)]
    old = write(make_plan(many, many), tmp_path / "old")
    new = write(make_plan(many, []), tmp_path / "new")
    out = cli("diff", old, new).out
    assert "new orphans (300):" in out
    assert "... and 250 more" in out
    assert len(out.splitlines()) < 120


# --------------------------------------------------------------------------- offline


def test_show_verify_diff_work_offline(cli_process: Cli, plan_file: Path, tmp_path: Path) -> None:
    """No S3, no database, no config: every service they could reach is dead."""
    dead = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
        "BMXGC_DATABASE_URL": "postgresql+psycopg2://app:pw@127.0.0.1:9/nothing",
        "BMXGC_CONFIG": str(tmp_path / "no-such-config.toml"),
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    assert cli_process("verify", plan_file, env=dead).code == 0
    result = cli_process("show", plan_file, "--format", "json", env=dead)
    assert result.code == 0 and result.err == "", result.output
    result = cli_process("-c", tmp_path / "also-missing.toml", "diff", plan_file, plan_file, env=dead)
    assert result.code == 0, result.output


def test_show_text_and_markdown_work_offline(
    cli: Cli, plan_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("BMXGC_DATABASE_URL", "postgresql+psycopg2://app:pw@127.0.0.1:9/nothing")
    monkeypatch.setenv("BMXGC_CONFIG", str(tmp_path / "no-such-config.toml"))
    for fmt in ("text", "markdown"):
        result = cli("-c", tmp_path / "missing.toml", "show", plan_file, "--format", fmt)
        assert result.code == 0 and result.err == "", result.output


# --------------------------------------------------------------------------- tampered and malformed plans


def _edit(change: Callable[[dict[str, Any]], None]) -> Callable[[str], str]:
    def tamper(text: str) -> str:
        doc = json.loads(text)
        change(doc)
        return json.dumps(doc, indent=2, ensure_ascii=False)

    return tamper


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        target = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return change


def _delete(path: list[Any]) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        target = doc
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return change


TAMPERS: dict[str, tuple[Callable[[str], str], str]] = {
    # an edit that keeps the schema: only the hash can tell
    # (still sorted: a key out of order is refused before the hash is looked at)
    "edited_orphan_key": (_edit(_set(["orphans", 0, "key"], "books/0/evil.webp")), "plan_hash does not match"),
    "edited_orphan_version": (_edit(_set(["orphans", 0, "version_id"], "other")), "plan_hash does not match"),
    "removed_orphan": (_edit(lambda d: d["orphans"].pop()), "plan_hash does not match"),
    "added_orphan": (
        _edit(lambda d: d["orphans"].append({**d["orphans"][0], "key": "images/x"})),
        "plan_hash does not match",
    ),
    "edited_stats": (_edit(_set(["stats", "orphan_ratio"], 0.01)), "plan_hash does not match"),
    "edited_safety": (_edit(_set(["safety", "max_orphan_ratio"], 1.0)), "plan_hash does not match"),
    "edited_prefix": (_edit(_set(["prefix"], "")), "plan_hash does not match"),
    "warnings_removed": (_edit(_set(["warnings"], [])), "plan_hash does not match"),
    "plan_hash_wrong": (_edit(_set(["plan_hash"], "sha256:" + "0" * 64)), "plan_hash does not match"),
    # schema
    "removed_field": (_edit(_delete(["bucket"])), "bucket: required but missing"),
    "removed_plan_hash": (_edit(_delete(["plan_hash"])), "plan_hash: required but missing"),
    "removed_stats_field": (_edit(_delete(["stats", "orphans"])), "stats.orphans"),
    "extra_field": (_edit(_set(["approved_by"], "me")), "approved_by: unknown field"),
    "extra_field_in_orphan": (_edit(_set(["orphans", 0, "note"], "x")), "orphans[0].note: unknown field"),
    "plan_hash_not_sha256": (_edit(_set(["plan_hash"], "md5:abc")), "plan_hash"),
    "orphans_not_a_list": (_edit(_set(["orphans"], {"key": "books/1"})), "orphans"),
    # version and syntax
    "format_version_2": (_edit(_set(["format_version"], 2)), "unknown format_version 2"),
    "format_version_missing": (_edit(_delete(["format_version"])), "unknown format_version None"),
    "not_json": (lambda text: "this is not a plan\n", "invalid JSON"),
    "truncated": (lambda text: text[: len(text) // 2], "invalid JSON"),
    "empty_file": (lambda text: "", "invalid JSON"),
    "json_array": (lambda text: json.dumps([json.loads(text)]), "not an object"),
    "json_string": (lambda text: '"plan"', "not an object"),
}


@pytest.fixture(params=sorted(TAMPERS))
def tampered(request: pytest.FixtureRequest, plan_file: Path, tmp_path: Path) -> tuple[Path, str]:
    tamper, needle = TAMPERS[request.param]
    path = tmp_path / f"tampered-{request.param}.json"
    path.write_text(tamper(plan_file.read_text(encoding="utf-8")), encoding="utf-8")
    return path, needle


def test_verify_refuses_tampered_plan(cli: Cli, tampered: tuple[Path, str]) -> None:
    path, needle = tampered
    assert_one_line_error(cli("verify", path), 3, str(path), needle)


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_show_refuses_tampered_plan(cli: Cli, tampered: tuple[Path, str], fmt: str) -> None:
    path, needle = tampered
    result = cli("show", path, "--format", fmt)
    assert_one_line_error(result, 3, str(path), needle)
    assert result.out == ""


@pytest.mark.parametrize("side", ["old", "new"])
def test_diff_refuses_tampered_plan(cli: Cli, tampered: tuple[Path, str], plan_file: Path, side: str) -> None:
    path, needle = tampered
    args = (path, plan_file) if side == "old" else (plan_file, path)
    result = cli("diff", *args)
    assert_one_line_error(result, 3, str(path), needle)
    assert result.out == ""


def test_tampered_plan_message_says_what_to_do(cli: Cli, plan_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "edited.json"
    path.write_text(TAMPERS["edited_orphan_key"][0](plan_file.read_text(encoding="utf-8")), encoding="utf-8")
    line = assert_one_line_error(cli("verify", path), 3)
    assert "edited after it was made" in line and "plan again" in line


def test_verify_refuses_plan_made_unreadable(cli: Cli, plan_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    result = cli("verify", path)
    assert_one_line_error(result, 3, str(path))
    assert os.path.exists(path)


def test_diff_compares_warnings_as_sets_and_prints_numbers_as_show_does(cli: Cli, tmp_path: Path) -> None:
    from bmxgc.planfile import seal

    keys = [f"books/{i:02d}" for i in range(15)]
    first, second = "dangling references: 3", "reference values skipped: t: 1 NULL"
    old_plan = make_plan(keys, keys[1:])  # 1 orphan of 15
    new_plan = make_plan(keys, keys[2:])  # 2 orphans of 15
    old = write(seal(old_plan.model_copy(update={"warnings": [first, second]})), tmp_path / "old")
    # One warning came first, the other two shifted: only the new one is news.
    new = write(seal(new_plan.model_copy(update={"warnings": ["a new warning", first, second]})), tmp_path / "new")
    result = cli("diff", old, new)
    assert result.code == 0, result.output
    out = result.out
    assert "Warnings added (1):\n  + a new warning" in out
    assert "Warnings removed" not in out
    assert "warnings[" not in out and "-> null" not in out
    assert "stats.orphan_ratio: 6.7% -> 13.3%" in out  # as show prints it
    assert "0.0666" not in out and "0.1333" not in out
    assert "stats.orphan_bytes" not in out or "B ->" in out
    removed = cli("diff", new, old).out
    assert "Warnings removed (1):\n  - a new warning" in removed and "Warnings added" not in removed
