"""Helpers for the operations tests (issue 4): recover, history, trend,
cross-check, plans in S3, the Python API and the PR workflow.

Only plain boto3, sqlite3 and psycopg2 here: nothing reimplements bmxgc.
"""

from __future__ import annotations

import getpass
import json
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from servers import Database
from support import LOCK_FOLDER, config_doc, write_toml

# One row of a listing: key, version id, delete marker?, latest?, etag, size.
Row = tuple[str, str, bool, bool, str, int]


def stamp(moment: datetime) -> str:
    """RFC 3339 UTC with whole seconds, as a user types it."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def next_second() -> datetime:
    """Sleep to the next whole second and return it.

    S3 (and moto) list LastModified in whole seconds, so a window edge is only
    sharp when nothing else happened in the same second.
    """
    now = datetime.now(timezone.utc)
    target = now.replace(microsecond=0) + timedelta(seconds=1)
    time.sleep((target - now).total_seconds() + 0.02)
    return target


def versions(client: Any, bucket: str, *, locks: bool = False) -> set[Row]:
    """Every version and delete marker in the bucket (bmxgc's lock folder only if ``locks``)."""
    rows: set[Row] = set()
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            rows.add((v["Key"], v["VersionId"], False, v["IsLatest"], v["ETag"].strip('"'), v["Size"]))
        for m in page.get("DeleteMarkers", []):
            rows.add((m["Key"], m["VersionId"], True, m["IsLatest"], "", 0))
    return rows if locks else {r for r in rows if not r[0].startswith(LOCK_FOLDER)}


def current(client: Any, bucket: str, key: str) -> tuple[str, bytes] | None:
    """``(version id, bytes)`` of the current version of ``key``, or None if deleted."""
    try:
        answer = client.get_object(Bucket=bucket, Key=key)
    except client.exceptions.NoSuchKey:
        return None
    return answer.get("VersionId", "null"), answer["Body"].read()


def delete_plainly(client: Any, bucket: str, keys: Sequence[str]) -> None:
    """What the incident's job did: DeleteObjects without version ids (delete markers)."""
    keys = list(keys)
    for start in range(0, len(keys), 1000):
        answer = client.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]]}
        )
        assert not answer.get("Errors"), answer["Errors"]


def held_objects(client: Any, bucket: str, prefix: str = LOCK_FOLDER) -> list[str]:
    """Current (not deleted) objects under ``prefix``."""
    answer = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in answer.get("Contents", [])]


def me() -> str:
    """``user@host`` as a receipt records whoever runs the tests."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def saved(output: str, label: str) -> str:
    """The value of the first ``label: value`` line of a command's output."""
    for line in output.splitlines():
        if line.startswith(label + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {label!r} line in:\n{output}")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def s3_json(client: Any, url: str) -> Any:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())


# --------------------------------------------------------------------------- a scene


@dataclass
class Scene:
    """A versioned bucket, a database with a ``book_images`` table, and a config file.

    ``book_images.s3_key`` holds keys without ``books/`` (as in the incident);
    the config maps them with ``books/{value}``.
    """

    bucket: Any  # conftest.Bucket
    db: Database
    folder: Path
    prefix: str = "books/"
    plans_dir: str = "plans"
    extra_references: list[dict[str, Any]] = field(default_factory=list)
    safety: dict[str, Any] = field(default_factory=dict)
    config_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.db.execute("CREATE TABLE book_images (id INTEGER PRIMARY KEY, s3_key TEXT)")
        self.write_config()

    @property
    def name(self) -> str:
        return str(self.bucket.name)

    @property
    def client(self) -> Any:
        return self.bucket.client

    def doc(self, **changes: Any) -> dict[str, Any]:
        doc = config_doc(
            bucket=changes.pop("bucket", self.name),
            prefix=changes.pop("prefix", self.prefix),
            endpoint=self.bucket.endpoint,
            database_url=self.db.url,
            references=[
                {"name": "book_images", "query": "SELECT s3_key FROM book_images", "keys": ["books/{value}"]},
                *changes.pop("references", self.extra_references),
            ],
            safety={**self.safety, **changes.pop("safety", {})},
            plans_dir=changes.pop("plans_dir", self.plans_dir),
        )
        assert not changes, changes
        return doc

    def write_config(self, name: str = "bmxgc.toml", **changes: Any) -> Path:
        path = write_toml(self.folder / name, self.doc(**changes))
        if name == "bmxgc.toml":
            self.config_path = path
        return path

    def reference(self, values: Iterable[str]) -> None:
        """Rows in ``book_images`` (values without ``books/``)."""
        (start,) = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM book_images")[0]
        self.db.insert("book_images", ["id", "s3_key"], [(start + i, v) for i, v in enumerate(values, 1)])

    def unreference(self, values: Iterable[str]) -> None:
        for value in values:
            self.db.execute(f"DELETE FROM book_images WHERE s3_key = {self.db.param}", (value,))

    def books(self, numbers: Iterable[int], *, fast: bool = False) -> list[str]:
        """Objects ``books/<n>/image_00.webp`` (bytes name the key unless ``fast``)."""
        keys = [f"books/{n}/image_00.webp" for n in numbers]
        if fast:
            self.bucket.put_many(keys, b"webp")
        else:
            for key in keys:
                self.bucket.put(key, f"bytes of {key}".encode())
        return keys

    def versions(self, *, locks: bool = False) -> set[Row]:
        return versions(self.client, self.name, locks=locks)

    def current(self, key: str) -> tuple[str, bytes] | None:
        return current(self.client, self.name, key)
