"""Receipts: the write-ahead journal of an apply (or recover), and undo records.

Every change to a receipt replaces it atomically and durably (a fsynced
temporary file renamed into place, or one S3 PUT), so a process killed at
any instant leaves the previous receipt or the next one, never half of one.
A batch's intent is stored before its DeleteObjects request is sent.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from bmxgc.errors import AlreadyExists, GateRefused, InputNotFound, PlanFileError
from bmxgc.model import (
    FORMAT_VERSION,
    DeletedEntry,
    KeyFailure,
    ObjectVersion,
    PendingBatch,
    PlanSummary,
    Receipt,
    ReceiptHeader,
    ReceiptStatus,
    RestoredEntry,
    rfc3339,
    utc_now,
    who,
)
from bmxgc.naming import JOURNAL_SUFFIX, RECEIPT_SUFFIX, is_plan_name, receipt_for_plan
from bmxgc import planfile
from bmxgc.planfile import strict_json
from bmxgc.planstream import PlanStream, TextReader, read_summary, verify
from bmxgc.store import Store
from bmxgc.validation import describe_validation_error

log = logging.getLogger("bmxgc")

def parse_receipt(text: str, source: str) -> Receipt:
    """Read a receipt with the one codec: JSON, kind, format_version, schema."""
    receipt: Receipt = planfile.read(text, source, planfile.RECEIPT)
    return receipt


def load_receipt(store: Store, name: str) -> Receipt:
    """A receipt; one still ``in_progress`` (or torn by a crash while it was
    kept current) whose journal exists is rebuilt from its journal."""
    text = store.read(name)
    if text is None:
        raise InputNotFound(f"{store.location(name)}: receipt not found; check the path")
    try:
        receipt: Receipt | None = parse_receipt(text, store.location(name))
        failure: PlanFileError | None = None
    except PlanFileError as exc:
        receipt, failure = None, exc
    if receipt is not None and receipt.status != "in_progress":
        return receipt  # written whole at the end: its journal is not read (no request in an s3:// plans_dir)
    lines = store.read_journal(journal_name(name))
    if lines is None:
        if failure is not None:
            raise failure
        assert receipt is not None
        return receipt
    rebuilt = replay_journal(lines, store.location(journal_name(name)))
    if receipt is not None and receipt.plan_hash != rebuilt.plan_hash:
        raise PlanFileError(
            f"{store.location(journal_name(name))}: the journal is for plan {rebuilt.plan_hash}, its receipt "
            f"for {receipt.plan_hash}; move the journal out of plans_dir"
        )
    return rebuilt


def replay_journal(text: str, source: str) -> Receipt:
    """The receipt a journal's lines describe: the first line's receipt, each
    batch's intent in ``pending`` until its outcome moves it to ``deleted``,
    ``restored`` or ``errors``. A last line without its newline was cut off by
    a crash while it was written: its request was never sent.

    With several requests in flight (``[s3] delete_concurrency``) each intent
    and outcome line carries its request's number: an outcome clears only its
    own batch. A line without one (one request at a time, as bmxgc wrote
    before) answers every batch pending."""
    lines = text.split("\n")
    lines = lines[:-1]  # the part after the last newline: empty, or a line cut off
    try:
        doc: dict[str, Any] | None = None
        pending: dict[Any, Any] = {}
        deleted: list[Any] = []
        errors: list[Any] = []
        restored: list[Any] = []
        for index, line in enumerate(lines):
            entry = strict_json(line)
            if not isinstance(entry, dict):
                raise ValueError("a line is not one journal entry")
            request = entry.pop("request", None)
            if len(entry) != 1 or (request is not None and type(request) is not int):
                raise ValueError("a line is not one journal entry")
            (what, value), = entry.items()
            if what == "receipt" and doc is None:
                doc = dict(value)
            elif doc is None:
                raise ValueError("the first line is not the receipt")
            elif what == "intend":
                pending[("line", index) if request is None else request] = value
            elif what == "record":
                deleted += value["deleted"]
                errors += value["errors"]
                if request is None:
                    pending.clear()
                else:
                    pending.pop(request, None)
            elif what == "restored":
                restored += value["restored"]
                errors += value["errors"]
            else:
                raise ValueError(f"unknown entry {what!r}")
        if doc is None:
            raise ValueError("it is empty")
        doc.update(deleted=deleted, errors=errors, pending=list(pending.values()), restored=restored)
        return Receipt.model_validate(doc)
    except ValidationError as exc:
        raise PlanFileError(
            f"{source}: not a valid journal: {describe_validation_error(exc, unknown='unknown field')}"
        ) from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise PlanFileError(f"{source}: not a journal: {exc}") from None


# Receipts can hold hundreds of thousands of keys, but start with the fields
# that say which plan they are for: finding one reads only this much of each.
HEAD_BYTES = 16 * 1024
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder(object_pairs_hook=dict)


def _leading_fields(head: str) -> dict[str, Any]:
    """The top-level fields that the first part of a JSON object holds entirely.

    Each field's value is read by json itself; the scan stops at the first
    value the head cuts off. A field named twice is refused, as ``strict_json``
    refuses it in a whole file."""
    fields: dict[str, Any] = {}
    at = _WHITESPACE.match(head, 0).end()  # type: ignore[union-attr]
    if head[at : at + 1] != "{":
        raise ValueError("invalid JSON: not an object")
    at += 1
    while True:
        at = _WHITESPACE.match(head, at).end()  # type: ignore[union-attr]
        try:
            name, at = _DECODER.raw_decode(head, at)
            at = _WHITESPACE.match(head, at).end()  # type: ignore[union-attr]
            if head[at : at + 1] != ":":
                return fields
            at = _WHITESPACE.match(head, at + 1).end()  # type: ignore[union-attr]
            value, at = _DECODER.raw_decode(head, at)
        except (json.JSONDecodeError, RecursionError):
            return fields  # cut off by the end of the head, or malformed: the whole file decides
        if not isinstance(name, str):
            return fields
        if name in fields:
            raise ValueError(f"duplicate key {json.dumps(name, ensure_ascii=False)} in one object")
        fields[name] = value
        at = _WHITESPACE.match(head, at).end()  # type: ignore[union-attr]
        if head[at : at + 1] != ",":
            return fields
        at += 1


def read_header(store: Store, name: str) -> ReceiptHeader:
    """A receipt's ``format_version``, ``kind``, ``plan_hash`` and ``started_at``,
    from its first kilobytes when they hold them (as bmxgc writes receipts),
    else from the whole file. Raises PlanFileError naming the file."""
    source = store.location(name)
    try:
        found = store.read_head(name, HEAD_BYTES)
        if found is None:
            raise InputNotFound(f"{source}: receipt not found; check the path")
        head, complete = found
        if complete:
            fields = strict_json(codecs.decode(head, "utf-8"))
        else:
            fields = _leading_fields(codecs.getincrementaldecoder("utf-8")().decode(head, final=False))
            if not {"format_version", "plan_hash", "started_at"} <= set(fields):
                fields = strict_json(store.read(name) or "")
        if not isinstance(fields, dict):
            raise ValueError("the JSON is not an object")
        return ReceiptHeader.model_validate(fields)
    except ValidationError as exc:
        raise PlanFileError(
            f"{source}: not a valid receipt: {describe_validation_error(exc, unknown='unknown field')}"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise PlanFileError(f"{source}: not a receipt: {exc}") from None


@dataclass(frozen=True)
class ReceiptScan:
    """The receipts in a store, by header: the readable ones and the others, with why."""

    readable: list[tuple[str, ReceiptHeader]]
    unreadable: list[tuple[str, str]]  # name, the one-line reason


def scan_receipts(store: Store) -> ReceiptScan:
    """Every ``*.receipt.json`` in ``store``: one bad file is noted, never a stop."""
    readable: list[tuple[str, ReceiptHeader]] = []
    unreadable: list[tuple[str, str]] = []
    for name in store.names():
        if not name.endswith(RECEIPT_SUFFIX):
            continue
        try:
            readable.append((name, read_header(store, name)))
        except (PlanFileError, InputNotFound) as exc:
            unreadable.append((name, str(exc)))
    return ReceiptScan(readable, unreadable)


def find_receipt(store: Store, plan_hash: str) -> tuple[str | None, ReceiptScan]:
    """The name of a receipt in ``store`` for ``plan_hash`` (whatever the plan
    file was called), or None; and the scan, which lists the unreadable ones."""
    scan = scan_receipts(store)
    name = next((n for n, header in scan.readable if header.plan_hash == plan_hash), None)
    return name, scan


def check_not_applied(store: Store, plan_hash: str, receipt_name: str) -> None:
    """Gate 1's last check: a plan is applied once, keyed by its ``plan_hash``.

    A receipt with the same hash under any name refuses the plan (a copy of an
    applied plan, also after its undo). A receipt that cannot be read might be
    this plan's: apply refuses rather than guess, naming it, until it is
    repaired or moved out of plans_dir. ``Journal.create`` checks the receipt's
    own name again, atomically."""
    found, scan = find_receipt(store, plan_hash)
    if found is not None:
        raise already_applied(store.location(found))
    if scan.unreadable:
        name, reason = scan.unreadable[0]
        more = len(scan.unreadable) - 1
        raise GateRefused(
            "integrity",
            f"cannot tell whether this plan was applied before: {store.location(name)} is unreadable "
            f"({reason.removeprefix(store.location(name) + ': ')})"
            + (f", and {more} more receipt(s)" if more else "")
            + "; repair it or move it out of plans_dir, then apply again",
        )
    if store.exists(receipt_name):
        raise GateRefused(
            "integrity",
            f"{store.location(receipt_name)} is the receipt of another plan; plans and receipts are never "
            "overwritten: give this plan file another name",
        )


def newest_receipt(store: Store) -> str:
    """The name of the readable apply receipt in ``store`` that was started last.

    An unreadable receipt is skipped with a warning naming it (logger ``bmxgc``):
    one bad file does not stop undo from finding the others."""
    return newest_receipt_read(store)[0]


def newest_receipt_read(store: Store) -> tuple[str, Receipt]:
    """``newest_receipt``, and that receipt as it was read to check it (undo uses it: not read twice)."""
    scan = scan_receipts(store)
    skipped = list(scan.unreadable)
    applies = sorted(
        ((h.started_at, n) for n, h in scan.readable if h.kind == "apply"), reverse=True
    )
    chosen: tuple[str, Receipt] | None = None
    for _started, name in applies:
        try:
            chosen = name, load_receipt(store, name)
        except PlanFileError as exc:
            skipped.append((name, str(exc)))
            continue
        break
    for name, reason in sorted(skipped):
        log.warning(
            "skipped %s: unreadable (%s)", store.location(name), reason.removeprefix(store.location(name) + ": ")
        )
    if chosen is None:
        readable = " readable" if skipped else ""
        raise InputNotFound(f"{store.location('')}: no{readable} apply receipt found; name one: bmxgc undo PATH")
    return chosen


class _ReceiptSummary(ReceiptHeader):
    """What the jump gate needs of a receipt: whose plan, where, and whether it finished."""

    bucket: str
    prefix: str
    status: ReceiptStatus


def _head_fields(store: Store, name: str) -> tuple[dict[str, Any], bool] | None:
    """The top-level fields in a document's first ``HEAD_BYTES`` and whether
    that is all of it; None if there is no such document."""
    found = store.read_head(name, HEAD_BYTES)
    if found is None:
        return None
    head, complete = found
    if complete:
        fields = strict_json(codecs.decode(head, "utf-8"))
        if not isinstance(fields, dict):
            raise ValueError("the JSON is not an object")
        return fields, True
    return _leading_fields(codecs.getincrementaldecoder("utf-8")().decode(head, final=False)), False


def _receipt_summary(store: Store, name: str) -> _ReceiptSummary:
    """A receipt's summary from its head (bmxgc writes ``status`` before the
    long lists); a receipt whose head does not hold it (one kept current while
    its run went on, or one laid out otherwise) is read whole, its journal too."""
    try:
        found = _head_fields(store, name)
        if found is None:
            raise InputNotFound(f"{store.location(name)}: receipt not found")
        fields, _complete = found
        if {"format_version", "plan_hash", "started_at", "bucket", "prefix", "status"} <= set(fields):
            return _ReceiptSummary.model_validate(fields)
    except (ValueError, UnicodeDecodeError, ValidationError) as exc:
        raise PlanFileError(f"{store.location(name)}: not a receipt: {exc}") from None
    receipt = load_receipt(store, name)
    return _ReceiptSummary.model_validate(receipt.model_dump(include=set(_ReceiptSummary.model_fields)))


def last_applied_plan(
    store: Store, bucket: str, prefix: str, exclude_hash: str = ""
) -> tuple[str, PlanSummary] | None:
    """The newest plan in ``store`` of ``bucket`` and ``prefix`` whose apply
    receipt (beside it, by name) exists, is for it and is ``complete``; not
    the plan ``exclude_hash``. A file that cannot be read is no baseline.

    Receipts are judged by their heads (``HEAD_BYTES``), plans ordered by
    their summaries (``planstream.read_summary``); then only the newest is
    read whole and checked (layout, schema, hash, and the hash its receipt
    names), the next newest if that one fails: the same plan as checking
    them all, without reading every receipt and plan of plans_dir whole.
    The baseline is a safety input: a plan edited since it was applied is
    no baseline."""
    names = set(store.names())
    candidates: list[tuple[str, str, str]] = []  # created_at, plan name, the receipt's plan_hash
    for name in names:
        receipt_name = receipt_for_plan(name)
        if not is_plan_name(name) or receipt_name not in names:
            continue
        try:
            receipt = _receipt_summary(store, receipt_name)
            if receipt.kind != "apply" or receipt.status != "complete":
                continue
            if (receipt.bucket, receipt.prefix) != (bucket, prefix) or receipt.plan_hash == exclude_hash:
                continue
            created = read_summary(store, name).created_at  # the head of the file
        except (PlanFileError, InputNotFound):
            continue
        candidates.append((created, name, receipt.plan_hash))
    for _created, name, plan_hash in sorted(candidates, reverse=True):
        try:
            text = store.read(name)
            if text is None:
                continue
            earlier = verify(PlanStream(TextReader(text), store.location(name)))
        except (PlanFileError, InputNotFound):
            continue
        if earlier.plan_hash == plan_hash:
            return name, earlier
    return None


def already_applied(receipt_location: str) -> GateRefused:
    """The refusal for a plan whose receipt exists: a plan is applied once."""
    return GateRefused(
        "integrity",
        f"{receipt_location} exists: this plan was applied before; run "
        f"'bmxgc undo {receipt_location}' to take it back, or plan again",
    )


class Journal:
    """The receipt of one apply or recover, kept as a write-ahead journal.

    ``create`` writes the receipt (``in_progress``, nothing done yet) and
    refuses an existing one: a plan is applied once. Then each batch's intent
    and outcome is appended to the journal beside it (``STEM.receipt.journal``,
    one fsynced JSON line each; in an ``s3://`` plans_dir one small object per
    line under ``STEM.receipt.journal/``): the work written per batch is the
    batch's own, so a run costs time linear in its objects. In a local
    plans_dir the receipt file is also kept current in place (the new entries
    and the short tail after them, not the whole file), so that it can be read
    at any moment; the journal is what is durable. ``finish`` writes the
    receipt whole, once, atomically, then removes the journal. A receipt still
    ``in_progress`` whose journal exists is rebuilt from the journal when read
    (``load_receipt``).
    """

    def __init__(self, store: Store, name: str, receipt: Receipt) -> None:
        self.store = store
        self.name = name
        self.receipt = receipt
        self.journal_name = journal_name(name)
        self._grows = "restored" if receipt.kind == "recover" else "deleted"
        self._view: _View | None = None
        self._in_flight: dict[int | None, PendingBatch] = {}  # request number -> its batch, while pending

    @property
    def location(self) -> str:
        return self.store.location(self.name)

    @classmethod
    def create(
        cls,
        store: Store,
        name: str,
        *,
        kind: str,
        plan_hash: str,
        bucket: str,
        prefix: str,
        overrides: dict[str, Any],
        undo_until: str | None,
        prefix_versions: int | None = None,
    ) -> Journal:
        receipt = Receipt.model_validate(
            {
                "format_version": FORMAT_VERSION,
                "kind": kind,
                "plan_hash": plan_hash,
                "bucket": bucket,
                "prefix": prefix,
                "started_at": rfc3339(utc_now()),
                "status": "in_progress",
                "overrides": overrides,
                "applied_by": who(),
                "undo_until": undo_until,
                "prefix_versions": prefix_versions,
            }
        )
        journal = cls(store, name, receipt)
        view = _View(journal._grows, receipt)
        try:
            store.create(name, view.text(receipt))
        except AlreadyExists:
            raise already_applied(store.location(name)) from None
        if store.rewrites_in_place:
            journal._view = view
        store.append_line(journal.journal_name, _line({"receipt": planfile.document(receipt)}))
        return journal

    def _append(self, entry: dict[str, Any], request: int | None = None) -> None:
        if request is not None:
            entry = {**entry, "request": request}
        self.store.append_line(self.journal_name, _line(entry))

    def _show(self, added: Sequence[Any]) -> None:
        """Keep the local receipt file current: the new entries and the tail after them."""
        if self._view is not None:
            at, data = self._view.update(added, self.receipt)
            self.store.rewrite_from(self.name, at, data)

    def intend(self, batch: Sequence[ObjectVersion], request: int | None = None) -> None:
        """Journal a batch before its request (number ``request``, when several
        may be in flight) is sent."""
        pending = PendingBatch(sent_at=rfc3339(utc_now()), keys=list(batch))
        self.receipt.pending.append(pending)
        self._in_flight[request] = pending
        doc = planfile.document(pending)  # once, for the journal line and the receipt file
        self._append({"intend": doc}, request)
        if self._view is not None:
            self.store.rewrite_from(self.name, *self._view.intend(pending, doc))

    def record(
        self, deleted: Sequence[DeletedEntry], errors: Sequence[KeyFailure], request: int | None = None
    ) -> None:
        """Journal the answer to request ``request`` and clear its batch (with no
        number: every pending batch). The answer is kept in memory first: a
        journal that cannot be written still lets the run say what was deleted."""
        self.receipt.deleted.extend(deleted)
        self.receipt.errors.extend(errors)
        if request is None:
            self.receipt.pending.clear()
            self._in_flight.clear()
        else:
            answered = self._in_flight.pop(request, None)
            self.receipt.pending[:] = [p for p in self.receipt.pending if p is not answered]
        docs = _docs(deleted)  # once, for the journal line and the receipt file
        self._append({"record": {"deleted": docs, "errors": _docs(errors)}}, request)
        self._show(docs)

    def record_restored(self, restored: Sequence[RestoredEntry], errors: Sequence[KeyFailure]) -> None:
        """Journal what one batch of a recover brought back."""
        self.receipt.restored.extend(restored)
        self.receipt.errors.extend(errors)
        docs = _docs(restored)
        self._append({"restored": {"restored": docs, "errors": _docs(errors)}})
        self._show(docs)

    def finish(self, *, failed: bool = False) -> None:
        """Write the receipt whole, once, then drop the journal it now holds."""
        partial = failed or bool(self.receipt.errors) or bool(self.receipt.pending)
        self.receipt = self.receipt.model_copy(
            update={"status": "partial" if partial else "complete", "finished_at": rfc3339(utc_now())}
        )
        self._view = None
        self.store.replace(self.name, planfile.render(self.receipt))
        self.store.remove_journal(self.journal_name)


def journal_name(receipt_name: str) -> str:
    """``STEM.receipt.json`` -> ``STEM.receipt.journal``."""
    return receipt_name.removesuffix(".json") + JOURNAL_SUFFIX


def _docs(entries: Sequence[BaseModel]) -> list[dict[str, Any]]:
    return [planfile.document(e) for e in entries]


def _line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"


def _row(entry: Any) -> str:
    doc = entry if isinstance(entry, dict) else planfile.document(entry)
    return json.dumps(doc, ensure_ascii=False, separators=(", ", ": "))


class _View:
    """The receipt file while a run goes on: every field but the growing list
    (``deleted``, or ``restored`` for recover) and what follows it is written
    once; each outcome writes its new entries at the end of that list and the
    short tail after it (errors, status, the batches still pending). The
    pending batches come last, so that a batch's intent is added at the end
    of the file, by itself: with several requests in flight
    (``delete_concurrency``) the others are not written again for it."""

    _CLOSE = b"]\n}\n"  # the pending list's end, and the file's

    def __init__(self, grows: str, receipt: Receipt) -> None:
        self.grows = grows
        doc = receipt.model_dump(mode="json")
        self.tail_fields = [f for f in ("deleted", "errors", "restored") if f != grows]
        self.tail_fields += ["status", "finished_at", "pending"]
        head = [f for f in doc if f not in self.tail_fields and f != grows]
        lines = ["{"] + [f"  {json.dumps(f)}: {json.dumps(doc[f], ensure_ascii=False)}," for f in head]
        self.head = ("\n".join(lines) + f"\n  {json.dumps(grows)}: [").encode("utf-8")
        self.end = len(self.head)  # where the growing list's entries end
        self.count = 0
        self.pending_rows: dict[int, tuple[PendingBatch, bytes]] = {}
        self.close_at = 0  # where the pending list's closing bracket is
        self.pending_shown = 0

    def _tail(self, receipt: Receipt) -> bytes:
        doc = receipt.model_dump(mode="json", include=set(self.tail_fields) - {"pending"})
        parts = []
        for field in self.tail_fields:
            if field == "pending":
                continue
            if isinstance(doc[field], list):
                text = "[" + ", ".join(_row(v) for v in doc[field]) + "]"
            else:
                text = json.dumps(doc[field])
            parts.append(f"  {json.dumps(field)}: {text}")
        pending = b", ".join(self._pending_row(p) for p in receipt.pending)
        self.pending_shown = len(receipt.pending)
        return ("\n  ],\n" + ",\n".join(parts) + ',\n  "pending": [').encode("utf-8") + pending + self._CLOSE

    def _pending_row(self, pending: PendingBatch, doc: dict[str, Any] | None = None) -> bytes:
        """Each batch in flight is rendered once, when it is intended (from ``doc``, its document, if given)."""
        cached = self.pending_rows.get(id(pending))
        if cached is None or cached[0] is not pending:
            cached = (pending, _row(pending if doc is None else doc).encode("utf-8"))
            self.pending_rows[id(pending)] = cached
        return cached[1]

    def text(self, receipt: Receipt) -> str:
        tail = self._tail(receipt)
        self.close_at = len(self.head) + len(tail) - len(self._CLOSE)
        return (self.head + tail).decode("utf-8")

    def intend(self, pending: PendingBatch, doc: dict[str, Any] | None = None) -> tuple[int, bytes]:
        """A batch's intent: added at the end of the pending list, nothing else written."""
        row = (b", " if self.pending_shown else b"") + self._pending_row(pending, doc)
        at = self.close_at
        self.close_at += len(row)
        self.pending_shown += 1
        return at, row + self._CLOSE

    def update(self, added: Sequence[Any], receipt: Receipt) -> tuple[int, bytes]:
        live = {id(p) for p in receipt.pending}
        self.pending_rows = {k: v for k, v in self.pending_rows.items() if k in live}
        at = self.end
        rows = b""
        if added:
            rows = ("".join(("," if self.count or i else "") + "\n    " + _row(e) for i, e in enumerate(added))).encode(
                "utf-8"
            )
            self.count += len(added)
        self.end = at + len(rows)
        tail = self._tail(receipt)
        self.close_at = self.end + len(tail) - len(self._CLOSE)
        return at, rows + tail
