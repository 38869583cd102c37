"""The package and its tests type-check with mypy --strict, and so does a
caller of the Python API (bmxgc ships py.typed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *args],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )


def test_a_caller_of_the_api_type_checks() -> None:
    done = mypy("tests/typing/caller.py")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_wrong_call_is_caught() -> None:
    """The check can fail: config first, a typo in an option is an error."""
    wrong = ROOT / "tests" / "typing" / "wrong_caller.py"
    wrong.write_text("import bmxgc\n\nbmxgc.apply('plan.json', auto_aprove=True)\n", encoding="utf-8")
    try:
        done = mypy(str(wrong.relative_to(ROOT)))
    finally:
        wrong.unlink()
    assert done.returncode == 1 and "auto_aprove" in done.stdout, done.stdout
