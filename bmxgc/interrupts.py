"""Ctrl-C (SIGINT) and SIGTERM.

Outside a run of batched deletes they stop a command at once, as Python's
KeyboardInterrupt does. Inside one (``batches_finish``), the first signal
lets the request in flight finish and its outcome be recorded, then stops
the run before the next request (``check``), so that what was done is
journaled and the operator is told exactly what it was; a second signal
stops at once. Only ``cli.py`` installs the handlers (``handled``): a
program calling the Python API keeps its own.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGINT_EXIT = 130
SIGTERM_EXIT = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Python raises KeyboardInterrupt for SIGINT, so that
    every ``except KeyboardInterrupt`` (journals, the lock) handles both."""


def exit_code(exc: BaseException) -> int:
    """130 for SIGINT (Ctrl-C), 143 for SIGTERM."""
    return SIGTERM_EXIT if isinstance(exc, Terminated) else SIGINT_EXIT


class _State:
    deferring = 0  # nesting depth of batches_finish
    pending: int | None = None  # a signal received while deferring


def _stop(signum: int) -> None:
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _handler(signum: int, _frame: FrameType | None) -> None:
    if _State.deferring and _State.pending is None:
        _State.pending = signum
        sys.stderr.write(
            "\nStopping after the request in flight is recorded; press Ctrl-C again to stop at once.\n"
        )
        return
    _stop(signum)


@contextmanager
def handled() -> Iterator[None]:
    """SIGINT and SIGTERM handled as above while the CLI runs (main thread only)."""
    try:
        previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals as they are
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _State.pending = None


@contextmanager
def batches_finish() -> Iterator[None]:
    """A run of batched deletes: a signal waits for the request in flight."""
    _State.deferring += 1
    try:
        yield
    finally:
        _State.deferring -= 1


def pending() -> bool:
    """A signal arrived during the requests in flight: send no more, record them, then ``check``."""
    return _State.pending is not None


def check() -> None:
    """Between two requests: stop now if a signal arrived during the last one."""
    signum, _State.pending = _State.pending, None
    if signum is not None:
        _stop(signum)
