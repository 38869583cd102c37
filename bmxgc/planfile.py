"""The plan file: the only module that serialises plans and reads them back.

Reading checks ``format_version`` first (a newer tool's plan is refused, not
misread), then the schema, then the hash, like Terraform's planfile package.
``strict_json`` is the one JSON reader of every file bmxgc reads (plans,
receipts, undo records, recovery plans).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from bmxgc.errors import InputNotFound, PlanFileError
from bmxgc.model import FORMAT_VERSION, Plan, RecoveryPlan
from bmxgc.naming import plan_file_name
from bmxgc.validation import describe_validation_error

HASH_PREFIX = "sha256:"

# Summary first, orphans last: a reviewer reads the top of the file, and a
# `git diff` of two plans shows the orphan lines that came and went.
_FIELD_ORDER = (
    "format_version",
    "bmxgc_version",
    "created_at",
    "plan_hash",
    "bucket",
    "prefix",
    "bucket_versioning",
    "database",
    "references",
    "safety",
    "stats",
    "warnings",
    "sample_orphan_keys",
    "cross_check",
    "cross_check_columns",
    "cross_check_tables_not_scanned",
    "near_misses",
    "orphans",
)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _value in pairs:
            if name in seen:
                raise ValueError(f"duplicate key {json.dumps(name, ensure_ascii=False)} in one object")
            seen.add(name)
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a number")
    return value


def strict_json(text: str) -> Any:
    """``json.loads``, refusing what Python's json would let through: the same key
    twice in one object (the last would win, not the one a reviewer reads
    first), ``NaN`` and ``Infinity``, numbers too large to hold, and nesting too
    deep to read. Every refusal is a ValueError with a one-line message."""
    try:
        return json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant, parse_float=_finite
        )
    except RecursionError:
        raise ValueError("arrays or objects nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc})") from None
    # Any other ValueError (a duplicate key, NaN, an integer of thousands of
    # digits) already says what is wrong.


def canonical_bytes(obj: dict[str, Any]) -> bytes:
    """The bytes SPEC.md hashes: the object without ``plan_hash``, canonical JSON."""
    body = {k: v for k, v in obj.items() if k != "plan_hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def compute_hash(obj: dict[str, Any]) -> str:
    return HASH_PREFIX + hashlib.sha256(canonical_bytes(obj)).hexdigest()


# What a plan holds in ``plan_hash`` until ``seal`` computes the real one.
PLACEHOLDER_HASH = HASH_PREFIX + "0" * 64

Hashed = TypeVar("Hashed", bound=BaseModel)


def document(model: BaseModel) -> dict[str, Any]:
    """A plan (or recovery plan) as the JSON object that is written and hashed."""
    return model.model_dump(mode="json", exclude_none=True)


def seal(model: Hashed) -> Hashed:
    """The same plan with ``plan_hash`` computed over everything else."""
    return model.model_copy(update={"plan_hash": compute_hash(document(model))})


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    return document(plan)


def render_plan_json(plan: Plan) -> str:
    """The file's text: indented summary, one orphan per line, trailing newline."""
    doc = plan_to_dict(plan)
    ordered = [k for k in _FIELD_ORDER if k in doc] + sorted(k for k in doc if k not in _FIELD_ORDER)
    lines = ["{"]
    for index, field in enumerate(ordered):
        comma = "," if index < len(ordered) - 1 else ""
        name = json.dumps(field)
        value = doc[field]
        if field == "orphans":
            lines.append(f"  {name}: {_one_item_per_line(value)}{comma}")
        else:
            text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
            lines.append(f"  {name}: {text}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _one_item_per_line(items: list[Any]) -> str:
    if not items:
        return "[]"
    rows = [json.dumps(item, ensure_ascii=False, separators=(", ", ": ")) for item in items]
    return "[\n    " + ",\n    ".join(rows) + "\n  ]"


def default_file_name(plan: Plan) -> str:
    return plan_file_name(plan.created, plan.plan_hash)


def parse_plan_text(text: str, source: str) -> Plan:
    """Check a plan's text: JSON, then ``format_version``, then schema, then hash."""
    try:
        raw = strict_json(text)
    except ValueError as exc:
        raise PlanFileError(f"{source}: not a plan file: {exc}") from None
    if not isinstance(raw, dict):
        raise PlanFileError(f"{source}: not a plan file: the JSON is not an object")
    if raw.get("kind") == "recovery":
        raise PlanFileError(
            f"{source}: this is a recovery plan written by 'bmxgc recover', not a plan to show or apply; "
            "read it as JSON"
        )
    version = raw.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise PlanFileError(
            f"{source}: unknown format_version {version!r} (this bmxgc reads {FORMAT_VERSION}); "
            "use the bmxgc version that wrote it, or plan again"
        )
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as exc:
        raise PlanFileError(
            f"{source}: not a valid plan: {describe_validation_error(exc, unknown='unknown field')}; "
            "plan files are never edited: plan again"
        ) from None
    expected = compute_hash(raw)
    if raw["plan_hash"] != expected:
        raise PlanFileError(
            f"{source}: plan_hash does not match the content (file says {raw['plan_hash'][:19]}..., "
            f"content hashes to {expected[:19]}...); the plan was edited after it was made: plan again"
        )
    return plan


def parse_recovery_plan(text: str, source: str) -> RecoveryPlan:
    """Check a recovery plan's text as a plan's is checked: JSON, version, schema, hash."""
    try:
        raw = strict_json(text)
        if not isinstance(raw, dict) or raw.get("kind") != "recovery":
            raise ValueError("not a recovery plan")
        recovery = RecoveryPlan.model_validate(raw)
    except ValidationError as exc:
        raise PlanFileError(
            f"{source}: not a valid recovery plan: {describe_validation_error(exc, unknown='unknown field')}"
        ) from None
    except ValueError as exc:
        raise PlanFileError(f"{source}: not a recovery plan file: {exc}") from None
    if raw["plan_hash"] != compute_hash(raw):
        raise PlanFileError(f"{source}: plan_hash does not match the content; the file was edited")
    return recovery


def load_plan(path: str | os.PathLike[str]) -> Plan:
    plan_path = Path(path)
    try:
        text = plan_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputNotFound(f"{plan_path}: plan file not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanFileError(f"{plan_path}: cannot read the plan file: {exc}") from None
    return parse_plan_text(text, str(plan_path))
