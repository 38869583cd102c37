"""One read on a thread while a listing's first rows come in.

Plan and apply need the references before they can judge a listed row, and
reading them (a query, then the digests) costs about 1.3 s at 900,000 rows,
while a listing's first pages are round trips on one connection that leave
the CPU mostly idle. ``read_while_listing`` runs the read on a thread and
meanwhile takes the listing's rows, at most ``limit`` of them (a bound on the
memory they hold), then waits for the read. Both are done before anything is
judged or deleted; neither changes what the other sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from itertools import chain
from threading import Thread
from typing import TypeVar

Read = TypeVar("Read")
Row = TypeVar("Row")


def read_while_listing(
    read: Callable[[], Read], rows: Iterator[Row], limit: int
) -> tuple[Read, Iterator[Row]]:
    """``read()``'s result, and ``rows`` whole (those taken while it ran first).

    An error of the read is raised once it has ended, an error of the listing
    (or Ctrl-C) at once: the read's thread is a daemon, so a stuck query never
    holds the process. On any error ``rows`` is closed, so a listing stops
    its connections."""
    reading: Future[Read] = Future()

    def run() -> None:
        try:
            reading.set_result(read())
        except BaseException as exc:  # handed to the caller, which raises it
            reading.set_exception(exc)

    Thread(target=run, name="bmxgc-read", daemon=True).start()
    early: list[Row] = []
    try:
        if not reading.done():
            for row in rows:
                early.append(row)
                if len(early) >= limit or reading.done():
                    break
        result = reading.result()
    except BaseException:
        close = getattr(rows, "close", None)  # a generator: stop the listing now
        if close is not None:
            close()
        raise
    return result, chain(early, rows)
