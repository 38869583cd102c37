"""Durations as docs/reference.md writes them: an integer and s, m, h or d."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bmxgc.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    "text, delta",
    [("0s", timedelta(0)), ("90m", timedelta(minutes=90)), ("24h", timedelta(days=1)), ("36500d", timedelta(days=36500))],
)
def test_a_duration_is_an_integer_and_a_unit(text: str, delta: timedelta) -> None:
    assert parse_duration(text) == delta


@pytest.mark.parametrize("text", ["", "24", "1w", "1.5h", "-1h", " 24h", "24h\n", "١٢h", "24H"])
def test_anything_else_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match='e.g. "24h"'):
        parse_duration(text)


def test_a_duration_longer_than_a_century_is_refused() -> None:
    with pytest.raises(ValueError, match="the longest duration is 36500d"):
        parse_duration("36501d")


@pytest.mark.parametrize(
    "delta, shown",
    [(timedelta(seconds=40), "40s"), (timedelta(hours=3, minutes=5), "3h 5m"), (timedelta(days=2, hours=4, minutes=1), "2d 4h"),
     (-timedelta(minutes=5), "-5m")],
)
def test_format_duration_shows_two_units_at_most(delta: timedelta, shown: str) -> None:
    assert format_duration(delta) == shown
