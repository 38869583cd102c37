"""The pure modules load neither boto3, botocore nor SQLAlchemy, directly or
through another module: each is imported alone in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

PURE = [
    "bmxgc.model",
    "bmxgc.naming",
    "bmxgc.validation",
    "bmxgc.durations",
    "bmxgc.errors",
    "bmxgc.config",
    "bmxgc.planfile",
    "bmxgc.planner",
    "bmxgc.gates",
    "bmxgc.drift",
    "bmxgc.undo_decision",
    "bmxgc.recover_decision",
    "bmxgc.review",
    "bmxgc.results",
    "bmxgc.render",
    "bmxgc.manifest",
    "bmxgc.inventory_sql",
    "bmxgc.listing_xml",
    "bmxgc.overlap",
    "bmxgc.allocator",
]
EFFECTFUL = ("boto3", "botocore", "sqlalchemy", "duckdb")

CHECK = """
import importlib, sys
importlib.import_module(sys.argv[1])
loaded = sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[2:]))
print(" ".join(loaded))
"""


@pytest.mark.parametrize("module", PURE)
def test_pure_module_loads_no_service_library(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK, module, *EFFECTFUL], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == [], f"importing {module} loaded {done.stdout.strip()}"


def test_the_check_sees_a_module_that_loads_boto3() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK, "bmxgc.s3", *EFFECTFUL], capture_output=True, text=True, check=True
    )
    assert "boto3" in done.stdout.split()


@pytest.mark.parametrize("module", ["bmxgc.cli", "bmxgc.api", "bmxgc.commands.plan", "bmxgc.commands.apply"])
def test_listing_commands_do_not_load_the_inventory_engine(module: str) -> None:
    """DuckDB costs about 35 MiB of memory and a fraction of a second to load:
    only ``plan --inventory`` needs it, so a listing plan or an apply does not
    load it (the plan's peak memory at a million objects is measured against
    the naive script's)."""
    done = subprocess.run(
        [sys.executable, "-c", CHECK, module, "duckdb", "pyarrow"], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == [], f"importing {module} loaded {done.stdout.strip()}"
