"""The plan and receipt as data: pydantic models, nothing that touches a file."""

from __future__ import annotations

import getpass
import os
import re
import socket
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema, core_schema
from typing_extensions import TypedDict

from bmxgc.durations import Duration

FORMAT_VERSION = 1


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# The times a file may hold: none before S3 existed, none so late that adding
# a margin to it would overflow Python's datetime.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)


def who() -> dict[str, str]:
    """Who is acting, for receipts and locks: user, host and process id."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {"user": user, "host": socket.gethostname(), "pid": str(os.getpid())}


def rfc3339(moment: datetime) -> str:
    """``2026-11-28T12:00:00Z``: UTC, whole seconds, as docs/reference.md writes times
    (four-digit years: strftime's %Y writes year 999 as '999')."""
    utc = moment.astimezone(timezone.utc).replace(microsecond=0, tzinfo=None)
    return utc.isoformat() + "Z"


class TimeOutOfRange(ValueError):
    """A valid time that is not a datetime in UTC (before year 1 or after 9999)."""

    def __init__(self, text: str, early: bool) -> None:
        super().__init__(f"{text!r} is out of range")
        self.early = early


def parse_rfc3339(text: str) -> datetime:
    """A time with a zone, in UTC; a ValueError for anything else."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise TimeOutOfRange(text, early=moment.year == 1) from None


_UTC_SECONDS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z", re.ASCII)


def _utc_time(text: str) -> str:
    """A time in a file: RFC 3339, UTC, whole seconds, as ``rfc3339`` writes it."""
    try:
        if _UTC_SECONDS.fullmatch(text) is None:
            raise ValueError
        moment = parse_rfc3339(text)
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not an RFC 3339 UTC time like 2026-11-28T12:00:00Z") from None
    if not EARLIEST <= moment < LATEST:
        raise ValueError(f"{text!r} is out of range: a time bmxgc wrote is between 1970 and 9000")
    return text


def _exactly_int(value: Any) -> Any:
    # pydantic's Literal[1] takes 1.0 and true (they compare equal to 1).
    if type(value) is not int:
        raise ValueError(f"must be the integer {FORMAT_VERSION}, not {value!r}")
    return value


# Times, format versions, counts and ratios as the files hold them, checked on reading.
UtcTime = Annotated[str, AfterValidator(_utc_time)]
FormatVersion = Annotated[Literal[1], BeforeValidator(_exactly_int)]
Count = Annotated[int, Field(ge=0)]
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]


class VersionEntry(NamedTuple):
    """One row of ListObjectVersions: an object version or a delete marker.

    A named tuple, not a pydantic model or a dataclass: a listing makes one
    per version (a million for a million objects), and a tuple is made in a
    third of a frozen dataclass's time. Only orphans become ``ObjectVersion``
    records in the plan.
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
    # Plans are reviewed and hashed: a field nobody knows about is a doubt,
    # and so is a value of another type (no coercion: true is not a count,
    # "10" is not a number; an int is a valid float) or a NaN.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class _ObjectVersionFields(TypedDict):
    # What a file must hold for one ObjectVersion, checked by pydantic like a
    # model's fields (strict types, unknown fields refused), without a model.
    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[misc]

    key: str
    version_id: str
    etag: str
    size: Count
    last_modified: UtcTime


class ObjectVersion:
    """One current object version as S3 listed it: a plan's orphan.

    A plain, immutable record, not a pydantic model: a plan can hold
    millions. Building one checks nothing; reading one from a file does
    (pydantic, through ``__get_pydantic_core_schema__``: a JSON object with
    exactly these fields, strict types, a count, an RFC 3339 time), and so
    does the plan reader's fast path for lines bmxgc wrote
    (``bmxgc.planstream``).

    Compact: the key, and the other four fields in one string (a million
    orphans take about 270 bytes each instead of 435 as five objects and a
    tuple); a field holding the separator keeps them apart instead.
    """

    __slots__ = ("key", "_rest")
    key: str
    _rest: str | tuple[str, str, int, str]

    def __init__(self, key: str, version_id: str, etag: str, size: int, last_modified: str) -> None:
        packable = type(size) is int and "\0" not in version_id + etag + last_modified
        rest = f"{version_id}\0{etag}\0{last_modified}\0{size}" if packable else (version_id, etag, size, last_modified)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "_rest", rest)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"ObjectVersion is immutable: cannot set {name}")

    def fields(self) -> tuple[str, str, int, str]:
        """``version_id, etag, size, last_modified`` at once."""
        rest = self._rest
        if isinstance(rest, tuple):
            return rest
        version_id, etag, last_modified, size = rest.split("\0")
        return version_id, etag, int(size), last_modified

    @property
    def version_id(self) -> str:
        rest = self._rest
        return rest[0] if isinstance(rest, tuple) else rest[: rest.index("\0")]

    @property
    def etag(self) -> str:
        return self.fields()[1]

    @property
    def size(self) -> int:
        rest = self._rest
        return rest[2] if isinstance(rest, tuple) else int(rest[rest.rindex("\0") + 1 :])

    @property
    def last_modified(self) -> str:
        return self.fields()[3]

    def __iter__(self) -> Iterator[str | int]:
        version_id, etag, size, last_modified = self.fields()
        return iter((self.key, version_id, etag, size, last_modified))

    def _asdict(self) -> dict[str, Any]:
        version_id, etag, size, last_modified = self.fields()
        return {"key": self.key, "version_id": version_id, "etag": etag, "size": size, "last_modified": last_modified}

    def __eq__(self, other: object) -> bool:
        if type(other) is not ObjectVersion:
            return NotImplemented
        return self.key == other.key and self.fields() == other.fields()

    def __hash__(self) -> int:
        return hash((self.key, self.fields()))

    def __repr__(self) -> str:
        return "ObjectVersion(" + ", ".join(f"{k}={v!r}" for k, v in self._asdict().items()) + ")"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        fields = handler.generate_schema(_ObjectVersionFields)

        def validate(value: Any, inner: ValidatorFunctionWrapHandler) -> ObjectVersion:
            if type(value) is cls:
                return value
            checked = inner(value)
            return cls(checked["key"], checked["version_id"], checked["etag"], checked["size"], checked["last_modified"])

        return core_schema.no_info_wrap_validator_function(
            validate,
            fields,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda o: o._asdict()),
        )


class ReferenceSummary(_Record):
    name: str
    query: str
    keys: list[str]
    rows: Count = 0
    skipped_null: Count = 0
    skipped_empty: Count = 0


class SafetySummary(_Record):
    max_orphan_ratio: Ratio
    max_deletes: Count
    min_age: Duration
    max_plan_age: Duration
    protect: list[str]
    ignore_near_misses: bool = False


class Stats(_Record):
    objects_scanned: Count
    bytes_scanned: Count
    referenced_keys: Count
    referenced_found: Count
    dangling_references: Count
    orphans: Count
    orphan_bytes: Count
    orphan_ratio: Ratio
    skipped_young: Count
    skipped_protected: Count
    referenced_outside_prefix: Count = 0
    versions_listed: Count = 0


class CrossCheckHit(_Record):
    table: str
    column: str
    key: str


class NearMiss(_Record):
    """A referenced key that exists nowhere but would match orphan ``key`` once
    normalised (``shape``: padding, leading_slash, url, case, prefix_repeated,
    or several joined by '+')."""

    key: str
    reference: str
    shape: str
    source: str


class InventorySource(_Record):
    """The S3 Inventory report a plan was made from (``plan --inventory``)."""

    manifest: str  # s3:// URL of its manifest.json
    created_at: UtcTime  # its creationTimestamp (whole seconds)
    creation_timestamp: Count  # the same, in milliseconds since the epoch, as the manifest says
    checksum: str  # MD5 (hex) of manifest.json, as its manifest.checksum says
    file_format: str  # CSV or Parquet
    files: Count  # data files read


class PlanSummary(_Record):
    """A plan without its orphans: what ``show``, the trend and the jump gate read."""

    format_version: FormatVersion
    bmxgc_version: str
    created_at: UtcTime
    plan_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    bucket: str
    prefix: str
    bucket_versioning: str
    database: str
    inventory: InventorySource | None = None  # only in plans made from an inventory
    references: list[ReferenceSummary]
    safety: SafetySummary
    stats: Stats
    warnings: list[str]
    sample_orphan_keys: list[str]
    cross_check: list[CrossCheckHit] | None = None
    cross_check_columns: list[str] | None = None
    cross_check_tables_not_scanned: list[str] | None = None
    near_misses: list[NearMiss] | None = None

    @property
    def created(self) -> datetime:
        return parse_rfc3339(self.created_at)


def orphan_order_problem(previous: str, key: str) -> str | None:
    """Why ``key`` may not follow ``previous`` in a plan's orphans, or None.

    Orphans are sorted by key in S3's order (UTF-8 bytes), each key once: a
    key listed twice gets two delete markers, and undo removes one."""
    if previous.encode("utf-8") < key.encode("utf-8"):
        return None
    if previous == key:
        return f"key {key!r} is listed twice; a plan lists each key once"
    return f"key {key!r} comes after {previous!r}; a plan lists its orphans sorted by key (UTF-8 bytes), each once"


class Plan(PlanSummary):
    orphans: list[ObjectVersion]

    @field_validator("orphans")
    @classmethod
    def _sorted_each_key_once(cls, orphans: list[ObjectVersion]) -> list[ObjectVersion]:
        for previous, orphan in zip(orphans, orphans[1:]):
            problem = orphan_order_problem(previous.key, orphan.key)
            if problem is not None:
                raise ValueError(problem)
        return orphans


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

    sent_at: UtcTime
    keys: list[ObjectVersion]


class RestoredEntry(_Record):
    """A key made current again by removing one delete marker."""

    key: str
    version_id: str  # the version that is current again
    removed_delete_marker_version_id: str


class RecoveryItem(_Record):
    key: str
    delete_marker_version_id: str
    deleted_at: UtcTime
    restores_version_id: str
    restores_etag: str
    restores_size: Count
    # Older markers of the same key, also in the window, between the latest
    # one and the version brought back (the key was deleted more than once).
    # Left out of the file when there are none.
    stacked_delete_marker_version_ids: list[str] | None = None


class RecoveryStats(_Record):
    versions_listed: Count
    delete_markers_in_window: Count
    to_restore: Count
    nothing_beneath: Count
    bytes_to_restore: Count


class RecoveryPlan(_Record):
    """What ``recover`` would restore: written before anything changes."""

    format_version: FormatVersion
    kind: Literal["recovery"]
    bmxgc_version: str
    created_at: UtcTime
    plan_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    bucket: str
    prefix: str  # "" for --whole-bucket
    since: UtcTime
    until: UtcTime
    stats: RecoveryStats
    sample_keys: list[str]
    restores: list[RecoveryItem]


class ReceiptHeader(_Record):
    """The fields a receipt starts with: enough to find a plan's receipt, or the newest."""

    model_config = ConfigDict(extra="ignore")

    format_version: FormatVersion
    kind: Literal["apply", "recover"] = "apply"
    plan_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    started_at: UtcTime


class Receipt(_Record):
    format_version: FormatVersion
    kind: Literal["apply", "recover"] = "apply"
    plan_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    bucket: str
    prefix: str
    started_at: UtcTime
    finished_at: UtcTime | None = None
    status: ReceiptStatus
    overrides: dict[str, float | int | str | bool] = Field(default_factory=dict)
    applied_by: dict[str, str] = Field(default_factory=dict)
    undo_until: UtcTime | None = None
    # Versions under the prefix when the plan was made: lets undo list a few
    # keys one by one when that is cheaper than listing the prefix.
    prefix_versions: Count | None = None
    deleted: list[DeletedEntry] = Field(default_factory=list)
    errors: list[KeyFailure] = Field(default_factory=list)
    pending: list[PendingBatch] = Field(default_factory=list)
    # recover only: the markers it removed (apply's receipts leave it empty).
    restored: list[RestoredEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _keys_under_prefix(self) -> Receipt:
        # Receipts are not hashed: an edited key outside the prefix would make
        # undo act outside the lock it holds.
        keys = [e.key for e in self.deleted] + [e.key for e in self.errors]
        keys += [k.key for batch in self.pending for k in batch.keys] + [e.key for e in self.restored]
        outside = next((key for key in keys if not key.startswith(self.prefix)), None)
        if outside is not None:
            raise ValueError(f"key {outside!r} is not under the receipt's prefix {self.prefix!r}")
        return self

class UndoRestored(_Record):
    """A key one undo run made current again, and the markers it removed."""

    key: str
    version_id: str
    removed_delete_marker: str
    removed_stacked_delete_markers: list[str] | None = None


class UndoSkipped(_Record):
    key: str
    reason: str


class UndoNotRestored(_Record):
    key: str
    found: str  # what S3 lists as the key's latest after the run


class UndoRun(_Record):
    """One undo run: while it works, ``status`` and the keys it ``intended``;
    once done, what it restored, left alone and could not restore."""

    at: UtcTime
    by: dict[str, str]
    status: Literal["in_progress"] | None = None
    intended: list[str] | None = None
    restored: list[UndoRestored] | None = None
    skipped: list[UndoSkipped] | None = None
    already_restored: Count | None = None
    not_restored: list[UndoNotRestored] | None = None
    errors: list[KeyFailure] | None = None
    # The dead lock of the crashed apply this run took over, when it did.
    took_over_lock: str | None = None


class UndoRecord(_Record):
    """The log beside a receipt of every undo run of that apply (``STEM.undo.json``).
    Records written before files said their kind have no ``kind``: read as ``undo``."""

    format_version: FormatVersion
    kind: Literal["undo"] = "undo"
    receipt: str
    plan_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    bucket: str
    prefix: str
    runs: list[UndoRun]


# --- What the database keeps alive (read by references.py, judged by planner and gates) ---
#
# The referenced keys are held as digests, not strings: 20 bytes a key (two
# 64-bit digests and a tag) in sorted arrays, against about 110 bytes for a
# string in a set. A digest can only ever say "referenced" of a key that is
# not (two keys sharing both digests), never the reverse: a collision keeps an
# object, it never deletes one. docs/performance.md has the whole argument.

# The digests are held in 256 buckets of arrays by the first digest's top byte,
# each sorted on its own at ``freeze`` (no transient list, nor copy, of them
# all). A table of where each value of the next byte starts in its bucket
# bounds a lookup's binary search to a few entries.
_BUCKETS = 256
_SLICE = 257  # a bucket's slice starts: 256, and its end


def second_digest(key: str) -> int:
    """The second 64-bit digest of ``key``: the string hash of the key behind a NUL."""
    return hash("\0" + key)


# Two 64-bit digests of a key: Python's string hash (SipHash, keyed with a
# random key per process, so no input can be made to collide on purpose) of the
# key, and of the key behind a NUL (``second_digest``).
Digests = tuple[Callable[[str], int], Callable[[str], int]]
KEY_DIGESTS: Digests = (hash, second_digest)


class KeySet:
    """A set of keys held as digests (``KEY_DIGESTS``) in sorted arrays.

    Built with ``add`` (each key with the source it came from and whether it is
    under the scanned prefix), then ``freeze``, which sorts and merges equal
    digests. ``index`` finds a key's entry (binary search), or -1. Two distinct
    keys are told apart as long as one of their two digests differs; keys equal
    in both count as one (the chance, for ten million keys, is below 10^-24).
    """

    def __init__(self, digests: Digests = KEY_DIGESTS) -> None:
        self._first, self._second = digests
        self._hi = [array("q") for _ in range(_BUCKETS)]
        self._lo = [array("q") for _ in range(_BUCKETS)]
        self._tag = [array("I") for _ in range(_BUCKETS)]  # source index << 1 | under the prefix
        self._base = array("q")  # once frozen: the global index of each bucket's first entry
        self._slices = array("q")  # once frozen: per bucket, where each next-byte value starts, and its end
        self._size = 0

    def add(self, key: str, source: int = 0, under: bool = False) -> None:
        hi, lo = self._first(key), self._second(key)
        bucket = (hi >> 56) + 128
        self._hi[bucket].append(hi)
        self._lo[bucket].append(lo)
        self._tag[bucket].append(source << 1 | under)

    def add_all(self, keys: Iterable[str], source: int, prefix: str | None) -> None:
        """``add`` for each key; ``under`` is whether it starts with ``prefix``."""
        first, second, his, los, tags = self._first, self._second, self._hi, self._lo, self._tag
        for key in keys:
            hi = first(key)
            bucket = (hi >> 56) + 128
            his[bucket].append(hi)
            los[bucket].append(second(key))
            tags[bucket].append(source << 1 | (prefix is not None and key.startswith(prefix)))

    def freeze(self) -> KeySet:
        """Sort each bucket and merge entries with equal digests (the same key
        from several rows or sources: the tag of the last source is kept)."""
        base, slices = array("q"), array("q")
        total = 0
        for bucket in range(_BUCKETS):
            rows = sorted(zip(self._hi[bucket], self._lo[bucket], self._tag[bucket]))
            his, los, tags = array("q"), array("q"), array("I")
            previous: tuple[int, int] | None = None
            for hi, lo, tag in rows:
                if (hi, lo) == previous:
                    tags[-1] = tag  # sorted: the largest source index comes last
                    continue
                previous = (hi, lo)
                his.append(hi)
                los.append(lo)
                tags.append(tag)
            self._hi[bucket], self._lo[bucket], self._tag[bucket] = his, los, tags
            top = (bucket - 128) << 56
            slices.extend(bisect_left(his, top | part << 48) for part in range(256))
            slices.append(len(his))
            base.append(total)
            total += len(his)
        self._base, self._slices, self._size = base, slices, total
        return self

    def index(self, key: str) -> int:
        """``key``'s entry, 0 to len - 1, or -1 if no entry has its digests."""
        return self.indexes((key,))[0]

    def indexes(self, keys: Iterable[str]) -> list[int]:
        """``index`` of each key (a listing's page at a time: one call, not one per key)."""
        first, second, his_of, los_of, base, slices = self._first, self._second, self._hi, self._lo, self._base, self._slices
        found = []
        for key in keys:
            hi = first(key)
            bucket = (hi >> 56) + 128
            his = his_of[bucket]
            at = bucket * _SLICE + (hi >> 48 & 255)
            end = slices[at + 1]
            at = bisect_left(his, hi, slices[at], end)
            if at < end and his[at] == hi:
                los = los_of[bucket]
                lo = second(key)
                while at < end and his[at] == hi:
                    if los[at] == lo:
                        at += base[bucket]
                        break
                    at += 1
                else:
                    at = -1
            else:
                at = -1
            found.append(at)
        return found

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.index(key) >= 0

    def __len__(self) -> int:
        """Distinct keys (entries)."""
        return self._size

    def under_flags(self) -> bytearray:
        """One byte per entry, in ``index`` order: 1 if it was added as under the prefix."""
        return bytearray(tag & 1 for tags in self._tag for tag in tags)

    def source(self, index: int) -> int:
        """The last source that named entry ``index``."""
        bucket = bisect_right(self._base, index) - 1
        return self._tag[bucket][index - self._base[bucket]] >> 1


class FoundKeys:
    """Which entries of a KeySet a listing found: one byte per entry."""

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys
        self.flags = bytearray(len(keys))

    @property
    def count(self) -> int:
        """Distinct referenced keys found."""
        return self.flags.count(1)

    def observe_all(self, keys: Sequence[str]) -> list[bool]:
        """Whether each key is referenced; remember the ones found (a page at a time)."""
        found = self.keys.indexes(keys)
        flags = self.flags
        for at in found:
            if at >= 0:
                flags[at] = 1
        return [at >= 0 for at in found]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        at = self.keys.index(key)
        return at >= 0 and bool(self.flags[at])

    @property
    def all_found(self) -> bool:
        return self.count == len(self.keys)

    def not_found_among(self, flags: bytearray) -> int:
        """How many entries ``flags`` marks (one byte per entry, 0 or 1) were not found."""
        count, found, step = 0, self.flags, 1 << 16  # a slice at a time: no integer as large as the set
        for at in range(0, len(flags), step):
            marked = int.from_bytes(flags[at : at + step], "little")
            count += (marked & ~int.from_bytes(found[at : at + step], "little")).bit_count()
        return count


@dataclass
class SourceResult:
    """What one ``[[references]]`` source gave: what it read and skipped.

    ``keys`` holds the strings only for references built in memory (tests, the
    Python API); ``read_references`` leaves it empty and fills ``References.keys``."""

    name: str
    rows: int = 0
    skipped_null: int = 0
    skipped_empty: int = 0
    keys: set[str] = field(default_factory=set)


# A second, streamed read of every (source index, key): the keys as strings,
# one at a time, for what the digests cannot answer (near misses).
Reread = Callable[[], Iterator[tuple[int, str]]]


@dataclass
class References:
    """All sources' results; ``keys`` is the union of the keys they keep alive,
    as a KeySet; ``prefix`` is the prefix its under-prefix flags were set for."""

    sources: list[SourceResult]
    key_set: KeySet | None = None
    prefix: str | None = None
    reread: Reread | None = None

    def __post_init__(self) -> None:
        if self.key_set is None:  # built in memory from the sources' keys
            keys = KeySet()
            for index, source in enumerate(self.sources):
                for key in source.keys:
                    keys.add(key, index, self.prefix is not None and key.startswith(self.prefix))
            self.key_set = keys.freeze()

    @property
    def keys(self) -> KeySet:
        assert self.key_set is not None
        return self.key_set

    def every_key(self) -> Iterator[tuple[int, str]]:
        """Every (source index, key), as strings: read again from the sources
        (streamed, a key may come more than once), or from memory."""
        if self.reread is not None:
            yield from self.reread()
            return
        for index, source in enumerate(self.sources):
            for key in sorted(source.keys):
                yield index, key

    def under(self, prefix: str) -> bytearray:
        """One byte per entry of ``keys``, 1 for a key under ``prefix``: from
        the flags set while reading if they were for ``prefix``, else from a
        pass over every key."""
        if prefix == self.prefix:
            return self.keys.under_flags()
        flags = bytearray(len(self.keys))
        for _, key in self.every_key():
            if key.startswith(prefix):
                at = self.keys.index(key)
                if at >= 0:
                    flags[at] = 1
        return flags

    def source_name(self, key: str) -> str | None:
        """The name of the last source that references ``key``, or None."""
        at = self.keys.index(key)
        return None if at < 0 else self.sources[self.keys.source(at)].name
