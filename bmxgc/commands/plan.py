"""``bmxgc plan``: scan one prefix, read the references, write a hashed plan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bmxgc import s3
from bmxgc.config import Config
from bmxgc.errors import ConfigError
from bmxgc.model import Plan, utc_now
from bmxgc.planfile import write_plan
from bmxgc.planner import ScanContext, build_plan
from bmxgc.references import read_references, redact_url

# progress(stage, count): "listing" counts versions listed, "querying" rows read.
Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    path: Path | None  # None when the caller asked not to write a file


def plan(
    config: Config,
    *,
    out: str | Path | None = None,
    write: bool = True,
    now: datetime | None = None,
    progress: Progress | None = None,
    client: s3.S3Client | None = None,
) -> PlanResult:
    """Scan ``config``'s prefix and write a plan of its orphans.

    The references are read first so that the listing streams through the
    planner without being held in memory. A row committed after that read
    for an object older than ``min_age`` is the one race left; apply reads
    the references again just before it deletes.
    """
    _check_plans_dir(config)
    database_url = config.database_url()
    references = read_references(
        database_url, config.references, progress=_stage(progress, "querying")
    )
    client = client or s3.make_client(config.s3.endpoint_url, config.s3.region)
    bucket, prefix = config.s3.bucket, config.s3.prefix
    versioning = s3.versioning_status(client, bucket)
    undo_days = s3.noncurrent_expiry_days(client, bucket, prefix)
    result = build_plan(
        s3.list_versions(client, bucket, prefix, _stage(progress, "listing")),
        references,
        config.references,
        config.safety,
        ScanContext(
            bucket=bucket,
            prefix=prefix,
            bucket_versioning=versioning,
            database=redact_url(database_url),
            undo_window_days=undo_days,
        ),
        now or utc_now(),
    )
    if not write:
        return PlanResult(plan=result, path=None)
    path = write_plan(result, config.plans_path, Path(out) if out is not None else None)
    return PlanResult(plan=result, path=path)


def _stage(progress: Progress | None, stage: str) -> Callable[[int], None] | None:
    if progress is None:
        return None
    report = progress
    return lambda count: report(stage, count)


def _check_plans_dir(config: Config) -> None:
    if str(config.plans_dir).startswith("s3://"):
        raise ConfigError("plans_dir: s3:// URLs are not supported yet; use a local folder")
