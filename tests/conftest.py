"""Fixtures: moto's S3 server over HTTP, a real PostgreSQL, SQLite files, the CLI.

PostgreSQL is started from the machine's server binaries (scripts/test.sh
installs them when missing). If it cannot start, every test that needs it
errors: it is never skipped.
"""

from __future__ import annotations

import collections
import glob
import logging
import os
import pwd
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import pytest

from servers import (
    AWS_ENV,
    AWS_UNSET,
    S3_SERVER,
    S3_SERVERS,
    S3_SETTINGS,
    Bucket,
    Database,
    PostgresServer,
    free_port,
    sqlite_file,
)
from support import CliResult

# Fixtures shared by every test file, found by name (no imports in the tests).
pytest_plugins = ["apply_support"]

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- environment


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "moto_only: needs moto's internals or a moto-only behaviour")
    if S3_SERVER not in S3_SERVERS:
        raise pytest.UsageError(f"BMXGC_TEST_S3={S3_SERVER!r}: use one of {', '.join(S3_SERVERS)}")
    if S3_SERVER != "moto" and "BMXGC_TEST_S3_ENDPOINT" not in S3_SETTINGS:
        raise pytest.UsageError(
            f"BMXGC_TEST_S3={S3_SERVER}, but no {S3_SERVER} server is running: "
            f"run 'scripts/s3-server.sh {S3_SERVER} start' first"
        )


def pytest_report_header(config: pytest.Config) -> str:
    return f"S3 server: {S3_SERVER} {S3_SETTINGS.get('BMXGC_TEST_S3_ENDPOINT', '(in-process)')}"


def _skip_moto_only(items: list[pytest.Item]) -> None:
    if S3_SERVER == "moto":
        return
    skip = pytest.mark.skip(reason=f"moto only (BMXGC_TEST_S3={S3_SERVER})")
    for item in items:
        if item.get_closest_marker("moto_only"):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _aws_environment() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in AWS_ENV.items():
            mp.setenv(name, value)
        for name in AWS_UNSET:
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the caller's bmxgc settings, and each runs in its own folder."""
    monkeypatch.delenv("BMXGC_CONFIG", raising=False)
    monkeypatch.delenv("BMXGC_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)


# --------------------------------------------------------------------------- S3 (moto server)


@pytest.fixture(scope="session")
def s3_endpoint(_aws_environment: None) -> Iterator[str]:
    """The S3 server chosen by BMXGC_TEST_S3: by default moto's S3 server on a
    free loopback port, in this process, over real HTTP; else the LocalStack or
    Ceph RGW that scripts/s3-server.sh started."""
    if S3_SERVER != "moto":
        yield S3_SETTINGS["BMXGC_TEST_S3_ENDPOINT"]
        return
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_admin(s3_endpoint: str) -> Any:
    """One plain boto3 client for test setup (creating a client loads botocore's models: slow)."""
    return boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


def _new_bucket(client: Any, endpoint: str, versioned: bool) -> Bucket:
    name = f"bmxgc-test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    if versioned:
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return Bucket(client=client, name=name, endpoint=endpoint)


@pytest.fixture
def bucket(s3_endpoint: str, s3_admin: Any) -> Iterator[Bucket]:
    """A fresh, uniquely named, versioned bucket."""
    yield _new_bucket(s3_admin, s3_endpoint, versioned=True)
    _forget_moto_models()


@pytest.fixture
def make_bucket(s3_endpoint: str, s3_admin: Any) -> Iterator[Callable[..., Bucket]]:
    """A factory for more buckets, versioned or not."""
    yield lambda versioned=True: _new_bucket(s3_admin, s3_endpoint, versioned)
    _forget_moto_models()


def _forget_moto_models() -> None:
    # moto keeps every model instance it returned, for its dashboard.
    try:
        from moto.core.model_instances import reset_model_data

        reset_model_data()
    except Exception:
        pass


@pytest.fixture
def s3_calls() -> Callable[[Any], collections.Counter[str]]:
    """Attach a counter of S3 API calls (by operation name) to a client."""

    def attach(client: Any) -> collections.Counter[str]:
        calls: collections.Counter[str] = collections.Counter()
        client.meta.events.register("before-call.s3", lambda model, **kw: calls.update([model.name]))
        return calls

    return attach


# --------------------------------------------------------------------------- PostgreSQL


def _find_server_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parts[-3].split(".")],
    )
    return candidates[-1] if candidates else None


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster with password (scram-sha-256) authentication."""
    initdb = _find_server_binary("initdb")
    pg_ctl = _find_server_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
            "/usr/lib/postgresql/*/bin: run scripts/test.sh, which installs them",
            pytrace=False,
        )
    as_root = os.geteuid() == 0
    # initdb refuses to run as root: as root, the cluster belongs to 'postgres'.
    runner: list[str] = ["runuser", "-u", "postgres", "--"] if as_root else []
    workdir = tempfile.mkdtemp(prefix="bmxgc-pg-")
    if as_root:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root but there is no 'postgres' user to run initdb", pytrace=False)
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
        if subprocess.run([*runner, "test", "-w", workdir], capture_output=True).returncode != 0:
            # TMPDIR is not reachable by 'postgres' (a 0700 parent): use /tmp.
            shutil.rmtree(workdir, ignore_errors=True)
            workdir = tempfile.mkdtemp(prefix="bmxgc-pg-", dir="/tmp")
            os.chown(workdir, owner.pw_uid, owner.pw_gid)
    # '#', '@' and '/' need URL encoding: a leak in either form is caught.
    password = f"pg-SECRET-{secrets.token_hex(8)}#@/x"
    pwfile = Path(workdir) / "pwfile"
    pwfile.write_text(password + "\n", encoding="utf-8")
    if as_root:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    data = Path(workdir) / "data"
    log = Path(workdir) / "server.log"
    port = free_port()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*runner, *args], capture_output=True, text=True, timeout=120)

    init = run(initdb, "-D", str(data), "-U", "app", "--pwfile", str(pwfile), "-A", "scram-sha-256", "--no-sync")
    pwfile.unlink()
    if init.returncode != 0:
        pytest.fail(f"initdb failed ({init.returncode}): {init.stderr.strip()}", pytrace=False)
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = run(pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start")
    if start.returncode != 0:
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else start.stderr
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start ({start.returncode}): {detail}", pytrace=False)
    try:
        yield PostgresServer(port=port, password=password)
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------- databases with tables


@pytest.fixture
def pg(postgres: PostgresServer) -> Database:
    """The session cluster's database, as the app's user (tests make their own tables)."""
    return Database("postgresql", postgres.url, postgres.connect, postgres.secrets())


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


@pytest.fixture
def sqlite_db(sqlite_path: Path) -> Database:
    db = sqlite_file(sqlite_path)
    db.execute("CREATE TABLE IF NOT EXISTS _init (x INTEGER)")
    return db


@pytest.fixture(params=["postgresql", "sqlite"])
def db(request: pytest.FixtureRequest) -> Database:
    """The same test against PostgreSQL and SQLite."""
    name = "pg" if request.param == "postgresql" else "sqlite_db"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``bmxgc ARGS`` in this process; returns exit code, stdout and stderr."""
    from bmxgc.cli import main

    def run(*args: str | os.PathLike[str]) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code=code, out=captured.out, err=captured.err)

    return run


@pytest.fixture
def cli_process() -> Callable[..., CliResult]:
    """Run ``python -m bmxgc ARGS`` as a separate process, as a user would."""

    def run(*args: str | os.PathLike[str], env: dict[str, str] | None = None, timeout: float = 120) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", "bmxgc", *[str(a) for a in args]],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return CliResult(code=proc.returncode, out=proc.stdout, err=proc.stderr)

    return run


# --------------------------------------------------------------------------- markers

# A test is 'integration' when it needs a server (moto's S3, PostgreSQL; 'db'
# is PostgreSQL in one of its two runs), runs bmxgc as a separate process, or
# is marked so (a server it reaches through request.getfixturevalue, a network
# timeout); every other test is 'unit' and runs in seconds: pytest -m unit.
_SERVERS = frozenset({"s3_endpoint", "postgres", "db", "cli_process"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _skip_moto_only(items)
    for item in items:
        needs_server = bool(_SERVERS & set(getattr(item, "fixturenames", ())))
        if item.get_closest_marker("integration") is not None:
            continue
        if item.get_closest_marker("unit") is not None:
            if needs_server:
                raise pytest.UsageError(f"{item.nodeid} is marked unit but uses a server fixture")
            continue
        item.add_marker(pytest.mark.integration if needs_server else pytest.mark.unit)
