"""The files' data as pydantic models: strict types, times as docs/reference.md writes them."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from bmxgc.model import KeyFailure, ObjectVersion, References, SourceResult, VersionEntry, parse_rfc3339, rfc3339, who
from support import make_plan


def test_rfc3339_is_utc_whole_seconds_and_reads_back() -> None:
    moment = datetime(2026, 11, 28, 13, 0, 0, 900000, tzinfo=timezone.utc)
    assert rfc3339(moment) == "2026-11-28T13:00:00Z"
    assert parse_rfc3339("2026-11-28T14:00:00+01:00") == datetime(2026, 11, 28, 13, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="no time zone"):
        parse_rfc3339("2026-11-28T13:00:00")


# An orphan is a plain record (a plan holds millions); it is checked when read from a file.
ORPHAN = TypeAdapter(ObjectVersion)


@pytest.mark.parametrize("size", [True, "10", 1.0, -1])
def test_counts_are_strict_non_negative_integers(size: Any) -> None:
    with pytest.raises(ValidationError):
        ORPHAN.validate_python({"key": "k", "version_id": "v", "etag": "e", "size": size, "last_modified": "2026-11-28T12:00:00Z"})


@pytest.mark.parametrize("when", ["yesterday", "2026-11-28T12:00:00", "2026-11-28T12:00:00.5Z", "2026-11-28 12:00:00Z"])
def test_times_in_files_are_rfc3339_utc_whole_seconds(when: str) -> None:
    with pytest.raises(ValidationError, match="is not an RFC 3339 UTC time"):
        ORPHAN.validate_python({"key": "k", "version_id": "v", "etag": "e", "size": 1, "last_modified": when})


def test_an_orphan_read_from_a_file_has_exactly_its_five_fields() -> None:
    row: dict[str, Any] = {"key": "k", "version_id": "v", "etag": "e", "size": 1, "last_modified": "2026-11-28T12:00:00Z"}
    assert ORPHAN.validate_python(row) == ObjectVersion("k", "v", "e", 1, "2026-11-28T12:00:00Z")
    with pytest.raises(ValidationError, match="extra"):
        ORPHAN.validate_python({**row, "more": 1})
    assert ORPHAN.dump_python(ObjectVersion(**row), mode="json") == row


def test_a_plan_lists_each_key_once() -> None:
    doc = make_plan(["books/a", "books/b"], []).model_dump(mode="json")
    doc["orphans"].insert(1, doc["orphans"][0])
    with pytest.raises(ValidationError, match="listed twice"):
        type(make_plan([], [])).model_validate(doc)


def test_a_plan_lists_its_orphans_sorted_by_key() -> None:
    doc = make_plan(["books/a", "books/b"], []).model_dump(mode="json")
    doc["orphans"].reverse()
    with pytest.raises(ValidationError, match="sorted by key"):
        type(make_plan([], [])).model_validate(doc)


@pytest.mark.parametrize("version", [1.0, True, "1", 2])
def test_format_version_is_exactly_the_integer_one(version: Any) -> None:
    doc = make_plan(["books/a"], []).model_dump(mode="json")
    with pytest.raises(ValidationError, match="format_version"):
        type(make_plan([], [])).model_validate({**doc, "format_version": version})


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        KeyFailure.model_validate({"key": "k", "code": "c", "message": "m", "extra": 1})


def test_a_listed_version_becomes_a_plan_record() -> None:
    row = VersionEntry("books/a", "v1", True, False, datetime(2026, 11, 28, 12, tzinfo=timezone.utc), "e", 3)
    assert row.as_object() == ObjectVersion(
        key="books/a", version_id="v1", etag="e", size=3, last_modified="2026-11-28T12:00:00Z"
    )


def test_references_keys_are_the_union_of_the_sources() -> None:
    refs = References([SourceResult("a", keys={"x", "y"}), SourceResult("b", keys={"y", "z"})])
    assert len(refs.keys) == 3 and all(key in refs.keys for key in "xyz") and "w" not in refs.keys
    assert [refs.source_name(key) for key in "xyzw"] == ["a", "b", "b", None]


def test_who_names_user_host_and_this_process() -> None:
    me = who()
    assert set(me) == {"user", "host", "pid"} and me["pid"] == str(os.getpid()) and me["host"]


@pytest.mark.parametrize("version_id", ["v1", "v\x00with a NUL", ""])
def test_an_orphan_record_gives_back_exactly_its_fields(version_id: str) -> None:
    orphan = ObjectVersion("books/a\x00b", version_id, "e\x00", 12, "2026-11-28T12:00:00Z")
    assert (orphan.key, orphan.version_id, orphan.etag, orphan.size, orphan.last_modified) == (
        "books/a\x00b", version_id, "e\x00", 12, "2026-11-28T12:00:00Z")
    assert list(orphan) == ["books/a\x00b", version_id, "e\x00", 12, "2026-11-28T12:00:00Z"]
    assert orphan == ObjectVersion(*orphan) and hash(orphan) == hash(ObjectVersion(*orphan))
    assert orphan != ObjectVersion("books/a\x00b", version_id, "e\x00", 13, "2026-11-28T12:00:00Z")
    with pytest.raises(AttributeError):
        orphan.key = "other"
