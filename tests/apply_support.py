"""Fixtures and helpers for the apply/undo tests: a bucket and a database laid
out like the incident, a config written as a user would, and snapshots of
every version in the bucket to prove that a refusal changed nothing.

The database holds keys without the ``books/`` prefix (``515/image_00.webp``)
and the config maps them with ``books/{value}``, as in the incident.

Import the fixtures into a test module with
registered for every test file by ``pytest_plugins`` in conftest.py.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest

from support import LOCK_FOLDER, config_doc, write_toml

# One botocore data loader for every session: the same model files, parsed once.
_shared_loader = functools.lru_cache(maxsize=None)(botocore.loaders.create_loader)


@pytest.fixture(autouse=True)
def fast_boto_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """bmxgc makes each S3 client from a new boto3 session, which re-reads and
    parses S3's service model: ~0.15 s of CPU per client, most of these tests'
    time. Sharing botocore's loader (a cache of those files) gives the same
    clients in a tenth of the time. Autouse where imported."""
    monkeypatch.setattr(botocore.session, "create_loader", _shared_loader)


PREFIX = "books/"
# Objects outside the prefix: apply must never touch them.
OUTSIDE = ["listings/1/cover.jpg", "images/logo.png", "lambda/handler.zip"]

# One row of a full bucket listing: what a user could ever notice about a version.
Row = tuple[str, str, bool, bool, str, int]  # key, version id, delete marker, latest, etag, size


def batches(n: int) -> int:
    return math.ceil(n / 1000)


def body_of(key: str) -> bytes:
    return f"bytes of {key}\n".encode()


def snapshot(client: Any, bucket: str) -> set[Row]:
    """Every version and delete marker in the bucket, except bmxgc's lock objects."""
    rows: set[Row] = set()
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            rows.add((v["Key"], v["VersionId"], False, v["IsLatest"], v["ETag"].strip('"'), v["Size"]))
        for m in page.get("DeleteMarkers", []):
            rows.add((m["Key"], m["VersionId"], True, m["IsLatest"], "", 0))
    return {r for r in rows if not r[0].startswith(LOCK_FOLDER)}


def current(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The current version of ``key`` (version id, etag, body), or None if deleted."""
    try:
        answer = client.get_object(Bucket=bucket, Key=key)
    except client.exceptions.NoSuchKey:
        return None
    return {
        "version_id": answer.get("VersionId", "null"),
        "etag": answer["ETag"].strip('"'),
        "body": answer["Body"].read(),
    }


@dataclass
class World:
    """A versioned bucket, a database table of references, and a config file."""

    bucket: Any  # conftest.Bucket
    db: Any  # conftest.Database
    root: Path
    table: str
    live_values: list[str]
    orphan_keys: list[str]
    original: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> version_id, etag (, body)
    config_path: Path = field(init=False)
    doc: dict[str, Any] = field(init=False)

    @property
    def name(self) -> str:
        return str(self.bucket.name)

    @property
    def client(self) -> Any:
        return self.bucket.client

    @property
    def plans_dir(self) -> Path:
        return self.root / "plans"

    @property
    def live_keys(self) -> list[str]:
        return [PREFIX + v for v in self.live_values]

    # ------------------------------------------------------------------ config

    def write_config(self, *, safety: dict[str, Any] | None = None, **s3: Any) -> Path:
        """(Re)write the config file; ``s3`` overrides bucket/prefix, ``database_url`` the URL."""
        database_url = s3.pop("database_url", self.db.url)
        doc = config_doc(
            bucket=s3.pop("bucket", self.name),
            prefix=s3.pop("prefix", PREFIX),
            endpoint=self.bucket.endpoint,
            database_url=database_url,
            references=[
                {"name": "book_images", "query": f"SELECT s3_key FROM {self.table}", "keys": ["books/{value}"]}
            ],
            safety=safety,
        )
        self.doc = doc
        self.config_path = write_toml(self.root / "bmxgc.toml", doc)
        return self.config_path

    def config(self) -> Any:
        from bmxgc.config import load_config

        return load_config(self.config_path)

    # ------------------------------------------------------------------ commands

    def plan(self) -> Path:
        from bmxgc.commands.plan import plan

        result = plan(self.config())
        assert result.path is not None
        assert sorted(o.key for o in result.plan.orphans) == sorted(self.orphan_keys)
        return Path(result.path)

    def s3_client(self, calls: collections.Counter[str] | None = None) -> Any:
        """A client made by bmxgc itself (its retries), optionally counting calls."""
        from bmxgc import s3

        client = s3.make_client(self.bucket.endpoint, "us-east-1")
        if calls is not None:
            # The lock's own requests (its version under .bmxgc/, the lock
            # folder's listing) are counted apart, as "lock".
            def count(model: Any, params: Any, **_kw: Any) -> None:
                where = str(params.get("Key", params.get("Prefix", "")))
                calls.update(["lock" if where.startswith(LOCK_FOLDER) else model.name])

            client.meta.events.register("before-parameter-build.s3", count)
        return client

    def apply(self, plan_path: Path, **kwargs: Any) -> Any:
        from bmxgc.commands.apply import apply

        kwargs.setdefault("auto_approve", True)
        return apply(self.config(), plan_path, **kwargs)

    def undo(self, receipt_path: Path | None = None, **kwargs: Any) -> Any:
        from bmxgc.commands.undo import undo

        kwargs.setdefault("auto_approve", True)
        return undo(self.config(), receipt_path, **kwargs)

    # ------------------------------------------------------------------ state

    def snapshot(self) -> set[Row]:
        return snapshot(self.client, self.name)

    def current(self, key: str) -> dict[str, Any] | None:
        return current(self.client, self.name, key)

    def lock_keys(self) -> list[str]:
        """Lock objects that are held now (current, not behind a delete marker)."""
        answer = self.client.list_objects_v2(Bucket=self.name, Prefix=LOCK_FOLDER)
        return [o["Key"] for o in answer.get("Contents", [])]

    def receipt(self, plan_path: Path) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.receipt_path(plan_path).read_text(encoding="utf-8"))
        return doc

    def receipt_path(self, plan_path: Path) -> Path:
        return self.plans_dir / f"{plan_path.stem}.receipt.json"

    def assert_orphans_restored(self) -> None:
        """Every planned object is current again with its original version id and
        ETag (one listing), and, for up to 50 of them, its original bytes."""
        latest = {row[0]: row for row in self.snapshot() if row[3]}
        for key in self.orphan_keys:
            row = latest.get(key)
            assert row is not None and not row[2], f"{key} was not restored"
            assert (row[1], row[4]) == (self.original[key]["version_id"], self.original[key]["etag"]), key
        for key in self.orphan_keys[:50]:
            now = self.current(key)
            assert now == self.original[key], key

    def add_reference(self, value: str) -> None:
        """A new row in the application's table, as the app would insert it."""
        (next_id,) = self.db.execute(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {self.table}")[0]
        self.db.execute(f"INSERT INTO {self.table} (id, s3_key) VALUES ({self.db.param}, {self.db.param})", (next_id, value))


def build_world(
    bucket: Any,
    db: Any,
    root: Path,
    *,
    live: int = 12,
    orphans: int = 6,
    safety: dict[str, Any] | None = None,
    fast: bool = False,
) -> World:
    """``live`` referenced and ``orphans`` unreferenced objects under books/,
    a few objects outside the prefix, and a config. ``fast`` loads through
    moto's backend (same body for all: for thousands of objects)."""
    live_values = [f"{i}/image_00.webp" for i in range(live)]
    orphan_keys = [f"{PREFIX}{900_000 + i}/image_00.webp" for i in range(orphans)]
    table = db.table(live_values)
    world = World(bucket=bucket, db=db, root=root, table=table, live_values=live_values, orphan_keys=orphan_keys)
    if fast:
        bucket.put_many([PREFIX + v for v in live_values] + orphan_keys, body=b"same bytes")
        for key in OUTSIDE:
            bucket.put(key, body_of(key))
        listing = snapshot(bucket.client, bucket.name)
        for key, vid, _marker, _latest, etag, _size in listing:
            world.original[key] = {"version_id": vid, "etag": etag, "body": b"same bytes"}
    else:
        for key in [PREFIX + v for v in live_values] + orphan_keys + OUTSIDE:
            answer = bucket.put(key, body_of(key))
            world.original[key] = {
                "version_id": answer.get("VersionId", "null"),
                "etag": answer["ETag"].strip('"'),
                "body": body_of(key),
            }
    world.write_config(safety=safety)
    return world


@pytest.fixture
def world(bucket: Any, sqlite_db: Any, tmp_path: Path) -> World:
    """12 referenced objects, 6 orphans, SQLite references."""
    return build_world(bucket, sqlite_db, tmp_path)


@pytest.fixture
def pg_world(bucket: Any, pg: Any, tmp_path: Path) -> World:
    """The same, with the references in PostgreSQL behind a password."""
    return build_world(bucket, pg, tmp_path)


# --------------------------------------------------------------------------- HTTP-layer faults


class Hooks:
    """Event hooks registered on every S3 client bmxgc makes from now on (the CLI's too)."""

    def __init__(self) -> None:
        self.hooks: list[tuple[str, Callable[..., Any]]] = []

    def __call__(self, event: str, hook: Callable[..., Any]) -> None:
        self.hooks.append((event, hook))

    def clear(self) -> None:
        self.hooks.clear()


@pytest.fixture
def hooked(monkeypatch: pytest.MonkeyPatch) -> Hooks:
    from bmxgc import s3

    hooks = Hooks()
    real = s3.make_client

    def make_client(*args: Any, **kwargs: Any) -> Any:
        client = real(*args, **kwargs)
        for event, hook in hooks.hooks:
            client.meta.events.register(event, hook)
        return client

    monkeypatch.setattr(s3, "make_client", make_client)
    return hooks


def _fake_response(request: Any, status: int, body: bytes) -> Any:
    from botocore.awsrequest import AWSResponse

    class Raw:
        def stream(self, **_kw: Any) -> Iterator[bytes]:
            yield body

    headers: Any = {"Content-Type": "application/xml"}
    return AWSResponse(request.url, status, headers, Raw())


def slow_down(times: int, attempts: list[str]) -> Callable[..., Any]:
    """A ``before-send`` hook: 503 SlowDown for the first ``times`` attempts,
    then the real request. Every attempt is appended to ``attempts``."""

    def hook(request: Any, **_kw: Any) -> Any:
        attempts.append(request.url)
        if len(attempts) <= times:
            return _fake_response(
                request,
                503,
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                b"<Message>Please reduce your request rate.</Message></Error>",
            )
        return None

    return hook


def request_error(from_call: int, status: int, code: str, attempts: list[str]) -> Callable[..., Any]:
    """A ``before-send`` hook: from the ``from_call``-th attempt on, S3 answers
    the whole request with ``status`` and error ``code`` (e.g. 400 ExpiredToken,
    which botocore does not retry)."""

    def hook(request: Any, **_kw: Any) -> Any:
        attempts.append(request.url)
        if len(attempts) >= from_call:
            return _fake_response(
                request,
                status,
                f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                f"<Message>injected {code}</Message></Error>".encode(),
            )
        return None

    return hook


def failing_keys_proxy(side_client: Any, bucket: str, fail: Callable[[str], bool], code: str = "InternalError") -> Callable[..., Any]:
    """A ``before-send.s3.DeleteObjects`` hook acting as a proxy: keys for which
    ``fail(key)`` is true get an ``<Error>`` (and stay untouched in S3); the
    others are really deleted through ``side_client`` and reported ``<Deleted>``
    with their real delete marker ids. The answer is one 200 DeleteResult, as S3
    sends when some keys of a request fail."""

    ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"

    def hook(request: Any, **_kw: Any) -> Any:
        body = request.body if isinstance(request.body, bytes) else request.body.read()
        tree = ET.fromstring(body)
        entries = []
        for obj in tree.iter(f"{ns}Object"):
            entry = {"Key": obj.findtext(f"{ns}Key") or ""}
            if obj.findtext(f"{ns}VersionId"):
                entry["VersionId"] = obj.findtext(f"{ns}VersionId") or ""
            entries.append(entry)
        passing = [e for e in entries if not fail(e["Key"])]
        parts = ["<?xml version='1.0' encoding='UTF-8'?><DeleteResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'>"]
        if passing:
            answer = side_client.delete_objects(Bucket=bucket, Delete={"Objects": passing})
            for d in answer.get("Deleted", []):
                parts.append(f"<Deleted><Key>{_x(d['Key'])}</Key>")
                if d.get("VersionId"):
                    parts.append(f"<VersionId>{_x(d['VersionId'])}</VersionId>")
                if d.get("DeleteMarker"):
                    parts.append("<DeleteMarker>true</DeleteMarker>")
                if d.get("DeleteMarkerVersionId"):
                    parts.append(f"<DeleteMarkerVersionId>{_x(d['DeleteMarkerVersionId'])}</DeleteMarkerVersionId>")
                parts.append("</Deleted>")
        for e in entries:
            if fail(e["Key"]):
                parts.append(
                    f"<Error><Key>{_x(e['Key'])}</Key><Code>{code}</Code>"
                    "<Message>We encountered an internal error. Please try again.</Message></Error>"
                )
        parts.append("</DeleteResult>")
        return _fake_response(request, 200, "".join(parts).encode("utf-8"))

    return hook


def _x(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain_client(endpoint: str) -> Any:
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1")


def all_keys(items: Iterable[dict[str, Any]]) -> list[str]:
    return sorted(i["key"] for i in items)
