"""Deciding what is an orphan: a pure function of listed objects and references.

No S3, no database: ``build_plan`` takes data and returns a Plan, so every rule
here is testable with plain lists.
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import filterfalse, islice
from operator import attrgetter, methodcaller
from urllib.parse import SplitResult, unquote, urlsplit

from bmxgc import __version__
from bmxgc.config import ReferenceSource, SafetySettings
from bmxgc.model import (
    CrossCheckHit,
    FoundKeys,
    InventorySource,
    NearMiss,
    ObjectVersion,
    Plan,
    References,
    ReferenceSummary,
    SafetySummary,
    Stats,
    VersionEntry,
    rfc3339,
)
from bmxgc.planfile import PLACEHOLDER_HASH, seal

SAMPLE_SIZE = 20


LITERAL_MARK = "="


def protect_matches(key: str, pattern: str) -> bool:
    """One ``protect`` pattern against one whole key, case-sensitively.

    ``=KEY`` is that exact key, nothing else (no wildcards). Otherwise a glob
    (fnmatch): ``*`` any run of characters, ``/`` included; ``?`` one
    character; ``[seq]`` one character of seq; ``[!seq]`` one not in seq; a
    literal ``[`` is written ``[[]``.
    """
    if pattern.startswith(LITERAL_MARK):
        return key == pattern[len(LITERAL_MARK) :]
    return fnmatch.fnmatchcase(key, pattern)


def matches_protect(key: str, patterns: Iterable[str]) -> str | None:
    """The first ``protect`` pattern that ``key`` matches (see ``protect_matches``)."""
    for pattern in patterns:
        if protect_matches(key, pattern):
            return pattern
    return None


def literal_misreadings(patterns: Iterable[str]) -> set[str]:
    """Glob patterns with ``[`` that do not match their own text: if a key of
    that text exists, the reviewer probably meant it literally."""
    return {
        p for p in patterns if not p.startswith(LITERAL_MARK) and "[" in p and not fnmatch.fnmatchcase(p, p)
    }


def spread_sample(keys: Sequence[str], size: int = SAMPLE_SIZE) -> list[str]:
    """Up to ``size`` keys evenly spread over the sorted list, first and last included."""
    if len(keys) <= size:
        return list(keys)
    step = (len(keys) - 1) / (size - 1)
    return [keys[round(i * step)] for i in range(size)]


@dataclass(frozen=True)
class ScanContext:
    """What the plan records about where it looked."""

    bucket: str
    prefix: str
    bucket_versioning: str
    database: str  # already without its password
    undo_window_days: int | None = None
    previous: Previous | None = None
    inventory: InventorySource | None = None  # a plan from an S3 Inventory report: which one


@dataclass(frozen=True)
class Previous:
    """The newest earlier plan of the same bucket and prefix, for the trend warning."""

    name: str
    created_at: str
    orphans: int
    orphan_ratio: float


TREND_MIN_JUMP = 100  # a doubling from 3 to 7 orphans is noise; from 120 to 5,089 it is not

# What a high orphan figure usually means, and how to check it. Never a value
# for an override: following such a hint is how the incident happened.
VOLUME_CAUSES = (
    "the usual causes are a wrong or empty database (check database.url), a lagging replica, "
    "a key mapping that does not produce S3's keys (references.keys) and a truncated table; "
    "to check, count the rows each query returns, look a few planned keys up in the database, "
    "and compare with the previous plan ('bmxgc diff OLD NEW')"
)


def build_plan(
    listing: Iterable[VersionEntry],
    references: References,
    sources: Sequence[ReferenceSource],
    safety: SafetySettings,
    context: ScanContext,
    now: datetime,
) -> Plan:
    """The plan: orphans, stats and warnings for one listing of one prefix.

    ``listing`` is every row S3 listed; only current object versions count as
    objects (delete markers and noncurrent versions are history, not objects).
    """
    referenced = FoundKeys(references.keys)
    young_cutoff = now - safety.min_age_delta
    versions = scanned = bytes_scanned = skipped_young = skipped_protected = 0
    orphans: list[ObjectVersion] = []
    misread = literal_misreadings(safety.protect)
    misread_existing: list[str] = []
    # A prefix that is not a folder ("books") also covers books-old/...: say which.
    folder = context.prefix if context.prefix.endswith("/") else context.prefix + "/"
    beyond = 0
    beyond_sample: list[str] = []
    for rows in pages_of(listing):
        versions += len(rows)
        current = [obj for obj in rows if obj.is_latest and not obj.is_delete_marker]
        scanned += len(current)
        bytes_scanned += sum(map(_size_of, current))
        keys = list(map(_key_of, current))
        if misread:
            misread_existing.extend(key for key in keys if key in misread)
        for key in filterfalse(methodcaller("startswith", folder), keys):
            beyond += 1
            if len(beyond_sample) < BEYOND_SAMPLE or key < beyond_sample[-1]:
                beyond_sample = sorted([*beyond_sample, key])[:BEYOND_SAMPLE]  # the first, in any listing order
        # Referenced: kept (a digest collision can only ever keep an object).
        for obj, kept in zip(current, referenced.observe_all(keys)):
            if kept:
                continue
            if matches_protect(obj.key, safety.protect):
                skipped_protected += 1
            elif obj.last_modified > young_cutoff:
                skipped_young += 1
            else:
                orphans.append(obj.as_object())
    # S3's own order: UTF-8 bytes, which is code point order (keys come from
    # UTF-8, so no surrogates). The listing may come in any order (ranges in
    # parallel): sorted here, without a byte string per orphan.
    orphans.sort(key=_key_of)
    # Counted by entry (distinct keys), from one flag per entry: exact, and
    # even a digest collision cannot make found exceed referenced_keys.
    under = references.under(context.prefix)
    tally = Tally(
        versions=versions,
        scanned=scanned,
        bytes_scanned=bytes_scanned,
        found=referenced.count,
        skipped_young=skipped_young,
        skipped_protected=skipped_protected,
        referenced_keys=len(references.keys),
        referenced_under_prefix=sum(under),
        dangling=referenced.not_found_among(under),
        beyond=beyond,
        beyond_sample=beyond_sample,
        misread_existing=misread_existing,
    )
    near_misses = find_near_misses(references, sources, referenced, orphans, context.bucket, context.prefix)
    return assemble_plan(tally, orphans, near_misses, references, sources, safety, context, now)


@dataclass(frozen=True)
class Tally:
    """What one scan of a prefix counted, however it was scanned (a listing, an inventory)."""

    versions: int
    scanned: int
    bytes_scanned: int
    found: int
    skipped_young: int
    skipped_protected: int
    referenced_keys: int
    referenced_under_prefix: int
    dangling: int | None = None  # referenced keys under the prefix not found; None: under - found
    beyond: int = 0
    beyond_sample: Sequence[str] = ()
    misread_existing: Sequence[str] = ()


def assemble_plan(
    tally: Tally,
    orphans: list[ObjectVersion],
    near_misses: list[NearMiss],
    references: References,
    sources: Sequence[ReferenceSource],
    safety: SafetySettings,
    context: ScanContext,
    now: datetime,
) -> Plan:
    """The plan from a scan's tally and its orphans (sorted by key in UTF-8 byte
    order): stats, warnings and the sealed Plan. ``references`` gives each
    source's row counts; its keys are not read here."""
    versions, scanned, bytes_scanned = tally.versions, tally.scanned, tally.bytes_scanned
    found, skipped_young, skipped_protected = tally.found, tally.skipped_young, tally.skipped_protected
    beyond, beyond_sample, misread_existing = tally.beyond, tally.beyond_sample, tally.misread_existing
    folder = context.prefix if context.prefix.endswith("/") else context.prefix + "/"
    under_prefix = tally.referenced_under_prefix
    dangling = under_prefix - found if tally.dangling is None else tally.dangling
    orphan_bytes = sum(o.size for o in orphans)
    stats = Stats(
        objects_scanned=scanned,
        bytes_scanned=bytes_scanned,
        referenced_keys=tally.referenced_keys,
        referenced_found=found,
        dangling_references=dangling,
        orphans=len(orphans),
        orphan_bytes=orphan_bytes,
        orphan_ratio=len(orphans) / scanned if scanned else 0.0,
        skipped_young=skipped_young,
        skipped_protected=skipped_protected,
        referenced_outside_prefix=tally.referenced_keys - under_prefix,
        versions_listed=versions,
    )
    extra = near_miss_warnings(near_misses) + [
        protect_literal_warning(key) for key in sorted(misread_existing)
    ]
    if not context.prefix.endswith("/"):
        covered = (
            f"{beyond:,} objects outside {folder}, e.g. {', '.join(sorted(beyond_sample))}"
            if beyond
            else f"no object outside {folder} today, but every key that starts with {context.prefix!r}"
        )
        last = [
            f"prefix {context.prefix!r} does not end with '/' and is not a folder "
            f"(s3.prefix_is_folder = false): it also covers {covered}"
        ]
    else:
        last = []
    draft = Plan(
        format_version=1,
        bmxgc_version=__version__,
        created_at=rfc3339(now),
        plan_hash=PLACEHOLDER_HASH,
        bucket=context.bucket,
        prefix=context.prefix,
        bucket_versioning=context.bucket_versioning,
        database=context.database,
        inventory=context.inventory,
        references=[
            ReferenceSummary(
                name=s.name,
                query=s.query,
                keys=list(s.keys),
                rows=r.rows,
                skipped_null=r.skipped_null,
                skipped_empty=r.skipped_empty,
            )
            for s, r in zip(sources, references.sources, strict=True)
        ],
        safety=SafetySummary(**safety.model_dump()),
        stats=stats,
        warnings=_most_serious_first(plan_warnings(stats, references, safety, context), extra) + last,
        sample_orphan_keys=spread_sample([o.key for o in orphans]),
        near_misses=near_misses or None,
        orphans=orphans,
    )
    return seal(draft)


BEYOND_SAMPLE = 3
_key_of = attrgetter("key")
_size_of = attrgetter("size")
PAGE = 1000  # rows judged together: S3's page


def pages_of(listing: Iterable[VersionEntry]) -> Iterator[list[VersionEntry]]:
    """The listing's rows in lists of ``PAGE`` (the last one shorter)."""
    rows = iter(listing)
    while page := list(islice(rows, PAGE)):
        yield page


def _most_serious_first(warnings: list[str], extra: list[str]) -> list[str]:
    """Near misses and misread patterns come right after the mapping warnings
    (no keys, none found), before the volume and housekeeping ones."""
    mapping = [w for w in warnings if w.startswith(("the reference sources returned no keys", "0 of "))]
    return mapping + extra + [w for w in warnings if w not in mapping]


def protect_literal_warning(key: str) -> str:
    return (
        f"protect pattern {key!r} does not protect the key {key}, which exists: in a pattern, "
        "[...] is a character class (one of the characters inside); to protect that exact key "
        f"write \"{LITERAL_MARK}{key}\" (or escape '[' as '[[]'), then plan again"
    )


# --- near misses: references that almost name an orphan ------------------------------

NEAR_MISS_SHAPES = {
    "padding": "once surrounding whitespace is trimmed",
    "leading_slash": "without their leading '/'",
    "url": "once the URL is reduced to its key (its path, without the bucket)",
    "case": "in another letter case",
    "prefix_repeated": "with the prefix written once, not twice",
}
NEAR_MISS_EXAMPLES = 3
_URL = re.compile(r"^(?:https?|s3)://", re.IGNORECASE)


# Hosts that name the bucket: <bucket>.s3.<region>.amazonaws.com (virtual-hosted),
# s3.<region>.amazonaws.com/<bucket>/... (path-style).
_VIRTUAL_HOSTED = re.compile(r"^(?P<bucket>.+)\.s3[.-](?:[a-z0-9-]+\.)*amazonaws\.com$", re.IGNORECASE)
_PATH_STYLE = re.compile(r"^s3[.-](?:[a-z0-9-]+\.)*amazonaws\.com$", re.IGNORECASE)


def _url_key(parts: SplitResult, bucket: str) -> list[str]:
    """The keys a URL may name in ``bucket``: none when it names another bucket
    (then it is a reference to that bucket, not a near miss of this one)."""
    path = unquote(parts.path).lstrip("/")
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() == "s3":
        return [path] if parts.netloc == bucket else []
    if (hosted := _VIRTUAL_HOSTED.match(host)) is not None:
        return [path] if hosted.group("bucket") == bucket else []
    if _PATH_STYLE.match(host):
        named, _, key = path.partition("/")
        return [key] if named == bucket else []
    # Any other host (a CDN, the app's own domain): its path, and the path
    # without a first segment naming the bucket.
    return [path[len(bucket) + 1 :], path] if path.startswith(bucket + "/") else [path]


def shown_reference(reference: str) -> str:
    """A reference as plans and output may show it: a URL without its user,
    password, query and fragment (a presigned URL's token and signature)."""
    if not _URL.match(reference.strip()):
        return reference
    parts = urlsplit(reference.strip())
    host = parts.hostname or ""
    port = f":{parts.port}" if _has_port(parts) else ""
    hidden = "?..." if parts.query or parts.fragment else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{hidden}"


def _has_port(parts: SplitResult) -> bool:
    try:
        return parts.port is not None
    except ValueError:
        return False


def _normalised_values(value: str, bucket: str) -> Iterator[tuple[str, list[str]]]:
    """``value`` cleaned of padding, a URL and leading slashes, with the shapes
    that were removed."""
    shapes: list[str] = []
    text = value
    if text.strip() != text:
        shapes.append("padding")
        text = text.strip()
    candidates = [text]
    if _URL.match(text):
        shapes.append("url")
        try:
            candidates = _url_key(urlsplit(text), bucket)
        except ValueError:  # not a URL after all (e.g. a bad port)
            candidates = []
    for candidate in candidates:
        if candidate.startswith("/") and "url" not in shapes:
            yield candidate.lstrip("/"), [*shapes, "leading_slash"]
        else:
            yield candidate, list(shapes)


def _collapse_prefix(key: str, prefix: str, shapes: list[str]) -> tuple[str, list[str]]:
    if prefix and key.startswith(prefix + prefix):
        while key.startswith(prefix + prefix):
            key = key[len(prefix) :]
        return key, [*shapes, "prefix_repeated"]
    return key, shapes


def _match_near_miss(
    reference: str,
    templates: Sequence[str],
    orphan_keys: set[str],
    orphans_by_lower: dict[str, str],
    bucket: str,
    prefix: str,
) -> tuple[str, str] | None:
    """The orphan ``reference`` would name after normalising, and the shape."""
    for template in templates:
        head, _, tail = template.partition("{value}")
        if not (reference.startswith(head) and reference.endswith(tail)) or len(reference) < len(head) + len(tail):
            continue
        value = reference[len(head) : len(reference) - len(tail)]
        for cleaned, shapes in _normalised_values(value, bucket):
            # A URL usually holds the whole key; anything else is a value for the template.
            keys = [cleaned, head + cleaned + tail] if "url" in shapes else [head + cleaned + tail]
            for candidate in keys:
                key, found_shapes = _collapse_prefix(candidate, prefix, shapes)
                if not found_shapes:
                    continue  # the reference itself: it does not exist
                if key in orphan_keys:
                    return key, "+".join(found_shapes)
            for candidate in keys:
                key, found_shapes = _collapse_prefix(candidate, prefix, shapes)
                other = orphans_by_lower.get(key.lower())
                if other is not None and other != reference:
                    return other, "+".join([*found_shapes, "case"])
    return None


def find_near_misses(
    references: References,
    sources: Sequence[ReferenceSource],
    found: FoundKeys,
    orphans: Sequence[ObjectVersion],
    bucket: str,
    prefix: str,
) -> list[NearMiss]:
    """Referenced keys that exist nowhere under the prefix (dangling, or outside
    it) but would match an orphan once normalised: a mapping that is nearly right.

    Only the keys not ``found`` can be near misses; their strings come from a
    second, streamed read of the references (``References.every_key``), made
    only when there are orphans and some referenced key was not found. The
    misses come by source, then by reference, each once."""
    if not orphans or found.all_found:
        return []
    orphan_keys = {o.key for o in orphans}
    orphans_by_lower: dict[str, str] = {}
    for key in sorted(orphan_keys):
        orphans_by_lower.setdefault(key.lower(), key)
    misses: dict[tuple[int, str], NearMiss] = {}
    for index, reference in references.every_key():
        if (index, reference) in misses or reference in found:
            continue
        source = sources[index]
        match = _match_near_miss(reference, source.keys, orphan_keys, orphans_by_lower, bucket, prefix)
        if match is not None:
            misses[(index, reference)] = NearMiss(
                key=match[0], reference=shown_reference(reference), shape=match[1], source=source.name
            )
    return [misses[found_at] for found_at in sorted(misses)]


def near_miss_warnings(misses: Sequence[NearMiss]) -> list[str]:
    by_shape: dict[str, list[NearMiss]] = defaultdict(list)
    for miss in misses:
        by_shape[miss.shape].append(miss)
    warnings = []
    for shape in sorted(by_shape, key=lambda s: (-len(by_shape[s]), s)):
        group = by_shape[shape]
        how = " and ".join(NEAR_MISS_SHAPES[part] for part in shape.split("+"))
        examples = ", ".join(f"{m.reference!r} -> {m.key}" for m in group[:NEAR_MISS_EXAMPLES])
        more = f" and {len(group) - NEAR_MISS_EXAMPLES:,} more" if len(group) > NEAR_MISS_EXAMPLES else ""
        warnings.append(
            f"near miss ({shape}): {len(group):,} referenced key{'s' if len(group) != 1 else ''} would "
            f"match an orphan {how}, e.g. {examples}{more} (see near_misses); fix the query or "
            "references.keys, or set safety.ignore_near_misses = true: apply refuses this plan until then"
        )
    return warnings


def plan_warnings(
    stats: Stats, references: References, safety: SafetySettings, context: ScanContext
) -> list[str]:
    """What is probably wrong with this plan, most serious first, each with what to do."""
    prefix = context.prefix
    warnings: list[str] = []
    if stats.referenced_keys == 0:
        warnings.append(
            f"the reference sources returned no keys: nothing references any of the "
            f"{stats.objects_scanned:,} objects under {prefix}, so every one would be an orphan; "
            f"{VOLUME_CAUSES}"
        )
    elif stats.referenced_found == 0 and stats.objects_scanned > 0:
        outside = stats.referenced_outside_prefix
        hint = (
            f"; {outside:,} of them are not under {prefix} at all (e.g. add the prefix: "
            f'keys = ["{prefix}{{value}}"])'
            if outside
            else ""
        )
        warnings.append(
            f"0 of {stats.referenced_keys:,} referenced keys exist under {prefix}: the key mapping "
            f"is probably wrong{hint}; do not apply this plan"
        )
    if stats.objects_scanned == 0:
        warnings.append(
            f"no objects under {prefix} in bucket {context.bucket}: check s3.prefix and s3.bucket "
            "for a typo (e.g. book/ for books/)"
        )
    if stats.orphan_ratio > safety.max_orphan_ratio:
        warnings.append(
            f"nothing references {stats.orphans:,} of the {stats.objects_scanned:,} objects under {prefix} "
            f"(orphan ratio {stats.orphan_ratio:.2f}), above max_orphan_ratio {safety.max_orphan_ratio:g}: "
            f"apply will refuse this plan; {VOLUME_CAUSES}"
        )
    if stats.orphans > safety.max_deletes:
        warnings.append(
            f"{stats.orphans:,} orphans exceed max_deletes {safety.max_deletes:,}: apply will "
            "refuse this plan; raise safety.max_deletes if this is intended"
        )
    if context.bucket_versioning != "Enabled":
        warnings.append(
            f"bucket {context.bucket} is not versioned (versioning: {context.bucket_versioning}): "
            "deletions could not be undone, so apply will refuse; enable versioning on the bucket"
        )
    # S3's shortest NoncurrentDays is 1, rounded to the next midnight UTC: a
    # rule of 1 day can leave undo less than a day.
    if context.undo_window_days is not None and context.undo_window_days <= 1:
        warnings.append(
            f"a lifecycle rule expires noncurrent versions after {context.undo_window_days} day(s): "
            "undo could have less than a day to work; lengthen NoncurrentVersionExpiration"
        )
    trend = trend_warning(context.previous, stats)
    if trend:
        warnings.append(trend)
    if stats.dangling_references:
        warnings.append(
            f"{stats.dangling_references:,} referenced keys under {prefix} do not exist in S3 "
            "(broken links in the app); see which with a query, they are not deleted by bmxgc"
        )
    skipped = [
        f"{s.name}: {s.skipped_null:,} NULL, {s.skipped_empty:,} empty"
        for s in references.sources
        if s.skipped_null or s.skipped_empty
    ]
    if skipped:
        warnings.append(
            "reference values skipped (they keep nothing alive): " + "; ".join(skipped)
        )
    return warnings


CROSS_CHECK_WARNINGS = 20


def with_cross_check(
    plan: Plan, hits: Sequence[tuple[str, str, str]], columns: Sequence[str], not_scanned: Sequence[str]
) -> Plan:
    """The plan with cross-check hits recorded and warned about, rehashed."""
    warnings = [
        f"cross-check: orphan {key} is named in {table}.{column}, which no source declares; "
        "declare that column as a source or protect the key, then plan again (apply refuses this plan)"
        for table, column, key in hits[:CROSS_CHECK_WARNINGS]
    ]
    if len(hits) > CROSS_CHECK_WARNINGS:
        warnings.append(f"cross-check: {len(hits) - CROSS_CHECK_WARNINGS:,} more hits (see cross_check)")
    if not_scanned:
        warnings.append(
            f"cross-check: {len(not_scanned):,} tables were not scanned (over the limit): "
            f"{', '.join(not_scanned[:5])}{'...' if len(not_scanned) > 5 else ''}; name them with "
            "--cross-check-table to scan them"
        )
    checked = plan.model_copy(
        update={
            "warnings": warnings + plan.warnings,
            "cross_check": [CrossCheckHit(table=t, column=c, key=k) for t, c, k in hits],
            "cross_check_columns": list(columns),
            "cross_check_tables_not_scanned": list(not_scanned),
        }
    )
    return seal(checked)


def trend_warning(previous: Previous | None, stats: Stats) -> str | None:
    """A sudden jump in orphans is how a broken mapping or an emptied table looks."""
    if previous is None or stats.orphans - previous.orphans <= TREND_MIN_JUMP:
        return None
    doubled = stats.orphans > 2 * previous.orphans or stats.orphan_ratio > 2 * previous.orphan_ratio
    if not doubled:
        return None
    return (
        f"orphans jumped from {previous.orphans:,} (ratio {previous.orphan_ratio:.2f}) in the previous "
        f"plan {previous.name} ({previous.created_at}) to {stats.orphans:,} (ratio {stats.orphan_ratio:.2f}): "
        f"nothing references these objects now, and {VOLUME_CAUSES}"
    )
