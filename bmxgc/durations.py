"""Durations as docs/reference.md writes them: an integer and one of s, m, h, d."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator

# ASCII digits only (``\d`` would take "١٢h"), and the whole text (``$`` would take "24h\n").
_DURATION = re.compile(r"([0-9]+)([smhd])", re.ASCII)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# A century: longer than any sensible min_age or max_plan_age, and short
# enough that "now minus it" is still a date Python can hold.
LONGEST = timedelta(days=36500)


def parse_duration(text: str) -> timedelta:
    """``"90m"`` -> ``timedelta(minutes=90)``; anything else is a ValueError."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration; write an integer and s, m, h or d, e.g. \"24h\"")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > LONGEST.total_seconds():
        raise ValueError(f"{text!r} is too long; the longest duration is 36500d (100 years)")
    return timedelta(seconds=seconds)


def _checked(text: str) -> str:
    parse_duration(text)
    return text


# A duration kept as written ("24h"), checked when a config or plan is read.
Duration = Annotated[str, AfterValidator(_checked)]


def format_duration(delta: timedelta) -> str:
    """A short human form: ``3h 5m``, ``2d 4h``, ``40s``."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "-" + format_duration(-delta)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    shown = [p for p in parts if p][:2]
    return " ".join(shown) if shown else f"{secs}s"
