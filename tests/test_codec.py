"""One codec for every file bmxgc writes: plans, receipts, recovery plans, undo records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from bmxgc.errors import PlanFileError
from bmxgc.model import Receipt, RecoveryItem, RecoveryPlan, RecoveryStats, UndoRecord, UndoRun
from bmxgc.planfile import PLACEHOLDER_HASH, PLAN, FileKind, RECEIPT, RECOVERY_PLAN, UNDO_RECORD, compute_hash, read, render, seal
from support import make_plan, spec_hash

pytestmark = pytest.mark.unit

HASH = "sha256:" + "ab" * 32


def receipt() -> Receipt:
    return Receipt(
        format_version=1, kind="apply", plan_hash=HASH, bucket="b", prefix="books/",
        started_at="2026-11-28T12:00:00Z", status="in_progress",
    )


def recovery_plan() -> RecoveryPlan:
    item = RecoveryItem(
        key="books/a", delete_marker_version_id="m1", deleted_at="2026-11-28T12:00:00Z",
        restores_version_id="v1", restores_etag='"e"', restores_size=3,
    )
    return seal(
        RecoveryPlan(
            format_version=1, kind="recovery", bmxgc_version="0.1.0", created_at="2026-11-28T12:00:00Z",
            plan_hash=PLACEHOLDER_HASH, bucket="b", prefix="books/", since="2026-11-28T11:00:00Z",
            until="2026-11-28T12:00:00Z",
            stats=RecoveryStats(
                versions_listed=2, delete_markers_in_window=1, to_restore=1, nothing_beneath=0, bytes_to_restore=3
            ),
            sample_keys=["books/a"], restores=[item],
        )
    )


def undo_record() -> UndoRecord:
    run = UndoRun(at="2026-11-28T12:00:00Z", by={"user": "u"}, status="in_progress", intended=["books/a"])
    return UndoRecord(format_version=1, receipt="x.receipt.json", plan_hash=HASH, bucket="b", prefix="books/", runs=[run])


def test_every_kind_reads_back_what_it_wrote() -> None:
    plan = make_plan(["books/a", "books/b"], [])
    cases: list[tuple[FileKind[Any], BaseModel]] = [
        (PLAN, plan), (RECEIPT, receipt()), (RECOVERY_PLAN, recovery_plan()), (UNDO_RECORD, undo_record())
    ]
    for kind, doc in cases:
        assert read(render(doc), "f.json", kind) == doc


def test_a_plan_has_no_kind_and_keeps_spec_hash() -> None:
    doc = json.loads(render(make_plan(["books/a"], [])))
    assert "kind" not in doc
    assert doc["plan_hash"] == spec_hash(doc) == compute_hash(doc)


def test_one_entry_per_line_after_the_summary() -> None:
    lines = render(recovery_plan()).splitlines()
    assert lines[1].startswith('  "format_version"')
    restores = lines.index('  "restores": [')
    assert lines[restores + 1].strip().startswith('{"key": "books/a"') and lines[restores + 2] == "  ]"


STEM = "plans/20261128T120000Z-abc"


@pytest.mark.parametrize(
    "kind, source, wanted, found",
    [
        ("plan", f"{STEM}.json", RECEIPT, "is a plan, not a receipt; its receipt would be 20261128T120000Z-abc.receipt.json"),
        ("receipt", f"{STEM}.receipt.json", PLAN, "is a receipt, not a plan; its plan would be 20261128T120000Z-abc.json"),
        ("undo", f"{STEM}.undo.json", RECEIPT, "is an undo record, not a receipt; its receipt would be 20261128T120000Z-abc.receipt.json"),
        ("recovery", f"{STEM}.json", PLAN, "is a recovery plan, not a plan, written by 'bmxgc recover'"),
    ],
)
def test_a_file_of_another_kind_is_named_in_one_line(kind: str, source: str, wanted: FileKind[Any], found: str) -> None:
    docs = {"plan": make_plan(["books/a"], []), "receipt": receipt(), "undo": undo_record(), "recovery": recovery_plan()}
    with pytest.raises(PlanFileError) as refused:
        read(render(docs[kind]), source, wanted)
    assert str(refused.value) == f"{source} {found}" or str(refused.value).startswith(f"{source} {found}")
    assert "\n" not in str(refused.value)


def test_unknown_fields_and_kinds_are_refused() -> None:
    doc = json.loads(render(undo_record()))
    with pytest.raises(PlanFileError, match="not a valid undo record: extra: unknown field"):
        read(json.dumps({**doc, "extra": 1}), "u.json", UNDO_RECORD)
    with pytest.raises(PlanFileError, match="unknown kind 'backup'"):
        read(json.dumps({**doc, "kind": "backup"}), "u.json", UNDO_RECORD)


def test_an_undo_record_written_before_kinds_reads_as_one() -> None:
    doc = json.loads(render(undo_record()))
    del doc["kind"]
    assert read(json.dumps(doc), "u.json", UNDO_RECORD) == undo_record()


def test_a_recovery_plan_edited_after_it_was_made_is_refused() -> None:
    doc = json.loads(render(recovery_plan()))
    doc["restores"][0]["restores_version_id"] = "v0"
    with pytest.raises(PlanFileError, match="plan_hash does not match"):
        read(json.dumps(doc), "r.json", RECOVERY_PLAN)


def test_the_cli_names_a_plan_given_to_undo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Fails on the code before the codec: it said 'not a valid receipt: ... unknown field'."""
    from bmxgc.cli import main
    from bmxgc.planfile import render_plan_json

    plan = tmp_path / "20261128T120000Z-abc.json"
    plan.write_text(render_plan_json(make_plan(["books/a"], [])), encoding="utf-8")
    config = tmp_path / "bmxgc.toml"
    config.write_text(
        'plans_dir = "plans"\n[s3]\nbucket = "b"\nprefix = "books/"\nendpoint_url = "http://127.0.0.1:9"\n'
        '[database]\nurl = "sqlite:///x.db"\n[[references]]\nname = "n"\nquery = "select 1"\nkeys = ["{value}"]\n',
        encoding="utf-8",
    )
    assert main(["-c", str(config), "undo", str(plan), "--auto-approve"]) == 3
    err = capsys.readouterr().err.strip()
    assert err == f"Error: {plan} is a plan, not a receipt; its receipt would be 20261128T120000Z-abc.receipt.json"


DATA = Path(__file__).parent / "data"


def test_files_written_before_the_codec_still_read() -> None:
    """Written by bmxgc at 36a6501 (before this codec): every kind reads back,
    and a plan renders again to the very same bytes (its hash is the documented one)."""
    plan_text = (DATA / "20261128T120000Z-before-codec.json").read_text(encoding="utf-8")
    plan = read(plan_text, "old.json", PLAN)
    assert render(plan) == plan_text
    assert json.loads(plan_text)["plan_hash"] == spec_hash(json.loads(plan_text))
    receipt_ = read((DATA / "20261128T120000Z-before-codec.receipt.json").read_text(encoding="utf-8"), "r", RECEIPT)
    assert receipt_.kind == "apply" and receipt_.undo_until is None and receipt_.deleted[0].delete_marker_version_id == "m2"
    recovery = read((DATA / "20261128T121000Z-recover-before-codec.json").read_text(encoding="utf-8"), "p", RECOVERY_PLAN)
    assert recovery.stats.to_restore == 1
    record = read((DATA / "20261128T120000Z-before-codec.undo.json").read_text(encoding="utf-8"), "u", UNDO_RECORD)
    assert record.kind == "undo" and [run.status for run in record.runs] == ["in_progress", None]
    assert record.runs[1].restored is not None and record.runs[1].restored[0].removed_stacked_delete_markers == ["m1"]


def test_a_receipt_still_says_finished_at_null_while_in_progress() -> None:
    doc = json.loads(render(receipt()))
    assert doc["finished_at"] is None and list(doc)[:3] == ["format_version", "kind", "plan_hash"]
