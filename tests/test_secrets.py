"""Credentials written into ``[s3] endpoint_url`` (``http://user:pass@host/``)
never reach an error, a plan, a receipt or a log (issue 10, item 20)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from apply_support import World
from support import CliResult, assert_one_line_error, config_doc, write_toml

Cli = Callable[..., CliResult]
PASSWORD = "SECRETpass"


@pytest.mark.integration  # waits for connections to an unreachable endpoint to fail
def test_unreachable_endpoint_with_credentials_is_named_without_the_password(
    cli: Cli, sqlite_db: Any, tmp_path: Path
) -> None:
    table = sqlite_db.table(["1/a.webp"])
    doc = config_doc(endpoint=f"http://user:{PASSWORD}@127.0.0.1:9/", database_url=sqlite_db.url)
    doc["references"][0]["query"] = f"SELECT s3_key FROM {table}"
    config = write_toml(tmp_path / "bmxgc.toml", doc)
    result = cli("-c", config, "plan")
    assert_one_line_error(result, 1, "could not connect to http://user@127.0.0.1:9")
    assert PASSWORD not in result.output


@pytest.mark.parametrize("command", [("unlock", "--auto-approve"), ("history",)])
def test_other_commands_do_not_echo_the_endpoint_password(cli: Cli, tmp_path: Path, command: tuple[str, ...]) -> None:
    doc = config_doc(endpoint=f"http://user:{PASSWORD}@127.0.0.1:9/", plans_dir="s3://elsewhere/plans/")
    doc["s3"].update(connect_timeout="1s", read_timeout="1s", call_timeout="2s")  # no retries: fast
    config = write_toml(tmp_path / "bmxgc.toml", doc)
    result = cli("-c", config, *command)
    assert_one_line_error(result, 1, "user@127.0.0.1:9")
    assert PASSWORD not in result.output


def test_config_error_about_the_endpoint_hides_its_password(cli: Cli, tmp_path: Path) -> None:
    doc = config_doc(endpoint=f"ftp://user:{PASSWORD}@files.example/")
    config = write_toml(tmp_path / "bmxgc.toml", doc)
    result = cli("-c", config, "plan")
    assert_one_line_error(result, 1, "s3.endpoint_url", "ftp://user@files.example/")
    assert PASSWORD not in result.output


def test_plan_receipt_and_output_of_a_run_through_an_endpoint_with_credentials_hold_no_password(
    cli: Cli, world: World
) -> None:
    """moto ignores the user part; the whole run works and nothing stores it."""
    endpoint = world.bucket.endpoint.replace("http://", f"http://user:{PASSWORD}@")
    world.doc["s3"]["endpoint_url"] = endpoint
    write_toml(world.config_path, world.doc)
    planned = cli("-c", world.config_path, "plan")
    assert planned.code == 0, planned.output
    plan = planned.saved_path()
    applied = cli("-c", world.config_path, "apply", plan, "--auto-approve")
    assert applied.code == 0, applied.output
    undone = cli("-c", world.config_path, "undo", "--auto-approve")
    assert undone.code == 0, undone.output
    for result in (planned, applied, undone):
        assert PASSWORD not in result.output
    for path in world.plans_dir.iterdir():
        assert PASSWORD not in path.read_text(encoding="utf-8"), path


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://user:SECRETpass@127.0.0.1:9/", "http://user@127.0.0.1:9/"),
        ("https://user:SECRET%40pass@s3.example:443/b?x=1", "https://user@s3.example:443/b?x=1"),
        ("https://user:SECRET@pass@s3.example/", "https://user@s3.example/"),  # '@' unencoded in the password
        ('Could not connect to "http://u:SECRETp@h:1/k" nor "http://v:SECRETq@g/"', 'Could not connect to "http://u@h:1/k" nor "http://v@g/"'),
        ("http://127.0.0.1:9000/books/a@b.webp", "http://127.0.0.1:9000/books/a@b.webp"),  # '@' in a key, no user
        ("http://user@host/", "http://user@host/"),
    ],
)
def test_redact_urls_removes_every_password_and_keeps_the_rest(text: str, shown: str) -> None:
    from bmxgc.config import redact_urls

    assert redact_urls(text) == shown
    assert "SECRET" not in redact_urls(text)
