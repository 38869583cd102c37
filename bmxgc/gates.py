"""The safety gates that need no S3 and no database: pure checks of a plan
against today's config and clock. Each raises GateRefused naming its gate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bmxgc.config import Config
from bmxgc.durations import format_duration, parse_duration
from bmxgc.errors import ConfigError, GateRefused, Offence
from bmxgc.model import Plan
from bmxgc.planner import matches_protect, ratio_override


@dataclass(frozen=True)
class Limits:
    """The volume limits in force, and what the command line overrode."""

    max_orphan_ratio: float
    max_deletes: int
    overrides: dict[str, float]


def check_environment(plan: Plan, config: Config, database: str) -> None:
    """Gate 2: the plan was made for this bucket, prefix and database."""
    mismatches = [
        Offence(name, f"plan has {planned!r}, config has {current!r}")
        for name, planned, current in (
            ("s3.bucket", plan.bucket, config.s3.bucket),
            ("s3.prefix", plan.prefix, config.s3.prefix),
            ("database.url", plan.database, database),
        )
        if planned != current
    ]
    if mismatches:
        raise GateRefused(
            "environment",
            "the plan was made for another bucket, prefix or database; "
            "apply it with the config it was made with, or plan again",
            mismatches,
        )


def check_freshness(plan: Plan, config: Config, now: datetime) -> None:
    """Gate 3: not older than max_plan_age (the stricter of the plan's and today's)."""
    limit = min(parse_duration(plan.safety.max_plan_age), config.safety.max_plan_age_delta)
    age = now - plan.created
    if age > limit:
        raise GateRefused(
            "freshness",
            f"the plan is {format_duration(age)} old, older than max_plan_age "
            f"{format_duration(limit)}; run 'bmxgc plan' again and review the new plan",
        )
    if age < -timedelta(minutes=5):
        raise GateRefused(
            "freshness",
            f"the plan was made {format_duration(-age)} in the future ({plan.created_at}); "
            "check this machine's clock, then plan again",
        )


def check_scope(plan: Plan, config: Config) -> None:
    """Gate 4: every orphan under the prefix, none protected (then or now),
    and no cross-check hit."""
    patterns = list(dict.fromkeys(plan.safety.protect + config.safety.protect))
    offences: list[Offence] = []
    for orphan in plan.orphans:
        if not orphan.key.startswith(plan.prefix):
            offences.append(Offence(orphan.key, f"not under the plan's prefix {plan.prefix!r}"))
        elif (pattern := matches_protect(orphan.key, patterns)) is not None:
            offences.append(Offence(orphan.key, f"matches protect pattern {pattern!r}"))
    for hit in plan.cross_check or []:
        offences.append(
            Offence(hit.key, f"found in {hit.table}.{hit.column}, a column no source declares")
        )
    if offences:
        raise GateRefused(
            "scope",
            f"{len(offences):,} planned key(s) must not be deleted; protect or declare them, "
            "then plan again",
            offences,
        )


def volume_limits(plan: Plan, config: Config, max_orphan_ratio: float | None) -> Limits:
    """The stricter of the plan's and today's limits, unless the command line
    names a ratio (recorded as an override)."""
    if max_orphan_ratio is not None:
        if not 0.0 <= max_orphan_ratio <= 1.0:
            raise ConfigError(f"--max-orphan-ratio: {max_orphan_ratio} is outside 0..1")
        ratio = max_orphan_ratio
        overrides = {"max_orphan_ratio": max_orphan_ratio}
    else:
        ratio = min(plan.safety.max_orphan_ratio, config.safety.max_orphan_ratio)
        overrides = {}
    deletes = min(plan.safety.max_deletes, config.safety.max_deletes)
    return Limits(max_orphan_ratio=ratio, max_deletes=deletes, overrides=overrides)


def check_volume(plan: Plan, limits: Limits) -> None:
    """Gate 5: not too large a share of the prefix, not too many objects, and
    not the incident's signature (a mapping that keeps nothing alive), which
    no --max-orphan-ratio overrides."""
    stats = plan.stats
    if stats.orphans and stats.referenced_keys == 0:
        raise GateRefused(
            "volume",
            "the reference sources returned no keys when the plan was made, so every object "
            "looked like an orphan; check the queries and database.url, then plan again",
        )
    if stats.orphans and stats.referenced_found == 0:
        raise GateRefused(
            "volume",
            f"none of the {stats.referenced_keys:,} referenced keys exist under {plan.prefix}: the key "
            "mapping is wrong (see the plan's warnings); fix references.keys, then plan again",
        )
    if stats.orphan_ratio > limits.max_orphan_ratio:
        raise GateRefused(
            "volume",
            f"orphan_ratio {stats.orphan_ratio:.4g} ({stats.orphans:,} of {stats.objects_scanned:,} "
            f"objects) is above max_orphan_ratio {limits.max_orphan_ratio:g}; check the key mapping "
            f"(see the plan's warnings), or pass --max-orphan-ratio {ratio_override(stats.orphan_ratio)} "
            "if this is intended",
        )
    if stats.orphans > limits.max_deletes:
        raise GateRefused(
            "volume",
            f"{stats.orphans:,} orphans exceed max_deletes {limits.max_deletes:,}; raise "
            "safety.max_deletes and plan again if this is intended",
        )


def check_versioning(status: str, bucket: str) -> None:
    """Gate 7: only a versioned bucket keeps what a delete marker hides."""
    if status != "Enabled":
        raise GateRefused(
            "reversibility",
            f"bucket {bucket} has versioning {status}, so deletions could not be undone; "
            "enable versioning on the bucket, then plan again",
        )
