"""The referenced keys held as digests: a fraction of their strings' memory,
a collision can only keep an object, the stats stay exact, and near misses
read the keys again only when some referenced key was not found."""

from __future__ import annotations

import gc
import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

from bmxgc.config import ReferenceSource, SafetySettings
from bmxgc.gates import check_plan_figures
from bmxgc.model import KeySet, References, SourceResult
from bmxgc.planner import ScanContext, build_plan
from bmxgc.references import read_references
from support import NOW, version

MIB = 1024 * 1024


def _sqlite(path: Path, tables: dict[str, list[str]]) -> str:
    with sqlite3.connect(path) as conn:
        for name, values in tables.items():
            conn.execute(f"CREATE TABLE {name} (s3_key TEXT)")
            conn.executemany(f"INSERT INTO {name} VALUES (?)", ((v,) for v in values))
    conn.close()
    return f"sqlite:///{path}"


def _source(table: str, keys: list[str] | None = None) -> ReferenceSource:
    return ReferenceSource(name=table, query=f"SELECT s3_key FROM {table}", keys=keys or ["{value}"])


def _plan(listing: list[Any], references: References, sources: list[ReferenceSource], prefix: str = "books/") -> Any:
    return build_plan(
        listing,
        references,
        sources,
        SafetySettings(min_age="0s"),
        ScanContext(bucket="bkt", prefix=prefix, bucket_versioning="Enabled", database="sqlite:///x"),
        NOW,
    )


def test_references_of_200000_keys_are_held_in_under_8_mib(tmp_path: Path) -> None:
    # As strings in a set they take about 110 bytes each (22 MiB here); as digests, about 20.
    keys = [f"{i // 10:07d}/image_{i % 10:02d}.webp" for i in range(200_000)]
    url = _sqlite(tmp_path / "app.db", {"images": keys})
    del keys
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        references = read_references(url, [_source("images", ["books/{value}"])], prefix="books/")
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(references.keys) == 200_000
    assert "books/0012345/image_07.webp" in references.keys and "books/0012345/image_10.webp" not in references.keys
    assert held < 8 * MIB, f"{held / MIB:.1f} MiB held for 200,000 referenced keys"


def _colliding(first_only: bool) -> References:
    """References of books/a alone, in a KeySet whose first digest is the same
    for every key (and, unless ``first_only``, the second one too)."""
    keys = KeySet(digests=(lambda key: 7, hash if first_only else (lambda key: 11)))
    keys.add("books/a", 0, True)
    return References(sources=[SourceResult("images", rows=1)], key_set=keys.freeze(), prefix="books/")


def test_a_digest_collision_keeps_the_object_and_the_figures_stay_consistent() -> None:
    listing = [version(k) for k in ("books/a", "books/b", "books/c")]
    plan = _plan(listing, _colliding(first_only=False), [_source("images")])
    assert plan.orphans == []  # books/b and books/c collide with books/a: kept, never deleted
    s = plan.stats
    assert (s.referenced_keys, s.referenced_found, s.dangling_references, s.referenced_outside_prefix) == (1, 1, 0, 0)
    check_plan_figures(plan)  # found never exceeds referenced_keys, nothing negative


def test_keys_equal_in_one_digest_are_still_told_apart_by_the_other() -> None:
    listing = [version(k) for k in ("books/a", "books/b", "books/c")]
    plan = _plan(listing, _colliding(first_only=True), [_source("images")])
    assert [o.key for o in plan.orphans] == ["books/b", "books/c"]
    assert (plan.stats.referenced_keys, plan.stats.referenced_found) == (1, 1)


def test_stats_count_distinct_keys_across_rows_and_sources(tmp_path: Path) -> None:
    url = _sqlite(
        tmp_path / "app.db",
        {
            # books/1 twice in a table and once in the other; books/9 dangles; listings/x is outside.
            "images": ["1", "1", "2", "9"],
            "covers": ["books/1", "listings/x", "books/3"],
        },
    )
    sources = [_source("images", ["books/{value}"]), _source("covers")]
    references = read_references(url, sources, prefix="books/")
    listing = [version(k) for k in ("books/1", "books/2", "books/3", "books/4", "books/5")]
    listing.append(version("books/1", latest=False))
    plan = _plan(listing, references, sources)
    s = plan.stats
    assert (s.referenced_keys, s.referenced_found, s.dangling_references, s.referenced_outside_prefix) == (5, 3, 1, 1)
    assert [o.key for o in plan.orphans] == ["books/4", "books/5"]
    # The same figures when the prefix is only known to the planner (a pass over the keys).
    unflagged = read_references(url, sources)
    assert _plan(listing, unflagged, sources).stats == s


def test_near_misses_read_the_keys_again_only_when_some_reference_was_not_found(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    url = _sqlite(path, {"images": ["books/a.webp", " books/b.webp", "/books/c.webp", "BOOKS/D.webp"]})
    sources = [_source("images")]
    references = read_references(url, sources, prefix="books/")
    listing = [version(k) for k in ("books/a.webp", "books/b.webp", "books/c.webp", "books/d.webp", "books/e.webp")]
    plan = _plan(listing, references, sources)
    assert [(m.key, m.shape, m.reference) for m in plan.near_misses or []] == [
        ("books/b.webp", "padding", " books/b.webp"),
        ("books/c.webp", "leading_slash", "/books/c.webp"),
        ("books/d.webp", "case", "BOOKS/D.webp"),
    ]
    # Every referenced key exists: no near miss is possible, and the database is not read again.
    url = _sqlite(tmp_path / "all.db", {"images": ["books/a.webp", "books/b.webp"]})
    references = read_references(url, sources, prefix="books/")
    (tmp_path / "all.db").unlink()
    plan = _plan(listing, references, sources)
    assert plan.near_misses is None and [o.key for o in plan.orphans] == [
        "books/c.webp",
        "books/d.webp",
        "books/e.webp",
    ]


def test_digests_at_the_edges_of_buckets_and_slices_give_what_a_set_of_strings_gives() -> None:
    """The KeySet's buckets (the first digest's top byte) and slices (its next
    byte) hold every key, whatever its digest: the extremes of 64 bits, each
    side of a slice boundary, and first digests shared by several keys. The
    plan over three pages of rows is the plan a plain set of keys gives."""
    import random

    rng = random.Random(4)
    edges = [-(2**63), 2**63 - 1, 0, -1, 1, 2**56, -(2**56), 2**56 - 1, -(2**56) - 1]
    edges += [k * 2**48 + d for k in range(-(2**15), 2**15, 4099) for d in (-1, 0, 1) if -(2**63) <= k * 2**48 + d]
    listed = [f"books/{i:05d}" for i in range(2500)]
    referenced = set(rng.sample(listed, 900)) | {f"books/gone{i}" for i in range(40)} | {f"other/{i}" for i in range(30)}
    first: dict[str, int] = {}
    for key in sorted(set(listed) | referenced):
        first[key] = rng.choice(edges) if rng.random() < 0.8 else rng.randrange(-(2**63), 2**63)
    # Keys sharing a first digest: told apart by the second.
    for key in rng.sample(sorted(first), 300):
        first[key] = first[rng.choice(sorted(first))]
    second = {key: at for at, key in enumerate(sorted(first))}
    key_set = KeySet(digests=(first.__getitem__, second.__getitem__))
    halves = sorted(referenced)
    for index, keys in enumerate((halves[::2], halves[1::2], halves[:100])):  # keys named by two sources too
        key_set.add_all(keys, index, "books/")
    references = References(
        sources=[SourceResult(f"s{i}", rows=1) for i in range(3)], key_set=key_set.freeze(), prefix="books/"
    )
    listing = [version(k) for k in listed] + [version(k, latest=False) for k in listed[:50]]
    rng.shuffle(listing)
    plan = _plan(listing, references, [_source("s0"), _source("s1"), _source("s2")])
    assert [o.key for o in plan.orphans] == sorted(set(listed) - referenced)
    s = plan.stats
    under = {k for k in referenced if k.startswith("books/")}
    assert (s.referenced_keys, s.referenced_found, s.dangling_references, s.referenced_outside_prefix) == (
        len(referenced), len(referenced & set(listed)), len(under - set(listed)), len(referenced - under),
    )
    assert [references.source_name(k) for k in halves[:100]] == ["s2"] * 100
