"""Deciding what undo restores: a pure function of a receipt, live histories
and the apply's time window.

Undo makes current again the version apply deleted, by removing the delete
markers apply stacked above it; it never touches a key that has a newer real
version. Which markers are apply's:

- for a key the receipt records with its marker: that marker and every
  marker beneath it down to the deleted version (a DeleteObjects that S3 did
  twice leaves two, and the receipt can only name the one it was told of),
  and markers on top of it written in the apply's time window (a request S3
  carried out after apply had given up waiting for its answer);
- for a key whose marker apply never learned (a batch pending at a crash, a
  key under ``errors``, an answer without a marker id): every marker above the
  deleted version, when all were written in the apply's time window.

Erring toward restoring is safe (removing a delete marker never loses data);
erring toward "already restored" would leave an object deleted, so a key is
"already restored" only when its deleted version is current again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bmxgc.drift import KeyHistory, markers_above
from bmxgc.model import Receipt, parse_rfc3339, rfc3339

# S3 stamps markers with its own clock, the receipt has this host's. AWS
# refuses requests signed more than 15 minutes off its clock
# (RequestTimeTooSkewed), so a host that could delete was never further off.
CLOCK_SKEW = timedelta(minutes=15)


@dataclass(frozen=True)
class Window:
    """When apply may have written delete markers, skew included."""

    start: datetime
    end: datetime

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment <= self.end

    def __str__(self) -> str:
        return f"{rfc3339(self.start)}..{rfc3339(self.end)}"


def apply_window(receipt: Receipt, now: datetime, first_undo: datetime | None = None) -> Window:
    """From ``started_at`` to ``finished_at`` (or, for an apply that never
    finished, the first undo of it, else now), widened by CLOCK_SKEW each side.
    ``started_at`` and ``finished_at`` are whole seconds, rounded down: the skew covers that."""
    end = parse_rfc3339(receipt.finished_at) if receipt.finished_at else now
    if first_undo is not None and receipt.finished_at is None:
        end = min(end, first_undo)
    return Window(parse_rfc3339(receipt.started_at) - CLOCK_SKEW, end + CLOCK_SKEW)


@dataclass(frozen=True)
class Restore:
    key: str
    marker_version_id: str  # the newest delete marker to remove (the key's latest row)
    restores_version_id: str  # the version that becomes current again
    stacked: tuple[str, ...] = field(default=())  # older markers beneath it, apply's too

    @property
    def markers(self) -> tuple[str, ...]:
        """Every marker to remove, newest first."""
        return (self.marker_version_id, *self.stacked)


@dataclass(frozen=True)
class Skip:
    key: str
    reason: str
    # True when the key is left without a current version (deleted): undo
    # then fails, since the object stays deleted. False for a newer real version.
    still_deleted: bool = False


@dataclass(frozen=True)
class RestorePlan:
    restores: list[Restore]
    skips: list[Skip]
    already_restored: list[str]


def targets(receipt: Receipt) -> dict[str, tuple[str | None, str | None]]:
    """Every key apply may have deleted: key -> (version apply deleted, marker
    apply recorded). Recorded deletes first, then errors, then pending batches."""
    found: dict[str, tuple[str | None, str | None]] = {}
    for entry in receipt.deleted:
        found.setdefault(entry.key, (entry.version_id, entry.delete_marker_version_id))
    extra = [(e.key, e.version_id) for e in receipt.errors]
    extra += [(k.key, k.version_id) for batch in receipt.pending for k in batch.keys]
    for key, version_id in extra:
        known = found.get(key)
        if known is None:
            found[key] = (version_id, None)
        elif known[0] is None and version_id is not None:
            found[key] = (version_id, known[1])
    return found


def plan_undo(
    receipt: Receipt, live: Mapping[str, KeyHistory], window: Window, restored_before: Collection[str] = ()
) -> RestorePlan:
    """``restored_before``: keys an earlier undo run of this receipt restored.
    Once a key was restored (or its recorded marker is gone), a marker on it now
    is a later delete, someone else's (a later apply's), whatever its time."""
    restores: list[Restore] = []
    skips: list[Skip] = []
    already: list[str] = []
    for key, (version_id, recorded) in targets(receipt).items():
        history = live.get(key, KeyHistory())
        latest = history.latest
        if version_id is None and history.newest_object is not None:
            # An error entry of an older receipt, without the planned version:
            # the newest real version stands for it.
            version_id = history.newest_object.version_id
        if version_id is None or latest is None:
            skips.append(Skip(key, "no version of it exists any more; nothing to restore", still_deleted=True))
            continue
        above = markers_above(history, version_id)
        if above is None:
            newer = history.newest_object
            if not any(v.version_id == version_id for v in history.versions) or newer is None:
                skips.append(
                    Skip(
                        key,
                        f"the version apply deleted ({version_id}) no longer exists; nothing to restore",
                        still_deleted=latest.is_delete_marker,
                    )
                )
            elif latest.is_delete_marker:
                skips.append(
                    Skip(
                        key,
                        f"has a newer version {newer.version_id} since the delete, deleted too "
                        f"(delete marker {latest.version_id}); left alone",
                        still_deleted=True,
                    )
                )
            else:
                skips.append(Skip(key, f"has a newer version {newer.version_id} since the delete; left alone"))
            continue
        if not latest.is_delete_marker:
            already.append(key)  # the deleted version is current again (or was never deleted)
            continue
        recorded_at = next((i for i, m in enumerate(above) if m.version_id == recorded), None)
        recorded_gone = recorded is not None and history.marker(recorded) is None
        if recorded_gone or (recorded_at is None and key in restored_before):
            # No clock decides this: after apply's own marker was removed, a
            # marker on the key is a later delete (a later apply's), even
            # within the apply's time window.
            was = f"apply's delete marker {recorded} is gone" if recorded_gone else "an earlier undo restored it"
            skips.append(
                Skip(
                    key,
                    f"{was} and it was deleted again since (delete marker {latest.version_id}, "
                    f"{rfc3339(latest.last_modified)}), not by this apply; left alone",
                    still_deleted=True,
                )
            )
            continue
        if recorded_at is not None:
            # Markers on top of the recorded one are apply's too when written in
            # its window (a request S3 carried out after apply had given up on
            # its answer); a later one is someone else's delete.
            later = [m for m in above[:recorded_at] if m.last_modified not in window]
            if later:
                skips.append(
                    Skip(
                        key,
                        f"was deleted again since (delete marker {later[0].version_id}, "
                        f"{rfc3339(later[0].last_modified)}); left alone",
                        still_deleted=True,
                    )
                )
                continue
        else:
            outside = [m for m in above if m.last_modified not in window]
            if outside:
                skips.append(
                    Skip(
                        key,
                        f"deleted at {rfc3339(outside[0].last_modified)} (delete marker "
                        f"{outside[0].version_id}), outside the apply's time window {window}; left alone",
                        still_deleted=True,
                    )
                )
                continue
        restores.append(
            Restore(key, above[0].version_id, version_id, tuple(m.version_id for m in above[1:]))
        )
    return RestorePlan(restores=restores, skips=skips, already_restored=already)
