"""Durations as SPEC.md writes them: an integer and one of s, m, h, d."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``"90m"`` -> ``timedelta(minutes=90)``; anything else is a ValueError."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration; write an integer and s, m, h or d, e.g. \"24h\"")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


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
