"""Reading the live histories of a set of keys, as cheaply as S3 allows.

Listing the prefix costs one request per 1,000 versions; listing one key
costs one request. A handful of keys in a large prefix is cheaper key by key.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from bmxgc import s3
from bmxgc.drift import KeyHistory, group_by_key
from bmxgc.model import VersionEntry

PER_KEY_LISTING_MAX = 50


def live_histories(
    client: s3.S3Client,
    bucket: str,
    prefix: str,
    keys: Collection[str],
    versions_hint: int | None,
    concurrency: int = s3.LIST_CONCURRENCY,
) -> dict[str, KeyHistory]:
    """The histories of ``keys`` under ``prefix``. ``versions_hint`` is how many
    versions the prefix held when last listed (None: unknown, list the prefix,
    over up to ``concurrency`` connections)."""
    return group_by_key(_rows(client, bucket, prefix, keys, versions_hint, concurrency), set(keys))


def _rows(
    client: s3.S3Client,
    bucket: str,
    prefix: str,
    keys: Collection[str],
    versions_hint: int | None,
    concurrency: int,
) -> Iterator[VersionEntry]:
    pages = -(-versions_hint // s3.MAX_KEYS_PER_REQUEST) if versions_hint else 0
    if len(keys) <= PER_KEY_LISTING_MAX and len(keys) < pages:
        for key in sorted(keys):
            # Listing "books/a" also lists "books/a.bak": keep the key itself.
            yield from (row for row in s3.list_versions(client, bucket, key) if row.key == key)
    else:
        # Grouped by key by the caller: ranges may come in any order (a key's rows stay in one).
        yield from s3.list_versions(client, bucket, prefix, concurrency=concurrency, ordered=False)
