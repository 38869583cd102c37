"""What differs between S3 servers, handled rather than hoped away.

- Removing a delete marker that is already gone: S3, moto and Ceph answer
  success, LocalStack answers ``NoSuchVersion``. Undo and recover count it
  as restored (idempotent), not as a failure.
- A per-key ETag in DeleteObjects is honoured by S3 (since 2025) and ignored
  by moto, LocalStack and Ceph: bmxgc still sends it (it is what S3 checks),
  and does not rely on it alone (see docs/compatibility.md).

The LocalStack answer is played on every server by a client-side proxy hook
that really removes the markers, then answers as LocalStack does to a resent
request.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any

from apply_support import Hooks, World, _fake_response, _x, plain_client
from bmxgc.model import rfc3339, utc_now

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def removed_then_no_such_version(side_client: Any, bucket: str) -> Any:
    """``before-send.s3.DeleteObjects``: do the request for real, then answer
    NoSuchVersion for every key, as LocalStack answers the same request resent."""

    def hook(request: Any, **_kw: Any) -> Any:
        body = request.body if isinstance(request.body, bytes) else request.body.read()
        entries = [
            {"Key": o.findtext(f"{NS}Key", ""), "VersionId": o.findtext(f"{NS}VersionId", "")}
            for o in ET.fromstring(body).iter(f"{NS}Object")
        ]
        side_client.delete_objects(Bucket=bucket, Delete={"Objects": entries})
        parts = ["<?xml version='1.0' encoding='UTF-8'?><DeleteResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'>"]
        for e in entries:
            parts.append(
                f"<Error><Key>{_x(e['Key'])}</Key><VersionId>{_x(e['VersionId'])}</VersionId>"
                "<Code>NoSuchVersion</Code><Message>The specified version does not exist.</Message></Error>"
            )
        parts.append("</DeleteResult>")
        return _fake_response(request, 200, "".join(parts).encode("utf-8"))

    return hook


def test_undo_counts_a_marker_already_gone_as_restored(world: World, cli: Any, hooked: Hooks) -> None:
    plan = world.plan()
    assert cli("-c", world.config_path, "apply", plan, "--auto-approve").code == 0
    hooked("before-send.s3.DeleteObjects", removed_then_no_such_version(plain_client(world.bucket.endpoint), world.name))
    result = cli("-c", world.config_path, "undo", "--auto-approve")
    assert result.code == 0, result.output
    assert "6 restored" in result.out and "0 failed" in result.out, result.out
    world.assert_orphans_restored()


def test_recover_counts_a_marker_already_gone_as_restored(world: World, cli: Any, hooked: Hooks) -> None:
    since = rfc3339(utc_now() - timedelta(minutes=1))
    for key in world.orphan_keys:
        world.bucket.delete(key)
    hooked("before-send.s3.DeleteObjects", removed_then_no_such_version(plain_client(world.bucket.endpoint), world.name))
    result = cli("-c", world.config_path, "recover", "--since", since, "--auto-approve")
    assert result.code == 0, result.output
    assert "6 restored" in result.out, result.out
    world.assert_orphans_restored()


def test_apply_sends_each_keys_etag_and_version_is_checked_before(world: World, hooked: Hooks) -> None:
    """What request apply sends: one DeleteObjects per batch, each key with the
    ETag the plan recorded (S3 refuses the key if its current version changed
    since), and no version id (a delete marker, never a permanent delete)."""
    plan = world.plan()
    sent: list[bytes] = []

    def record(request: Any, **_kw: Any) -> None:
        sent.append(request.body if isinstance(request.body, bytes) else request.body.read())
        if hasattr(request.body, "seek"):
            request.body.seek(0)

    hooked("before-send.s3.DeleteObjects", record)
    world.apply(plan)
    assert len(sent) == 1
    objects = list(ET.fromstring(sent[0]).iter(f"{NS}Object"))
    assert sorted(o.findtext(f"{NS}Key", "") for o in objects) == sorted(world.orphan_keys)
    for o in objects:
        key = o.findtext(f"{NS}Key", "")
        assert o.findtext(f"{NS}ETag") == f'"{world.original[key]["etag"]}"', key
        assert o.find(f"{NS}VersionId") is None


def test_a_key_deleted_by_someone_else_just_before_apply_is_not_retried_and_undo_restores_all(
    world: World, cli: Any, hooked: Hooks
) -> None:
    """Someone deletes a planned key between apply's drift check and its
    DeleteObjects. Ceph then writes no marker and answers without DeleteMarker;
    moto and LocalStack stack a second marker. Apply looks the key up instead
    of failing it or sending again, exits 0, and undo brings every key back."""
    plan = world.plan()
    side = plain_client(world.bucket.endpoint)
    victim = world.orphan_keys[0]
    sends: list[int] = []

    def someone_deletes_first(request: Any, **_kw: Any) -> None:
        sends.append(1)
        if len(sends) == 1:
            side.delete_object(Bucket=world.name, Key=victim)

    hooked("before-send.s3.DeleteObjects", someone_deletes_first)
    result = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert result.code == 0, result.output
    assert len(sends) == 1  # nothing sent again
    receipt = world.receipt(plan)
    assert sorted(d["key"] for d in receipt["deleted"]) == sorted(world.orphan_keys)
    assert receipt["errors"] == []
    hooked.clear()
    undone = cli("-c", world.config_path, "undo", "--auto-approve")
    assert undone.code == 0, undone.output
    world.assert_orphans_restored()
