#!/usr/bin/env python3
"""Check the bench endpoint's fast ListObjectVersions pages against its reference, byte for byte.

    python benchmarks/check_pages.py             # about 30 s
    python benchmarks/check_pages.py --quick     # fewer page sizes, a few seconds

``s3_endpoint.Bucket.versions_page`` renders runs of generated objects a
thousand rows at a time (``generated_rows``); ``list_versions`` and
``versions_xml`` build the same answer one ``Version`` at a time, the plain
reading of S3's rules that ``check_endpoint.py`` compares with moto. This
walks whole listings with both and compares every page's bytes, in buckets
whose overlay is empty; holds a delete marker on every tenth object (as after
an apply); and holds everything else the overlay can: keys between generated
ones, keys needing URL encoding, keys past the last object, several versions
of a key, generated versions removed by version id (with and without
versions above them), other prefixes and the lock's key. Per bucket: prefixes
that cut the generated keys anywhere, ``encoding-type=url`` on and off, page
sizes from 0 to 1,000, and pages started at key markers and version-id
markers of every kind (mid-key, a key's last version, an unknown id, a
marker before the prefix). Then a million objects with 100,000 markers,
pages at random places; and every object's LastModified from the tables
against ``time.strftime``.

Exit 0 only if every page is the same.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import s3_endpoint as E  # noqa: E402


def reference(bucket: E.Bucket, prefix: str, key_marker: str, version_marker: str, max_keys: int, url: bool) -> tuple[bytes, tuple[str, str] | None]:
    """The page built one Version at a time, and its next (key, version id) markers."""
    rows, truncated = bucket.list_versions(prefix, key_marker, version_marker, max_keys)
    body = E.versions_xml(E.BUCKET, prefix, key_marker, version_marker, max_keys, url, rows, truncated)
    return body, (rows[-1][0], rows[-1][1].version_id) if truncated and rows else None


class Checker:
    def __init__(self) -> None:
        self.pages = 0
        self.rows = 0
        self.failures: list[str] = []

    def page(self, bucket: E.Bucket, name: str, prefix: str, key_marker: str, version_marker: str, max_keys: int, url: bool) -> tuple[str, str] | None:
        want, following = reference(bucket, prefix, key_marker, version_marker, max_keys, url)
        got = bucket.versions_page(prefix, key_marker, version_marker, max_keys, url)
        self.pages += 1
        self.rows += want.count(b"<Key>")
        if got != want:
            at = next((n for n, (x, y) in enumerate(zip(got, want)) if x != y), min(len(got), len(want)))
            self.failures.append(
                f"{name}: prefix={prefix!r} key-marker={key_marker!r} version-id-marker={version_marker!r} "
                f"max-keys={max_keys} url={url}: differs at byte {at}: fast {got[max(0, at - 60) : at + 60]!r} "
                f"reference {want[max(0, at - 60) : at + 60]!r}"
            )
        return following

    def walk(self, bucket: E.Bucket, name: str, prefix: str, max_keys: int, url: bool, key_marker: str = "", version_marker: str = "") -> None:
        """Every page of a listing, from the given markers on."""
        while True:
            following = self.page(bucket, name, prefix, key_marker, version_marker, max_keys, url)
            if following is None or max_keys == 0 or len(self.failures) > 20:
                return
            key_marker, version_marker = following


def loaded(objects: int, state: str) -> E.Bucket:
    """A bucket of ``objects`` generated objects with an overlay: ``empty``, ``markers`` or ``mixed``."""
    bucket = E.Bucket(objects, other=5)
    if state in ("markers", "mixed"):
        for i in range(0, objects, 10):
            bucket.add_marker(E.book_key(i))
    if state == "mixed":
        rng = random.Random(7)
        for key in [
            ".bmxgc/locks/books.lock",
            "books/",
            "books/0000000/",
            "books/0000012/image_03.webp.bak",
            "books/0000012/image_3.webp",
            "books/0000012/image_10.webp",
            "books/0000012/zz",
            "books/0000020/a b&c<d>.webp",
            "books/0000020/\u00e9t\u00e9.webp",
            "books/0000020/~tilde+plus%.webp",
            f"books/{objects // 10:07d}/image_00.webp",  # the first key past the generated ones
            "books/9999999/image_09.webp",
            "books0",
            "booksz/x",
            "zzz",
        ]:
            bucket.put(key, b"x", "text/plain")
        for i in rng.sample(range(objects), 40):  # several versions: object, marker, object
            key = E.book_key(i)
            bucket.put(key, b"new", "text/plain")
            bucket.add_marker(key)
            bucket.put(key, b"newer", "text/plain")
        for i in rng.sample(range(objects), 60):  # generated versions removed by version id
            bucket.remove_version(E.book_key(i), E.base_version_id(i))
        for i in range(200, 260):  # a run of removed ones
            bucket.remove_version(E.book_key(i), E.base_version_id(i))
        for i in rng.sample(range(0, objects, 10), 30):  # markers removed again (as undo does)
            key = E.book_key(i)
            versions = bucket.versions(key)
            if versions and versions[0].is_marker:
                bucket.remove_version(key, versions[0].version_id)
    return bucket


def markers_in(bucket: E.Bucket, rng: random.Random, count: int) -> list[tuple[str, str]]:
    """(key-marker, version-id-marker) pairs of every kind, ``count`` of them."""
    keys = sorted(bucket.overlay) + [E.book_key(i) for i in rng.sample(range(bucket.n), min(bucket.n, count))]
    out: list[tuple[str, str]] = [("", ""), ("a", ""), ("books/", ""), ("books/0000012/image_03.webp", ""), ("zzzz", "")]
    for key in rng.sample(keys, min(len(keys), count)):
        versions = bucket.versions(key)
        out.append((key, ""))
        out.append((key, "no-such-version"))
        for v in versions:
            out.append((key, v.version_id))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=3_000)
    parser.add_argument("--quick", action="store_true", help="page sizes 1,000 and 7 only")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    check = Checker()
    sizes = (1000, 7) if args.quick else (1000, 250, 7, 3, 1, 0)
    n = args.objects
    prefixes = ["books/", "", "books/0000", "books/00001", f"books/{n // 20:07d}/", f"books/{n // 20:07d}/image_0",
                "books/0000012/image_", "books/0000020/", "listings/", "nothing/", "b"]
    for state in ("empty", "markers", "mixed"):
        bucket = loaded(n, state)
        rng = random.Random(state)
        for url in (False, True):
            for prefix in prefixes:
                for size in sizes:
                    check.walk(bucket, state, prefix, size, url)
            for key_marker, version_marker in markers_in(bucket, rng, 40 if args.quick else 150):
                for prefix in ("books/", "", "books/0000012/"):
                    for size in (1000, 7, 1):
                        check.page(bucket, state, prefix, key_marker, version_marker, size, url)
        print(f"{state:8} overlay: {check.pages:,} pages so far, {len(check.failures)} different")

    # A million objects, a marker on every tenth: pages at random places.
    big = E.Bucket(1_000_000)
    for i in range(0, 1_000_000, 10):
        big.add_marker(E.book_key(i))
    rng = random.Random(1)
    for _ in range(20 if args.quick else 100):
        i = rng.randrange(1_000_000)
        key = E.book_key(i)
        versions = big.versions(key)
        for key_marker, version_marker in [(key, ""), (key, versions[0].version_id), (key, versions[-1].version_id)]:
            following = check.page(big, "1M+100k markers", "books/", key_marker, version_marker, 1000, rng.random() < 0.5)
            if following is not None:
                check.page(big, "1M+100k markers", "books/", *following, 1000, False)
    print(f"1M objects, 100k markers: {check.pages:,} pages so far, {len(check.failures)} different")

    # Every object's LastModified (it depends on i % 1,000,000).
    wrong = [i for i in range(1_000_000) if E._DATES[(i * 31) // 86_400] + E._TIMES[(i * 31) % 86_400] != E.base_last_modified(i)]  # noqa: SLF001
    if wrong:
        check.failures.append(f"LastModified tables differ from time.strftime for {len(wrong)} objects, first {wrong[0]}")

    for failure in check.failures[:10]:
        print("DIFFERENT", failure)
    print(
        f"\n{check.pages:,} pages ({check.rows:,} rows) compared in {time.perf_counter() - started:.0f} s: "
        + ("all the same bytes" if not check.failures else f"{len(check.failures)} DIFFERENT")
    )
    return 0 if not check.failures else 1


if __name__ == "__main__":
    sys.exit(main())
