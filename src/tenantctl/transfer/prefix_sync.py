"""Keeping a tenant's objects in step between two cells' buckets (the same
prefix in both): what a move between cells of one account and region does to
the tenant's S3 prefix while ``store_sync`` moves its store.

Objects are copied server-side (CopyObject: the bytes never leave S3), SSE-KMS
under the tenant's key, with their tags (the retention class the cell's
lifecycle rules match) and metadata. A pass copies what changed since the
last one and deletes from the target what the source no longer holds, so the
pass inside the write freeze only carries the last changes.

What changed is judged on the source side only: the source's key and ETag
against the ETag it had when it was last copied (``Copied``). A copy's own
ETag cannot be compared with its source's: under SSE-KMS an ETag is not a
digest of the content. A pass that has no ``Copied`` for an object the target
holds copies it again, unless given ``since``: the time both prefixes were
last in step (a rollback's switch), after which only objects modified since
are copied.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlencode

from tenantctl.errors import TenantctlError

DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys
COPY_WORKERS = 8  # CopyObject calls at once: each is a round trip with no bytes through this process
CLOCK_SLACK = timedelta(minutes=1)  # S3's LastModified against this host's clock, with ``since``


@dataclass(frozen=True)
class Place:
    bucket: str
    prefix: str
    # The S3 client of the bucket's account and region when it is not the
    # pass's own (a move to another account or region: the copy is sent to the
    # target's region, CopySource naming the old bucket).
    client: Any = field(default=None, compare=False)
    # A target in another account than its source: objects are read with the
    # source's client and written with this one (streamed through tenantctl),
    # so neither account is granted anything on the other's bucket or key; a
    # server-side copy would need the target's role to read the old bucket
    # (its policy) and the old key (a grant).
    other_account: bool = field(default=False, compare=False)

    def s3(self, default: Any) -> Any:
        return self.client if self.client is not None else default


@dataclass
class Copied:
    """Source key -> the source ETag it had when copied (one move's run)."""

    etags: dict[str, str] = field(default_factory=dict)
    objects: int = 0  # copied by the passes so far
    removed: int = 0


class Listed(NamedTuple):
    etag: str
    modified: datetime


def listing(s3: Any, place: Place) -> dict[str, Listed]:
    """Key -> ETag and LastModified of every current object under the place's prefix."""
    found: dict[str, Listed] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=place.bucket, Prefix=place.prefix):
        found.update({o["Key"]: Listed(o["ETag"], o["LastModified"]) for o in page.get("Contents", [])})
    return found


def sync(s3: Any, source: Place, target: Place, kms_key_arn: str, copied: Copied,
         since: datetime | None = None) -> Copied:
    """One pass: ``target`` holds what ``source`` holds (new and changed
    objects copied, objects deleted from the source deleted). An object the
    source never held (no version there) stays: written to the target by a
    runtime still holding the other record (the buckets are versioned)."""
    have = listing(source.s3(s3), source)
    there = listing(target.s3(s3), target)

    def changed_since(key: str, obj: Listed) -> bool:
        if key not in there:
            return True
        if key in copied.etags:
            return copied.etags[key] != obj.etag
        return since is None or obj.modified > since - CLOCK_SLACK

    changed = [key for key, obj in have.items() if changed_since(key, obj)]
    _copy_all(s3, source, target, changed, kms_key_arn)
    copied.etags.update({key: have[key].etag for key in changed})
    copied.objects += len(changed)
    gone = [key for key in there if key not in have]
    if gone:
        held = {v["Key"] for v in _versions(source.s3(s3), source)}
        gone = [key for key in gone if key in held]
    _delete(target.s3(s3), target.bucket, [{"Key": key} for key in gone])
    for key in gone:
        copied.etags.pop(key, None)
    copied.removed += len(gone)
    return copied


def carry_late(s3: Any, source: Place, target: Place, kms_key_arn: str) -> list[str]:
    """Copy the objects ``source`` holds that ``target`` never had (no version,
    no delete marker): written to the old prefix after the freeze's pass by a
    runtime still holding the old record, or through an upload URL signed
    before the switch. An object the tenant deleted in ``target`` since has a
    delete marker there and stays deleted. Returns the keys copied."""
    seen = {v["Key"] for v in _versions(target.s3(s3), target)}
    late = [key for key in listing(source.s3(s3), source) if key not in seen]
    _copy_all(s3, source, target, late, kms_key_arn)
    return late


def remove(s3: Any, place: Place) -> int:
    """Every version and delete marker under the prefix (the buckets are
    versioned): nothing of the tenant is left there. Returns the count."""
    versions = list(_versions(place.s3(s3), place))
    _delete(place.s3(s3), place.bucket, versions)
    return len(versions)


def _copy_all(s3: Any, source: Place, target: Place, keys: list[str], kms_key_arn: str) -> None:
    """Copy each key, ``COPY_WORKERS`` at a time (a boto3 client is
    thread-safe): CopyObject sent to the target's account and region, or,
    to another account, read and written by each side's own client."""
    src, dst = source.s3(s3), target.s3(s3)

    def server_side(key: str) -> None:
        dst.copy_object(Bucket=target.bucket, Key=key, CopySource={"Bucket": source.bucket, "Key": key},
                        ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key_arn,
                        MetadataDirective="COPY", TaggingDirective="COPY")

    def streamed(key: str) -> None:
        obj = src.get_object(Bucket=source.bucket, Key=key)
        extra = _as_written(obj, src.get_object_tagging(Bucket=source.bucket, Key=key)["TagSet"], kms_key_arn)
        with obj["Body"] as body:  # multipart above boto3's threshold, never whole in memory
            dst.upload_fileobj(body, target.bucket, key, ExtraArgs=extra)

    if not keys:
        return
    with ThreadPoolExecutor(min(COPY_WORKERS, len(keys))) as pool:
        list(pool.map(streamed if target.other_account else server_side, keys))  # the first failure is raised


def copy_version(s3: Any, source: Place, target: Place, key: str, version_id: str, kms_key_arn: str) -> str:
    """One version of ``key`` in ``source`` (one a backup pins) written to
    ``target`` as its newest version, under ``kms_key_arn``; returns its id
    there. Across accounts read and written by each side's client (the
    version read whole: backups pin small objects more than large ones)."""
    src, dst = source.s3(s3), target.s3(s3)
    if not target.other_account:
        return dst.copy_object(Bucket=target.bucket, Key=key, ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key_arn,
                               CopySource={"Bucket": source.bucket, "Key": key, "VersionId": version_id},
                               MetadataDirective="COPY", TaggingDirective="COPY")["VersionId"]
    obj = src.get_object(Bucket=source.bucket, Key=key, VersionId=version_id)
    tags = src.get_object_tagging(Bucket=source.bucket, Key=key, VersionId=version_id)["TagSet"]
    with obj["Body"] as body:
        return dst.put_object(Bucket=target.bucket, Key=key, Body=body.read(),
                              **_as_written(obj, tags, kms_key_arn))["VersionId"]


def latest(s3: Any, place: Place) -> dict[str, str | None]:
    """Key -> the version id of its current object under the prefix (None: a
    delete marker is current)."""
    found: dict[str, str | None] = {}
    for page in place.s3(s3).get_paginator("list_object_versions").paginate(Bucket=place.bucket,
                                                                           Prefix=place.prefix):
        found.update({v["Key"]: v["VersionId"] for v in page.get("Versions", []) if v["IsLatest"]})
        found.update({m["Key"]: None for m in page.get("DeleteMarkers", []) if m["IsLatest"]})
    return found


def _as_written(obj: dict[str, Any], tags: list[dict[str, str]], kms_key_arn: str) -> dict[str, Any]:
    """The write parameters that keep an object's metadata, type and tags, under ``kms_key_arn``."""
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_arn, "Metadata": obj.get("Metadata", {}),
            **({"ContentType": obj["ContentType"]} if obj.get("ContentType") else {}),
            **({"Tagging": urlencode({t["Key"]: t["Value"] for t in tags})} if tags else {})}


def _versions(s3: Any, place: Place) -> Iterator[dict[str, str]]:
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=place.bucket, Prefix=place.prefix):
        for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
            yield {"Key": item["Key"], "VersionId": item["VersionId"]}


def _delete(s3: Any, bucket: str, objects: list[dict[str, str]]) -> None:
    for start in range(0, len(objects), DELETE_BATCH):
        failed = s3.delete_objects(Bucket=bucket, Delete={"Objects": objects[start:start + DELETE_BATCH],
                                                          "Quiet": True}).get("Errors")
        if failed:
            raise TenantctlError(f"s3://{bucket}: {len(failed)} objects not deleted, first: {failed[0]}")
