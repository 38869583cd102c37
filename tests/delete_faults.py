"""``before-send.s3.DeleteObjects`` hooks that act as a proxy in front of moto:
each forwards the request through a side client (so S3 really does the work)
and then answers as a faulty network or server would: the answer lost
(botocore sees a read timeout or a closed connection and its own retry logic
runs), the request done twice, an answer missing its marker ids, an answer
that claims work that was not done.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import ConnectionClosedError, ReadTimeoutError

from apply_support import _fake_response, _x

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
Hook = Callable[..., Any]


def requested(request: Any) -> list[dict[str, str]]:
    """The ``{Key, VersionId?}`` entries of a DeleteObjects request."""
    body = request.body if isinstance(request.body, bytes) else request.body.read()
    entries = []
    for obj in ET.fromstring(body).iter(f"{NS}Object"):
        entry = {"Key": obj.findtext(f"{NS}Key") or ""}
        if obj.findtext(f"{NS}VersionId"):
            entry["VersionId"] = obj.findtext(f"{NS}VersionId") or ""
        entries.append(entry)
    return entries


def forward(side: Any, bucket: str, entries: list[dict[str, str]]) -> dict[str, Any]:
    if not entries:
        return {"Deleted": [], "Errors": []}
    return side.delete_objects(Bucket=bucket, Delete={"Objects": entries})  # type: ignore[no-any-return]


def result_xml(
    deleted: list[dict[str, Any]], errors: Sequence[tuple[str, str]] = (), *, drop_marker_ids: frozenset[str] = frozenset()
) -> bytes:
    parts = ["<?xml version='1.0' encoding='UTF-8'?><DeleteResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'>"]
    for d in deleted:
        parts.append(f"<Deleted><Key>{_x(d['Key'])}</Key>")
        if d.get("VersionId"):
            parts.append(f"<VersionId>{_x(d['VersionId'])}</VersionId>")
        if d["Key"] not in drop_marker_ids:
            if d.get("DeleteMarker"):
                parts.append("<DeleteMarker>true</DeleteMarker>")
            if d.get("DeleteMarkerVersionId"):
                parts.append(f"<DeleteMarkerVersionId>{_x(d['DeleteMarkerVersionId'])}</DeleteMarkerVersionId>")
        parts.append("</Deleted>")
    for key, code in errors:
        parts.append(f"<Error><Key>{_x(key)}</Key><Code>{code}</Code><Message>injected {code}</Message></Error>")
    parts.append("</DeleteResult>")
    return "".join(parts).encode("utf-8")


def lose_answer(request: Any, how: str = "timeout") -> Exception:
    """The exception botocore's HTTP layer raises when an answer never arrives."""
    if how == "timeout":
        return ReadTimeoutError(endpoint_url=request.url)
    return ConnectionClosedError(endpoint_url=request.url)


def lost_answers(side: Any, bucket: str, attempts: list[str], lose: Callable[[int], bool]) -> Hook:
    """S3 does every request; the answer of the ``n``-th attempt (1-based) is
    lost when ``lose(n)``."""

    def hook(request: Any, **_kw: Any) -> Any:
        attempts.append(request.url)
        answer = forward(side, bucket, requested(request))
        if lose(len(attempts)):
            raise lose_answer(request)
        return _fake_response(request, 200, result_xml(answer.get("Deleted", [])))

    return hook


def done_twice(side: Any, bucket: str) -> Hook:
    """Every request reaches S3 twice (a duplicate on the wire); the second answer comes back."""

    def hook(request: Any, **_kw: Any) -> Any:
        entries = requested(request)
        forward(side, bucket, entries)
        answer = forward(side, bucket, entries)
        return _fake_response(request, 200, result_xml(answer.get("Deleted", [])))

    return hook


def answers_without_marker_ids(side: Any, bucket: str, keys: set[str]) -> Hook:
    """As Ceph answers when the latest is already a marker: ``Deleted`` without
    ``DeleteMarker``/``DeleteMarkerVersionId`` for ``keys`` (all really deleted)."""

    def hook(request: Any, **_kw: Any) -> Any:
        answer = forward(side, bucket, requested(request))
        return _fake_response(request, 200, result_xml(answer.get("Deleted", []), drop_marker_ids=frozenset(keys)))

    return hook


def error_after_work(side: Any, bucket: str, keys: set[str], code: str = "InternalError") -> Hook:
    """Every key is really deleted, but ``keys`` are reported as ``<Error>``."""

    def hook(request: Any, **_kw: Any) -> Any:
        answer = forward(side, bucket, requested(request))
        deleted = [d for d in answer.get("Deleted", []) if d["Key"] not in keys]
        errors = [(d["Key"], code) for d in answer.get("Deleted", []) if d["Key"] in keys]
        return _fake_response(request, 200, result_xml(deleted, errors))

    return hook


def claims_without_work(side: Any, bucket: str, keys: set[str]) -> Hook:
    """``keys`` are reported ``Deleted`` but never reach S3; the rest is done."""

    def hook(request: Any, **_kw: Any) -> Any:
        entries = requested(request)
        answer = forward(side, bucket, [e for e in entries if e["Key"] not in keys])
        fake = [dict(e) for e in entries if e["Key"] in keys]
        return _fake_response(request, 200, result_xml([*answer.get("Deleted", []), *fake]))

    return hook
