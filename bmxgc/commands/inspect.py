"""``show``, ``verify`` and ``diff``: offline looks at plan files (no S3, no database)."""

from __future__ import annotations

import os

from bmxgc.model import Plan
from bmxgc.planfile import load_plan
from bmxgc.review import PlanDiff, diff_plans


def verify(path: str | os.PathLike[str]) -> Plan:
    """Load a plan and check its version, schema and hash; raises PlanFileError."""
    return load_plan(path)


def diff(old_path: str | os.PathLike[str], new_path: str | os.PathLike[str]) -> PlanDiff:
    """Load and verify both plans, then diff them."""
    return diff_plans(load_plan(old_path), load_plan(new_path))
