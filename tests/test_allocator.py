"""The bmxgc process returns large buffers (a listing's bodies) to the OS.

A listing makes and drops 400 KB buffers for each page while what the pages
leave behind stays: with glibc's dynamic mmap threshold the freed buffers stay
in the heap below what stays; with the threshold fixed (``allocator``, as the
CLI's process does) they go back at once.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = """
import sys
if sys.argv[1] == "fixed":
    from bmxgc.allocator import return_large_buffers
    assert return_large_buffers()

def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])

warm = bytearray(400_000)  # a first large block, made and freed: glibc then raises its threshold
del warm
before = rss_kib()
kept = []
for n in range(20):
    pages = [bytearray(400_000) for _ in range(4)]  # a page's body and its text, on four connections
    kept.append(bytes(2048))  # what the page leaves behind (made by malloc: it pins what lies below)
    del pages
print(rss_kib() - before)
"""


def _grown_kib(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_the_cli_process_returns_a_listings_large_buffers() -> None:
    dynamic, fixed = _grown_kib("dynamic"), _grown_kib("fixed")
    assert fixed < 1024, f"{fixed} KiB kept with the threshold fixed"
    assert dynamic > fixed + 1024, f"{dynamic} KiB kept by glibc's default, {fixed} fixed"


def test_the_cli_entry_point_sets_it_and_main_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the process's entry (``run``) touches the allocator; ``main`` (what
    callers run in their own process) does not."""
    from bmxgc import cli

    calls: list[str] = []

    def record() -> bool:
        calls.append("set")
        return True

    monkeypatch.setattr(cli, "return_large_buffers", record)
    monkeypatch.setattr(cli, "main", lambda argv=None: 0)
    with pytest.raises(SystemExit) as ended:
        cli.run()
    assert ended.value.code == 0 and calls == ["set"]
