"""Where plans, receipts and undo records live: a local folder or an S3 prefix.

A scheduled function has no lasting disk, so ``plans_dir`` may be an
``s3://bucket/prefix/`` URL. Both stores keep the same promises: ``create``
never overwrites (a conditional put in S3, a hard link locally), and
``replace`` is atomic and durable when it returns.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from bmxgc import s3
from bmxgc.config import Config
from bmxgc.errors import AlreadyExists, ConfigError, InputNotFound, PlanFileError, ServiceError
from bmxgc.model import VersionEntry


class Store(ABC):
    @abstractmethod
    def create(self, name: str, text: str | Iterable[str], *, read_only: bool = False) -> str:
        """Write a new document (its text, or its text in pieces: a large plan is
        written without being held whole); refuse if ``name`` exists. Returns its location."""

    @abstractmethod
    def replace(self, name: str, text: str) -> str:
        """Write or overwrite a document atomically. Returns its location."""

    @abstractmethod
    def read(self, name: str) -> str | None:
        """A document's text, or None if there is none."""

    @abstractmethod
    def names(self) -> list[str]:
        """Every document's name, sorted."""

    def read_head(self, name: str, size: int) -> tuple[bytes, bool] | None:
        """The first ``size`` bytes of a document and whether that is all of it,
        or None if there is none: enough to read a receipt's first fields."""
        text = self.read(name)
        if text is None:
            return None
        data = text.encode("utf-8")
        return data[:size], len(data) <= size

    @abstractmethod
    def location(self, name: str) -> str:
        """Where ``name`` is, as the operator would type it."""

    def exists(self, name: str) -> bool:
        return self.read(name) is not None

    # A receipt's journal: lines appended durably, read back whole after a crash.
    rewrites_in_place = False

    @abstractmethod
    def append_line(self, name: str, line: str) -> None:
        """Append one line to journal ``name`` durably (fsynced, or one PUT)."""

    @abstractmethod
    def read_journal(self, name: str) -> str | None:
        """Journal ``name``'s lines, or None if there is none."""

    @abstractmethod
    def remove_journal(self, name: str) -> None:
        """Drop a journal whose receipt now holds all of it."""

    def rewrite_from(self, name: str, offset: int, data: bytes) -> None:
        """Replace a document's bytes from ``offset`` on (stores with ``rewrites_in_place``)."""
        raise NotImplementedError


def _exists_error(location: str) -> AlreadyExists:
    return AlreadyExists(f"{location}: already exists; plans and receipts are never overwritten")


class LocalStore(Store):
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def location(self, name: str) -> str:
        return str(self.folder / name)

    def create(self, name: str, text: str | Iterable[str], *, read_only: bool = False) -> str:
        # Written to a temporary file, then linked into place: a crash never
        # leaves half a file, and link() refuses an existing name (no race).
        path = self.folder / name
        if path.exists():
            raise _exists_error(str(path))
        tmp = self._durable_temp(text)
        try:
            if read_only:
                os.chmod(tmp, 0o444)
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise _exists_error(str(path)) from None
            except OSError as exc:
                raise self._write_error(exc) from None
        finally:
            os.unlink(tmp)
        self._sync_folder()
        return str(path)

    def replace(self, name: str, text: str) -> str:
        path = self.folder / name
        tmp = self._durable_temp(text)
        try:
            os.replace(tmp, path)
        except BaseException as exc:
            os.unlink(tmp)
            if isinstance(exc, OSError):
                raise self._write_error(exc) from None
            raise
        self._sync_folder()
        return str(path)

    def read(self, name: str) -> str | None:
        path = self.folder / name
        try:
            return path.read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise PlanFileError(f"{path}: cannot read it: {exc}") from None

    def read_head(self, name: str, size: int) -> tuple[bytes, bool] | None:
        path = self.folder / name
        try:
            with path.open("rb") as handle:
                data = handle.read(size + 1)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            raise PlanFileError(f"{path}: cannot read it: {exc}") from None
        return data[:size], len(data) <= size

    rewrites_in_place = True

    def append_line(self, name: str, line: str) -> None:
        path = self.folder / name
        data = line.encode("utf-8")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self._write_error(exc) from None
        try:
            size = os.fstat(fd).st_size
            try:
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            except OSError as exc:
                os.ftruncate(fd, size)  # no half line left behind
                raise self._write_error(exc) from None
        finally:
            os.close(fd)
        if size == 0:
            self._sync_folder()

    def read_journal(self, name: str) -> str | None:
        return self.read(name)

    def remove_journal(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)
        self._sync_folder()

    def rewrite_from(self, name: str, offset: int, data: bytes) -> None:
        # Not fsynced: the journal is what is durable; this keeps the file readable.
        try:
            with (self.folder / name).open("r+b") as handle:
                handle.seek(offset)
                handle.write(data)
                handle.truncate()
        except OSError as exc:
            raise self._write_error(exc) from None

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name for p in self.folder.iterdir() if p.is_file() and not p.name.startswith("."))

    def _durable_temp(self, text: str | Iterable[str]) -> str:
        """A fsynced temporary file holding ``text``. A write that fails (disk
        full, quota, file size limit) leaves nothing behind and says why."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".bmxgc-", suffix=".tmp")
        except OSError as exc:
            raise self._write_error(exc) from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                if isinstance(text, str):
                    handle.write(text)
                else:
                    handle.writelines(text)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException as exc:
            os.unlink(tmp)
            if isinstance(exc, OSError):
                raise self._write_error(exc) from None
            raise
        return tmp

    def _write_error(self, exc: OSError) -> ConfigError:
        return ConfigError(f"plans_dir: cannot write to {self.folder}: {exc.strerror or exc}")

    def _sync_folder(self) -> None:
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class S3Store(Store):
    def __init__(self, client: s3.S3Client, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self._lines: dict[str, list[tuple[str, str]]] = {}  # journal -> (key, version id) written

    def location(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"

    def create(self, name: str, text: str | Iterable[str], *, read_only: bool = False) -> str:
        """A conditional PUT (``If-None-Match: *``), then a look at the key's
        versions: a server that ignores the condition (Ceph RGW in a versioned
        bucket) has written over a current version. Our version is then removed
        by its id, which makes the earlier file current again, and create fails."""
        key = self.prefix + name
        if s3.get_object_head(self.client, self.bucket, key, 1) is not None:
            raise _exists_error(self.location(name))  # the common case, without writing anything
        body = (text if isinstance(text, str) else "".join(text)).encode("utf-8")
        written = s3.put_version(self.client, self.bucket, key, body, if_none_match=True)
        if written is None:
            raise _exists_error(self.location(name))
        ours = written[0]
        if ours == "null":  # no versioning: the condition is all there is (honoured without versioning)
            return self.location(name)
        history = s3.key_versions(self.client, self.bucket, key)
        if not _replaced_a_current_version(history, ours):
            return self.location(name)
        try:
            s3.delete_version(self.client, self.bucket, key, ours)
        except ServiceError as exc:
            raise ServiceError(
                f"{self.location(name)}: already existed, and the server wrote over it anyway (it ignores "
                f"If-None-Match), and removing the new version {ours} failed ({exc}); the earlier file is "
                f"still there as a noncurrent version: remove version {ours} of that key to make it current again"
            ) from None
        raise AlreadyExists(
            f"{self.location(name)}: already exists; plans and receipts are never overwritten (the server "
            "ignored If-None-Match, so bmxgc removed the version it had just written and the earlier file is "
            "current again); choose another name"
        )

    def replace(self, name: str, text: str) -> str:
        s3.put_text(self.client, self.bucket, self.prefix + name, text)
        return self.location(name)

    def read(self, name: str) -> str | None:
        found = s3.get_object_text(self.client, self.bucket, self.prefix + name)
        return found[0] if found else None

    def read_head(self, name: str, size: int) -> tuple[bytes, bool] | None:
        return s3.get_object_head(self.client, self.bucket, self.prefix + name, size)

    # S3 has no append: each journal line is its own small object, NAME/00000001,
    # NAME/00000002, ...: one PUT of the line's own size, so the work stays linear.
    def append_line(self, name: str, line: str) -> None:
        written = self._lines.setdefault(name, [])
        key = f"{self.prefix}{name}/{len(written) + 1:08d}"
        version = s3.put_version(self.client, self.bucket, key, line.encode("utf-8"))
        written.append((key, version[0] if version else "null"))

    def read_journal(self, name: str) -> str | None:
        folder = f"{self.prefix}{name}/"
        keys = sorted(s3.list_keys(self.client, self.bucket, folder))
        if not keys:
            return None
        return "".join((s3.get_object_text(self.client, self.bucket, key) or ("", ""))[0] for key in keys)

    def remove_journal(self, name: str) -> None:
        """Remove the versions this run wrote, by id: no delete marker, no trace."""
        for key, version_id in self._lines.pop(name, []):
            s3.delete_version(self.client, self.bucket, key, version_id)

    def names(self) -> list[str]:
        return sorted(
            key[len(self.prefix) :]
            for key in s3.list_keys(self.client, self.bucket, self.prefix)
            if "/" not in key[len(self.prefix) :]
        )


def _replaced_a_current_version(history: list[VersionEntry], ours: str) -> bool:
    """Did our PUT go on top of a real version (not a delete marker)? ``history``
    lists versions newest first, then delete markers. A version written by
    another writer between our look and our PUT counts too: both fail, neither
    file is lost. A version in the same second as the newest delete marker
    (whole seconds on some servers) is taken as below it: the look before the
    PUT found no current file."""
    others = [v for v in history if not v.is_delete_marker and v.version_id != ours]
    markers = [m for m in history if m.is_delete_marker]
    if markers:
        newest_marker = max(m.last_modified for m in markers)
        others = [v for v in others if v.last_modified > newest_marker]
    return bool(others)


def create_once(store: Store, name: str, text: str | Callable[[], Iterable[str]], *, read_only: bool = False) -> str:
    """``store.create``, except that the very same document already saved under
    ``name`` (the same plan made twice within one second) is kept and reused.
    ``text`` may be a function giving the text in pieces (called again to compare)."""
    try:
        return store.create(name, text if isinstance(text, str) else text(), read_only=read_only)
    except AlreadyExists:
        if store.read(name) != (text if isinstance(text, str) else "".join(text())):
            raise
        return store.location(name)


def is_s3_url(location: str) -> bool:
    return location.startswith("s3://")


def open_location(location: str, client: s3.S3Client | None) -> tuple[Store, str]:
    """The store holding ``location`` (a path or an s3:// URL) and the name in it."""
    if is_s3_url(location):
        if client is None:
            raise ConfigError(f"{location}: reading from S3 needs a config with [s3] settings")
        try:
            bucket, key = s3.split_url(location)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        folder = str(PurePosixPath(key).parent)
        return S3Store(client, bucket, "" if folder == "." else folder), PurePosixPath(key).name
    path = Path(location)
    return LocalStore(path.parent), path.name


def read_document(location: str, client: s3.S3Client | None = None) -> str:
    store, name = open_location(location, client)
    text = store.read(name)
    if text is None:
        raise InputNotFound(f"{location}: not found; check the path")
    return text


def plans_store(config: Config, client: s3.S3Client | None) -> Store:
    """The store named by ``plans_dir``: a folder (relative to the config file) or s3://."""
    if is_s3_url(config.plans_dir):
        client = s3.client_for(config.s3, client)
        bucket, prefix = s3.split_url(config.plans_dir)
        return S3Store(client, bucket, prefix)
    return LocalStore(config.plans_path)
