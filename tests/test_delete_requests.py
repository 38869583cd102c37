"""DeleteObjects as bmxgc sends and reads it (issue 11: apply's and undo's CPU).

``s3.delete_batch``'s request is botocore's, body included (validation,
serialiser, checksum, signature, retries, the marker-writing request sent
once); only the answer's body is read by bmxgc (botocore's XML walk costs
about 11 ms of CPU per 1,000 keys). These tests pin that down: the bytes on
the wire are the ones a plain botocore call sends, the outcome is the one
botocore's parser gives, on tricky keys, on odd answers, and against the real
server. Undo, which reads only the errors of its answers (it checks its work
in a listing), asks S3 for quiet answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import botocore.parsers
import pytest

from bmxgc import s3
from servers import Bucket

from apply_support import Hooks, World, _fake_response, plain_client

NS = "http://s3.amazonaws.com/doc/2006-03-01/"

TRICKY_KEYS = [
    "books/plain.webp",
    "books/with space+plus%20.webp",
    "books/amp&lt;<x>&amp;.jpg",
    "books/q'\"uote.jpg",
    "books/caf\u00e9 cafe\u0301.webp",
    "books/\U0001f600.jpg",
    "books/\u65e5\u672c\u8a9e/\u753b\u50cf.png",
    "books/tab\there",
    "books/line\nbreak",
    "books/carriage\rreturn\r\n",
    "books/]]>cdata-end",
]

EMPTY_ANSWER = f'<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="{NS}"></DeleteResult>'.encode()


def _client(bucket: Bucket) -> Any:
    return s3.make_client(bucket.endpoint, "us-east-1")


@pytest.fixture
def wire() -> Callable[[Any, bytes], list[tuple[bytes, dict[str, str]]]]:
    """Attach a ``before-send`` hook that records each DeleteObjects body and
    headers and answers ``answer`` without sending anything."""

    def attach(client: Any, answer: bytes) -> list[tuple[bytes, dict[str, str]]]:
        sent: list[tuple[bytes, dict[str, str]]] = []

        def hook(request: Any, **_kw: Any) -> Any:
            body = request.body if isinstance(request.body, bytes) else request.body.read()
            sent.append((body, {k.lower(): v for k, v in request.headers.items()}))
            return _fake_response(request, 200, answer)

        client.meta.events.register("before-send.s3.DeleteObjects", hook)
        return sent

    return attach


def _botocore_params(objects: list[tuple[str, str | None, str | None]], quiet: bool) -> dict[str, Any]:
    entries = []
    for key, version_id, etag in objects:
        entry = {"Key": key}
        if version_id is not None:
            entry["VersionId"] = version_id
        if etag:
            entry["ETag"] = f'"{etag}"'
        entries.append(entry)
    return {"Objects": entries, "Quiet": quiet}


@pytest.mark.parametrize("quiet", [False, True])
@pytest.mark.parametrize(
    "objects",
    [
        [(key, None, f"etag{i:032x}") for i, key in enumerate(TRICKY_KEYS)],  # apply: markers, on condition
        [(key, f"v&<{i}>id", None) for i, key in enumerate(TRICKY_KEYS)],  # undo: versions by id
        [(key, None, None) for key in TRICKY_KEYS],
        [(f"books/{i:06d}.webp", None, f"{i:032x}") for i in range(1000)],
    ],
    ids=["markers-with-etags", "version-ids", "no-etags", "one-thousand"],
)
def test_delete_batch_sends_the_bytes_botocore_would(
    bucket: Bucket, wire: Callable[[Any, bytes], list[tuple[bytes, dict[str, str]]]], objects: Any, quiet: bool
) -> None:
    """The body a plain botocore call sends, byte for byte (tricky keys, version
    ids and ETags included), hence the same checksum header."""
    ours, theirs = _client(bucket), _client(bucket)
    ours_sent = wire(ours, EMPTY_ANSWER)
    theirs_sent = wire(theirs, EMPTY_ANSWER)
    outcome = s3.delete_batch(ours, bucket.name, objects, quiet=quiet)
    theirs.delete_objects(Bucket=bucket.name, Delete=_botocore_params(objects, quiet))
    assert outcome == s3.DeleteOutcome(deleted=[], errors=[])
    [(body, headers)] = ours_sent
    [(expected, expected_headers)] = theirs_sent
    assert body == expected
    checksums = {k: v for k, v in expected_headers.items() if "checksum" in k or k == "content-md5"}
    assert checksums and {k: headers.get(k) for k in checksums} == checksums
    assert headers["content-length"] == expected_headers["content-length"] == str(len(expected))


def _answer(*parts: str, ns: str = f' xmlns="{NS}"') -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult{ns}>' + "".join(parts) + "</DeleteResult>").encode()


ANSWERS = {
    "markers": _answer(
        "<Deleted><Key>books/a&amp;b&lt;c&gt;</Key><DeleteMarker>true</DeleteMarker>"
        "<DeleteMarkerVersionId>m1</DeleteMarkerVersionId></Deleted>",
        "<Deleted><Key>books/\u00e9 \U0001f600</Key><DeleteMarker>true</DeleteMarker>"
        "<DeleteMarkerVersionId>m2</DeleteMarkerVersionId></Deleted>",
    ),
    "no-namespace": _answer(
        "<Deleted><Key>books/a</Key><DeleteMarkerVersionId>m1</DeleteMarkerVersionId></Deleted>", ns=""
    ),
    "versions-removed": _answer(
        "<Deleted><Key>books/a</Key><VersionId>v1</VersionId><DeleteMarker>true</DeleteMarker>"
        "<DeleteMarkerVersionId>v1</DeleteMarkerVersionId></Deleted>",
        "<Deleted><Key>books/b</Key><VersionId>v2</VersionId></Deleted>",
    ),
    "errors": _answer(
        "<Deleted><Key>books/a</Key><DeleteMarker>true</DeleteMarker><DeleteMarkerVersionId>m1</DeleteMarkerVersionId></Deleted>",
        "<Error><Key>books/b</Key><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions "
        "you specified did not hold</Message></Error>",
        "<Error><Key>books/c</Key><VersionId>v3</VersionId><Code>InternalError</Code><Message>We &amp; you</Message></Error>",
        "<Error><Code>AccessDenied</Code><Message>no key named</Message></Error>",
        "<Error><Key>books/d</Key><Code></Code></Error>",
        "<Error><Key>books/e</Key><Message>no code</Message></Error>",
    ),
    "other-namespaces": _answer(
        '<Deleted xmlns="urn:x"><Key>books/a</Key><DeleteMarkerVersionId>m1</DeleteMarkerVersionId></Deleted>',
        '<s3:Deleted xmlns:s3="urn:y"><s3:Key>books/b</s3:Key><s3:VersionId>v2</s3:VersionId></s3:Deleted>',
        '<Error><o:Key xmlns:o="urn:z">books/c</o:Key><o:Code xmlns:o="urn:z">SlowDown</o:Code></Error>',
        "<Unexpected><Key>books/z</Key></Unexpected>",
    ),
    "marker-ids-missing-or-empty": _answer(
        "<Deleted><Key>books/a</Key></Deleted>",
        "<Deleted><Key>books/b</Key><DeleteMarker>true</DeleteMarker><DeleteMarkerVersionId></DeleteMarkerVersionId></Deleted>",
        "<Deleted><Key>books/c</Key><DeleteMarker>true</DeleteMarker><DeleteMarkerVersionId/></Deleted>",
    ),
    "pretty-printed": _answer(
        "\n  <Deleted>\n    <Key>books/a</Key>\n    <DeleteMarker>true</DeleteMarker>\n"
        "    <DeleteMarkerVersionId>m1</DeleteMarkerVersionId>\n  </Deleted>\n"
        "  <Error>\n    <Key>books/b</Key>\n    <Code>SlowDown</Code>\n    <Message>later</Message>\n  </Error>\n"
    ),
    "empty": EMPTY_ANSWER,
}


def _botocore_outcome(client: Any, body: bytes) -> s3.DeleteOutcome:
    """What the old ``delete_batch`` made of botocore's parse of ``body``."""
    model = client.meta.service_model.operation_model("DeleteObjects")
    parser = botocore.parsers.create_parser("rest-xml")
    answer = parser.parse({"body": body, "headers": {}, "status_code": 200}, model.output_shape)
    return s3.DeleteOutcome(
        deleted=[(d["Key"], d.get("VersionId"), d.get("DeleteMarkerVersionId")) for d in answer.get("Deleted", [])],
        errors=[(e.get("Key", ""), e.get("Code", "Unknown"), e.get("Message", "")) for e in answer.get("Errors", [])],
    )


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_delete_batch_reads_answers_as_botocore_does(
    bucket: Bucket, wire: Callable[[Any, bytes], list[tuple[bytes, dict[str, str]]]], name: str
) -> None:
    client = _client(bucket)
    wire(client, ANSWERS[name])
    outcome = s3.delete_batch(client, bucket.name, [("books/a", None, None), ("books/b", None, None)])
    assert outcome == _botocore_outcome(client, ANSWERS[name])


def test_delete_batch_error_document_is_a_service_error(bucket: Bucket, wire: Any) -> None:
    """An error document in a 200 answer is botocore's to judge, as before: a
    marker-writing request is then in doubt (the caller looks at live state)."""
    client = _client(bucket)
    wire(client, b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError</Code><Message>x</Message></Error>")
    with pytest.raises(s3.RequestInDoubt, match="InternalError"):
        s3.delete_batch(client, bucket.name, [("books/a", None, None)])


ROUND_TRIP_KEYS = [k for k in TRICKY_KEYS if "\r" not in k and "\n" not in k]


def test_delete_batch_round_trip_on_the_server(bucket: Bucket) -> None:
    """Against the real server: markers on condition of the ETag, each marker id
    as listed; then those markers removed by id, quietly; the originals are current again."""
    client = _client(bucket)
    etags = {key: bucket.client.put_object(Bucket=bucket.name, Key=key, Body=key.encode())["ETag"].strip('"') for key in ROUND_TRIP_KEYS}
    outcome = s3.delete_batch(client, bucket.name, [(key, None, etags[key]) for key in ROUND_TRIP_KEYS])
    assert outcome.errors == []
    listed = {row.key: row for row in s3.list_versions(client, bucket.name, "books/") if row.is_delete_marker}
    assert {key: marker for key, _sent, marker in outcome.deleted} == {key: listed[key].version_id for key in ROUND_TRIP_KEYS}
    removed = s3.delete_batch(client, bucket.name, [(key, listed[key].version_id, None) for key in ROUND_TRIP_KEYS], quiet=True)
    assert removed.errors == []
    rows = list(s3.list_versions(client, bucket.name, "books/"))
    assert sorted(r.key for r in rows if r.is_latest and not r.is_delete_marker) == sorted(ROUND_TRIP_KEYS)
    assert not any(r.is_delete_marker for r in rows)


def _delete_bodies(hooked: Hooks) -> list[bytes]:
    bodies: list[bytes] = []

    def hook(request: Any, **_kw: Any) -> None:
        bodies.append(request.body if isinstance(request.body, bytes) else request.body.read())

    hooked("before-send.s3.DeleteObjects", hook)
    return bodies


def test_undo_asks_for_quiet_answers_and_still_restores_everything(world: World, cli: Any, hooked: Hooks) -> None:
    """Apply needs each key's marker id from its answers; undo reads only the
    errors (it checks its own work in a listing afterwards), so it asks S3 not
    to echo the keys it removed."""
    start = world.snapshot()
    plan = world.plan()
    bodies = _delete_bodies(hooked)
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    assert bodies and all(b"<Quiet>false</Quiet>" in body for body in bodies)
    bodies.clear()
    undone = cli("-c", world.config_path, "undo", "--auto-approve")
    assert undone.code == 0, undone.output
    assert "6 restored" in undone.out
    assert bodies and all(b"<Quiet>true</Quiet>" in body for body in bodies)
    world.assert_orphans_restored()
    assert world.snapshot() == start


def test_undo_quiet_answers_still_name_the_keys_s3_refused(world: World, cli: Any, hooked: Hooks) -> None:
    """A quiet answer still carries S3's errors: the key is named, undo exits 1,
    and a rerun restores it."""
    start = world.snapshot()
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    stuck = world.orphan_keys[1]
    side = plain_client(world.bucket.endpoint)

    def refuse_one(request: Any, **_kw: Any) -> Any:
        from delete_faults import forward, requested

        entries = requested(request)
        forward(side, world.name, [e for e in entries if e["Key"] != stuck])
        errors = "".join(
            f"<Error><Key>{e['Key']}</Key><VersionId>{e['VersionId']}</VersionId><Code>AccessDenied</Code>"
            "<Message>Access Denied</Message></Error>"
            for e in entries
            if e["Key"] == stuck
        )
        return _fake_response(request, 200, _answer(errors))

    hooked("before-send.s3.DeleteObjects", refuse_one)
    undone = cli("-c", world.config_path, "undo", "--auto-approve")
    assert undone.code == 1, undone.output
    assert "5 restored" in undone.output and stuck in undone.output
    assert world.current(stuck) is None
    hooked.clear()
    again = cli("-c", world.config_path, "undo", "--auto-approve")
    assert again.code == 0, again.output
    world.assert_orphans_restored()
    assert world.snapshot() == start
