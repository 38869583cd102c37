"""The keys the database keeps alive. The only module that imports SQLAlchemy.

The database is opened read-only: PostgreSQL sessions start with
``default_transaction_read_only`` and run in a READ ONLY transaction; SQLite
files are opened with ``mode=ro``. Rows are streamed, never fetched whole.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
import sqlite3
from itertools import islice
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from sqlalchemy import Enum, String, column, create_engine, event, inspect, select, table, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.sql.expression import ColumnClause

from bmxgc.config import DatabaseSettings, ReferenceSource
from bmxgc.errors import ConfigError, ReferenceQueryError, ServiceError
from bmxgc.model import KeySet, References, SourceResult

STREAM_ROWS = 5000
_NONE = type(None)
# Query-string parameters that carry secrets in libpq and SQLAlchemy URLs.
_SECRET_PARAMS = ("password", "sslpassword", "passfile")

Progress = Callable[[int], None]


def parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(
            "database.url: not a valid SQLAlchemy URL; write e.g. "
            "postgresql+psycopg2://user@host:5432/db or sqlite:///path/to/app.db"
        ) from None


def redact_url(url: str) -> str:
    """The URL with its password (and password-like parameters) removed."""
    # Not ``.set(password=None)``: ``set`` ignores None and would keep the password.
    parsed = parse_url(url)._replace(password=None)
    parsed = parsed.difference_update_query([p for p in parsed.query if p.lower() in _SECRET_PARAMS])
    return parsed.render_as_string(hide_password=False)


def _read_only_engine(url: str, timeouts: DatabaseSettings | None = None) -> Engine:
    timeouts = timeouts or DatabaseSettings()
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    try:
        if backend == "sqlite":
            database = parsed.database or ""
            if not database or database == ":memory:":
                raise ConfigError("database.url: an SQLite URL must name a database file")
            if parsed.query.get("uri") == "true" or database.startswith("file:"):
                raise ConfigError("database.url: write a plain sqlite:///path URL; bmxgc opens it read-only")
            # Percent-encoded: a '#' or '?' in the file name would otherwise end
            # the path and drop mode=ro (SQLite would open, even create, another file).
            ro = URL.create("sqlite", database=f"file:{quote(database, safe='/')}?mode=ro", query={"uri": "true"})
            # SQLite's busy timeout: how long a read waits for a writer's lock.
            engine = create_engine(ro, connect_args={"timeout": timeouts.timeout("lock_timeout").total_seconds()})
            event.listen(engine, "connect", _sqlite_read_only)
            return engine
        if backend == "postgresql":
            if parsed.drivername == "postgresql":
                # psycopg2 is the driver bmxgc ships; SQLAlchemy 2.1 would pick psycopg 3.
                parsed = parsed.set(drivername="postgresql+psycopg2")
            return create_engine(
                parsed,
                connect_args={"options": _postgres_options(timeouts), "connect_timeout": _whole_seconds(timeouts)},
                execution_options={"postgresql_readonly": True},
            )
        raise ConfigError(
            f"database.url: {backend} is not supported; bmxgc opens only PostgreSQL and SQLite, "
            "where it can make the connection read-only"
        )
    except NoSuchModuleError:
        raise ConfigError(f"database.url: no database driver for {parsed.drivername!r}") from None
    except (ArgumentError, ImportError) as exc:
        raise ConfigError(f"database.url: cannot open {redact_url(url)}: {exc}") from None


# --- SQLite: a connection that can only read --------------------------------------
# mode=ro keeps the database file unwritten, but ATTACH (and VACUUM INTO, which
# SQLite authorizes as an ATTACH of its target) still create files, and temp
# tables and PRAGMA settings still change state. The authorizer below lets
# through only what a reading query needs; SQLite asks it while preparing
# each statement, so a denied statement runs no part at all.

_SQLITE_READING = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE})
# PRAGMAs that only describe the schema (SQLAlchemy's inspector uses them);
# their argument is a table or index name, not a new setting.
_SQLITE_SCHEMA_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list", "database_list"}
)
# PRAGMAs that may be read (no argument): SQLAlchemy reads read_uncommitted.
_SQLITE_READABLE_PRAGMAS = frozenset({"read_uncommitted", "query_only", "data_version"})
SQLITE_DENY_HINT = (
    "a reference query may only read (SELECT, WITH ... SELECT); ATTACH, VACUUM, PRAGMA settings, "
    "temp tables and every write are refused: fix the query"
)


def _sqlite_authorizer(action: int, arg1: str | None, arg2: str | None, db: str | None, _trigger: str | None) -> int:
    if action in _SQLITE_READING:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_UPDATE and arg1 == "sqlite_master" and db == "main":
        # How SQLite declares the columns of a virtual table a query reads
        # (json_each, FTS5, pragma_table_info): asked, never written. A real
        # write to the schema still fails: mode=ro and query_only.
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (
        arg1 in _SQLITE_SCHEMA_PRAGMAS or (arg1 in _SQLITE_READABLE_PRAGMAS and arg2 is None)
    ):
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _sqlite_read_only(dbapi_connection: Any, _record: Any) -> None:
    """On every new SQLite connection: query_only on, then the authorizer."""
    dbapi_connection.execute("PRAGMA query_only = ON")
    dbapi_connection.set_authorizer(_sqlite_authorizer)


def _postgres_options(timeouts: DatabaseSettings) -> str:
    ms = {name: int(timeouts.timeout(name).total_seconds() * 1000) for name in ("statement_timeout", "lock_timeout")}
    return (
        "-c default_transaction_read_only=on "
        f"-c statement_timeout={ms['statement_timeout']} -c lock_timeout={ms['lock_timeout']}"
    )


def _whole_seconds(timeouts: DatabaseSettings) -> int:
    # libpq takes whole seconds, and waits at least 2.
    return max(1, int(timeouts.timeout("connect_timeout").total_seconds()))


_TIMEOUTS = {
    "connect_timeout": "no answer while connecting, within {setting}; check database.url and the network, "
    "or raise database.connect_timeout",
    "statement_timeout": "the query ran longer than {setting} and was cancelled; make it cheaper, "
    "or raise database.statement_timeout",
    "lock_timeout": "the query waited longer than {setting} for a lock that another session holds on a "
    "table it reads; try again when that session has finished, or raise database.lock_timeout",
}


def _timed_out(exc: DBAPIError, timeouts: DatabaseSettings) -> str | None:
    """``exc`` as one of the database timeouts, in words, or None if it is none."""
    text = str(exc.orig)
    code = getattr(exc.orig, "pgcode", None)
    if code == "57014" and "statement timeout" in text:
        name = "statement_timeout"
    elif (code == "55P03" and "lock timeout" in text) or "database is locked" in text:
        name = "lock_timeout"
    elif "timeout expired" in text:  # libpq's connect_timeout
        name = "connect_timeout"
    else:
        return None
    return _TIMEOUTS[name].format(setting=f"database.{name} = {getattr(timeouts, name)}")


def check_connection(url: str, timeouts: DatabaseSettings | None = None) -> None:
    """Connect once and let go: a database that cannot be reached fails here,
    before apply takes the S3 lock, rather than while holding it."""
    with _connected(url, timeouts or DatabaseSettings()):
        pass


@contextmanager
def _connected(url: str, timeouts: DatabaseSettings) -> Iterator[Connection]:
    """One read-only connection, its engine disposed afterwards; a database
    error that escapes the caller's handling becomes one ServiceError line."""
    engine = _read_only_engine(url, timeouts)
    try:
        with engine.connect() as conn:
            yield conn
    except DBAPIError as exc:
        raise _connection_error(url, exc, timeouts) from None
    finally:
        engine.dispose()


def _connection_error(url: str, exc: DBAPIError, timeouts: DatabaseSettings) -> ServiceError:
    # The driver's message can quote the URL; show only its first line,
    # with the password removed, so no secret reaches a log.
    timed_out = _timed_out(exc, timeouts)
    if timed_out is not None:
        return ServiceError(f"database {redact_url(url)}: {timed_out}")
    return ServiceError(
        f"database {redact_url(url)}: {_first_line(exc.orig) if exc.orig else type(exc).__name__}; "
        "check database.url, the network and the credentials"
    )


def expand(value: str, templates: Iterable[str]) -> list[str]:
    """The S3 keys one database value keeps alive."""
    return [template.replace("{value}", value) for template in templates]


def read_references(
    url: str,
    sources: Iterable[ReferenceSource],
    progress: Progress | None = None,
    *,
    timeouts: DatabaseSettings | None = None,
    prefix: str | None = None,
) -> References:
    """Run every source's query read-only and collect the keys they keep alive.

    The keys are held as digests (``KeySet``), not strings; ``prefix``, when
    given, is the scanned prefix, counted as keys are read. What needs the
    strings again (near misses) reads them a second time, streamed
    (``References.every_key``), only when it is needed.
    """
    timeouts = timeouts or DatabaseSettings()
    sources = list(sources)
    keys = KeySet()
    results: list[SourceResult] = []
    with _connected(url, timeouts) as conn:
        for index, source in enumerate(sources):
            result = SourceResult(name=source.name)
            for batch in _value_batches(conn, source, result, progress, timeouts):
                keys.add_all(_expanded(batch, source.keys), index, prefix)
            results.append(result)
    return References(
        sources=results, key_set=keys.freeze(), prefix=prefix, reread=lambda: _read_again(url, sources, timeouts)
    )


KeySink = Callable[[str, list[str]], None]


def stream_references(
    url: str,
    sources: Iterable[ReferenceSource],
    sink: KeySink,
    progress: Progress | None = None,
    *,
    timeouts: DatabaseSettings | None = None,
) -> References:
    """Like ``read_references``, but the keys go to ``sink(source name, keys)``
    in batches of at most ``STREAM_ROWS`` keys and are not kept: the result
    holds each source's counts, with no keys (``plan --inventory``)."""
    timeouts = timeouts or DatabaseSettings()
    results: list[SourceResult] = []
    with _connected(url, timeouts) as conn:
        for source in sources:
            result = SourceResult(name=source.name)
            for batch in _value_batches(conn, source, result, progress, timeouts):
                keys = _expanded(batch, source.keys)
                for at in range(0, len(keys), STREAM_ROWS):
                    sink(source.name, keys[at : at + STREAM_ROWS])
            results.append(result)
    return References(sources=results)


def _expanded(values: list[str], templates: Sequence[str]) -> list[str]:
    """Each value through each template (``expand``): the keys they keep alive."""
    if len(templates) == 1:
        head, _, tail = templates[0].partition("{value}")
        if "{value}" not in tail:
            return [head + value + tail for value in values]
    return [key for value in values for key in expand(value, templates)]


def _read_again(url: str, sources: Sequence[ReferenceSource], timeouts: DatabaseSettings) -> Iterator[tuple[int, str]]:
    """Every (source index, key), the queries run again and streamed."""
    with _connected(url, timeouts) as conn:
        for index, source in enumerate(sources):
            for batch in _value_batches(conn, source, SourceResult(name=source.name), None, timeouts):
                for key in _expanded(batch, source.keys):
                    yield index, key


def _value_batches(
    conn: Connection, source: ReferenceSource, result: SourceResult, progress: Progress | None, timeouts: DatabaseSettings
) -> Iterator[list[str]]:
    """The source's values, streamed in lists of up to ``STREAM_ROWS``; NULL
    and empty ones counted in ``result``, not given (a list checked and counted at a time)."""
    try:
        with conn.begin():
            rows = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS).execute(
                text(source.query)
            )
            if len(rows.keys()) != 1:
                raise ReferenceQueryError(
                    f"references '{source.name}': the query returns {len(rows.keys())} columns; "
                    "it must return exactly one text column"
                )
            while batch := [value for (value,) in islice(rows, STREAM_ROWS)]:
                result.rows += len(batch)
                if any(kind is not _NONE and not issubclass(kind, str) for kind in set(map(type, batch))):
                    value = next(v for v in batch if v is not None and not isinstance(v, str))
                    raise ReferenceQueryError(
                        f"references '{source.name}': the query returned a value of type {type(value).__name__} "
                        f"({value!r}); it must return text: cast the column, e.g. col::text"
                    )
                nulls, empties = batch.count(None), batch.count("")
                result.skipped_null += nulls
                result.skipped_empty += empties
                yield [value for value in batch if value] if nulls or empties else batch
                if progress is not None:
                    progress(result.rows)
    except DBAPIError as exc:
        timed_out = _timed_out(exc, timeouts)
        if timed_out is not None:
            raise ServiceError(f"references '{source.name}': {timed_out}") from None
        if exc.connection_invalidated or _is_connection_error(exc):
            raise
        if any(text in str(exc.orig) for text in ("not authorized", "authorization denied")):
            raise ReferenceQueryError(
                f"references '{source.name}': the query was denied (not authorized): {SQLITE_DENY_HINT}"
            ) from None
        raise ReferenceQueryError(
            f"references '{source.name}': the query failed: {_first_line(exc.orig)}; "
            "fix the query (it runs read-only)"
        ) from None
    except SQLAlchemyError as exc:
        raise ReferenceQueryError(f"references '{source.name}': the query failed: {_first_line(exc)}") from None


def _is_connection_error(exc: DBAPIError) -> bool:
    return type(exc.orig).__name__ in ("OperationalError", "InterfaceError") and "connect" in str(exc.orig)


def _first_line(exc: object) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# --- cross-check: a second opinion on the declared sources -------------------------

CROSS_CHECK_MAX_TABLES = 50
CROSS_CHECK_BATCH = 500


@dataclass
class CrossCheck:
    """Orphan keys found in text columns that no source declares."""

    hits: list[tuple[str, str, str]]  # table, column, orphan key
    columns: list[str]  # "table.column" scanned
    tables_not_scanned: list[str]  # over the limit


def _declared(table: str, column: str, sources: Iterable[ReferenceSource]) -> bool:
    """A column counts as a source if a source query names both it and its table."""
    def named(word: str, query: str) -> bool:
        return re.search(rf"(?<![\w]){re.escape(word.lower())}(?![\w])", query.lower()) is not None

    return any(named(table, s.query) and named(column, s.query) for s in sources)


def cross_check(
    url: str,
    orphan_keys: Sequence[str],
    prefix: str,
    sources: Sequence[ReferenceSource],
    *,
    tables: Sequence[str] | None = None,
    max_tables: int = CROSS_CHECK_MAX_TABLES,
    timeouts: DatabaseSettings | None = None,
) -> CrossCheck:
    """Look for each orphan key, and the key without ``prefix``, in every text
    column not already a source (batched ``IN`` lookups, read-only)."""
    wanted: dict[str, str] = {}
    for key in orphan_keys:
        wanted[key] = key
        if key.startswith(prefix) and len(key) > len(prefix):
            wanted.setdefault(key[len(prefix) :], key)
    timeouts = timeouts or DatabaseSettings()
    engine = _read_only_engine(url, timeouts)
    result = CrossCheck(hits=[], columns=[], tables_not_scanned=[])
    try:
        inspector = inspect(engine)
        names = sorted(inspector.get_table_names())
        if tables:
            unknown = sorted(set(tables) - set(names))
            if unknown:
                raise ConfigError(f"--cross-check-table: no table named {', '.join(unknown)} in the database")
            names = sorted(tables)
        elif len(names) > max_tables:
            result.tables_not_scanned = names[max_tables:]
            names = names[:max_tables]
        values = list(wanted)
        with engine.connect() as conn:
            for table_name in names:
                for col in inspector.get_columns(table_name):
                    # An enum is a String to SQLAlchemy, but PostgreSQL rejects any
                    # other value in IN (...): its labels hold no keys anyway.
                    kind = col["type"]
                    if not isinstance(kind, String) or isinstance(kind, Enum):
                        continue
                    if _declared(table_name, col["name"], sources):
                        continue
                    result.columns.append(f"{table_name}.{col['name']}")
                    column_ref: ColumnClause[str] = column(col["name"])
                    found: set[str] = set()
                    for start in range(0, len(values), CROSS_CHECK_BATCH):
                        batch = values[start : start + CROSS_CHECK_BATCH]
                        query = (
                            select(column_ref).select_from(table(table_name)).where(column_ref.in_(batch)).distinct()
                        )
                        with conn.begin():
                            found.update(str(v) for (v,) in conn.execute(query))
                    for value in sorted(found):
                        result.hits.append((table_name, col["name"], wanted[value]))
    except DBAPIError as exc:
        timed_out = _timed_out(exc, timeouts)
        raise ServiceError(
            f"database {redact_url(url)}: cross-check failed: {timed_out or _first_line(exc.orig)}"
        ) from None
    finally:
        engine.dispose()
    return result
