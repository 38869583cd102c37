"""``bmxgc unlock``: break a lock left by a dead process, never silently."""

from __future__ import annotations

from collections.abc import Callable

from bmxgc import gates, lock, s3
from bmxgc.config import Config
from bmxgc.errors import ConfigError, GateRefused
from bmxgc.model import utc_now


def unlock(
    config: Config,
    *,
    auto_approve: bool = False,
    confirm: gates.Confirm | None = None,
    client: s3.S3Client | None = None,
    prefix: str | None = None,
    whole_bucket: bool = False,
    break_live_lock: bool = False,
) -> str:
    """Show who holds the lock, ask, and remove exactly that lock.

    The lock is the config's prefix's, or that of ``prefix`` or the whole
    bucket, as ``recover --prefix``/``--whole-bucket`` take them. A lock whose
    holder is still running on this host is refused (exit 3) unless
    ``break_live_lock``; consent is asked for in every case.
    """
    client = s3.client_for(config.s3, client)
    bucket = config.s3.bucket
    if whole_bucket and prefix is not None:
        raise ConfigError("--prefix and --whole-bucket: give one or the other")
    prefix = "" if whole_bucket else (prefix if prefix is not None else config.s3.prefix)
    current = lock.read_lock(client, bucket, prefix)
    if current is None:
        others = lock.lock_prefixes(client, bucket)
        hint = (
            " Locks held: " + ", ".join(lock.unlock_command_for(p) for p in others) + "."
            if others
            else ""
        )
        return f"No lock on s3://{bucket}/{prefix}.{hint}"
    described = current.describe(utc_now())
    live = current.running_here()
    if live and not break_live_lock:
        raise GateRefused(
            "lock",
            f"the lock s3://{bucket}/{current.key} is held by {described}, and that process is still "
            f"running on this host; stop it, or wait for it to finish (it releases the lock itself). "
            "To break the lock of a running process anyway, add --break-live-lock",
        )
    if not auto_approve:
        warning = (
            f"Its process {current.holder.get('pid')} is STILL RUNNING on this host: it will go on without "
            "its guard, and another apply, undo or recover may run beside it."
            if live
            else "Break it only if that process is dead; an apply or undo still running would lose its guard."
        )
        gates.check_consent(
            confirm,
            f"The lock s3://{bucket}/{current.key} is held by {described}.\n{warning}",
            command="unlock",
            no_terminal=f"the lock is held by {described}; pass --auto-approve to break it",
        )
    if not lock.break_lock(client, bucket, prefix, current):
        raise GateRefused("lock", "the lock changed while you were deciding; run 'bmxgc unlock' again")
    return f"Lock s3://{bucket}/{current.key} broken: it was held by {described}."
