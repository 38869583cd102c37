"""The TOML config: found, parsed, validated, and turned into one-line errors."""

from __future__ import annotations

import os
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bmxgc.durations import Duration, parse_duration
from bmxgc.errors import ConfigError
from bmxgc.naming import LOCK_FOLDER
from bmxgc.validation import describe_validation_error

CONFIG_ENV = "BMXGC_CONFIG"
DATABASE_URL_ENV = "BMXGC_DATABASE_URL"
DEFAULT_CONFIG = "bmxgc.toml"


# Timeouts: at least a second (0 would mean "never" to some drivers, "at once"
# to others), at most a day (PostgreSQL's limit is under 25 days in ms).
TIMEOUT_MIN = timedelta(seconds=1)
TIMEOUT_MAX = timedelta(days=1)


def _timeout(text: str) -> str:
    delta = parse_duration(text)
    if delta < TIMEOUT_MIN:
        raise ValueError(f"{text!r}: a timeout is at least 1s")
    if delta > TIMEOUT_MAX:
        raise ValueError(f"{text!r}: a timeout is at most 1d")
    return text


Timeout = Annotated[str, AfterValidator(_timeout)]


class _Strict(BaseModel):
    # No coercion (true is not a ratio, "10" is not a count; an int is a
    # valid float) and no NaN or infinity.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class S3Settings(_Strict):
    bucket: str = Field(min_length=1)
    # Before ``prefix``: its validator reads this (pydantic validates in field order).
    prefix_is_folder: bool = True
    prefix: str
    endpoint_url: str | None = None
    region: str | None = None
    # One attempt may take connect_timeout + read_timeout; botocore retries
    # (standard mode) only while another attempt still fits in call_timeout.
    connect_timeout: Timeout = "10s"
    read_timeout: Timeout = "60s"
    call_timeout: Timeout = "5m"
    # Connections that list one prefix at once (split into key ranges); 1: one connection.
    list_concurrency: int = Field(default=8, ge=1, le=64)
    # DeleteObjects requests (1,000 keys each) in flight at once: apply, undo, recover.
    delete_concurrency: int = Field(default=4, ge=1, le=16)

    @field_validator("prefix")
    @classmethod
    def _prefix_not_empty(cls, prefix: str, info: ValidationInfo) -> str:
        if not prefix.strip("/"):
            raise ValueError(
                "must name one prefix, e.g. \"books/\"; an empty prefix would scan the whole bucket"
            )
        if prefix.startswith(LOCK_FOLDER) or LOCK_FOLDER.startswith(prefix):
            raise ValueError(f"covers bmxgc's own lock folder {LOCK_FOLDER}; choose another prefix")
        if not prefix.endswith("/") and info.data.get("prefix_is_folder", True):
            raise ValueError(
                f"{prefix!r} does not end with '/', so it would also cover {prefix}-old/... and every "
                f"other key that starts with {prefix!r}; write \"{prefix}/\", or set s3.prefix_is_folder = false "
                "if it is meant to cover every key that starts with it"
            )
        return prefix


    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"{redact_endpoint(url)!r} is not a URL; write e.g. \"http://127.0.0.1:9000\"")
        return url

    @field_validator("call_timeout")
    @classmethod
    def _call_fits_one_attempt(cls, call: str, info: ValidationInfo) -> str:
        connect, read = info.data.get("connect_timeout"), info.data.get("read_timeout")
        if connect is None or read is None:
            return call  # reported on its own key
        attempt = parse_duration(connect) + parse_duration(read)
        if parse_duration(call) < attempt:
            raise ValueError(
                f"{call!r} is shorter than connect_timeout + read_timeout ({int(attempt.total_seconds())}s), "
                "the time one attempt may take; raise call_timeout or lower the others"
            )
        return call

    def timeout_seconds(self) -> tuple[float, float, float]:
        """``(connect, read, call)`` timeouts in seconds."""
        return (
            parse_duration(self.connect_timeout).total_seconds(),
            parse_duration(self.read_timeout).total_seconds(),
            parse_duration(self.call_timeout).total_seconds(),
        )


def redact_endpoint(url: str) -> str:
    """``http://user:pass@host/`` -> ``http://user@host/``: an endpoint fit to print."""
    return redact_urls(url)


_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s\"'<>?#]*)@")


def redact_urls(text: str) -> str:
    """``text`` with the password removed from every URL in it (the user stays)."""
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['userinfo'].split(':', 1)[0]}@", text)


class DatabaseSettings(_Strict):
    url: str | None = None
    # PostgreSQL: libpq's connect_timeout, and the session's statement_timeout
    # and lock_timeout. SQLite: lock_timeout is its busy timeout.
    connect_timeout: Timeout = "10s"
    statement_timeout: Timeout = "10m"
    lock_timeout: Timeout = "30s"

    def timeout(self, name: str) -> timedelta:
        """``timeout("lock_timeout")`` as a timedelta."""
        return parse_duration(str(getattr(self, name)))


class ReferenceSource(_Strict):
    name: str = Field(min_length=1)
    query: str = Field(min_length=1)
    keys: list[str] = Field(default_factory=lambda: ["{value}"], min_length=1)

    @field_validator("keys")
    @classmethod
    def _templates_use_value(cls, keys: list[str]) -> list[str]:
        for template in keys:
            if "{value}" not in template:
                raise ValueError(f"template {template!r} has no {{value}}; write e.g. \"books/{{value}}\"")
            # Keys are built by replacing {value}; any other brace would stay literal.
            if set("{}") & set(template.replace("{value}", "")):
                raise ValueError(f"template {template!r}: only {{value}} may appear in braces")
        return keys


class SafetySettings(_Strict):
    max_orphan_ratio: float = Field(default=0.5, ge=0.0, le=1.0)
    max_deletes: int = Field(default=10_000, ge=0)
    # 24h: an upload whose database row is written a little later (a retried
    # transaction, a slow worker) must never look like an orphan.
    min_age: Duration = "24h"
    max_plan_age: Duration = "24h"
    protect: list[str] = Field(default_factory=list)
    # Near-miss references (a key that would match an orphan once trimmed,
    # lower-cased, ...) make apply refuse unless this is true.
    ignore_near_misses: bool = False

    @property
    def min_age_delta(self) -> timedelta:
        return parse_duration(self.min_age)

    @property
    def max_plan_age_delta(self) -> timedelta:
        return parse_duration(self.max_plan_age)


_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)? ?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")


def _memory(text: str) -> str:
    if _MEMORY.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not an amount of memory; write e.g. \"1GiB\" or \"512MB\"")
    return text


def inventory_url(url: str) -> str:
    if not url.startswith("s3://") or not url.removeprefix("s3://").partition("/")[0]:
        raise ValueError(
            f"{url!r} is not an s3:// URL; write s3://BUCKET/PATH/manifest.json, or the inventory "
            "configuration's folder s3://BUCKET/PREFIX/SOURCE-BUCKET/CONFIG-ID/"
        )
    return url


InventoryUrl = Annotated[str, AfterValidator(inventory_url)]


class InventorySettings(_Strict):
    """``plan --inventory``: plan from an S3 Inventory report instead of listing."""

    # s3://.../manifest.json, or the inventory configuration's folder (its newest complete manifest).
    manifest: InventoryUrl | None = None
    # DuckDB's memory limit for the join; past it, DuckDB spills to temp_directory.
    memory_limit: Annotated[str, AfterValidator(_memory)] = "1GiB"
    # Where DuckDB spills; default: a temporary folder of bmxgc's, removed afterwards.
    temp_directory: str | None = None
    # DuckDB's threads; default: one per core.
    threads: int | None = Field(default=None, ge=1, le=256)


class Config(_Strict):
    plans_dir: str = "plans"
    s3: S3Settings
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    references: list[ReferenceSource] = Field(min_length=1)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    inventory: InventorySettings = Field(default_factory=InventorySettings)
    # Where the file was read from; relative plans_dir is resolved against it.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("references")
    @classmethod
    def _unique_names(cls, refs: list[ReferenceSource]) -> list[ReferenceSource]:
        names = [r.name for r in refs]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"name {name!r} is used twice; give each source its own name")
        return refs

    @model_validator(mode="after")
    def _plans_dir_outside_prefix(self) -> Config:
        if self.plans_dir.startswith("s3://"):
            bucket, _, key = self.plans_dir.removeprefix("s3://").partition("/")
            if not bucket:
                raise ValueError("plans_dir: an s3:// URL must name a bucket: s3://bucket/prefix/")
            # Plans go under key + "/" (see store.S3Store): compare that folder.
            folder = key if not key or key.endswith("/") else key + "/"
            if bucket == self.s3.bucket and folder.startswith(self.s3.prefix):
                raise ValueError(
                    f"plans_dir: {self.plans_dir} is inside the scanned prefix {self.s3.prefix}; "
                    "its plans would be orphans: choose another prefix"
                )
        return self

    @property
    def plans_path(self) -> Path:
        path = Path(self.plans_dir)
        return path if path.is_absolute() else self.base_dir / path

    def database_url(self) -> str:
        """The URL to connect with: env ``BMXGC_DATABASE_URL`` wins over the file."""
        url = os.environ.get(DATABASE_URL_ENV) or self.database.url
        if not url:
            raise ConfigError(
                f"database.url: not set; set it in the config or in env {DATABASE_URL_ENV}"
            )
        return url


def find_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """``--config``, else env ``BMXGC_CONFIG``, else ``./bmxgc.toml``."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_ENV)
    return Path(from_env) if from_env else Path(DEFAULT_CONFIG)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a config file; every problem is a one-line ConfigError."""
    config_path = find_config_path(path)
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{config_path}: config file not found; pass --config PATH, set {CONFIG_ENV}, "
            f"or create ./{DEFAULT_CONFIG}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_path}: cannot read the config file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{config_path}: not valid TOML: arrays or tables nested too deeply") from None
    return config_from_dict(raw, source=str(config_path), base_dir=config_path.parent)


def config_from_dict(raw: dict[str, Any], *, source: str = "config", base_dir: Path = Path(".")) -> Config:
    """Validate an already parsed config (the Python API's entry point)."""
    if "base_dir" in raw:
        raise ConfigError(f"{source}: base_dir: unknown key; remove it")
    try:
        return Config.model_validate({**raw, "base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc)}") from None
