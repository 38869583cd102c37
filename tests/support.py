"""Helpers shared by the tests: writing configs, recomputing hashes, building plans.

Nothing here reimplements bmxgc: the hash is recomputed from docs/plan-file.md's words
with hashlib and json, and TOML is written by a tiny serialiser of our own.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

PLAN_NAME = r"^\d{8}T\d{6}Z-[0-9a-f]{12}\.json$"
# bmxgc's own objects in a scanned bucket, and its locks among them.
LOCK_FOLDER = ".bmxgc/"
LOCKS = LOCK_FOLDER + "locks/"


# --------------------------------------------------------------------------- TOML


def toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes, minus the ones TOML lacks."""
    out = []
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(doc: Mapping[str, Any]) -> str:
    """Top-level scalars, then [tables], then [[arrays of tables]] (one level deep)."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    arrays: list[tuple[str, Sequence[Mapping[str, Any]]]] = []
    for key, value in doc.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            arrays.append((key, value))
        else:
            lines.append(f"{key} = {toml_value(value)}")
    for key, table in tables:
        lines += ["", f"[{key}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    for key, items in arrays:
        for item in items:
            lines += ["", f"[[{key}]]"] + [f"{k} = {toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def config_doc(
    *,
    bucket: str = "some-bucket",
    prefix: str = "books/",
    endpoint: str | None = None,
    database_url: str | None = "sqlite:///nowhere.db",
    references: list[dict[str, Any]] | None = None,
    safety: dict[str, Any] | None = None,
    plans_dir: str = "plans",
) -> dict[str, Any]:
    """A config as a dict, ready to be tweaked by a test and written with ``to_toml``."""
    s3: dict[str, Any] = {"bucket": bucket, "prefix": prefix}
    if endpoint is not None:
        s3["endpoint_url"] = endpoint
        s3["region"] = "us-east-1"
    doc: dict[str, Any] = {"plans_dir": plans_dir, "s3": s3}
    if database_url is not None:
        doc["database"] = {"url": database_url}
    doc["references"] = references or [
        {"name": "book_images", "query": "SELECT s3_key FROM book_images", "keys": ["books/{value}"]}
    ]
    doc["safety"] = {"min_age": "0s", **(safety or {})}
    return doc


def write_toml(path: Path, doc: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_toml(doc), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- plans


def spec_hash(doc: Mapping[str, Any]) -> str:
    """``plan_hash`` exactly as docs/plan-file.md defines it, written from its words."""
    body = {k: v for k, v in doc.items() if k != "plan_hash"}
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_plan(path: Path | str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return doc


def orphan_keys(doc: Mapping[str, Any]) -> list[str]:
    return [o["key"] for o in doc["orphans"]]


def pages_needed(versions: int) -> int:
    return max(1, math.ceil(versions / 1000))


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err

    def saved_path(self) -> Path:
        for line in self.out.splitlines():
            if line.startswith("Saved:"):
                return Path(line.split(":", 1)[1].strip())
        raise AssertionError(f"no 'Saved:' line in the output:\n{self.out}\n{self.err}")


def assert_one_line_error(result: CliResult, code: int, *needles: str) -> str:
    """The command failed with ``code``, one ``Error:`` line on stderr, naming ``needles``."""
    assert result.code == code, f"exit {result.code}, expected {code}\n{result.out}\n{result.err}"
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.err}"
    line = lines[0]
    assert line.startswith("Error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


# --------------------------------------------------------------------------- pure planner input


def version(
    key: str,
    *,
    vid: str | None = None,
    latest: bool = True,
    marker: bool = False,
    age: timedelta = timedelta(days=30),
    now: datetime | None = None,
    size: int = 10,
    etag: str | None = None,
) -> Any:
    """A listing row as bmxgc.s3.list_versions yields it."""
    from bmxgc.model import VersionEntry

    now = now or NOW
    return VersionEntry(
        key=key,
        version_id=vid or f"v-{hashlib.md5(key.encode()).hexdigest()[:8]}",
        is_latest=latest,
        is_delete_marker=marker,
        last_modified=now - age,
        etag="" if marker else (etag or hashlib.md5(key.encode()).hexdigest()),
        size=0 if marker else size,
    )


NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)


def references_of(per_source: Iterable[Iterable[str]], *, nulls: int = 0, empties: int = 0) -> Any:
    """A References result (what read_references returns) holding these keys."""
    from bmxgc.model import References, SourceResult

    sources = []
    for index, keys in enumerate(per_source):
        keys = set(keys)
        sources.append(
            SourceResult(
                name=f"source{index}",
                rows=len(keys) + (nulls + empties if index == 0 else 0),
                skipped_null=nulls if index == 0 else 0,
                skipped_empty=empties if index == 0 else 0,
                keys=keys,
            )
        )
    return References(sources=sources)


def make_plan(
    keys_in_s3: Iterable[str],
    referenced: Iterable[str] = (),
    *,
    prefix: str = "books/",
    safety: dict[str, Any] | None = None,
    versioning: str = "Enabled",
    undo_days: int | None = None,
    now: datetime = NOW,
    listing: list[Any] | None = None,
    nulls: int = 0,
    empties: int = 0,
    database: str = "postgresql+psycopg2://app@db:5432/app",
) -> Any:
    """A Plan built by bmxgc's pure planner from plain lists (no S3, no database)."""
    from bmxgc.config import ReferenceSource, SafetySettings
    from bmxgc.planner import ScanContext, build_plan

    rows = listing if listing is not None else [version(k, now=now) for k in keys_in_s3]
    sources = [ReferenceSource(name="source0", query="SELECT s3_key FROM t", keys=["{value}"])]
    return build_plan(
        rows,
        references_of([referenced], nulls=nulls, empties=empties),
        sources,
        SafetySettings(**{"min_age": "0s", **(safety or {})}),
        ScanContext(
            bucket="bkt",
            prefix=prefix,
            bucket_versioning=versioning,
            database=database,
            undo_window_days=undo_days,
        ),
        now,
    )


def refused(result: Any, gate: str) -> str:
    """The CLI refused with exit 3, naming ``gate``, without a traceback, and
    applied nothing. Returns stderr."""
    assert result.code == 3, f"exit {result.code}\n{result.out}\n{result.err}"
    assert f"refused by gate '{gate}'" in result.err, result.err
    assert "Traceback" not in result.output
    assert "Apply complete" not in result.out
    return str(result.err)
