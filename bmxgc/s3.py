"""Everything bmxgc says to S3. The only module that imports boto3.

Retries are botocore's standard mode (exponential backoff with jitter on
throttling and 5xx), never a loop of our own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from bmxgc.errors import ServiceError
from bmxgc.model import VersionEntry

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client as S3Client
else:
    S3Client = Any

MAX_KEYS_PER_REQUEST = 1000  # S3's limit for both a list page and DeleteObjects
RETRY_ATTEMPTS = 8

Progress = Callable[[int], None]


def make_client(endpoint_url: str | None = None, region: str | None = None) -> S3Client:
    """An S3 client with standard retries; credentials from AWS's usual chain."""
    config = BotoConfig(
        retries={"mode": "standard", "max_attempts": RETRY_ATTEMPTS},
        connect_timeout=10,
        read_timeout=60,
        user_agent_extra="bmxgc",
    )
    try:
        client: S3Client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
    except (BotoCoreError, ValueError) as exc:
        raise ServiceError(f"cannot create an S3 client: {exc}") from None
    send_marker_deletes_once(client)
    return client


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
        return ServiceError(f"S3 {action} failed: {code}: {message}; {hint}")
    if isinstance(exc, BotoCoreError):
        return ServiceError(f"S3 {action} failed: {exc}; check s3.endpoint_url and the network")
    return ServiceError(f"S3 {action} failed: {exc}")


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


def get_object_text(client: S3Client, bucket: str, key: str) -> tuple[str, str] | None:
    """The body and ETag of ``key``'s current version, or None if there is none."""
    try:
        answer = client.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise describe_error(exc, f"reading s3://{bucket}/{key}") from None
    except BotoCoreError as exc:
        raise describe_error(exc, f"reading s3://{bucket}/{key}") from None
    return answer["Body"].read().decode("utf-8"), str(answer.get("ETag", "")).strip('"')


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
