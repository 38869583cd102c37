"""One apply, undo or recover at a time per bucket and prefix, across machines.

The lock needs nothing from the server but a versioned bucket's versions: no
conditional request is trusted (Ceph RGW ignores ``If-None-Match`` in a
versioned bucket, LocalStack refuses ``If-Match`` on DELETE). Each contender
PUTs its own version of the lock key, then lists the key's versions: the
oldest live version holds the lock. A loser removes its own version by
version id and is refused; the holder releases by removing exactly its own
version by id. Nothing is left behind: no delete marker, no version.
``If-None-Match: *`` stays as a first line: where the server honours it, a
contender that finds the lock taken is refused without writing anything.

A version is live unless a delete marker on the key is at least as new as it
(a delete marker is how bmxgc before this design released its locks; bmxgc
never writes one now). Why this is safe (a tie, a crash between the PUT and
the listing, a slow clock) is argued in docs/locks.md. A lock left by a dead
process stays until someone runs ``bmxgc unlock``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, unquote

from pydantic import BaseModel, ConfigDict, ValidationError

from bmxgc import s3
from bmxgc.durations import format_duration
from bmxgc.errors import BmxgcError, GateRefused, LockNotReleased, ServiceError
from bmxgc.model import VersionEntry, parse_rfc3339, rfc3339, utc_now, who
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
    version_id: str = ""
    # Set by ``held`` when the release after the command failed: check_released raises it.
    release_failed: list[str] = field(default_factory=list, compare=False, repr=False)
    # Set by ``held`` when it took over a dead holder's lock (``take_over``): who that was.
    took_over: str | None = None

    def age(self, now: datetime) -> str:
        try:
            return format_duration(now - parse_rfc3339(self.holder.get("acquired_at", "")))
        except ValueError:
            return "unknown"

    def dead_here(self) -> bool:
        """True if the holder ran on this host (this boot, this pid namespace,
        where the lock records them) and its process is gone: it crashed."""
        if self.problem is not None or self.holder.get("host") != who()["host"]:
            return False
        ours = _process_namespace()
        if any(self.holder.get(name) != value for name, value in ours.items()):
            return False  # no way to tell from here whether it still runs
        return self.holder.get("pid", "").isdigit() and not self.running_here()

    def running_here(self) -> bool:
        """True if the holder's process is on this host and alive: breaking the
        lock would take its guard away while it works. A host name is not
        enough: a container may share it, with pids of its own (its bmxgc is
        pid 1 there); a lock says which boot and pid namespace its pid is of."""
        if self.problem is not None or self.holder.get("host") != who()["host"]:
            return False
        ours = _process_namespace()
        if any(self.holder.get(name, value) != value for name, value in ours.items()):
            return False  # another machine's boot, or another pid namespace
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


def _process_namespace() -> dict[str, str]:
    """This process's boot and pid namespace, where Linux says (empty elsewhere):
    a pid means this process only within both."""
    found: dict[str, str] = {}
    try:
        found["boot_id"] = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        found["pid_namespace"] = os.readlink("/proc/self/ns/pid")
    except OSError:
        pass
    return found


def _pid_alive(pid: int, acquired_at: str = "") -> bool:
    """Is ``pid`` a live process on this host that could be the lock's holder?

    A zombie is dead. A process that started after the lock was taken is not
    its holder (the pid was reused), where /proc says when it started.
    """
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; a pid no process can have
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


def live_versions(entries: list[VersionEntry]) -> list[VersionEntry]:
    """The versions of one lock key that hold or wait, oldest first.

    ``entries`` is the key's listing (versions newest first, as S3 lists
    them). A version is dead if a delete marker is the latest entry, or is as
    new as it or newer: LastModified has whole seconds on some servers, so a
    version in the same second as the newest marker counts as below it.
    """
    versions = [e for e in entries if not e.is_delete_marker]
    markers = [e for e in entries if e.is_delete_marker]
    if markers:
        if any(m.is_latest for m in markers):
            return []
        cut = max(m.last_modified for m in markers)
        versions = [v for v in versions if v.last_modified > cut]
    return list(reversed(versions))


def _live_locks(client: s3.S3Client, bucket: str) -> dict[str, list[VersionEntry]]:
    """Every lock key in ``bucket`` with a live version: key -> live versions, oldest first."""
    by_key: dict[str, list[VersionEntry]] = {}
    for entry in s3.list_versions(client, bucket, LOCKS):
        by_key.setdefault(entry.key, []).append(entry)
    found: dict[str, list[VersionEntry]] = {}
    for key, entries in by_key.items():
        ordered = [e for e in entries if not e.is_delete_marker] + [e for e in entries if e.is_delete_marker]
        live = live_versions(ordered)
        if live and key.endswith(".json"):
            found[key] = live
    return found


def _prefix_of(key: str) -> str:
    return unquote(key[len(LOCKS) : -len(".json")])


def lock_prefixes(client: s3.S3Client, bucket: str) -> list[str]:
    """The prefixes whose lock has a live version in ``bucket`` now (one listing of the lock folder)."""
    return sorted(_prefix_of(key) for key in _live_locks(client, bucket))


def read_lock(client: s3.S3Client, bucket: str, prefix: str) -> LockInfo | None:
    """The holder of the lock on ``prefix`` (its oldest live version), or None.
    A body that does not name a holder is an unreadable lock (``problem`` says
    why), never an error."""
    key = lock_key(prefix)
    for _ in range(3):  # the holder may release between the listing and the read
        live = live_versions(s3.key_versions(client, bucket, key))
        if not live:
            return None
        body = s3.get_version_bytes(client, bucket, key, live[0].version_id)
        if body is not None:
            return _info(key, live[0], body)
    return None


def _info(key: str, version: VersionEntry, body: bytes) -> LockInfo:
    try:
        holder = _Holder.model_validate_json(body)
    except ValidationError as exc:
        return LockInfo(
            key=key, etag=version.etag, holder={}, problem=_unreadable(body, exc), version_id=version.version_id
        )
    return LockInfo(
        key=key,
        etag=version.etag,
        holder={k: str(v) for k, v in holder.model_dump().items()},
        version_id=version.version_id,
    )


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


def _release(client: s3.S3Client, bucket: str, key: str, version_id: str) -> None:
    """Remove exactly our own version of the lock key (no delete marker)."""
    s3.delete_version(client, bucket, key, version_id)


@contextmanager
def held(
    client: s3.S3Client,
    bucket: str,
    prefix: str,
    *,
    command: str,
    plan_hash: str,
    take_over: Callable[[LockInfo], bool] | None = None,
) -> Iterator[LockInfo]:
    """Take the lock for ``bucket``/``prefix`` or refuse (gate 'lock').

    PUT our own version, list the lock folder's versions, hold if ours is
    the oldest live version of our key and no overlapping prefix's lock has
    a live version; else remove ours by version id and refuse.

    ``take_over(holder)``: first break the current holder's lock if this says
    so (undo of a crashed apply takes over that apply's dead lock); the
    yielded LockInfo's ``took_over`` then describes it.
    """
    key = lock_key(prefix)
    took_over = None
    if take_over is not None:
        current = read_lock(client, bucket, prefix)
        if current is not None and take_over(current) and break_lock(client, bucket, prefix, current):
            took_over = current.describe(utc_now())
    holder = {
        **who(),
        **_process_namespace(),
        "command": command,
        "plan_hash": plan_hash,
        "bucket": bucket,
        "prefix": prefix,
        "acquired_at": rfc3339(utc_now()),
    }
    written = s3.put_version(
        client, bucket, key, json.dumps(holder, indent=1).encode("utf-8"), if_none_match=True
    )
    if written is None:  # the server honoured If-None-Match: someone's version is there
        raise _held_by(client, bucket, prefix)
    version_id, etag = written
    try:
        locks = _live_locks(client, bucket)
        own = locks.get(key, [])
        # A lock on an overlapping prefix (books/ inside a whole-bucket recover)
        # guards the same objects. Both sides look after writing their own
        # version, so of two overlapping runs at least one sees the other.
        overlapping = next(
            (_prefix_of(k) for k in sorted(locks) if k != key and _overlap(_prefix_of(k), prefix)), None
        )
    except BaseException:
        _release(client, bucket, key, version_id)
        raise
    if not own or own[0].version_id != version_id or overlapping is not None:
        _release(client, bucket, key, version_id)
        if own and own[0].version_id != version_id:
            raise _held_by(client, bucket, prefix)
        if overlapping is not None:
            raise _held_by(client, bucket, overlapping)
        raise GateRefused(
            "lock",
            f"s3://{bucket}/{key}: the lock version this {command} wrote is not live (a delete marker "
            "was written on the lock key at the same time); try again",
        )
    info = LockInfo(key=key, etag=etag, holder=holder, version_id=version_id, took_over=took_over)
    try:
        yield info
    except BaseException as exc:
        try:
            _release(client, bucket, key, version_id)
        except ServiceError as release_error:
            # Keep what went wrong first (a refusal, what a partial apply
            # deleted): a failed release must not hide it.
            if isinstance(exc, BmxgcError) and exc.args:
                exc.args = (
                    f"{exc.args[0]}. The lock s3://{bucket}/{key} could not be released either "
                    f"({release_error}); run '{unlock_command_for(prefix)}' once S3 answers again",
                    *exc.args[1:],
                )
        raise
    try:
        _release(client, bucket, key, version_id)
    except ServiceError as release_error:
        # Not raised here: the command has a result to show and keep. It
        # calls check_released(info, result) after the with block.
        info.release_failed.append(
            f"the {command} itself finished (its receipt or record says what it did), but the lock "
            f"s3://{bucket}/{key} could not be released ({release_error}); run "
            f"'{unlock_command_for(prefix)}' once S3 answers again"
        )


def check_released(info: LockInfo, result: object) -> None:
    """After ``with held(...) as info``: raise LockNotReleased carrying the
    command's ``result`` if the release failed (exit 1, result still shown)."""
    if info.release_failed:
        raise LockNotReleased(info.release_failed[0], result)


def break_lock(client: s3.S3Client, bucket: str, prefix: str, lock: LockInfo) -> bool:
    """Remove exactly the lock version that was shown to the operator (by its
    version id); False if it is no longer the holder (released, or broken)."""
    live = live_versions(s3.key_versions(client, bucket, lock.key))
    if not live or live[0].version_id != lock.version_id:
        return False
    s3.delete_version(client, bucket, lock.key, lock.version_id)
    return True
