"""The pure gates (environment, freshness, scope, volume, reversibility): no S3, no database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from bmxgc.config import config_from_dict
from bmxgc.errors import ConfigError, GateRefused, Offence
from bmxgc.gates import (
    check_environment,
    check_freshness,
    check_scope,
    check_versioning,
    Limits,
    VolumeFigures,
    check_volume,
    volume_limits,
)
from bmxgc.model import CrossCheckHit
from support import NOW, config_doc, make_plan

DB = "postgresql+psycopg2://app@db:5432/app"


def config(**changes: Any) -> Any:
    safety = changes.pop("safety", None)
    doc = config_doc(bucket="bkt", prefix="books/", database_url=DB, safety=safety, **changes)
    return config_from_dict(doc)


def plan(orphans: int = 2, live: int = 8, **kwargs: Any) -> Any:
    """A plan with ``orphans`` unreferenced and ``live`` referenced objects under books/."""
    orphan_keys = [f"books/orphan-{i:03}.jpg" for i in range(orphans)]
    live_keys = [f"books/live-{i:03}.jpg" for i in range(live)]
    return make_plan(orphan_keys + live_keys, live_keys, **kwargs)


def refusal(excinfo: pytest.ExceptionInfo[GateRefused]) -> str:
    return "\n".join([str(excinfo.value), *excinfo.value.details()])


# --------------------------------------------------------------------------- environment


def test_check_environment_same_bucket_prefix_database_passes() -> None:
    check_environment(plan(), config(), DB)


@pytest.mark.parametrize(
    ("field", "changes", "database"),
    [
        ("s3.bucket", {"bucket": "other-bucket"}, DB),
        ("s3.prefix", {"prefix": "listings/"}, DB),
        ("database.url", {}, "postgresql+psycopg2://app@other-db:5432/app"),
    ],
)
def test_check_environment_other_target_refused_naming_it(field: str, changes: dict[str, str], database: str) -> None:
    doc = config_doc(bucket="bkt", prefix="books/", database_url=DB)
    doc["s3"].update(changes)
    with pytest.raises(GateRefused) as excinfo:
        check_environment(plan(), config_from_dict(doc), database)
    assert excinfo.value.gate == "environment"
    assert excinfo.value.exit_code == 3
    assert [o.key for o in excinfo.value.offences] == [field]
    assert "plan again" in str(excinfo.value)


# --------------------------------------------------------------------------- freshness


def test_check_freshness_plan_within_max_plan_age_passes() -> None:
    check_freshness(plan(), config(), NOW + timedelta(hours=23, minutes=59))


def test_check_freshness_plan_older_than_max_plan_age_refused() -> None:
    with pytest.raises(GateRefused) as excinfo:
        check_freshness(plan(), config(), NOW + timedelta(hours=25))
    assert excinfo.value.gate == "freshness"
    assert "1d 1h old" in str(excinfo.value)
    assert "bmxgc plan" in str(excinfo.value)


def test_check_freshness_todays_stricter_max_plan_age_wins() -> None:
    with pytest.raises(GateRefused, match="freshness"):
        check_freshness(plan(), config(safety={"max_plan_age": "1h"}), NOW + timedelta(hours=2))


def test_check_freshness_plans_own_stricter_max_plan_age_wins() -> None:
    strict = plan(safety={"max_plan_age": "30m"})
    with pytest.raises(GateRefused, match="freshness"):
        check_freshness(strict, config(), NOW + timedelta(hours=1))


def test_check_freshness_plan_from_the_future_refused() -> None:
    with pytest.raises(GateRefused, match="clock"):
        check_freshness(plan(), config(), NOW - timedelta(hours=1))


# --------------------------------------------------------------------------- scope


def test_check_scope_protect_pattern_added_today_refused_naming_keys() -> None:
    with pytest.raises(GateRefused) as excinfo:
        check_scope(plan(orphans=3), config(safety={"protect": ["books/orphan-00[01].jpg"]}))
    assert excinfo.value.gate == "scope"
    assert [o.key for o in excinfo.value.offences] == ["books/orphan-000.jpg", "books/orphan-001.jpg"]
    assert "books/orphan-00[01].jpg" in refusal(excinfo)


def test_check_scope_key_outside_prefix_refused() -> None:
    outside = make_plan(["books/live.jpg", "listings/x.jpg"], ["books/live.jpg"])
    with pytest.raises(GateRefused) as excinfo:
        check_scope(outside, config())
    assert [o.key for o in excinfo.value.offences] == ["listings/x.jpg"]
    assert "not under the plan's prefix" in refusal(excinfo)


def test_check_scope_cross_check_hit_refused() -> None:
    hit = CrossCheckHit(table="listings", column="cover", key="books/orphan-000.jpg")
    with pytest.raises(GateRefused) as excinfo:
        check_scope(plan().model_copy(update={"cross_check": [hit]}), config())
    assert "listings.cover" in refusal(excinfo)


def test_check_scope_unprotected_keys_under_prefix_pass() -> None:
    check_scope(plan(), config(safety={"protect": ["books/keep/*"]}))


# --------------------------------------------------------------------------- volume


def test_check_volume_ratio_above_max_refused_explaining_never_suggesting_override() -> None:
    big = plan(orphans=7, live=3)  # ratio 0.7
    with pytest.raises(GateRefused) as excinfo:
        check_volume(VolumeFigures.of_plan(big), volume_limits(big, config(), None), "books/")
    assert excinfo.value.gate == "volume"
    message = str(excinfo.value)
    assert "7 of the 10 objects under books/" in message and "nothing references" in message
    assert "lagging replica" in message and "truncated table" in message
    assert "--max-orphan-ratio" not in message


def test_check_volume_live_and_planned_figures_take_one_function() -> None:
    figures = VolumeFigures(objects=18, referenced_keys=12, referenced_found=12, orphans=6)
    with pytest.raises(GateRefused, match="6 planned orphans exist now"):
        check_volume(figures, Limits(max_orphan_ratio=1.0, max_deletes=2, overrides={}), "books/", live=True)


def test_volume_limits_command_line_ratio_overrides_and_is_recorded() -> None:
    big = plan(orphans=7, live=3)
    limits = volume_limits(big, config(), 0.75)
    check_volume(VolumeFigures.of_plan(big), limits, "books/")
    assert limits.overrides == {"max_orphan_ratio": 0.75}


def test_volume_limits_no_override_takes_stricter_ratio_and_records_nothing() -> None:
    limits = volume_limits(plan(), config(safety={"max_orphan_ratio": 0.1}), None)
    assert limits.max_orphan_ratio == 0.1
    assert limits.overrides == {}


def test_volume_limits_ratio_outside_unit_interval_is_an_error() -> None:
    with pytest.raises(ConfigError):
        volume_limits(plan(), config(), 1.5)


def test_check_volume_more_orphans_than_max_deletes_refused() -> None:
    with pytest.raises(GateRefused, match="max_deletes 1"):
        check_volume(VolumeFigures.of_plan(plan(orphans=2)), volume_limits(plan(orphans=2), config(safety={"max_deletes": 1}), None), "books/")


def test_check_volume_wrong_mapping_refused_even_with_override() -> None:
    # The incident: S3 has books/..., the sources say 515/...: nothing found.
    wrong = make_plan([f"books/{i}.jpg" for i in range(4)], [f"{i}.jpg" for i in range(4)])
    with pytest.raises(GateRefused, match="mapping is wrong"):
        check_volume(VolumeFigures.of_plan(wrong), volume_limits(wrong, config(), 1.0), "books/")


def test_check_volume_sources_returned_nothing_refused_even_with_override() -> None:
    empty = make_plan([f"books/{i}.jpg" for i in range(4)], [])
    with pytest.raises(GateRefused, match="returned no keys"):
        check_volume(VolumeFigures.of_plan(empty), volume_limits(empty, config(), 1.0), "books/")


# --------------------------------------------------------------------------- reversibility


def test_check_versioning_enabled_passes() -> None:
    check_versioning("Enabled", "bkt")


@pytest.mark.parametrize("status", ["Disabled", "Suspended"])
def test_check_versioning_not_enabled_refused(status: str) -> None:
    with pytest.raises(GateRefused) as excinfo:
        check_versioning(status, "bkt")
    assert excinfo.value.gate == "reversibility"
    assert "enable versioning" in str(excinfo.value)


# --------------------------------------------------------------------------- the refusal message


def test_gate_refused_details_show_first_twenty_and_a_count() -> None:
    offences = [Offence(f"books/{i:03}", "why") for i in range(25)]
    lines = GateRefused("scope", "no", offences).details()
    assert lines[:20] == [f"  books/{i:03}: why" for i in range(20)]
    assert lines[20:] == ["  ... and 5 more (25 in all)"]


# --------------------------------------------------------------------------- issue 10: sources, figures, live age


def test_check_sources_refuses_each_difference_by_source_name() -> None:
    from bmxgc.gates import check_sources

    doc = config_doc(bucket="bkt", prefix="books/", database_url=DB)
    doc["references"] = [{"name": "source0", "query": "SELECT s3_key FROM t", "keys": ["{value}"]}]
    check_sources(plan(), config_from_dict(doc))  # the same source: passes
    doc["references"] = [
        {"name": "source0", "query": "SELECT s3_key FROM t", "keys": ["books/{value}"]},
        {"name": "extra", "query": "SELECT k FROM u"},
    ]
    with pytest.raises(GateRefused) as excinfo:
        check_sources(plan(), config_from_dict(doc))
    assert excinfo.value.gate == "environment"
    assert [o.key for o in excinfo.value.offences] == ["references 'extra'", "references 'source0'"]
    assert "keys: plan has ['{value}']" in refusal(excinfo)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_check_plan_figures_refuses_non_finite_numbers(value: float) -> None:
    from bmxgc.gates import check_plan_figures

    check_plan_figures(plan())
    forged = plan().model_copy(update={"stats": plan().stats.model_copy(update={"orphan_ratio": value})})
    with pytest.raises(GateRefused) as excinfo:
        check_plan_figures(forged)
    assert excinfo.value.gate == "volume"
    assert "stats.orphan_ratio" in refusal(excinfo) and "not a finite number" in refusal(excinfo)


def test_check_live_age_refuses_objects_younger_than_min_age() -> None:
    from bmxgc.drift import group_by_key
    from bmxgc.gates import check_live_age
    from support import version

    p = plan(orphans=2)
    young, old = p.orphans[0].key, p.orphans[1].key
    rows = [version(young, age=timedelta(hours=1)), version(old, age=timedelta(days=2))]
    live = group_by_key(rows, {young, old})
    check_live_age(p.orphans, live, timedelta(minutes=30), NOW)
    with pytest.raises(GateRefused) as excinfo:
        check_live_age(p.orphans, live, timedelta(hours=24), NOW)
    assert excinfo.value.gate == "scope"
    assert [o.key for o in excinfo.value.offences] == [young]


def test_check_consent_is_one_gate_for_apply_undo_and_unlock() -> None:
    from bmxgc.gates import check_consent

    asked: list[str] = []

    def answer(yes: bool) -> Callable[[str], bool]:
        def confirm(summary: str) -> bool:
            asked.append(summary)
            return yes

        return confirm

    check_consent(answer(True), "delete 3", command="apply")
    with pytest.raises(GateRefused, match="undo cancelled: only 'yes' approves") as declined:
        check_consent(answer(False), "restore 3", command="undo")
    assert declined.value.gate == "consent" and asked == ["delete 3", "restore 3"]
    with pytest.raises(GateRefused, match="pass --auto-approve to apply without asking"):
        check_consent(None, "delete 3", command="apply")
    with pytest.raises(GateRefused, match="^refused by gate 'consent': held by x$"):
        check_consent(None, "s", command="unlock", no_terminal="held by x")
