"""Deciding what undo restores: a pure function of a receipt and live histories.

Undo removes exactly the delete markers apply created, and only where that
marker is still the key's latest version: a key uploaded again since keeps
its new version, and a marker already removed means already restored.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from bmxgc.drift import KeyHistory
from bmxgc.model import Receipt


@dataclass(frozen=True)
class Restore:
    key: str
    marker_version_id: str  # the delete marker to remove
    restores_version_id: str  # the version that becomes current again


@dataclass(frozen=True)
class Skip:
    key: str
    reason: str


@dataclass(frozen=True)
class RestorePlan:
    restores: list[Restore]
    skips: list[Skip]
    already_restored: list[str]


def plan_undo(
    receipt: Receipt, live: Mapping[str, KeyHistory], restored_before: Collection[str] = ()
) -> RestorePlan:
    """``restored_before``: keys an earlier undo run of this receipt restored."""
    restores: list[Restore] = []
    skips: list[Skip] = []
    already: list[str] = []
    for entry in receipt.deleted:
        history = live.get(entry.key, KeyHistory())
        marker = history.marker(entry.delete_marker_version_id)
        if marker is None:
            already.append(entry.key)
        elif marker.is_latest:
            restores.append(Restore(entry.key, marker.version_id, entry.version_id))
        else:
            newer = history.latest
            if newer is not None and newer.is_delete_marker:
                now = f"was deleted again since (delete marker {newer.version_id})"
            else:
                now = f"has a newer version {newer.version_id if newer else '?'} since the delete"
            skips.append(Skip(entry.key, f"{now}; left alone"))
    # Batches whose answer never reached the receipt (a crash mid-request):
    # restore a key if its latest row is a delete marker sitting directly on
    # the planned version, i.e. nothing was uploaded since.
    # A key an earlier run restored is done: a marker on it now is someone
    # else's delete, not ours.
    recorded = {e.key for e in receipt.deleted} | {e.key for e in receipt.errors}
    for batch in receipt.pending:
        for planned in batch.keys:
            if planned.key in recorded:
                continue
            if planned.key in restored_before:
                already.append(planned.key)
                continue
            history = live.get(planned.key, KeyHistory())
            latest = history.latest
            newest = history.newest_object
            if latest is None or newest is None:
                skips.append(Skip(planned.key, "no version of it exists any more; nothing to restore"))
            elif not latest.is_delete_marker:
                if latest.version_id == planned.version_id:
                    already.append(planned.key)  # the request never deleted it
                else:
                    skips.append(Skip(planned.key, f"has a newer version {latest.version_id}; left alone"))
            elif newest.version_id != planned.version_id:
                skips.append(Skip(planned.key, f"has a newer version {newest.version_id}; left alone"))
            else:
                restores.append(Restore(planned.key, latest.version_id, planned.version_id))
    return RestorePlan(restores=restores, skips=skips, already_restored=already)
