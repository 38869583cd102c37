"""Deciding what ``recover`` restores when there is no receipt: pure.

A key is restored when its latest row is a delete marker created inside the
window and an object version lies beneath it; the marker is removed, so that
version is current again. A key uploaded again since has a real latest
version and is not touched; bmxgc's own lock objects are never touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from bmxgc.model import RecoveryItem, VersionEntry, rfc3339
from bmxgc.naming import LOCK_FOLDER


@dataclass(frozen=True)
class RecoveryScan:
    items: list[RecoveryItem]
    markers_in_window: int  # latest delete markers created in the window
    nothing_beneath: list[str]  # markers in the window with no version to bring back
    versions_listed: int


def find_recoverable(rows: Iterable[VersionEntry], since: datetime, until: datetime) -> RecoveryScan:
    """From a listing, the keys whose deletion in [since, until] can be undone.

    S3 lists a key's versions newest first, so the first noncurrent version
    seen for a key is the one a removed marker brings back, and a key's
    latest marker comes before its older ones. A key deleted more than once
    has several markers above that version: all of them are removed when all
    were created in the window; if one is older, the key was already deleted
    before the window and is left alone. Only noncurrent versions and the
    markers of keys whose latest marker is in the window are kept: memory
    follows the deleted keys, not the bucket.
    """
    markers: dict[str, list[VersionEntry]] = {}  # newest first
    beneath: dict[str, VersionEntry] = {}
    listed = 0
    for row in rows:
        listed += 1
        if row.key.startswith(LOCK_FOLDER):
            continue
        if row.is_delete_marker:
            if row.is_latest:
                if since <= row.last_modified <= until:
                    markers[row.key] = [row]
            elif row.key in markers:
                markers[row.key].append(row)
        elif not row.is_latest:
            beneath.setdefault(row.key, row)
    items: list[RecoveryItem] = []
    empty: list[str] = []
    for key in sorted(markers, key=lambda k: k.encode("utf-8")):
        version = beneath.get(key)
        # Listed times have whole seconds: a marker of the version's second counts as above it.
        stack = [m for m in markers[key] if version is not None and m.last_modified >= version.last_modified]
        if version is None or any(m.last_modified < since for m in stack):
            empty.append(key)
            continue
        marker = stack[0]
        items.append(
            RecoveryItem(
                key=key,
                delete_marker_version_id=marker.version_id,
                deleted_at=rfc3339(marker.last_modified),
                restores_version_id=version.version_id,
                restores_etag=version.etag,
                restores_size=version.size,
                stacked_delete_marker_version_ids=[m.version_id for m in stack[1:]] or None,
            )
        )
    return RecoveryScan(items=items, markers_in_window=len(markers), nothing_beneath=empty, versions_listed=listed)
