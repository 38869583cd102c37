"""The orphan search over an S3 Inventory report, written once as SQL. Pure (text only).

Two relations go in, whatever engine runs the statements:

- ``inventory``: one row per version or delete marker, with S3 Inventory's
  Parquet column names (``key`` decoded, ``version_id`` 'null' for a null
  version, ``is_latest``, ``is_delete_marker``, ``size``, ``e_tag`` without
  quotes) and ``last_modified_ms``, LastModifiedDate in milliseconds since
  the epoch. ``INVENTORY_CSV`` and ``INVENTORY_PARQUET`` build it from the
  report's files.
- ``referenced (source, key)``: every key the reference sources keep alive.

Parameters: ``$prefix`` (the config's prefix), ``$young_after`` (the
report's creationTimestamp minus min_age, in ms: a newer object is never an
orphan). Keys are compared and sorted as bytes (UTF-8 byte order, S3's
listing order): the engine's collation must be binary (DuckDB:
``SET default_collation = 'binary'``). docs/inventory.md shows the same
statements on Athena and Spark.
"""

from __future__ import annotations

# The report's rows under the prefix that are objects now (not a delete
# marker, not a noncurrent version): a view, read by every statement below
# (each reads only the columns it needs). {prefix} is the prefix as a SQL
# string literal, written by the engine module (a view takes no parameters).
CURRENT_OBJECTS = """
CREATE VIEW current_objects AS
SELECT key, version_id, e_tag, size, last_modified_ms
FROM inventory
WHERE starts_with(key, {prefix}) AND is_latest AND NOT is_delete_marker
"""

# Every row under the prefix (versions and delete markers): stats.versions_listed.
VERSIONS_UNDER_PREFIX = """
SELECT count(*) FROM inventory WHERE starts_with(key, $prefix)
"""

# objects_scanned, bytes_scanned, referenced_found.
SCANNED = """
SELECT count(*) AS objects,
       coalesce(sum(size), 0) AS bytes,
       count(*) FILTER (WHERE key IN (SELECT key FROM referenced)) AS found
FROM current_objects
"""

# referenced_keys (distinct keys all sources keep alive), and those under the prefix.
REFERENCED = """
SELECT count(*) AS referenced_keys,
       count(*) FILTER (WHERE starts_with(key, $prefix)) AS under_prefix
FROM (SELECT DISTINCT key FROM referenced) AS distinct_keys
"""

# The join: the current objects that no source references, sorted by key,
# each with whether it is younger than min_age at the report's time. Those
# not young are the orphans, less the ones a protect pattern keeps (matched
# after the join, in Python: globs are not SQL).
UNREFERENCED = """
SELECT c.key, c.version_id, c.e_tag, c.size, c.last_modified_ms,
       c.last_modified_ms > $young_after AS young
FROM current_objects AS c
WHERE NOT EXISTS (SELECT 1 FROM referenced AS r WHERE r.key = c.key)
ORDER BY c.key
"""

# One source's keys that name no current object under the prefix (dangling,
# or outside the prefix), sorted: the near-miss check runs over them.
UNFOUND_OF_SOURCE = """
SELECT DISTINCT r.key
FROM referenced AS r
WHERE r.source = $source
  AND NOT EXISTS (SELECT 1 FROM current_objects AS c WHERE c.key = r.key)
ORDER BY r.key
"""

# Current objects whose key is one of $keys (a list): protect patterns that
# do not match their own text, when such a key exists.
EXISTING_KEYS = """
SELECT key FROM current_objects WHERE list_contains($keys, key) ORDER BY key
"""

# A prefix that is not a folder: the objects outside its folder, and the first few.
BEYOND_FOLDER_COUNT = """
SELECT count(*) FROM current_objects WHERE NOT starts_with(key, $folder)
"""
BEYOND_FOLDER_SAMPLE = """
SELECT key FROM current_objects WHERE NOT starts_with(key, $folder) ORDER BY key LIMIT $limit
"""

# --- the report's files as the ``inventory`` relation --------------------------------
# {files} is a list literal of local paths, {columns} (CSV) the report's
# fileSchema as read_csv's column map: both written by the engine module.
# A Parquet report is read where it is, by every statement; a CSV report is
# read once and written as one Parquet file ({parquet}), which the
# statements then read column by column.

INVENTORY_PARQUET = """
SELECT key,
       CASE WHEN coalesce(version_id, '') = '' THEN 'null' ELSE version_id END AS version_id,
       coalesce(is_latest, false) AS is_latest,
       coalesce(is_delete_marker, false) AS is_delete_marker,
       coalesce(size, 0) AS size,
       epoch_ms(last_modified_date) AS last_modified_ms,
       trim(coalesce(e_tag, ''), '"') AS e_tag
FROM read_parquet({files})
"""

# CSV (gzip'd, every field quoted, keys URL-encoded with '+' for a space,
# empty Size and ETag for delete markers).
INVENTORY_CSV = """
SELECT url_decode(replace("Key", '+', '%20')) AS key,
       CASE WHEN coalesce("VersionId", '') = '' THEN 'null' ELSE "VersionId" END AS version_id,
       lower("IsLatest") = 'true' AS is_latest,
       lower("IsDeleteMarker") = 'true' AS is_delete_marker,
       coalesce(CAST(nullif("Size", '') AS BIGINT), 0) AS size,
       epoch_ms(CAST("LastModifiedDate" AS TIMESTAMPTZ)) AS last_modified_ms,
       trim(coalesce("ETag", ''), '"') AS e_tag
FROM read_csv({files}, header = false, auto_detect = false, compression = 'gzip',
              quote = '"', escape = '"', columns = {columns})
"""
CSV_TO_PARQUET = """
COPY ({select}) TO {parquet} (FORMAT PARQUET)
"""
INVENTORY_VIEW = """
CREATE VIEW inventory AS {select}
"""
