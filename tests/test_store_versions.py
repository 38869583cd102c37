"""Plans and receipts kept in S3 are never silently replaced, even by a server
that ignores ``If-None-Match`` (Ceph RGW in a versioned bucket): S3Store.create
looks at the key's versions after writing. On moto and LocalStack the header
is taken off on the client side to play that server; on Ceph it is the server."""

from __future__ import annotations

from typing import Any

import pytest

from bmxgc import s3
from bmxgc.errors import AlreadyExists
from bmxgc.store import S3Store, create_once
from ops_support import versions


def ignoring_if_none_match(endpoint: str) -> Any:
    client = s3.make_client(endpoint, "us-east-1")
    client.meta.events.register(
        "before-parameter-build.s3.PutObject", lambda params, **_kw: params.pop("IfNoneMatch", None)
    )
    return client


def body(bucket: Any, key: str) -> bytes:
    return bytes(bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read())


@pytest.mark.parametrize("strip", [False, True], ids=["if-none-match-sent", "if-none-match-ignored"])
def test_create_over_a_reviewed_plan_fails_loudly_and_keeps_it(bucket: Any, strip: bool) -> None:
    client = ignoring_if_none_match(bucket.endpoint) if strip else s3.make_client(bucket.endpoint, "us-east-1")
    store = S3Store(client, bucket.name, "plans/")
    store.create("reviewed.json", '{"reviewed": true}')
    before = versions(bucket.client, bucket.name, locks=True)
    with pytest.raises(AlreadyExists) as refused:
        store.create("reviewed.json", '{"reviewed": false}')
    message = str(refused.value)
    assert f"s3://{bucket.name}/plans/reviewed.json: already exists" in message
    assert "never overwritten" in message
    # The reviewed file is current again, and no trace of the attempt is left.
    assert body(bucket, "plans/reviewed.json") == b'{"reviewed": true}'
    assert versions(bucket.client, bucket.name, locks=True) == before


def test_create_after_the_file_was_deleted_writes_it(bucket: Any) -> None:
    store = S3Store(ignoring_if_none_match(bucket.endpoint), bucket.name, "plans/")
    bucket.put("plans/old.json", b"old")
    bucket.delete("plans/old.json")  # a delete marker on top: no current file
    import time

    time.sleep(1.1)  # whole-second LastModified on some servers: clearly after the marker
    store.create("old.json", "new")
    assert body(bucket, "plans/old.json") == b"new"


def test_create_once_reuses_the_same_document_written_twice(bucket: Any) -> None:
    store = S3Store(ignoring_if_none_match(bucket.endpoint), bucket.name, "plans/")
    first = create_once(store, "p.json", "same")
    assert create_once(store, "p.json", "same") == first
    listed = bucket.client.list_object_versions(Bucket=bucket.name, Prefix="plans/p.json")
    assert len(listed.get("Versions", [])) == 1


@pytest.mark.parametrize("strip", [False, True], ids=["if-none-match-sent", "if-none-match-ignored"])
def test_a_file_written_between_the_look_and_the_put_is_not_replaced(bucket: Any, strip: bool) -> None:
    """Another writer's file lands after create looked and before it wrote:
    the versions after the write show it, create fails, theirs stays current."""
    client = ignoring_if_none_match(bucket.endpoint) if strip else s3.make_client(bucket.endpoint, "us-east-1")
    raced: list[bool] = []

    def race(params: Any, **_kw: Any) -> None:
        if params.get("Key") == "plans/raced.json" and not raced:
            raced.append(True)
            bucket.put("plans/raced.json", b"theirs")

    client.meta.events.register("before-parameter-build.s3.PutObject", race)
    store = S3Store(client, bucket.name, "plans/")
    with pytest.raises(AlreadyExists):
        store.create("raced.json", "ours")
    assert raced
    assert body(bucket, "plans/raced.json") == b"theirs"
    listed = bucket.client.list_object_versions(Bucket=bucket.name, Prefix="plans/raced.json")
    assert len(listed.get("Versions", [])) == 1 and not listed.get("DeleteMarkers")
