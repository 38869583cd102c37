"""Reading a plan file one orphan line at a time. Pure: file objects in, checked data out.

A plan of a million orphans is a 185 MB file; reading it whole as JSON and
pydantic models took 8 s and 2 GB. ``PlanStream`` reads the summary (the
head of the file, up to ``"orphans": [``), then the orphans in blocks of
lines, checking and hashing them as they pass, and holds one block at a time.

It judges a file exactly as reading it whole would (``bmxgc.planfile.read``):
it only ever *accepts*. A line in the very form bmxgc writes is recognised
by one regular expression whose grammar admits only valid values (strings
without escapes, a non-negative integer, a UTC time whose date is checked
once), and its canonical JSON for the hash is its own bytes reordered. A
line with escapes is read as JSON strictly and checked by pydantic. Anything
else (a file reformatted by a tool, a line split in two, a field after
``orphans``, a bad value, a key out of order) makes the stream read the
whole file the old way, which decides, with its own error message, and the
stream goes on from where it was. Only a hash that does not match the
content is refused here, with the message the whole read gives.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, Protocol

from pydantic import TypeAdapter, ValidationError

from bmxgc.errors import InputNotFound, PlanFileError
from bmxgc.model import FORMAT_VERSION, EARLIEST, LATEST, ObjectVersion, Plan, PlanSummary, orphan_order_problem
from bmxgc.planfile import (
    HASH_PREFIX,
    PLAN,
    canonical_around_orphans,
    canonical_orphan,
    kind_of,
    read,
    strict_json,
)

# One orphan's fields as UTF-8 bytes: key, version_id, etag, size, last_modified
# (and, from the fast path, the date of last_modified and the line's comma).
Row = tuple[bytes, ...]

_OPENING = b'  "orphans": [\n'
_ASCII = rb'[\x20\x21\x23-\x5b\x5d-\x7e]*'  # printable ASCII but " and \
_LINE = re.compile(
    rb'^    \{"key": "([^"\\\x00-\x1f]*)", "version_id": "(' + _ASCII + rb')", "etag": "(' + _ASCII + rb')", '
    rb'"size": (0|[1-9][0-9]{0,17}), "last_modified": "(([0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01]))'
    rb'T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z)"\}(,?)\n',
    re.M,
)
_CLOSING = re.compile(rb"  \][ \t\n\r]*\}[ \t\n\r]*")
_CANONICAL = b'{"etag":"%s","key":"%s","last_modified":"%s","size":%s,"version_id":"%s"}'
_CANONICAL_ORDER = itemgetter(2, 0, 4, 3, 1)
_KEY = itemgetter(0)
_DATE = itemgetter(5)
_COMMA = itemgetter(6)
_BLOCK = 1 << 18
_HEAD_LIMIT = 64 << 20
_ORPHAN = TypeAdapter(ObjectVersion)


class _NotInLayout(Exception):
    """The file is not (or not here) as bmxgc writes it: read it whole instead."""


def _valid_date(text: bytes) -> bool:
    """A calendar date a plan's times may have (1970 to 8999, as ``model._utc_time``)."""
    try:
        day = date.fromisoformat(text.decode("ascii"))
    except ValueError:
        return False
    return EARLIEST.date() <= day < LATEST.date()


class TextReader:
    """A plan's text (from S3, say) read as a binary file, encoded piece by
    piece: no second copy of a 185 MB text as bytes."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def readline(self) -> bytes:
        end = self.text.find("\n", self.at)
        end = len(self.text) if end < 0 else end + 1
        line, self.at = self.text[self.at : end], end
        return line.encode("utf-8")

    def read(self, size: int = -1) -> bytes:
        end = len(self.text) if size < 0 else self.at + size
        piece, self.at = self.text[self.at : end], min(end, len(self.text))
        return piece.encode("utf-8")

    def seek(self, offset: int) -> int:
        self.at = offset
        return offset


class PlanStream:
    """One plan file being read: ``summary`` at once, then ``batches()`` of
    checked orphan rows, once; the hash is checked when the last one is read."""

    def __init__(self, handle: IO[bytes] | TextReader, source: str) -> None:
        self.handle = handle
        self.source = source
        self.whole: Plan | None = None  # set when the file had to be read whole
        self.read_whole = False
        try:
            self.summary, self._claimed, self._around = self._head()
        except _NotInLayout:
            self.whole = self._parse_whole()
            self.summary = self.whole

    # --- the summary ---

    def _head(self) -> tuple[PlanSummary, str, tuple[bytes, bytes]]:
        lines: list[bytes] = []
        size = 0
        while (line := self._readline()) != _OPENING:
            if not line or size > _HEAD_LIMIT:
                raise _NotInLayout
            lines.append(line)
            size += len(line)
        summary, raw = summary_of_head(b"".join(lines))
        return summary, str(raw["plan_hash"]), canonical_around_orphans(raw)

    # --- the orphans ---

    def batches(self) -> Iterator[list[Row]]:
        """The orphans in file order, in blocks; PlanFileError if the file is refused."""
        if self.whole is not None:
            yield from _batches_of(self.whole.orphans)
            return
        done = 0
        try:
            for batch in self._orphans():
                done += len(batch)
                yield batch
        except _NotInLayout:
            self.whole = self._parse_whole()
            yield from _batches_of(self.whole.orphans[done:])

    def _orphans(self) -> Iterator[list[Row]]:
        digest = hashlib.sha256(self._around[0])
        valid_dates: set[bytes] = set()
        previous: bytes | None = None
        carry = b""
        first = True
        while True:
            block = self._read(_BLOCK)
            data = carry + block + (self._readline() if block else b"")
            # The list ends at a line "  ]" (an orphan line starts with four spaces).
            end = 0 if data.startswith(b"  ]") else data.find(b"\n  ]") + 1
            if not end and not data.startswith(b"  ]"):
                if not block:
                    raise _NotInLayout  # the file ends inside the list
                region, carry = data, b""
            else:
                region, carry = data[:end], data[end:]
            if region and not region.endswith(b"\n"):
                raise _NotInLayout  # the file ends inside a line
            if region:
                rows, canonical = self._region(region, final=carry != b"", valid_dates=valid_dates)
                keys = [row[0] for row in rows]
                if (previous is not None and not previous < keys[0]) or not all(map(bytes.__lt__, keys, keys[1:])):
                    raise _NotInLayout  # out of order or twice: the whole read says which
                previous = keys[-1]
                digest.update(canonical if first else b"," + canonical)
                first = False
                yield rows
            else:
                # "orphans": [ then ] (bmxgc writes [] on one line), or a block
                # that ended with the list's last line, read as wanting a comma:
                # a comma before "]" is not JSON. The whole read says which.
                raise _NotInLayout
            if carry:
                break
        tail = carry + self._read(-1)
        if _CLOSING.fullmatch(tail) is None:
            raise _NotInLayout  # fields after the orphans, or something after the object
        digest.update(self._around[1])
        expected = HASH_PREFIX + digest.hexdigest()
        if expected != self._claimed:
            raise PlanFileError(hash_mismatch(self.source, self._claimed, expected))

    def _region(self, region: bytes, *, final: bool, valid_dates: set[bytes]) -> tuple[list[Row], bytes]:
        """Whole lines of orphans (the list's last one if ``final``): their rows and canonical JSON."""
        found: list[Row] = _LINE.findall(region)
        # Every line recognised (each match is one whole line), each with its
        # comma but the list's last.
        if (
            len(found) == region.count(b"\n")
            and all(map(_COMMA, found[: len(found) - final]))
            and (not final or not found[-1][6])
        ):
            if not region.isascii():
                try:
                    region.decode("utf-8")
                except UnicodeDecodeError:
                    raise _NotInLayout from None
            for day in set(map(_DATE, found)) - valid_dates:
                if not _valid_date(day):
                    raise _NotInLayout
                valid_dates.add(day)
            return found, b",".join(map(_CANONICAL.__mod__, map(_CANONICAL_ORDER, found)))
        rows: list[Row] = []
        canonical: list[bytes] = []
        parts = region.split(b"\n")[:-1]
        for index, line in enumerate(parts):
            row, text = _one_line(line, comma=not (final and index == len(parts) - 1))
            rows.append(row)
            canonical.append(text)
        return rows, b",".join(canonical)

    # --- reading ---

    def _readline(self) -> bytes:
        try:
            return self.handle.readline()
        except OSError as exc:
            raise PlanFileError(f"{self.source}: cannot read the plan file: {exc}") from None

    def _read(self, size: int) -> bytes:
        try:
            return self.handle.read(size)
        except OSError as exc:
            raise PlanFileError(f"{self.source}: cannot read the plan file: {exc}") from None

    def _parse_whole(self) -> Plan:
        """The old way: the whole text as JSON, then pydantic, then the hash."""
        self.read_whole = True
        try:
            self.handle.seek(0)
            text = self._read(-1).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PlanFileError(f"{self.source}: cannot read the plan file: {exc}") from None
        plan: Plan = read(text, self.source, PLAN)
        return plan


def _one_line(line: bytes, *, comma: bool) -> tuple[Row, bytes]:
    """One orphan line that the fast path does not recognise: strict JSON, then pydantic."""
    try:
        text = line.decode("utf-8").strip(" \t\r")
    except UnicodeDecodeError:
        raise _NotInLayout from None
    if comma != text.endswith(","):
        raise _NotInLayout
    try:
        orphan = _ORPHAN.validate_python(strict_json(text.removesuffix(",").rstrip(" \t\r")))
    except (ValueError, ValidationError):
        raise _NotInLayout from None
    try:
        row = tuple(str(v).encode("utf-8") for v in orphan)
        return row, canonical_orphan(orphan).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (\ud800): the whole read says so
        raise _NotInLayout from None


def _batches_of(orphans: list[ObjectVersion]) -> Iterator[list[Row]]:
    for start in range(0, len(orphans), 4096):
        yield [tuple(str(v).encode("utf-8") for v in o) for o in orphans[start : start + 4096]]


def record(row: Row) -> ObjectVersion:
    return ObjectVersion(row[0].decode(), row[1].decode(), row[2].decode(), int(row[3]), row[4].decode())


def summary_of_head(head: bytes) -> tuple[PlanSummary, dict[str, Any]]:
    """The summary from the lines before ``"orphans": [``; _NotInLayout on any doubt."""
    try:
        raw = strict_json(head.decode("utf-8") + '  "orphans": []\n}')
    except (ValueError, UnicodeDecodeError):
        raise _NotInLayout from None
    if not isinstance(raw, dict) or kind_of(raw) != "":
        raise _NotInLayout
    version = raw.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise _NotInLayout
    del raw["orphans"]
    try:
        summary = PlanSummary.model_validate(raw)
    except ValidationError:
        raise _NotInLayout from None
    return summary, raw


def hash_mismatch(source: str, claimed: str, expected: str) -> str:
    return (
        f"{source}: plan_hash does not match the content (file says {claimed[:19]}..., "
        f"content hashes to {expected[:19]}...); the plan was edited after it was made: plan again"
    )


@contextmanager
def open_plan(path: str | os.PathLike[str]) -> Iterator[PlanStream]:
    plan_path = Path(path)
    try:
        handle = plan_path.open("rb")
    except FileNotFoundError:
        raise InputNotFound(f"{plan_path}: plan file not found; check the path") from None
    except OSError as exc:
        raise PlanFileError(f"{plan_path}: cannot read the plan file: {exc}") from None
    with handle:
        yield PlanStream(handle, str(plan_path))


def plan_of(stream: PlanStream) -> Plan:
    """The whole plan, orphans as records (what apply acts on)."""
    if stream.whole is not None:
        return stream.whole
    orphans = [record(row) for batch in stream.batches() for row in batch]
    if stream.whole is not None:  # read whole on the way
        return stream.whole
    summary = stream.summary
    return Plan.model_construct(
        _fields_set=summary.model_fields_set | {"orphans"}, **dict(summary), orphans=orphans
    )


def verify(stream: PlanStream) -> PlanSummary:
    """Every orphan read and checked, none kept: the summary of an intact plan
    (the whole plan's, when the file had to be read whole: a field after the
    orphans is not in the head)."""
    for _batch in stream.batches():
        pass
    return stream.whole if stream.whole is not None else stream.summary


class HeadReader(Protocol):
    def read_head(self, name: str, size: int) -> tuple[bytes, bool] | None: ...
    def read(self, name: str) -> str | None: ...
    def location(self, name: str) -> str: ...


SUMMARY_HEAD = 1 << 20


def read_summary(store: HeadReader, name: str) -> PlanSummary:
    """A plan's summary from the head of its file, without its orphans (not
    hashed: for the trend and the jump gate's baseline, never to act on).
    A file not in bmxgc's layout is read and checked whole."""
    found = store.read_head(name, SUMMARY_HEAD)
    if found is None:
        raise InputNotFound(f"{store.location(name)}: not found")
    head, _complete = found
    cut = head.find(b"\n" + _OPENING)
    if cut >= 0:
        try:
            return summary_of_head(head[: cut + 1])[0]
        except _NotInLayout:
            pass
    text = store.read(name)
    if text is None:
        raise InputNotFound(f"{store.location(name)}: not found")
    whole: Plan = read(text, store.location(name), PLAN)
    return whole
