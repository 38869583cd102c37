"""The S3 scan against moto's server over HTTP: prefix only, every version, pages of 1,000."""

from __future__ import annotations

import collections
from typing import Any, Callable

import pytest
from botocore.awsrequest import AWSResponse

from bmxgc import s3
from bmxgc.errors import ServiceError
from servers import Bucket
from support import pages_needed

UNUSUAL_KEYS = [
    "books/with space.webp",
    "books/ leading-space",
    "books/trailing-space ",
    "books/a+b.webp",
    "books/a%20b.webp",
    "books/a%2Fb",
    "books/caf\u00e9.webp",  # composed é
    "books/cafe\u0301.webp",  # e + combining acute: a different key
    "books/\U0001f600.webp",
    "books/\ufffd",
    "books/tab\there",
    "books/quote\"and'apostrophe",
    "books/amp&lt;<>",
    "books/日本語/画像.png",
    "books/back\\slash",
    "books/question?hash#",
    "books/deep//double//slash",
]


def _client(bucket: Bucket) -> Any:
    return s3.make_client(bucket.endpoint, "us-east-1")


def test_s3_list_versions_only_lists_the_prefix(bucket: Bucket) -> None:
    for key in ["books/1/a.webp", "books/2/b.webp", "books-old/x", "booksX", "listings/1", "images/books/z", "a"]:
        bucket.put(key)
    keys = {v.key for v in s3.list_versions(_client(bucket), bucket.name, "books/")}
    assert keys == {"books/1/a.webp", "books/2/b.webp"}


def test_s3_list_versions_reports_versions_markers_etag_and_size(bucket: Bucket) -> None:
    first = bucket.put("books/k", b"one")
    second = bucket.put("books/k", b"second!")
    bucket.put("books/gone", b"zz")
    marker = bucket.delete("books/gone")
    rows = list(s3.list_versions(_client(bucket), bucket.name, "books/"))
    by_id = {r.version_id: r for r in rows}
    assert len(rows) == 4
    latest = by_id[second["VersionId"]]
    assert (latest.key, latest.is_latest, latest.is_delete_marker, latest.size) == ("books/k", True, False, 7)
    assert latest.etag == second["ETag"].strip('"') and '"' not in latest.etag
    old = by_id[first["VersionId"]]
    assert (old.is_latest, old.size) == (False, 3)
    dm = by_id[marker["VersionId"]]
    assert (dm.key, dm.is_latest, dm.is_delete_marker) == ("books/gone", True, True)
    assert all(r.last_modified.tzinfo is not None for r in rows)


def test_s3_list_versions_keeps_unusual_keys_intact(bucket: Bucket) -> None:
    for key in UNUSUAL_KEYS:
        bucket.put(key)
    listed = [v.key for v in s3.list_versions(_client(bucket), bucket.name, "books/")]
    assert sorted(listed) == sorted(UNUSUAL_KEYS)
    assert "books/caf\u00e9.webp" in listed and "books/cafe\u0301.webp" in listed


def test_s3_list_versions_pages_past_1000_objects(bucket: Bucket, s3_calls: Callable[[Any], collections.Counter[str]]) -> None:
    keys = [f"books/{i:05d}.webp" for i in range(1100)]
    bucket.put_many(keys)
    bucket.put_many(f"other/{i}" for i in range(50))
    client = _client(bucket)
    calls = s3_calls(client)
    listed = [v.key for v in s3.list_versions(client, bucket.name, "books/")]
    assert sorted(listed) == keys
    assert calls["ListObjectVersions"] == pages_needed(1100) == 2
    assert set(calls) == {"ListObjectVersions"}  # no request per key


def test_s3_list_versions_pages_past_1000_versions(bucket: Bucket, s3_calls: Callable[[Any], collections.Counter[str]]) -> None:
    keys = [f"books/{i:04d}" for i in range(600)]
    bucket.put_many(keys, b"v1")
    bucket.put_many(keys, b"version2")
    client = _client(bucket)
    calls = s3_calls(client)
    rows = list(s3.list_versions(client, bucket.name, "books/"))
    assert len(rows) == 1200
    assert sum(r.is_latest for r in rows) == 600
    assert all(r.size == 8 for r in rows if r.is_latest)
    assert calls["ListObjectVersions"] == pages_needed(1200) == 2


def test_s3_list_versions_reports_progress_per_page(bucket: Bucket) -> None:
    bucket.put_many(f"books/{i:04d}" for i in range(1500))
    seen: list[int] = []
    rows = list(s3.list_versions(_client(bucket), bucket.name, "books/", progress=seen.append))
    assert len(rows) == 1500
    assert seen == [1000, 1500]


def test_s3_list_versions_empty_prefix_yields_nothing(bucket: Bucket) -> None:
    bucket.put("listings/1")
    assert list(s3.list_versions(_client(bucket), bucket.name, "books/")) == []


def test_s3_list_versions_missing_bucket_is_one_line_service_error(bucket: Bucket) -> None:
    with pytest.raises(ServiceError) as excinfo:
        list(s3.list_versions(_client(bucket), bucket.name + "-missing", "books/"))
    message = str(excinfo.value)
    assert "NoSuchBucket" in message and "\n" not in message


def test_s3_throttling_is_retried_by_botocore(bucket: Bucket) -> None:
    """A 503 SlowDown is retried by botocore's standard mode, not a loop of our own."""
    bucket.put("books/a")
    client = _client(bucket)
    attempts = collections.Counter[str]()

    def slow_down_once(request: Any, **kwargs: Any) -> AWSResponse | None:
        attempts["sent"] += 1
        if attempts["sent"] == 1:
            body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            headers: Any = {}
            return AWSResponse(request.url, 503, headers, _Raw(body))
        return None

    client.meta.events.register("before-send.s3.ListObjectVersions", slow_down_once)
    rows = list(s3.list_versions(client, bucket.name, "books/"))
    assert [r.key for r in rows] == ["books/a"]
    assert attempts["sent"] == 2
    assert client.meta.config.retries["mode"] in ("standard", "adaptive")


class _Raw:
    """The raw body botocore reads from an AWSResponse."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **kwargs: Any) -> Any:
        yield self.data


def test_s3_versioning_status(make_bucket: Callable[..., Bucket]) -> None:
    versioned = make_bucket(versioned=True)
    never = make_bucket(versioned=False)
    suspended = make_bucket(versioned=True)
    suspended.client.put_bucket_versioning(Bucket=suspended.name, VersioningConfiguration={"Status": "Suspended"})
    client = _client(versioned)
    assert s3.versioning_status(client, versioned.name) == "Enabled"
    assert s3.versioning_status(client, never.name) == "Disabled"
    assert s3.versioning_status(client, suspended.name) == "Suspended"


def _lifecycle(bucket: Bucket, *rules: dict[str, Any]) -> None:
    bucket.client.put_bucket_lifecycle_configuration(
        Bucket=bucket.name, LifecycleConfiguration={"Rules": list(rules)}
    )


def _rule(rule_id: str, prefix: str, days: int, status: str = "Enabled") -> dict[str, Any]:
    return {
        "ID": rule_id,
        "Status": status,
        "Filter": {"Prefix": prefix},
        "NoncurrentVersionExpiration": {"NoncurrentDays": days},
    }


def test_s3_undo_window_none_without_lifecycle(bucket: Bucket) -> None:
    assert s3.noncurrent_expiry_days(_client(bucket), bucket.name, "books/") is None


def test_s3_undo_window_is_shortest_rule_covering_prefix(bucket: Bucket) -> None:
    _lifecycle(
        bucket,
        _rule("whole-bucket", "", 30),
        _rule("books", "books/", 7),
        _rule("deeper", "books/covers/", 3),  # covers part of our prefix: counts
        _rule("elsewhere", "listings/", 1),  # does not cover books/
        _rule("off", "books/", 1, status="Disabled"),  # 0 would be refused by S3 and Ceph
    )
    assert s3.noncurrent_expiry_days(_client(bucket), bucket.name, "books/") == 3


def test_s3_undo_window_ignores_rules_for_other_prefixes(bucket: Bucket) -> None:
    _lifecycle(bucket, _rule("elsewhere", "listings/", 1))
    assert s3.noncurrent_expiry_days(_client(bucket), bucket.name, "books/") is None


def test_s3_make_client_uses_botocore_retries_and_endpoint(bucket: Bucket) -> None:
    client = _client(bucket)
    assert client.meta.endpoint_url == bucket.endpoint
    assert client.meta.config.retries["mode"] in ("standard", "adaptive")
    assert client.meta.region_name == "us-east-1"
