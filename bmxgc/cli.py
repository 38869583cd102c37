"""The command line: parse arguments, call a command, render, map errors to exit codes.

Nothing here decides anything; every command is a function in
``bmxgc.commands`` that the Python API shares.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
from collections.abc import Callable
from typing import Any, cast

import click

from bmxgc import __version__, interrupts
from bmxgc.allocator import return_large_buffers
from bmxgc.config import Config, load_config, redact_urls
from bmxgc.errors import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, EXIT_REFUSED, BmxgcError, LockNotReleased, PartialFailure
from bmxgc.results import RecoverResult

OutputFormat = click.Choice(["text", "markdown", "json"])


class _Context:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path

    def config(self) -> Config:
        return load_config(self.config_path)


# The -c of this run, for the commands bmxgc prints for the operator to run
# next (set when the arguments are parsed; main() resets it).
_printed_config: str | None = None

# Commands that read the config: the ones a printed hint must give -c to.
_CONFIG_COMMANDS = ("plan", "apply", "undo", "unlock", "recover", "history")
_HINT = re.compile(rf"\bbmxgc (?=(?:{'|'.join(_CONFIG_COMMANDS)})\b)")


def _with_config(text: str) -> str:
    """``text`` with every printed ``bmxgc COMMAND`` given this run's ``-c``,
    so that a copied command finds the same config."""
    if _printed_config is None:
        return text
    return _HINT.sub(lambda _m: f"bmxgc -c {shlex.quote(_printed_config or '')} ", text)


def _echo(text: str, *, err: bool = False) -> None:
    click.echo(_with_config(text), err=err)


def _set_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """-c/--config, before or after the subcommand (the same path if both)."""
    global _printed_config
    if value is None:
        return None
    if _printed_config is not None and _printed_config != value:
        raise click.UsageError(f"-c/--config given twice ({_printed_config!r} and {value!r}); give it once")
    _printed_config = value
    root = ctx.find_root()
    if isinstance(root.obj, _Context):
        root.obj.config_path = value
    return value


def _config_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """-c/--config accepted after the subcommand too: ``bmxgc plan -c FILE``."""
    return click.option(
        "-c",
        "--config",
        "config_after",
        metavar="PATH",
        expose_value=False,
        callback=_set_config,
        help="Config file (as before the subcommand).",
    )(command)


def _progress() -> Callable[[str, int], None] | None:
    """A one-line counter on stderr, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None

    def report(stage: str, count: int) -> None:
        noun = "versions listed" if stage == "listing" else "rows read"
        click.echo(f"\r{stage}: {count:,} {noun}   ", nl=False, err=True)

    return report


class _DeleteBar:
    """click's progress bar on stderr for batches of deletes, only on a terminal."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        if not sys.stderr.isatty():
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label="deleting", file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _end_progress() -> None:
    if sys.stderr.isatty():
        click.echo("\r\033[K", nl=False, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    metavar="PATH",
    callback=_set_config,
    help="Config file (default: env BMXGC_CONFIG, else ./bmxgc.toml); also accepted after the subcommand.",
)
@click.version_option(__version__, prog_name="bmxgc")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Plan, review, apply and undo garbage collection of S3 objects."""
    ctx.obj = _Context(config_path)


@cli.command("plan")
@_config_option
@click.option("--out", type=click.Path(dir_okay=False), help="Write the plan here instead of plans_dir.")
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 2 when the plan has orphans apply can delete, 3 when apply's offline gates would refuse it, 0 when it has none.",
)
@click.option(
    "--cross-check",
    is_flag=True,
    help="Also look for each orphan's key in the text columns no source declares.",
)
@click.option(
    "--cross-check-table",
    "cross_check_tables",
    multiple=True,
    metavar="TABLE",
    help="Cross-check only these tables (repeatable; lifts the 50-table limit).",
)
@click.option(
    "--inventory",
    metavar="MANIFEST",
    help="Plan from this S3 Inventory report (s3:// URL of a manifest.json, or of the inventory "
    "configuration's folder: its newest complete report) instead of listing the prefix.",
)
@click.pass_obj
def plan_command(
    obj: _Context,
    out: str | None,
    detailed_exitcode: bool,
    cross_check: bool,
    cross_check_tables: tuple[str, ...],
    inventory: str | None,
) -> None:
    """List the prefix, read the references, and write a plan of the orphans."""
    from bmxgc.commands.plan import plan
    from bmxgc.render import plan_text

    try:
        result = plan(
            obj.config(),
            out=out,
            progress=_progress(),
            cross_check=cross_check,
            cross_check_tables=cross_check_tables,
            inventory=inventory,
        )
    finally:
        _end_progress()
    refusal = str(result.refusal) if result.refusal else ""
    _echo(plan_text(result.plan, result.path, refusal))
    if detailed_exitcode and result.refusal is not None:
        sys.exit(EXIT_REFUSED)
    if detailed_exitcode and result.plan.stats.orphans:
        sys.exit(EXIT_CHANGES)


@cli.command("show")
@_config_option
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=OutputFormat, default="text", show_default=True)
def show_command(plan_path: str, fmt: str) -> None:
    """Render a plan file (offline): text, Markdown for a PR comment, or a JSON summary."""
    from bmxgc.commands.inspect import verify
    from bmxgc.render import plan_json_summary, plan_markdown, plan_text

    plan = verify(plan_path)
    renderers: dict[str, Callable[[Any], str]] = {
        "text": lambda p: plan_text(p),
        "markdown": plan_markdown,
        "json": plan_json_summary,
    }
    click.echo(renderers[fmt](plan))


@cli.command("verify")
@_config_option
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
def verify_command(plan_path: str) -> None:
    """Check a plan file offline: format_version, schema and plan_hash."""
    from bmxgc.commands.inspect import verify
    from bmxgc.render import verify_text

    click.echo(verify_text(verify(plan_path), plan_path))


@cli.command("diff")
@_config_option
@click.argument("old_path", metavar="OLD_PLAN", type=click.Path(dir_okay=False))
@click.argument("new_path", metavar="NEW_PLAN", type=click.Path(dir_okay=False))
def diff_command(old_path: str, new_path: str) -> None:
    """Show which orphans came and went between two plans, and how the stats moved."""
    from bmxgc.commands.inspect import diff
    from bmxgc.render import diff_text

    click.echo(diff_text(diff(old_path, new_path)))


def _ask_yes() -> Callable[[str], bool] | None:
    """Terraform's consent: only 'yes' approves; None when there is no terminal."""
    if not sys.stdin.isatty():
        return None

    def confirm(summary: str) -> bool:
        _echo(summary)
        click.echo("\nDo you want to perform these actions?\n  Only 'yes' will be accepted to approve.\n")
        answer: str = click.prompt("  Enter a value", default="", show_default=False)
        return answer.strip() == "yes"

    return confirm


def _ask_count() -> Callable[[str], str] | None:
    """The count an overridden jump asks for; None when there is no terminal."""
    if not sys.stdin.isatty():
        return None

    def ask(question: str) -> str:
        answer: str = click.prompt(question, default="", show_default=False)
        return answer

    return ask


def _ratio(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise click.BadParameter(f"{value} is outside 0..1")
    return value


@cli.command("apply")
@_config_option
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--auto-approve", is_flag=True, help="Do not ask for 'yes' (for CI).")
@click.option(
    "--max-orphan-ratio",
    type=float,
    callback=_ratio,
    metavar="R",
    help="Allow this orphan ratio for this run (recorded in the receipt).",
)
@click.option(
    "--allow-jump",
    is_flag=True,
    help="Apply although the figures jumped since the last applied plan (recorded; you type the count).",
)
@click.option(
    "--expect-deletes",
    type=click.IntRange(min=0),
    metavar="N",
    help="The number of objects this apply deletes, instead of typing it (with --allow-jump).",
)
@click.pass_obj
def apply_command(
    obj: _Context,
    plan_path: str,
    auto_approve: bool,
    max_orphan_ratio: float | None,
    allow_jump: bool,
    expect_deletes: int | None,
) -> None:
    """Re-verify a plan against live S3 and the database, then delete reversibly."""
    from bmxgc.commands.apply import apply
    from bmxgc.render import apply_text

    bar = _DeleteBar()
    try:
        result = apply(
            obj.config(),
            plan_path,
            auto_approve=auto_approve,
            max_orphan_ratio=max_orphan_ratio,
            allow_jump=allow_jump,
            expect_deletes=expect_deletes,
            confirm=_ask_yes(),
            type_count=_ask_count(),
            progress=bar,
        )
    except LockNotReleased as exc:  # the apply's summary first, then the error
        bar.close()
        click.echo(apply_text(cast(Any, exc.result)))
        raise
    finally:
        bar.close()
    _echo(apply_text(result))


@cli.command("undo")
@_config_option
@click.argument("receipt_path", metavar="[RECEIPT]", required=False, type=click.Path(dir_okay=False))
@click.option("--auto-approve", is_flag=True, help="Do not ask for 'yes'.")
@click.pass_obj
def undo_command(obj: _Context, receipt_path: str | None, auto_approve: bool) -> None:
    """Restore exactly what an apply deleted (the newest receipt if none is named)."""
    from bmxgc.commands.undo import undo
    from bmxgc.render import undo_text

    try:
        result = undo(obj.config(), receipt_path, auto_approve=auto_approve, confirm=_ask_yes())
    except LockNotReleased as exc:  # the undo's summary first, then the error
        _echo(undo_text(cast(Any, exc.result)))
        raise
    _echo(undo_text(result))


@cli.command("unlock")
@_config_option
@click.option("--prefix", metavar="P", help="The lock of this prefix (as recover --prefix took it).")
@click.option("--whole-bucket", is_flag=True, help="The lock a whole-bucket recover took.")
@click.option("--auto-approve", is_flag=True, help="Do not ask for 'yes'.")
@click.option(
    "--break-live-lock",
    is_flag=True,
    help="Break the lock even if its holder is still running on this host (it loses its guard).",
)
@click.pass_obj
def unlock_command(
    obj: _Context, prefix: str | None, whole_bucket: bool, auto_approve: bool, break_live_lock: bool
) -> None:
    """Break a lock left by a dead process (shows who holds it first)."""
    from bmxgc.commands.unlock import unlock

    message = unlock(
        obj.config(),
        auto_approve=auto_approve,
        confirm=_ask_yes(),
        prefix=prefix,
        whole_bucket=whole_bucket,
        break_live_lock=break_live_lock,
    )
    _echo(message)


@cli.command("recover")
@_config_option
@click.option("--since", required=True, metavar="TIME", help="RFC 3339 start of the window.")
@click.option("--until", metavar="TIME", help="RFC 3339 end of the window (default: now).")
@click.option("--prefix", metavar="P", help="Recover under this prefix instead of the config's.")
@click.option("--whole-bucket", is_flag=True, help="Recover across the whole bucket.")
@click.option("--auto-approve", is_flag=True, help="Restore; without it, only show and save the recovery plan.")
@click.pass_obj
def recover_command(
    obj: _Context, since: str, until: str | None, prefix: str | None, whole_bucket: bool, auto_approve: bool
) -> None:
    """Restore objects deleted in a time window when there is no receipt."""
    from bmxgc.commands.recover import parse_time, recover
    from bmxgc.render import recover_text

    try:
        result = recover(
            obj.config(),
            since=parse_time(since, "--since"),
            until=parse_time(until, "--until") if until else None,
            prefix=prefix,
            whole_bucket=whole_bucket,
            auto_approve=auto_approve,
        )
    except LockNotReleased as exc:  # what recover did or would do first, then the error
        _echo(recover_text(cast(Any, exc.result)))
        raise
    except PartialFailure as failure:
        # What was restored and what was not, then the error line (exit 1).
        if isinstance(failure.result, RecoverResult):
            _echo(recover_text(failure.result))
        raise
    _echo(recover_text(result))


@cli.command("history")
@_config_option
@click.pass_obj
def history_command(obj: _Context) -> None:
    """The plans and receipts in plans_dir, newest first."""
    from bmxgc.commands.history import history
    from bmxgc.render import history_text

    _echo(history_text(history(obj.config())))


@cli.command("demo")
def demo_command() -> None:
    """Replay the incident offline: plan, refuse, apply, undo, on a local S3 server."""
    from bmxgc.demo import run_demo

    sys.exit(run_demo(echo=click.echo))


class _WarningsToStderr(logging.Handler):
    """What the commands log as warnings (logger ``bmxgc``): one line on stderr each."""

    def emit(self, record: logging.LogRecord) -> None:
        _echo(f"Warning: {record.getMessage()}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one place that maps every failure to the exit codes of docs/reference.md."""
    warnings = _WarningsToStderr(logging.WARNING)
    logging.getLogger("bmxgc").addHandler(warnings)
    try:
        return _main(argv)
    finally:
        logging.getLogger("bmxgc").removeHandler(warnings)


def _main(argv: list[str] | None) -> int:
    global _printed_config
    _printed_config = None
    try:
        with interrupts.handled():
            cli.main(args=argv, prog_name="bmxgc", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort as exc:
        # click turns Ctrl-C (and SIGTERM, a KeyboardInterrupt here) into Abort.
        if isinstance(exc.__cause__, KeyboardInterrupt):
            click.echo("Interrupted.", err=True)
            return interrupts.exit_code(exc.__cause__)
        click.echo("Aborted.", err=True)
        return EXIT_ERROR
    except click.ClickException as exc:
        # Usage errors exit 1: click's 2 would read as "orphans found" to CI.
        exc.show()
        return EXIT_ERROR
    except BmxgcError as exc:
        _echo(f"Error: {exc}", err=True)
        for line in exc.details():
            _echo(line, err=True)
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    except KeyboardInterrupt as exc:
        click.echo("Interrupted.", err=True)
        return interrupts.exit_code(exc)
    except OSError as exc:
        click.echo(f"Error: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}", err=True)
        return EXIT_ERROR
    except Exception as exc:  # one line, never a traceback; BMXGC_DEBUG=1 shows it
        if os.environ.get("BMXGC_DEBUG"):
            raise
        first = redact_urls((str(exc).splitlines() or [""])[0])  # botocore's messages quote the endpoint
        click.echo(
            f"Error: unexpected {type(exc).__name__}: {first}; run again with BMXGC_DEBUG=1 and report it",
            err=True,
        )
        return EXIT_ERROR
    return EXIT_OK


def run() -> None:
    """The bmxgc process: its allocator set for large buffers (``allocator``), then ``main``."""
    return_large_buffers()
    sys.exit(main())


if __name__ == "__main__":
    run()
