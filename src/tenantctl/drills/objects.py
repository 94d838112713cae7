"""The tenant prefix at backup time (keys, sizes, ETags, version ids) and its
restore from those versions — into a scratch prefix, or back in place.

Drill data lives under ``<prefix>backups/`` and is never part of the manifest."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tenantctl.drills.layout import BACKUPS
from tenantctl.drills.models import Check, ObjectEntry

COPY_LIMIT = 5 * 1024**3  # copy_object's single-request limit


def backups_prefix(prefix: str) -> str:
    return prefix + BACKUPS


def scratch_prefix(prefix: str, restore_id: str) -> str:
    """Where a scratch restore copies the tenant's objects."""
    return f"{backups_prefix(prefix)}scratch/{restore_id}/"


def _current(s3: Any, bucket: str, prefix: str) -> Iterator[dict]:
    """Current versions under the prefix (version ids when the bucket is versioned)."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for v in page.get("Versions", []):
            if v.get("IsLatest"):
                yield v


def object_manifest(s3: Any, bucket: str, prefix: str) -> list[ObjectEntry]:
    skip = backups_prefix(prefix)
    entries = [
        ObjectEntry(key=v["Key"][len(prefix):], size=v["Size"], etag=v["ETag"].strip('"'),
                    version_id=None if v.get("VersionId") in (None, "null") else v["VersionId"])
        for v in _current(s3, bucket, prefix) if not v["Key"].startswith(skip)
    ]
    return sorted(entries, key=lambda e: e.key)


def is_empty(s3: Any, bucket: str, prefix: str) -> bool:
    return not s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0)


def _copy(s3: Any, bucket: str, source_key: str, entry: ObjectEntry, dest_key: str, sse: dict[str, str]) -> None:
    source = {"Bucket": bucket, "Key": source_key}
    if entry.version_id:
        source["VersionId"] = entry.version_id
    if entry.size <= COPY_LIMIT:
        s3.copy_object(Bucket=bucket, Key=dest_key, CopySource=source, **sse)
    else:  # managed multipart copy (the ETag then differs: verified by size)
        s3.copy(source, bucket, dest_key, ExtraArgs=sse)


def restore_objects(s3: Any, bucket: str, prefix: str, entries: list[ObjectEntry], dest_prefix: str,
                    sse: dict[str, str]) -> int:
    """Copy each manifest version to ``dest_prefix``, stored with ``sse`` (the
    tenant's key: a copy without it would take the bucket's default, the
    platform key); in place (dest == prefix) only what differs from the
    manifest is copied and objects created after it get a delete marker
    (recoverable on a versioned bucket)."""
    in_place = dest_prefix == prefix
    current = {e.key: e for e in object_manifest(s3, bucket, prefix)} if in_place else {}
    copied = 0
    for entry in entries:
        now = current.pop(entry.key, None)
        if in_place and now is not None and now.etag == entry.etag and now.size == entry.size:
            continue
        _copy(s3, bucket, prefix + entry.key, entry, dest_prefix + entry.key, sse)
        copied += 1
    for stray in current:  # in place only: newer than the backup
        s3.delete_object(Bucket=bucket, Key=prefix + stray)
    return copied


def verify_objects(s3: Any, bucket: str, dest_prefix: str, expected: list[ObjectEntry]) -> list[Check]:
    found = {e.key: e for e in object_manifest(s3, bucket, dest_prefix)}
    checks = [Check(name="objects: count", expected=str(len(expected)), actual=str(len(found)),
                    ok=len(found) == len(expected))]
    bad = []
    for e in expected:
        got = found.get(e.key)
        if got is None:
            bad.append(f"{e.key} missing")
        elif got.size != e.size:
            bad.append(f"{e.key} size {got.size} != {e.size}")
        elif "-" not in e.etag and got.etag != e.etag:  # multipart ETags are not content hashes
            bad.append(f"{e.key} etag {got.etag} != {e.etag}")
    extra = sorted(set(found) - {e.key for e in expected})
    bad += [f"{k} unexpected" for k in extra]
    checks.append(Check(name="objects: keys, sizes, ETags", expected=f"{len(expected)} matching",
                        actual="all match" if not bad else "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""),
                        ok=not bad))
    return checks


def delete_prefix(s3: Any, bucket: str, prefix: str) -> int:
    """Remove every version under a scratch prefix."""
    removed = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        batch = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                 for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        for i in range(0, len(batch), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": batch[i:i + 1000], "Quiet": True})
            removed += len(batch[i:i + 1000])
    return removed
