"""A ListObjectVersions answer's body read as bmxgc uses it (pure: no I/O).

botocore's XML walk (a dict per element, a shape lookup per field) costs about
20 ms per page of 1,000 versions; ElementTree's own parse about 6 ms with the
fields taken out. S3 answers in a small, regular subset of XML, which one
regular expression reads in under 2 ms: ``read_subset`` takes a body only if
the whole of it is in that subset (below), where what the expression captures
is exactly what an XML parser gives; any other body (comments, CDATA, an
entity other than XML's five, a character reference, an attribute below the
root, a namespace prefix, a field written twice or as ``<Key/>``, CR, another
encoding), or a row that does not read, is read by ElementTree
(``_read_tree``), as before. Either way the result is botocore's, field for
field (``tests/test_listing_xml.py`` holds both to botocore's parser;
``tests/test_listing_subset.py`` holds them to each other on thousands of
generated bodies).

The subset: an optional ``<?xml version=... encoding="UTF-8"?>``; the root
``<ListVersionsResult>`` with at most an ``xmlns`` attribute (one ElementTree
takes: no ``}``, not a namespace XML reserves); then, between XML whitespace,
top-level elements holding text only (or empty: ``<KeyMarker/>``,
``<KeyMarker />``), and ``Version`` and ``DeleteMarker`` elements whose
children hold text only or, one level deeper, elements holding text only
(``Owner``, ``RestoreStatus``); the six fields bmxgc reads are written once,
never as ``<Field/>``. Text holds no ``<``, no entity but XML's five
(``&quot;``, ``&amp;``, ...), no carriage return, and no character XML
forbids; the body decodes as UTF-8.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote_plus

from bmxgc.errors import ServiceError
from bmxgc.model import VersionEntry

ParseTime = Callable[[str], datetime]

_RESULT = "ListVersionsResult"
# The fields of a row bmxgc reads: each must be written at most once, where the
# subset's expression looks for it (a second one is left to ElementTree).
_FIELDS = ("Key", "VersionId", "IsLatest", "LastModified", "ETag", "Size")


@dataclass(frozen=True)
class Listing:
    """One ListObjectVersions page as bmxgc uses it: its rows (versions, then
    delete markers, each in the answer's order), and where the next page starts."""

    rows: list[VersionEntry]
    truncated: bool
    next_key: str | None
    next_version_id: str | None


def parse_listing(body: bytes, parse_time: ParseTime) -> Listing | None:
    """A ListObjectVersions answer's body as ``Listing``; None if it is not a
    ListVersionsResult (an error document, or no XML at all: botocore's to judge).

    What botocore's parser and its ``encoding-type=url`` handler give, field
    for field: elements matched by local name (any namespace, any order); keys
    and the next key marker URL-decoded (``unquote_plus``, as botocore does)
    when the answer says ``<EncodingType>url</EncodingType>``; a missing
    ``VersionId`` is the ``null`` version; ``IsLatest`` and ``IsTruncated``
    true only for ``true``. ``LastModified`` is read as ``s3.parse_timestamp``
    reads it: ``datetime.fromisoformat`` when that gives a time with a zone
    (S3's form), else ``parse_time``.
    """
    listing = read_subset(body, parse_time)
    return listing if listing is not None else _read_tree(body, parse_time)


# --------------------------------------------------------------------------- the subset
_WS = r"[ \t\n]*"
# Text: no markup. Which characters and entities it may hold is checked on the
# whole body at once (``_plain_text``), not character by character here.
_TEXT = r"[^<]*"
_TAG = r"[A-Za-z_][A-Za-z0-9_.-]*"  # an element's name: ASCII, no namespace prefix
_NOT_A_FIELD = r"(?!(?:" + "|".join(_FIELDS) + r")" + _WS + r"/?>)"


def _field(name: str, group: int) -> str:
    # Group ``group`` captures the field; a second one in the same row fails the
    # row ((?(n)(?!))): ElementTree's findtext would give the first, not the last.
    # The tag comes first: the condition is tested only on a tag that matched.
    return rf"<{name}>(?({group})(?!))({_TEXT})</{name}>"


_ROW = (  # groups 1 (the row's kind) to 10
    r"<(Version|DeleteMarker)>(?:" + _WS + r"(?:"
    + "|".join(_field(name, group) for group, name in enumerate(_FIELDS, start=2))
    + r"|<" + _NOT_A_FIELD + r"(?P<leaf>" + _TAG + r")(?:" + _WS + r"/>|>" + _TEXT + r"</(?P=leaf)>)"
    r"|<" + _NOT_A_FIELD + r"(?P<outer>" + _TAG + r")>(?:" + _WS
    + r"<" + _NOT_A_FIELD + r"(?P<inner>" + _TAG + r")(?:" + _WS + r"/>|>" + _TEXT + r"</(?P=inner)>))*" + _WS + r"</(?P=outer)>"
    r"))*" + _WS + r"</\1>"
)
# S3's own layout of a row: the six fields in this order, an Owner, a StorageClass.
# Read by a shorter expression (half the time); a body with any other row goes
# to ``_ROW``, which reads the subset's rows in any order.
_OWNER = r"<Owner><ID>" + _TEXT + r"</ID>(?:<DisplayName>" + _TEXT + r"</DisplayName>)?</Owner>"
_S3_ROW = (  # groups 1 (the row's kind) to 7, as in _ROW
    r"<(Version|DeleteMarker)>(?:" + _OWNER + r")?"
    r"<Key>(" + _TEXT + r")</Key><VersionId>(" + _TEXT + r")</VersionId>"
    r"<IsLatest>(" + _TEXT + r")</IsLatest><LastModified>(" + _TEXT + r")</LastModified>"
    r"(?:<ETag>(" + _TEXT + r")</ETag><Size>(" + _TEXT + r")</Size>)?"
    r"(?:" + _OWNER + r"|<StorageClass>" + _TEXT + r"</StorageClass>)*</\1>"
)
# One top-level item: a row, a field of the result, or anything else (then not
# the subset). The last three groups are the field's name and text and the other.
_TOP = (
    r"|<(?!(?:Version|DeleteMarker)" + _WS + r"/?>)(?P<name>" + _TAG + r")(?:" + _WS + r"/>|>(?P<value>" + _TEXT
    + r")</(?P=name)>)|(?P<other>[\s\S]))"
)
_S3_ITEM = re.compile(_WS + r"(?:" + _S3_ROW + _TOP)
_ITEM = re.compile(_WS + r"(?:" + _ROW + _TOP)
# A default namespace ElementTree takes: no '}' (its tags' separator), not one
# of the two namespaces XML reserves (expat refuses to bind them).
_NAMESPACE = r"(?!http://www\.w3\.org/(?:XML/1998/namespace|2000/xmlns/)[\"'])"
_HEAD = re.compile(
    r"(?:<\?xml[ \t\n]+version=(?:\"1\.[0-9]+\"|'1\.[0-9]+')"
    r"(?:[ \t\n]+encoding=(?:\"(?i:utf-8)\"|'(?i:utf-8)'))?"
    r"(?:[ \t\n]+standalone=(?:\"(?:yes|no)\"|'(?:yes|no)'))?" + _WS + r"\?>)?"
    + _WS + "<" + _RESULT + r"(?:[ \t\n]+xmlns" + _WS + "=" + _WS + r"(?:\"" + _NAMESPACE + r"[^\"<&}]*\"|'" + _NAMESPACE + r"[^'<&}]*'))?"
    + _WS + ">"
)
# Bytes the subset's text refuses or must look at: those XML forbids (C0 controls
# but tab and LF), CR (XML reads CR LF as LF), '&' (entities) and ']' (for
# ']]>'). ``translate`` deletes every other byte: a few are left, if any.
_LOOKED_AT = bytes(range(0x09)) + b"\x0b\x0c\r" + bytes(range(0x0e, 0x20)) + b"&]"
_OTHER_BYTES = bytes(b for b in range(256) if b not in _LOOKED_AT)
# XML's five predefined entities; no other (no character reference) is the subset.
_ENTITIES = (b"&quot;", b"&apos;", b"&lt;", b"&gt;", b"&amp;")


def _plain_text(body: bytes, text: str) -> bool:
    """Whether the text of ``body`` (``text`` decoded) reads as ``_unescape``
    reads it: no character XML forbids, no CR, no entity but XML's five, no ``]]>``."""
    left = body.translate(None, _OTHER_BYTES)
    if left.strip(b"&]"):
        return False
    ampersands = left.count(b"&")
    if ampersands and ampersands != body.count(b"&quot;"):  # S3: &quot; in every ETag, nothing else
        if ampersands != sum(body.count(entity) for entity in _ENTITIES):
            return False
    return (b"]" not in left or b"]]>" not in body) and (
        body.isascii() or ("\ufffe" not in text and "\uffff" not in text)
    )


def _unescape(value: str) -> str:
    """Text with XML's predefined entities resolved ('&amp;' last: '&amp;lt;' is '&lt;')."""
    if "&" not in value:
        return value
    return (
        value.replace("&quot;", '"').replace("&apos;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )


_TAIL = "</" + _RESULT + ">"


def _items(text: str, start: int, end: int) -> list[tuple[str, ...]] | None:
    """The top-level items of ``text[start:end]``, by S3's row layout if every
    row has it, else by the subset's; None if some item is not the subset."""
    for pattern in (_S3_ITEM, _ITEM):
        items: list[tuple[str, ...]] = pattern.findall(text, start, end)
        if not any(item[-1] for item in items):
            return items
    return None


def read_subset(body: bytes, parse_time: ParseTime) -> Listing | None:
    """``body`` read by one regular expression if it is in the subset the
    module's docstring describes; None if it is not (then ElementTree reads it)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    head = _HEAD.match(text)
    end = len(text.rstrip(" \t\n")) - len(_TAIL)
    if head is None or end < head.end() or not text.startswith(_TAIL, end) or not _plain_text(body, text):
        return None
    items = _items(text, head.end(), end)
    if items is None:
        return None
    try:
        return _read_items(items, parse_time)
    except Exception:  # noqa: BLE001 - not swallowed: ElementTree's read raises it again
        # A row that does not read (no Key or LastModified, a time or a size
        # that does not parse): the error ElementTree's read raises, which
        # judges the versions before the markers, not the rows in the body's order.
        return _read_tree(body, parse_time)


def _read_items(items: list[tuple[str, ...]], parse_time: ParseTime) -> Listing:
    """The page from the items of a body in the subset."""
    versions: list[VersionEntry] = []
    markers: list[VersionEntry] = []
    top: dict[str, str] = {}
    for item in items:
        kind, key, vid, latest, modified, etag, size = item[:7]
        if not kind:
            top[item[-3]] = _unescape(item[-2])
            continue
        if not key or not modified:
            raise _missing_field()
        if "&" in key:
            key = _unescape(key)
        if "&" in vid:
            vid = _unescape(vid)
        if "&" in modified:  # before fromisoformat, which reads '...05.123456&amp;+02:00' as a time
            modified = _unescape(modified)
        try:  # S3's form; ``parse_time`` for any other (below)
            when = _from_iso(modified)
        except ValueError:
            when = _NO_ZONE
        if when.tzinfo is None:
            when = parse_time(modified)
        # tuple.__new__: a VersionEntry without the call of its generated __new__.
        if kind == "DeleteMarker":
            markers.append(_new(VersionEntry, (key, vid or "null", latest == "true", True, when, "", 0)))
            continue
        if "&" in etag:  # S3 writes &quot;...&quot;; any other entity: the general way
            quoted = etag.replace("&quot;", '"')
            etag = quoted if "&" not in quoted else _unescape(etag)
        # An entity in Size: int() refuses it, and ElementTree's read judges the page (above).
        versions.append(
            _new(VersionEntry, (key, vid or "null", latest == "true", False, when, etag.strip('"'), int(size or 0)))
        )
    return _listing(versions + markers, top)


_from_iso = datetime.fromisoformat
_NO_ZONE = datetime(1970, 1, 1)
_new = tuple.__new__


def _time(text: str, parse_time: ParseTime) -> datetime:
    """``text`` by ``datetime.fromisoformat`` if that gives a zone, else by ``parse_time``."""
    try:
        when = _from_iso(text)
    except ValueError:
        return parse_time(text)
    return when if when.tzinfo is not None else parse_time(text)


def _missing_field() -> ServiceError:
    return ServiceError(
        "S3 answered a listing with a version that has no Key or no LastModified; "
        "check s3.endpoint_url (is it an S3 server?)"
    )


def _listing(rows: list[VersionEntry], top: dict[str, str]) -> Listing:
    """The page from its rows (keys as the answer wrote them, entities resolved)
    and its top-level fields: keys and the next key marker URL-decoded when
    the answer says so."""
    url = top.get("EncodingType") == "url"
    if url:
        for at, row in enumerate(rows):
            if "%" in row.key or "+" in row.key:
                rows[at] = row._replace(key=unquote_plus(row.key))
    next_key = top.get("NextKeyMarker")
    if url and next_key:
        decoded = unquote_plus(next_key)
        # LocalStack encodes the keys but not the next key marker, which names the
        # page's last key: read it the way that names a key of the page.
        if decoded != next_key and not any(r.key == decoded for r in rows) and any(r.key == next_key for r in rows):
            decoded = next_key
        next_key = decoded
    return Listing(rows, top.get("IsTruncated") == "true", next_key, top.get("NextVersionIdMarker"))


# --------------------------------------------------------------------------- any other body
def local_name(tag: str) -> str:
    """An ElementTree tag without its namespace."""
    return tag.rpartition("}")[2]


def _read_tree(body: bytes, parse_time: ParseTime) -> Listing | None:
    """``body`` read by ElementTree: any well-formed XML, elements matched by local name."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    if local_name(root.tag) != _RESULT:
        return None
    ns = root.tag[: len(root.tag) - len(_RESULT)]
    version_tag, marker_tag = ns + "Version", ns + "DeleteMarker"
    versions: list[ElementTree.Element] = []
    markers: list[ElementTree.Element] = []
    top: dict[str, str] = {}
    for child in root:
        tag = child.tag
        if tag == version_tag:
            versions.append(child)
        elif tag == marker_tag:
            markers.append(child)
        else:
            name = local_name(tag)
            if name == "Version":
                versions.append(child)
            elif name == "DeleteMarker":
                markers.append(child)
            else:
                top[name] = child.text or ""
    key_tag, id_tag, latest_tag, modified_tag, etag_tag, size_tag = (ns + name for name in _FIELDS)
    rows: list[VersionEntry] = []
    for elements, is_marker in ((versions, False), (markers, True)):
        for element in elements:
            field: Callable[[str], str | None] = element.findtext  # a child's text, by tag
            key = field(key_tag)
            if key is None:  # its children in another namespace than the result's
                fields = {ns + local_name(child.tag): child.text for child in element}
                field = fields.get
                key = field(key_tag)
            modified = field(modified_tag)
            if not key or not modified:
                raise _missing_field()
            if is_marker:
                rows.append(VersionEntry(key, field(id_tag) or "null", field(latest_tag) == "true", True, _time(modified, parse_time)))
            else:
                rows.append(
                    VersionEntry(
                        key, field(id_tag) or "null", field(latest_tag) == "true", False,
                        _time(modified, parse_time), (field(etag_tag) or "").strip('"'), int(field(size_tag) or 0),
                    )
                )
    return _listing(rows, top)
