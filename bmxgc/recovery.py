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

from bmxgc.config import LOCK_FOLDER
from bmxgc.model import RecoveryItem, VersionEntry, rfc3339


@dataclass(frozen=True)
class RecoveryScan:
    items: list[RecoveryItem]
    markers_in_window: int  # latest delete markers created in the window
    nothing_beneath: list[str]  # markers in the window with no version to bring back
    versions_listed: int


def find_recoverable(rows: Iterable[VersionEntry], since: datetime, until: datetime) -> RecoveryScan:
    """From a listing, the keys whose deletion in [since, until] can be undone.

    S3 lists a key's versions newest first, so the first noncurrent version
    seen for a key is the one a removed marker brings back. Only noncurrent
    versions and latest markers are kept: memory follows the deleted keys,
    not the bucket.
    """
    markers: dict[str, VersionEntry] = {}
    beneath: dict[str, VersionEntry] = {}
    listed = 0
    for row in rows:
        listed += 1
        if row.key.startswith(LOCK_FOLDER):
            continue
        if row.is_delete_marker:
            if row.is_latest and since <= row.last_modified <= until:
                markers[row.key] = row
        elif not row.is_latest:
            beneath.setdefault(row.key, row)
    items: list[RecoveryItem] = []
    empty: list[str] = []
    for key in sorted(markers, key=lambda k: k.encode("utf-8")):
        marker, version = markers[key], beneath.get(key)
        if version is None:
            empty.append(key)
            continue
        items.append(
            RecoveryItem(
                key=key,
                delete_marker_version_id=marker.version_id,
                deleted_at=rfc3339(marker.last_modified),
                restores_version_id=version.version_id,
                restores_etag=version.etag,
                restores_size=version.size,
            )
        )
    return RecoveryScan(items=items, markers_in_window=len(markers), nothing_beneath=empty, versions_listed=listed)
