"""The plan file: the only module that serialises plans and reads them back.

Reading checks ``format_version`` first (a newer tool's plan is refused, not
misread), then the schema, then the hash, like Terraform's planfile package.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from bmxgc.config import describe_validation_error
from bmxgc.errors import InputNotFound, PlanFileError
from bmxgc.model import FORMAT_VERSION, Plan

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
    stamp = plan.created.strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{plan.plan_hash.removeprefix(HASH_PREFIX)[:12]}.json"


def parse_plan_text(text: str, source: str) -> Plan:
    """Check a plan's text: JSON, then ``format_version``, then schema, then hash."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(f"{source}: not a plan file: invalid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise PlanFileError(f"{source}: not a plan file: the JSON is not an object")
    if raw.get("kind") == "recovery":
        raise PlanFileError(
            f"{source}: this is a recovery plan written by 'bmxgc recover', not a plan to show or apply; "
            "read it as JSON"
        )
    version = raw.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
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


def load_plan(path: str | os.PathLike[str]) -> Plan:
    plan_path = Path(path)
    try:
        text = plan_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputNotFound(f"{plan_path}: plan file not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanFileError(f"{plan_path}: cannot read the plan file: {exc}") from None
    return parse_plan_text(text, str(plan_path))
