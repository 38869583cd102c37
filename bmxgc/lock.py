"""One apply, undo or recover at a time per bucket and prefix, across machines.

The lock is an object outside the scanned prefix, created with a conditional
put (``If-None-Match: *``), so two machines cannot both take it, and removed
with ``If-Match`` on its own ETag, so nobody removes a lock they do not hold.
A lock left by a dead process stays until someone runs ``bmxgc unlock``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, unquote

from pydantic import BaseModel, ConfigDict, ValidationError

from bmxgc import s3
from bmxgc.durations import format_duration
from bmxgc.errors import BmxgcError, GateRefused, ServiceError
from bmxgc.model import parse_rfc3339, rfc3339, utc_now, who
from bmxgc.naming import LOCK_FOLDER
from bmxgc.validation import describe_validation_error

LOCKS = LOCK_FOLDER + "locks/"


def lock_key(prefix: str) -> str:
    """``books/`` -> ``.bmxgc/locks/books%2F.json``: one flat name per prefix."""
    return f"{LOCKS}{quote(prefix, safe='')}.json"


class _Holder(BaseModel):
    """What a lock object must say about its holder to be read as a holder."""

    model_config = ConfigDict(extra="allow")

    user: str
    host: str
    pid: str
    command: str
    acquired_at: str


@dataclass(frozen=True)
class LockInfo:
    """Who holds a lock, as written in the lock object.

    ``problem`` says why the body could not be read as a holder (not UTF-8,
    not JSON, not an object with the holder's fields); ``holder`` is then
    empty. Such a lock still guards its prefix, and ``unlock`` can break it.
    """

    key: str
    etag: str
    holder: dict[str, str]
    problem: str | None = None

    def age(self, now: datetime) -> str:
        try:
            return format_duration(now - parse_rfc3339(self.holder.get("acquired_at", "")))
        except ValueError:
            return "unknown"

    def running_here(self) -> bool:
        """True if the holder's process is on this host and alive: breaking the
        lock would take its guard away while it works."""
        if self.problem is not None or self.holder.get("host") != who()["host"]:
            return False
        pid = self.holder.get("pid", "")
        return pid.isdigit() and _pid_alive(int(pid), self.holder.get("acquired_at", ""))

    def describe(self, now: datetime) -> str:
        if self.problem is not None:
            return f"an unknown holder: the lock object is unreadable ({self.problem})"
        h = self.holder
        alive = ""
        if h.get("host") == who()["host"] and h.get("pid", "").isdigit() and not self.running_here():
            alive = " (that process is no longer running on this host)"
        return (
            f"{h.get('command', '?')} of {h.get('plan_hash', '?')[:19]} by {h.get('user', '?')}@"
            f"{h.get('host', '?')} pid {h.get('pid', '?')} since {h.get('acquired_at', '?')}, "
            f"{self.age(now)} ago{alive}"
        )


def _pid_alive(pid: int, acquired_at: str = "") -> bool:
    """Is ``pid`` a live process on this host that could be the lock's holder?

    A zombie is dead. A process that started after the lock was taken is not
    its holder (the pid was reused), where /proc says when it started.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = _process_start(pid)
    if started is None:
        return True
    if started[1] == "Z":
        return False
    try:
        acquired = parse_rfc3339(acquired_at).timestamp()
    except ValueError:
        return True
    return started[0] <= acquired + PID_START_SLACK_SECONDS


# /proc gives a process's start in clock ticks after boot, and boot in whole seconds.
PID_START_SLACK_SECONDS = 60


def _process_start(pid: int) -> tuple[float, str] | None:
    """``(start time as a Unix timestamp, state letter)`` from /proc, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text(encoding="ascii").splitlines()
            if line.startswith("btime ")
        )
        fields = stat[stat.rindex(")") + 2 :].split()
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK"), fields[0]
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _overlap(a: str, b: str) -> bool:
    return a.startswith(b) or b.startswith(a)


def unlock_command_for(prefix: str) -> str:
    return "bmxgc unlock --whole-bucket" if prefix == "" else f"bmxgc unlock --prefix {prefix}"


def _held_by(client: s3.S3Client, bucket: str, prefix: str) -> GateRefused:
    current = read_lock(client, bucket, prefix)
    if current is not None and current.problem is not None:
        return GateRefused(
            "lock",
            f"s3://{bucket}/{current.key} is an unreadable lock ({current.problem}), so who holds it is "
            f"unknown; if no apply, undo or recover runs on this prefix, run '{unlock_command_for(prefix)}' "
            "(it shows the lock and asks) and check the bucket before trying again",
        )
    who_holds = current.describe(utc_now()) if current else "a process that just released it"
    return GateRefused(
        "lock",
        f"s3://{bucket}/{lock_key(prefix)} is held by {who_holds}; wait for it to finish, or, if "
        f"that process is dead, run '{unlock_command_for(prefix)}' and check the bucket before trying again",
    )


def lock_prefixes(client: s3.S3Client, bucket: str) -> list[str]:
    """The prefixes that hold a lock in ``bucket`` now (ListObjectsV2 on the lock folder)."""
    return [
        unquote(key[len(LOCKS) : -len(".json")])
        for key in s3.list_keys(client, bucket, LOCKS)
        if key.endswith(".json")
    ]


def read_lock(client: s3.S3Client, bucket: str, prefix: str) -> LockInfo | None:
    """The lock on ``prefix``, or None. A body that does not name a holder is
    an unreadable lock (``problem`` says why), never an error."""
    key = lock_key(prefix)
    found = s3.get_object_bytes(client, bucket, key)
    if found is None:
        return None
    body, etag = found
    try:
        holder = _Holder.model_validate_json(body)
    except ValidationError as exc:
        return LockInfo(key=key, etag=etag, holder={}, problem=_unreadable(body, exc))
    return LockInfo(key=key, etag=etag, holder={k: str(v) for k, v in holder.model_dump().items()})


def _unreadable(body: bytes, exc: ValidationError) -> str:
    """Why a lock body names no holder, in a few words (never the body itself)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"its {len(body):,}-byte body is not UTF-8"
    first = exc.errors()[0]
    if first["type"].startswith("json"):
        return f"its {len(body):,}-byte body is not JSON"
    if first["type"] == "model_type":
        kind = type(json.loads(text)).__name__
        names = {"list": "a JSON array", "NoneType": "JSON null", "str": "a JSON string", "bool": "a JSON boolean"}
        return f"its body is {names.get(kind, 'a JSON number')}, not an object naming its holder"
    missing = sorted(str(e["loc"][0]) for e in exc.errors() if e["type"] == "missing" and e["loc"])
    if missing:
        return f"its body does not say {', '.join(missing)}"
    return f"its body's {describe_validation_error(exc)}"


@contextmanager
def held(
    client: s3.S3Client, bucket: str, prefix: str, *, command: str, plan_hash: str
) -> Iterator[LockInfo]:
    """Take the lock for ``bucket``/``prefix`` or refuse (gate 'lock')."""
    key = lock_key(prefix)
    holder = {
        **who(),
        "command": command,
        "plan_hash": plan_hash,
        "bucket": bucket,
        "prefix": prefix,
        "acquired_at": rfc3339(utc_now()),
    }
    etag = s3.put_if_absent(client, bucket, key, json.dumps(holder, indent=1).encode("utf-8"))
    if etag is None:
        raise _held_by(client, bucket, prefix)
    # A lock on an overlapping prefix (books/ inside a whole-bucket recover)
    # guards the same objects. Both sides look after taking their own lock,
    # so of two overlapping runs at least one sees the other and steps back.
    try:
        overlapping = next((p for p in lock_prefixes(client, bucket) if p != prefix and _overlap(p, prefix)), None)
    except BaseException:
        s3.delete_if_match(client, bucket, key, etag)
        raise
    if overlapping is not None:
        s3.delete_if_match(client, bucket, key, etag)
        raise _held_by(client, bucket, overlapping)
    info = LockInfo(key=key, etag=etag, holder=holder)
    try:
        yield info
    except BaseException as exc:
        try:
            s3.delete_if_match(client, bucket, key, etag)
        except ServiceError as release_error:
            # Keep what went wrong first (a refusal, what a partial apply
            # deleted): a failed release must not hide it.
            if isinstance(exc, BmxgcError) and exc.args:
                exc.args = (
                    f"{exc.args[0]}. The lock s3://{bucket}/{key} could not be released either "
                    f"({release_error}); run 'bmxgc unlock' once S3 answers again",
                    *exc.args[1:],
                )
        raise
    try:
        s3.delete_if_match(client, bucket, key, etag)
    except ServiceError as release_error:
        raise ServiceError(
            f"the {command} itself finished (its receipt or record says what it did), but the lock "
            f"s3://{bucket}/{key} could not be released ({release_error}); run "
            f"'{unlock_command_for(prefix)}' once S3 answers again"
        ) from None


def break_lock(client: s3.S3Client, bucket: str, prefix: str, lock: LockInfo) -> bool:
    """Remove exactly the lock that was shown to the operator (If-Match its ETag)."""
    return s3.delete_if_match(client, bucket, lock.key, lock.etag)
