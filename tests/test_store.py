"""Where bmxgc's files live: a local folder keeps the same promises as S3
(test_plans_in_s3.py runs the commands against an S3 plans_dir)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bmxgc.errors import AlreadyExists, ConfigError, InputNotFound
from bmxgc.store import LocalStore, S3Store, create_once, open_location, read_document


def test_create_never_overwrites_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "plans")
    assert store.create("a.json", "one\n", read_only=True) == str(tmp_path / "plans" / "a.json")
    with pytest.raises(AlreadyExists, match="never overwritten"):
        store.create("a.json", "two\n")
    assert (tmp_path / "plans" / "a.json").read_text() == "one\n"
    assert not os.access(tmp_path / "plans" / "a.json", os.W_OK) or os.geteuid() == 0
    assert sorted(p.name for p in (tmp_path / "plans").iterdir()) == ["a.json"]


def test_create_once_reuses_the_very_same_document_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    create_once(store, "a.json", "same\n")
    assert create_once(store, "a.json", "same\n") == str(tmp_path / "a.json")
    with pytest.raises(AlreadyExists):
        create_once(store, "a.json", "other\n")


def test_replace_swaps_the_whole_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.replace("r.json", "first\n")
    store.replace("r.json", "second\n")
    assert store.read("r.json") == "second\n" and store.names() == ["r.json"]


def test_read_head_says_whether_it_is_all(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.create("r.json", "0123456789")
    assert store.read_head("r.json", 4) == (b"0123", False)
    assert store.read_head("r.json", 10) == (b"0123456789", True)
    assert store.read_head("missing.json", 4) is None and store.read("missing.json") is None


def test_names_skip_hidden_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / ".bmxgc-x.tmp").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.json").write_text("")
    assert LocalStore(tmp_path).names() == ["b.json"]
    assert LocalStore(tmp_path / "none").names() == []


def test_a_folder_that_cannot_be_written_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="plans_dir: cannot write to"):
        LocalStore(blocker / "plans").create("a.json", "x")


def test_open_location_splits_paths_and_s3_urls(tmp_path: Path) -> None:
    store, name = open_location(str(tmp_path / "p" / "a.json"), None)
    assert isinstance(store, LocalStore) and name == "a.json" and store.location(name) == str(tmp_path / "p" / "a.json")
    with pytest.raises(ConfigError, match="needs a config"):
        open_location("s3://bucket/gc/a.json", None)
    client: Any = object()
    s3_store, s3_name = open_location("s3://bucket/gc/a.json", client)
    assert isinstance(s3_store, S3Store) and s3_store.location(s3_name) == "s3://bucket/gc/a.json"
    with pytest.raises(InputNotFound, match="not found"):
        read_document(str(tmp_path / "none.json"))
