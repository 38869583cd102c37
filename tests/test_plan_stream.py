"""Plans streamed (issue 11 item 5): orphans as plain records, the file written
and read one line at a time with the hash computed as it goes, the canonical
hash of docs/plan-file.md unchanged, and a file out of bmxgc's layout still
judged exactly as a whole parse would."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import pytest

from bmxgc.planfile import default_file_name, load_plan, render_plan_json
from bmxgc.store import LocalStore
from support import CliResult, make_plan, read_plan, spec_hash

Cli = Callable[..., CliResult]
DATA = Path(__file__).parent / "data"
# Keys whose JSON needs escapes or is not ASCII: the lines a fast path must not get wrong.
ODD = ["books/a b", 'books/quote"d', "books/back\\slash", "books/tab\there", "books/ctl\x01x", "books/é", "books/😀",
       "books/\u2028sep", "books/x/"]


def write(plan: Any, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / default_file_name(plan)
    path.write_text(render_plan_json(plan), encoding="utf-8")
    return path


def many(n: int) -> Any:
    return make_plan([f"books/{i:07d}/image_00.webp" for i in range(n)], ["books/0000000/image_00.webp"],
                     safety={"max_deletes": 10 * n, "max_orphan_ratio": 1.0})


def rehashed(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "plan_hash": spec_hash(doc)}


def layout(doc: dict[str, Any]) -> str:
    """``doc`` laid out as bmxgc lays a plan out (summary indented, one orphan per line)."""
    head = {k: v for k, v in doc.items() if k != "orphans"}
    text = json.dumps(head, indent=2, ensure_ascii=False)[:-2]
    rows = ",\n".join("    " + json.dumps(o, ensure_ascii=False, separators=(", ", ": ")) for o in doc["orphans"])
    return text + ',\n  "orphans": [\n' + rows + "\n  ]\n}\n"


# --------------------------------------------------------------------------- the hash and the bytes


def test_plans_written_before_still_verify_and_render_byte_for_byte(tmp_path: Path) -> None:
    source = DATA / "20261128T120000Z-before-codec.json"
    plan = load_plan(source)
    assert plan.plan_hash == read_plan(source)["plan_hash"]
    assert render_plan_json(plan) == source.read_text(encoding="utf-8")


def test_odd_keys_hash_as_the_spec_says_and_read_back_exactly(tmp_path: Path) -> None:
    plan = make_plan(ODD + [f"books/{i:03d}" for i in range(20)], [])
    path = write(plan, tmp_path)
    doc = read_plan(path)
    assert plan.plan_hash == doc["plan_hash"] == spec_hash(doc)
    loaded = load_plan(path)
    assert [o.key for o in loaded.orphans] == [o["key"] for o in doc["orphans"]]
    assert {o.key for o in loaded.orphans} >= set(ODD)
    assert render_plan_json(loaded) == path.read_text(encoding="utf-8")


def test_a_plan_with_a_cross_check_hashes_and_reads_back(tmp_path: Path) -> None:
    from bmxgc.planner import with_cross_check

    plan = with_cross_check(make_plan(["books/a", "books/b"], []), [("t", "c", "books/a")], ["t.c"], [])
    path = write(plan, tmp_path)
    assert spec_hash(read_plan(path)) == plan.plan_hash == load_plan(path).plan_hash


def test_orphans_are_plain_records_not_pydantic_models() -> None:
    from pydantic import BaseModel

    plan = make_plan(["books/a"], [])
    (orphan,) = plan.orphans
    assert not isinstance(orphan, BaseModel)
    assert (orphan.key, orphan.size, orphan.last_modified) == ("books/a", 10, "2026-10-29T12:00:00Z")


# --------------------------------------------------------------------------- a file out of layout


def test_a_reindented_plan_with_escaped_unicode_still_verifies(cli: Cli, tmp_path: Path) -> None:
    path = write(make_plan(ODD, []), tmp_path)
    doc = read_plan(path)
    copy = tmp_path / "pretty.json"
    copy.write_text(json.dumps(doc, indent=4, ensure_ascii=True), encoding="utf-8")
    result = cli("verify", copy)
    assert result.code == 0, result.err
    assert doc["plan_hash"] in result.out


def test_one_orphan_line_reformatted_still_verifies(cli: Cli, tmp_path: Path) -> None:
    path = write(make_plan([f"books/{i:03d}" for i in range(10)], []), tmp_path)
    lines = path.read_text(encoding="utf-8").split("\n")
    row = next(i for i, line in enumerate(lines) if '{"key": "books/004"' in line)
    lines[row] = lines[row].replace('", "', '",  "').replace("{", "{ ")
    path.chmod(0o644)
    path.write_text("\n".join(lines), encoding="utf-8")
    assert cli("verify", path).code == 0
    assert [o.key for o in load_plan(path).orphans][4] == "books/004"


def test_a_key_twice_inside_one_orphan_line_is_refused(cli: Cli, tmp_path: Path) -> None:
    path = write(make_plan([f"books/{i:03d}" for i in range(5)], []), tmp_path)
    text = path.read_text(encoding="utf-8")
    forged = text.replace('{"key": "books/002"', '{"key": "books/zzz", "key": "books/002"')
    copy = tmp_path / "forged.json"
    copy.write_text(forged, encoding="utf-8")
    result = cli("verify", copy)
    assert result.code == 3 and 'duplicate key "key"' in result.err, result.err


def test_a_second_orphans_list_after_the_first_is_refused(cli: Cli, tmp_path: Path) -> None:
    path = write(make_plan(["books/a", "books/b"], []), tmp_path)
    text = path.read_text(encoding="utf-8")
    forged = text[: text.rindex("  ]")] + '  ],\n  "orphans": []\n}\n'
    copy = tmp_path / "forged.json"
    copy.write_text(forged, encoding="utf-8")
    result = cli("verify", copy)
    assert result.code == 3 and 'duplicate key "orphans"' in result.err, result.err


def test_text_after_the_plan_is_refused(cli: Cli, tmp_path: Path) -> None:
    path = write(make_plan(["books/a", "books/b"], []), tmp_path)
    copy = tmp_path / "forged.json"
    copy.write_text(path.read_text(encoding="utf-8") + '{"more": 1}\n', encoding="utf-8")
    result = cli("verify", copy)
    assert result.code == 3 and "invalid JSON" in result.err, result.err


@pytest.mark.parametrize("order", ["descending", "duplicate"])
def test_orphans_out_of_order_are_refused_even_rehashed(cli: Cli, tmp_path: Path, order: str) -> None:
    doc = read_plan(write(make_plan(["books/a", "books/b", "books/c"], []), tmp_path))
    rows = doc["orphans"]
    doc["orphans"] = [rows[0], rows[2], rows[1]] if order == "descending" else [rows[0], rows[1], rows[1], rows[2]]
    for name, text in (("layout", layout(rehashed(doc))), ("pretty", json.dumps(rehashed(doc), indent=1))):
        copy = tmp_path / f"{order}-{name}.json"
        copy.write_text(text, encoding="utf-8")
        result = cli("verify", copy)
        assert result.code == 3, result.out
        expected = "listed twice" if order == "duplicate" else "sorted by key"
        assert expected in result.err and "books/" in result.err, result.err


@pytest.mark.parametrize(
    "change",
    [
        ('"size": 10', '"size": -1'),
        ('"size": 10', '"size": 10.0'),
        ('"size": 10', '"size": true'),
        ('"last_modified": "2026-10-29T12:00:00Z"', '"last_modified": "2026-02-30T12:00:00Z"'),
        ('"last_modified": "2026-10-29T12:00:00Z"', '"last_modified": "1969-12-31T23:59:59Z"'),
        ('"etag": "', '"etag": 5, "x": "'),
    ],
)
def test_a_bad_orphan_line_is_refused_as_a_whole_parse_would(cli: Cli, tmp_path: Path, change: tuple[str, str]) -> None:
    doc = read_plan(write(make_plan([f"books/{i:03d}" for i in range(5)], []), tmp_path))
    text = layout(rehashed(doc))
    lines = text.split("\n")
    row = next(i for i, line in enumerate(lines) if '{"key": "books/003"' in line)
    lines[row] = lines[row].replace(*change, 1)
    edited = json.loads("\n".join(lines))
    copy = tmp_path / "bad.json"
    copy.write_text(layout(rehashed(edited)), encoding="utf-8")
    result = cli("verify", copy)
    assert result.code == 3 and "orphans[3]" in result.err, result.err


# --------------------------------------------------------------------------- memory


def _peak(action: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_verify_and_show_hold_one_line_at_a_time(tmp_path: Path) -> None:
    from bmxgc.commands.inspect import verify

    path = write(many(40_000), tmp_path)
    size = path.stat().st_size
    peak = _peak(lambda: verify(path))
    assert peak < 4_000_000 < size, f"peak {peak:,} bytes for a {size:,}-byte plan"


def test_diff_of_two_large_plans_holds_little(tmp_path: Path) -> None:
    from bmxgc.commands.inspect import diff

    old = write(many(40_000), tmp_path / "old")
    new = write(many(40_001), tmp_path / "new")
    peak = _peak(lambda: diff(old, new))
    assert peak < 8_000_000 < 2 * old.stat().st_size, f"peak {peak:,} bytes"
    result = diff(old, new)
    assert [o.key for o in result.added] == ["books/0040000/image_00.webp"] and not result.removed


def test_the_trend_reads_only_the_head_of_previous_plans(tmp_path: Path) -> None:
    from bmxgc.commands.plan import previous_plan

    folder = tmp_path / "plans"
    path = write(many(40_000), folder)
    store = LocalStore(folder)
    peak = _peak(lambda: previous_plan(store, "bkt", "books/"))
    found = previous_plan(store, "bkt", "books/")
    assert found is not None and found.orphans == 39_999 and found.name == path.name
    assert peak < 4_000_000 < path.stat().st_size, f"peak {peak:,} bytes"


def test_the_plan_file_is_written_without_holding_its_text(tmp_path: Path) -> None:
    from bmxgc.planfile import plan_chunks

    plan = many(40_000)
    out = tmp_path / "p.json"
    peak = _peak(lambda: LocalStore(tmp_path).create("p.json", plan_chunks(plan)))
    assert out.read_text(encoding="utf-8") == render_plan_json(plan)
    assert peak < 4_000_000 < out.stat().st_size, f"peak {peak:,} bytes"


def test_previous_plan_copied_from_tests_data_is_a_trend_baseline(tmp_path: Path) -> None:
    from bmxgc.commands.plan import previous_plan

    folder = tmp_path / "plans"
    folder.mkdir()
    shutil.copy(DATA / "20261128T120000Z-before-codec.json", folder / "20261128T120000Z-0123456789ab.json")
    found = previous_plan(LocalStore(folder), "bkt", "books/")
    assert found is not None and found.orphans == 3 and found.created_at == "2026-11-28T12:00:00Z"
