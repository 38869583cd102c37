"""The codec of every file bmxgc writes: plans, receipts, recovery plans and
undo records. The only module that serialises them and reads them back. Pure.

Each kind is a pydantic model (``bmxgc.model``) with a ``kind`` and a
``format_version``. One reader, ``read``, checks in this order: JSON
(``strict_json``), kind, known ``format_version``, schema (unknown fields
refused), then the hash where the kind has one (plans and recovery plans),
like Terraform's planfile package. One writer, ``render``, lays every kind
out the same way: summary fields first, one entry per line. Where a file
goes (atomic, never overwritten, or replaced) is ``bmxgc.store``'s part.

A plan has no ``kind`` field: docs/reference.md fixes what a plan holds and how it is
hashed, so a JSON object without ``kind`` (and without an undo record's
``runs`` or a receipt's ``status``) is read as a plan. Receipts say ``apply``
or ``recover``; the ``kind`` of a receipt or undo record written before files
said their kind is inferred the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from bmxgc.errors import InputNotFound, PlanFileError
from bmxgc.model import FORMAT_VERSION, ObjectVersion, Plan, PlanSummary, Receipt, RecoveryPlan, UndoRecord
from bmxgc.naming import plan_file_name, plan_for, receipt_for_plan
from bmxgc.validation import describe_validation_error

HASH_PREFIX = "sha256:"

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
    """The bytes docs/plan-file.md hashes: the object without ``plan_hash``, canonical JSON."""
    body = {k: v for k, v in obj.items() if k != "plan_hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def compute_hash(obj: dict[str, Any]) -> str:
    return HASH_PREFIX + hashlib.sha256(canonical_bytes(obj)).hexdigest()


# What a plan holds in ``plan_hash`` until ``seal`` computes the real one.
PLACEHOLDER_HASH = HASH_PREFIX + "0" * 64

Doc = TypeVar("Doc", bound=BaseModel)


@dataclass(frozen=True)
class FileKind(Generic[Doc]):
    """One kind of file: its model, how it is named in messages, which of its
    fields are lists written one entry per line, and whether it is hashed."""

    model: type[Doc]
    noun: str  # "a plan", "a receipt", ...
    kinds: tuple[str, ...]  # the values its ``kind`` field takes ("" for none)
    not_a: str  # "not a plan file": what a file that is not JSON is called
    entries: tuple[str, ...] = ()
    hashed: bool = False
    edited_hint: str = ""  # after a schema or hash refusal
    keep_none: bool = False  # a receipt writes "finished_at": null while in progress

    @property
    def name(self) -> str:
        """``plan``, ``receipt``, ``recovery plan``, ``undo record``."""
        return self.noun.split(" ", 1)[1]


PLAN = FileKind(
    Plan, "a plan", ("",), "not a plan file", ("orphans",), hashed=True,
    edited_hint="; plan files are never edited: plan again",
)
RECEIPT = FileKind(
    Receipt, "a receipt", ("apply", "recover"), "not a receipt", ("deleted", "errors", "pending", "restored"),
    keep_none=True,
)
RECOVERY_PLAN = FileKind(
    RecoveryPlan, "a recovery plan", ("recovery",), "not a recovery plan file", ("restores",), hashed=True
)
UNDO_RECORD = FileKind(UndoRecord, "an undo record", ("undo",), "not an undo record")
KINDS: tuple[FileKind[Any], ...] = (PLAN, RECEIPT, RECOVERY_PLAN, UNDO_RECORD)


def kind_of(raw: dict[str, Any]) -> str:
    """The ``kind`` a file says it is, or the one its fields show ("" is a plan)."""
    kind = raw.get("kind")
    if kind is not None:
        return kind if isinstance(kind, str) else repr(kind)
    if "runs" in raw:
        return "undo"
    if "status" in raw:
        return "apply"
    return ""


def _sibling(found: FileKind[Any], wanted: FileKind[Any], source: str) -> str:
    """'; its receipt would be X': where the file the caller wanted would be, when naming says."""
    name = Path(source.replace("\\", "/")).name
    if wanted is RECEIPT and found in (PLAN, UNDO_RECORD):
        return f"; its receipt would be {receipt_for_plan(name)}"
    if wanted is PLAN and found in (RECEIPT, UNDO_RECORD):
        return f"; its plan would be {plan_for(name)}"
    if found is RECOVERY_PLAN and wanted is PLAN:
        return ", written by 'bmxgc recover'; read it as JSON"
    return ""


def read(text: str, source: str, *wanted: FileKind[Any]) -> Any:
    """A file's text checked as one of the ``wanted`` kinds: JSON, kind,
    format_version, schema, hash. Every refusal is a PlanFileError naming
    ``source``, one line. The type of the result is the kind's model."""
    first = wanted[0]
    try:
        raw = strict_json(text)
    except ValueError as exc:
        raise PlanFileError(f"{source}: {first.not_a}: {exc}") from None
    if not isinstance(raw, dict):
        raise PlanFileError(f"{source}: {first.not_a}: the JSON is not an object")
    kind = kind_of(raw)
    found = next((k for k in KINDS if kind in k.kinds), None)
    if found is None:
        raise PlanFileError(f"{source}: {first.not_a}: unknown kind {kind!r}")
    if found not in wanted:
        raise PlanFileError(f"{source} is {found.noun}, not {first.noun}{_sibling(found, first, source)}")
    version = raw.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        label = "" if found is PLAN else found.name + " "
        raise PlanFileError(
            f"{source}: unknown {label}format_version {version!r} (this bmxgc reads {FORMAT_VERSION}); "
            f"use the bmxgc version that wrote it" + (", or plan again" if found is PLAN else "")
        )
    try:
        document_ = found.model.model_validate(raw)
    except ValidationError as exc:
        raise PlanFileError(
            f"{source}: not a valid {found.name}: "
            f"{describe_validation_error(exc, unknown='unknown field')}{found.edited_hint}"
        ) from None
    if found.hashed:
        try:
            expected = compute_hash(raw)
        except UnicodeEncodeError as exc:  # a lone surrogate, written as \ud800: not UTF-8
            raise PlanFileError(f"{source}: not a valid {found.name}: {exc}{found.edited_hint}") from None
        claimed = str(raw["plan_hash"])
        if claimed != expected:
            raise PlanFileError(
                f"{source}: plan_hash does not match the content (file says {claimed[:19]}..., "
                f"content hashes to {expected[:19]}...); the {found.name} was edited after it was made"
                + (": plan again" if found is PLAN else "")
            )
    return document_


def document(model: BaseModel) -> dict[str, Any]:
    """A file's model as the JSON object that is written (and hashed)."""
    return model.model_dump(mode="json", exclude_none=True)


def seal(model: Doc) -> Doc:
    """The same plan (or recovery plan) with ``plan_hash`` computed over everything else."""
    if isinstance(model, Plan):
        return model.model_copy(update={"plan_hash": plan_hash_of(model)})
    return model.model_copy(update={"plan_hash": compute_hash(document(model))})


def render(model: BaseModel) -> str:
    """A file's text: summary fields first, in the model's order, each indented;
    then the long lists, one entry per line; a trailing newline."""
    if isinstance(model, Plan):
        return "".join(plan_chunks(model))
    kind = next(k for k in KINDS if isinstance(model, k.model))
    doc = model.model_dump(mode="json") if kind.keep_none else document(model)
    ordered = [f for f in doc if f not in kind.entries] + [f for f in kind.entries if f in doc]
    lines = ["{"]
    for index, field in enumerate(ordered):
        comma = "," if index < len(ordered) - 1 else ""
        name = json.dumps(field)
        value = doc[field]
        if field in kind.entries:
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


# --- plans: the names the rest of bmxgc (and its tests) use ---


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    return document(plan)


def render_plan_json(plan: Plan) -> str:
    return render(plan)


def summary_document(plan: PlanSummary) -> dict[str, Any]:
    """A plan's JSON object without ``orphans``."""
    return plan.model_dump(mode="json", exclude_none=True, exclude={"orphans"})


def default_file_name(plan: Plan) -> str:
    return plan_file_name(plan.created, plan.plan_hash)


def parse_plan_text(text: str, source: str) -> Plan:
    """Check a plan's text: JSON, kind, ``format_version``, schema, hash."""
    from bmxgc import planstream

    return planstream.plan_of(planstream.PlanStream(planstream.TextReader(text), source))


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """A plan file read and checked (JSON, kind, ``format_version``, schema, hash), orphans and all."""
    from bmxgc import planstream

    with planstream.open_plan(path) as stream:
        return planstream.plan_of(stream)


# --- plans, one line at a time ---
#
# A plan can list millions of orphans. It is written, hashed and read one
# orphan at a time; the hash stays the one docs/plan-file.md defines (the
# canonical JSON of the whole object), built in the order of its bytes: the
# summary fields whose names sort before "orphans", the orphans, the rest.

_string = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) writes
_LINE = '    {"key": %s, "version_id": %s, "etag": %s, "size": %d, "last_modified": %s}'
_CANONICAL = '{"etag":%s,"key":%s,"last_modified":%s,"size":%d,"version_id":%s}'
_BATCH = 4096


def canonical_around_orphans(summary: dict[str, Any]) -> tuple[bytes, bytes]:
    """The canonical bytes before the first orphan and after the last one."""
    body = {k: v for k, v in summary.items() if k not in ("plan_hash", "orphans")}

    def members(part: dict[str, Any]) -> str:
        return json.dumps(part, sort_keys=True, separators=(",", ":"), ensure_ascii=False)[1:-1]

    before = members({k: v for k, v in body.items() if k < "orphans"})
    after = members({k: v for k, v in body.items() if k > "orphans"})
    head = "{" + before + ("," if before else "") + '"orphans":['
    tail = "]" + ("," + after if after else "") + "}"
    return head.encode("utf-8"), tail.encode("utf-8")


def canonical_orphan(o: ObjectVersion) -> str:
    version_id, etag, size, last_modified = o.fields()
    return _CANONICAL % (_string(etag), _string(o.key), _string(last_modified), size, _string(version_id))


def _line(o: ObjectVersion) -> str:
    version_id, etag, size, last_modified = o.fields()
    return _LINE % (_string(o.key), _string(version_id), _string(etag), size, _string(last_modified))


def plan_hash_of(plan: Plan) -> str:
    """``compute_hash(document(plan))``, without the document: one orphan at a time."""
    head, tail = canonical_around_orphans(summary_document(plan))
    digest = hashlib.sha256(head)
    orphans = plan.orphans
    for start in range(0, len(orphans), _BATCH):
        text = ",".join(map(canonical_orphan, orphans[start : start + _BATCH]))
        digest.update(((b"," if start else b"") + text.encode("utf-8")))
    digest.update(tail)
    return HASH_PREFIX + digest.hexdigest()


def plan_chunks(plan: Plan) -> Iterator[str]:
    """``render(plan)`` in pieces of a few thousand orphans, for writing without holding the text."""
    doc = summary_document(plan)
    lines = ["{"]
    for field, value in doc.items():
        text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        lines.append(f"  {json.dumps(field)}: {text},")
    orphans = plan.orphans
    if not orphans:
        lines.append('  "orphans": []')
        yield "\n".join(lines) + "\n}\n"
        return
    lines.append('  "orphans": [')
    yield "\n".join(lines) + "\n"
    for start in range(0, len(orphans), _BATCH):
        rows = list(map(_line, orphans[start : start + _BATCH]))
        last = start + _BATCH >= len(orphans)
        yield ",\n".join(rows) + ("\n" if last else ",\n")
    yield "  ]\n}\n"

