"""The receipt's write-ahead journal (issue 11, deliverable 6): each batch's
intent and outcome is appended to ``STEM.receipt.journal`` (fsynced lines),
the receipt is written whole once at the end, and a receipt a crash left
``in_progress`` or torn is rebuilt from the journal when undo reads it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from apply_support import World, build_world
from test_apply_crash import DRIVER

ORPHANS = 1_005


@pytest.fixture
def big(bucket: Any, sqlite_db: Any, tmp_path: Path) -> World:
    return build_world(
        bucket, sqlite_db, tmp_path, live=5, orphans=ORPHANS, fast=True, safety={"max_orphan_ratio": 1.0}
    )


LINEAR_DRIVER = textwrap.dedent(
    """
    import sys

    from bmxgc import s3
    from bmxgc.commands.apply import apply
    from bmxgc.config import load_config

    s3.MAX_KEYS_PER_REQUEST = 5  # 201 batches: each rewrite of the whole receipt would show
    config = load_config(sys.argv[1])
    before = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
    apply(config, sys.argv[2], auto_approve=True)
    after = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
    print(int(after["wchar"]) - int(before["wchar"]))
    """
)


def test_apply_writes_bytes_linear_in_its_objects_not_the_receipt_per_batch(big: World, tmp_path: Path) -> None:
    """201 batches of 5: rewriting the whole receipt per batch writes about 100
    receipts' worth (quadratic); a journal writes each entry a few times."""
    plan = big.plan()
    driver = tmp_path / "linear.py"
    driver.write_text(LINEAR_DRIVER, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(driver), str(big.config_path), str(plan)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = int(proc.stdout.strip().splitlines()[-1])
    receipt_bytes = big.receipt_path(plan).stat().st_size
    receipt = big.receipt(plan)
    assert receipt["status"] == "complete" and len(receipt["deleted"]) == ORPHANS and receipt["pending"] == []
    assert not (big.plans_dir / f"{plan.stem}.receipt.journal").exists()  # the receipt holds it all now
    # Each batch writes its own entries a few times; with several requests in
    # flight, each outcome also rewrites the batches still pending after it in
    # the receipt kept current (delete_concurrency - 1 of them): a constant
    # factor. Rewriting the whole receipt per batch would be ~100 receipts here.
    in_flight = big.config().s3.delete_concurrency
    assert written < (8 + 2 * (in_flight - 1)) * receipt_bytes, (written, receipt_bytes)


def _killed_inside_second_batch(world: World, tmp_path: Path) -> Path:
    plan = world.plan()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(driver), str(world.config_path), str(plan), "after-call.s3.DeleteObjects"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    return plan


def test_a_receipt_torn_by_a_crash_is_rebuilt_from_its_journal_and_undo_restores_everything(
    big: World, cli: Any, tmp_path: Path
) -> None:
    """Killed after S3 answered the 2nd batch; then the receipt file loses its
    tail (a crash while it was being brought up to date). The journal holds
    the first batch's outcome and the second batch's intent: undo restores all
    1,005 objects and the bucket is as it began."""
    big.one_request_at_a_time()  # the 2nd batch is sent after the 1st is recorded
    start = big.snapshot()
    plan = _killed_inside_second_batch(big, tmp_path)
    journal = big.plans_dir / f"{plan.stem}.receipt.journal"
    entries = [next(iter(json.loads(line))) for line in journal.read_text(encoding="utf-8").splitlines()]
    assert entries == ["receipt", "intend", "record", "intend"]
    path = big.receipt_path(plan)
    path.write_bytes(path.read_bytes()[:400])  # torn in the middle of its entries

    assert cli("-c", big.config_path, "unlock", "--auto-approve").code == 0
    undone = cli("-c", big.config_path, "undo", path, "--auto-approve")
    assert undone.code == 0, undone.output
    assert f"{ORPHANS:,} restored" in undone.out
    assert big.snapshot() == start


def test_a_journal_for_another_plan_is_refused_by_name(big: World, cli: Any, tmp_path: Path) -> None:
    plan = _killed_inside_second_batch(big, tmp_path)
    journal = big.plans_dir / f"{plan.stem}.receipt.journal"
    lines = journal.read_text(encoding="utf-8").splitlines(keepends=True)
    first = json.loads(lines[0])
    first["receipt"]["plan_hash"] = "sha256:" + "0" * 64
    journal.write_text(json.dumps(first) + "\n" + "".join(lines[1:]), encoding="utf-8")
    before = big.snapshot()
    assert cli("-c", big.config_path, "unlock", "--auto-approve").code == 0
    undone = cli("-c", big.config_path, "undo", big.receipt_path(plan), "--auto-approve")
    assert undone.code == 3, undone.output
    assert str(journal) in undone.err and "Traceback" not in undone.output
    assert big.snapshot() == before


UNDO_DRIVER = textwrap.dedent(
    """
    import os, signal, sys

    from bmxgc import s3
    from bmxgc.commands.undo import undo
    from bmxgc.config import load_config

    s3.MAX_KEYS_PER_REQUEST = int(sys.argv[3])
    config = load_config(sys.argv[1])
    client = s3.make_client(config.s3.endpoint_url, config.s3.region)
    if sys.argv[4] != "0":  # die once S3 answered that many removal requests
        calls = []
        def die(**_kw):
            calls.append(1)
            if len(calls) == int(sys.argv[4]):
                os.kill(os.getpid(), signal.SIGKILL)
        client.meta.events.register("after-call.s3.DeleteObjects", die)
    before = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
    undo(config, sys.argv[2], auto_approve=True, client=client)
    after = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
    print(int(after["wchar"]) - int(before["wchar"]))
    """
)


def _undo_child(world: World, tmp_path: Path, plan: Path, batch: int, die_after: int) -> subprocess.CompletedProcess[str]:
    driver = tmp_path / "undo_driver.py"
    driver.write_text(UNDO_DRIVER, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(driver), str(world.config_path), str(world.receipt_path(plan)), str(batch), str(die_after)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )


def test_undo_writes_its_record_linearly_and_a_killed_undo_leaves_its_intent_for_the_next(
    big: World, cli: Any, tmp_path: Path
) -> None:
    """Undo in batches of 5 is killed after its 3rd request: the record says
    the run is in_progress and its journal the 15 keys it intended; the next
    undo reads them back into the record and restores the rest, writing bytes
    linear in the keys (not the whole record per batch)."""
    big.one_request_at_a_time()  # killed after exactly 3 requests: 3 intents
    start = big.snapshot()
    plan = big.plan()
    assert cli("-c", big.config_path, "apply", plan, "--auto-approve").code == 0

    killed = _undo_child(big, tmp_path, plan, 5, 3)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    journal = big.plans_dir / f"{plan.stem}.undo.journal"
    intended = [k for line in journal.read_text(encoding="utf-8").splitlines() for k in json.loads(line)["intend"]]
    assert len(intended) == 15
    assert cli("-c", big.config_path, "unlock", "--auto-approve").code == 0

    again = _undo_child(big, tmp_path, plan, 5, 0)
    assert again.returncode == 0, again.stdout + again.stderr
    written = int(again.stdout.strip().splitlines()[-1])
    record_path = big.plans_dir / f"{plan.stem}.undo.json"
    record = json.loads(record_path.read_text(encoding="utf-8"))
    assert record["runs"][0]["status"] == "in_progress"
    assert record["runs"][0]["intended"] == intended
    assert len(record["runs"][1]["restored"]) == ORPHANS - 15
    assert not journal.exists()
    assert big.snapshot() == start
    assert written < 8 * record_path.stat().st_size, (written, record_path.stat().st_size)


def test_in_an_s3_plans_dir_a_receipt_left_in_progress_is_rebuilt_from_its_journal_objects(bucket: Any) -> None:
    """One object per journal line; the receipt object is not rewritten per
    batch; a reader in another process (a fresh store) rebuilds it; the end
    writes the receipt whole and removes the journal's versions by id."""
    from bmxgc import s3
    from bmxgc.model import DeletedEntry, ObjectVersion
    from bmxgc.receipt import Journal, load_receipt
    from bmxgc.store import S3Store

    client = s3.make_client(bucket.endpoint, "us-east-1")
    store = S3Store(client, bucket.name, "plans/")
    journal = Journal.create(
        store, "p.receipt.json", kind="apply", plan_hash="sha256:" + "a" * 64, bucket="b", prefix="books/",
        overrides={}, undo_until=None,
    )
    first = [ObjectVersion(key=f"books/{i}", version_id=f"v{i}", etag="e", size=1, last_modified="2026-01-01T00:00:00Z") for i in range(3)]
    journal.intend(first)
    journal.record([DeletedEntry(key=o.key, version_id=o.version_id, delete_marker_version_id="m") for o in first], [])
    journal.intend(first[:1])
    on_s3 = json.loads(client.get_object(Bucket=bucket.name, Key="plans/p.receipt.json")["Body"].read())
    assert on_s3["deleted"] == [] and on_s3["status"] == "in_progress"  # written once at the start

    rebuilt = load_receipt(S3Store(client, bucket.name, "plans/"), "p.receipt.json")
    assert [d.key for d in rebuilt.deleted] == ["books/0", "books/1", "books/2"]
    assert [k.key for batch in rebuilt.pending for k in batch.keys] == ["books/0"]

    journal.finish(failed=True)
    final = load_receipt(S3Store(client, bucket.name, "plans/"), "p.receipt.json")
    assert final.status == "partial" and len(final.deleted) == 3 and len(final.pending) == 1
    left = client.list_object_versions(Bucket=bucket.name, Prefix="plans/p.receipt.journal/")
    assert not left.get("Versions") and not left.get("DeleteMarkers")
