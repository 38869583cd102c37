"""Reading a few keys' live histories: key by key when that costs fewer requests."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from bmxgc import s3
from bmxgc.live import live_histories
from servers import Bucket


def test_a_few_keys_in_a_large_prefix_are_listed_one_by_one(
    bucket: Bucket, s3_calls: Callable[[Any], collections.Counter[str]]
) -> None:
    bucket.put_many([f"books/{i:04d}" for i in range(20)])
    bucket.put("books/0001.bak")  # listing "books/0001" also lists it: not its history
    bucket.delete("books/0001")
    client = s3.make_client(bucket.endpoint, "us-east-1")
    calls = s3_calls(client)
    live = live_histories(client, bucket.name, "books/", {"books/0001", "books/0002"}, versions_hint=5000)
    assert calls["ListObjectVersions"] == 2
    assert set(live) == {"books/0001", "books/0002"}
    latest = live["books/0001"].latest
    assert latest is not None and latest.is_delete_marker
    assert (len(live["books/0001"].versions), len(live["books/0001"].markers)) == (1, 1)


def test_many_keys_or_an_unknown_prefix_size_list_the_prefix(
    bucket: Bucket, s3_calls: Callable[[Any], collections.Counter[str]]
) -> None:
    bucket.put_many([f"books/{i:04d}" for i in range(20)])
    client = s3.make_client(bucket.endpoint, "us-east-1")
    calls = s3_calls(client)
    live = live_histories(client, bucket.name, "books/", {"books/0001", "books/0002"}, versions_hint=None)
    assert calls["ListObjectVersions"] == 1 and set(live) == {"books/0001", "books/0002"}
