"""Turning results into text for people: plain terminal text and Markdown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bmxgc.model import PlanSummary
from bmxgc.results import ApplyResult, HistoryEntry, RecoverResult, UndoResult
from bmxgc.review import PlanDiff, summary


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def percent(ratio: float) -> str:
    return f"{ratio * 100:.1f}%"


def _stat_lines(plan: PlanSummary) -> list[str]:
    s = plan.stats
    return [
        f"  objects scanned      {s.objects_scanned:>10,}   {human_bytes(s.bytes_scanned)}",
        f"  referenced keys      {s.referenced_keys:>10,}   found under prefix {s.referenced_found:,}, "
        f"dangling {s.dangling_references:,}, outside prefix {s.referenced_outside_prefix:,}",
        f"  left out             {s.skipped_young + s.skipped_protected:>10,}   "
        f"younger than {plan.safety.min_age} {s.skipped_young:,}, protected {s.skipped_protected:,}",
        f"  orphans              {s.orphans:>10,}   {human_bytes(s.orphan_bytes)}, "
        f"ratio {percent(s.orphan_ratio)} (max {percent(plan.safety.max_orphan_ratio)})",
    ]


def apply_would_refuse(plan: PlanSummary) -> bool:
    """What the offline gates will say, for the hint under a plan (apply decides)."""
    s = plan.stats
    return bool(
        s.referenced_keys == 0
        or s.referenced_found == 0
        or s.orphan_ratio > plan.safety.max_orphan_ratio
        or s.orphans > plan.safety.max_deletes
        or plan.bucket_versioning != "Enabled"
        or plan.cross_check
    )


def plan_text(plan: PlanSummary, path: Path | str | None = None, refusal: str | None = None) -> str:
    """The plan as an operator reads it: warnings, counts, samples, verdict.
    ``refusal``: what apply's offline gates said ("" for nothing; None: not
    asked, the warnings decide the hint)."""
    lines: list[str] = []
    if plan.warnings:
        lines.append(f"Warnings ({len(plan.warnings)}):")
        lines += [f"  ! {w}" for w in plan.warnings]
        lines.append("")
    lines.append(
        f"Scanned s3://{plan.bucket}/{plan.prefix} (versioning: {plan.bucket_versioning}) "
        f"against {plan.database}"
    )
    if plan.inventory is not None:
        lines.append(
            f"from the S3 Inventory report {plan.inventory.manifest} (made {plan.inventory.created_at}; "
            "min_age counted from then)"
        )
    lines += _stat_lines(plan)
    if plan.cross_check_columns is not None:
        lines.append(
            f"  cross-check          {len(plan.cross_check or []):>10,}   hits in "
            f"{len(plan.cross_check_columns):,} undeclared text columns"
        )
    lines.append("")
    if plan.sample_orphan_keys:
        lines.append(f"Sample orphan keys ({len(plan.sample_orphan_keys)} of {plan.stats.orphans:,}):")
        lines += [f"  - {key}" for key in plan.sample_orphan_keys]
        lines.append("")
    lines.append(f"Plan: {plan.stats.orphans:,} to delete.")
    if path is not None:
        lines.append("")
        lines.append(f"Saved:  {path}")
    lines.append(f"Hash:   {plan.plan_hash}")
    lines.append(f"Made:   {plan.created_at}")
    if path is not None and plan.stats.orphans:
        lines.append("")
        if refusal:
            lines.append(f"Apply will refuse this plan ({refusal}).")
        elif refusal is None and apply_would_refuse(plan):
            lines.append("Apply will refuse this plan (see the warnings above): fix the cause and plan again.")
        else:
            lines.append(f"Review it with 'bmxgc show {path}', then: bmxgc apply {path}")
    return "\n".join(lines)


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell or inline code."""
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")


def plan_markdown(plan: PlanSummary) -> str:
    """A pull-request comment: verdict, summary table, warnings, samples, hash."""
    s = plan.stats
    lines = [
        f"### bmxgc plan: {s.orphans:,} to delete from `s3://{_md(plan.bucket)}/{_md(plan.prefix)}`",
        "",
    ]
    if plan.warnings:
        lines.append(f"> [!WARNING]\n> {len(plan.warnings)} warning(s): read them before approving.")
        lines.append("")
        lines += [f"- ⚠️ {_md(w)}" for w in plan.warnings]
        lines.append("")
    else:
        lines += ["No warnings.", ""]
    rows: list[tuple[str, str]] = [
        ("objects scanned", f"{s.objects_scanned:,} ({human_bytes(s.bytes_scanned)})"),
        ("referenced keys", f"{s.referenced_keys:,}"),
        ("found under prefix", f"{s.referenced_found:,}"),
        ("dangling references", f"{s.dangling_references:,}"),
        ("skipped: younger than " + plan.safety.min_age, f"{s.skipped_young:,}"),
        ("skipped: protected", f"{s.skipped_protected:,}"),
        ("**orphans**", f"**{s.orphans:,}** ({human_bytes(s.orphan_bytes)})"),
        ("orphan ratio", f"{percent(s.orphan_ratio)} (max {percent(plan.safety.max_orphan_ratio)})"),
        ("bucket versioning", plan.bucket_versioning),
        *(
            [("cross-check hits", f"{len(plan.cross_check or []):,} in {len(plan.cross_check_columns):,} columns")]
            if plan.cross_check_columns is not None
            else []
        ),
        ("database", f"`{_md(plan.database)}`"),
    ]
    lines += ["| | |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in rows]
    lines.append("")
    lines.append("**Sources**")
    lines.append("")
    for ref in plan.references:
        templates = ", ".join(f"`{_md(t)}`" for t in ref.keys)
        lines.append(f"- `{_md(ref.name)}`: `{_md(ref.query)}` → {templates} ({ref.rows:,} rows)")
    lines.append("")
    if plan.sample_orphan_keys:
        lines.append(
            f"<details><summary>Sample orphan keys ({len(plan.sample_orphan_keys)} of {s.orphans:,})"
            "</summary>\n"
        )
        lines += ["```"] + [k.replace("```", "'''") for k in plan.sample_orphan_keys] + ["```", ""]
        lines.append("</details>")
        lines.append("")
    lines.append(f"Hash `{plan.plan_hash}`, made {plan.created_at} by bmxgc {plan.bmxgc_version}.")
    return "\n".join(lines)


def plan_json_summary(plan: PlanSummary) -> str:
    return json.dumps(summary(plan), indent=2, ensure_ascii=False)


def verify_text(plan: PlanSummary, path: Path | str) -> str:
    return (
        f"OK: {path} is an intact format_version {plan.format_version} plan "
        f"({plan.stats.orphans:,} orphans in s3://{plan.bucket}/{plan.prefix}, {plan.plan_hash})"
    )


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def _figure(path: str, value: Any) -> str:
    """A summary value the way ``show`` prints it: ratios as percentages,
    sizes in bytes as KiB/MiB, counts with thousands separators."""
    if isinstance(value, bool) or value is None:
        return _short(value)
    if isinstance(value, (int, float)) and path.endswith("ratio"):
        return percent(float(value))
    if isinstance(value, int) and path.endswith("bytes"):
        return human_bytes(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.6g}"
    return _short(value)


def diff_text(result: PlanDiff, shown: int = 50) -> str:
    lines: list[str] = []
    if result.changes:
        lines.append("Summary changes:")
        lines += [f"  {c.path}: {_figure(c.path, c.old)} -> {_figure(c.path, c.new)}" for c in result.changes]
        lines.append("")
    for sign, label, warnings in (
        ("+", "Warnings added", result.warnings_added),
        ("-", "Warnings removed", result.warnings_removed),
    ):
        if warnings:
            lines.append(f"{label} ({len(warnings):,}):")
            lines += [f"  {sign} {w}" for w in warnings]
            lines.append("")
    for sign, label, items in (("+", "new orphans", result.added), ("-", "no longer orphans", result.removed)):
        if items:
            lines.append(f"{label} ({len(items):,}):")
            lines += [f"  {sign} {o.key}" for o in items[:shown]]
            if len(items) > shown:
                lines.append(f"  ... and {len(items) - shown:,} more")
            lines.append("")
    if result.changed:
        lines.append(f"orphans with another version or ETag ({len(result.changed):,}):")
        lines += [
            f"  ~ {old.key}: {old.version_id} -> {new.version_id}" for old, new in result.changed[:shown]
        ]
        lines.append("")
    lines.append(
        f"Diff: {len(result.added):,} added, {len(result.removed):,} removed, "
        f"{len(result.changed):,} changed."
    )
    return "\n".join(lines)


def apply_text(result: ApplyResult) -> str:
    receipt = result.receipt
    lines = [
        f"Apply complete! {len(receipt.deleted):,} deleted, {len(receipt.errors):,} failed "
        f"(s3://{receipt.bucket}/{receipt.prefix}, plan {receipt.plan_hash[:19]}...).",
        f"Receipt: {result.receipt_path}",
    ]
    if receipt.overrides:
        lines.append("Overrides: " + ", ".join(f"{k}={v}" for k, v in receipt.overrides.items()))
    if receipt.undo_until:
        lines.append(f"Undo possible until {receipt.undo_until} (a lifecycle rule expires noncurrent versions).")
    else:
        lines.append("Undo possible until the delete markers or old versions are removed (no lifecycle rule expires them).")
    lines.append(f"To take it back: bmxgc undo {result.receipt_path}")
    return "\n".join(lines)


def undo_text(result: UndoResult) -> str:
    lines = [result.receipt_summary] if result.receipt_summary else []
    lines += [
        f"Undo complete! {len(result.restored):,} restored, {len(result.skipped):,} left alone, "
        f"{len(result.already_restored):,} already restored, {len(result.errors):,} failed.",
    ]
    if result.skipped:
        lines.append("Left alone:")
        lines += [f"  {s.key}: {s.reason}" for s in result.skipped[:20]]
        if len(result.skipped) > 20:
            lines.append(f"  ... and {len(result.skipped) - 20:,} more")
    lines.append(f"Record: {result.record_path}")
    return "\n".join(lines)


def recover_text(result: RecoverResult) -> str:
    plan = result.plan
    scope = f"s3://{plan.bucket}/{plan.prefix}" if plan.prefix else f"s3://{plan.bucket} (whole bucket)"
    stats = plan.stats
    lines = [
        f"Scanned {scope}: {stats.versions_listed:,} versions; "
        f"{stats.delete_markers_in_window:,} keys deleted between {plan.since} and {plan.until}.",
        f"  to restore           {stats.to_restore:>10,}   {human_bytes(stats.bytes_to_restore)}",
        f"  nothing beneath      {stats.nothing_beneath:>10,}   (a marker with no version to bring back)",
    ]
    if plan.restores:
        lines.append("")
        lines.append(f"Sample ({len(plan.sample_keys)} of {len(plan.restores):,}), key: version brought back")
        by_key = {item.key: item for item in plan.restores}
        lines += [
            f"  + {k}: {by_key[k].restores_version_id} (deleted {by_key[k].deleted_at})" for k in plan.sample_keys
        ]
    lines.append("")
    lines.append(f"Recovery plan: {result.plan_location}")
    if result.applied:
        lines.append(f"Recover complete! {result.restored:,} restored, {result.errors:,} failed.")
        lines.append(f"Receipt: {result.receipt_location}")
    elif plan.restores:
        lines.append("Nothing was changed. Run again with --auto-approve to restore these objects.")
    else:
        lines.append("Nothing to restore.")
    return "\n".join(lines)


def history_text(entries: list[HistoryEntry]) -> str:
    if not entries:
        return "No plans yet."
    rows = [("WHEN", "STATE", "ORPHANS", "WHERE", "BY", "FILE")]
    rows += [
        (
            e.when,
            e.state,
            f"{e.orphans:,}" if e.orphans is not None else "-",
            "?" if e.problem and e.problem[0] == e.name else
            f"s3://{e.bucket}/{e.prefix}" if e.prefix else f"s3://{e.bucket} (whole bucket)",
            e.applied_by or "-",
            e.name,
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    table = "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows
    )
    # Why each unreadable file is unreadable, once per file, below the table.
    problems = dict(e.problem for e in entries if e.problem)
    if not problems:
        return table
    return table + "\n\n" + "\n".join(f"{name}: {reason}" for name, reason in sorted(problems.items()))
