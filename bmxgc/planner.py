"""Deciding what is an orphan: a pure function of listed objects and references.

No S3, no database: ``build_plan`` takes data and returns a Plan, so every rule
here is testable with plain lists.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from bmxgc import __version__
from bmxgc.config import ReferenceSource, SafetySettings
from bmxgc.model import (
    CrossCheckHit,
    ObjectVersion,
    Plan,
    ReferenceSummary,
    SafetySummary,
    Stats,
    VersionEntry,
    rfc3339,
)
from bmxgc.planfile import PLACEHOLDER_HASH, seal
from bmxgc.references import References

SAMPLE_SIZE = 20


def matches_protect(key: str, patterns: Iterable[str]) -> str | None:
    """The first ``protect`` glob that ``key`` matches (``*`` crosses ``/``)."""
    for pattern in patterns:
        if fnmatch.fnmatchcase(key, pattern):
            return pattern
    return None


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


@dataclass(frozen=True)
class Previous:
    """The newest earlier plan of the same bucket and prefix, for the trend warning."""

    name: str
    created_at: str
    orphans: int
    orphan_ratio: float


TREND_MIN_JUMP = 100  # a doubling from 3 to 7 orphans is noise; from 120 to 5,089 it is not


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
    referenced = references.keys
    young_cutoff = now - safety.min_age_delta
    versions = scanned = bytes_scanned = skipped_young = skipped_protected = found = 0
    orphans: list[ObjectVersion] = []
    for obj in listing:
        versions += 1
        if not obj.is_latest or obj.is_delete_marker:
            continue
        scanned += 1
        bytes_scanned += obj.size
        if obj.key in referenced:
            found += 1
        elif matches_protect(obj.key, safety.protect):
            skipped_protected += 1
        elif obj.last_modified > young_cutoff:
            skipped_young += 1
        else:
            orphans.append(obj.as_object())
    orphans.sort(key=lambda o: o.key.encode("utf-8"))  # S3's own (UTF-8 byte) order
    under_prefix = sum(1 for key in referenced if key.startswith(context.prefix))
    orphan_bytes = sum(o.size for o in orphans)
    stats = Stats(
        objects_scanned=scanned,
        bytes_scanned=bytes_scanned,
        referenced_keys=len(referenced),
        referenced_found=found,
        dangling_references=under_prefix - found,
        orphans=len(orphans),
        orphan_bytes=orphan_bytes,
        orphan_ratio=len(orphans) / scanned if scanned else 0.0,
        skipped_young=skipped_young,
        skipped_protected=skipped_protected,
        referenced_outside_prefix=len(referenced) - under_prefix,
        versions_listed=versions,
    )
    draft = Plan(
        format_version=1,
        bmxgc_version=__version__,
        created_at=rfc3339(now),
        plan_hash=PLACEHOLDER_HASH,
        bucket=context.bucket,
        prefix=context.prefix,
        bucket_versioning=context.bucket_versioning,
        database=context.database,
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
        warnings=plan_warnings(stats, references, safety, context),
        sample_orphan_keys=spread_sample([o.key for o in orphans]),
        orphans=orphans,
    )
    return seal(draft)


def plan_warnings(
    stats: Stats, references: References, safety: SafetySettings, context: ScanContext
) -> list[str]:
    """What is probably wrong with this plan, most serious first, each with what to do."""
    prefix = context.prefix
    warnings: list[str] = []
    if stats.referenced_keys == 0:
        warnings.append(
            f"the reference sources returned no keys: every object under {prefix} would be an "
            "orphan; check the queries and database.url before applying"
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
            f"orphan ratio {stats.orphan_ratio:.2f} is above max_orphan_ratio "
            f"{safety.max_orphan_ratio:g}: apply will refuse this plan; check the mapping, or pass "
            f"--max-orphan-ratio {ratio_override(stats.orphan_ratio)} to apply if this is intended"
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
    if not prefix.endswith("/"):
        warnings.append(
            f"prefix {prefix!r} does not end with '/': it also covers keys such as "
            f"{prefix}-old/...; end it with '/' to scan one folder"
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
        "a broken mapping or an emptied table looks like this; compare them with 'bmxgc diff'"
    )


def ratio_override(ratio: float) -> str:
    """The smallest --max-orphan-ratio, in hundredths, that lets ``ratio`` through."""
    hundredths = -int(-ratio * 100 // 1)
    return f"{min(hundredths, 100) / 100:g}"
