"""Apply's and undo's listings of the prefix run at the width asked (issue 11):
they group rows by key, so, like plan, they take pages from whichever key
range has one instead of waiting for the range the reader is on. Measured
as ListObjectVersions requests in flight on average, against moto's server
over HTTP with 30 ms of latency per request, pages of 10 versions."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from apply_support import World, build_world
from bmxgc import s3


class InFlight:
    """Registers on a client: every ListObjectVersions sleeps 30 ms; how many were
    in flight on average while at least one was (undo lists twice, with its
    deletes in between)."""

    def __init__(self, client: Any) -> None:
        self.lock = threading.Lock()
        self.spans: list[tuple[float, float]] = []
        self.started: dict[int, float] = {}
        client.meta.events.register("before-call.s3.ListObjectVersions", self.before)
        client.meta.events.register("after-call.s3.ListObjectVersions", self.after)

    def before(self, **_kw: Any) -> None:
        began = time.monotonic()
        time.sleep(0.03)
        with self.lock:
            self.started[threading.get_ident()] = began

    def after(self, **_kw: Any) -> None:
        now = time.monotonic()
        with self.lock:
            self.spans.append((self.started.pop(threading.get_ident()), now))

    @property
    def average(self) -> float:
        busy, reach = 0.0, float("-inf")
        for began, ended in sorted(self.spans):
            if ended > reach:
                busy += ended - max(began, reach)
                reach = ended
        return sum(ended - began for began, ended in self.spans) / busy


@pytest.fixture
def wide(bucket: Any, sqlite_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    # Pages of 10 versions, split after the first: 90 pages for 900 objects.
    defaults = s3.list_versions.__kwdefaults__
    assert defaults is not None
    monkeypatch.setitem(defaults, "page_size", 10)
    monkeypatch.setitem(defaults, "sequential_pages", 1)
    return build_world(bucket, sqlite_db, tmp_path, live=600, orphans=300, fast=True, safety={"max_orphan_ratio": 1.0})


def test_apply_and_undo_list_the_prefix_over_every_connection(wide: World) -> None:
    plan = wide.plan()
    client = wide.s3_client()
    applying = InFlight(client)
    result = wide.apply(plan, client=client)
    assert result.deleted == 300
    assert all(wide.current(k) is None for k in wide.orphan_keys)

    client = wide.s3_client()
    undoing = InFlight(client)
    undone = wide.undo(client=client)
    assert len(undone.restored) == 300
    wide.assert_orphans_restored()
    # [s3] list_concurrency is 8 by default. Listed in key order, 1.7 were in flight on
    # average (apply and undo alike); in any order 2.5 to 2.9 on a loaded 2-core machine.
    assert applying.average > 2.2, applying.average
    assert undoing.average > 2.2, undoing.average
