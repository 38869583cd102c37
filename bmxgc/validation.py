"""pydantic's validation errors as one line: ``key.path: what is wrong``.

Used for every file bmxgc reads (config, plans, receipts, undo records, locks).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError


def describe_validation_error(
    exc: ValidationError, unknown: str = "unknown key; check its spelling against the config reference"
) -> str:
    """The first problem pydantic found, as ``key.path: what is wrong``."""
    first = exc.errors()[0]
    location = _dotted(first["loc"])
    kind = first["type"]
    if kind == "extra_forbidden":
        message = unknown
    elif kind == "missing":
        message = "required but missing"
    else:
        message = str(first["msg"]).removeprefix("Value error, ")
        if kind.endswith(("_type", "_parsing")) or kind in ("literal_error", "finite_number"):
            message += _shown_input(first.get("input"))
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{location}: {message}{suffix}" if location else f"{message}{suffix}"


def _shown_input(value: Any) -> str:
    """``, not true``: the offending value, when it is a short scalar (as JSON writes it)."""
    if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 40):
        return f", not {json.dumps(value, ensure_ascii=False)}"
    return ""


def _dotted(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        else:
            parts.append(item)
    return ".".join(parts)
