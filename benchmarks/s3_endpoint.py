#!/usr/bin/env python3
"""A local S3 endpoint for benchmarks: real S3 XML over a generated bucket of N objects.

A script and a module, not part of bmxgc. It serves, on loopback and path
style (``http://127.0.0.1:PORT/BUCKET/KEY``), what ``bmxgc plan``, ``apply``
and ``undo`` call, with the XML S3 answers with:

- ListObjectVersions (``?versions``): ``prefix``, ``key-marker``,
  ``version-id-marker``, ``max-keys`` capped at 1,000 (as S3),
  ``encoding-type=url``; versions and delete markers of a key newest first,
  keys in byte order, ``NextKeyMarker``/``NextVersionIdMarker`` when truncated;
- ListObjectsV2 (``?list-type=2``): ``prefix``, ``continuation-token``,
  ``start-after``, ``max-keys`` (the lock's ``.bmxgc/locks/`` listing);
- DeleteObjects (``POST ?delete``, at most 1,000 keys, else MalformedXML):
  without a version id a new delete marker (its id in the answer), with one
  the removal of exactly that version (a marker: ``DeleteMarker: true``);
  a per-key ``ETag`` is checked against the current version (as S3 does
  since 2025); ``Quiet`` honoured;
- GetBucketVersioning (``Enabled``), GetBucketLifecycleConfiguration (404
  ``NoSuchLifecycleConfiguration``), HeadBucket;
- PutObject (``If-None-Match: *``, ``If-Match``), GetObject (``versionId``,
  ``Range``), HeadObject, DeleteObject (``versionId``, ``If-Match``): the
  lock object and anything else bmxgc writes.

Anything else is answered ``501 NotImplemented`` and logged on stderr.

The bucket (name ``bench``) is a model, not a store: object ``i`` (0 <= i <
N) is ``books/<i // 10, 7 digits>/image_<i % 10, 2 digits>.webp`` with one
version whose id, ETag, size and LastModified (in 2025, older than any
``min_age``) are computed from ``i``, so a million objects cost no memory.
What requests change (delete markers, removed versions, new objects) is
kept in an overlay on top. ``--other`` objects under ``listings/`` sit
outside the prefix.

Per request: ``--latency-ms`` of sleep (default 20, about what S3 answers
in; concurrent requests wait concurrently, as on S3) and, with
``--slowdown F``, a ``503 SlowDown`` answer to a fraction F of requests
(seeded, so reproducible). Both can be changed at run time.

Its own cost matters: it runs on the same (two) cores as the client it
measures, and S3's servers do not, so its CPU is taken from the client.
A ListObjectVersions page of 1,000 generated rows costs about 1.1 to 1.4 ms
of CPU (1.5 to 1.9 ms with a delete marker on every tenth object, as after
an apply), measured over HTTP with ``cpu_seconds``, of which rendering is
0.65 ms (0.8); it was about 6 ms, 6 s of a million-object listing against
the client's 9 to 10 s for the whole plan.
``Bucket.versions_page`` renders generated rows a thousand at a time
(``generated_rows``); ``list_versions`` and ``versions_xml`` build the same
bytes one ``Version`` at a time, the reference ``check_pages.py`` compares
it with. Answers go out with ``TCP_NODELAY`` and in one write, so a small
answer does not wait about 40 ms for the client's delayed ACK (S3 makes
no one wait for that).

Control paths (no latency, never throttled, not counted):
``GET /_bench/stats`` (requests by operation, SlowDown answers, server CPU),
``POST /_bench/reset`` (zero the counters), ``GET /_bench/state`` (a summary
and a digest of the overlay; ``?detail=1`` lists it),
``POST /_bench/config?latency_ms=..&slowdown=..``.

    python benchmarks/s3_endpoint.py --objects 1000000 --port 9000
    AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x aws --endpoint-url http://127.0.0.1:9000 s3api list-object-versions --bucket bench --max-items 3
"""

from __future__ import annotations

import argparse
import bisect
import collections
import ctypes
import hashlib
import json
import random
import re
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import escape

BUCKET = "bench"
PREFIX = "books/"
OTHER_PREFIX = "listings/"
NS = "http://s3.amazonaws.com/doc/2006-03-01/"
OWNER = "<Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID></Owner>"
BASE_EPOCH = 1735689600  # 2025-01-01T00:00:00Z
MAX_KEYS = 1000


def book_key(i: int) -> str:
    """Object ``i``'s key; keys sort (as bytes) in the order of ``i``."""
    return f"{PREFIX}{i // 10:07d}/image_{i % 10:02d}.webp"


_BOOK_KEY = re.compile(r"books/(\d{7})/image_(\d{2})\.webp\Z")


def book_index(key: str) -> int | None:
    """The ``i`` of a generated key, or None for any other key."""
    m = _BOOK_KEY.match(key)
    if m is None or int(m.group(2)) > 9:
        return None
    return int(m.group(1)) * 10 + int(m.group(2))


_MASK = 2**128 - 1
_VID_MUL, _VID_ADD = 0x9E3779B97F4A7C15F39CC0605CEDC835, 0x5851F42D4C957F2D1B873593
_ETAG_MUL, _ETAG_ADD = 0xC2B2AE3D27D4EB4F85EBCA77165667B1, 0x165667B19E3779F927D4EB2F


def base_version_id(i: int) -> str:
    return f"{(i * _VID_MUL + _VID_ADD) & _MASK:032x}"


def base_etag(i: int) -> str:
    return f"{(i * _ETAG_MUL + _ETAG_ADD) & _MASK:032x}"


def base_size(i: int) -> int:
    return 20_000 + (i * 7919) % 400_000


def base_last_modified(i: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(BASE_EPOCH + (i * 31) % 31_000_000))


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def http_date(iso: str) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))


# What a run of generated rows is rendered from (``Bucket.versions_page``):
# ``base_last_modified(i)`` is BASE_EPOCH + 31 * (i % 1,000,000) seconds, so
# within 359 days of 2025; a date table and a time-of-day table spell it
# without a ``gmtime``/``strftime`` per row (5 MB, built once).
_DATES = [time.strftime("%Y-%m-%dT", time.gmtime(BASE_EPOCH + day * 86_400)) for day in range(360)]
_TIMES = [f"{h:02d}:{m:02d}:{s:02d}.000Z" for h in range(24) for m in range(60) for s in range(60)]
_DIGITS = [str(d) for d in range(10)]
# One generated row (a latest version, the only version of its key) is these
# pieces with the holes (None) filled: the key's 7 digits, its last digit,
# the version id, the date, the time of day, the ETag, the size.
_ROW = [
    f"<Version><Key>{PREFIX}", None, "/image_0", None, ".webp</Key><VersionId>", None,
    "</VersionId><IsLatest>true</IsLatest><LastModified>", None, None,
    "</LastModified><ETag>&quot;", None, "&quot;</ETag><Size>", None,
    f"</Size>{OWNER}<StorageClass>STANDARD</StorageClass></Version>",
]


def generated_rows(a: int, b: int) -> list[str]:
    """The XML of generated objects ``a`` to ``b - 1`` as rows of a listing
    (each the latest and only version of its key), in pieces to join: one
    list comprehension per field and slice assignments, not a format per row.
    Byte for byte what ``versions_xml`` makes of ``_base_version(i)``."""
    n = b - a
    if n <= 0:
        return []
    width = len(_ROW)
    out: list[Any] = _ROW * n
    indices = range(a, b)
    q0 = a // 10
    first = a - q0 * 10
    books = [f"{q:07d}" for q in range(q0, (b - 1) // 10 + 1)]
    out[1::width] = [book for book in books for _ in _DIGITS][first : first + n]
    out[3::width] = (_DIGITS * len(books))[first : first + n]
    mask, mul, add = _MASK, _VID_MUL, _VID_ADD
    out[5::width] = [((i * mul + add) & mask).to_bytes(16, "big").hex() for i in indices]
    seconds = [(i % 1_000_000) * 31 for i in indices]
    dates, times = _DATES, _TIMES
    out[7::width] = [dates[s // 86_400] for s in seconds]
    out[8::width] = [times[s % 86_400] for s in seconds]
    mul, add = _ETAG_MUL, _ETAG_ADD
    out[10::width] = [((i * mul + add) & mask).to_bytes(16, "big").hex() for i in indices]
    out[12::width] = [str(20_000 + (i * 7919) % 400_000) for i in indices]
    return out


_ROW_WIDTH = len(_ROW)
_ROW_LATEST = 6  # the piece with <IsLatest>
_NOT_LATEST = _ROW[_ROW_LATEST].replace("true", "false")  # type: ignore[union-attr]


class _Page:
    """A ListObjectVersions page being filled: its rows' XML, the room left,
    its last row, and whether a row was left out (the page is truncated)."""

    def __init__(self, max_keys: int) -> None:
        self.parts: list[str] = []
        self.room = max_keys
        self.last: tuple[str, str] | int | None = None  # (key, version id), or a generated object
        self.more = False

    def row(self, xml: str, key: str, version_id: str) -> bool:
        """Add one row; False if the page was full (then it is truncated)."""
        if self.room == 0:
            self.more = True
            return False
        self.parts.append(xml)
        self.room -= 1
        self.last = key, version_id
        return True

    def generated(self, pieces: list[str], first: int, a: int, b: int) -> bool:
        """Add the rows of generated objects a to b - 1 from ``generated_rows(first, ...)``."""
        if a >= b:
            return True
        take = min(b - a, self.room)
        if take:
            self.parts += pieces[(a - first) * _ROW_WIDTH : (a - first + take) * _ROW_WIDTH]
            self.room -= take
            self.last = a + take - 1
        if take < b - a:
            self.more = True
            return False
        return True

    def next_marker(self) -> tuple[str, str] | None:
        """NextKeyMarker and NextVersionIdMarker: the last row's, if truncated."""
        if not self.more or self.last is None:
            return None
        if isinstance(self.last, int):
            return book_key(self.last), base_version_id(self.last)
        return self.last


@dataclass
class Version:
    """One version in the overlay (bodies only for what requests wrote)."""

    version_id: str
    is_marker: bool
    last_modified: str
    etag: str = ""
    size: int = 0
    body: bytes = b""
    content_type: str = "binary/octet-stream"


class _Keys:
    """The generated keys as a sequence, for bisect."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> str:
        return book_key(i)


class Bucket:
    """N generated objects plus an overlay of what requests changed."""

    def __init__(self, objects: int, other: int = 0) -> None:
        self.n = objects
        self.keys = _Keys(objects)
        self.removed: set[int] = set()  # generated versions removed by version id
        self.overlay: dict[str, list[Version]] = {}  # newest first
        self.extra: list[str] = []  # sorted keys that are not generated ones
        self.in_overlay: set[int] = set()  # generated objects with versions in the overlay
        self.counter = 0
        self.lock = threading.Lock()
        for j in range(other):
            key = f"{OTHER_PREFIX}{j:06d}/listing.json"
            self._push(key, Version(self._new_id(), False, base_last_modified(j), base_etag(10**9 + j), 2, b"{}"))

    # -- versions of one key ------------------------------------------------

    def _new_id(self) -> str:
        self.counter += 1
        return f"bm{self.counter:012d}" + hashlib.md5(str(self.counter).encode()).hexdigest()[:18]

    def _push(self, key: str, version: Version) -> None:
        if key not in self.overlay:
            self.overlay[key] = []
            i = book_index(key)
            if i is None or i >= self.n:
                bisect.insort(self.extra, key)
            else:
                self.in_overlay.add(i)
        self.overlay[key].insert(0, version)

    def _base(self, key: str) -> int | None:
        i = book_index(key)
        if i is None or i >= self.n or i in self.removed:
            return None
        return i

    def versions(self, key: str) -> list[Version]:
        """Every version of ``key``, newest first."""
        found = list(self.overlay.get(key, ()))
        i = self._base(key)
        if i is not None:
            found.append(self._base_version(i))
        return found

    @staticmethod
    def _base_version(i: int) -> Version:
        return Version(base_version_id(i), False, base_last_modified(i), base_etag(i), base_size(i))

    def current(self, key: str) -> Version | None:
        """The latest version of ``key`` if it is not a delete marker."""
        found = self.overlay.get(key)
        if found:
            return None if found[0].is_marker else found[0]
        i = self._base(key)
        return None if i is None else self._base_version(i)

    def put(self, key: str, body: bytes, content_type: str) -> Version:
        version = Version(self._new_id(), False, now_iso(), hashlib.md5(body).hexdigest(), len(body), body, content_type)
        self._push(key, version)
        return version

    def add_marker(self, key: str) -> Version:
        marker = Version(self._new_id(), True, now_iso())
        self._push(key, marker)
        return marker

    def remove_version(self, key: str, version_id: str) -> Version | None:
        """Remove exactly that version; what was removed (None: there was none)."""
        found = self.overlay.get(key, [])
        for n, version in enumerate(found):
            if version.version_id == version_id:
                del found[n]
                if not found:
                    del self.overlay[key]
                    i = book_index(key)
                    if i is not None:
                        self.in_overlay.discard(i)
                    k = bisect.bisect_left(self.extra, key)
                    if k < len(self.extra) and self.extra[k] == key:
                        del self.extra[k]
                return version
        i = self._base(key)
        if i is not None and base_version_id(i) == version_id:
            self.removed.add(i)
            return self._base_version(i)
        return None

    # -- listing ------------------------------------------------------------

    def keys_from(self, prefix: str, after: str | None, inclusive: bool) -> Iterator[str]:
        """Keys under ``prefix`` from ``after`` on (past it unless ``inclusive``), in byte order."""
        end = prefix + "\U0010ffff"
        lo = bisect.bisect_left(self.keys, prefix)
        hi = bisect.bisect_left(self.keys, end)
        x = bisect.bisect_left(self.extra, prefix)
        if after is not None and after >= prefix:
            pick = bisect.bisect_left if inclusive else bisect.bisect_right
            lo = max(lo, pick(self.keys, after))
            x = max(x, pick(self.extra, after))
        i = lo
        while True:
            base = book_key(i) if i < hi else None
            other = self.extra[x] if x < len(self.extra) else None
            if other is not None and not other.startswith(prefix):
                other = None
            if base is None and other is None:
                return
            if other is None or (base is not None and base.encode() < other.encode()):
                i += 1
                yield base  # type: ignore[misc]
            else:
                x += 1
                yield other

    def list_versions(
        self, prefix: str, key_marker: str, version_marker: str, max_keys: int
    ) -> tuple[list[tuple[str, Version, bool]], bool]:
        """Up to ``max_keys`` rows (key, version, is_latest) and whether more follow."""
        rows: list[tuple[str, Version, bool]] = []
        start = key_marker or None
        for key in self.keys_from(prefix, start, inclusive=bool(version_marker)):
            found = self.versions(key)
            skip = 0
            if version_marker and key == key_marker:
                ids = [v.version_id for v in found]
                skip = ids.index(version_marker) + 1 if version_marker in ids else len(found)
            for n in range(skip, len(found)):
                if len(rows) == max_keys:
                    return rows, True
                rows.append((key, found[n], n == 0))
        return rows, False

    def _runs(self, prefix: str, after: str | None, inclusive: bool) -> Iterator[tuple[int, int] | str]:
        """``keys_from`` in stretches: ``(i, j)`` for generated objects i to
        j - 1 (no other key between them), a string for any other key."""
        end = prefix + "\U0010ffff"
        lo = bisect.bisect_left(self.keys, prefix)
        hi = bisect.bisect_left(self.keys, end)
        x = bisect.bisect_left(self.extra, prefix)
        if after is not None and after >= prefix:
            pick = bisect.bisect_left if inclusive else bisect.bisect_right
            lo = max(lo, pick(self.keys, after))
            x = max(x, pick(self.extra, after))
        i = lo
        while True:
            other = self.extra[x] if x < len(self.extra) else None
            if other is not None and not other.startswith(prefix):
                other = None
            # str order is code point order, which is UTF-8 byte order; no
            # generated key below n is in ``extra``, so none equals ``other``.
            stop = hi if other is None else min(hi, max(i, bisect.bisect_left(self.keys, other)))
            if i < stop:
                yield i, stop
                i = stop
            if other is None:
                return
            x += 1
            yield other

    @staticmethod
    def _within(changed: set[int], a: int, b: int) -> list[int]:
        """The members of ``changed`` from a to b - 1, in order."""
        if len(changed) > b - a:
            return sorted(changed.intersection(range(a, b)))
        return sorted(i for i in changed if a <= i < b)

    def _key_rows(self, page: _Page, key: str, key_marker: str, version_marker: str, url: bool) -> bool:
        """``key``'s rows as ``list_versions`` makes them (after the version-id marker on its key)."""
        found = self.versions(key)
        skip = 0
        if version_marker and key == key_marker:
            ids = [v.version_id for v in found]
            skip = ids.index(version_marker) + 1 if version_marker in ids else len(found)
        for n in range(skip, len(found)):
            if not page.row(version_row(key, found[n], n == 0, url), key, found[n].version_id):
                return False
        return True

    def _block(self, page: _Page, a: int, b: int) -> bool:
        """Rows of generated objects a to b - 1, none removed: each one's
        versions from the overlay, then its generated version."""
        pieces = generated_rows(a, b)
        at = a
        for t in self._within(self.in_overlay, a, b):
            if not page.generated(pieces, a, at, t):
                return False
            key = book_key(t)
            for n, v in enumerate(self.overlay[key]):
                if not page.row(version_row(key, v, n == 0, None), key, v.version_id):
                    return False
            pieces[(t - a) * _ROW_WIDTH + _ROW_LATEST] = _NOT_LATEST
            at = t
        return page.generated(pieces, a, at, b)

    def versions_page(self, prefix: str, key_marker: str, version_marker: str, max_keys: int, url: bool) -> bytes:
        """The ListObjectVersions answer: ``versions_xml`` of ``list_versions``,
        byte for byte, with generated objects rendered a thousand at a time
        by ``generated_rows`` (``check_pages.py`` compares the two)."""
        if max_keys < 0:
            rows, truncated = self.list_versions(prefix, key_marker, version_marker, max_keys)
            return versions_xml(BUCKET, prefix, key_marker, version_marker, max_keys, url, rows, truncated)
        page = _Page(max_keys)
        marker_i = book_index(key_marker) if version_marker else None
        for stretch in self._runs(prefix, key_marker or None, inclusive=bool(version_marker)):
            if isinstance(stretch, str):
                if not self._key_rows(page, stretch, key_marker, version_marker, url):
                    break
                continue
            i, j = stretch
            if i == marker_i:  # the marker's own key first: its versions after the marker
                if not self._key_rows(page, book_key(i), key_marker, version_marker, url):
                    break
                i += 1
            while i < j and not page.more:
                # Every object that is not removed has a row: the page ends
                # by i + room + 1 (and before, when the overlay adds rows).
                end = min(j, i + page.room + 1)
                removed = self._within(self.removed, i, end)
                if removed:
                    end = removed[0]
                if i < end and not self._block(page, i, end):
                    break
                if removed:  # its versions in the overlay only
                    if not self._key_rows(page, book_key(end), key_marker, version_marker, url):
                        break
                    end += 1
                i = end
            if page.more:
                break
        head = versions_head(BUCKET, prefix, key_marker, version_marker, max_keys, url, page.next_marker(), page.more)
        return "".join([head, *page.parts, "</ListVersionsResult>"]).encode("utf-8")

    def list_current(self, prefix: str, after: str | None, max_keys: int) -> tuple[list[tuple[str, Version]], bool]:
        rows: list[tuple[str, Version]] = []
        for key in self.keys_from(prefix, after, inclusive=False):
            version = self.current(key)
            if version is None:
                continue
            if len(rows) == max_keys:
                return rows, True
            rows.append((key, version))
        return rows, False

    # -- summary ------------------------------------------------------------

    def state(self, detail: bool, prefix: str = "") -> dict[str, Any]:
        """Counts and a digest of the overlay under ``prefix`` (generated
        objects untouched: an empty overlay and nothing removed)."""
        digest = hashlib.sha256()
        latest_markers = 0
        markers = 0
        under = sorted(k for k in self.overlay if k.startswith(prefix))
        for key in under:
            for v in self.overlay[key]:
                digest.update(f"{key}\0{v.version_id}\0{v.is_marker}\0{v.etag}\n".encode())
            markers += sum(v.is_marker for v in self.overlay[key])
            latest_markers += self.overlay[key][0].is_marker
        digest.update(repr(sorted(self.removed)).encode())
        out: dict[str, Any] = {
            "objects": self.n,
            "prefix": prefix,
            "overlay_keys": len(under),
            "overlay_versions": sum(len(self.overlay[k]) for k in under),
            "delete_markers": markers,
            "keys_whose_latest_is_a_marker": latest_markers,
            "removed_generated_versions": len(self.removed),
            "digest": digest.hexdigest(),
        }
        if detail:
            out["overlay"] = {
                k: [[v.version_id, v.is_marker, v.etag] for v in self.overlay[k]] for k in under
            }
            out["removed"] = sorted(self.removed)
        return out


# --------------------------------------------------------------------------
# XML
# --------------------------------------------------------------------------


def _enc(value: str, url: bool) -> str:
    return quote(value, safe="/~") if url else escape(value)


def versions_head(
    bucket: str, prefix: str, key_marker: str, version_marker: str, max_keys: int, url: bool,
    last: tuple[str, str] | None, truncated: bool,
) -> str:
    """A ListVersionsResult up to its rows; ``last``: the page's last (key, version id) when truncated."""
    parts = [
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListVersionsResult xmlns="{NS}">',
        f"<Name>{bucket}</Name><Prefix>{_enc(prefix, url)}</Prefix>",
        f"<KeyMarker>{_enc(key_marker, url)}</KeyMarker><VersionIdMarker>{escape(version_marker)}</VersionIdMarker>",
    ]
    if last is not None:
        parts.append(f"<NextKeyMarker>{_enc(last[0], url)}</NextKeyMarker><NextVersionIdMarker>{last[1]}</NextVersionIdMarker>")
    parts.append(f"<MaxKeys>{max_keys}</MaxKeys>")
    if url:
        parts.append("<EncodingType>url</EncodingType>")
    parts.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
    return "".join(parts)


def version_row(key: str, v: Version, latest: bool, url: bool | None) -> str:
    """One row; a generated key reads the same in either encoding (only
    letters, digits and ``/_.``), so ``_block`` passes it with url=None."""
    k = key if url is None else _enc(key, url)
    if v.is_marker:
        return (
            f"<DeleteMarker><Key>{k}</Key><VersionId>{v.version_id}</VersionId>"
            f"<IsLatest>{'true' if latest else 'false'}</IsLatest>"
            f"<LastModified>{v.last_modified}</LastModified>{OWNER}</DeleteMarker>"
        )
    return (
        f"<Version><Key>{k}</Key><VersionId>{v.version_id}</VersionId>"
        f"<IsLatest>{'true' if latest else 'false'}</IsLatest>"
        f"<LastModified>{v.last_modified}</LastModified><ETag>&quot;{v.etag}&quot;</ETag>"
        f"<Size>{v.size}</Size>{OWNER}<StorageClass>STANDARD</StorageClass></Version>"
    )


def versions_xml(
    bucket: str, prefix: str, key_marker: str, version_marker: str, max_keys: int, url: bool,
    rows: list[tuple[str, Version, bool]], truncated: bool,
) -> bytes:
    """The answer from rows one by one (the reference ``Bucket.versions_page`` must equal)."""
    last = (rows[-1][0], rows[-1][1].version_id) if truncated and rows else None
    parts = [versions_head(bucket, prefix, key_marker, version_marker, max_keys, url, last, truncated)]
    parts += [version_row(key, v, latest, url) for key, v, latest in rows]
    parts.append("</ListVersionsResult>")
    return "".join(parts).encode("utf-8")


def error_xml(code: str, message: str, **extra: str) -> bytes:
    more = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in extra.items())
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{escape(message)}</Message>'
        f"{more}<RequestId>BENCH</RequestId><HostId>bench</HostId></Error>"
    ).encode("utf-8")


# --------------------------------------------------------------------------
# The HTTP server
# --------------------------------------------------------------------------


class S3Error(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], bucket: Bucket, latency_ms: float, slowdown: float, seed: int) -> None:
        super().__init__(address, Handler)
        self.bucket = bucket
        self.latency = latency_ms / 1000
        self.slowdown = slowdown
        self.random = random.Random(seed)
        self.counts: collections.Counter[str] = collections.Counter()
        self.throttled: collections.Counter[str] = collections.Counter()
        self.stats_lock = threading.Lock()
        self.log_unknown = True


def _decode_chunked(raw: bytes) -> bytes:
    """A body sent with Transfer-Encoding: chunked or aws-chunked (chunk
    extensions such as ``;chunk-signature=`` and trailers dropped)."""
    out = bytearray()
    pos = 0
    while True:
        eol = raw.index(b"\r\n", pos)
        size = int(raw[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            return bytes(out)
        out += raw[pos : pos + size]
        pos += size + 2


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: without it a small answer's last segment waits for the
    # client's delayed ACK (about 40 ms on Linux), which S3 does not make
    # anyone wait; headers and body also go out in one write (``_send``).
    disable_nagle_algorithm = True
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    # -- plumbing -----------------------------------------------------------

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = bytearray()
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                raw += self.rfile.read(size)
                self.rfile.readline()
            body = bytes(raw)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "aws-chunked" in self.headers.get("Content-Encoding", ""):
            body = _decode_chunked(body)
        return body

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body and "Content-Type" not in (headers or {}):
            self.send_header("Content-Type", "application/xml")
        self.send_header("x-amz-request-id", "BENCH")
        self.send_header("Content-Length", str(len(body)))
        # end_headers() without its flush, then headers and body in one write.
        buffer: list[bytes] = self._headers_buffer  # type: ignore[attr-defined]  # send_header's, see end_headers
        buffer.append(b"\r\n")
        if self.command != "HEAD":
            buffer.append(body)
        self.flush_headers()

    def _control(self, path: str, query: dict[str, list[str]]) -> None:
        srv = self.server
        if path == "/_bench/stats":
            with srv.stats_lock:
                body = {
                    "requests": dict(srv.counts),
                    "slowdown": dict(srv.throttled),
                    "cpu_seconds": time.process_time(),
                    "latency_ms": srv.latency * 1000,
                    "slowdown_fraction": srv.slowdown,
                }
        elif path == "/_bench/reset":
            with srv.stats_lock:
                srv.counts.clear()
                srv.throttled.clear()
            body = {"ok": True}
        elif path == "/_bench/state":
            with srv.bucket.lock:
                body = srv.bucket.state(bool(query.get("detail")), query.get("prefix", [""])[0])
        elif path == "/_bench/config":
            if "latency_ms" in query:
                srv.latency = float(query["latency_ms"][0]) / 1000
            if "slowdown" in query:
                srv.slowdown = float(query["slowdown"][0])
            body = {"latency_ms": srv.latency * 1000, "slowdown_fraction": srv.slowdown}
        else:
            self._send(404, b"{}")
            return
        self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        path = unquote(url.path)
        if path.startswith("/_bench/"):
            self._body()
            self._control(path, query)
            return
        body = self._body()
        bucket_name, _, key = path.lstrip("/").partition("/")
        operation = self._operation(key, query)
        srv = self.server
        throttle = False
        with srv.stats_lock:
            srv.counts[operation] += 1
            if srv.slowdown and srv.random.random() < srv.slowdown:
                srv.throttled[operation] += 1
                throttle = True
        if srv.latency:
            time.sleep(srv.latency)
        try:
            if throttle:
                raise S3Error(503, "SlowDown", "Please reduce your request rate.")
            if bucket_name != BUCKET:
                raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist", BucketName=bucket_name)
            handler = getattr(self, "op_" + operation, None)
            if handler is None:
                if srv.log_unknown:
                    print(f"s3_endpoint: not implemented: {self.command} {self.path}", file=sys.stderr, flush=True)
                raise S3Error(501, "NotImplemented", f"{operation} is not implemented by the bench endpoint")
            handler(key, query, body)
        except S3Error as exc:
            self._send(exc.status, b"" if self.command == "HEAD" else error_xml(exc.code, exc.message, **exc.extra))

    def _operation(self, key: str, query: dict[str, list[str]]) -> str:
        m = self.command
        if not key:
            if m == "GET" and "versions" in query:
                return "ListObjectVersions"
            if m == "GET" and query.get("list-type") == ["2"]:
                return "ListObjectsV2"
            if m == "GET" and "versioning" in query:
                return "GetBucketVersioning"
            if m == "GET" and "lifecycle" in query:
                return "GetBucketLifecycleConfiguration"
            if m == "POST" and "delete" in query:
                return "DeleteObjects"
            if m == "HEAD" and not query:
                return "HeadBucket"
            return f"Bucket{m}?{'&'.join(sorted(query))}"
        if query.keys() - {"versionId", "x-id"}:
            return f"Object{m}?{'&'.join(sorted(query))}"
        return {"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(
            m, f"Object{m}"
        )

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    # -- bucket operations ---------------------------------------------------

    def op_HeadBucket(self, key: str, query: dict[str, list[str]], body: bytes) -> None:
        self._send(200)

    def op_GetBucketVersioning(self, key: str, query: dict[str, list[str]], body: bytes) -> None:
        self._send(
            200,
            f'<?xml version="1.0" encoding="UTF-8"?>\n<VersioningConfiguration xmlns="{NS}">'
            "<Status>Enabled</Status></VersioningConfiguration>".encode(),
        )

    def op_GetBucketLifecycleConfiguration(self, key: str, query: dict[str, list[str]], body: bytes) -> None:
        raise S3Error(404, "NoSuchLifecycleConfiguration", "The lifecycle configuration does not exist", BucketName=BUCKET)

    def op_ListObjectVersions(self, key: str, query: dict[str, list[str]], body: bytes) -> None:
        prefix = query.get("prefix", [""])[0]
        key_marker = query.get("key-marker", [""])[0]
        version_marker = query.get("version-id-marker", [""])[0]
        if version_marker and not key_marker:
            raise S3Error(400, "InvalidArgument", "A version-id marker cannot be specified without a key marker.")
        max_keys = min(MAX_KEYS, int(query.get("max-keys", [str(MAX_KEYS)])[0]))
        url = query.get("encoding-type", [""])[0] == "url"
        with self.server.bucket.lock:
            answer = self.server.bucket.versions_page(prefix, key_marker, version_marker, max_keys, url)
        self._send(200, answer)

    def op_ListObjectsV2(self, key: str, query: dict[str, list[str]], body: bytes) -> None:
        prefix = query.get("prefix", [""])[0]
        token = query.get("continuation-token", [""])[0]
        start_after = query.get("start-after", [""])[0]
        max_keys = min(MAX_KEYS, int(query.get("max-keys", [str(MAX_KEYS)])[0]))
        url = query.get("encoding-type", [""])[0] == "url"
        after = token or start_after or None
        with self.server.bucket.lock:
            rows, truncated = self.server.bucket.list_current(prefix, after, max_keys)
        parts = [
            f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{NS}">',
            f"<Name>{BUCKET}</Name><Prefix>{_enc(prefix, url)}</Prefix><KeyCount>{len(rows)}</KeyCount>",
            f"<MaxKeys>{max_keys}</MaxKeys><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
        ]
        if url:
            parts.append("<EncodingType>url</EncodingType>")
        if token:
            parts.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
        if start_after:
            parts.append(f"<StartAfter>{_enc(start_after, url)}</StartAfter>")
        if truncated:
            parts.append(f"<NextContinuationToken>{escape(rows[-1][0])}</NextContinuationToken>")
        for k, v in rows:
            parts.append(
                f"<Contents><Key>{_enc(k, url)}</Key><LastModified>{v.last_modified}</LastModified>"
                f"<ETag>&quot;{v.etag}&quot;</ETag><Size>{v.size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
            )
        parts.append("</ListBucketResult>")
        self._send(200, "".join(parts).encode("utf-8"))

    def op_DeleteObjects(self, key: str, query: dict[str, list[str]], body: bytes) -> None:
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            raise S3Error(400, "MalformedXML", "The XML you provided was not well-formed") from None
        ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        quiet = (root.findtext(f"{ns}Quiet") or "false").strip().lower() == "true"
        entries = root.findall(f"{ns}Object")
        if not entries or len(entries) > MAX_KEYS:
            raise S3Error(400, "MalformedXML", "The XML you provided was not well-formed or did not validate")
        out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult xmlns="{NS}">']
        bucket = self.server.bucket
        with bucket.lock:
            for entry in entries:
                k = entry.findtext(f"{ns}Key") or ""
                vid = entry.findtext(f"{ns}VersionId")
                etag = entry.findtext(f"{ns}ETag")
                ek = escape(k)
                if vid:
                    removed = bucket.remove_version(k, vid)
                    if not quiet:
                        marker = (
                            f"<DeleteMarker>true</DeleteMarker><DeleteMarkerVersionId>{vid}</DeleteMarkerVersionId>"
                            if removed is not None and removed.is_marker
                            else ""
                        )
                        out.append(f"<Deleted><Key>{ek}</Key><VersionId>{escape(vid)}</VersionId>{marker}</Deleted>")
                    continue
                if etag:
                    current = bucket.current(k)
                    if current is None or current.etag != etag.strip('"'):
                        out.append(
                            f"<Error><Key>{ek}</Key><Code>PreconditionFailed</Code>"
                            "<Message>At least one of the pre-conditions you specified did not hold</Message></Error>"
                        )
                        continue
                added = bucket.add_marker(k)
                if not quiet:
                    out.append(
                        f"<Deleted><Key>{ek}</Key><DeleteMarker>true</DeleteMarker>"
                        f"<DeleteMarkerVersionId>{added.version_id}</DeleteMarkerVersionId></Deleted>"
                    )
        out.append("</DeleteResult>")
        self._send(200, "".join(out).encode("utf-8"))

    # -- object operations ---------------------------------------------------

    def _version(self, key: str, query: dict[str, list[str]]) -> Version:
        bucket = self.server.bucket
        vid = query.get("versionId", [""])[0]
        if vid:
            for v in bucket.versions(key):
                if v.version_id == vid:
                    if v.is_marker:
                        raise S3Error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
                    return v
            raise S3Error(404, "NoSuchVersion", "The specified version does not exist.", Key=key, VersionId=vid)
        current = bucket.current(key)
        if current is None:
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.", Key=key)
        return current

    def op_PutObject(self, key: str, query: dict[str, list[str]], body: bytes) -> None:
        bucket = self.server.bucket
        with bucket.lock:
            current = bucket.current(key)
            if self.headers.get("If-None-Match") == "*" and current is not None:
                raise S3Error(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold", Condition="If-None-Match")
            if_match = self.headers.get("If-Match")
            if if_match is not None and (current is None or current.etag != if_match.strip('"')):
                raise S3Error(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold", Condition="If-Match")
            version = bucket.put(key, body, self.headers.get("Content-Type", "binary/octet-stream"))
        self._send(200, b"", {"ETag": f'"{version.etag}"', "x-amz-version-id": version.version_id})

    def op_GetObject(self, key: str, query: dict[str, list[str]], body: bytes) -> None:
        with self.server.bucket.lock:
            v = self._version(key, query)
        data = v.body if v.body or v.size == 0 else b"\0" * v.size
        headers = {
            "ETag": f'"{v.etag}"',
            "x-amz-version-id": v.version_id,
            "Last-Modified": http_date(v.last_modified),
            "Content-Type": v.content_type,
            "Accept-Ranges": "bytes",
        }
        rng = self.headers.get("Range")
        if rng and self.command == "GET":
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if m is None or int(m.group(1)) >= len(data):
                raise S3Error(416, "InvalidRange", "The requested range is not satisfiable")
            first = int(m.group(1))
            last = min(len(data) - 1, int(m.group(2)) if m.group(2) else len(data) - 1)
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            self._send(206, data[first : last + 1], headers)
            return
        if self.command == "HEAD":
            self.send_response(200)
            for k, val in headers.items():
                self.send_header(k, val)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            return
        self._send(200, data, headers)

    op_HeadObject = op_GetObject

    def op_DeleteObject(self, key: str, query: dict[str, list[str]], body: bytes) -> None:
        bucket = self.server.bucket
        vid = query.get("versionId", [""])[0]
        with bucket.lock:
            if vid:
                removed = bucket.remove_version(key, vid)
                headers = {"x-amz-version-id": vid}
                if removed is not None and removed.is_marker:
                    headers["x-amz-delete-marker"] = "true"
                self._send(204, b"", headers)
                return
            if_match = self.headers.get("If-Match")
            if if_match is not None:
                current = bucket.current(key)
                if current is None:
                    raise S3Error(404, "NoSuchKey", "The specified key does not exist.", Key=key)
                if current.etag != if_match.strip('"'):
                    raise S3Error(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold", Condition="If-Match")
            marker = bucket.add_marker(key)
        self._send(204, b"", {"x-amz-version-id": marker.version_id, "x-amz-delete-marker": "true"})


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed memory instead of returning it to the
    kernel: an answer of 1,000 rows is about 400 KB twice (the str and its
    bytes), which malloc would otherwise map afresh for every request and
    fault in page by page, about 0.3 ms of CPU a page. Nothing elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD: blocks below 64 MB from the heap
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: keep up to 256 MB of free heap
    except (OSError, AttributeError):
        pass


def make_server(
    objects: int, other: int = 0, port: int = 0, latency_ms: float = 20.0, slowdown: float = 0.0, seed: int = 1
) -> Server:
    keep_freed_memory()
    return Server(("127.0.0.1", port), Bucket(objects, other), latency_ms, slowdown, seed)


def serve_in_child(conn: Any, objects: int, other: int, latency_ms: float, slowdown: float, seed: int) -> None:
    """multiprocessing target: start, send the endpoint URL, serve until killed."""
    server = make_server(objects, other, 0, latency_ms, slowdown, seed)
    conn.send(f"http://127.0.0.1:{server.server_address[1]}")
    server.serve_forever(poll_interval=0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000, help="objects under books/ (default 10000)")
    parser.add_argument("--other", type=int, default=0, help="objects under listings/, outside the prefix")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="sleep per request (default 20)")
    parser.add_argument("--slowdown", type=float, default=0.0, help="fraction of requests answered 503 SlowDown")
    parser.add_argument("--seed", type=int, default=1, help="seed of the SlowDown choice")
    args = parser.parse_args(argv)
    server = make_server(args.objects, args.other, args.port, args.latency_ms, args.slowdown, args.seed)
    print(f"s3_endpoint: bucket {BUCKET!r}, {args.objects:,} objects under {PREFIX} at http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
