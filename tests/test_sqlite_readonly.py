"""SQLite references are read through a connection that cannot write anything
(issue 10, item 7): ``mode=ro`` alone lets ``ATTACH`` and ``VACUUM INTO``
create files. An authorizer allows only reading; a denied statement is a
one-line error naming the source, and no file appears."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from servers import Database
from support import CliResult, assert_one_line_error, config_doc, read_plan, write_toml

Cli = Callable[..., CliResult]


def config_with_query(folder: Path, bucket: Any, db: Database, query: str) -> Path:
    doc = config_doc(
        bucket=bucket.name,
        endpoint=bucket.endpoint,
        database_url=db.url,
        references=[{"name": "book_images", "query": query, "keys": ["books/{value}"]}],
    )
    return write_toml(folder / "bmxgc.toml", doc)


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize(
    "query",
    [
        "VACUUM INTO '{target}'",
        "ATTACH DATABASE '{target}' AS stolen",
        "WITH x AS (SELECT '1/a.webp' AS k) SELECT k FROM x",  # control: must work
    ],
    ids=["vacuum-into", "attach", "control"],
)
def test_config_query_that_would_create_a_file_fails_clearly(
    cli: Cli, bucket: Any, sqlite_db: Database, tmp_path: Path, query: str
) -> None:
    bucket.put("books/1/a.webp")
    target = tmp_path / "out" / "stolen.db"
    target.parent.mkdir()
    config = config_with_query(tmp_path, bucket, sqlite_db, query.format(target=target))
    result = cli("-c", config, "plan")
    if "SELECT" in query:
        assert result.code == 0, result.output
        return
    line = assert_one_line_error(result, 1, "references 'book_images'", "only read")
    assert "Traceback" not in result.output and "not authorized" in line
    assert not target.exists()
    assert files_in(target.parent) == set()
    assert not (tmp_path / "plans").exists()


@pytest.mark.parametrize(
    "query",
    [
        "CREATE TEMP TABLE scratch AS SELECT s3_key FROM {table}",
        "PRAGMA user_version = 7",
        "PRAGMA query_only = 0",
        "INSERT INTO {table} (id, s3_key) VALUES (99, 'x') RETURNING s3_key",
        "DELETE FROM {table} RETURNING s3_key",
        "PRAGMA writable_schema = 1",
    ],
    ids=[
        "temp-table",
        "pragma-write",
        "pragma-query-only-off",
        "insert-returning",
        "delete-returning",
        "writable-schema",
    ],
)
def test_config_query_that_writes_is_denied_and_the_database_is_unchanged(
    cli: Cli, bucket: Any, sqlite_db: Database, tmp_path: Path, query: str
) -> None:
    bucket.put("books/1/a.webp")
    table = sqlite_db.table(["1/a.webp"])
    config = config_with_query(tmp_path, bucket, sqlite_db, query.format(table=table))
    result = cli("-c", config, "plan")
    assert_one_line_error(result, 1, "references 'book_images'", "not authorized")
    assert sqlite_db.rows(table) == [(1, "1/a.webp")]
    assert sqlite_db.execute("PRAGMA user_version") == [(0,)]


def test_config_query_that_writes_the_schema_is_refused_by_sqlite(
    cli: Cli, bucket: Any, sqlite_db: Database, tmp_path: Path
) -> None:
    # The authorizer lets SQLite declare a virtual table's columns (an update of
    # sqlite_master it asks about for json_each or FTS5); a real one still fails.
    bucket.put("books/1/a.webp")
    table = sqlite_db.table(["1/a.webp"])
    schema = sqlite_db.execute("SELECT name, sql FROM sqlite_master ORDER BY name")
    config = config_with_query(tmp_path, bucket, sqlite_db, "UPDATE sqlite_master SET sql = sql RETURNING name")
    result = cli("-c", config, "plan")
    assert_one_line_error(result, 1, "references 'book_images'", "may not be modified")
    assert sqlite_db.execute("SELECT name, sql FROM sqlite_master ORDER BY name") == schema
    assert sqlite_db.rows(table) == [(1, "1/a.webp")]


def test_reading_queries_still_work_cte_recursive_functions_joins(
    cli: Cli, bucket: Any, sqlite_db: Database, tmp_path: Path
) -> None:
    for key in ("books/1/a.webp", "books/2/a.webp", "books/3/a.webp"):
        bucket.put(key)
    table = sqlite_db.table(["1/A.WEBP"])
    query = (
        "WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < 2) "
        f"SELECT lower(s3_key) FROM {table} UNION SELECT CAST(i AS TEXT) || '/a.webp' FROM n "
        f"UNION SELECT t.s3_key FROM {table} AS t JOIN {table} AS u ON t.id = u.id WHERE t.id < 0"
    )
    config = config_with_query(tmp_path, bucket, sqlite_db, query)
    result = cli("-c", config, "plan")
    assert result.code == 0, result.output
    assert [o["key"] for o in read_plan(result.saved_path())["orphans"]] == ["books/3/a.webp"]
