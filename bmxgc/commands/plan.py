"""``bmxgc plan``: scan one prefix, read the references, write a hashed plan."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from bmxgc import s3
from bmxgc.config import Config, inventory_url
from bmxgc.inventory import find_manifest, plan_from_inventory
from bmxgc.errors import ConfigError, InputNotFound, PlanFileError
from bmxgc.model import Plan, utc_now
from bmxgc.planfile import default_file_name, plan_chunks
from bmxgc.planstream import read_summary
from bmxgc.results import PlanResult
from bmxgc.gates import baseline_of, offline_refusal
from bmxgc.receipt import last_applied_plan
from bmxgc.planner import Previous, ScanContext, build_plan, with_cross_check
from bmxgc.naming import is_plan_name
from bmxgc.overlap import read_while_listing
from bmxgc.references import cross_check as references_cross_check
from bmxgc.references import read_references, redact_url
from bmxgc.store import Store, create_once, is_s3_url, open_location, plans_store

# The rows a plan takes from the listing while it reads the references: the
# listing's first ten pages (round trips on one connection), about 4 MiB.
EARLY_ROWS = 10 * s3.MAX_KEYS_PER_REQUEST

# progress(stage, count): "listing" counts versions listed, "querying" rows read.
Progress = Callable[[str, int], None]


def plan(
    config: Config,
    *,
    out: str | Path | None = None,
    write: bool = True,
    cross_check: bool = False,
    cross_check_tables: Sequence[str] = (),
    inventory: str | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
    client: s3.S3Client | None = None,
) -> PlanResult:
    """Scan ``config``'s prefix and write a plan of its orphans.

    The references are read (on a thread, while the listing's first pages come
    in, at most ``EARLY_ROWS`` rows held) before any listed row is judged, so
    that the rest of the listing streams through the planner without being
    held in memory. A row committed after that read for an object older than
    ``min_age`` is the one race left; apply reads the references again just
    before it deletes.
    """
    if out is not None:
        check_out_outside_prefix(str(out), config)
    database_url = config.database_url()
    inventory = inventory or config.inventory.manifest
    if inventory is not None:
        check_inventory_url(inventory)
    client = s3.client_for(config.s3, client)
    # An inventory's report is checked before the database is read: a wrong report fails fast.
    manifest = None if inventory is None else find_manifest(client, inventory, config.s3.bucket)
    bucket, prefix = config.s3.bucket, config.s3.prefix
    versioning = s3.versioning_status(client, bucket)
    undo_days = s3.noncurrent_expiry_days(client, bucket, prefix)
    store = plans_store(config, client)
    context = ScanContext(
        bucket=bucket,
        prefix=prefix,
        bucket_versioning=versioning,
        database=redact_url(database_url),
        undo_window_days=undo_days,
        previous=previous_plan(store, bucket, prefix),
    )
    if manifest is not None:
        result = plan_from_inventory(
            config, manifest, client, database_url, context, now or utc_now(), _stage(progress, "querying")
        )
    else:
        listing = s3.list_versions(
            client, bucket, prefix, _stage(progress, "listing"), concurrency=config.s3.list_concurrency,
            ordered=False,  # the planner sorts what it keeps
        )
        # The references are read while the listing's first pages (round trips on
        # one connection) come in; no row is judged before they are all read.
        references, rows = read_while_listing(
            lambda: read_references(
                database_url, config.references, progress=_stage(progress, "querying"), timeouts=config.database,
                prefix=prefix,
            ),
            listing,
            EARLY_ROWS,
        )
        result = build_plan(rows, references, config.references, config.safety, context, now or utc_now())
    if cross_check or cross_check_tables:
        found = references_cross_check(
            database_url,
            [o.key for o in result.orphans],
            prefix,
            config.references,
            tables=list(cross_check_tables) or None,
            timeouts=config.database,
        )
        result = with_cross_check(result, found.hits, found.columns, found.tables_not_scanned)
    baseline = baseline_of(last_applied_plan(store, bucket, prefix, result.plan_hash))
    refusal = offline_refusal(result, config, baseline, now or utc_now()) if result.orphans else None
    if not write:
        return PlanResult(plan=result, path=None, refusal=refusal)
    if out is not None:
        store, name = open_location(str(out), client)
    else:
        name = default_file_name(result)
    location = create_once(store, name, lambda: plan_chunks(result), read_only=True)
    return PlanResult(plan=result, path=location, refusal=refusal)


def check_inventory_url(url: str) -> None:
    """``--inventory``: an s3:// URL of a manifest.json or of an inventory configuration's folder."""
    try:
        inventory_url(url)
    except ValueError as exc:
        raise ConfigError(f"--inventory: {exc}") from None


def check_out_outside_prefix(out: str, config: Config) -> None:
    """``--out`` must not be inside the scanned prefix: the next plan would list
    the plan file as an orphan (the same rule as for plans_dir)."""
    if not is_s3_url(out):
        return
    try:
        bucket, key = s3.split_url(out)
    except ValueError as exc:
        raise ConfigError(f"--out: {exc}") from None
    if bucket == config.s3.bucket and key.startswith(config.s3.prefix):
        raise ConfigError(
            f"--out: {out} is inside the scanned prefix {config.s3.prefix} of bucket {bucket}; "
            "the plan file would be an orphan of the next plan: write it elsewhere"
        )


def _stage(progress: Progress | None, stage: str) -> Callable[[int], None] | None:
    if progress is None:
        return None
    report = progress
    return lambda count: report(stage, count)


PREVIOUS_PLANS_READ = 20


def previous_plan(store: Store, bucket: str, prefix: str) -> Previous | None:
    """The newest plan in ``store`` for this bucket and prefix (among the newest 20 files)."""
    candidates = [
        n for n in store.names() if is_plan_name(n)
    ]
    found: list[Previous] = []
    for name in sorted(candidates, reverse=True)[:PREVIOUS_PLANS_READ]:
        try:
            # The summary only (the head of the file): the orphans are not needed.
            earlier = read_summary(store, name)
        except (PlanFileError, InputNotFound):
            continue  # recovery plans, foreign or broken files: not a baseline
        if (earlier.bucket, earlier.prefix) == (bucket, prefix):
            found.append(Previous(name, earlier.created_at, earlier.stats.orphans, earlier.stats.orphan_ratio))
    return max(found, key=lambda p: p.created_at, default=None)
