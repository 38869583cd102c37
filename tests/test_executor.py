"""The one loop apply, undo and recover send their batched deletes through."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bmxgc.errors import ServiceError
from bmxgc.executor import Sent, send_batches

pytestmark = pytest.mark.unit


class Log:
    """A journal that notes what it is told, and checks that each outcome answers
    a request whose intent it holds (requests numbered in the order sent)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.open: list[int] = []
        self.numbers: list[int] = []
        self.recorded: list[int] = []

    def intend(self, request: int, batch: Sequence[int]) -> None:
        self.open.append(request)
        self.numbers.append(request)
        self.events.append(("intend", list(batch)))

    def record(self, request: int, answer: str) -> None:
        assert request in self.open and request > max(self.recorded, default=-1)  # in the order sent
        self.open.remove(request)
        self.recorded.append(request)
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


# --------------------------------------------------------------------------- several connections


import os
import signal
import threading
import time

from bmxgc import interrupts


class Gauge:
    """Counts the requests in flight at once, from inside ``send``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *_exc: object) -> None:
        with self.lock:
            self.now -= 1


def test_with_several_connections_each_intent_is_journaled_before_its_request() -> None:
    log = Log()
    gauge = Gauge()
    lock = threading.Lock()

    def send(batch: list[int], n: int) -> Sent[int, str]:
        with gauge:
            with lock:
                # The intent of this very batch is already in the journal.
                assert ("intend", batch) in log.events
                log.events.append(("send", batch[0]))
            time.sleep(0.05)
        return Sent(f"ok {batch}")

    send_batches(list(range(20)), log, send, batch_size=2, concurrency=3)
    assert gauge.most == 3  # requests overlapped, never more than asked
    for first in range(0, 20, 2):
        assert log.events.index(("intend", [first, first + 1])) < log.events.index(("send", first))
        assert log.events.index(("send", first)) < log.events.index(("record", f"ok {[first, first + 1]}"))
    assert [e for e in log.events if e[0] == "record"] == [("record", f"ok {[i, i + 1]}") for i in range(0, 20, 2)]


def test_outcomes_are_recorded_in_the_order_the_batches_were_sent_whatever_order_they_finish() -> None:
    log = Log()
    progress: list[tuple[int, int]] = []

    def send(batch: list[int], n: int) -> Sent[int, str]:
        time.sleep(0.02 * (10 - batch[0]))  # the later batches answer first
        return Sent(f"ok {batch[0]}")

    send_batches(list(range(10)), log, send, batch_size=1, concurrency=4, progress=lambda d, t: progress.append((d, t)))
    assert [e for e in log.events if e[0] == "record"] == [("record", f"ok {i}") for i in range(10)]
    assert progress == [(i, 10) for i in range(1, 11)]


def test_with_several_connections_what_is_sent_again_is_journaled_again_and_sent_at_most_as_asked() -> None:
    log = Log()
    sends: list[tuple[int, int]] = []
    lock = threading.Lock()

    def send(batch: list[int], n: int) -> Sent[int, str]:
        with lock:
            sends.append((batch[0], n))
        return Sent(f"{batch} send {n}", again=batch if batch[0] == 2 and n < 3 else [])

    send_batches([0, 1, 2, 3, 4], log, send, batch_size=1, concurrency=2)
    assert sorted(sends) == [(0, 1), (1, 1), (2, 1), (2, 2), (2, 3), (3, 1), (4, 1)]
    records = [e for e in log.events if e[0] == "record"]
    assert ("record", "[2] send 3") in records and len(records) == 7
    # every record follows its own intent, and nothing is intended twice without a record between
    assert log.events.count(("intend", [2])) == 3


def test_a_stop_with_several_connections_records_the_batches_in_flight_and_sends_no_more() -> None:
    log = Log()
    sent: list[int] = []
    lock = threading.Lock()

    def send(batch: list[int], n: int) -> Sent[int, str]:
        with lock:
            sent.append(batch[0])
        if batch[0] == 1:
            time.sleep(0.05)  # once 0, 1 and 2 are all sent
            raise ServiceError("AccessDenied")
        time.sleep(0.2)
        return Sent(f"ok {batch[0]}")

    with pytest.raises(ServiceError, match="AccessDenied"):
        send_batches(list(range(10)), log, send, batch_size=1, concurrency=3)
    # 0, 1 and 2 were in flight together: 0 and 2 answered and are recorded, 1 stays intended
    assert sorted(sent) == [0, 1, 2]
    assert ("record", "ok 0") in log.events and ("record", "ok 2") in log.events
    assert log.events[-1] == ("interrupted", None)
    assert [e for e in log.events if e[0] == "intend"] == [("intend", [0]), ("intend", [1]), ("intend", [2])]


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals go to the main thread")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_with_several_connections_stops_after_the_batches_in_flight_are_recorded(signum: int) -> None:
    log = Log()
    sent: list[int] = []
    lock = threading.Lock()

    def send(batch: list[int], n: int) -> Sent[int, str]:
        with lock:
            sent.append(batch[0])
        if batch[0] == 4:
            os.kill(os.getpid(), signum)  # Ctrl-C while 3, 4 and 5 are in flight
        time.sleep(0.2)
        return Sent(f"ok {batch[0]}")

    with interrupts.handled(), pytest.raises(KeyboardInterrupt):
        send_batches(list(range(20)), log, send, batch_size=1, concurrency=3)
    records = [e for e in log.events if e[0] == "record"]
    intents = [e for e in log.events if e[0] == "intend"]
    # Every batch sent was recorded; none was sent after the signal's batches in flight.
    assert len(records) == len(intents) == len(sent)
    assert 5 <= len(sent) <= 7
    assert log.events[-1] == ("interrupted", None)


import gc


@pytest.mark.parametrize("concurrency", [1, 4])
def test_the_garbage_collector_spares_what_existed_before_the_batches_and_nothing_stays_frozen(concurrency: int) -> None:
    """Issue 11: full collections during the deletes rescanned everything the
    command held (the plan, the live histories: about 0.8 s at 100,000 keys).
    What exists when the batches start is frozen for them (``gc.freeze``), and
    unfrozen when they end, finished or stopped."""
    held = [[i] for i in range(50_000)]  # what a command holds: tracked objects
    frozen_during: list[int] = []

    def send(batch: list[int], n: int) -> Sent[int, str]:
        frozen_during.append(gc.get_freeze_count())
        return Sent("ok")

    send_batches(list(range(10)), Log(), send, batch_size=2, concurrency=concurrency)
    assert frozen_during and min(frozen_during) >= len(held)
    assert gc.get_freeze_count() == 0

    def fail(batch: list[int], n: int) -> Sent[int, str]:
        raise ServiceError("S3 answered 500")

    with pytest.raises(ServiceError):
        send_batches(list(range(10)), Log(), fail, batch_size=2, concurrency=concurrency)
    assert gc.get_freeze_count() == 0
