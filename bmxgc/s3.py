"""Everything bmxgc says to S3. The only module that imports boto3.

Retries are botocore's standard mode (exponential backoff with jitter on
throttling and 5xx), never a loop of our own. botocore has no deadline for
one call with its retries: ``_CallDeadline`` stops them at ``call_timeout``.
Errors never carry the password of an ``endpoint_url`` (``redact_urls``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from bmxgc.config import S3Settings, redact_urls
from bmxgc.errors import ServiceError
from bmxgc.model import VersionEntry

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client as S3Client
else:
    S3Client = Any

MAX_KEYS_PER_REQUEST = 1000  # S3's limit for both a list page and DeleteObjects
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
        settings.endpoint_url, settings.region, connect_timeout=connect, read_timeout=read, call_timeout=call
    )


def make_client(
    endpoint_url: str | None = None,
    region: str | None = None,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    call_timeout: float = CALL_TIMEOUT,
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
    )
    try:
        client: S3Client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
    except (BotoCoreError, ValueError) as exc:
        raise ServiceError(f"cannot create an S3 client: {redact_urls(str(exc))}") from None
    deadline = _CallDeadline(connect_timeout, read_timeout, call_timeout)
    client.meta.events.register("request-created.s3", deadline.before_attempt)
    client.meta.events.register("needs-retry.s3", deadline.after_attempt)
    send_marker_deletes_once(client)
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
    client: S3Client, bucket: str, prefix: str, progress: Progress | None = None
) -> Iterator[VersionEntry]:
    """Every version and delete marker under ``prefix``, one request per 1,000.

    Within a page S3 returns versions and markers in two lists; both are
    yielded, versions first. Callers that need one key's history together
    group by key (rows of one key never span more than two adjacent pages).
    """
    paginator = client.get_paginator("list_object_versions")
    pages = paginator.paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": MAX_KEYS_PER_REQUEST}
    )
    seen = 0
    try:
        for page in pages:
            for version in page.get("Versions", []):
                yield VersionEntry(
                    key=version["Key"],
                    version_id=version.get("VersionId") or "null",
                    is_latest=bool(version.get("IsLatest")),
                    is_delete_marker=False,
                    last_modified=version["LastModified"],
                    etag=version.get("ETag", "").strip('"'),
                    size=int(version.get("Size", 0)),
                )
            for marker in page.get("DeleteMarkers", []):
                yield VersionEntry(
                    key=marker["Key"],
                    version_id=marker.get("VersionId") or "null",
                    is_latest=bool(marker.get("IsLatest")),
                    is_delete_marker=True,
                    last_modified=marker["LastModified"],
                )
            seen += len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
            if progress is not None:
                progress(seen)
    except (ClientError, BotoCoreError) as exc:
        raise describe_error(exc, f"listing s3://{bucket}/{prefix}") from None


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
    client: S3Client, bucket: str, objects: Sequence[tuple[str, str | None, str | None]]
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
    and the delete.
    """
    if len(objects) > MAX_KEYS_PER_REQUEST:
        raise ValueError(f"at most {MAX_KEYS_PER_REQUEST} keys per DeleteObjects request")
    send_marker_deletes_once(client)  # a client made elsewhere (tests, the API) too
    entries: list[Any] = []
    for key, version_id, etag in objects:
        entry: dict[str, str] = {"Key": key}
        if version_id is not None:
            entry["VersionId"] = version_id
        if etag:
            entry["ETag"] = f'"{etag}"'
        entries.append(entry)
    try:
        answer = client.delete_objects(Bucket=bucket, Delete={"Objects": entries, "Quiet": False})
    except ClientError as exc:
        error = describe_error(exc, f"DeleteObjects in bucket {bucket}")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if status >= 500:
            raise RequestInDoubt(str(error)) from None
        raise error from None
    except BotoCoreError as exc:
        # No answer (timeout, connection lost): S3 may have done it or not.
        raise RequestInDoubt(str(describe_error(exc, f"DeleteObjects in bucket {bucket}"))) from None
    deleted = [
        (d["Key"], d.get("VersionId"), d.get("DeleteMarkerVersionId")) for d in answer.get("Deleted", [])
    ]
    errors = [
        (e.get("Key", ""), e.get("Code", "Unknown"), e.get("Message", "")) for e in answer.get("Errors", [])
    ]
    return DeleteOutcome(deleted=deleted, errors=errors)


def put_if_absent(client: S3Client, bucket: str, key: str, body: bytes) -> str | None:
    """Create ``key`` only if it has no current version; its ETag, or None if taken."""
    try:
        answer = client.put_object(
            Bucket=bucket, Key=key, Body=body, IfNoneMatch="*", ContentType="application/json"
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
            return None
        raise describe_error(exc, f"writing s3://{bucket}/{key}") from None
    except BotoCoreError as exc:
        raise describe_error(exc, f"writing s3://{bucket}/{key}") from None
    return str(answer.get("ETag", "")).strip('"')


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


def delete_if_match(client: S3Client, bucket: str, key: str, etag: str) -> bool:
    """Delete ``key`` if its current ETag is ``etag``; False if it changed or is gone."""
    try:
        client.delete_object(Bucket=bucket, Key=key, IfMatch=f'"{etag}"')
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "NoSuchKey", "412", "404"):
            return False
        raise describe_error(exc, f"deleting s3://{bucket}/{key}") from None
    except BotoCoreError as exc:
        raise describe_error(exc, f"deleting s3://{bucket}/{key}") from None
    return True


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
