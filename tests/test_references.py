"""References against a real PostgreSQL and SQLite: read-only, streamed, NULLs counted, no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bmxgc.config import ReferenceSource
from bmxgc.errors import BmxgcError, ReferenceQueryError, ServiceError
from bmxgc.model import References
from bmxgc.references import read_references, redact_url
from servers import Database, PostgresServer, free_port


def keys_of(references: References) -> set[str]:
    """The referenced keys as strings (the second, streamed read), checked
    against the digests the first read kept: each is in, and as many."""
    keys = {key for _, key in references.every_key()}
    assert all(key in references.keys for key in keys)
    assert len(references.keys) == len(keys)
    return keys


def source(query: str, keys: list[str] | None = None, name: str = "src") -> ReferenceSource:
    return ReferenceSource(name=name, query=query, keys=keys or ["{value}"])


def test_references_keys_from_text_column(db: Database) -> None:
    table = db.table(["515/image_00.webp", "515/image_01.webp", "7/cover.png"])
    result = read_references(db.url, [source(f"SELECT s3_key FROM {table}", ["books/{value}"])])
    assert keys_of(result) == {"books/515/image_00.webp", "books/515/image_01.webp", "books/7/cover.png"}
    assert result.sources[0].rows == 3


def test_references_each_value_expands_to_every_template(db: Database) -> None:
    table = db.table(["1/a.webp"])
    templates = ["books/{value}", "thumbs/{value}.jpg", "{value}"]
    result = read_references(db.url, [source(f"SELECT s3_key FROM {table}", templates)])
    assert keys_of(result) == {"books/1/a.webp", "thumbs/1/a.webp.jpg", "1/a.webp"}


def test_references_union_of_several_sources(db: Database) -> None:
    books = db.table(["1/a", "2/b"])
    listings = db.table(["listings/9", "books/1/a"])
    result = read_references(
        db.url,
        [source(f"SELECT s3_key FROM {books}", ["books/{value}"], "books"), source(f"SELECT s3_key FROM {listings}", name="listings")],
    )
    assert keys_of(result) == {"books/1/a", "books/2/b", "listings/9"}
    assert [s.name for s in result.sources] == ["books", "listings"]


def test_references_null_and_empty_values_are_skipped_and_counted(db: Database) -> None:
    table = db.table(["1/a", None, "", None, "2/b", ""])
    references = read_references(db.url, [source(f"SELECT s3_key FROM {table}", ["books/{value}"])])
    (result,) = references.sources
    assert keys_of(references) == {"books/1/a", "books/2/b"}
    assert (result.rows, result.skipped_null, result.skipped_empty) == (6, 2, 2)
    assert "books/" not in references.keys  # an empty value keeps nothing alive, not the prefix itself


def test_references_unusual_values_come_through_intact(db: Database) -> None:
    values = ["a b.webp", "a+b", "a%20b", "caf\u00e9", "cafe\u0301", "\U0001f600", "tab\there", "{value}", "日本"]
    table = db.table(values)
    result = read_references(db.url, [source(f"SELECT s3_key FROM {table}", ["books/{value}"])])
    assert keys_of(result) == {f"books/{v}" for v in values}


def test_references_many_rows_are_all_read(db: Database) -> None:
    table = db.table(f"{i}/image.webp" for i in range(12_000))
    references = read_references(db.url, [source(f"SELECT s3_key FROM {table}")])
    assert references.sources[0].rows == 12_000 and len(references.keys) == 12_000


def test_references_empty_table_gives_no_keys(db: Database) -> None:
    table = db.table([])
    result = read_references(db.url, [source(f"SELECT s3_key FROM {table}")])
    assert keys_of(result) == set() and len(result.keys) == 0 and result.sources[0].rows == 0


def test_references_query_with_two_columns_is_refused(db: Database) -> None:
    table = db.table(["a"])
    with pytest.raises(ReferenceQueryError, match=r"references 'src': the query returns 2 columns"):
        read_references(db.url, [source(f"SELECT id, s3_key FROM {table}")])


def test_references_non_text_values_are_refused(db: Database) -> None:
    table = db.table(["a", "b"])
    with pytest.raises(ReferenceQueryError, match=r"references 'src'.*must return text"):
        read_references(db.url, [source(f"SELECT id FROM {table}")])


def test_references_failing_query_names_the_source(db: Database) -> None:
    with pytest.raises(ReferenceQueryError, match=r"references 'book_images': the query failed") as excinfo:
        read_references(db.url, [source("SELECT s3_key FROM no_such_table", name="book_images")])
    assert "\n" not in str(excinfo.value)


def test_references_write_is_refused_and_table_unchanged(db: Database) -> None:
    table = db.table(["1/a"])
    query = f"INSERT INTO {table} (id, s3_key) VALUES (99, 'sneaky') RETURNING s3_key"
    with pytest.raises(ReferenceQueryError):
        read_references(db.url, [source(query)])
    assert db.rows(table) == [(1, "1/a")]


def test_references_update_returning_is_refused_and_table_unchanged(db: Database) -> None:
    table = db.table(["1/a", "2/b"])
    with pytest.raises(ReferenceQueryError):
        read_references(db.url, [source(f"UPDATE {table} SET s3_key = 'changed' RETURNING s3_key")])
    assert db.rows(table) == [(1, "1/a"), (2, "2/b")]


def test_references_postgresql_select_of_a_writing_function_is_refused(pg: Database) -> None:
    """The session itself is read-only: a SELECT that writes through a function fails."""
    table = pg.table(["1/a"])
    pg.execute(
        f"""CREATE FUNCTION {table}_sneaky() RETURNS SETOF text LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO {table} (id, s3_key) VALUES (99, 'written');
          RETURN QUERY SELECT s3_key FROM {table};
        END $$"""
    )
    with pytest.raises(ReferenceQueryError, match="read-only transaction"):
        read_references(pg.url, [source(f"SELECT {table}_sneaky()")])
    assert pg.rows(table) == [(1, "1/a")]


def test_references_postgresql_nextval_is_refused(pg: Database) -> None:
    table = pg.table(["1/a"])
    pg.execute(f"CREATE SEQUENCE {table}_seq")
    with pytest.raises(ReferenceQueryError, match="read-only transaction"):
        read_references(pg.url, [source(f"SELECT nextval('{table}_seq')::text")])
    assert pg.execute(f"SELECT last_value, is_called FROM {table}_seq") == [(1, False)]


def test_references_sqlite_file_is_not_modified(sqlite_db: Database, sqlite_path: Path) -> None:
    table = sqlite_db.table(["1/a"])
    before = sqlite_path.read_bytes()
    with pytest.raises(ReferenceQueryError, match="readonly|not authorized"):
        read_references(sqlite_db.url, [source(f"DELETE FROM {table} RETURNING s3_key")])
    read_references(sqlite_db.url, [source(f"SELECT s3_key FROM {table}")])
    assert sqlite_path.read_bytes() == before
    assert sorted(p.name for p in sqlite_path.parent.iterdir()) == [sqlite_path.name]  # no journal left


def test_references_sqlite_missing_file_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(BmxgcError) as excinfo:
        read_references(f"sqlite:///{missing}", [source("SELECT 'x'")])
    assert excinfo.value.exit_code == 1
    assert not missing.exists()


def test_references_sqlite_memory_database_is_refused() -> None:
    with pytest.raises(BmxgcError, match="database.url"):
        read_references("sqlite://", [source("SELECT 'x'")])


def test_references_postgresql_wrong_password_hides_both_passwords(postgres: PostgresServer) -> None:
    wrong = "wrong-PASSWORD-guess-123"
    with pytest.raises(ServiceError) as excinfo:
        read_references(postgres.url_with_password(wrong), [source("SELECT 'x'")])
    message = str(excinfo.value)
    assert "password authentication failed" in message
    assert "\n" not in message
    for secret in [wrong, *postgres.secrets()]:
        assert secret not in message


def test_references_postgresql_unreachable_is_service_error(postgres: PostgresServer) -> None:
    url = postgres.url.replace(f":{postgres.port}/", f":{free_port()}/")
    with pytest.raises(ServiceError) as excinfo:
        read_references(url, [source("SELECT 'x'")])
    message = str(excinfo.value)
    assert "127.0.0.1" in message and "\n" not in message
    assert all(secret not in message for secret in postgres.secrets())


def test_references_postgresql_failing_query_hides_password(pg: Database) -> None:
    with pytest.raises(ReferenceQueryError) as excinfo:
        read_references(pg.url, [source("SELECT s3_key FROM nowhere_at_all")])
    assert "nowhere_at_all" in str(excinfo.value)
    assert all(secret not in str(excinfo.value) for secret in pg.secrets)


def test_references_unknown_driver_is_config_error() -> None:
    with pytest.raises(BmxgcError, match="database.url") as excinfo:
        read_references("nosuchdb://u:p@h/d", [source("SELECT 1")])
    assert excinfo.value.exit_code == 1


def test_redact_url_removes_password_and_keeps_the_rest() -> None:
    url = "postgresql+psycopg2://app:s3cr%40t@db.internal:5432/app?sslmode=require&password=also-secret"
    redacted = redact_url(url)
    assert "s3cr" not in redacted and "also-secret" not in redacted
    assert redacted == "postgresql+psycopg2://app@db.internal:5432/app?sslmode=require"


def test_redact_url_leaves_url_without_password_alone() -> None:
    assert redact_url("sqlite:////var/app.db") == "sqlite:////var/app.db"
    assert redact_url("postgresql://app@db/app") == "postgresql://app@db/app"


def test_references_sqlite_file_name_with_hash_is_opened_read_only(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "app #1.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (s3_key TEXT)")
        conn.execute("INSERT INTO t VALUES ('1/a')")
    conn.close()
    before = sorted(p.name for p in tmp_path.iterdir())
    result = read_references(f"sqlite:///{path}", [source("SELECT s3_key FROM t")])
    assert keys_of(result) == {"1/a"}
    with pytest.raises(ReferenceQueryError, match="readonly|not authorized"):
        read_references(f"sqlite:///{path}", [source("INSERT INTO t VALUES ('2/b') RETURNING s3_key")])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no other file opened or created


def test_references_postgresql_url_without_driver_uses_psycopg2(pg: Database) -> None:
    table = pg.table(["1/a"])
    url = pg.url.replace("postgresql+psycopg2://", "postgresql://")
    assert keys_of(read_references(url, [source(f"SELECT s3_key FROM {table}")])) == {"1/a"}
    with pytest.raises(ReferenceQueryError):
        read_references(url, [source(f"DELETE FROM {table} RETURNING s3_key")])
    assert pg.rows(table) == [(1, "1/a")]
