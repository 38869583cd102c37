"""The plan and receipt as data: pydantic models, nothing that touches a file."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT_VERSION = 1


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def rfc3339(moment: datetime) -> str:
    """``2026-11-28T12:00:00Z``: UTC, whole seconds, as SPEC.md writes times."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment.astimezone(timezone.utc)


@dataclass(frozen=True, slots=True)
class VersionEntry:
    """One row of ListObjectVersions: an object version or a delete marker.

    A plain dataclass, not a pydantic model: a listing makes one per version,
    and only orphans become ``ObjectVersion`` records in the plan.
    """

    key: str
    version_id: str
    is_latest: bool
    is_delete_marker: bool
    last_modified: datetime
    etag: str = ""
    size: int = 0

    def as_object(self) -> ObjectVersion:
        return ObjectVersion(
            key=self.key,
            version_id=self.version_id,
            etag=self.etag,
            size=self.size,
            last_modified=rfc3339(self.last_modified),
        )


class _Record(BaseModel):
    # Plans are reviewed and hashed: a field nobody knows about is a doubt.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ObjectVersion(_Record):
    """One current object version as S3 listed it."""

    key: str
    version_id: str
    etag: str
    size: int
    last_modified: str


class ReferenceSummary(_Record):
    name: str
    query: str
    keys: list[str]
    rows: int = 0
    skipped_null: int = 0
    skipped_empty: int = 0


class SafetySummary(_Record):
    max_orphan_ratio: float
    max_deletes: int
    min_age: str
    max_plan_age: str
    protect: list[str]


class Stats(_Record):
    objects_scanned: int
    bytes_scanned: int
    referenced_keys: int
    referenced_found: int
    dangling_references: int
    orphans: int
    orphan_bytes: int
    orphan_ratio: float
    skipped_young: int
    skipped_protected: int
    referenced_outside_prefix: int = 0
    versions_listed: int = 0


class CrossCheckHit(_Record):
    table: str
    column: str
    key: str


class Plan(_Record):
    format_version: Literal[1]
    bmxgc_version: str
    created_at: str
    plan_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    bucket: str
    prefix: str
    bucket_versioning: str
    database: str
    references: list[ReferenceSummary]
    safety: SafetySummary
    stats: Stats
    warnings: list[str]
    sample_orphan_keys: list[str]
    cross_check: list[CrossCheckHit] | None = None
    cross_check_columns: list[str] | None = None
    cross_check_tables_not_scanned: list[str] | None = None
    orphans: list[ObjectVersion]

    @property
    def created(self) -> datetime:
        return parse_rfc3339(self.created_at)


class DeletedEntry(_Record):
    key: str
    version_id: str
    delete_marker_version_id: str


class KeyFailure(_Record):
    key: str
    code: str
    message: str
    # apply: the planned version, so that undo can judge the key from live state.
    version_id: str | None = None


ReceiptStatus = Literal["in_progress", "complete", "partial"]


class PendingBatch(_Record):
    """A batch whose DeleteObjects request was sent but whose answer is not recorded."""

    sent_at: str
    keys: list[ObjectVersion]


class RestoredEntry(_Record):
    """A key made current again by removing one delete marker."""

    key: str
    version_id: str  # the version that is current again
    removed_delete_marker_version_id: str


class RecoveryItem(_Record):
    key: str
    delete_marker_version_id: str
    deleted_at: str
    restores_version_id: str
    restores_etag: str
    restores_size: int
    # Older markers of the same key, also in the window, between the latest
    # one and the version brought back (the key was deleted more than once).
    # Left out of the file when there are none.
    stacked_delete_marker_version_ids: list[str] | None = None


class RecoveryPlan(_Record):
    """What ``recover`` would restore: written before anything changes."""

    format_version: Literal[1]
    kind: Literal["recovery"]
    bmxgc_version: str
    created_at: str
    plan_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    bucket: str
    prefix: str  # "" for --whole-bucket
    since: str
    until: str
    stats: dict[str, int]
    sample_keys: list[str]
    restores: list[RecoveryItem]


class Receipt(_Record):
    format_version: Literal[1]
    kind: Literal["apply", "recover"] = "apply"
    plan_hash: str
    bucket: str
    prefix: str
    started_at: str
    finished_at: str | None = None
    status: ReceiptStatus
    overrides: dict[str, float | int | str | bool] = Field(default_factory=dict)
    applied_by: dict[str, str] = Field(default_factory=dict)
    undo_until: str | None = None
    # Versions under the prefix when the plan was made: lets undo list a few
    # keys one by one when that is cheaper than listing the prefix.
    prefix_versions: int | None = None
    deleted: list[DeletedEntry] = Field(default_factory=list)
    errors: list[KeyFailure] = Field(default_factory=list)
    pending: list[PendingBatch] = Field(default_factory=list)
    # recover only: the markers it removed (apply's receipts leave it empty).
    restored: list[RestoredEntry] = Field(default_factory=list)
