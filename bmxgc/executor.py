"""The one loop that sends batched deletes: apply's, undo's and recover's.

Every request goes out the same way, inside the caller's lock: the batch's
intent is journaled before the request, the outcome after it; a batch the
sender asks to send again (apply, after S3's listing showed keys still
current) is journaled again before its next request. What differs between
the commands is passed in: how one batch is sent and read back (``send``),
what a failed request means (``failed``: go on, or stop), and what the
journal is. What S3 may retry is ``s3.delete_batch``'s rule, not this
loop's: a request that writes markers is sent once, removing versions by id
keeps botocore's retries.

Up to ``concurrency`` requests are in flight at once, each on its own thread
(and connection). Only the calling thread touches the journal: it journals
a batch's intent, then starts its request; it takes the answers in the order
the requests were sent (a later answer waits for the earlier ones), so the
journal, the receipt and the progress read the same whatever order S3
answers in. Requests are numbered in the order they are sent; ``intend`` and
``record`` carry the number, so a journal with several batches in flight
knows which one an outcome answers.

An interruption (Ctrl-C, or a failure the caller stops on) sends nothing
more, waits for the requests in flight and records their outcomes, then
calls ``journal.interrupted()`` (the receipt or record says the run did not
finish) and propagates. Under the CLI a first Ctrl-C or SIGTERM is deferred
that way (``interrupts``); a second one stops at once, leaving what is in
flight as journaled intent.
"""

from __future__ import annotations

import gc
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from bmxgc import interrupts, s3
from bmxgc.errors import ServiceError

Item = TypeVar("Item")
Item_contra = TypeVar("Item_contra", contravariant=True)
Answer = TypeVar("Answer")
Answer_contra = TypeVar("Answer_contra", contravariant=True)

# progress(items done so far, total)
Progress = Callable[[int, int], None]

# [s3] delete_concurrency's default: DeleteObjects requests in flight at once.
DELETE_CONCURRENCY = 4


@dataclass(frozen=True)
class Sent(Generic[Item, Answer]):
    """What one request did (``answer``, journaled), and the items to send again."""

    answer: Answer
    again: list[Item] = field(default_factory=list)


class BatchJournal(Protocol[Item_contra, Answer_contra]):
    def intend(self, request: int, batch: Sequence[Item_contra]) -> None:
        """Note a batch before its request (number ``request``) is sent."""

    def record(self, request: int, answer: Answer_contra) -> None:
        """Note what request number ``request`` did."""

    def interrupted(self) -> None:
        """The run stops before its end (Ctrl-C, or a failure it does not go on after)."""


class _Request(Generic[Item, Answer]):
    """One request: sent on a thread of its own (or inline, one at a time)."""

    def __init__(self, number: int, batch: int, items: list[Item], attempt: int) -> None:
        self.number = number
        self.batch = batch  # which batch of ``items`` it is, for progress
        self.items = items
        self.attempt = attempt
        self.finished = threading.Event()
        self.sent: Sent[Item, Answer] | None = None
        self.error: Exception | None = None

    def run(self, send: Callable[[list[Item], int], Sent[Item, Answer]], *, own_thread: bool) -> None:
        if own_thread:
            # Signals go to the calling thread, which decides what a Ctrl-C stops.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self.sent = send(self.items, self.attempt)
        except Exception as exc:  # handed to the calling thread, which decides
            self.error = exc
        finally:
            self.finished.set()


def send_batches(
    items: Sequence[Item],
    journal: BatchJournal[Item, Answer],
    send: Callable[[list[Item], int], Sent[Item, Answer]],
    *,
    failed: Callable[[list[Item], ServiceError], Answer] | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
    concurrency: int = 1,
) -> None:
    """Send ``items`` in batches of ``batch_size``, each request journaled before and after,
    up to ``concurrency`` requests at once.

    ``send(batch, n)`` sends the n-th request for a batch (1 first); what it
    returns in ``again`` is sent as a next request (before any new batch). A
    ServiceError from a request becomes ``failed(batch, error)``, journaled,
    and the run goes on; with no ``failed`` the run stops there: no request
    is sent after it, the ones in flight are recorded, the error propagates."""
    size = batch_size or s3.MAX_KEYS_PER_REQUEST  # read at each call: tests make it small
    width = max(1, concurrency)
    starts = iter(range(0, len(items), size))
    again: deque[tuple[int, list[Item], int]] = deque()  # batch, items, attempt
    in_flight: deque[_Request[Item, Answer]] = deque()
    numbers = 0
    done = 0
    stop: BaseException | None = None

    def start(batch: int, todo: list[Item], attempt: int) -> None:
        nonlocal numbers
        request: _Request[Item, Answer] = _Request(numbers, batch, todo, attempt)
        numbers += 1
        journal.intend(request.number, todo)  # durable before the request exists
        in_flight.append(request)
        if width == 1:
            request.run(send, own_thread=False)
        else:
            threading.Thread(
                target=request.run, args=(send,), kwargs={"own_thread": True}, name="bmxgc-delete", daemon=True
            ).start()

    def stops(request: _Request[Item, Answer]) -> bool:
        """An answer already in that ends the run (looked at before sending more)."""
        if interrupts.pending():
            return True
        error = request.error if request.finished.is_set() else None
        return error is not None and (failed is None or not isinstance(error, ServiceError))

    try:
        with interrupts.batches_finish(), collector_spares_what_exists():
            while True:
                while stop is None and len(in_flight) < width and not any(map(stops, in_flight)):
                    if again:
                        batch, todo, attempt = again.popleft()
                    else:
                        batch = next(starts, -1)
                        if batch < 0:
                            break
                        todo, attempt = list(items[batch : batch + size]), 1
                    try:
                        start(batch, todo, attempt)
                    except Exception as exc:  # the intent cannot be journaled: this one is not sent
                        stop = exc
                if not in_flight:
                    break
                request = in_flight[0]
                request.finished.wait()
                in_flight.popleft()
                if request.error is not None:
                    if not isinstance(request.error, ServiceError) or failed is None:
                        stop = stop or request.error  # the batch stays journaled intent
                        continue
                    sent: Sent[Item, Answer] = Sent(failed(request.items, request.error))
                else:
                    assert request.sent is not None
                    sent = request.sent
                try:
                    journal.record(request.number, sent.answer)
                except Exception as exc:  # the journal cannot be written: stop, record what is in flight
                    stop = stop or exc
                    continue
                gc.freeze()  # what the batch left (its entries in the journal's receipt) is spared too
                if sent.again:
                    again.appendleft((request.batch, sent.again, request.attempt + 1))
                else:
                    done += min(size, len(items) - request.batch)
                    if progress is not None:
                        progress(done, len(items))
                if stop is None and interrupts.pending():
                    stop = KeyboardInterrupt()  # a Ctrl-C during the requests: stop once they are recorded
            interrupts.check()  # the deferred signal itself (SIGINT or SIGTERM), now that all is recorded
            if stop is not None:
                raise stop
    except (ServiceError, KeyboardInterrupt):
        journal.interrupted()
        raise


@contextmanager
def collector_spares_what_exists() -> Iterator[None]:
    """The cyclic garbage collector leaves alone what exists when the block
    starts (``gc.freeze``), until it ends (``gc.unfreeze``, whatever happens).

    A command with a 100,000-key plan holds hundreds of thousands of objects
    (the plan, the live histories, the receipt); every full collection while it builds more
    (the batches' answers and journal, the undo record) rescanned them all:
    about 0.8 s of apply's deletes at 100,000 keys, and as much again in
    undo's decision and record. The block's own objects are collected as usual
    (``send_batches`` freezes again after each batch it records)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
