"""Undo without a receipt named reads the newest receipt once (issue 11).

Finding the newest receipt reads it whole (to skip one that is unreadable);
undo then read it whole a second time: at 100,000 deleted keys, about 0.4 s
of CPU for nothing, and one more GetObject in an ``s3://`` plans_dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from apply_support import Hooks, World, empty_world
from ops_support import saved
from servers import sqlite_file
from support import CliResult


def test_undo_of_the_newest_receipt_reads_it_once(bucket: Any, make_bucket: Any, tmp_path: Path, cli: Callable[..., CliResult], hooked: Hooks) -> None:
    scene: World = empty_world(bucket, sqlite_file(tmp_path / "app.db"), tmp_path)
    scene.reference(f"{n}/image_00.webp" for n in range(1, 11))
    scene.books(range(1, 11))
    scene.books([101, 102, 103])
    store = make_bucket()
    scene.write_config(plans_dir=f"s3://{store.name}/plans/")
    planned = cli("-c", scene.config_path, "plan")
    assert planned.code == 0, planned.output
    plan = saved(planned.out, "Saved")
    assert cli("-c", scene.config_path, "apply", plan, "--auto-approve").code == 0
    receipt_key = plan.removeprefix(f"s3://{store.name}/").removesuffix(".json") + ".receipt.json"
    whole_reads: list[str] = []

    def note(request: Any, **_kw: Any) -> None:
        if request.method == "GET" and request.url.split("?")[0].endswith(receipt_key) and "range" not in {
            k.lower() for k in request.headers.keys()
        }:
            whole_reads.append(request.url)

    hooked("before-send.s3.GetObject", note)
    undone = cli("-c", scene.config_path, "undo", "--auto-approve")
    assert undone.code == 0, undone.output
    assert "3 restored" in undone.out
    assert len(whole_reads) == 1, whole_reads
