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

An interruption (Ctrl-C, or a failure the caller stops on) leaves the batch
in flight as journaled intent and calls ``journal.interrupted()`` before it
propagates, so that the receipt or record says the run did not finish. Under
the CLI a first Ctrl-C or SIGTERM waits for the request in flight and its
recorded outcome (``interrupts``), so the run stops between two requests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


@dataclass(frozen=True)
class Sent(Generic[Item, Answer]):
    """What one request did (``answer``, journaled), and the items to send again."""

    answer: Answer
    again: list[Item] = field(default_factory=list)


class BatchJournal(Protocol[Item_contra, Answer_contra]):
    def intend(self, batch: Sequence[Item_contra]) -> None:
        """Note a batch before its request is sent."""

    def record(self, answer: Answer_contra) -> None:
        """Note what one request did."""

    def interrupted(self) -> None:
        """The run stops before its end (Ctrl-C, or a failure it does not go on after)."""


def send_batches(
    items: Sequence[Item],
    journal: BatchJournal[Item, Answer],
    send: Callable[[list[Item], int], Sent[Item, Answer]],
    *,
    failed: Callable[[list[Item], ServiceError], Answer] | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> None:
    """Send ``items`` in batches of ``batch_size``, each request journaled before and after.

    ``send(batch, n)`` sends the n-th request for a batch (1 first); what it
    returns in ``again`` is sent as the next request. A ServiceError from a
    request becomes ``failed(batch, error)``, journaled, and the run goes on;
    with no ``failed`` the run stops there (the error propagates)."""
    size = batch_size or s3.MAX_KEYS_PER_REQUEST  # read at each call: tests make it small
    done = 0
    try:
        with interrupts.batches_finish():
            for start in range(0, len(items), size):
                batch = list(items[start : start + size])
                todo, attempt = batch, 1
                while todo:
                    journal.intend(todo)
                    try:
                        sent = send(todo, attempt)
                    except ServiceError as exc:
                        if failed is None:
                            raise
                        sent = Sent(failed(todo, exc))
                    journal.record(sent.answer)
                    interrupts.check()  # a Ctrl-C during the request stops here, its outcome recorded
                    todo, attempt = sent.again, attempt + 1
                done += len(batch)
                if progress is not None:
                    progress(done, len(items))
    except (ServiceError, KeyboardInterrupt):
        journal.interrupted()
        raise
