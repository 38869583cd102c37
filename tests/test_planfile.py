"""The plan file's content: a hash anyone can recompute, a layout for review, strict reading.

Where plans are written (file name, read-only mode, never overwriting) is
tested through the real ``plan`` command in test_cli_plan.py.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from bmxgc.errors import InputNotFound, PlanFileError
from bmxgc.planfile import default_file_name, load_plan, parse_plan_text, render_plan_json
from support import PLAN_NAME, make_plan, read_plan, spec_hash

UNUSUAL = ["books/a b.webp", "books/a+b", "books/a%20b", "books/é", "books/e\u0301", "books/😀", "books/tab\there"]


def write_plan(plan: Any, folder: Path) -> Path:
    """The plan's text under its default name, as bmxgc renders and names it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / default_file_name(plan)
    path.write_text(render_plan_json(plan), encoding="utf-8")
    return path


@pytest.fixture
def plan_path(tmp_path: Path) -> Path:
    plan = make_plan(UNUSUAL + [f"books/{i:03d}/image.webp" for i in range(30)], ["books/000/image.webp"])
    return write_plan(plan, tmp_path / "plans")


def test_planfile_hash_recomputes_exactly_as_spec_says(plan_path: Path) -> None:
    doc = read_plan(plan_path)
    assert doc["plan_hash"] == spec_hash(doc)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", doc["plan_hash"])


def test_planfile_hash_depends_on_non_ascii_serialisation(plan_path: Path) -> None:
    # With ensure_ascii=True the same object would hash differently: the spec's
    # ensure_ascii=False is what the file's hash was made with.
    import hashlib

    doc = read_plan(plan_path)
    body = {k: v for k, v in doc.items() if k != "plan_hash"}
    ascii_hash = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert doc["plan_hash"] != "sha256:" + ascii_hash


def test_planfile_name_is_timestamp_and_hash_prefix(plan_path: Path) -> None:
    doc = read_plan(plan_path)
    assert re.fullmatch(PLAN_NAME, plan_path.name)
    stamp, short = plan_path.stem.split("-")
    assert short == doc["plan_hash"].removeprefix("sha256:")[:12]
    assert stamp == doc["created_at"].replace("-", "").replace(":", "")
    assert doc["created_at"] == "2026-11-28T12:00:00Z"


def test_planfile_summary_before_orphans(plan_path: Path) -> None:
    text = plan_path.read_text(encoding="utf-8")
    top_level = re.findall(r'^  "([a-z_]+)":', text, flags=re.M)
    assert top_level[0] == "format_version"
    assert top_level[-1] == "orphans"
    for field in ("plan_hash", "bucket", "prefix", "database", "stats", "warnings", "sample_orphan_keys"):
        assert top_level.index(field) < top_level.index("orphans")


def test_planfile_one_orphan_per_line_sorted(plan_path: Path) -> None:
    lines = plan_path.read_text(encoding="utf-8").splitlines()
    start = lines.index('  "orphans": [')
    end = lines.index("  ]", start)
    rows = [json.loads(line.strip().rstrip(",")) for line in lines[start + 1 : end]]
    doc = read_plan(plan_path)
    assert rows == doc["orphans"]
    keys = [r["key"] for r in rows]
    assert keys == sorted(keys, key=lambda k: k.encode("utf-8"))
    assert set(rows[0]) == {"key", "version_id", "etag", "size", "last_modified"}


def test_planfile_keeps_unusual_keys_readable_and_exact(plan_path: Path) -> None:
    text = plan_path.read_text(encoding="utf-8")
    assert "books/é" in text and "books/😀" in text  # UTF-8, not \\u escapes, for reviewers
    keys = [o["key"] for o in read_plan(plan_path)["orphans"]]
    for key in UNUSUAL:
        assert key in keys
    nfc: str = "books/é"
    nfd: str = "books/e\u0301"
    assert nfc != nfd and {nfc, nfd} <= set(keys)


def test_planfile_git_diff_of_two_plans_shows_keys_that_came_and_went(tmp_path: Path) -> None:
    keys = [f"books/{i:03d}" for i in range(40)]
    old = write_plan(make_plan(keys, ["books/010"]), tmp_path / "old")
    new = write_plan(make_plan(keys + ["books/999"], ["books/010", "books/020"]), tmp_path / "new")
    diff = list(difflib.unified_diff(old.read_text().splitlines(), new.read_text().splitlines(), lineterm="", n=0))
    def changed(sign: str) -> set[str]:
        rows = [d[1:].strip().rstrip(",") for d in diff if d.startswith(sign) and '"key"' in d]
        return {json.loads(row)["key"] for row in rows}

    # The list's last line may change only by its comma; every other orphan line is untouched.
    assert changed("-") - changed("+") == {"books/020"}
    assert changed("+") - changed("-") == {"books/999"}
    assert len(changed("-") & changed("+")) <= 1


def test_planfile_round_trips(plan_path: Path) -> None:
    plan = load_plan(plan_path)
    assert plan.plan_hash == read_plan(plan_path)["plan_hash"]
    assert [o.key for o in plan.orphans] == [o["key"] for o in read_plan(plan_path)["orphans"]]


def test_planfile_checks_format_version_before_schema(plan_path: Path) -> None:
    doc = read_plan(plan_path)
    doc["format_version"] = 2
    del doc["stats"]
    with pytest.raises(PlanFileError, match=r"unknown format_version 2"):
        parse_plan_text(json.dumps(doc), "p.json")


def test_planfile_checks_schema_before_hash(plan_path: Path) -> None:
    doc = read_plan(plan_path)
    doc["surprise"] = True
    doc["plan_hash"] = spec_hash(doc)  # a forger who recomputes the hash
    with pytest.raises(PlanFileError, match=r"surprise: unknown field"):
        parse_plan_text(json.dumps(doc), "p.json")


def test_planfile_forged_with_recomputed_hash_but_wrong_type_is_refused(plan_path: Path) -> None:
    doc = read_plan(plan_path)
    doc["stats"]["orphans"] = "lots"
    doc["plan_hash"] = spec_hash(doc)
    with pytest.raises(PlanFileError, match=r"stats\.orphans"):
        parse_plan_text(json.dumps(doc), "p.json")


@pytest.mark.parametrize("value", [True, "1", 1.5, None])
def test_planfile_format_version_must_be_integer_one(plan_path: Path, value: object) -> None:
    doc = read_plan(plan_path)
    doc["format_version"] = value
    doc["plan_hash"] = spec_hash(doc)
    with pytest.raises(PlanFileError, match="format_version"):
        parse_plan_text(json.dumps(doc), "p.json")


def test_planfile_reformatted_but_unchanged_plan_still_verifies(plan_path: Path, tmp_path: Path) -> None:
    # The hash is of the content, not the layout: a pretty-printer does not break it.
    doc = read_plan(plan_path)
    copy = tmp_path / "reformatted.json"
    copy.write_text(json.dumps(doc, indent=4, ensure_ascii=True), encoding="utf-8")
    assert load_plan(copy).plan_hash == doc["plan_hash"]


def test_planfile_missing_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputNotFound, match="not found"):
        load_plan(tmp_path / "nope.json")


def test_planfile_not_utf8_is_plan_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"k": "é"}'.encode("latin-1"))
    with pytest.raises(PlanFileError):
        load_plan(path)


