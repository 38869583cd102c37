"""Nothing hangs (issue 10, item 13): a database or an S3 endpoint that accepts
connections and never answers, and a reference table locked by another
session, each end in one clear line naming what timed out and the setting to
raise, exit 1, within the configured time. And apply checks the database
before it takes the S3 lock.

The commands that could hang on old code run as separate processes, with a
deadline, so that a hang fails the test instead of stopping the suite.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from apply_support import Hooks, World, slow_down
from ops_support import versions
from support import CliResult, assert_one_line_error, config_doc, write_toml

Cli = Callable[..., CliResult]


class SilentServer:
    """A loopback TCP server that accepts every connection and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def timed(run: Cli, *args: Any, **kwargs: Any) -> tuple[CliResult, float]:
    started = time.monotonic()
    result = run(*args, **kwargs)
    return result, time.monotonic() - started


def with_settings(world: World, **tables: dict[str, Any]) -> Path:
    """Rewrite the world's config with extra keys in [s3] / [database]."""
    for table, keys in tables.items():
        world.doc[table].update(keys)
    return write_toml(world.config_path, world.doc)


# --------------------------------------------------------------------------- PostgreSQL


def test_plan_against_a_postgresql_that_never_answers_times_out_at_connect_timeout(
    cli_process: Cli, silent: SilentServer, bucket: Any, tmp_path: Path
) -> None:
    password = "pg-SECRET-never-shown"
    doc = config_doc(
        bucket=bucket.name,
        endpoint=bucket.endpoint,
        database_url=f"postgresql+psycopg2://app:{password}@127.0.0.1:{silent.port}/app",
    )
    doc["database"]["connect_timeout"] = "2s"
    config = write_toml(tmp_path / "bmxgc.toml", doc)
    result, took = timed(cli_process, "-c", config, "plan", timeout=60)
    line = assert_one_line_error(result, 1, f"127.0.0.1:{silent.port}", "database.connect_timeout", "2s")
    assert password not in result.output
    assert "timed out" in line or "no answer" in line
    assert took < 20, took
    assert silent.accepted, "the test server was never reached"


def test_plan_waits_at_most_lock_timeout_for_a_table_another_session_locked(
    cli_process: Cli, pg_world: World, postgres: Any
) -> None:
    config = with_settings(pg_world, database={"lock_timeout": "1s"})
    locker = postgres.connect()
    locker.autocommit = False
    try:
        with locker.cursor() as cur:
            cur.execute(f"LOCK TABLE {pg_world.table} IN ACCESS EXCLUSIVE MODE")
        result, took = timed(cli_process, "-c", config, "plan", timeout=60)
    finally:
        locker.rollback()
        locker.close()
    assert_one_line_error(result, 1, "book_images", "database.lock_timeout", "1s")
    assert all(secret not in result.output for secret in postgres.secrets())
    assert took < 20, took
    assert not list(pg_world.plans_dir.glob("*.json")), "no plan may be written"


def test_apply_with_a_locked_table_fails_at_lock_timeout_and_releases_the_lock(
    cli_process: Cli, pg_world: World, postgres: Any
) -> None:
    plan = pg_world.plan()
    config = with_settings(pg_world, database={"lock_timeout": "1s"})
    before = pg_world.snapshot()
    locker = postgres.connect()
    locker.autocommit = False
    try:
        with locker.cursor() as cur:
            cur.execute(f"LOCK TABLE {pg_world.table} IN ACCESS EXCLUSIVE MODE")
        result, took = timed(cli_process, "-c", config, "apply", plan, "--auto-approve", timeout=60)
    finally:
        locker.rollback()
        locker.close()
    assert_one_line_error(result, 1, "database.lock_timeout")
    assert took < 20, took
    assert pg_world.snapshot() == before
    assert pg_world.lock_keys() == []


def test_plan_query_longer_than_statement_timeout_is_cancelled(cli_process: Cli, pg_world: World) -> None:
    pg_world.doc["references"][0]["query"] = "SELECT pg_sleep(30)::text"
    config = with_settings(pg_world, database={"statement_timeout": "1s"})
    result, took = timed(cli_process, "-c", config, "plan", timeout=60)
    assert_one_line_error(result, 1, "book_images", "database.statement_timeout", "1s")
    assert took < 20, took


# --------------------------------------------------------------------------- SQLite


def test_plan_waits_at_most_lock_timeout_for_a_locked_sqlite_file(cli: Cli, world: World, sqlite_path: Path) -> None:
    config = with_settings(world, database={"lock_timeout": "1s"})
    writer = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")
        result, took = timed(cli, "-c", config, "plan")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert_one_line_error(result, 1, "book_images", "database.lock_timeout", "1s")
    assert took < 4, took


# --------------------------------------------------------------------------- apply: the database before the lock


def test_apply_with_an_unreachable_database_fails_before_taking_the_lock(cli: Cli, world: World, sqlite_path: Path) -> None:
    plan = world.plan()
    everything = versions(world.client, world.name, locks=True)
    sqlite_path.rename(sqlite_path.with_suffix(".moved"))
    result = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert_one_line_error(result, 1, "database")
    # Not even taken and released: the lock folder has no version at all.
    assert versions(world.client, world.name, locks=True) == everything
    assert not [row for row in everything if row[0].startswith(".bmxgc/")]


# --------------------------------------------------------------------------- S3


def s3_config(tmp_path: Path, sqlite_db: Any, endpoint: str, **s3: str) -> Path:
    table = sqlite_db.table(["1/a.webp"], name="book_images")
    doc = config_doc(bucket="some-bucket", endpoint=endpoint, database_url=sqlite_db.url)
    doc["references"][0]["query"] = f"SELECT s3_key FROM {table}"
    doc["s3"].update(s3)
    return write_toml(tmp_path / "bmxgc.toml", doc)


def test_plan_against_an_s3_endpoint_that_never_answers_times_out(
    cli_process: Cli, silent: SilentServer, sqlite_db: Any, tmp_path: Path
) -> None:
    endpoint = f"http://127.0.0.1:{silent.port}"
    config = s3_config(tmp_path, sqlite_db, endpoint, connect_timeout="1s", read_timeout="1s", call_timeout="2s")
    result, took = timed(cli_process, "-c", config, "plan", timeout=120)
    line = assert_one_line_error(result, 1, "S3", "timed out", endpoint, "s3.read_timeout")
    assert "s3.call_timeout" in line
    assert took < 15, took


def test_one_s3_call_retries_only_within_call_timeout(
    cli_process: Cli, silent: SilentServer, sqlite_db: Any, tmp_path: Path
) -> None:
    """Each attempt may take connect + read timeout: botocore retries while
    another attempt still fits in call_timeout, then bmxgc stops it."""
    endpoint = f"http://127.0.0.1:{silent.port}"
    config = s3_config(tmp_path, sqlite_db, endpoint, connect_timeout="1s", read_timeout="1s", call_timeout="5s")
    result, took = timed(cli_process, "-c", config, "plan", timeout=120)
    assert_one_line_error(result, 1, "timed out", "s3.call_timeout", "5s")
    # One call: attempts at about 0 s, 1 s and 2 s; a fourth could not end by 5 s.
    assert 2 <= len(silent.accepted) <= 3, len(silent.accepted)
    assert took < 5 + 5, took  # the process's own start-up included


def test_s3_throttling_is_retried_only_within_call_timeout(cli: Cli, world: World, hooked: Hooks) -> None:
    """S3 answers SlowDown at once, every time: botocore's backoff (up to 9
    attempts, about 45 s on average) is cut at call_timeout."""
    attempts: list[str] = []
    hooked("before-send.s3.GetBucketVersioning", slow_down(100, attempts))
    config = with_settings(world, s3={"connect_timeout": "1s", "read_timeout": "1s", "call_timeout": "3s"})
    result, took = timed(cli, "-c", config, "plan")
    assert_one_line_error(result, 1, "reading versioning", "SlowDown", "s3.call_timeout = 3s")
    assert 1 <= len(attempts) <= 3, attempts
    assert took < 3 + 2, took


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("read_timeout", "0s", "at least 1s"),
        ("connect_timeout", "2d", "at most 1d"),
        ("call_timeout", "30s", "connect_timeout + read_timeout"),
    ],
)
def test_s3_timeouts_are_validated(cli: Cli, tmp_path: Path, key: str, value: str, needle: str) -> None:
    doc = config_doc()
    doc["s3"][key] = value
    config = write_toml(tmp_path / "bmxgc.toml", doc)
    assert_one_line_error(cli("-c", config, "plan"), 1, f"s3.{key}", needle)


def test_database_timeouts_are_validated(cli: Cli, tmp_path: Path) -> None:
    doc = config_doc()
    doc["database"]["lock_timeout"] = "0s"
    config = write_toml(tmp_path / "bmxgc.toml", doc)
    assert_one_line_error(cli("-c", config, "plan"), 1, "database.lock_timeout", "at least 1s")
