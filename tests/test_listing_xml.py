"""The ListObjectVersions body read by bmxgc itself: the same rows botocore's parser gives, for less CPU.

The request stays botocore's (signing, retries, endpoint); only the answer's
body is read by ``s3.parse_listing``. These tests hold it to botocore's own
parser (with its ``encoding-type=url`` decoding) on the shapes servers send:
S3's namespace or none, fields in any order, delete markers, null version ids,
URL-encoded keys with ``+``, ``%20`` and unicode, XML-escaped keys.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import pytest

import botocore.session
from botocore.awsrequest import AWSResponse
from botocore.handlers import decode_list_object_versions
from botocore.parsers import ResponseParserFactory

from bmxgc import s3
from bmxgc.errors import ServiceError
from bmxgc.model import VersionEntry
from servers import Bucket

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
OWNER = "<Owner><ID>abc</ID><DisplayName>me</DisplayName></Owner>"


def _botocore_rows(body: bytes) -> tuple[list[VersionEntry], bool, str | None, str | None]:
    """What botocore makes of ``body`` (its parser, then its URL-decoding handler)."""
    model = botocore.session.get_session().get_service_model("s3").operation_model("ListObjectVersions")
    assert model.output_shape is not None
    factory = ResponseParserFactory()
    factory.set_parser_defaults(timestamp_parser=s3.parse_timestamp)
    parsed: Any = factory.create_parser("rest-xml").parse(
        {"status_code": 200, "headers": {}, "body": body}, model.output_shape
    )
    decode_list_object_versions(parsed, context={"encoding_type_auto_set": True})
    rows = [
        VersionEntry(
            v["Key"], v.get("VersionId") or "null", bool(v.get("IsLatest")), False, v["LastModified"],
            v.get("ETag", "").strip('"'), int(v.get("Size", 0)),
        )
        for v in parsed.get("Versions", [])
    ] + [
        VersionEntry(m["Key"], m.get("VersionId") or "null", bool(m.get("IsLatest")), True, m["LastModified"])
        for m in parsed.get("DeleteMarkers", [])
    ]
    return rows, bool(parsed.get("IsTruncated")), parsed.get("NextKeyMarker"), parsed.get("NextVersionIdMarker")


def _ours(body: bytes) -> tuple[list[VersionEntry], bool, str | None, str | None]:
    listing = s3.parse_listing(body)
    assert listing is not None
    return listing.rows, listing.truncated, listing.next_key, listing.next_version_id


def _version(key: str, vid: str | None = "v1", latest: str = "true", size: str = "3", extra: str = "") -> str:
    vid_xml = f"<VersionId>{vid}</VersionId>" if vid is not None else ""
    return (
        f"<Version><Key>{key}</Key>{vid_xml}<IsLatest>{latest}</IsLatest>"
        f"<LastModified>2025-01-02T03:04:05.000Z</LastModified><ETag>&quot;e1&quot;</ETag>"
        f"<Size>{size}</Size>{OWNER}<StorageClass>STANDARD</StorageClass>{extra}</Version>"
    )


def _marker(key: str, vid: str = "m1", latest: str = "true") -> str:
    return (
        f"<DeleteMarker>{OWNER}<Key>{key}</Key><VersionId>{vid}</VersionId><IsLatest>{latest}</IsLatest>"
        "<LastModified>2025-03-04T05:06:07.123Z</LastModified></DeleteMarker>"
    )


def _result(inner: str, *, ns: str = NS, url: bool = True, truncated: str = "false", head: str = "") -> bytes:
    encoding = "<EncodingType>url</EncodingType>" if url else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListVersionsResult {ns}><Name>b</Name>{head}'
        f"<Prefix>books/</Prefix><KeyMarker></KeyMarker><VersionIdMarker></VersionIdMarker>"
        f"<MaxKeys>1000</MaxKeys>{encoding}<IsTruncated>{truncated}</IsTruncated>{inner}</ListVersionsResult>"
    ).encode("utf-8")


BODIES = {
    # S3: its namespace, keys URL-encoded (space as +, a real + as %2B), versions then markers.
    "s3_url_encoded": _result(
        _version("books/a+b.webp")
        + _version("books/a%2Bb.webp", "v2")
        + _version("books/a%2520b.webp", "v3")
        + _version("books/caf%C3%A9.webp", "v4", latest="false")
        + _version("books/%F0%9F%98%80%26%3C%3E%22%27", "v5", size="0")
        + _marker("books/gone%3Fx%23y")
        + _marker("books/old", "m2", latest="false"),
        truncated="true",
        head="<NextKeyMarker>books/old+one%2B</NextKeyMarker><NextVersionIdMarker>m2</NextVersionIdMarker>",
    ),
    # A server that ignores encoding-type: XML-escaped keys, and a + or %20 is literal.
    "no_namespace_not_encoded": _result(
        _version("books/a+b &amp; c%20d &lt;x&gt; &quot;q&quot; &apos;") + _marker("books/tab\there"),
        ns="",
        url=False,
    ),
    # LocalStack/Ceph-like: fields in another order, markers before versions, extra fields,
    # the null version written out and left out.
    "reordered_null_versions": _result(
        _marker("books/z", "null")
        + "<Version><StorageClass>STANDARD</StorageClass><Size>12</Size><ETag>\"e2\"</ETag>"
        "<LastModified>2025-01-02T03:04:05Z</LastModified><IsLatest>false</IsLatest><Key>books/y</Key>"
        "<ChecksumAlgorithm>CRC32</ChecksumAlgorithm><RestoreStatus><IsRestoreInProgress>false"
        "</IsRestoreInProgress></RestoreStatus></Version>"
        + _version("books/x", "null")
        + _version("books/w", None),
    ),
    # A prefixed namespace instead of the default one.
    "prefixed_namespace": (
        '<s3:ListVersionsResult xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/">'
        "<s3:EncodingType>url</s3:EncodingType><s3:IsTruncated>false</s3:IsTruncated>"
        "<s3:Version><s3:Key>books/a%20b</s3:Key><s3:VersionId>v9</s3:VersionId><s3:IsLatest>true"
        "</s3:IsLatest><s3:LastModified>2025-01-02T03:04:05.000Z</s3:LastModified><s3:ETag>\"e\"</s3:ETag>"
        "<s3:Size>5</s3:Size></s3:Version></s3:ListVersionsResult>"
    ).encode(),
    # The result in S3's namespace, a version's fields in none (xmlns="").
    "fields_in_no_namespace": _result(
        '<Version xmlns=""><Key>books/n%20s</Key><VersionId>v7</VersionId><IsLatest>true</IsLatest>'
        "<LastModified>2025-01-02T03:04:05.000Z</LastModified><ETag>\"e\"</ETag><Size>4</Size></Version>"
        + _marker("books/m")
    ),
    "empty": _result(""),
}


def test_listing_body_is_read_as_botocore_reads_it() -> None:
    for name, body in BODIES.items():
        assert _ours(body) == _botocore_rows(body), name


def test_listing_body_keys_are_decoded_only_when_the_answer_says_url() -> None:
    rows, truncated, next_key, next_id = _ours(BODIES["s3_url_encoded"])
    assert [r.key for r in rows] == [
        "books/a b.webp",
        "books/a+b.webp",
        "books/a%20b.webp",
        "books/caf\u00e9.webp",
        "books/\U0001f600&<>\"'",
        "books/gone?x#y",
        "books/old",
    ]
    assert [r.is_delete_marker for r in rows] == [False] * 5 + [True] * 2
    assert (truncated, next_key, next_id) == (True, "books/old one+", "m2")
    assert rows[0].last_modified == datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert (rows[0].etag, rows[0].size, rows[4].size) == ("e1", 3, 0)
    (plain, tab), *_ = _ours(BODIES["no_namespace_not_encoded"])
    assert plain.key == "books/a+b & c%20d <x> \"q\" '" and tab.key == "books/tab\there"
    rows, *_ = _ours(BODIES["reordered_null_versions"])
    assert [(r.key, r.version_id) for r in rows] == [
        ("books/y", "null"),
        ("books/x", "null"),
        ("books/w", "null"),
        ("books/z", "null"),
    ]


def test_listing_body_that_is_not_a_listing_is_left_to_botocore() -> None:
    error = b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>m</Message></Error>'
    assert s3.parse_listing(error) is None
    assert s3.parse_listing(b"not xml at all") is None
    assert s3.parse_listing(b"") is None


def test_listing_page_of_1000_versions_is_read_in_under_half_of_botocores_time() -> None:
    rows = "".join(
        _version(f"books/{i:07d}/image_{i % 10:02d}.webp", f"{i:032x}", size=str(20_000 + i)) for i in range(1000)
    )
    body = _result(rows)
    assert _ours(body) == _botocore_rows(body)

    def best(parse: Any) -> float:
        times = []
        for _ in range(5):
            start = time.process_time()
            parse(body)
            times.append(time.process_time() - start)
        return min(times)

    assert best(_ours) < 0.5 * best(_botocore_rows)


def test_list_versions_gives_the_rows_botocore_gives_and_leaves_other_calls_alone(bucket: Bucket) -> None:
    keys = [
        "books/a+b.webp",
        "books/a%20b.webp",
        "books/with space",
        "books/amp&lt;<>\"'",
        "books/caf\u00e9/\U0001f600",
        "books/plain",
    ]
    for key in keys:
        bucket.put(key, b"one")
        bucket.put(key, b"two!")
    bucket.delete("books/plain")
    client = s3.make_client(bucket.endpoint, "us-east-1")
    ours = list(s3.list_versions(client, bucket.name, "books/", page_size=4))
    # The same client, asked by someone else, still answers through botocore's parser.
    theirs: list[tuple[str, str, bool, bool]] = []
    # One page of all 13 rows: LocalStack's next key marker is not URL-encoded,
    # and botocore's own paginator then skips a key.
    page = client.list_object_versions(Bucket=bucket.name, Prefix="books/")
    assert page["IsTruncated"] is False
    theirs += [(v["Key"], v["VersionId"], v["IsLatest"], False) for v in page.get("Versions", [])]
    theirs += [(m["Key"], m["VersionId"], m["IsLatest"], True) for m in page.get("DeleteMarkers", [])]
    assert sorted((r.key, r.version_id, r.is_latest, r.is_delete_marker) for r in ours) == sorted(theirs)
    assert len(ours) == 2 * len(keys) + 1
    assert {r.key for r in ours} == set(keys)


class _Raw:
    """The raw body botocore reads from an AWSResponse."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_kwargs: Any) -> Any:
        yield self.data


def test_list_versions_retries_an_error_inside_a_200_and_a_body_cut_short(bucket: Bucket) -> None:
    """botocore's check of 200 answers still sees every body bmxgc does not take:
    an <Error> in a 200 and a listing cut off mid-way are retried, as before."""
    bucket.put("books/a")
    bucket.put("books/b")
    client = s3.make_client(bucket.endpoint, "us-east-1")
    real = client.list_object_versions(Bucket=bucket.name, Prefix="books/")  # a real answer, to cut short
    assert len(real["Versions"]) == 2
    bodies = [
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code><Message>x</Message></Error>',
        _result(_version("books/a") + _version("books/b"))[:-40],  # cut off inside the second version
    ]
    sent: list[str] = []

    def answer(request: Any, **_kwargs: Any) -> AWSResponse | None:
        sent.append(request.url)
        if len(sent) <= len(bodies):
            headers: Any = {"Content-Type": "application/xml"}
            return AWSResponse(request.url, 200, headers, _Raw(bodies[len(sent) - 1]))
        return None

    hook: Any = answer  # the stubs type handlers as returning None; before-send may answer
    client.meta.events.register("before-send.s3.ListObjectVersions", hook)
    rows = list(s3.list_versions(client, bucket.name, "books/"))
    assert sorted(r.key for r in rows) == ["books/a", "books/b"]
    assert len(sent) == 3  # two answers retried by botocore, then the real one


def test_a_next_key_marker_left_unencoded_is_read_as_the_key_it_names() -> None:
    """LocalStack URL-encodes the keys of a listing asked with encoding-type=url,
    but not its NextKeyMarker: 'books/a+b.webp' decoded as a form value would be
    'books/a b.webp', a key before the page's, and the listing would ask for the
    same page again and again. The marker is read as the page's key it names."""
    body = _result(
        _version("books/a%2520b.webp") + _version("books/a%2Bb.webp", vid="v2"),
        truncated="true",
        head="<NextKeyMarker>books/a+b.webp</NextKeyMarker><NextVersionIdMarker>v2</NextVersionIdMarker>",
    )
    listing = s3.parse_listing(body)
    assert listing is not None
    assert [r.key for r in listing.rows] == ["books/a%20b.webp", "books/a+b.webp"]
    assert (listing.next_key, listing.next_version_id) == ("books/a+b.webp", "v2")
    encoded = s3.parse_listing(body.replace(b"<NextKeyMarker>books/a+b.webp", b"<NextKeyMarker>books/a%2Bb.webp"))
    assert encoded is not None and encoded.next_key == "books/a+b.webp"  # S3's own: encoded, decoded


def test_a_listing_whose_next_marker_does_not_advance_is_an_error_not_a_loop(bucket: Bucket) -> None:
    """A server that answers the page just asked for again (its next marker is
    the marker sent) would make the listing loop for ever: one line instead."""
    bucket.put("books/a")
    client = s3.make_client(bucket.endpoint, "us-east-1")
    stuck = _result(
        _version("books/a"), truncated="true",
        head="<KeyMarker>books/a</KeyMarker><NextKeyMarker>books/a</NextKeyMarker><NextVersionIdMarker>v1</NextVersionIdMarker>",
    ).replace(b"<KeyMarker></KeyMarker>", b"", 1)
    sent: list[str] = []

    def answer(request: Any, **_kwargs: Any) -> AWSResponse | None:
        sent.append(request.url)
        if len(sent) > 50:
            raise AssertionError("the listing asked for the same page 50 times")
        headers: Any = {"Content-Type": "application/xml"}
        return AWSResponse(request.url, 200, headers, _Raw(stuck))

    hook: Any = answer
    client.meta.events.register("before-send.s3.ListObjectVersions", hook)
    with pytest.raises(ServiceError, match="did not advance"):
        list(s3.list_versions(client, bucket.name, "books/", concurrency=1))
    assert len(sent) == 2
