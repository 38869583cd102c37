"""The embedded engine that runs bmxgc/inventory_sql.py: DuckDB. The only module that imports duckdb.

An in-memory database that spills to a temporary folder of bmxgc's (removed
afterwards) past its memory limit (``[inventory] memory_limit``,
``temp_directory``), with the binary collation, so that keys sort in UTF-8
byte order as S3 lists them."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb

from bmxgc import inventory_sql as sql
from bmxgc.errors import InventoryError

FETCH_ROWS = 10_000
INSERT_KEYS = 100_000


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Engine:
    """One DuckDB database for one plan."""

    def __init__(self, folder: Path, *, memory_limit: str, threads: int | None) -> None:
        self.folder = folder
        self.pending: dict[str, list[str]] = {}
        try:
            # In memory, spilling to the folder past memory_limit.
            self.con = duckdb.connect()
            self.con.execute(f"SET memory_limit = {_quoted(memory_limit)}")
            self.con.execute(f"SET temp_directory = {_quoted(str(folder / 'spill'))}")
            if threads is not None:
                self.con.execute(f"SET threads = {int(threads)}")
            self.con.execute("SET default_collation = 'binary'")
            self.con.execute("SET preserve_insertion_order = false")
            self.con.execute("CREATE TABLE referenced (source VARCHAR, key VARCHAR)")
        except duckdb.Error as exc:
            raise _error(exc, "starting DuckDB") from None

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- input ------------------------------------------------------------------

    def add_references(self, source: str, keys: list[str]) -> None:
        """A batch of keys that ``source`` keeps alive (references.stream_references'
        sink); sent to DuckDB ``INSERT_KEYS`` at a time."""
        pending = self.pending.setdefault(source, [])
        pending.extend(keys)
        if len(pending) >= INSERT_KEYS:
            self._insert(source)

    def _insert(self, source: str) -> None:
        keys = self.pending.pop(source, [])
        if not keys:
            return
        try:
            self.con.execute("INSERT INTO referenced SELECT ?, unnest(?::VARCHAR[])", [source, keys])
        except duckdb.Error as exc:
            raise _error(exc, "loading the references") from None

    def load_inventory(self, file_format: str, files: Sequence[Path], columns: Sequence[str], prefix: str) -> None:
        """The report's files as the ``inventory`` view, and its current objects under ``prefix``."""
        for source in list(self.pending):
            self._insert(source)
        listed = "[" + ", ".join(_quoted(str(f)) for f in files) + "]"
        try:
            if file_format == "CSV":
                column_map = "{" + ", ".join(f"{_quoted(c)}: 'VARCHAR'" for c in columns) + "}"
                converted = self.folder / "inventory.parquet"
                select = sql.INVENTORY_CSV.format(files=listed, columns=column_map)
                self.con.execute(sql.CSV_TO_PARQUET.format(select=select, parquet=_quoted(str(converted))))
                self.con.execute(sql.INVENTORY_VIEW.format(select=f"SELECT * FROM read_parquet({_quoted(str(converted))})"))
            else:
                self.con.execute(sql.INVENTORY_VIEW.format(select=sql.INVENTORY_PARQUET.format(files=listed)))
            self.con.execute(sql.CURRENT_OBJECTS.format(prefix=_quoted(prefix)))
        except duckdb.Error as exc:
            raise _error(exc, "reading the inventory's data files") from None

    # --- questions --------------------------------------------------------------

    def one(self, statement: str, params: dict[str, Any]) -> tuple[Any, ...]:
        try:
            row = self.con.execute(statement, params).fetchone()
        except duckdb.Error as exc:
            raise _error(exc, "joining the inventory with the references") from None
        assert row is not None
        return tuple(row)

    def rows(self, statement: str, params: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
        """The statement's rows, fetched ``FETCH_ROWS`` at a time."""
        try:
            cursor = self.con.cursor()
            cursor.execute(statement, params)
            while True:
                batch = cursor.fetchmany(FETCH_ROWS)
                if not batch:
                    break
                yield from (tuple(row) for row in batch)
            cursor.close()
        except duckdb.Error as exc:
            raise _error(exc, "joining the inventory with the references") from None


def _error(exc: Exception, doing: str) -> InventoryError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, duckdb.OutOfMemoryException):
        return InventoryError(
            f"inventory: DuckDB ran out of memory while {doing}: {first}; raise inventory.memory_limit, "
            "or set inventory.temp_directory to a folder with room to spill to"
        )
    return InventoryError(f"inventory: DuckDB failed while {doing}: {json.dumps(first, ensure_ascii=False)[1:-1]}")
