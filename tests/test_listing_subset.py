"""The listing body's fast read (``listing_xml.read_subset``, one regular
expression) against ElementTree's (``listing_xml._read_tree``) and botocore's.

The fast read must never give anything else than an XML parser: for every body
it either declines (None, and ElementTree reads it) or gives exactly
ElementTree's result. Thousands of generated bodies (keys with entities,
character references and CDATA; fields reordered, written twice, empty or
self-closing; comments, attributes, namespaces, CR, BOMs, text between
elements) hold it to that, and to botocore's parser wherever botocore reads
the body. S3's own shape, and the real servers' pages, take the fast read.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from bmxgc import listing_xml, s3
from bmxgc.errors import ServiceError
from servers import Bucket
from test_listing_xml import BODIES, _botocore_rows, _marker, _result, _version

Outcome = tuple[str, Any]


def _outcome(read: Callable[[bytes, listing_xml.ParseTime], listing_xml.Listing | None], body: bytes) -> Outcome:
    try:
        return ("listing", read(body, s3.parse_timestamp))
    except ServiceError as exc:
        return ("error", str(exc))


# --------------------------------------------------------------------------- generated bodies
KEY_CHARS = ["a", "b", "/", " ", "+", "%", ">", '"', "]", "\t", "\n", "\u00e9", "\U0001f600"] * 4 + ["&", "<", "'", "\r", "\x01"]


def _escaped(value: str, rng: random.Random) -> str:
    """``value`` as XML text, written in one of the ways XML allows (or, now and
    then, in one it does not: a raw '<', '&' or control character)."""
    out = []
    for ch in value:
        roll = rng.random()
        if ch == "&":
            out.append(rng.choice(["&amp;", "&#38;", "&#x26;"]) if roll < 0.95 else "&")
        elif ch == "<":
            out.append(rng.choice(["&lt;", "&#60;"]) if roll < 0.95 else "<")
        elif ch == '"':
            out.append(rng.choice(["&quot;", '"'] * 5 + ["&#34;"]))
        elif ch == "'":
            out.append(rng.choice(["&apos;", "'", "'"]))
        elif ch == ">":
            out.append(rng.choice(["&gt;"] + [">"] * 9))
        elif ch in "\r\x01" and roll < 0.7:
            out.append(f"&#{ord(ch)};")
        else:
            out.append(ch)
    text = "".join(out)
    if rng.random() < 0.02 and "]]>" not in value:
        return f"<![CDATA[{value}]]>"
    return text


def _element(tag: str, text: str, rng: random.Random) -> str:
    if text == "" and rng.random() < 0.3:
        return rng.choice([f"<{tag}/>", f"<{tag} />"])
    return f"<{tag}>{text}</{tag}>"


def _space(rng: random.Random) -> str:
    return rng.choice([" ", "\n  ", "\n\t", "\r\n", "<!-- c -->", "x"]) if rng.random() < 0.03 else ""


def _key(rng: random.Random, url: bool) -> str:
    key = "books/" + "".join(rng.choice(KEY_CHARS) for _ in range(rng.randint(0, 6)))
    if url and rng.random() < 0.8:
        return quote(key, safe="/") if rng.random() < 0.5 else key.replace(" ", "+")
    return key


def _row(rng: random.Random, url: bool) -> str:
    marker = rng.random() < 0.3
    fields = [
        ("Key", _escaped(_key(rng, url), rng)),
        ("VersionId", rng.choice(["v1", "null", "", "a&quot;b", "3/L4kq"])),
        ("IsLatest", rng.choice(["true", "false", "True", ""])),
        ("LastModified", rng.choice(["2025-01-02T03:04:05.000Z", "2025-01-02T03:04:05Z", "2025-01-02T03:04:05+02:00", "2025-01-02", "Thu, 02 Jan 2025 03:04:05 GMT"])),
    ]
    if not marker:
        fields += [("ETag", rng.choice(["&quot;e1&quot;"] * 5 + ['"e2"', "e3", "&#34;e4&#34;", ""])), ("Size", rng.choice(["3", "0", "12", ""]))]
    if rng.random() < 0.05:
        fields.pop(rng.randrange(len(fields)))  # a field left out
    if rng.random() < 0.05:
        fields.append(rng.choice(fields))  # a field written twice
    if rng.random() < 0.03:
        fields.insert(0, (rng.choice(fields)[0], ""))  # a field written empty first
    extra = rng.choice([[], [("StorageClass", "STANDARD")], [("StorageClass", "STANDARD"), ("ChecksumAlgorithm", "CRC32")]])
    parts = [_element(tag, text, rng) for tag, text in fields + extra]
    if rng.random() < 0.7:
        owner = "<Owner><ID>abc</ID><DisplayName>me</DisplayName></Owner>"
        at = rng.choice([0, len(parts), rng.randrange(len(parts) + 1)])  # S3 writes it first or last
        parts.insert(at, owner if rng.random() < 0.9 else "<Owner><Key>x</Key></Owner>")
    if rng.random() < 0.3:
        rng.shuffle(parts)
    tag = "DeleteMarker" if marker else "Version"
    open_tag = rng.choice([f"<{tag}>"] * 60 + [f'<{tag} a="1">', f'<{tag} xmlns="">'])
    return open_tag + "".join(_space(rng) + part for part in parts) + _space(rng) + f"</{tag}>"


def _body(rng: random.Random) -> bytes:
    url = rng.random() < 0.6
    top = [
        _element("Name", "b", rng),
        _element("Prefix", "books/", rng),
        _element("IsTruncated", rng.choice(["true", "false", "TRUE"]), rng),
    ]
    if url:
        top.append(_element("EncodingType", "url", rng))
    if rng.random() < 0.5:
        top.append(_element("NextKeyMarker", _escaped(_key(rng, url), rng), rng))
        top.append(_element("NextVersionIdMarker", rng.choice(["v1", "a&quot;b"]), rng))
    rows = [_row(rng, url) for _ in range(rng.randint(0, 5))]
    if rng.random() < 0.02:
        rows.append(rng.choice(["<Version />", "<DeleteMarker/>", "<Version>text</Version>"]))
    items = top + rows
    if rng.random() < 0.3:
        rng.shuffle(items)
    root = rng.choice(
        ['<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'] * 30
        + ["<ListVersionsResult>", '<ListVersionsResult xmlns = "x" >', "<ListVersionsResult a='1'>"]
    )
    head = rng.choice(['<?xml version="1.0" encoding="UTF-8"?>\n'] * 20 + ["", "<?xml version='1.0'?>", "\ufeff", "<!-- hi -->"])
    tail = rng.choice(["</ListVersionsResult>"] * 30 + ["</ListVersionsResult>\n", "</ListVersionsResult>junk", ""])
    return (head + root + "".join(_space(rng) + item for item in items) + tail).encode("utf-8")


def test_the_fast_read_gives_what_elementtree_gives_or_declines() -> None:
    rng = random.Random(11)
    taken = declined = s3_layout = 0
    for _ in range(6000):
        body = _body(rng)
        fast = _outcome(listing_xml.read_subset, body)
        if fast == ("listing", None):
            declined += 1
            continue
        taken += 1
        text = body.decode()
        s3_layout += not any(item[-1] for item in listing_xml._S3_ITEM.findall(text, text.index(">", text.index("<ListVersionsResult")) + 1, text.rindex("</ListVersionsResult>")))
        assert fast == _outcome(listing_xml._read_tree, body), body
        assert _outcome(listing_xml.parse_listing, body) == fast, body
    # Both kinds are exercised: the subset is neither everything nor nothing,
    # and both of its expressions (S3's row layout, and any order) are used.
    assert taken > 1000 and declined > 1000, (taken, declined)
    assert 100 < s3_layout < taken - 100, (s3_layout, taken)


def test_the_fast_read_gives_what_botocore_gives() -> None:
    rng = random.Random(12)
    compared = 0
    for _ in range(2500):
        body = _body(rng)
        try:
            fast = listing_xml.read_subset(body, s3.parse_timestamp)
        except ServiceError:
            continue
        if fast is None:
            continue
        try:
            rows, truncated, next_key, next_id = _botocore_rows(body)
        except ValueError:  # botocore cannot read it (an empty Size): nothing to compare
            continue
        assert (fast.rows, fast.truncated, fast.next_key, fast.next_version_id) == (rows, truncated, next_key, next_id)
        compared += 1
    assert compared > 300


def test_s3_shaped_pages_take_the_fast_read_and_others_do_not() -> None:
    for name in ("s3_url_encoded", "no_namespace_not_encoded", "reordered_null_versions", "empty"):
        fast = listing_xml.read_subset(BODIES[name], s3.parse_timestamp)
        assert fast is not None, name
        assert (fast.rows, fast.truncated, fast.next_key, fast.next_version_id) == _botocore_rows(BODIES[name])
    for name in ("prefixed_namespace", "fields_in_no_namespace"):
        assert listing_xml.read_subset(BODIES[name], s3.parse_timestamp) is None, name


@pytest.mark.parametrize(
    "change",
    [
        ("<Key>books/a+b.webp</Key>", "<Key>books/a+b.webp</Key><Key>books/other</Key>"),  # a field twice
        ("<VersionId>v1</VersionId>", "<VersionId/>"),  # self-closing
        ("<Key>books/a+b.webp</Key>", "<Key /><Key>books/a+b.webp</Key>"),
        ("<Key>books/a+b.webp</Key>", "<Key>books/a+b&#38;c</Key>"),  # a character reference
        ("<Key>books/a+b.webp</Key>", "<Key>books/a+b&amp</Key>"),  # an ampersand that is no entity
        ("<Key>books/a+b.webp</Key>", "<Key><![CDATA[books/x]]></Key>"),
        ("<Key>books/a+b.webp</Key>", "<!-- x --><Key>books/a+b.webp</Key>"),
        ("<Key>books/a+b.webp</Key>", "<Key>books/a\r\nb</Key>"),
        ("<Version>", '<Version id="1">'),
        ("<Version>", "<Version>text"),
        ("<Name>b</Name>", "<s3:Name xmlns:s3='x'>b</s3:Name>"),
    ],
)
def test_a_body_outside_the_subset_is_left_to_elementtree(change: tuple[str, str]) -> None:
    body = BODIES["s3_url_encoded"].decode().replace(*change, 1).encode()
    assert body != BODIES["s3_url_encoded"]
    assert listing_xml.read_subset(body, s3.parse_timestamp) is None
    assert _outcome(listing_xml.parse_listing, body) == _outcome(listing_xml._read_tree, body)


def test_the_servers_pages_take_the_fast_read(bucket: Bucket) -> None:
    """What the server under test really sends (moto here; LocalStack and Ceph
    in CI) is read by the fast read, as botocore reads it."""
    for key in ["books/a+b.webp", "books/a%20b.webp", "books/with space", "books/amp&<>\"'", "books/caf\u00e9"]:
        bucket.put(key, b"one")
        bucket.put(key, b"two")
    bucket.delete("books/with space")
    client = s3.make_client(bucket.endpoint, "us-east-1")
    bodies: list[bytes] = []

    def keep(response_dict: Any, **_kwargs: Any) -> None:
        bodies.append(response_dict["body"])

    client.meta.events.register_first("before-parse.s3.ListObjectVersions", keep)
    client.list_object_versions(Bucket=bucket.name, Prefix="books/", EncodingType="url", MaxKeys=4)
    client.list_object_versions(Bucket=bucket.name, Prefix="books/", EncodingType="url")
    assert len(bodies) == 2
    for body in bodies:
        fast = listing_xml.read_subset(body, s3.parse_timestamp)
        assert fast is not None, body[:300]
        assert (fast.rows, fast.truncated, fast.next_key, fast.next_version_id)[0] == _botocore_rows(body)[0]
    assert len(listing_xml.read_subset(bodies[1], s3.parse_timestamp).rows) == 11  # type: ignore[union-attr]


def test_a_row_without_a_key_in_a_body_that_is_not_xml_is_left_to_botocore() -> None:
    """The fast read judges a row without a Key only once the whole body is
    known to be the subset: a malformed body is botocore's to judge (and retry)."""
    body = BODIES["s3_url_encoded"].decode().replace("<Key>books/a+b.webp</Key>", "<Key></Key>", 1)
    with pytest.raises(ServiceError, match="no Key or no LastModified"):
        listing_xml.parse_listing(body.encode(), s3.parse_timestamp)
    cut = body.rindex("</DeleteMarker>")  # after the row without a Key
    malformed = (body[:cut] + "<Junk>x</Jun>" + body[cut:]).encode()
    assert listing_xml.parse_listing(malformed, s3.parse_timestamp) is None


# --------------------------------------------------------------------------- edge cases found by review
def _any_outcome(read: Callable[[bytes, listing_xml.ParseTime], listing_xml.Listing | None], body: bytes) -> Outcome:
    """``_outcome``, with any exception (a timestamp or a size that does not read) as its type and text."""
    try:
        return _outcome(read, body)
    except Exception as exc:  # noqa: BLE001 - what is raised is what is compared
        return (type(exc).__name__, str(exc))


def _fast_is_elementtree_or_declines(body: bytes) -> Outcome:
    fast = _any_outcome(listing_xml.read_subset, body)
    tree = _any_outcome(listing_xml._read_tree, body)
    assert fast in (("listing", None), tree), body
    assert _any_outcome(listing_xml.parse_listing, body) == tree, body
    return fast


@pytest.mark.parametrize(
    "namespace",
    ["a}b", "http://www.w3.org/XML/1998/namespace", "http://www.w3.org/2000/xmlns/"],
)
def test_a_root_namespace_elementtree_refuses_is_not_read_by_the_fast_read(namespace: str) -> None:
    """ElementTree (and botocore, which uses it) refuses a default namespace
    holding '}' or naming one of XML's reserved namespaces: not a listing."""
    for quote_char in "\"'":
        body = BODIES["s3_url_encoded"].decode().replace(
            'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"', f"xmlns={quote_char}{namespace}{quote_char}", 1
        ).encode()
        assert listing_xml._read_tree(body, s3.parse_timestamp) is None
        assert _fast_is_elementtree_or_declines(body) == ("listing", None)


@pytest.mark.parametrize(
    "change",
    [
        # An entity in LastModified is resolved before the time is read, as ElementTree does.
        ("<LastModified>2025-01-02T03:04:05.000Z</LastModified>", "<LastModified>2025-01-02T03:04:05&amp;Z</LastModified>"),
        ("<LastModified>2025-01-02T03:04:05.000Z</LastModified>", "<LastModified>&apos;2025-01-02T03:04:05Z</LastModified>"),
        ("<LastModified>2025-03-04T05:06:07.123Z</LastModified>", "<LastModified>2025-03-04T05:06:07&quot;Z</LastModified>"),
        ("<Size>3</Size>", "<Size>&quot;3</Size>"),
    ],
)
def test_entities_in_a_rows_time_and_size_read_as_elementtree_reads_them(change: tuple[str, str]) -> None:
    body = BODIES["s3_url_encoded"].decode().replace(*change, 1).encode()
    assert body != BODIES["s3_url_encoded"]
    _fast_is_elementtree_or_declines(body)


@pytest.mark.parametrize(
    "rows",
    [
        # ElementTree's read judges the versions first, then the markers: the
        # version without a key is the error, not the marker's time.
        [_marker("books/m").replace("2025-03-04T05:06:07.123Z", "nonsense"), _version("")],
        [_marker("books/m").replace("2025-03-04T05:06:07.123Z", "nonsense"), _version("books/a", size="x")],
        [_version("books/a", size="x"), _version("")],
        [_marker(""), _version("books/a").replace("2025-01-02T03:04:05.000Z", "nonsense")],
    ],
)
def test_a_page_with_two_bad_rows_raises_what_elementtrees_read_raises(rows: list[str]) -> None:
    body = _result("".join(rows))
    fast = _fast_is_elementtree_or_declines(body)
    assert fast[0] != "listing"


INSERTED = ["&amp;", "&quot;", "&apos;", "&lt;", "&gt;", "&amp;quot;", "]]&gt;", "]", "\t", "\n", " ", "\u00e9", "%20", "+", "\u0663"]
NAMESPACES = ['xmlns="a}b"', "xmlns='x'", 'xmlns=""', 'xmlns = "\u00e9"', 'xmlns="http://www.w3.org/2000/xmlns/"']


def test_generated_bodies_with_entities_and_spaces_in_any_text_read_as_elementtree_reads_them() -> None:
    """Generated bodies with an entity, a space or a digit put into the text of
    any element (a key, a time, a size, a marker) or between two elements, and
    now and then another root namespace: the fast read gives ElementTree's
    answer, its error included, or declines."""
    rng = random.Random(13)
    taken = 0
    for _ in range(2500):
        body = _body(rng).decode()
        for _ in range(rng.randint(1, 4)):
            places = [m.start() + 1 for m in re.finditer(r">", body)]
            at = rng.choice(places[:-1] or places)
            if rng.random() < 0.9:
                body = body[:at] + rng.choice(INSERTED) + body[at:]
            else:
                body = body.replace('xmlns="http://s3.amazonaws.com/doc/2006-03-01/"', rng.choice(NAMESPACES), 1)
        taken += _fast_is_elementtree_or_declines(body.encode()) != ("listing", None)
    assert taken > 100, taken
