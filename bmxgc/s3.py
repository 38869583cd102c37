"""Everything bmxgc says to S3. The only module that imports boto3.

Retries are botocore's standard mode (exponential backoff with jitter on
throttling and 5xx), never a loop of our own. botocore has no deadline for
one call with its retries: ``_CallDeadline`` stops them at ``call_timeout``.
Errors never carry the password of an ``endpoint_url`` (``redact_urls``).
"""

from __future__ import annotations

import gc
import xml.etree.ElementTree as ElementTree
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
import botocore.handlers
import botocore.session
from botocore.config import Config as BotoConfig
from botocore.utils import parse_timestamp as _botocore_parse_timestamp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from bmxgc.config import S3Settings, redact_urls
from bmxgc import listing_xml
from bmxgc.errors import ServiceError
from bmxgc.listing_xml import Listing
from bmxgc.listing_xml import local_name as _local
from bmxgc.model import VersionEntry

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client as S3Client
else:
    S3Client = Any

MAX_KEYS_PER_REQUEST = 1000  # S3's limit for both a list page and DeleteObjects
# [s3] list_concurrency's default: connections that list one prefix at once.
LIST_CONCURRENCY = 8
# A prefix is listed on one connection for its first pages; only a listing
# still truncated after them is split (each split costs a request or two).
SEQUENTIAL_PAGES = 25
# A range is split only if, at the density its keys have shown so far, both
# halves would still hold this many pages: a split costs requests too.
MIN_SPLIT_PAGES = 3
RETRY_ATTEMPTS = 8

Progress = Callable[[int], None]


# The defaults of [s3] connect_timeout, read_timeout and call_timeout.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
CALL_TIMEOUT = 300.0


def client_for(settings: S3Settings, client: S3Client | None = None) -> S3Client:
    """``client`` when the caller brought one (the Python API, tests), else the
    client for the config's ``[s3]``: its endpoint, region and timeouts."""
    if client is not None:
        return client
    connect, read, call = settings.timeout_seconds()
    return make_client(
        settings.endpoint_url,
        settings.region,
        connect_timeout=connect,
        read_timeout=read,
        call_timeout=call,
        connections=settings.list_concurrency + settings.delete_concurrency,
    )


def parse_timestamp(value: str) -> datetime:
    """botocore's timestamp parser, without dateutil for the form S3 answers in.

    S3's ``LastModified`` is ISO 8601 in UTC (``2025-01-02T03:04:05.000Z``),
    which ``datetime.fromisoformat`` reads in about a microsecond; dateutil,
    botocore's default, takes about 48 µs: half of a listing's CPU. Anything
    else goes to botocore's own parser, so the result is the same datetime.
    """
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return _botocore_parse_timestamp(value)
    if parsed.tzinfo is None:
        return _botocore_parse_timestamp(value)
    return parsed


def make_client(
    endpoint_url: str | None = None,
    region: str | None = None,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    call_timeout: float = CALL_TIMEOUT,
    connections: int = LIST_CONCURRENCY,
) -> S3Client:
    """An S3 client with standard retries; credentials from AWS's usual chain.

    botocore bounds one attempt (``connect_timeout``, then ``read_timeout``
    between bytes of the answer) and the number of attempts, but not the
    time of a call: up to 9 attempts of 70 s, plus backoff, by default.
    ``call_timeout`` bounds it: botocore's own retry decides whether to try
    again, and bmxgc lets an attempt start only if it can end (connect plus
    read timeout) within ``call_timeout`` of the call's start.
    """
    config = BotoConfig(
        retries={"mode": "standard", "max_attempts": RETRY_ATTEMPTS},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        user_agent_extra="bmxgc",
        max_pool_connections=max(10, connections),
    )
    try:
        core = botocore.session.get_session()
        core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)
        client: S3Client = boto3.session.Session(botocore_session=core).client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
    except (BotoCoreError, ValueError) as exc:
        raise ServiceError(f"cannot create an S3 client: {redact_urls(str(exc))}") from None
    deadline = _CallDeadline(connect_timeout, read_timeout, call_timeout)
    client.meta.events.register("request-created.s3", deadline.before_attempt)
    client.meta.events.register("needs-retry.s3", deadline.after_attempt)
    send_marker_deletes_once(client)
    parse_listings_directly(client)
    return client


class CallTimedOut(BotoCoreError):
    """botocore would try again, but another attempt could not end within call_timeout.

    ``settings`` names what to raise: ``s3.call_timeout``, and the timeout the
    last attempt ran into, if it was one."""

    fmt = "{detail}"


class _CallDeadline:
    """Stops botocore's retries of one call once another attempt would end past
    ``call_timeout``. It never retries anything itself."""

    def __init__(self, connect: float, read: float, call: float) -> None:
        self.connect = connect
        self.read = read
        self.call = call
        self.attempt = connect + read

    def before_attempt(self, request: Any, **_kw: Any) -> None:
        """``request-created``: before each attempt of one call (one context per call)."""
        context = request.context
        now = time.monotonic()
        if "bmxgc_call_started" not in context:  # the first attempt
            context["bmxgc_call_started"] = now
            return
        started = float(context["bmxgc_call_started"])
        if now - started + self.attempt <= self.call:
            return
        attempts = int(context.get("retries", {}).get("attempt", 2)) - 1
        last = context.get("bmxgc_last_failure")
        timeout = _timeout_setting(last)
        raise CallTimedOut(
            detail=(
                f"{'timed out' if timeout else 'failed'}: {_failure_text(last, self)}; "
                f"{attempts} attempt{'s' if attempts > 1 else ''} in {now - started:.0f}s, and another "
                f"could not end within s3.call_timeout = {_seconds(self.call)}"
            ),
            settings=f"{timeout} or s3.call_timeout" if timeout else "s3.call_timeout",
        )

    def after_attempt(
        self, request_dict: Any, caught_exception: Exception | None = None, response: Any = None, **_kw: Any
    ) -> None:
        """``needs-retry``: remember what the attempt ran into (botocore decides on the retry)."""
        if caught_exception is not None:
            request_dict["context"]["bmxgc_last_failure"] = caught_exception
        elif response is not None:
            parsed = response[1]
            status = parsed.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
            code = parsed.get("Error", {}).get("Code", "")
            request_dict["context"]["bmxgc_last_failure"] = f"HTTP {status} {code}".strip()


def _timeout_setting(failure: object) -> str | None:
    if isinstance(failure, ReadTimeoutError):
        return "s3.read_timeout"
    if isinstance(failure, ConnectTimeoutError):
        return "s3.connect_timeout"
    return None


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _failure_text(failure: object, deadline: _CallDeadline | None = None) -> str:
    """What the last attempt ran into, in words, without credentials."""
    if isinstance(failure, ReadTimeoutError):
        within = f" = {_seconds(deadline.read)}" if deadline is not None else ""
        return f"no answer from {_endpoint_of(failure)} within s3.read_timeout{within}"
    if isinstance(failure, ConnectTimeoutError):
        within = f" = {_seconds(deadline.connect)}" if deadline is not None else ""
        return f"could not connect to {_endpoint_of(failure)} within s3.connect_timeout{within}"
    if isinstance(failure, EndpointConnectionError):
        cause = str(failure.kwargs.get("error", ""))
        return f"could not connect to {_endpoint_of(failure)}" + (
            f" ({cause[cause.index('[Errno') :]})" if "[Errno" in cause else ""
        )
    return redact_urls(str(failure))


def _endpoint_of(exc: BotoCoreError) -> str:
    url = str(getattr(exc, "kwargs", {}).get("endpoint_url", "the endpoint"))
    parts = urlsplit(url)
    return redact_urls(f"{parts.scheme}://{parts.netloc}" if parts.scheme else url)


class RequestInDoubt(ServiceError):
    """A request that may or may not have been carried out: no answer came
    (timeout, connection lost) or S3 answered with a server error (5xx)."""


_SEND_ONCE = "bmxgc_send_once"
# Answers by which S3 refuses a request before doing anything: retrying is not blind.
_REFUSED_BEFORE_WORK = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded"})


def _mark_marker_deletes(params: Any, context: Any, **_kwargs: Any) -> None:
    """A DeleteObjects without version ids writes new delete markers: not idempotent."""
    objects = params.get("Delete", {}).get("Objects", [])
    if any("VersionId" not in entry for entry in objects):
        context[_SEND_ONCE] = True


def _no_blind_retry(request_dict: Any, response: Any = None, **_kwargs: Any) -> bool | None:
    """botocore retries a request whose answer was lost or was a server error;
    S3 may have done the work already, and a DeleteObjects done twice stacks two
    delete markers on each key. Such a request is sent once; the caller finds out
    from S3 what happened. A throttling answer (S3 refused before doing anything)
    is left to botocore's retries, backoff included."""
    if not request_dict.get("context", {}).get(_SEND_ONCE):
        return None
    if response is not None:
        code = response[1].get("Error", {}).get("Code") if isinstance(response[1], dict) else None
        if code in _REFUSED_BEFORE_WORK:
            return None
    return False  # first non-None answer of the needs-retry handlers: do not retry


def send_marker_deletes_once(client: S3Client) -> None:
    """Register, once per client, the rule that a marker-writing DeleteObjects is
    never retried blind by botocore (the more specific event runs first)."""
    events = client.meta.events
    events.register(
        "before-parameter-build.s3.DeleteObjects", _mark_marker_deletes, unique_id="bmxgc-mark-marker-deletes"
    )
    # The stubs type handlers as returning None; needs-retry handlers answer (False: no retry).
    no_retry: Any = _no_blind_retry
    events.register("needs-retry.s3.DeleteObjects", no_retry, unique_id="bmxgc-no-blind-retry")


def describe_error(exc: Exception, action: str) -> ServiceError:
    """A one-line ServiceError naming what failed, without credentials."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "Unknown")
        message = err.get("Message", "")
        hint = {
            "NoSuchBucket": "check s3.bucket and s3.endpoint_url",
            "AccessDenied": "check the AWS credentials and their policy (docs/iam/)",
            "InvalidAccessKeyId": "check the AWS credentials in the environment",
            "SignatureDoesNotMatch": "check the AWS credentials in the environment",
        }.get(code, "check the bucket, the endpoint and the credentials")
        return ServiceError(redact_urls(f"S3 {action} failed: {code}: {message}; {hint}"))
    if isinstance(exc, CallTimedOut):
        return ServiceError(
            f"S3 {action} {exc}; check s3.endpoint_url and the network, or raise {exc.kwargs['settings']}"
        )
    setting = _timeout_setting(exc)
    if setting is not None:
        return ServiceError(
            f"S3 {action} timed out: {_failure_text(exc)}, at every attempt; "
            f"check s3.endpoint_url and the network, or raise {setting} or s3.call_timeout"
        )
    if isinstance(exc, BotoCoreError):
        return ServiceError(f"S3 {action} failed: {_failure_text(exc)}; check s3.endpoint_url and the network")
    return ServiceError(redact_urls(f"S3 {action} failed: {exc}"))


def list_versions(
    client: S3Client,
    bucket: str,
    prefix: str,
    progress: Progress | None = None,
    *,
    concurrency: int = LIST_CONCURRENCY,
    page_size: int = MAX_KEYS_PER_REQUEST,
    sequential_pages: int = SEQUENTIAL_PAGES,
    ordered: bool = True,
) -> Iterator[VersionEntry]:
    """Every version and delete marker under ``prefix``, one request per 1,000,
    in S3's order (keys in UTF-8 byte order), whatever ``concurrency`` is.

    Within a page S3 returns versions and markers in two lists; both are
    yielded, versions first. Callers that need one key's history together
    group by key (rows of one key never span more than two adjacent pages).

    The first ``sequential_pages`` pages are listed on one connection. If the
    listing goes on, the rest of the prefix is split into key ranges listed
    over up to ``concurrency`` connections (``_ParallelListing``); the pages
    are still yielded in key order. With ``ordered=False`` (plan, whose
    planner sorts what it keeps) the pages of the split part come as they
    are listed: every page of a range in order, each key's rows within one
    range, but ranges interleaved. Then no connection waits for the one
    the reader is on, and all of them stay busy. botocore's retries back
    off on SlowDown.
    While listing, the cyclic garbage collector leaves what is already built
    alone (``gc.freeze`` after each page, undone at the end): without it, full
    collections rescan every row and reference held so far, over and over.
    """
    seen = 0
    parse_listings_directly(client)  # a client made elsewhere (tests, the API) too
    try:
        try:
            marker: tuple[str, str | None] | None = None
            listed: frozenset[str] = frozenset()
            first_key: str | None = None
            pages = 0
            while True:
                page = _fetch_page(client, bucket, prefix, marker, page_size, listed)
                pages += 1
                if first_key is None and page.rows:
                    first_key = min(row.key for row in page.rows)
                seen += len(page.rows)
                yield from page.rows
                if progress is not None:
                    progress(seen)
                gc.freeze()
                if page.next is None:
                    return
                marker, listed = page.next, page.listed
                if concurrency > 1 and pages >= sequential_pages:
                    break
            listing = _ParallelListing(client, bucket, prefix, marker, concurrency, page_size, ordered, listed)
            listing.density = seen / max(_width(first_key or prefix, marker[0], prefix), 1e-30)
            for rows in listing.pages():
                seen += len(rows)
                yield from rows
                if progress is not None:
                    progress(seen)
                gc.freeze()
        finally:
            gc.unfreeze()
    except (ClientError, BotoCoreError) as exc:
        raise describe_error(exc, f"listing s3://{bucket}/{prefix}") from None


@dataclass(frozen=True)
class _Page:
    rows: list[VersionEntry]
    next: tuple[str, str | None] | None  # (key marker, version id marker) if truncated
    listed: frozenset[str] = frozenset()  # the version ids of the key marker's key listed so far


def _fetch_page(
    client: S3Client,
    bucket: str,
    prefix: str,
    marker: tuple[str, str | None] | None,
    page_size: int,
    listed: frozenset[str] = frozenset(),
) -> _Page:
    """One ListObjectVersions page after ``marker`` (None: the prefix's first).

    The request is botocore's (signing, retries, SlowDown backoff, timeouts,
    ``endpoint_url``); its answer's body is read by ``parse_listing``
    (see ``parse_listings_directly``), not by botocore's XML walk."""
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
    if marker is not None:
        params["KeyMarker"] = marker[0]
        if marker[1] is not None:
            params["VersionIdMarker"] = marker[1]
    _DIRECT.active = True
    try:
        answer: Any = client.list_object_versions(**params)
    finally:
        _DIRECT.active = False
    listing = answer.get(_LISTING_FIELD)
    if not isinstance(listing, Listing):  # botocore parsed it (a body parse_listing did not take)
        listing = _listing_from_botocore(answer)
    rows = listing.rows
    if marker is not None and listed:
        # LocalStack answers a version id marker on a key with a space with the
        # key's versions from its first again: drop the ones already listed.
        rows = [r for r in rows if r.key != marker[0] or r.version_id not in listed]
    following: tuple[str, str | None] | None = None
    if listing.truncated:
        if not listing.next_key:  # S3 always sends it with a truncated page; never loop on nothing
            raise ServiceError(f"S3 listing of s3://{bucket}/{prefix} is truncated but names no next key")
        following = (listing.next_key, listing.next_version_id or None)
        if following == marker:  # the same page again: asking on would loop for ever
            raise ServiceError(
                f"S3 listing of s3://{bucket}/{prefix}: the next page's marker did not advance "
                f"(key marker {following[0]!r} again); check s3.endpoint_url (is it an S3 server?)"
            )
        ids = frozenset(r.version_id for r in rows if r.key == following[0])
        return _Page(rows, following, ids | listed if marker is not None and marker[0] == following[0] else ids)
    return _Page(rows, following)


# --------------------------------------------------------------------------- the listing's XML
# botocore's XML walk (a dict per element, a shape lookup per field) costs about
# 20 ms per page of 1,000 versions; ``listing_xml`` reads the same body in about
# 2 ms, keeping only what bmxgc uses. The request stays botocore's: a
# ``before-parse`` handler takes the body of a ListObjectVersions answer that
# ``_fetch_page`` is waiting for, on its thread, and hands botocore an empty
# result to parse instead. Anything else (an error, a body that is not a
# ListVersionsResult, another caller's request) is left to botocore, untouched.

_DIRECT = threading.local()  # ``active`` while _fetch_page's request is in flight on this thread
_LISTING_FIELD = "BmxgcListing"  # where the parsed page rides in botocore's answer
_EMPTY_LISTING = b"<ListVersionsResult/>"


def parse_listings_directly(client: S3Client) -> None:
    """Register, once per client, the handlers that read the bodies of
    ``_fetch_page``'s ListObjectVersions answers (``parse_listing``) and of
    ``delete_batch``'s DeleteObjects answers (``_read_delete_answer``).

    They run first among the ``before-parse`` handlers: botocore's check for an
    error inside a 200 answer (``_handle_200_error``, registered first on
    ``before-parse.s3.*``) parses the whole body once more, and is moved
    behind them. When a handler takes a body, the body was a well-formed
    answer, which that check passes; any other body is left for it, as
    before (an error document or a cut-off body is retried)."""
    events = client.meta.events
    with _REGISTERING:
        if events in _REGISTERED:
            return
        events.register_first("before-parse.s3.*", _take_listing_body, unique_id="bmxgc-parse-listing")
        events.register_first("before-parse.s3.*", _read_delete_answer, unique_id="bmxgc-delete-answer")
        check = getattr(botocore.handlers, "_handle_200_error", None)
        if check is not None:
            events.unregister("before-parse.s3.*", check)
            events.register_first("before-parse.s3.*", check)
        _REGISTERED.add(events)


_REGISTERING = threading.Lock()
_REGISTERED: weakref.WeakSet[Any] = weakref.WeakSet()


def _take_listing_body(
    operation_model: Any, response_dict: Any, customized_response_dict: Any, **_kwargs: Any
) -> None:
    if (
        not getattr(_DIRECT, "active", False)
        or operation_model.name != "ListObjectVersions"
        or response_dict.get("status_code") != 200
    ):
        return
    body = response_dict.get("body")
    if not isinstance(body, bytes):
        return
    with _PARSING, _collector_held():  # one page at a time: one page's text and matches in memory, not one per connection
        listing = parse_listing(body)
    if listing is None:
        return
    customized_response_dict[_LISTING_FIELD] = listing
    response_dict["body"] = _EMPTY_LISTING


_PARSING = threading.Lock()


class _Collector:
    lock = threading.Lock()
    parses = 0  # parses under way
    was_on = False  # whether the collector was on before the first of them


@contextmanager
def _collector_held() -> Iterator[None]:
    """The cyclic garbage collector off while a body is parsed (on any thread).

    A page's matches and rows are thousands of objects without a cycle, freed
    by reference counting once the rows are taken; while they are made, the
    collector would otherwise run every 700 allocations and scan them, again
    and again. It is switched back on when the last parse ends, if it
    was on before the first."""
    with _Collector.lock:
        if _Collector.parses == 0:
            _Collector.was_on = gc.isenabled()
            gc.disable()
        _Collector.parses += 1
    try:
        yield
    finally:
        with _Collector.lock:
            _Collector.parses -= 1
            if _Collector.parses == 0 and _Collector.was_on:
                gc.enable()


def parse_listing(body: bytes) -> Listing | None:
    """A ListObjectVersions answer's body as ``Listing`` (``listing_xml``, with
    ``parse_timestamp``); None if it is not a ListVersionsResult."""
    return listing_xml.parse_listing(body, parse_timestamp)


def _listing_from_botocore(page: Any) -> Listing:
    """A page botocore parsed (its dicts, keys already URL-decoded) as ``Listing``."""
    rows = [
        VersionEntry(
            key=version["Key"],
            version_id=version.get("VersionId") or "null",
            is_latest=bool(version.get("IsLatest")),
            is_delete_marker=False,
            last_modified=version["LastModified"],
            etag=version.get("ETag", "").strip('"'),
            size=int(version.get("Size", 0)),
        )
        for version in page.get("Versions", [])
    ]
    rows.extend(
        VersionEntry(
            key=marker_row["Key"],
            version_id=marker_row.get("VersionId") or "null",
            is_latest=bool(marker_row.get("IsLatest")),
            is_delete_marker=True,
            last_modified=marker_row["LastModified"],
        )
        for marker_row in page.get("DeleteMarkers", [])
    )
    return Listing(rows, bool(page.get("IsTruncated")), page.get("NextKeyMarker"), page.get("NextVersionIdMarker"))


def _first_current_key_after(client: S3Client, bucket: str, prefix: str, after: str) -> str | None:
    """The first key under ``prefix`` after ``after`` that has a current version
    (one ListObjectsV2 of one key: S3 and the servers bmxgc supports all start
    strictly after any ``StartAfter`` string, key or not)."""
    answer = client.list_objects_v2(Bucket=bucket, Prefix=prefix, StartAfter=after, MaxKeys=1)
    contents = answer.get("Contents", [])
    return str(contents[0]["Key"]) if contents else None


@dataclass
class _Range:
    """The versions of keys from ``head`` (or after ``floor``) up to, not
    including, ``end`` (None: the end of the prefix).

    A range found by a split starts at a key ``head`` that exists: first the
    versions of the keys that start with ``head`` (``Prefix=head``, a block
    that is contiguous in S3's order and begins with ``head`` itself), then
    the prefix after the block's last key (``KeyMarker`` = that key, and rows
    at or before it dropped). So a range never starts at a marker that is not
    a listed key: servers differ on such markers (moto skips the first version
    after one), never on these.
    """

    listing: str  # the Prefix of the next request: the range's head while in its block, then the prefix's
    marker: tuple[str, str | None] | None
    end: str | None
    floor: str | None = None  # rows at or before this key were listed already
    listed: frozenset[str] = frozenset()  # version ids of the marker's key listed already
    position: str = ""  # the last key listed (or the head): where a split may start
    pages: deque[list[VersionEntry]] = field(default_factory=deque)
    done: bool = False
    busy: bool = False
    probing: bool = False
    hint: str | None = None  # no current key between this and ``end`` at the last probe
    last_key: str | None = None


class _ParallelListing:
    """The rest of a prefix listed over several connections, yielded in key order.

    The key space after the sequential pages is one range. A connection with
    nothing to do takes the widest range being listed, picks a string about
    halfway between where it is and its end (``midpoint``), and asks S3 for
    the first key after it (``_first_current_key_after``, one small request).
    If that key lies inside the range, the range is split there: the listing
    connection stops before the key, the idle one starts at it. Every key
    falls in exactly one range: a range keeps the rows below its ``end`` and
    a split sets ``end`` to the new range's ``head``. Rows a page brings from
    beyond its range's end are dropped (the next range lists them). Pages
    wait in key order; a connection ahead of the reader by ``buffer`` pages
    waits, except the one listing the range being read.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str,
        start: tuple[str, str | None],
        concurrency: int,
        page_size: int,
        ordered: bool = True,
        listed: frozenset[str] = frozenset(),
    ) -> None:
        self.page_size = page_size
        self.ordered = ordered
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.concurrency = concurrency
        # Pages listed but not yet read, at most: in key order, room for the
        # connections ahead of the reader; in any order the reader takes any
        # page, so one a connection is enough (each holds about 0.4 MiB of rows).
        self.buffer = 2 * concurrency if ordered else concurrency
        self.ranges: list[_Range] = [_Range(listing=prefix, marker=start, end=None, position=start[0], listed=listed)]
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        self.closed = False
        self.buffered = 0
        self.density = 0.0  # rows per unit of ``_width``, from what is listed so far

    def pages(self) -> Iterator[list[VersionEntry]]:
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="bmxgc-list")
        try:
            for _ in range(self.concurrency):
                pool.submit(self._work)
            while True:
                with self.cond:
                    while True:
                        if self.error is not None:
                            raise self.error
                        head = self.ranges[0] if self.ranges else None
                        if head is None:
                            return
                        ready = head if head.pages or self.ordered else next((r for r in self.ranges if r.pages), None)
                        if ready is not None and ready.pages:
                            rows = ready.pages.popleft()
                            self.buffered -= 1
                            self.cond.notify_all()
                            break
                        if head.done:
                            self.ranges.pop(0)
                            self.cond.notify_all()
                            continue
                        self.cond.wait(1.0)
                yield rows
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()
            pool.shutdown(wait=True)

    def _work(self) -> None:
        try:
            while True:
                with self.cond:
                    job = self._next_job()
                    if job is None:
                        return
                    if isinstance(job, tuple):
                        target, middle = job
                    else:
                        job.busy = True
                        listing, marker, listed = job.listing, job.marker, job.listed
                if isinstance(job, tuple):
                    found = _first_current_key_after(self.client, self.bucket, self.prefix, middle)
                    with self.cond:
                        target.probing = False
                        self._split_at(target, middle, found)
                        self.cond.notify_all()
                    continue
                page = _fetch_page(self.client, self.bucket, listing, marker, self.page_size, listed)
                with self.cond:  # one step: no other connection may take the range meanwhile
                    self._take(job, page)
                    job.busy = False
                    self.cond.notify_all()
        except BaseException as exc:  # handed to the reader, raised there
            with self.cond:
                if self.error is None:
                    self.error = exc
                self.cond.notify_all()

    def _next_job(self) -> _Range | tuple[_Range, str] | None:
        """Under the lock: a range to fetch a page of, or a range to probe for
        a split (and where); None when everything is listed (or the reader left)."""
        while True:
            if self.closed or self.error is not None:
                return None
            live = [r for r in self.ranges if not r.done]
            if not live:
                return None
            head = self.ranges[0]
            ahead = self.buffered >= self.buffer
            # In key order, the range being read is never held back (the reader
            # waits for it); in any order, the reader takes whatever is ready.
            idle = [r for r in live if not r.busy and ((r is head and self.ordered) or not ahead)]
            if idle:
                return idle[0]
            if not ahead and len(live) < self.concurrency:
                probe = self._widest()
                if probe is not None:
                    probe[0].probing = True
                    return probe
            self.cond.wait(1.0)

    def _widest(self) -> tuple[_Range, str] | None:
        best: tuple[float, _Range, str] | None = None
        for r in self.ranges:
            if r.done or not r.busy or r.probing:
                continue
            bound = r.end if r.hint is None or (r.end is not None and r.end < r.hint) else r.hint
            middle = midpoint(r.position, bound, self.prefix)
            if middle is None:
                continue
            width = _width(r.position, bound, self.prefix)
            if self.density * width < 2 * MIN_SPLIT_PAGES * self.page_size:
                continue  # not worth its requests
            if best is None or width > best[0]:
                best = (width, r, middle)
        return None if best is None else (best[1], best[2])

    def _split_at(self, target: _Range, middle: str, found: str | None) -> None:
        """Under the lock: split ``target`` at ``found``, the first current key
        after ``middle``, if the range has not listed that far yet."""
        inside = (
            found is not None
            and not target.done
            and target.position < found
            and (target.end is None or found < target.end)
        )
        if not inside or found is None:
            target.hint = middle  # nothing current between here and the end: aim lower next time
            return
        new = _Range(listing=found, marker=None, end=target.end, position=found, hint=target.hint)
        target.end = found
        self.ranges.insert(self.ranges.index(target) + 1, new)

    def _take(self, job: _Range, page: _Page) -> None:
        """Under the lock: keep the page's rows that are the range's (its end
        may have moved down while the page was on its way)."""
        rows = page.rows
        end, floor = job.end, job.floor
        if floor is not None:
            rows = [row for row in rows if row.key > floor]
        beyond = end is not None and any(not row.key < end for row in rows)
        if beyond and end is not None:
            rows = [row for row in rows if row.key < end]
        if rows:
            job.pages.append(rows)
            self.buffered += 1
            job.last_key = max(row.key for row in rows)
            job.position = max(job.position, job.last_key)
        if beyond:
            job.done = True
        elif page.next is not None:
            job.marker, job.listed = page.next, page.listed
            job.position = max(job.position, page.next[0])
            if end is not None and not page.next[0] < end and page.next[1] is None:
                job.done = True  # the next page would start at or after the end
        elif job.listing != self.prefix:
            # The head's block is listed: go on with the prefix after its last key.
            if job.last_key is None:
                raise ServiceError(
                    f"S3 listing of s3://{self.bucket}/{self.prefix} changed while it was listed "
                    f"({job.listing!r} was there a moment ago); run the command again"
                )
            job.listing, job.marker, job.floor, job.listed = self.prefix, (job.last_key, None), job.last_key, frozenset()
        else:
            job.done = True


def _utf8_after(a: str, b: str) -> bool:
    """``a`` sorts after ``b`` in S3's order (UTF-8 bytes, which is code point order)."""
    return a > b


# Where a split point is taken from when nothing bounds it above: keys are
# mostly made of digits, or letters, or ASCII, and a split point past the kind
# of character the key has there would only find an empty range (one probe).
_ASCII_END = 0x7F
_UNICODE_END = 0x110000


def _class_end(low: int) -> int:
    """The end (exclusive) of the kind of character ``low`` is: digits, upper
    or lower case letters, ASCII, the rest of Unicode."""
    for first, end in ((0x30, 0x3A), (0x41, 0x5B), (0x61, 0x7B), (-1, _ASCII_END)):
        if first <= low < end:
            return end
    return _UNICODE_END


def midpoint(start: str, end: str | None, prefix: str) -> str | None:
    """A key ``m`` with ``start < m`` and ``m < end`` (``end`` None: the end of
    ``prefix``), about halfway, in S3's order; None if there is none worth
    splitting at. Strings compare by code point, which is UTF-8 byte order;
    ``m`` never holds a surrogate. Only how well the work is spread depends on
    where ``m`` falls, never which keys are listed."""
    if end is not None and not end > start:
        return None
    i = 0
    if end is None:
        if not start.startswith(prefix):
            return None
        i = len(prefix)
    else:
        while i < len(start) and i < len(end) and start[i] == end[i]:
            i += 1
    bounded = end is not None
    for _ in range(len(start) + 2):
        low = ord(start[i]) if i < len(start) else -1
        if bounded and end is not None:
            high = ord(end[i])
        else:
            high = _class_end(low)
        if high - low >= 2:
            middle = _xml_char_near((low + high) // 2, low, high)
            return None if middle is None else start[:i] + chr(middle)
        if low < 0:
            return None
        bounded = False  # start[:i+1] < end already: any continuation stays below it
        i += 1
    return None


def _xml_char_near(middle: int, low: int, high: int) -> int | None:
    """``middle``, or the nearest character strictly between ``low`` and ``high``
    that XML can carry: S3 echoes the key marker in its answer, and a control
    character, a surrogate or U+FFFE/U+FFFF there breaks it."""

    def fits(c: int) -> bool:
        return 0x20 <= c <= 0xD7FF or 0xE000 <= c <= 0xFFFD or 0x10000 <= c <= 0x10FFFF

    for candidate in (middle, 0x20, 0xE000, 0x10000, 0xD7FF, 0xFFFD):
        if low < candidate < high and fits(candidate):
            if fits(middle):
                return middle
            return candidate
    return None


def _width(start: str, end: str | None, prefix: str) -> float:
    """How much key space is left between ``start`` and ``end``, roughly."""

    def position(key: str) -> float:
        # Each character's rank within its kind (digits count in tens, letters in 26s).
        value, scale = 0.0, 1.0
        for char in key[len(prefix) : len(prefix) + 10]:
            code = ord(char)
            if 0x30 <= code <= 0x39:
                rank, radix = code - 0x30, 10
            elif 0x61 <= code <= 0x7A:
                rank, radix = code - 0x61, 26
            elif 0x41 <= code <= 0x5A:
                rank, radix = code - 0x41, 26
            else:
                rank, radix = min(code, 127), 128
            scale /= radix
            value += rank * scale
        return value

    return abs((1.0 if end is None else position(end)) - position(start))


def versioning_status(client: S3Client, bucket: str) -> str:
    """``Enabled``, ``Suspended``, or ``Disabled`` for a never-versioned bucket."""
    try:
        answer = client.get_bucket_versioning(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        raise describe_error(exc, f"reading versioning of bucket {bucket}") from None
    return str(answer.get("Status") or "Disabled")


def noncurrent_expiry_days(client: S3Client, bucket: str, prefix: str) -> int | None:
    """The fewest days after which an enabled lifecycle rule covering ``prefix``
    expires noncurrent versions (the undo window), or None when none does."""
    try:
        answer = client.get_bucket_lifecycle_configuration(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
            return None
        raise describe_error(exc, f"reading lifecycle rules of bucket {bucket}") from None
    except BotoCoreError as exc:
        raise describe_error(exc, f"reading lifecycle rules of bucket {bucket}") from None
    days: list[int] = []
    for rule in answer.get("Rules", []):
        if rule.get("Status") != "Enabled":
            continue
        expiry = rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays")
        if expiry is None:
            continue
        rule_prefix = _rule_prefix(rule)
        # A rule covers our objects if either prefix contains the other.
        if prefix.startswith(rule_prefix) or rule_prefix.startswith(prefix):
            days.append(int(expiry))
    return min(days) if days else None


def _rule_prefix(rule: Any) -> str:
    filt = rule.get("Filter") or {}
    if "Prefix" in filt:
        return str(filt["Prefix"])
    if "And" in filt:
        return str(filt["And"].get("Prefix", ""))
    return str(rule.get("Prefix", ""))


@dataclass(frozen=True)
class DeleteOutcome:
    """What one DeleteObjects request did, key by key."""

    deleted: list[tuple[str, str | None, str | None]]  # key, version id sent, marker id
    errors: list[tuple[str, str, str]]  # key, code, message


def delete_batch(
    client: S3Client, bucket: str, objects: Sequence[tuple[str, str | None, str | None]], *, quiet: bool = False
) -> DeleteOutcome:
    """One DeleteObjects request for up to 1,000 ``(key, version_id, etag)``.

    A request that writes delete markers is sent once, never retried blind by
    botocore (see ``_no_blind_retry``); RequestInDoubt says that S3 may or may
    not have carried it out, and the caller must find out from live state.
    Removing versions by id is idempotent and keeps botocore's retries.

    Without a version id S3 writes a delete marker (reversible); with one it
    removes exactly that version (undo uses this on the markers it wrote).
    With an ETag, S3 deletes only if the current version still has it (real
    S3 since 2025; moto ignores it), closing the gap between the drift check
    and the delete. ``quiet``: S3 answers with the errors only (for a caller
    that reads nothing else: undo, which checks its work in a listing).

    The request is botocore's, body included (validation, serialisation,
    checksum, signature, retries, timeouts); its answer is read here
    (``_read_delete_answer``): botocore's walk of 1,000 ``Deleted`` elements
    costs about 11 ms of CPU.
    """
    if len(objects) > MAX_KEYS_PER_REQUEST:
        raise ValueError(f"at most {MAX_KEYS_PER_REQUEST} keys per DeleteObjects request")
    send_marker_deletes_once(client)  # a client made elsewhere (tests, the API) too
    parse_listings_directly(client)  # a client made elsewhere (tests, the API) too
    entries: list[Any] = []
    for key, version_id, etag in objects:
        entry: dict[str, str] = {"Key": key}
        if version_id is not None:
            entry["VersionId"] = version_id
        if etag:
            entry["ETag"] = f'"{etag}"'
        entries.append(entry)
    _DELETE.active = True
    try:
        answer = client.delete_objects(Bucket=bucket, Delete={"Objects": entries, "Quiet": quiet})
    except ClientError as exc:
        error = describe_error(exc, f"DeleteObjects in bucket {bucket}")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if status >= 500:
            raise RequestInDoubt(str(error)) from None
        raise error from None
    except BotoCoreError as exc:
        # No answer (timeout, connection lost): S3 may have done it or not.
        raise RequestInDoubt(str(describe_error(exc, f"DeleteObjects in bucket {bucket}"))) from None
    finally:
        _DELETE.active = False
    outcome = answer.get(_DELETE_FIELD)
    if isinstance(outcome, DeleteOutcome):
        return outcome
    deleted = [
        (d["Key"], d.get("VersionId"), d.get("DeleteMarkerVersionId")) for d in answer.get("Deleted", [])
    ]
    errors = [
        (e.get("Key", ""), e.get("Code", "Unknown"), e.get("Message", "")) for e in answer.get("Errors", [])
    ]
    return DeleteOutcome(deleted=deleted, errors=errors)


# --------------------------------------------------------------------------- DeleteObjects' answer
# botocore walks the answer's 1,000 ``Deleted`` elements in about 11 ms of CPU
# (a dict per element, a shape lookup per field). The answer of
# ``delete_batch``'s own request (``_DELETE.active``, on its thread) is read
# here instead; its request, body and all, is botocore's.

_DELETE = threading.local()  # ``active`` while delete_batch's request is in flight on this thread
_DELETE_FIELD = "BmxgcDeleteOutcome"  # where the answer read here rides in botocore's
_EMPTY_DELETE_RESULT = b"<DeleteResult/>"


def _read_delete_answer(
    operation_model: Any, response_dict: Any, customized_response_dict: Any, **_kwargs: Any
) -> None:
    """A 200 DeleteResult of ``delete_batch``'s request, read as botocore's
    parser reads it (elements by local name, any namespace; an empty element
    is ""); anything else (an error document) is left to botocore."""
    if (
        not getattr(_DELETE, "active", False)
        or operation_model.name != "DeleteObjects"
        or response_dict.get("status_code") != 200
    ):
        return
    body = response_dict.get("body")
    if not isinstance(body, bytes):
        return
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return
    if _local(root.tag) != "DeleteResult":
        return
    ns = root.tag[: len(root.tag) - len("DeleteResult")]
    deleted_tag, error_tag = ns + "Deleted", ns + "Error"
    key_tag, id_tag, marker_tag, code_tag, message_tag = (
        ns + name for name in ("Key", "VersionId", "DeleteMarkerVersionId", "Code", "Message")
    )
    deleted: list[tuple[str, str | None, str | None]] = []
    errors: list[tuple[str, str, str]] = []
    for child in root:
        tag = child.tag
        if tag != deleted_tag and tag != error_tag:
            tag = ns + _local(tag)  # in another namespace than the result's: by local name
            if tag != deleted_tag and tag != error_tag:
                continue
        field: Callable[[str], str | None] = child.findtext  # a child's text ("" if empty), None if absent
        key = field(key_tag)
        if key is None and len(child):  # its children in another namespace than the result's
            fields = {ns + _local(c.tag): c.text or "" for c in child}
            field = fields.get
            key = field(key_tag)
        if tag == deleted_tag:
            if key is not None:  # a Deleted without its key names nothing: the key stays in doubt
                deleted.append((key, field(id_tag), field(marker_tag)))
        else:
            code = field(code_tag)
            errors.append((key or "", "Unknown" if code is None else code, field(message_tag) or ""))
    customized_response_dict[_DELETE_FIELD] = DeleteOutcome(deleted=deleted, errors=errors)
    response_dict["body"] = _EMPTY_DELETE_RESULT


def get_object_bytes(client: S3Client, bucket: str, key: str) -> tuple[bytes, str] | None:
    """The bytes and ETag of ``key``'s current version, or None if there is none."""
    try:
        answer = client.get_object(Bucket=bucket, Key=key)
        body = answer["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise describe_error(exc, f"reading s3://{bucket}/{key}") from None
    except BotoCoreError as exc:
        raise describe_error(exc, f"reading s3://{bucket}/{key}") from None
    return body, str(answer.get("ETag", "")).strip('"')


def get_object_text(client: S3Client, bucket: str, key: str) -> tuple[str, str] | None:
    """The body (UTF-8) and ETag of ``key``'s current version, or None if there is none."""
    found = get_object_bytes(client, bucket, key)
    if found is None:
        return None
    body, etag = found
    return body.decode("utf-8"), etag


def get_object_head(client: S3Client, bucket: str, key: str, size: int) -> tuple[bytes, bool] | None:
    """The first ``size`` bytes of ``key`` (one ranged GET) and whether that is
    all of it, or None if there is no such object."""
    try:
        answer = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{size - 1}")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        if exc.response.get("Error", {}).get("Code") == "InvalidRange":  # an empty object
            return b"", True
        raise describe_error(exc, f"reading s3://{bucket}/{key}") from None
    except BotoCoreError as exc:
        raise describe_error(exc, f"reading s3://{bucket}/{key}") from None
    data = answer["Body"].read()
    total = str(answer.get("ContentRange", "")).rpartition("/")[2]
    return data, not total.isdigit() or int(total) <= len(data)


def put_text(client: S3Client, bucket: str, key: str, text: str) -> None:
    """Write ``key`` (S3 replaces objects atomically: readers see old or new)."""
    try:
        client.put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"), ContentType="application/json")
    except (ClientError, BotoCoreError) as exc:
        raise describe_error(exc, f"writing s3://{bucket}/{key}") from None


def list_keys(client: S3Client, bucket: str, prefix: str) -> Iterator[str]:
    """The current keys under ``prefix`` (ListObjectsV2, 1,000 per request)."""
    paginator = client.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"]
    except (ClientError, BotoCoreError) as exc:
        raise describe_error(exc, f"listing s3://{bucket}/{prefix}") from None


def list_folders(client: S3Client, bucket: str, prefix: str) -> list[str]:
    """The sub-folders directly under ``prefix`` (ListObjectsV2 with a '/' delimiter)."""
    paginator = client.get_paginator("list_objects_v2")
    folders: list[str] = []
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            folders.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
    except (ClientError, BotoCoreError) as exc:
        raise describe_error(exc, f"listing s3://{bucket}/{prefix}") from None
    return folders


DOWNLOAD_CHUNK = 1 << 20


def download_object(client: S3Client, bucket: str, key: str, sink: Callable[[bytes], object]) -> bool:
    """Stream ``key``'s current version into ``sink`` in chunks of 1 MiB;
    False if there is no such object."""
    try:
        answer = client.get_object(Bucket=bucket, Key=key)
        for chunk in answer["Body"].iter_chunks(DOWNLOAD_CHUNK):
            sink(chunk)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return False
        raise describe_error(exc, f"reading s3://{bucket}/{key}") from None
    except BotoCoreError as exc:
        raise describe_error(exc, f"reading s3://{bucket}/{key}") from None
    return True


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``."""
    rest = url.removeprefix("s3://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket; write s3://bucket/prefix/")
    return bucket, key


# --------------------------------------------------------------------------- versions of one key
# The lock and the S3 store work on the versions of one key, by version id,
# so that they need no conditional request that a server might ignore.

# Answers by which a server says a version is not there (LocalStack says
# InvalidArgument for a version id it no longer has).
_VERSION_GONE = frozenset({"NoSuchVersion", "NoSuchKey", "404", "InvalidArgument"})


def put_version(
    client: S3Client, bucket: str, key: str, body: bytes, *, if_none_match: bool = False
) -> tuple[str, str] | None:
    """Write a new version of ``key``: its ``(version id, ETag)``, the id
    ``"null"`` in a bucket without versioning. With ``if_none_match`` the PUT
    carries ``If-None-Match: *`` and None means the server refused it (412);
    a server that ignores the header writes the version anyway."""
    try:
        if if_none_match:
            answer = client.put_object(
                Bucket=bucket, Key=key, Body=body, ContentType="application/json", IfNoneMatch="*"
            )
        else:
            answer = client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if if_none_match and code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
            return None
        raise describe_error(exc, f"writing s3://{bucket}/{key}") from None
    except BotoCoreError as exc:
        raise describe_error(exc, f"writing s3://{bucket}/{key}") from None
    return str(answer.get("VersionId") or "null"), str(answer.get("ETag", "")).strip('"')


def key_versions(client: S3Client, bucket: str, key: str) -> list[VersionEntry]:
    """Every version and delete marker of exactly ``key`` (not of longer keys
    it is a prefix of); versions newest first, as S3 lists them, then markers."""
    entries = [e for e in list_versions(client, bucket, key) if e.key == key]
    return [e for e in entries if not e.is_delete_marker] + [e for e in entries if e.is_delete_marker]


def get_version_bytes(client: S3Client, bucket: str, key: str, version_id: str) -> bytes | None:
    """The bytes of one version of ``key``, or None if that version is gone."""
    try:
        answer = client.get_object(Bucket=bucket, Key=key, VersionId=version_id)
        return bytes(answer["Body"].read())
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _VERSION_GONE:
            return None
        raise describe_error(exc, f"reading s3://{bucket}/{key} version {version_id}") from None
    except BotoCoreError as exc:
        raise describe_error(exc, f"reading s3://{bucket}/{key} version {version_id}") from None


def delete_version(client: S3Client, bucket: str, key: str, version_id: str) -> bool:
    """Remove exactly one version of ``key`` by its id: no delete marker, no
    other version touched. False if it was not there (already removed).

    Some servers answer an error for a version that is already gone (LocalStack:
    NoSuchVersion, or InvalidArgument for an object version); the listing of
    the key then decides, so a real refusal is never taken for success.
    """
    try:
        client.delete_object(Bucket=bucket, Key=key, VersionId=version_id)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _VERSION_GONE:
            if all(e.version_id != version_id for e in key_versions(client, bucket, key)):
                return False
        raise describe_error(exc, f"removing version {version_id} of s3://{bucket}/{key}") from None
    except BotoCoreError as exc:
        raise describe_error(exc, f"removing version {version_id} of s3://{bucket}/{key}") from None
    return True
