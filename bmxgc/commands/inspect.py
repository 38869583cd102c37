"""``show``, ``verify`` and ``diff``: offline looks at plan files (no S3, no database).

Each streams its files (``bmxgc.planstream``): the summary, then the orphans
one block of lines at a time, checked and hashed as they pass; none is kept
but what ``diff`` reports.
"""

from __future__ import annotations

import os

from bmxgc.model import PlanSummary
from bmxgc.planstream import open_plan
from bmxgc.planstream import verify as verify_stream
from bmxgc.review import PlanDiff, diff_streams


def verify(path: str | os.PathLike[str]) -> PlanSummary:
    """Read a plan and check its version, schema, every orphan and its hash;
    raises PlanFileError. The summary of the intact plan (without orphans)."""
    with open_plan(path) as stream:
        return verify_stream(stream)


def diff(old_path: str | os.PathLike[str], new_path: str | os.PathLike[str]) -> PlanDiff:
    """Read and verify both plans side by side (both are sorted by key), and diff them."""
    with open_plan(old_path) as old, open_plan(new_path) as new:
        return diff_streams(old, new)
