"""What a reviewer reads of plans: a plan's summary, and what changed between two. Pure."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bmxgc.model import ObjectVersion, Plan, PlanSummary
from bmxgc.planfile import summary_document
from bmxgc.planstream import PlanStream, Row, record


def summary(plan: PlanSummary) -> dict[str, Any]:
    """The plan without its ``orphans`` list: what ``show --format json`` prints."""
    return summary_document(plan)


@dataclass(frozen=True)
class Change:
    """One summary value that moved: ``stats.orphans``, ``safety.protect[0]``..."""

    path: str
    old: Any
    new: Any


@dataclass(frozen=True)
class PlanDiff:
    """What changed between two plans of (usually) the same prefix."""

    added: list[ObjectVersion]  # orphans in the new plan only
    removed: list[ObjectVersion]  # orphans in the old plan only
    changed: list[tuple[ObjectVersion, ObjectVersion]]  # same key, another version or ETag
    changes: list[Change] = field(default_factory=list)  # stats, settings
    # Warnings compared as sets: a warning that only moved in the list is no news.
    warnings_added: list[str] = field(default_factory=list)
    warnings_removed: list[str] = field(default_factory=list)

    @property
    def same_orphans(self) -> bool:
        return not (self.added or self.removed or self.changed)


# Fields that differ between any two plans and say nothing about the orphans.
_NOT_COMPARED = ("created_at", "plan_hash", "sample_orphan_keys", "orphans", "warnings")


def diff_plans(old: Plan, new: Plan) -> PlanDiff:
    """Pure: the keys that came and went, and every summary value that moved."""
    old_by_key = {o.key: o for o in old.orphans}
    new_by_key = {o.key: o for o in new.orphans}
    added = [o for k, o in new_by_key.items() if k not in old_by_key]
    removed = [o for k, o in old_by_key.items() if k not in new_by_key]
    changed = [
        (old_by_key[k], o)
        for k, o in new_by_key.items()
        if k in old_by_key and (old_by_key[k].version_id, old_by_key[k].etag) != (o.version_id, o.etag)
    ]
    return _diff(old, new, added, removed, changed)


def diff_streams(old: PlanStream, new: PlanStream) -> PlanDiff:
    """``diff_plans`` of two plan files read side by side: both list their
    orphans sorted by key, so one pass over each finds what came and went,
    in the same order, holding only what it reports."""
    added: list[ObjectVersion] = []
    removed: list[ObjectVersion] = []
    changed: list[tuple[ObjectVersion, ObjectVersion]] = []
    before, after = _rows(old), _rows(new)
    a, b = next(before, None), next(after, None)
    while a is not None and b is not None:
        if a[0] == b[0]:
            if a[1] != b[1] or a[2] != b[2]:
                changed.append((record(a), record(b)))
            a, b = next(before, None), next(after, None)
        elif a[0] < b[0]:
            removed.append(record(a))
            a = next(before, None)
        else:
            added.append(record(b))
            b = next(after, None)
    while a is not None:
        removed.append(record(a))
        a = next(before, None)
    while b is not None:
        added.append(record(b))
        b = next(after, None)
    # Read whole on the way (out of layout): the whole plan, with any field after its orphans.
    return _diff(old.whole or old.summary, new.whole or new.summary, added, removed, changed)


def _rows(stream: PlanStream) -> Iterator[Row]:
    for batch in stream.batches():
        yield from batch


def _diff(
    old: PlanSummary,
    new: PlanSummary,
    added: list[ObjectVersion],
    removed: list[ObjectVersion],
    changed: list[tuple[ObjectVersion, ObjectVersion]],
) -> PlanDiff:
    return PlanDiff(
        added=added,
        removed=removed,
        changed=changed,
        changes=summary_changes(old, new),
        warnings_added=[w for w in dict.fromkeys(new.warnings) if w not in set(old.warnings)],
        warnings_removed=[w for w in dict.fromkeys(old.warnings) if w not in set(new.warnings)],
    )


def summary_changes(old: PlanSummary, new: PlanSummary) -> list[Change]:
    """Every summary value that differs, leaf by leaf, in a stable order."""
    from deepdiff import DeepDiff  # only diff needs it: show and verify start without it

    old_doc, new_doc = summary_document(old), summary_document(new)
    for name in _NOT_COMPARED:
        old_doc.pop(name, None)
        new_doc.pop(name, None)
    tree = DeepDiff(old_doc, new_doc, view="tree")
    changes = []
    for kind in tree:
        for item in tree[kind]:
            old_value = None if kind.endswith("_added") else item.t1
            new_value = None if kind.endswith("_removed") else item.t2
            changes.append(Change(_dotted(item.path(output_format="list")), old_value, new_value))
    return sorted(changes, key=lambda c: c.path)


def _dotted(path: list[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
