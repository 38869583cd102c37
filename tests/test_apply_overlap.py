"""Apply reads the references and lists the prefix at the same time (issue 11).

Both are live state read under the lock right before the deletes; neither
needs the other to start. Read one after the other, the listing's first
pages (one connection, a round trip each) waited for the whole reference
query; now they overlap it.
"""

from __future__ import annotations

import time
from typing import Any

from apply_support import Hooks, World

PAUSE = 2.0  # seconds the reference query takes (pg_sleep)


def test_apply_lists_the_prefix_while_the_references_are_read(pg_world: World, cli: Any, hooked: Hooks) -> None:
    """A reference query that takes 2 s: apply's listing starts right after
    the versioning check, not 2 s later; the apply itself is unchanged."""
    world = pg_world
    slow = {
        "name": "book_images",
        "query": f"SELECT s3_key FROM {world.table} CROSS JOIN (SELECT pg_sleep({PAUSE})) AS pause",
        "keys": world.keys,
    }
    world.write_config(references=[slow])
    start = world.snapshot()
    plan = world.plan()
    sent: list[tuple[float, str]] = []

    def note(request: Any, **_kw: Any) -> None:
        sent.append((time.monotonic(), request.url))

    hooked("before-send.s3", note)
    applied = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert applied.code == 0, applied.output
    assert f"{len(world.orphan_keys)} deleted" in applied.out
    versioning = next(t for t, url in sent if url.endswith("?versioning"))
    listing = next(t for t, url in sent if "?versions" in url and t > versioning)
    assert listing - versioning < PAUSE / 2, f"the listing started {listing - versioning:.2f} s after the versioning check"
    assert all(world.current(k) is None for k in world.orphan_keys)
    assert cli("-c", world.config_path, "undo", "--auto-approve").code == 0
    assert world.snapshot() == start
