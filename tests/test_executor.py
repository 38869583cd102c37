"""The one loop apply, undo and recover send their batched deletes through."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bmxgc.errors import ServiceError
from bmxgc.executor import Sent, send_batches

pytestmark = pytest.mark.unit


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def intend(self, batch: Sequence[int]) -> None:
        self.events.append(("intend", list(batch)))

    def record(self, answer: str) -> None:
        self.events.append(("record", answer))

    def interrupted(self) -> None:
        self.events.append(("interrupted", None))


def test_intent_before_each_request_and_outcome_after_it() -> None:
    log = Log()
    sends: list[list[int]] = []

    def send(batch: list[int], n: int) -> Sent[int, str]:
        sends.append(batch)
        log.events.append(("send", n))
        return Sent(f"ok {batch}")

    progress: list[tuple[int, int]] = []
    send_batches([1, 2, 3, 4, 5], log, send, batch_size=2, progress=lambda d, t: progress.append((d, t)))
    assert sends == [[1, 2], [3, 4], [5]]
    assert log.events[:3] == [("intend", [1, 2]), ("send", 1), ("record", "ok [1, 2]")]
    assert progress == [(2, 5), (4, 5), (5, 5)]
    assert ("interrupted", None) not in log.events


def test_what_the_sender_sends_again_is_journaled_again() -> None:
    log = Log()

    def send(batch: list[int], n: int) -> Sent[int, str]:
        return Sent(f"send {n}", again=batch[1:] if n < 3 else [])

    send_batches([1, 2, 3], log, send, batch_size=10)
    assert log.events == [
        ("intend", [1, 2, 3]), ("record", "send 1"),
        ("intend", [2, 3]), ("record", "send 2"),
        ("intend", [3]), ("record", "send 3"),
    ]


def test_a_failed_request_is_recorded_and_the_run_goes_on_when_the_caller_says_so() -> None:
    log = Log()

    def send(batch: list[int], n: int) -> Sent[int, str]:
        if batch == [1]:
            raise ServiceError("S3 said no")
        return Sent("ok")

    send_batches([1, 2], log, send, batch_size=1, failed=lambda batch, exc: f"failed {batch}: {exc}")
    assert log.events == [("intend", [1]), ("record", "failed [1]: S3 said no"), ("intend", [2]), ("record", "ok")]


@pytest.mark.parametrize("error", [ServiceError("S3 said no"), KeyboardInterrupt()])
def test_a_stop_leaves_the_intent_and_says_the_run_was_interrupted(error: BaseException) -> None:
    log = Log()

    def send(batch: list[int], n: int) -> Sent[int, str]:
        raise error

    with pytest.raises(type(error)):
        send_batches([1, 2], log, send, batch_size=1)
    assert log.events == [("intend", [1]), ("interrupted", None)]
