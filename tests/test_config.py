"""Config: found by --config, BMXGC_CONFIG, ./bmxgc.toml; every problem one line naming the key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest

from bmxgc.config import load_config
from bmxgc.errors import ConfigError
from support import CliResult, assert_one_line_error, config_doc, to_toml, write_toml

# An endpoint nothing listens on: a config error must be reported before any
# S3 or database access, so these tests never reach it.
DEAD_ENDPOINT = "http://127.0.0.1:9"


def _doc(**changes: Any) -> dict[str, Any]:
    return config_doc(endpoint=DEAD_ENDPOINT, **changes)


def _without(doc: dict[str, Any], table: str, key: str) -> dict[str, Any]:
    del doc[table][key]
    return doc


def _with(doc: dict[str, Any], table: str, key: str, value: Any) -> dict[str, Any]:
    doc[table][key] = value
    return doc


def _ref(**fields: Any) -> list[dict[str, Any]]:
    return [{"name": "book_images", "query": "SELECT s3_key FROM book_images", **fields}]


# (id, config document, text the one-line error must contain)
BAD_CONFIGS: list[tuple[str, Callable[[], dict[str, Any]], tuple[str, ...]]] = [
    ("unknown_top_level_key", lambda: {**_doc(), "plan_dir": "plans"}, ("plan_dir", "unknown key")),
    ("unknown_key_in_s3", lambda: _with(_doc(), "s3", "buckett", "x"), ("s3.buckett", "unknown key")),
    (
        "unknown_key_in_safety",
        lambda: _with(_doc(), "safety", "max_delete", 5),
        ("safety.max_delete", "unknown key"),
    ),
    (
        "unknown_key_in_references",
        lambda: _doc(references=_ref(qurey="SELECT 1")),
        ("references[0].qurey", "unknown key"),
    ),
    (
        "unknown_key_in_database",
        lambda: _with(_doc(), "database", "password", "hunter2"),
        ("database.password", "unknown key"),
    ),
    ("base_dir_is_not_a_config_key", lambda: {**_doc(), "base_dir": "/"}, ("base_dir", "unknown key")),
    ("missing_bucket", lambda: _without(_doc(), "s3", "bucket"), ("s3.bucket", "missing")),
    ("empty_bucket", lambda: _with(_doc(), "s3", "bucket", ""), ("s3.bucket",)),
    ("missing_prefix", lambda: _without(_doc(), "s3", "prefix"), ("s3.prefix", "missing")),
    ("empty_prefix", lambda: _doc(prefix=""), ("s3.prefix", "empty prefix")),
    ("slash_prefix", lambda: _doc(prefix="/"), ("s3.prefix",)),
    ("missing_s3_table", lambda: {k: v for k, v in _doc().items() if k != "s3"}, ("s3", "missing")),
    (
        "missing_references",
        lambda: {k: v for k, v in _doc().items() if k != "references"},
        ("references", "missing"),
    ),
    (
        "template_without_value",
        lambda: _doc(references=_ref(keys=["books/"])),
        ("references[0].keys", "{value}"),
    ),
    (
        "template_with_other_placeholder",
        lambda: _doc(references=_ref(keys=["{id}/{value}"])),
        ("references[0].keys",),
    ),
    ("empty_template_list", lambda: _doc(references=_ref(keys=[])), ("references[0].keys",)),
    ("empty_query", lambda: _doc(references=_ref(query="")), ("references[0].query",)),
    (
        "duplicate_reference_names",
        lambda: _doc(references=_ref() + _ref()),
        ("references", "book_images"),
    ),
    ("ratio_above_one", lambda: _doc(safety={"max_orphan_ratio": 1.5}), ("safety.max_orphan_ratio",)),
    ("ratio_below_zero", lambda: _doc(safety={"max_orphan_ratio": -0.1}), ("safety.max_orphan_ratio",)),
    ("negative_max_deletes", lambda: _doc(safety={"max_deletes": -1}), ("safety.max_deletes",)),
    ("max_deletes_not_a_number", lambda: _doc(safety={"max_deletes": "many"}), ("safety.max_deletes",)),
    ("duration_with_words", lambda: _doc(safety={"min_age": "1 day"}), ("safety.min_age", "duration")),
    ("duration_without_unit", lambda: _doc(safety={"min_age": "24"}), ("safety.min_age", "duration")),
    ("duration_fraction", lambda: _doc(safety={"min_age": "1.5h"}), ("safety.min_age", "duration")),
    ("duration_unknown_unit", lambda: _doc(safety={"max_plan_age": "2w"}), ("safety.max_plan_age", "duration")),
    (
        "endpoint_without_scheme",
        lambda: _with(_doc(), "s3", "endpoint_url", "localhost:9000"),
        ("s3.endpoint_url", "not a URL"),
    ),
    ("prefix_covering_lock_folder", lambda: _doc(prefix=".bmxgc/"), ("s3.prefix", "lock folder")),
    ("protect_not_a_list", lambda: _doc(safety={"protect": "books/keep/*"}), ("safety.protect",)),
    # Strict types (issue 10): no coercion, and every float finite.
    ("ratio_true", lambda: _doc(safety={"max_orphan_ratio": True}), ("safety.max_orphan_ratio", "number", "true")),
    ("ratio_string", lambda: _doc(safety={"max_orphan_ratio": "0.5"}), ("safety.max_orphan_ratio", "number")),
    ("ratio_nan", lambda: _doc(safety={"max_orphan_ratio": float("nan")}), ("safety.max_orphan_ratio", "finite")),
    ("ratio_inf", lambda: _doc(safety={"max_orphan_ratio": float("inf")}), ("safety.max_orphan_ratio",)),
    ("max_deletes_true", lambda: _doc(safety={"max_deletes": True}), ("safety.max_deletes", "integer", "true")),
    ("max_deletes_string", lambda: _doc(safety={"max_deletes": "10"}), ("safety.max_deletes", "integer", '"10"')),
    ("max_deletes_float", lambda: _doc(safety={"max_deletes": 10.0}), ("safety.max_deletes", "integer")),
    ("plans_dir_not_a_string", lambda: {**_doc(), "plans_dir": 5}, ("plans_dir",)),
    ("prefix_not_a_string", lambda: _doc(prefix=["books/"]), ("s3.prefix",)),
    # Durations the parser cannot hold are named errors, not crashes.
    ("min_age_overflow", lambda: _doc(safety={"min_age": "99999999999999d"}), ("safety.min_age", "too long")),
    ("max_plan_age_overflow", lambda: _doc(safety={"max_plan_age": "999999999999h"}), ("safety.max_plan_age",)),
    ("duration_non_ascii_digits", lambda: _doc(safety={"min_age": "\u0661\u0662h"}), ("safety.min_age", "duration")),
    ("duration_trailing_newline", lambda: _doc(safety={"min_age": "24h\n"}), ("safety.min_age", "duration")),
]


@pytest.mark.parametrize("make_doc,needles", [(m, n) for _, m, n in BAD_CONFIGS], ids=[i for i, _, _ in BAD_CONFIGS])
def test_config_error_is_one_line_naming_the_key(
    cli: Callable[..., CliResult], tmp_path: Path, make_doc: Callable[[], dict[str, Any]], needles: tuple[str, ...]
) -> None:
    path = write_toml(tmp_path / "bmxgc.toml", make_doc())
    result = cli("-c", path, "plan")
    assert_one_line_error(result, 1, str(path), *needles)
    assert not (tmp_path / "plans").exists() or not list((tmp_path / "plans").iterdir())


def test_config_missing_file_is_one_line_error(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    line = assert_one_line_error(cli("-c", missing, "plan"), 1, str(missing), "not found")
    assert "BMXGC_CONFIG" in line  # says how else to point at a config


def test_config_invalid_toml_is_one_line_error(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    path = tmp_path / "bmxgc.toml"
    path.write_text('[s3]\nbucket = "x"\nprefix = books/\n', encoding="utf-8")
    assert_one_line_error(cli("-c", path, "plan"), 1, str(path), "not valid TOML", "line 3")


def test_config_directory_instead_of_file_is_one_line_error(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    assert_one_line_error(cli("-c", tmp_path, "plan"), 1, str(tmp_path))


def test_config_without_database_url_is_one_line_error(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    path = write_toml(tmp_path / "bmxgc.toml", _doc(database_url=None))
    line = assert_one_line_error(cli("-c", path, "plan"), 1, "database.url")
    assert "BMXGC_DATABASE_URL" in line


def test_config_env_database_url_wins_over_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_toml(tmp_path / "bmxgc.toml", _doc(database_url="sqlite:///from-file.db"))
    assert load_config(path).database_url() == "sqlite:///from-file.db"
    monkeypatch.setenv("BMXGC_DATABASE_URL", "postgresql+psycopg2://app@db:5432/from_env")
    assert load_config(path).database_url() == "postgresql+psycopg2://app@db:5432/from_env"


def test_config_env_database_url_alone_is_enough(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_toml(tmp_path / "bmxgc.toml", _doc(database_url=None))
    monkeypatch.setenv("BMXGC_DATABASE_URL", "sqlite:///env.db")
    assert load_config(path).database_url() == "sqlite:///env.db"


def test_config_found_through_bmxgc_config_env(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_toml(tmp_path / "elsewhere" / "env.toml", _doc(prefix=""))
    monkeypatch.setenv("BMXGC_CONFIG", str(path))
    with pytest.raises(ConfigError, match="elsewhere/env.toml: s3.prefix"):
        load_config()
    # The CLI reads the same file: its error names it.
    assert_one_line_error(cli("plan"), 1, str(path), "s3.prefix")


def test_config_flag_wins_over_bmxgc_config_env(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from_env = write_toml(tmp_path / "env.toml", _doc(bucket="from-env"))
    from_flag = write_toml(tmp_path / "flag.toml", _doc(bucket="from-flag", prefix=""))
    monkeypatch.setenv("BMXGC_CONFIG", str(from_env))
    assert load_config().s3.bucket == "from-env"
    with pytest.raises(ConfigError, match="flag.toml"):
        load_config(from_flag)
    assert_one_line_error(cli("--config", from_flag, "plan"), 1, str(from_flag), "s3.prefix")


def test_config_defaults_to_bmxgc_toml_in_working_directory(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_toml(tmp_path / "good" / "bmxgc.toml", _doc(bucket="in-cwd"))
    monkeypatch.chdir(tmp_path / "good")
    assert load_config().s3.bucket == "in-cwd"
    write_toml(tmp_path / "bmxgc.toml", _doc(prefix=""))
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(cli("plan"), 1, "bmxgc.toml", "s3.prefix")


def test_config_no_file_anywhere_says_where_it_looked(cli: Callable[..., CliResult]) -> None:
    assert_one_line_error(cli("plan"), 1, "bmxgc.toml", "not found")


def test_config_valid_file_loads_with_documented_defaults(tmp_path: Path) -> None:
    doc = _doc()
    del doc["safety"]
    del doc["references"][0]["keys"]
    config = load_config(write_toml(tmp_path / "sub" / "bmxgc.toml", doc))
    assert config.references[0].keys == ["{value}"]
    assert config.safety.min_age_delta >= timedelta(hours=24)
    assert config.safety.max_plan_age_delta == timedelta(hours=24)
    assert 0 < config.safety.max_orphan_ratio <= 1
    assert config.safety.protect == []
    # A relative plans_dir lives beside the config file, not in the working directory.
    assert config.plans_path == tmp_path / "sub" / "plans"


@pytest.mark.parametrize("text,expected", [("0s", 0), ("90m", 5400), ("24h", 86400), ("7d", 604800)])
def test_config_durations_accept_integer_and_unit(tmp_path: Path, text: str, expected: int) -> None:
    config = load_config(write_toml(tmp_path / "c.toml", _doc(safety={"min_age": text, "max_plan_age": text})))
    assert config.safety.min_age_delta.total_seconds() == expected
    assert config.safety.max_plan_age_delta.total_seconds() == expected


@pytest.mark.parametrize("ratio", [0, 0.0, 0.25, 1, 1.0])
def test_config_ratio_bounds_are_inclusive(tmp_path: Path, ratio: float) -> None:
    config = load_config(write_toml(tmp_path / "c.toml", _doc(safety={"max_orphan_ratio": ratio})))
    assert config.safety.max_orphan_ratio == ratio


def test_config_errors_raise_config_error_in_the_python_api(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "c.toml", _doc(prefix=""))
    with pytest.raises(ConfigError, match=r"s3\.prefix"):
        load_config(path)


def test_config_toml_writer_round_trips_unusual_strings(tmp_path: Path) -> None:
    """Guards the tests' own TOML writer, which later tests rely on for unusual keys."""
    tricky = 'a "quoted"\ttab \\ back é e\u0301 😀 \x01'
    path = tmp_path / "c.toml"
    path.write_text(to_toml(_doc(references=_ref(keys=[tricky + "{value}"]))), encoding="utf-8")
    assert load_config(path).references[0].keys == [tricky + "{value}"]


def test_config_nested_too_deeply_is_one_line_error(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    path = tmp_path / "bmxgc.toml"
    path.write_text(to_toml(_doc()) + "deep = " + "[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    assert_one_line_error(cli("-c", path, "plan"), 1, str(path), "nested too deeply")


@pytest.mark.parametrize("days", ["36500d", "0s"])
def test_config_long_durations_up_to_a_century_are_accepted(tmp_path: Path, days: str) -> None:
    config = load_config(write_toml(tmp_path / "c.toml", _doc(safety={"min_age": days, "max_plan_age": days})))
    assert config.safety.min_age_delta == config.safety.max_plan_age_delta
