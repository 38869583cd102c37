"""Adversarial review of the issue-10 changes (62c5f74..36a6501): what still
goes wrong, against moto's S3 server over HTTP, SQLite and the real CLI.

Every test here fails on today's code and is marked
``xfail(strict=True)``: the suite stays green, and the day a fix lands the
test passes, strict xfail turns that into a failure, and the fixer removes the
mark. Ordered by severity (see each reason).

The round-4 section at the end (the streamed plan file, ``plan --inventory``,
86461f4) holds findings fixed on the branch that found them: those tests
failed on 86461f4 and pass, unmarked.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from apply_support import PREFIX, World, build_world
from support import write_toml


def _unexpected(output: str) -> bool:
    return "unexpected" in output or "Traceback" in output or "report it" in output


# --------------------------------------------------------------------------- undo


def test_second_undo_does_not_revert_a_later_apply(world: World, cli: Any) -> None:
    """docs/apply-and-undo.md: 'A second undo after a complete one restores
    nothing, changes nothing and exits 0.' The operator applies plan A, undoes
    it, plans again and applies B (same orphans), then runs the undo of A again
    (shell history, a script that makes sure A is undone). A's recorded markers
    are gone, so undo treats B's markers as 'apply A's, marker never learned',
    and they fall in A's window (finished_at + 15 min skew): B is silently
    reverted, exit 0, '6 restored'; B's receipt still says complete and
    'bmxgc undo B' then says 'already restored'."""
    plan_a = world.plan()
    assert cli("-c", world.config_path, "apply", plan_a, "--auto-approve").code == 0
    receipt_a = world.receipt_path(plan_a)
    assert cli("-c", world.config_path, "undo", receipt_a, "--auto-approve").code == 0
    time.sleep(1.1)  # plan names have whole seconds
    plan_b = world.plan()
    assert plan_b != plan_a
    assert cli("-c", world.config_path, "apply", plan_b, "--auto-approve").code == 0
    after_b = world.snapshot()
    assert all(world.current(k) is None for k in world.orphan_keys)

    again = cli("-c", world.config_path, "undo", receipt_a, "--auto-approve")

    assert world.snapshot() == after_b, "the second undo of A changed the bucket: it reverted apply B"
    assert all(world.current(k) is None for k in world.orphan_keys)
    # Left alone and named: the objects A deleted are deleted (by B), so undo
    # of A cannot say they are restored.
    assert again.code == 1, again.output
    assert "0 restored" in again.err and "deleted again since" in again.err, again.output


def test_edited_receipt_cannot_make_undo_touch_a_key_outside_its_prefix(world: World, cli: Any) -> None:
    """Receipts are not hashed; undo checks the receipt's bucket and prefix
    against the config, but not that its keys are under that prefix. With few
    keys and a large prefix (prefix_versions), undo lists each key by itself
    (live.py), so a key outside the prefix is found and its marker removed:
    someone else's delete in listings/ is undone by an undo of books/."""
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    outside = "listings/1/cover.jpg"
    world.bucket.delete(outside)  # someone else's delete, in another prefix, seconds later
    receipt = world.receipt_path(plan)
    doc = json.loads(receipt.read_text(encoding="utf-8"))
    doc["deleted"].append(
        {"key": outside, "version_id": world.original[outside]["version_id"], "delete_marker_version_id": "x"}
    )
    doc["prefix_versions"] = 1_000_000  # a large prefix (or edited): per-key listing
    receipt.chmod(0o644)
    receipt.write_text(json.dumps(doc), encoding="utf-8")

    undone = cli("-c", world.config_path, "undo", receipt, "--auto-approve")

    assert world.current(outside) is None, f"undo restored {outside}, outside {PREFIX}: {undone.output}"
    assert undone.code == 3, undone.output  # a receipt naming a key outside its prefix is refused
    assert outside in undone.output


# --------------------------------------------------------------------------- secrets


PRESIGNED_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLEsessionTOKEN"
PRESIGNED_SIGNATURE = "0123456789abcdefSIGNATURE"
URL_PASSWORD = "hunter2-url-password"


def test_near_miss_references_do_not_copy_url_credentials_into_the_plan(
    bucket: Any, sqlite_db: Any, tmp_path: Path, cli: Any
) -> None:
    """The app stored presigned URLs (they expire: broken links, the very
    near miss the gate is for) and a CDN URL with a user and password. Plans
    are committed for review in pull requests; endpoint_url and database.url
    passwords are redacted everywhere, these are not."""
    w = build_world(bucket, sqlite_db, tmp_path)
    presigned = (
        f"https://{w.name}.s3.amazonaws.com/{w.orphan_keys[0]}?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=ASIAEXAMPLE%2F20261130%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261130T000000Z"
        f"&X-Amz-Expires=604800&X-Amz-Security-Token={PRESIGNED_TOKEN}&X-Amz-Signature={PRESIGNED_SIGNATURE}"
    )
    with_password = f"https://cdn-user:{URL_PASSWORD}@cdn.example.com/{w.orphan_keys[1]}"
    urls = sqlite_db.table([presigned, with_password])
    w.doc["references"].append({"name": "image_urls", "query": f"SELECT s3_key FROM {urls}", "keys": ["{value}"]})
    write_toml(w.config_path, w.doc)

    planned = cli("-c", w.config_path, "plan")
    plan_path = sorted(w.plans_dir.glob("*.json"))[-1]
    applied = cli("-c", w.config_path, "apply", plan_path, "--auto-approve")
    assert applied.code == 3, applied.output  # the near misses are still refused
    assert "near miss" in planned.output
    for secret in (PRESIGNED_TOKEN, PRESIGNED_SIGNATURE, URL_PASSWORD):
        assert secret not in plan_path.read_text(encoding="utf-8"), f"{secret} is in the plan file"
        assert secret not in planned.output, f"{secret} printed by plan"
        assert secret not in applied.output, f"{secret} printed by apply"


# --------------------------------------------------------------------------- false refusals


def _json_world(bucket: Any, sqlite_db: Any, tmp_path: Path, query_kind: str) -> World:
    """The usual world, but the app keeps each book's image keys in a JSON
    array column (read with json_each), or in an FTS5 table."""
    w = build_world(bucket, sqlite_db, tmp_path)
    with sqlite3.connect(sqlite_db.url.removeprefix("sqlite:///")) as conn:
        if query_kind == "json_each":
            conn.execute("CREATE TABLE books_json (id INTEGER PRIMARY KEY, images TEXT)")
            conn.executemany(
                "INSERT INTO books_json (images) VALUES (?)",
                [(json.dumps(w.live_values[i : i + 3]),) for i in range(0, len(w.live_values), 3)],
            )
            query = "SELECT j.value FROM books_json AS b, json_each(b.images) AS j"
        else:
            conn.execute("CREATE VIRTUAL TABLE images_fts USING fts5(s3_key)")
            conn.executemany("INSERT INTO images_fts (s3_key) VALUES (?)", [(v,) for v in w.live_values])
            query = "SELECT s3_key FROM images_fts"
    conn.close()
    w.doc["references"] = [{"name": "book_images", "query": query, "keys": ["books/{value}"]}]
    write_toml(w.config_path, w.doc)
    return w


@pytest.mark.parametrize("query_kind", ["json_each", "fts5"])
def test_sqlite_reference_query_reading_json_each_or_fts5_still_plans(
    bucket: Any, sqlite_db: Any, tmp_path: Path, cli: Any, query_kind: str
) -> None:
    """Declaring a virtual table's columns is an internal write to
    sqlite_master (SQLITE_UPDATE) that the authorizer denies; the query is a
    plain read and mode=ro / query_only already keep the file unwritten."""
    w = _json_world(bucket, sqlite_db, tmp_path, query_kind)
    planned = cli("-c", w.config_path, "plan")
    assert planned.code == 0, planned.output
    plan = json.loads(sorted(w.plans_dir.glob("*.json"))[-1].read_text(encoding="utf-8"))
    assert sorted(o["key"] for o in plan["orphans"]) == sorted(w.orphan_keys)


def test_reference_to_the_same_key_in_another_bucket_is_not_a_near_miss(
    bucket: Any, sqlite_db: Any, tmp_path: Path, cli: Any
) -> None:
    """The app also records where each original is archived:
    s3://bluemoxon-archive/books/900000/image_00.webp. That names another
    bucket explicitly; the object books/900000/image_00.webp of this bucket is
    still unreferenced. Plan calls it a 'url' near miss and apply refuses."""
    w = build_world(bucket, sqlite_db, tmp_path)
    archive = sqlite_db.table([f"s3://bluemoxon-archive/{key}" for key in w.orphan_keys[:2]])
    w.doc["references"].append(
        {"name": "archived_originals", "query": f"SELECT s3_key FROM {archive}", "keys": ["{value}"]}
    )
    write_toml(w.config_path, w.doc)
    planned = cli("-c", w.config_path, "plan")
    assert planned.code == 0, planned.output
    plan_path = sorted(w.plans_dir.glob("*.json"))[-1]
    assert "near miss" not in planned.output
    applied = cli("-c", w.config_path, "apply", plan_path, "--auto-approve")
    assert applied.code == 0, applied.output


# --------------------------------------------------------------------------- crashes


def _put_lock(w: World, holder: dict[str, str]) -> str:
    from bmxgc.lock import lock_key

    key = lock_key(PREFIX)
    w.client.put_object(Bucket=w.name, Key=key, Body=json.dumps(holder).encode("utf-8"))
    return key


@pytest.mark.parametrize(
    "holder",
    [
        # Valid RFC 3339, but before year 1 once converted to UTC.
        {"user": "u", "host": "elsewhere", "pid": "1", "command": "apply", "acquired_at": "0001-01-01T00:00:00+01:00"},
        # A pid of this host too large for os.kill.
        {"user": "u", "host": socket.gethostname(), "pid": "9" * 30, "command": "apply", "acquired_at": "2026-11-30T00:00:00Z"},
    ],
    ids=["time-before-year-1", "pid-too-large"],
)
def test_unlock_breaks_a_lock_whose_body_is_out_of_range(world: World, cli: Any, holder: dict[str, str]) -> None:
    """Issue 10 item 14: a malformed lock body is a named error, never
    'unexpected … report it', and unlock can break it."""
    plan = world.plan()
    start = world.snapshot()
    key = _put_lock(world, holder)
    applied = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert applied.code == 3, applied.output
    assert not _unexpected(applied.output), applied.output
    assert world.snapshot() == start
    unlocked = cli("-c", world.config_path, "unlock", "--auto-approve")
    assert not _unexpected(unlocked.output), unlocked.output
    assert unlocked.code == 0, unlocked.output
    assert key not in world.lock_keys()


@pytest.mark.parametrize(
    "times",
    [{"started_at": "0001-01-01T00:00:00Z"}, {"finished_at": "9999-12-31T23:59:59Z"}],
    ids=["started-year-1", "finished-year-9999"],
)
def test_undo_of_a_receipt_with_extreme_times_is_a_named_error(world: World, cli: Any, times: dict[str, str]) -> None:
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    receipt = world.receipt_path(plan)
    doc = json.loads(receipt.read_text(encoding="utf-8"))
    doc.update(times)
    receipt.chmod(0o644)
    receipt.write_text(json.dumps(doc), encoding="utf-8")
    deleted = world.snapshot()
    undone = cli("-c", world.config_path, "undo", receipt, "--auto-approve")
    assert not _unexpected(undone.output), undone.output
    assert undone.code == 3, undone.output  # not a valid receipt: a time out of range
    assert "out of range" in undone.err, undone.output
    assert world.snapshot() == deleted


# --------------------------------------------------------------------------- reports


def test_apply_that_cannot_write_its_receipt_midway_says_what_it_deleted(
    bucket: Any, sqlite_db: Any, tmp_path: Path, cli: Any
) -> None:
    """Two batches (1,000 + 900). The receipt grows with every batch; with a
    file size limit of 250 kB (a real EFBIG, as a full disk gives ENOSPC) the
    first batch is deleted and recorded, and writing the second batch's intent
    fails. A failed S3 request at that point says 'N of M objects were deleted
    before this (receipt …); run bmxgc undo …'; a failed receipt write says
    nothing of the kind, so the operator believes nothing happened."""
    import os
    import resource
    import subprocess
    import sys

    w = build_world(bucket, sqlite_db, tmp_path, live=2000, orphans=1900, fast=True)
    plan = w.plan()

    def small_files_only() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (250_000, 250_000))

    proc = subprocess.run(
        [sys.executable, "-m", "bmxgc", "-c", str(w.config_path), "apply", str(plan), "--auto-approve"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=300,
        stdin=subprocess.DEVNULL,
        preexec_fn=small_files_only,
    )
    output = proc.stdout + proc.stderr
    deleted_now = sum(1 for row in w.snapshot() if row[2] and row[3])
    assert deleted_now == 1000  # the first batch is gone
    assert proc.returncode == 1, output
    assert "Traceback" not in output
    assert "1,000" in output and "deleted" in output, output
    assert "bmxgc.toml undo" in output and str(w.receipt_path(plan)) in output, output
    # The receipt on disk is still enough to restore everything.
    undone = cli("-c", w.config_path, "undo", "--auto-approve")
    assert undone.code == 0, undone.output


def test_unlock_does_not_take_another_pid_namespace_for_a_live_holder(world: World, cli: Any) -> None:
    """bmxgc ran as pid 1 of a container with the host's hostname and was
    killed; its lock says host=<this host>, pid=1. The pid 1 here is init,
    which started at boot, before the lock: unlock calls it 'still running on
    this host' and refuses without --break-live-lock. A lock could say which
    pid namespace (or boot) its pid belongs to."""
    from bmxgc.model import rfc3339, utc_now

    key = _put_lock(
        world,
        {
            "user": "root",
            "host": socket.gethostname(),
            "pid": "1",
            "command": "apply",
            "acquired_at": rfc3339(utc_now()),
            # As bmxgc writes it: the pid namespace of a container (not ours).
            "pid_namespace": "pid:[4026532999]",
        },
    )
    unlocked = cli("-c", world.config_path, "unlock", "--auto-approve")
    assert unlocked.code == 0, unlocked.output
    assert key not in world.lock_keys()


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00Z", "0999-12-31T00:00:00Z", "0001-01-01T00:00:00+01:00"])
def test_recover_since_the_beginning_of_time_is_not_an_unexpected_error(world: World, cli: Any, since: str) -> None:
    """An operator in an incident asks recover to look 'since forever'."""
    start = world.snapshot()
    shown = cli("-c", world.config_path, "recover", "--since", since)
    assert not _unexpected(shown.output), shown.output
    assert shown.code == 0, shown.output  # "since forever" is read as since 1970
    assert "1970-01-01T00:00:00Z" in shown.out, shown.output
    assert world.snapshot() == start


def test_undo_with_an_out_of_range_time_in_its_record_is_a_named_error(world: World, cli: Any) -> None:
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    record = world.plans_dir / f"{plan.stem}.undo.json"
    record.write_text(json.dumps({"format_version": 1, "runs": [{"at": "0001-01-01T00:00:00+01:00"}]}), encoding="utf-8")
    undone = cli("-c", world.config_path, "undo", world.receipt_path(plan), "--auto-approve")
    assert not _unexpected(undone.output), undone.output


# --------------------------------------------------------------------------- round 4: the streamed plan file


def _stream_plan(keys: list[str], folder: Path) -> Path:
    from bmxgc.planfile import default_file_name, render_plan_json
    from support import make_plan

    plan = make_plan(keys, [], safety={"max_deletes": 10 * len(keys) + 10, "max_orphan_ratio": 1.0})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / default_file_name(plan)
    path.write_text(render_plan_json(plan), encoding="utf-8")
    return path


def test_a_trailing_comma_after_the_last_orphan_is_refused_at_a_block_boundary(cli: Any, tmp_path: Path) -> None:
    """A plan whose last orphan line ends with a comma is not JSON (json.load,
    jq and bmxgc before the stream all refuse it). When the stream's block of
    256 KiB ends inside that last line, the next block starts with the
    closing ``  ]``, the line was checked as 'not the list's last' (a comma
    wanted), and the file is accepted: verify says OK and apply would act on
    a file no JSON reader accepts (severity: accepts a bad file)."""
    from bmxgc.planstream import _BLOCK

    for n in range(600, 900):  # lines of ~290 bytes: find the count whose last line straddles the block's end
        path = _stream_plan([f"books/{i:05d}" + "x" * 200 for i in range(n)], tmp_path / str(n))
        data = path.read_bytes()
        boundary = data.index(b'  "orphans": [\n') + len(b'  "orphans": [\n') + _BLOCK
        start = data.rindex(b"\n    {") + 1
        end = data.index(b"\n", start) + 1
        if start <= boundary < end:
            break
    else:
        pytest.fail("no plan size puts the block's end inside the last orphan line")
    forged = tmp_path / "trailing-comma.json"
    forged.write_bytes(data[: end - 1] + b"," + data[end - 1 :])
    with pytest.raises(json.JSONDecodeError):
        json.loads(forged.read_bytes())  # the plan's hash still matches: only the layout is wrong
    result = cli("verify", forged)
    assert result.code == 3, result.output
    assert "invalid JSON" in result.err, result.err
    assert "Traceback" not in result.output
    # apply reads the plan's text (blocks of characters: here the same, all ASCII)
    from bmxgc.errors import PlanFileError
    from bmxgc.planfile import parse_plan_text

    with pytest.raises(PlanFileError, match="invalid JSON"):
        parse_plan_text(forged.read_text(encoding="utf-8"), str(forged))


def test_show_and_verify_read_summary_fields_written_after_the_orphans(cli: Any, tmp_path: Path) -> None:
    """A plan re-serialised by a tool that puts ``inventory`` (or
    ``near_misses``, ``cross_check``) after the orphans is a valid plan with
    the same hash, and apply reads it whole. ``show`` and ``verify`` render
    the summary read from the head, before the orphans: the fields after
    them are silently dropped, so show says nothing of the inventory the
    plan was made from, and its JSON summary differs from what apply acts on
    (severity: show differs from apply)."""
    from support import read_plan, spec_hash

    path = _stream_plan([f"books/{i:03d}" for i in range(5)], tmp_path)
    doc = read_plan(path)
    doc["inventory"] = {
        "manifest": "s3://inv/bkt/all/2026-11-28T01-00Z/manifest.json",
        "created_at": "2026-11-28T01:00:00Z",
        "creation_timestamp": 1795827600000,
        "checksum": "0" * 32,
        "file_format": "Parquet",
        "files": 1,
    }
    doc["plan_hash"] = spec_hash(doc)
    head = {k: v for k, v in doc.items() if k not in ("orphans", "inventory")}
    text = json.dumps(head, indent=2, ensure_ascii=False)[:-2] + ',\n  "orphans": [\n'
    text += ",\n".join("    " + json.dumps(o, ensure_ascii=False, separators=(", ", ": ")) for o in doc["orphans"])
    text += '\n  ],\n  "inventory": ' + json.dumps(doc["inventory"]) + "\n}\n"
    moved = tmp_path / "inventory-last.json"
    moved.write_text(text, encoding="utf-8")
    from bmxgc.planfile import load_plan

    assert load_plan(moved).inventory is not None  # what apply reads
    shown = cli("show", moved)
    assert shown.code == 0, shown.output
    assert "from the S3 Inventory report s3://inv/bkt/all/" in shown.out, shown.out
    summary = cli("show", moved, "--format", "json")
    assert summary.code == 0, summary.output
    assert "s3://inv/bkt/all/2026-11-28T01-00Z/manifest.json" in summary.out, summary.out


# --------------------------------------------------------------------------- round 4: plan --inventory


def _inventory_scene(bucket: Any, sqlite_db: Any, tmp_path: Path) -> World:
    from apply_support import empty_world

    w = empty_world(bucket, sqlite_db, tmp_path)
    for key in ["books/kept.webp", "books/orphan-a.webp", "books/orphan-b.webp"]:
        bucket.put(key, f"bytes of {key}".encode())
    w.reference(["kept.webp"])
    w.write_config(safety={"min_age": "0s", "max_orphan_ratio": 1.0})
    return w


def _with_parquet_file(report: Any, tmp_path: Path, sql: str) -> None:
    """Replace the report's data files by one Parquet file that DuckDB writes from ``sql``
    (its MD5 and size written into a manifest with a matching checksum)."""
    import hashlib

    import duckdb

    path = tmp_path / "spoiled.parquet"
    con = duckdb.connect()
    con.execute(f"COPY ({sql}) TO '{path}' (FORMAT PARQUET)")
    con.close()
    body = path.read_bytes()
    report.client.put_object(Bucket=report.bucket, Key=report.data_keys[0], Body=body)
    entry = {"key": report.data_keys[0], "size": len(body), "MD5checksum": hashlib.md5(body).hexdigest()}
    report.put_manifest(dict(report.manifest, files=[entry]))


def test_inventory_row_without_a_last_modified_date_is_a_named_error(
    bucket: Any, sqlite_db: Any, make_bucket: Any, tmp_path: Path, cli: Any
) -> None:
    """A Parquet report whose current object has no LastModifiedDate (a null:
    a damaged or hand-made report). Its age is unknown, so min_age cannot be
    judged; the join calls it 'not young' (NULL > x is NULL, read as false), so
    it becomes an orphan, and building its record crashes on the null:
    'unexpected error' and a traceback instead of a one-line refusal naming
    the report (severity: bad input not refused cleanly; the row would have
    been planned as old enough)."""
    from datetime import datetime, timezone

    from inventory_support import listed_rows, upload_report

    w = _inventory_scene(bucket, sqlite_db, tmp_path)
    inventory = make_bucket(versioned=False)
    rows = listed_rows(w.client, w.name)
    report = upload_report(inventory.client, inventory.name, rows, "Parquet", datetime.now(timezone.utc), tmp_path, files=1)
    values = ", ".join(
        f"('{r.bucket}', '{r.key}', '{r.version_id}', {str(r.is_latest).lower()}, false, {r.size}, "
        + ("NULL" if r.key == "books/orphan-a.webp" else f"make_timestamp({int(r.last_modified.timestamp() * 1_000_000)})::TIMESTAMP_MS")
        + f", '{r.etag}', 'STANDARD')"
        for r in rows
    )
    _with_parquet_file(
        report, tmp_path,
        "SELECT * FROM (VALUES " + values + ") AS t(bucket, key, version_id, is_latest, is_delete_marker, size, "
        "last_modified_date, e_tag, storage_class)",
    )
    result = cli("-c", w.config_path, "plan", "--inventory", report.url)
    assert not _unexpected(result.output), result.output
    assert result.code in (1, 3), result.output
    assert "books/orphan-a.webp" in result.err or "LastModifiedDate" in result.err, result.err


def test_inventory_current_object_without_an_etag_is_refused_not_planned_unguarded(
    bucket: Any, sqlite_db: Any, make_bucket: Any, tmp_path: Path, cli: Any
) -> None:
    """A Parquet report whose current object has a null ETag. Every object S3
    holds has an ETag; the join reads the null as '' and plans the orphan
    with "etag": "". apply sends DeleteObjects with an ETag condition only
    when the plan has one, so this orphan would be deleted unguarded: an
    object overwritten between apply's live check and its request (a new
    version the application now uses) gets a delete marker (severity: a live
    object hidden until undo, in a race window; the plan accepts a damaged report)."""
    from datetime import datetime, timezone

    from inventory_support import listed_rows, upload_report

    w = _inventory_scene(bucket, sqlite_db, tmp_path)
    inventory = make_bucket(versioned=False)
    rows = listed_rows(w.client, w.name)
    report = upload_report(inventory.client, inventory.name, rows, "Parquet", datetime.now(timezone.utc), tmp_path, files=1)
    values = ", ".join(
        f"('{r.bucket}', '{r.key}', '{r.version_id}', {str(r.is_latest).lower()}, false, {r.size}, "
        f"make_timestamp({int(r.last_modified.timestamp() * 1_000_000)})::TIMESTAMP_MS, "
        + ("NULL" if r.key == "books/orphan-b.webp" else f"'{r.etag}'")
        + ", 'STANDARD')"
        for r in rows
    )
    _with_parquet_file(
        report, tmp_path,
        "SELECT * FROM (VALUES " + values + ") AS t(bucket, key, version_id, is_latest, is_delete_marker, size, "
        "last_modified_date, e_tag, storage_class)",
    )
    out = tmp_path / "plan.json"
    result = cli("-c", w.config_path, "plan", "--inventory", report.url, "--out", out)
    assert not _unexpected(result.output), result.output
    planned = json.loads(out.read_text(encoding="utf-8"))["orphans"] if out.exists() else []
    assert all(o["etag"] for o in planned), planned  # never an orphan apply would delete without its ETag
    assert result.code in (1, 3), result.output
    assert "books/orphan-b.webp" in result.err, result.err


def test_the_streamed_reader_judges_like_a_whole_parse_at_every_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Differential: plan texts edited in ways that keep or break JSON (CRLF,
    blank lines, spacing, escapes, a BOM, a trailing comma, a second
    ``orphans``, a key twice, 01, 1.0), read by the stream (bytes as verify
    and show read a file, text as apply reads one) with small blocks, so that
    block ends fall everywhere: each must accept exactly what the whole parse
    accepts, with the same orphans and summary."""
    import io
    import random

    from bmxgc import planstream
    from bmxgc.errors import PlanFileError
    from bmxgc.planfile import PLAN, read, render_plan_json
    from support import make_plan

    keys = ["books/a b", 'books/quote"d', "books/back\\slash", "books/tab\there", "books/é", "books/😀",
            "books/\u2028sep", "books/x/", "books/},\n{", "books/\x7f"] + [f"books/{i:03d}" for i in range(30)]
    base = render_plan_json(make_plan(keys, [], safety={"max_deletes": 1000, "max_orphan_ratio": 1.0}))

    def outcome(read_plan: Any) -> tuple[Any, ...]:
        try:
            plan = read_plan()
        except (PlanFileError, UnicodeDecodeError):
            return ("refused",)
        return ("ok", [tuple(o) for o in plan.orphans], plan.model_dump(exclude={"orphans"}))

    from collections.abc import Callable

    edits: list[Callable[[str, random.Random], str]] = [
        lambda t, r: t.replace("\n", "\r\n", r.randint(1, 5)),
        lambda t, r: t.replace(",\n", ",\n\n", 1),
        lambda t, r: t.replace('", "', '",  "', r.randint(1, 3)),
        lambda t, r: t.replace("},\n    {", "}, {", 1),
        lambda t, r: "},\n  ]".join(t.rsplit("}\n  ]", 1)),  # a comma after the last orphan
        lambda t, r: t.replace("\n  ]\n}", "\n  ]}\n"),
        lambda t, r: "\ufeff" + t,
        lambda t, r: t.replace("    {", "\t{", r.randint(1, 3)),
        lambda t, r: t.replace("books/0", "books\\/0", r.randint(1, 3)),
        lambda t, r: t.replace("\u2028", "\\u2028"),
        lambda t, r: t + ",",
        lambda t, r: t.replace('  "orphans": [\n', '  "orphans": [\n\n'),
        lambda t, r: t.replace(',\n  "orphans"', ',\n  "orphans": [],\n  "orphans"'),
        lambda t, r: t.replace('"key": "books/005"', '"key": "books/005", "key": "books/005"'),
        lambda t, r: t.replace('"size": 1', '"size": 01', 1),
        lambda t, r: t.replace('"size": 1', '"size": 1.0', 1),
        lambda t, r: t.replace('Z"}', 'Z" }', r.randint(1, 4)),
    ]
    differ = []
    for seed in range(600):
        r = random.Random(seed)
        monkeypatch.setattr(planstream, "_BLOCK", r.choice([16, 64, 100, 200, 333, 1000]))
        text = base
        for _ in range(r.randint(1, 3)):
            text = r.choice(edits)(text, r)
        whole = outcome(lambda: read(text, "x", PLAN))
        data = text.encode("utf-8")
        for name in ("bytes", "text"):
            handle = io.BytesIO(data) if name == "bytes" else planstream.TextReader(text)
            streamed = outcome(lambda: planstream.plan_of(planstream.PlanStream(handle, "x")))
            if streamed != whole:
                differ.append(f"seed {seed}, {name}: whole parse {whole[0]}, stream {streamed[0]}")
    assert differ == [], differ[:5]
