"""What the fixtures serve, as types and helpers the tests use: the moto bucket,
the PostgreSQL server, and the one database wrapper (PostgreSQL or SQLite).
The fixtures themselves are in conftest.py."""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

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


S3_SETTINGS = _server_settings(S3_SERVER)

# Dummy credentials: the AWS secret must never show up in a plan or output.
AWS_SECRET = S3_SETTINGS.get("BMXGC_TEST_S3_SECRET_KEY") or "aws-SECRET-" + secrets.token_hex(8)
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": S3_SETTINGS.get("BMXGC_TEST_S3_ACCESS_KEY", "testing"),
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


# --------------------------------------------------------------------------- databases with tables


@dataclass
class Database:
    """One database (PostgreSQL or SQLite) in which a test creates its own tables.

    Each statement runs on a new connection from ``connect`` and is committed."""

    kind: str
    url: str
    connect: Callable[[], Any]
    secrets: list[str] = field(default_factory=list)

    @property
    def param(self) -> str:
        return "%s" if self.kind == "postgresql" else "?"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql, tuple(params))
            rows = list(cur.fetchall()) if cur.description else []
            conn.commit()
            return rows
        finally:
            conn.close()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        conn = self.connect()
        try:
            cur = conn.cursor()
            if self.kind == "postgresql":
                from psycopg2.extras import execute_batch

                execute_batch(cur, sql, rows, page_size=1000)
            else:
                cur.executemany(sql, rows)
            conn.commit()
        finally:
            conn.close()

    def insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        marks = ", ".join([self.param] * len(columns))
        self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", [tuple(r) for r in rows])

    def table(self, values: Iterable[Any], column_type: str = "TEXT", name: str | None = None) -> str:
        """A new table ``name`` (unique by default) with one column ``s3_key``."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, s3_key {column_type})")
        self.insert(name, ["id", "s3_key"], [(i, v) for i, v in enumerate(values, start=1)])
        return name

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        return self.execute(f"SELECT id, s3_key FROM {table} ORDER BY id")


def postgres_db(server: PostgresServer) -> Database:
    """A new, empty database in the session's PostgreSQL cluster (no other
    test's tables in it, so none are cross-checked)."""
    import psycopg2

    name = f"ops_{uuid.uuid4().hex[:12]}"
    admin = server.connect()
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
    finally:
        admin.close()
    url = server.url.rsplit("/", 1)[0] + "/" + name

    def connect() -> Any:
        return psycopg2.connect(
            host="127.0.0.1", port=server.port, user=server.user, password=server.password, dbname=name
        )

    return Database("postgresql", url, connect, server.secrets())


def sqlite_file(path: Path) -> Database:
    return Database("sqlite", f"sqlite:///{path}", lambda: sqlite3.connect(path))
