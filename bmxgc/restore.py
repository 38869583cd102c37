"""Deciding what undo restores: a pure function of a receipt and live histories.

Undo removes exactly the delete markers apply created, and only where that
marker is still the key's latest version: a key uploaded again since keeps
its new version, and a marker already removed means already restored.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def plan_undo(receipt: Receipt, live: Mapping[str, KeyHistory]) -> RestorePlan:
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
            now = f"version {newer.version_id}" if newer is not None else "another version"
            skips.append(Skip(entry.key, f"has a newer {now} since the delete; left alone"))
    # Batches whose answer never reached the receipt (a crash mid-request):
    # restore a key if its latest row is a delete marker sitting directly on
    # the planned version, i.e. nothing was uploaded since.
    recorded = {e.key for e in receipt.deleted} | {e.key for e in receipt.errors}
    for batch in receipt.pending:
        for planned in batch.keys:
            if planned.key in recorded:
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
