"""`bmxgc demo`: the incident replayed offline, as a user runs it, in a separate process."""

from __future__ import annotations

import re
import time
from typing import Callable

from support import CliResult


def test_demo_runs_offline_and_exits_0(cli_process: Callable[..., CliResult]) -> None:
    # Credentials and services of the caller must not matter: the demo brings its own.
    env = {"BMXGC_CONFIG": "/nonexistent/bmxgc.toml", "BMXGC_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/x"}
    started = time.monotonic()
    result = cli_process("demo", env=env, timeout=180)
    elapsed = time.monotonic() - started
    assert result.code == 0, result.output[-3000:]
    assert "Demo complete" in result.out
    assert "FAIL" not in result.out
    # The story it tells: the whole-bucket config refused, the naive mapping flagged, a correct plan.
    assert "s3.prefix" in result.out
    assert "the key mapping is probably wrong" in result.out
    assert re.search(r"Plan: [1-9][0-9]* to delete\.", result.out)
    assert elapsed < 60  # the demo promises "in under a minute"
