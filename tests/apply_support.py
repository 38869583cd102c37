"""The one scenario builder, ``World`` (made by ``build_world`` or
``empty_world``), its fixtures ``world`` and ``pg_world``, the HTTP-layer
fault hooks, and snapshots of every version in the bucket to prove that a
refusal changed nothing.

A world is a versioned bucket, a database table of references (named anew
for every world, so worlds share the PostgreSQL database), a config file and
objects inside and outside the prefix. The table holds keys without the
``books/`` prefix (``515/image_00.webp``) and the config maps them with
``books/{value}``, as in the incident. Tests that need another layout (the
incident's, test_incident.py and test_recover.py) lay it out on an empty world.

Registered for every test file by ``pytest_plugins`` in conftest.py.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest

from servers import Database
from support import LOCK_FOLDER, LOCKS, config_doc, write_toml

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


def versions(client: Any, bucket: str, *, locks: bool = False) -> set[Row]:
    """Every version and delete marker in the bucket (bmxgc's lock folder only if ``locks``)."""
    rows: set[Row] = set()
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            rows.add((v["Key"], v["VersionId"], False, v["IsLatest"], v["ETag"].strip('"'), v["Size"]))
        for m in page.get("DeleteMarkers", []):
            rows.add((m["Key"], m["VersionId"], True, m["IsLatest"], "", 0))
    return rows if locks else {r for r in rows if not r[0].startswith(LOCK_FOLDER)}


def snapshot(client: Any, bucket: str) -> set[Row]:
    """Every version and delete marker in the bucket, except bmxgc's lock objects."""
    return versions(client, bucket)


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
    """The one scenario builder: a versioned bucket, a database table of
    references (its own name in every world, so worlds can share PostgreSQL),
    a config file, objects inside and outside the prefix. Build it with
    ``build_world``; the incident layouts add their own objects on top."""

    bucket: Any  # servers.Bucket
    db: Database
    root: Path
    table: str
    live_values: list[str] = field(default_factory=list)
    orphan_keys: list[str] = field(default_factory=list)
    original: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> version_id, etag (, body)
    prefix: str = PREFIX
    keys: list[str] = field(default_factory=lambda: ["books/{value}"])  # the reference's key templates
    extra_references: list[dict[str, Any]] = field(default_factory=list)  # after book_images, in every config
    uploaded: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> its last upload by put()
    since: datetime | None = None  # when the incident (a recover test's window) began
    config_path: Path = field(init=False)
    doc: dict[str, Any] = field(init=False)

    @property
    def name(self) -> str:
        return str(self.bucket.name)

    @property
    def folder(self) -> Path:
        return self.root

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

    def reference_entry(self, table: str | None = None, keys: list[str] | None = None) -> dict[str, Any]:
        """The ``book_images`` reference: ``table``'s s3_key column mapped with ``keys``."""
        return {
            "name": "book_images",
            "query": f"SELECT s3_key FROM {table or self.table}",
            "keys": keys or self.keys,
        }

    def config_doc(
        self,
        *,
        bucket: str | None = None,
        prefix: str | None = None,
        database_url: str | None = "default",
        table: str | None = None,
        keys: list[str] | None = None,
        references: list[dict[str, Any]] | None = None,
        extra_references: list[dict[str, Any]] | None = None,
        safety: dict[str, Any] | None = None,
        plans_dir: str = "plans",
    ) -> dict[str, Any]:
        """The config as a dict: this world's bucket, prefix, database and
        reference unless told otherwise (``table``/``keys``: the reference
        reads another table or maps with other templates; ``references``:
        other references instead); ``extra_references`` come after it."""
        return config_doc(
            bucket=bucket or self.name,
            prefix=self.prefix if prefix is None else prefix,
            endpoint=self.bucket.endpoint,
            database_url=self.db.url if database_url == "default" else database_url,
            references=[
                *(references or [self.reference_entry(table, keys)]),
                *(self.extra_references if extra_references is None else extra_references),
            ],
            safety=safety,
            plans_dir=plans_dir,
        )

    def write_config(self, name: str = "bmxgc.toml", **changes: Any) -> Path:
        """(Re)write a config file (``bmxgc.toml``: the world's own) from ``config_doc(**changes)``."""
        doc = self.config_doc(**changes)
        path = write_toml(self.root / name, doc)
        if name == "bmxgc.toml":
            self.doc, self.config_path = doc, path
        return path

    def one_request_at_a_time(self) -> None:
        """``[s3] delete_concurrency = 1``: for a test about what happens between two batches."""
        self.doc["s3"]["delete_concurrency"] = 1
        write_toml(self.config_path, self.doc)

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

    # ------------------------------------------------------------------ objects and rows

    def books(self, numbers: Iterable[int], *, fast: bool = False) -> list[str]:
        """Objects ``books/<n>/image_00.webp`` (bytes name the key unless ``fast``)."""
        keys = [f"books/{n}/image_00.webp" for n in numbers]
        if fast:
            self.bucket.put_many(keys, b"webp")
        else:
            for key in keys:
                self.bucket.put(key, f"bytes of {key}".encode())
        return keys

    def put(self, key: str, body: bytes) -> str:
        """Upload ``key``; its first upload is its ``original``. Returns the version id."""
        answer = self.bucket.put(key, body)
        version = {"version_id": answer.get("VersionId", "null"), "etag": answer["ETag"].strip('"'), "body": body}
        self.original.setdefault(key, version)
        self.uploaded[key] = version
        return str(version["version_id"])

    def reference(self, values: Iterable[str]) -> None:
        """New rows in the world's table, as the app would insert them (values without ``books/``)."""
        (start,) = self.db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {self.table}")[0]
        self.db.insert(self.table, ["id", "s3_key"], [(start + i, v) for i, v in enumerate(values, 1)])

    def add_reference(self, value: str) -> None:
        self.reference([value])

    def unreference(self, values: Iterable[str]) -> None:
        for value in values:
            self.db.execute(f"DELETE FROM {self.table} WHERE s3_key = {self.db.param}", (value,))

    # ------------------------------------------------------------------ state

    def snapshot(self) -> set[Row]:
        return snapshot(self.client, self.name)

    def versions(self, *, locks: bool = False) -> set[Row]:
        """Every version and delete marker (bmxgc's lock folder only if ``locks``)."""
        return versions(self.client, self.name, locks=locks)

    def current(self, key: str) -> dict[str, Any] | None:
        return current(self.client, self.name, key)

    def now(self, key: str) -> tuple[str, bytes] | None:
        """``(version id, bytes)`` of the current version of ``key``, or None if deleted."""
        found = self.current(key)
        return None if found is None else (found["version_id"], found["body"])

    def lock_keys(self) -> list[str]:
        """Lock objects that are held now (current, not behind a delete marker)."""
        answer = self.client.list_objects_v2(Bucket=self.name, Prefix=LOCK_FOLDER)
        return [o["Key"] for o in answer.get("Contents", [])]

    def receipt(self, plan_path: Path) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.receipt_path(plan_path).read_text(encoding="utf-8"))
        return doc

    def receipt_path(self, plan_path: Path) -> Path:
        return self.plans_dir / f"{plan_path.stem}.receipt.json"

    def recover(self, cli: Callable[..., Any], *args: str) -> Any:
        """``bmxgc recover --since <the incident's start> ARGS`` through the ``cli`` fixture."""
        assert self.since is not None, "no incident in this world"
        since = self.since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cli("-c", self.config_path, "recover", "--since", since, *args)

    def assert_restored(self, keys: Iterable[str]) -> None:
        """Each key is current again with its original version id, ETag and bytes."""
        for key in keys:
            assert self.current(key) == self.original[key], key

    def assert_still_deleted(self, keys: Iterable[str]) -> None:
        for key in keys:
            assert self.current(key) is None, f"{key} was restored"

    def assert_orphans_restored(self) -> None:
        """Every planned object is current again with its original version id and
        ETag (one listing), and, for up to 50 of them, its original bytes."""
        latest = {row[0]: row for row in self.snapshot() if row[3]}
        for key in self.orphan_keys:
            row = latest.get(key)
            assert row is not None and not row[2], f"{key} was not restored"
            assert (row[1], row[4]) == (self.original[key]["version_id"], self.original[key]["etag"]), key
        self.assert_restored(self.orphan_keys[:50])


def build_world(
    bucket: Any,
    db: Database,
    root: Path,
    *,
    live: int = 12,
    orphans: int = 6,
    outside: Sequence[str] = OUTSIDE,
    safety: dict[str, Any] | None = None,
    fast: bool = False,
    table: Iterable[str] = (),
    table_name: str | None = None,
    keys: list[str] | None = None,
) -> World:
    """``live`` referenced and ``orphans`` unreferenced objects under books/,
    the objects ``outside`` the prefix, a table of references (``table``: more
    values in it; ``table_name``: a fixed name, where a test needs the
    table to sort first, else a unique one) and a config. ``fast`` loads through moto's backend (same
    body for all: for thousands of objects). ``live=0, orphans=0, outside=()``
    is an empty world for a test to lay out itself."""
    live_values = [f"{i}/image_00.webp" for i in range(live)]
    orphan_keys = [f"{PREFIX}{900_000 + i}/image_00.webp" for i in range(orphans)]
    world = World(
        bucket=bucket,
        db=db,
        root=root,
        table=db.table([*live_values, *table], name=table_name),
        live_values=live_values,
        orphan_keys=orphan_keys,
        keys=keys or ["books/{value}"],
    )
    if fast:
        bucket.put_many([PREFIX + v for v in live_values] + orphan_keys, body=b"same bytes")
        for key in outside:
            bucket.put(key, body_of(key))
        listing = snapshot(bucket.client, bucket.name)
        for key, vid, _marker, _latest, etag, _size in listing:
            world.original[key] = {"version_id": vid, "etag": etag, "body": b"same bytes"}
    else:
        for key in [PREFIX + v for v in live_values] + orphan_keys + list(outside):
            answer = bucket.put(key, body_of(key))
            world.original[key] = {
                "version_id": answer.get("VersionId", "null"),
                "etag": answer["ETag"].strip('"'),
                "body": body_of(key),
            }
    world.write_config(safety=safety)
    return world


def empty_world(bucket: Any, db: Database, root: Path, *, table_name: str | None = None) -> World:
    """A world with an empty bucket and an empty table: the test lays it out."""
    return build_world(bucket, db, root, live=0, orphans=0, outside=(), table_name=table_name)


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


def plant_foreign_lock(world: World, age: timedelta) -> dict[str, Any]:
    """A lock on books/ taken ``age`` ago by an apply on another machine (alive
    or dead: from here nobody can tell); S3's answer to its PUT."""
    holder = {
        "user": "ghost",
        "host": "build-box-9",
        "pid": "4242",
        "command": "apply",
        "plan_hash": "sha256:" + "c" * 64,
        "bucket": world.name,
        "prefix": "books/",
        "acquired_at": (datetime.now(timezone.utc) - age).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    key = LOCKS + "books%2F.json"
    return dict(world.client.put_object(Bucket=world.name, Key=key, Body=json.dumps(holder).encode()))
