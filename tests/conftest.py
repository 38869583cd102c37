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

from support import CliResult

REPO = Path(__file__).resolve().parent.parent

# Which S3 server the suite runs on: moto (in this process, the default), or
# LocalStack or Ceph RGW started by scripts/s3-server.sh, which writes their
# endpoint and credentials to STATE/NAME/env (or give BMXGC_TEST_S3_ENDPOINT,
# BMXGC_TEST_S3_ACCESS_KEY and BMXGC_TEST_S3_SECRET_KEY yourself).
S3_SERVER = os.environ.get("BMXGC_TEST_S3", "moto") or "moto"
S3_SERVERS = ("moto", "localstack", "ceph")


def _server_settings(name: str) -> dict[str, str]:
    if name == "moto":
        return {}
    found = dict(os.environ)
    if "BMXGC_TEST_S3_ENDPOINT" not in found:
        env_file = Path(os.environ.get("BMXGC_S3_STATE", "/tmp/bmxgc-s3")) / name / "env"
        if env_file.is_file():
            for line in env_file.read_text(encoding="utf-8").splitlines():
                k, _, v = line.partition("=")
                found[k.strip()] = v.strip()
    return {k: v for k, v in found.items() if k.startswith("BMXGC_TEST_S3_")}


_SERVER = _server_settings(S3_SERVER)

# Dummy credentials: the AWS secret must never show up in a plan or output.
AWS_SECRET = _SERVER.get("BMXGC_TEST_S3_SECRET_KEY") or "aws-SECRET-" + secrets.token_hex(8)
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": _SERVER.get("BMXGC_TEST_S3_ACCESS_KEY", "testing"),
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
AWS_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- environment


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "moto_only: needs moto's internals or a moto-only behaviour")
    if S3_SERVER not in S3_SERVERS:
        raise pytest.UsageError(f"BMXGC_TEST_S3={S3_SERVER!r}: use one of {', '.join(S3_SERVERS)}")
    if S3_SERVER != "moto" and "BMXGC_TEST_S3_ENDPOINT" not in _SERVER:
        raise pytest.UsageError(
            f"BMXGC_TEST_S3={S3_SERVER}, but no {S3_SERVER} server is running: "
            f"run 'scripts/s3-server.sh {S3_SERVER} start' first"
        )


def pytest_report_header(config: pytest.Config) -> str:
    return f"S3 server: {S3_SERVER} {_SERVER.get('BMXGC_TEST_S3_ENDPOINT', '(in-process)')}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
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
        yield _SERVER["BMXGC_TEST_S3_ENDPOINT"]
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


def _moto_bucket_backend(name: str) -> Any | None:
    """The in-process moto backend holding bucket ``name``, or None if unreachable."""
    if S3_SERVER != "moto":
        return None
    try:
        from moto.backends import get_backend

        backends = get_backend("s3")
        for account in list(backends.keys()):
            backend = backends[account]["global"]
            if name in backend.buckets:
                return backend
    except Exception:  # moto's internals moved: fall back to HTTP
        return None
    return None


@dataclass
class Bucket:
    """A fresh bucket on the moto server, with a plain boto3 client for setup."""

    client: Any
    name: str
    endpoint: str

    def put(self, key: str, body: bytes = b"x") -> dict[str, Any]:
        return dict(self.client.put_object(Bucket=self.name, Key=key, Body=body))

    def delete(self, key: str) -> dict[str, Any]:
        """A plain DELETE: a delete marker in a versioned bucket."""
        return dict(self.client.delete_object(Bucket=self.name, Key=key))

    def put_many(self, keys: Iterable[str], body: bytes = b"x") -> None:
        """Load many objects fast: moto's in-process backend, else a pool of HTTP PUTs."""
        keys = list(keys)
        backend = _moto_bucket_backend(self.name)
        if backend is not None:
            for key in keys:
                backend.put_object(self.name, key, body)
            return
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda k: self.put(k, body), keys))

    def current_keys(self) -> set[str]:
        keys: set[str] = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name):
            keys.update(o["Key"] for o in page.get("Contents", []))
        return keys


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


@dataclass
class PostgresServer:
    port: int
    password: str
    user: str = "app"
    dbname: str = "postgres"

    @property
    def url(self) -> str:
        return (
            f"postgresql+psycopg2://{self.user}:{quote(self.password, safe='')}"
            f"@127.0.0.1:{self.port}/{self.dbname}"
        )

    def url_with_password(self, password: str) -> str:
        return f"postgresql+psycopg2://{self.user}:{quote(password, safe='')}@127.0.0.1:{self.port}/{self.dbname}"

    def secrets(self) -> list[str]:
        """Every form in which the password could leak."""
        return [self.password, quote(self.password, safe=""), self.password.split("#")[0]]

    def connect(self) -> Any:
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname=self.dbname
        )
        conn.autocommit = True
        return conn


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


@dataclass
class Database:
    """One database (PostgreSQL or SQLite) in which a test creates its own tables."""

    kind: str
    url: str
    _execute: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
    _executemany: Callable[[str, Sequence[Sequence[Any]]], None]
    secrets: list[str] = field(default_factory=list)

    @property
    def param(self) -> str:
        return "%s" if self.kind == "postgresql" else "?"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._execute(sql, params)

    def table(self, values: Iterable[Any], column_type: str = "TEXT", name: str | None = None) -> str:
        """A new table ``name`` (unique by default) with one column ``s3_key``."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, s3_key {column_type})")
        rows = [(i, v) for i, v in enumerate(values, start=1)]
        if rows:
            self._executemany(f"INSERT INTO {name} (id, s3_key) VALUES ({self.param}, {self.param})", rows)
        return name

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        return self.execute(f"SELECT id, s3_key FROM {table} ORDER BY id")


@pytest.fixture
def pg(postgres: PostgresServer) -> Iterator[Database]:
    conn = postgres.connect()

    def execute(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with conn.cursor() as cur:
            cur.execute(sql, tuple(params))
            return list(cur.fetchall()) if cur.description else []

    def executemany(sql: str, rows: Sequence[Sequence[Any]]) -> None:
        from psycopg2.extras import execute_batch

        with conn.cursor() as cur:
            execute_batch(cur, sql, rows, page_size=1000)

    try:
        yield Database("postgresql", postgres.url, execute, executemany, postgres.secrets())
    finally:
        conn.close()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


@pytest.fixture
def sqlite_db(sqlite_path: Path) -> Iterator[Database]:
    def execute(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with sqlite3.connect(sqlite_path) as conn:
            rows = conn.execute(sql, tuple(params)).fetchall()
        conn.close()
        return list(rows)

    def executemany(sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with sqlite3.connect(sqlite_path) as conn:
            conn.executemany(sql, rows)
        conn.close()

    execute("CREATE TABLE IF NOT EXISTS _init (x INTEGER)", ())
    yield Database("sqlite", f"sqlite:///{sqlite_path}", execute, executemany)


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
