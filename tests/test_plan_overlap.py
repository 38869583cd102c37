"""Plan reads the references while its listing starts (issue 11).

The listing's first pages are round trips on one connection; read one after
the other, they waited for the whole reference query. Now the query runs on a
thread while those pages come in, and no row is judged before it has ended:
the plan is the same, and an error of either is reported as before.
"""

from __future__ import annotations

import time
from typing import Any

from apply_support import Hooks, World, snapshot

PAUSE = 2.0  # seconds the reference query takes (pg_sleep)


def _slow(world: World, pause: float = PAUSE) -> dict[str, Any]:
    return {
        "name": "book_images",
        "query": f"SELECT s3_key FROM {world.table} CROSS JOIN (SELECT pg_sleep({pause})) AS pause",
        "keys": world.keys,
    }


def test_plan_lists_the_prefix_while_the_references_are_read(pg_world: World, cli: Any, hooked: Hooks) -> None:
    """A reference query that takes 2 s: plan's listing starts at once, not
    2 s later; the plan finds exactly the orphans."""
    world = pg_world
    world.write_config(references=[_slow(world)])
    sent: list[tuple[float, str]] = []

    def note(request: Any, **_kw: Any) -> None:
        sent.append((time.monotonic(), request.url))

    hooked("before-send.s3", note)
    out = world.root / "plan.json"
    began = time.monotonic()
    planned = cli("-c", world.config_path, "plan", "--out", out)
    ended = time.monotonic()
    assert planned.code == 0, planned.output
    listing = next(t for t, url in sent if "?versions" in url)
    assert listing - began < PAUSE / 2, f"the listing started {listing - began:.2f} s after the plan"
    assert ended - began >= PAUSE  # the query did run, whole
    shown = cli("show", out, "--format", "json")
    assert shown.code == 0, shown.output
    assert f'"orphans": {len(world.orphan_keys)}' in shown.out
    assert all(key in shown.out for key in world.orphan_keys)


def test_a_failing_reference_query_is_one_line_while_the_listing_ran(world: World, cli: Any) -> None:
    """The query fails while the listing has started: the query's one-line
    error and exit 1, no plan written, the bucket untouched."""
    world.write_config(references=[{"name": "book_images", "query": "SELECT nope FROM missing_table", "keys": world.keys}])
    start = snapshot(world.client, world.name)
    out = world.root / "plan.json"
    planned = cli("-c", world.config_path, "plan", "--out", out)
    assert planned.code == 1, planned.output
    assert "references 'book_images': the query failed" in planned.err
    assert "Traceback" not in planned.output
    assert not out.exists()
    assert snapshot(world.client, world.name) == start


def test_a_listing_error_while_the_references_are_read_is_reported_at_once(
    pg_world: World, cli: Any, hooked: Hooks
) -> None:
    """S3 refuses the listing while a 2 s query runs: the S3 error, exit 1,
    without waiting for the query to end."""
    from botocore.exceptions import ClientError

    world = pg_world
    world.write_config(references=[_slow(world, 4.0)])

    def deny(params: Any, model: Any, **_kw: Any) -> None:
        if model.name == "ListObjectVersions":
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "ListObjectVersions")

    hooked("before-call.s3", deny)
    began = time.monotonic()
    planned = cli("-c", world.config_path, "plan", "--out", world.root / "plan.json")
    took = time.monotonic() - began
    assert planned.code == 1, planned.output
    assert "AccessDenied" in planned.err
    assert took < 3.0, f"the error waited {took:.1f} s for the reference query"
