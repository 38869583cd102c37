"""The safety gates that need no S3 and no database: pure checks of a plan
against today's config and clock. Each raises GateRefused naming its gate."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bmxgc.config import Config
from bmxgc.drift import KeyHistory
from bmxgc.durations import format_duration, parse_duration
from bmxgc.errors import ConfigError, GateRefused, Offence
from bmxgc.model import FoundKeys, KeySet, ObjectVersion, Plan, PlanSummary, References, VersionEntry
from bmxgc.planner import VOLUME_CAUSES, find_near_misses, matches_protect, pages_of


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


def check_sources(plan: Plan, config: Config) -> None:
    """Gate 2, continued: the plan's reference sources (name, query, keys) are
    the config's. Apply runs only the config's queries, never SQL from a plan."""
    planned = {r.name: (r.query, list(r.keys)) for r in plan.references}
    current = {r.name: (r.query, list(r.keys)) for r in config.references}
    offences: list[Offence] = []
    for name in sorted(planned.keys() | current.keys()):
        then, now = planned.get(name), current.get(name)
        if then is None:
            offences.append(Offence(f"references '{name}'", "in the config, not in the plan"))
        elif now is None:
            offences.append(Offence(f"references '{name}'", "in the plan, not in the config"))
        elif then[0] != now[0]:
            offences.append(Offence(f"references '{name}'", f"query: plan has {then[0]!r}, config has {now[0]!r}"))
        elif then[1] != now[1]:
            offences.append(Offence(f"references '{name}'", f"keys: plan has {then[1]!r}, config has {now[1]!r}"))
    if offences:
        raise GateRefused(
            "environment",
            f"the plan's reference sources differ from the config's ({len(offences)} source(s)); "
            "apply runs only the config's queries: plan again with this config",
            offences,
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


def ignores_near_misses(plan: Plan, config: Config) -> bool:
    """Only when both the plan and today's config say so (the stricter)."""
    return plan.safety.ignore_near_misses and config.safety.ignore_near_misses


def check_scope(plan: Plan, config: Config) -> None:
    """Gate 4 (offline part): every orphan under the prefix, none protected
    (then or now), no cross-check hit and no near-miss reference unless both
    the plan and the config ignore them. The age part needs live state:
    ``check_live_age``."""
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
    near = [] if ignores_near_misses(plan, config) else (plan.near_misses or [])
    for miss in near:
        offences.append(
            Offence(miss.key, f"near miss ({miss.shape}): source '{miss.source}' references {miss.reference!r}")
        )
    if offences:
        hint = (
            "; for near misses fix the query or references.keys, or set safety.ignore_near_misses = true"
            if near
            else ""
        )
        raise GateRefused(
            "scope",
            f"{len(offences):,} planned key(s) must not be deleted; protect or declare them, "
            f"then plan again{hint}",
            offences,
        )


def min_age_in_force(plan: Plan, config: Config) -> timedelta:
    """The stricter (longer) of the plan's and today's ``min_age``."""
    try:
        planned = parse_duration(plan.safety.min_age)
    except ValueError as exc:
        raise GateRefused("scope", f"the plan's safety.min_age: {exc}; plan again") from None
    return max(planned, config.safety.min_age_delta)


def check_live_age(
    orphans: Sequence[ObjectVersion], live: Mapping[str, KeyHistory], min_age: timedelta, now: datetime
) -> None:
    """Gate 4 (live part): every planned object is at least ``min_age`` old by
    its live LastModified (a key without a live version is drift's business)."""
    cutoff = now - min_age
    offences = []
    for orphan in orphans:
        history = live.get(orphan.key)
        latest = history.latest if history else None
        if latest is not None and not latest.is_delete_marker and latest.last_modified > cutoff:
            offences.append(
                Offence(
                    orphan.key,
                    f"younger than min_age {format_duration(min_age)} (last modified "
                    f"{format_duration(now - latest.last_modified)} ago)",
                )
            )
    if offences:
        raise GateRefused(
            "scope",
            f"{len(offences):,} planned object(s) are younger than min_age {format_duration(min_age)} "
            "(the stricter of the plan's and today's); wait, or plan again later",
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


def check_plan_figures(plan: Plan) -> None:
    """Gate 5 (offline): the plan's own figures are finite, not negative, and
    agree with its content. Anyone can rehash an edited plan; edited stats
    that disagree with the orphan list are refused here, and the live figures
    (``check_volume(..., live=True)``) decide the rest."""
    problems: list[Offence] = []
    for section, values in (("stats", plan.stats.model_dump()), ("safety", plan.safety.model_dump())):
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                problems.append(Offence(f"{section}.{name}", f"{value} is not a finite number"))
            elif value < 0:
                problems.append(Offence(f"{section}.{name}", f"{value} is negative"))
    stats, orphans = plan.stats, plan.orphans
    if not problems:
        size = sum(o.size for o in orphans)
        ratio = stats.orphans / stats.objects_scanned if stats.objects_scanned else 0.0
        for name, claimed, actual in (
            ("stats.orphans", stats.orphans, f"{len(orphans):,} orphans"),
            ("stats.orphan_bytes", stats.orphan_bytes, f"orphans of {size:,} bytes"),
        ):
            if claimed != (len(orphans) if name == "stats.orphans" else size):
                problems.append(Offence(name, f"says {claimed:,}, but the plan lists {actual}"))
        if not math.isclose(stats.orphan_ratio, ratio, rel_tol=1e-9, abs_tol=1e-12):
            problems.append(
                Offence(
                    "stats.orphan_ratio",
                    f"says {stats.orphan_ratio:g}, but orphans / objects_scanned is "
                    f"{stats.orphans:,} / {stats.objects_scanned:,}",
                )
            )
        if stats.orphans > stats.objects_scanned:
            problems.append(Offence("stats.orphans", f"{stats.orphans:,} exceed objects_scanned {stats.objects_scanned:,}"))
        if stats.referenced_found > min(stats.referenced_keys, stats.objects_scanned):
            problems.append(
                Offence("stats.referenced_found", f"{stats.referenced_found:,} exceed referenced_keys or objects_scanned")
            )
    if problems:
        raise GateRefused(
            "volume",
            "the plan's figures disagree with its own content (the file was edited and rehashed, "
            "or is corrupt); plan again",
            problems,
        )


@dataclass(frozen=True)
class VolumeFigures:
    """Gate 5's figures: the plan's (offline), or live S3's and the references
    read now (what decides, whatever the plan says)."""

    objects: int  # current objects under the prefix
    referenced_keys: int  # distinct keys the sources keep alive now
    referenced_found: int  # of those, current objects under the prefix
    orphans: int  # planned orphans whose planned version is still current

    @property
    def ratio(self) -> float:
        return self.orphans / self.objects if self.objects else 0.0

    @classmethod
    def of_plan(cls, plan: PlanSummary) -> VolumeFigures:
        """The plan's own figures (``check_plan_figures`` has checked they agree)."""
        s = plan.stats
        return cls(
            objects=s.objects_scanned,
            referenced_keys=s.referenced_keys,
            referenced_found=s.referenced_found,
            orphans=s.orphans,
        )


class LiveTally:
    """Counts a live listing as it streams by (``observe`` passes rows on)."""

    def __init__(self, referenced: KeySet) -> None:
        self.referenced = referenced
        self.objects = 0
        self.found_keys = FoundKeys(referenced)

    @property
    def found(self) -> int:
        return self.found_keys.count

    def observe(self, rows: Iterable[VersionEntry]) -> Iterator[VersionEntry]:
        for page in pages_of(rows):  # the keys looked up a page at a time, as the planner does
            current = [row.key for row in page if row.is_latest and not row.is_delete_marker]
            self.objects += len(current)
            self.found_keys.observe_all(current)
            yield from page

    def figures(self, orphans: Sequence[ObjectVersion], live: Mapping[str, KeyHistory]) -> VolumeFigures:
        existing = 0
        for orphan in orphans:
            history = live.get(orphan.key)
            latest = history.latest if history else None
            if latest is not None and not latest.is_delete_marker and latest.version_id == orphan.version_id:
                existing += 1
        return VolumeFigures(
            objects=self.objects, referenced_keys=len(self.referenced), referenced_found=self.found, orphans=existing
        )


def check_live_near_misses(plan: Plan, config: Config, references: References, found_keys: FoundKeys) -> None:
    """Gate 4 (live part): near misses found again from the references read now,
    so a plan whose ``near_misses`` were edited out is refused all the same."""
    if ignores_near_misses(plan, config):
        return
    misses = find_near_misses(references, config.references, found_keys, plan.orphans, plan.bucket, plan.prefix)
    if misses:
        raise GateRefused(
            "scope",
            f"{len(misses):,} planned key(s) are near misses of references read now; fix the query or "
            "references.keys, or set safety.ignore_near_misses = true, then plan again",
            [Offence(m.key, f"near miss ({m.shape}): source '{m.source}' references {m.reference!r}") for m in misses],
        )


def check_volume(figures: VolumeFigures, limits: Limits, prefix: str, *, live: bool = False) -> None:
    """Gate 5: not the incident's signature (a mapping or a database that keeps
    nothing alive, which no --max-orphan-ratio overrides), not too large a
    share of the prefix, not too many objects. ``live``: the figures are from
    S3 and the references now, else the plan's. No message names a value for
    an override: the refusal explains the figure and how to check it."""
    now = " now" if live else ""
    when = "now" if live else "when the plan was made"
    if figures.orphans and figures.referenced_keys == 0:
        raise GateRefused(
            "volume",
            f"the reference sources returned no keys {when}, so nothing references any of the "
            f"{figures.objects:,} objects under {prefix}; {VOLUME_CAUSES}; then plan again",
        )
    if figures.orphans and figures.referenced_found == 0:
        raise GateRefused(
            "volume",
            f"none of the {figures.referenced_keys:,} referenced keys exist under {prefix}{now}: the key "
            "mapping is wrong (see the plan's warnings); fix references.keys, then plan again",
        )
    if figures.ratio > limits.max_orphan_ratio:
        share = (
            f"{figures.orphans:,} of the {figures.objects:,} objects under {prefix} now are planned orphans"
            if live
            else f"{figures.orphans:,} of the {figures.objects:,} objects under {prefix} are orphans"
        )
        raise GateRefused(
            "volume",
            f"{share}: nothing references them (ratio {figures.ratio:.4g}), above max_orphan_ratio "
            f"{limits.max_orphan_ratio:g}; {VOLUME_CAUSES}; then plan again",
        )
    if figures.orphans > limits.max_deletes:
        what = "planned orphans exist now" if live else "orphans"
        raise GateRefused(
            "volume",
            f"{figures.orphans:,} {what}, more than max_deletes {limits.max_deletes:,}; "
            "raise safety.max_deletes and plan again if this is intended",
        )


@dataclass(frozen=True)
class Baseline:
    """The newest plan of the same bucket and prefix that was applied (its
    receipt exists and is complete): what the jump gate compares with."""

    name: str
    created_at: str
    figures: VolumeFigures


JUMP_MIN_GROWTH = 100  # orphans that double from 3 to 7 are noise; from 20 to 298 they are not


def jumped(figures: VolumeFigures, baseline: Baseline) -> list[str]:
    """What moved too far since the baseline, one phrase each (empty: nothing)."""
    then = baseline.figures
    reasons = []
    if figures.referenced_keys * 2 < then.referenced_keys:
        reasons.append(
            f"the referenced keys fell by more than half, from {then.referenced_keys:,} to {figures.referenced_keys:,}"
        )
    if figures.orphans > 2 * then.orphans and figures.orphans - then.orphans > JUMP_MIN_GROWTH:
        reasons.append(
            f"the orphans more than doubled, from {then.orphans:,} to {figures.orphans:,} "
            f"(more than {JUMP_MIN_GROWTH} more)"
        )
    return reasons


def side_by_side(figures: VolumeFigures, baseline: Baseline, this: str) -> list[Offence]:
    """Both plans' figures in two columns, for the refusal's details."""
    then = baseline.figures
    width = max(len(baseline.name), len(this), 14)
    rows = [
        ("plan", baseline.name, this),
        ("which", "last applied", "this apply"),
        ("objects", f"{then.objects:,}", f"{figures.objects:,}"),
        ("referenced keys", f"{then.referenced_keys:,}", f"{figures.referenced_keys:,}"),
        ("referenced found", f"{then.referenced_found:,}", f"{figures.referenced_found:,}"),
        ("orphans", f"{then.orphans:,}", f"{figures.orphans:,}"),
        ("orphan ratio", f"{then.ratio:.4g}", f"{figures.ratio:.4g}"),
    ]
    return [Offence(f"{label:<16}", f"{old:>{width}}  {new:>{width}}") for label, old, new in rows]


def check_jump(
    figures: VolumeFigures, baseline: Baseline | None, *, allowed: bool, this: str = "this plan", live: bool = False
) -> None:
    """Gate 5, against the newest applied plan of the same bucket and prefix:
    the referenced keys did not fall by more than half, and the orphans did not
    more than double while growing by more than 100. Only ``--allow-jump``
    lets it through (then the operator types the count); no earlier applied
    plan, no check."""
    if baseline is None or allowed:
        return
    reasons = jumped(figures, baseline)
    if reasons:
        now = " (live figures now)" if live else ""
        raise GateRefused(
            "jump",
            f"since {baseline.name} ({baseline.created_at}), the last plan of this bucket and prefix "
            f"that was applied{now}, {'; and '.join(reasons)}; {VOLUME_CAUSES}; then plan again "
            "(a jump that is real and reviewed: see gate 'jump' in docs/reference.md)",
            side_by_side(figures, baseline, this),
        )


def baseline_of(found: tuple[str, PlanSummary] | None) -> Baseline | None:
    """The last applied plan (its file name and the plan) as the jump gate's baseline."""
    if found is None:
        return None
    name, plan = found
    return Baseline(name, plan.created_at, VolumeFigures.of_plan(plan))


def offline_refusal(plan: Plan, config: Config, baseline: Baseline | None, now: datetime) -> GateRefused | None:
    """What apply's offline gates (freshness, scope, volume, jump,
    reversibility as the plan saw it) would say of ``plan`` today, or None:
    for ``plan --detailed-exitcode`` and ``history``. Apply decides."""
    try:
        check_freshness(plan, config, now)
        check_scope(plan, config)
        check_plan_figures(plan)
        check_volume(VolumeFigures.of_plan(plan), volume_limits(plan, config, None), plan.prefix)
        check_jump(VolumeFigures.of_plan(plan), baseline, allowed=False)
        check_versioning(plan.bucket_versioning, plan.bucket)
    except GateRefused as refusal:
        return refusal
    return None


def check_expected_count(expected: int | None, typed: str | None, count: int) -> None:
    """An overridden jump: the operator states how many objects this apply
    deletes (``--expect-deletes N``, else typed at the prompt)."""
    given = str(expected) if expected is not None else typed
    if given is None:
        raise GateRefused(
            "jump",
            "--allow-jump needs the number of objects this apply deletes, typed at the prompt; with no "
            "terminal, give it with --expect-deletes (read it from the plan, 'bmxgc show PLAN')",
        )
    if given.strip().replace(",", "") != str(count):
        raise GateRefused(
            "jump",
            f"{given.strip()!r} is not the number of objects this plan deletes; read it from the plan "
            "('bmxgc show PLAN') and run apply again",
        )


def check_versioning(status: str, bucket: str) -> None:
    """Gate 7: only a versioned bucket keeps what a delete marker hides."""
    if status != "Enabled":
        raise GateRefused(
            "reversibility",
            f"bucket {bucket} has versioning {status}, so deletions could not be undone; "
            "enable versioning on the bucket, then plan again",
        )


# confirm(summary) -> True only if the operator typed "yes".
Confirm = Callable[[str], bool]


def check_consent(confirm: Confirm | None, summary: str, *, command: str, no_terminal: str | None = None) -> None:
    """Gate 9 of apply, and the same question before undo and unlock: the
    operator reads ``summary`` and types "yes". With nobody to ask (no
    terminal, the Python API without ``confirm``) it refuses."""
    if confirm is None:
        raise GateRefused(
            "consent",
            no_terminal or f"no terminal to ask for approval; pass --auto-approve to {command} without asking",
        )
    if not confirm(summary):
        raise GateRefused("consent", f"{command} cancelled: only 'yes' approves")
