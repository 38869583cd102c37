"""Finding drift: pure functions comparing a plan with live state.

Live state is what a listing says now, grouped by key, and the keys the
reference sources keep alive now. Nothing here talks to S3 or a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bmxgc.errors import Offence
from bmxgc.model import ObjectVersion, VersionEntry


@dataclass
class KeyHistory:
    """One key's rows from a listing, in S3's order (newest first per kind)."""

    versions: list[VersionEntry] = field(default_factory=list)
    markers: list[VersionEntry] = field(default_factory=list)

    @property
    def latest(self) -> VersionEntry | None:
        for row in self.versions + self.markers:
            if row.is_latest:
                return row
        return None

    @property
    def newest_object(self) -> VersionEntry | None:
        """The newest real version (S3 lists a key's versions newest first)."""
        return self.versions[0] if self.versions else None

    def marker(self, version_id: str) -> VersionEntry | None:
        return next((m for m in self.markers if m.version_id == version_id), None)


def markers_above(history: KeyHistory, version_id: str) -> list[VersionEntry] | None:
    """The delete markers stacked above ``version_id``, newest first, when it is
    still the key's newest real version; None when it is gone or a newer real
    version exists. Listed times may have whole seconds only: a marker of the
    version's own second counts as above it."""
    if not history.versions or history.versions[0].version_id != version_id:
        return None
    version = history.versions[0]
    return [m for m in history.markers if m.last_modified >= version.last_modified]


def group_by_key(rows: Iterable[VersionEntry], keys: set[str]) -> dict[str, KeyHistory]:
    """The histories of ``keys`` only, so memory follows the plan, not the bucket."""
    histories: dict[str, KeyHistory] = {}
    for row in rows:
        if row.key not in keys:
            continue
        history = histories.setdefault(row.key, KeyHistory())
        (history.markers if row.is_delete_marker else history.versions).append(row)
    return histories


def _describe(row: VersionEntry) -> str:
    return f"version {row.version_id} (etag {row.etag}, {row.size:,} bytes)"


def find_drift(
    orphans: Sequence[ObjectVersion],
    live: Mapping[str, KeyHistory],
    referenced_now: Mapping[str, str],
) -> list[Offence]:
    """Every planned object that changed, key by key, with what was expected
    and what is there now. ``referenced_now`` maps a key to the source that
    keeps it alive today."""
    offences: list[Offence] = []
    for orphan in orphans:
        planned = f"planned {orphan.version_id} (etag {orphan.etag}, {orphan.size:,} bytes)"
        source = referenced_now.get(orphan.key)
        if source is not None:
            offences.append(Offence(orphan.key, f"now referenced by source '{source}'; {planned}"))
            continue
        history = live.get(orphan.key)
        latest = history.latest if history else None
        if latest is None:
            offences.append(Offence(orphan.key, f"{planned}; now: gone (no version exists)"))
        elif latest.is_delete_marker:
            offences.append(Offence(orphan.key, f"{planned}; now: deleted (latest is a delete marker)"))
        elif (latest.version_id, latest.etag, latest.size) != (orphan.version_id, orphan.etag, orphan.size):
            offences.append(Offence(orphan.key, f"{planned}; now: {_describe(latest)}"))
    return offences
