"""Files bmxgc reads (plans, receipts, undo records, recovery plans) are read
strictly and one bad file never blocks the rest (issue 10, items 3, 8, 9, 14,
15, 16, 17).

Every test goes through the CLI. The ones that touch S3 use moto's server and
SQLite (``world`` from apply_support), and a refusal leaves every version in
the bucket as it was.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from apply_support import World, build_world
from bmxgc.planfile import default_file_name, render_plan_json
from support import CliResult, assert_one_line_error, config_doc, make_plan, read_plan, spec_hash, write_toml

Cli = Callable[..., CliResult]

KEYS = [f"books/{i}/image_00.webp" for i in range(1, 9)]
# The config that matches make_plan's plans (bucket, prefix, database), so
# that apply gets past the environment gate; nothing listens on the endpoint.
DEAD_ENDPOINT = "http://127.0.0.1:9"


def offline_plan(folder: Path) -> Path:
    """A plan made by bmxgc's planner (three orphans), written as bmxgc writes it."""
    plan = make_plan(KEYS, KEYS[:5])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / default_file_name(plan)
    path.write_text(render_plan_json(plan), encoding="utf-8")
    return path


def matching_config(tmp_path: Path) -> Path:
    doc = config_doc(
        bucket="bkt",
        endpoint=DEAD_ENDPOINT,
        database_url="postgresql+psycopg2://app@db:5432/app",
        safety={"max_plan_age": "36500d"},
    )
    return write_toml(tmp_path / "matching.toml", doc)


def forged(path: Path, change: Callable[[dict[str, Any]], None], name: str = "forged.json") -> Path:
    """The plan edited by ``change`` and rehashed: anyone can recompute the hash."""
    doc = read_plan(path)
    change(doc)
    doc["plan_hash"] = spec_hash(doc)
    out = path.parent / name
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    return out


def setter(dotted: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        target = doc
        for part in parents:
            target = target[part]
        target[last] = value

    return change


def receipt_of(world: World, plan: Path) -> Path:
    return world.receipt_path(plan)


# --------------------------------------------------------------------------- item 3: duplicate orphans


def test_plan_with_a_duplicate_orphan_is_refused_when_read(cli: Cli, tmp_path: Path) -> None:
    plan = offline_plan(tmp_path / "plans")
    twice = forged(plan, lambda d: d["orphans"].insert(1, dict(d["orphans"][0])))
    key = read_plan(twice)["orphans"][0]["key"]
    assert_one_line_error(cli("verify", twice), 3, str(twice), "orphans", key, "twice")


def test_apply_of_a_plan_with_a_duplicate_orphan_deletes_nothing(world: World, cli: Cli) -> None:
    plan = world.plan()
    key = world.orphan_keys[0]

    def duplicate(doc: dict[str, Any]) -> None:
        doc["orphans"].append(dict(doc["orphans"][0]))
        doc["orphans"].sort(key=lambda o: o["key"])
        doc["stats"]["orphans"] += 1

    twice = forged(plan, duplicate, name="twice.json")
    before = world.snapshot()
    result = cli("-c", world.config_path, "apply", twice, "--auto-approve")
    assert_one_line_error(result, 3, key, "twice")
    assert world.snapshot() == before


# --------------------------------------------------------------------------- item 9: duplicate JSON keys


def test_plan_with_two_orphans_lists_is_refused(cli: Cli, tmp_path: Path) -> None:
    # A reviewer reads the first "orphans" (one harmless key); json's last one
    # wins and the hash is over that one, so the file verified as intact.
    plan = offline_plan(tmp_path / "plans")
    text = plan.read_text(encoding="utf-8")
    decoy = '{\n  "orphans": [{"key": "books/tmp/one.txt", "version_id": "v", "etag": "e", "size": 1, "last_modified": "2026-11-28T12:00:00Z"}],'
    doubled = tmp_path / "doubled.json"
    doubled.write_text(text.replace("{", decoy, 1), encoding="utf-8")
    assert json.loads(doubled.read_text())["plan_hash"] == spec_hash(json.loads(doubled.read_text()))
    assert_one_line_error(cli("verify", doubled), 3, str(doubled), "duplicate", '"orphans"')


def test_plan_with_a_duplicated_field_inside_stats_is_refused(cli: Cli, tmp_path: Path) -> None:
    plan = offline_plan(tmp_path / "plans")
    text = plan.read_text(encoding="utf-8")
    doubled = tmp_path / "doubled.json"
    doubled.write_text(text.replace('"stats": {', '"stats": {\n    "orphans": 0,', 1), encoding="utf-8")
    assert_one_line_error(cli("verify", doubled), 3, str(doubled), "duplicate", '"orphans"')


def test_receipt_with_a_duplicated_field_is_refused_by_undo(world: World, cli: Cli) -> None:
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    receipt = receipt_of(world, plan)
    text = receipt.read_text(encoding="utf-8")
    receipt.write_text(text.replace('"bucket":', '"deleted": [],\n "bucket":', 1), encoding="utf-8")
    before = world.snapshot()
    result = cli("-c", world.config_path, "undo", receipt, "--auto-approve")
    assert_one_line_error(result, 3, str(receipt), "duplicate", '"deleted"')
    assert world.snapshot() == before


def test_undo_record_with_a_duplicated_field_is_refused(world: World, cli: Cli) -> None:
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    receipt = receipt_of(world, plan)
    assert cli("-c", world.config_path, "undo", receipt, "--auto-approve").code == 0
    record = receipt.with_name(receipt.name.replace(".receipt.json", ".undo.json"))
    text = record.read_text(encoding="utf-8")
    record.write_text(text.replace('"runs":', '"runs": [],\n "runs":', 1), encoding="utf-8")
    result = cli("-c", world.config_path, "undo", receipt, "--auto-approve")
    assert_one_line_error(result, 3, str(record), "unreadable")


# --------------------------------------------------------------------------- item 8: applied once, by plan_hash


def test_a_copy_of_an_applied_plan_is_refused_also_after_undo(world: World, cli: Cli) -> None:
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    receipt = receipt_of(world, plan)
    copy = world.root / "copy-of-the-plan.json"
    shutil.copyfile(plan, copy)

    after_apply = world.snapshot()
    result = cli("-c", world.config_path, "apply", copy, "--auto-approve")
    assert_one_line_error(result, 3, "gate 'integrity'", str(receipt), "applied before")
    assert world.snapshot() == after_apply

    assert cli("-c", world.config_path, "undo", "--auto-approve").code == 0
    world.assert_orphans_restored()
    restored = world.snapshot()
    result = cli("-c", world.config_path, "apply", copy, "--auto-approve")
    assert_one_line_error(result, 3, "gate 'integrity'", str(receipt), "applied before")
    assert world.snapshot() == restored
    assert not (world.plans_dir / "copy-of-the-plan.receipt.json").exists()


def test_a_copy_is_found_in_a_large_receipt_whatever_its_field_order(
    bucket: Any, sqlite_db: Any, tmp_path: Path, cli: Cli
) -> None:
    # 150 deleted entries put the receipt well past the first kilobytes; with
    # its fields sorted, plan_hash comes after the whole 'deleted' list.
    world = build_world(bucket, sqlite_db, tmp_path, live=150, orphans=150, fast=True)
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    receipt = receipt_of(world, plan)
    assert receipt.stat().st_size > 20_000
    copy = world.root / "renamed.json"
    shutil.copyfile(plan, copy)
    before = world.snapshot()
    for layout in ("as written", "sorted"):
        if layout == "sorted":
            doc = json.loads(receipt.read_text(encoding="utf-8"))
            receipt.write_text(json.dumps(doc, sort_keys=True, indent=2), encoding="utf-8")
        result = cli("-c", world.config_path, "apply", copy, "--auto-approve")
        assert_one_line_error(result, 3, "gate 'integrity'", str(receipt), "applied before")
    assert world.snapshot() == before


def test_an_unreadable_receipt_does_not_hide_the_receipt_of_the_plan(world: World, cli: Cli) -> None:
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    (world.plans_dir / "00000000T000000Z-broken.receipt.json").write_text("{not json", encoding="utf-8")
    (world.plans_dir / "zzzzzzzzT000000Z-broken.receipt.json").write_text('{"format_version": 9}', encoding="utf-8")
    copy = world.root / "copy.json"
    shutil.copyfile(plan, copy)
    before = world.snapshot()
    result = cli("-c", world.config_path, "apply", copy, "--auto-approve")
    assert_one_line_error(result, 3, "gate 'integrity'", str(receipt_of(world, plan)), "applied before")
    assert world.snapshot() == before


def test_an_unreadable_receipt_refuses_apply_rather_than_guessing(world: World, cli: Cli) -> None:
    broken = world.plans_dir / "20200101T000000Z-0123456789ab.receipt.json"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text('{"format_version": 1, "kind": "apply", "plan_ha', encoding="utf-8")
    plan = world.plan()
    before = world.snapshot()
    result = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert_one_line_error(result, 3, "gate 'integrity'", str(broken), "unreadable")
    assert world.snapshot() == before
    # Moved aside, the doubt is gone and the plan applies.
    broken.rename(world.root / broken.name)
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    assert all(world.current(k) is None for k in world.orphan_keys)


# --------------------------------------------------------------------------- item 14: named errors, never "unexpected"


MALFORMED_PLANS: list[tuple[str, Callable[[dict[str, Any]], None], tuple[str, ...]]] = [
    ("created_at_words", setter("created_at", "yesterday"), ("created_at", "RFC 3339")),
    ("created_at_no_zone", setter("created_at", "2026-11-28T12:00:00"), ("created_at", "RFC 3339")),
    ("created_at_month_13", setter("created_at", "2026-13-28T12:00:00Z"), ("created_at",)),
    ("max_plan_age_weeks", setter("safety.max_plan_age", "1w"), ("safety.max_plan_age", "duration")),
    ("min_age_overflow", setter("safety.min_age", "99999999999999d"), ("safety.min_age", "too long")),
    ("last_modified_words", lambda d: d["orphans"][0].update(last_modified="soon"), ("orphans[0].last_modified",)),
]


@pytest.mark.parametrize(
    "change,needles", [(c, n) for _, c, n in MALFORMED_PLANS], ids=[i for i, _, _ in MALFORMED_PLANS]
)
def test_malformed_plan_field_is_a_named_error_in_verify_and_apply(
    cli: Cli, tmp_path: Path, change: Callable[[dict[str, Any]], None], needles: tuple[str, ...]
) -> None:
    bad = forged(offline_plan(tmp_path / "plans"), change)
    assert_one_line_error(cli("verify", bad), 3, str(bad), *needles)
    assert_one_line_error(cli("-c", matching_config(tmp_path), "apply", bad, "--auto-approve"), 3, str(bad), *needles)


def test_deeply_nested_plan_is_a_named_error(cli: Cli, tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"format_version": 1, "stats": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    assert_one_line_error(cli("verify", deep), 3, str(deep), "nested too deeply")
    assert_one_line_error(cli("-c", matching_config(tmp_path), "apply", deep, "--auto-approve"), 3, "nested too deeply")


def test_deeply_nested_receipt_is_a_named_error(cli: Cli, tmp_path: Path) -> None:
    deep = tmp_path / "plans" / "deep.receipt.json"
    deep.parent.mkdir()
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    result = cli("-c", matching_config(tmp_path), "undo", deep, "--auto-approve")
    assert_one_line_error(result, 3, str(deep), "nested too deeply")


def test_huge_integer_in_a_plan_is_a_named_error(cli: Cli, tmp_path: Path) -> None:
    plan = offline_plan(tmp_path / "plans")
    huge = tmp_path / "huge.json"
    huge.write_text(plan.read_text().replace('"objects_scanned": ', '"objects_scanned": ' + "9" * 5000, 1))
    assert_one_line_error(cli("verify", huge), 3, str(huge), "not a plan file")


# --------------------------------------------------------------------------- item 15: strict types in files


STRICT_PLANS: list[tuple[str, Callable[[dict[str, Any]], None], tuple[str, ...]]] = [
    ("format_version_float", setter("format_version", 1.0), ("format_version",)),
    ("format_version_true", setter("format_version", True), ("format_version",)),
    ("max_deletes_true", setter("safety.max_deletes", True), ("safety.max_deletes",)),
    ("max_deletes_string", setter("safety.max_deletes", "10"), ("safety.max_deletes",)),
    ("max_deletes_float", setter("safety.max_deletes", 10.0), ("safety.max_deletes",)),
    ("max_orphan_ratio_true", setter("safety.max_orphan_ratio", True), ("safety.max_orphan_ratio",)),
    ("max_orphan_ratio_string", setter("safety.max_orphan_ratio", "0.5"), ("safety.max_orphan_ratio",)),
    ("orphan_ratio_nan", setter("stats.orphan_ratio", float("nan")), ("NaN",)),
    ("orphan_ratio_infinity", setter("stats.orphan_ratio", float("inf")), ("Infinity",)),
    ("orphans_count_true", setter("stats.orphans", True), ("stats.orphans",)),
    ("size_string", lambda d: d["orphans"][0].update(size="10"), ("orphans[0].size",)),
]


@pytest.mark.parametrize("change,needles", [(c, n) for _, c, n in STRICT_PLANS], ids=[i for i, _, _ in STRICT_PLANS])
def test_plan_fields_have_strict_types(
    cli: Cli, tmp_path: Path, change: Callable[[dict[str, Any]], None], needles: tuple[str, ...]
) -> None:
    bad = forged(offline_plan(tmp_path / "plans"), change)
    assert_one_line_error(cli("verify", bad), 3, str(bad), *needles)


def test_plan_with_an_overflowing_float_is_refused(cli: Cli, tmp_path: Path) -> None:
    # 1e400 is read by Python's json as infinity, which the hash then covers as "Infinity".
    plan = offline_plan(tmp_path / "plans")
    doc = read_plan(plan)
    doc["stats"]["orphan_ratio"] = float("inf")
    doc["plan_hash"] = spec_hash(doc)
    text = json.dumps(doc, indent=1).replace("Infinity", "1e400")
    bad = tmp_path / "overflow.json"
    bad.write_text(text, encoding="utf-8")
    assert_one_line_error(cli("verify", bad), 3, str(bad), "1e400")


def test_an_integer_is_still_a_valid_float_in_a_plan(cli: Cli, tmp_path: Path) -> None:
    ok = forged(offline_plan(tmp_path / "plans"), setter("safety.max_orphan_ratio", 1))
    result = cli("verify", ok)
    assert result.code == 0, result.output


def test_an_integer_ratio_in_the_config_plans_and_applies(world: World, cli: Cli) -> None:
    world.write_config(safety={"max_orphan_ratio": 1, "max_deletes": 6})
    made = cli("-c", world.config_path, "plan")
    assert made.code == 0, made.output
    plan = made.saved_path()
    assert read_plan(plan)["safety"]["max_orphan_ratio"] == 1.0
    applied = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert applied.code == 0, applied.output
    assert all(world.current(k) is None for k in world.orphan_keys)


@pytest.mark.parametrize("value", [1.0, True, "1"], ids=["float", "true", "string"])
def test_receipt_format_version_must_be_the_integer_one(world: World, cli: Cli, value: Any) -> None:
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    receipt = receipt_of(world, plan)
    doc = json.loads(receipt.read_text(encoding="utf-8"))
    doc["format_version"] = value
    receipt.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    before = world.snapshot()
    result = cli("-c", world.config_path, "undo", receipt, "--auto-approve")
    assert_one_line_error(result, 3, str(receipt), "format_version")
    assert world.snapshot() == before


@pytest.mark.parametrize(
    "field,value",
    [("started_at", "yesterday"), ("deleted", "all"), ("prefix_versions", True)],
)
def test_receipt_fields_have_strict_types(world: World, cli: Cli, field: str, value: Any) -> None:
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    receipt = receipt_of(world, plan)
    doc = json.loads(receipt.read_text(encoding="utf-8"))
    doc[field] = value
    receipt.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    result = cli("-c", world.config_path, "undo", receipt, "--auto-approve")
    assert_one_line_error(result, 3, str(receipt), field)


# --------------------------------------------------------------------------- item 16: one bad file does not block the rest


def test_undo_without_argument_skips_an_unreadable_receipt(world: World, cli: Cli) -> None:
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    # Named to sort after the real one, and unreadable: undo must not stop there.
    junk = world.plans_dir / "zzzzzzzzT000000Z-000000000000.receipt.json"
    junk.write_text("{this is not json", encoding="utf-8")
    result = cli("-c", world.config_path, "undo", "--auto-approve")
    assert result.code == 0, result.output
    assert plan.stem in result.out
    warnings = [line for line in result.err.splitlines() if line.strip()]
    assert len(warnings) == 1 and str(junk) in warnings[0] and "skipped" in warnings[0], result.err
    world.assert_orphans_restored()


# --------------------------------------------------------------------------- item 17: a failed write leaves nothing behind


def _limited_cli(limit: int) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``python -m bmxgc`` in a process that may not write files larger than ``limit``
    bytes: a real EFBIG from the kernel (SIGXFSZ ignored), as a full disk gives ENOSPC."""

    def limit_writes() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    def run(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bmxgc", *[str(a) for a in args]],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            timeout=120,
            stdin=subprocess.DEVNULL,
            preexec_fn=limit_writes,
        )

    return run


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_plan_that_cannot_be_written_leaves_no_temp_file(world: World) -> None:
    world.plans_dir.mkdir()
    proc = _limited_cli(1024)("-c", world.config_path, "plan")
    result = CliResult(proc.returncode, proc.stdout, proc.stderr)
    assert_one_line_error(result, 1, "plans_dir", str(world.plans_dir), "File too large")
    assert _leftovers(world.plans_dir) == []


def test_apply_whose_receipt_cannot_be_written_deletes_nothing_and_leaves_no_temp_file(
    world: World, cli: Cli
) -> None:
    plan = world.plan()
    before = world.snapshot()
    proc = _limited_cli(200)("-c", world.config_path, "apply", plan, "--auto-approve")
    result = CliResult(proc.returncode, proc.stdout, proc.stderr)
    assert_one_line_error(result, 1, "plans_dir", str(world.plans_dir), "File too large")
    assert _leftovers(world.plans_dir) == [plan.name]
    assert world.snapshot() == before
    assert world.lock_keys() == []


def test_a_copy_applied_and_undone_while_this_apply_waited_for_the_lock_is_refused_under_it(world: World) -> None:
    # Two copies of one plan, applied at the same time: the second apply passes
    # the plan_hash check before it takes the lock; meanwhile the first copy is
    # applied and undone (the objects are current again, so drift sees
    # nothing). Under the lock the check must run again.
    from bmxgc.errors import GateRefused

    plan = world.plan()
    copy = world.root / "copy-of-the-plan.json"
    shutil.copyfile(plan, copy)
    client = world.s3_client()
    raced: list[str] = []

    def before_lock_put(params: Any, **_kw: Any) -> None:
        if params.get("Key", "").startswith(".bmxgc/") and not raced:
            raced.append(params["Key"])
            world.apply(copy)
            world.undo()

    client.meta.events.register("before-parameter-build.s3.PutObject", before_lock_put)
    world.assert_orphans_restored()
    with pytest.raises(GateRefused) as refused:
        world.apply(plan, client=client)
    assert raced, "the race was not staged: no lock was taken"
    assert refused.value.gate == "integrity" and "applied before" in str(refused.value)
    world.assert_orphans_restored()
    assert not world.receipt_path(plan).exists()
