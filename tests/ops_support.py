"""Helpers for the operations tests (issue 4): recover, history, trend,
cross-check, plans in S3, the Python API and the PR workflow.

Only plain boto3 here (the scenario builder is apply_support.World): nothing reimplements bmxgc.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from apply_support import Row as Row  # re-exported: the tests' listing rows
from apply_support import versions as versions
from support import LOCK_FOLDER


def stamp(moment: datetime) -> str:
    """RFC 3339 UTC with whole seconds, as a user types it."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def next_second() -> datetime:
    """Sleep to the next whole second and return it.

    S3 (and moto) list LastModified in whole seconds, so a window edge is only
    sharp when nothing else happened in the same second.
    """
    now = datetime.now(timezone.utc)
    target = now.replace(microsecond=0) + timedelta(seconds=1)
    time.sleep((target - now).total_seconds() + 0.02)
    return target


def delete_plainly(client: Any, bucket: str, keys: Sequence[str]) -> None:
    """What the incident's job did: DeleteObjects without version ids (delete markers)."""
    keys = list(keys)
    for start in range(0, len(keys), 1000):
        answer = client.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]]}
        )
        assert not answer.get("Errors"), answer["Errors"]


def held_objects(client: Any, bucket: str, prefix: str = LOCK_FOLDER) -> list[str]:
    """Current (not deleted) objects under ``prefix``."""
    answer = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in answer.get("Contents", [])]


def me() -> str:
    """``user@host`` as a receipt records whoever runs the tests."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def saved(output: str, label: str) -> str:
    """The value of the first ``label: value`` line of a command's output."""
    for line in output.splitlines():
        if line.startswith(label + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {label!r} line in:\n{output}")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def s3_json(client: Any, url: str) -> Any:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
