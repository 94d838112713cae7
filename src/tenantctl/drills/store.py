"""Where backups live: ``s3://<bucket>/<prefix>backups/<backup-id>/`` with
``db.dump.enc`` and ``manifest.json`` (written last: a backup without a
manifest is incomplete and ignored). Reads are confined to the tenant's own
prefix, and a manifest naming another tenant is refused."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from tenantctl.drills.models import BackupManifest
from tenantctl.drills.objects import backups_prefix
from tenantctl.errors import BackupCorrupt, NotFound
from tenantctl.models import TenantRecord

PART = 8 * 1024 * 1024  # multipart part size (S3 minimum is 5 MiB)
RESERVED = ("drills", "scratch")  # folders under backups/ that are not backups


def new_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def backup_dir(record: TenantRecord, backup_id: str) -> str:
    return f"{backups_prefix(record.resources.prefix)}{backup_id}/"


def upload_stream(s3: Any, bucket: str, key: str, chunks: Iterable[bytes]) -> int:
    """Multipart upload of a byte stream holding at most one part in memory."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts, buf, total = [], bytearray(), 0

    def flush() -> None:
        resp = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=len(parts) + 1, Body=bytes(buf))
        parts.append({"PartNumber": len(parts) + 1, "ETag": resp["ETag"]})
        buf.clear()

    try:
        for chunk in chunks:
            buf += chunk
            total += len(chunk)
            if len(buf) >= PART:
                flush()
        if buf or not parts:
            flush()
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    except BaseException:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    return total


def put_manifest(s3: Any, record: TenantRecord, manifest: BackupManifest) -> None:
    s3.put_object(Bucket=record.resources.bucket, Key=backup_dir(record, manifest.backup_id) + "manifest.json",
                  Body=manifest.model_dump_json(indent=2).encode(), ContentType="application/json")


def _backup_ids(s3: Any, record: TenantRecord) -> Iterator[str]:
    root = backups_prefix(record.resources.prefix)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=record.resources.bucket, Prefix=root,
                                                             Delimiter="/"):
        for p in page.get("CommonPrefixes", []):
            name = p["Prefix"][len(root):].rstrip("/")
            if name not in RESERVED:
                yield name


def load_manifest(s3: Any, record: TenantRecord, backup_id: str) -> BackupManifest:
    if "/" in backup_id or backup_id in RESERVED or not backup_id:
        raise NotFound(f"no backup {backup_id!r} for tenant {record.tenant_id!r}")
    key = backup_dir(record, backup_id) + "manifest.json"
    try:
        body = s3.get_object(Bucket=record.resources.bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
            raise NotFound(f"no backup {backup_id!r} for tenant {record.tenant_id!r} "
                           f"(nothing at s3://{record.resources.bucket}/{key})") from None
        raise
    try:
        manifest = BackupManifest.model_validate_json(body)
    except ValueError as exc:
        raise BackupCorrupt(f"backup {backup_id}: manifest.json is unreadable ({str(exc).splitlines()[0]})") from None
    if manifest.tenant_id != record.tenant_id or manifest.backup_id != backup_id:
        raise BackupCorrupt(f"backup {backup_id} under tenant {record.tenant_id!r} names tenant "
                            f"{manifest.tenant_id!r} / backup {manifest.backup_id!r}: refused")
    return manifest


def list_manifests(s3: Any, record: TenantRecord) -> list[BackupManifest]:
    """Complete backups, oldest first (unreadable ones are skipped here; restoring them reports why)."""
    out = []
    for backup_id in sorted(_backup_ids(s3, record)):
        try:
            out.append(load_manifest(s3, record, backup_id))
        except (NotFound, BackupCorrupt):
            continue
    return out


def latest_manifest(s3: Any, record: TenantRecord) -> BackupManifest:
    manifests = list_manifests(s3, record)
    if not manifests:
        raise NotFound(f"tenant {record.tenant_id!r} has no backup yet: run `tenantctl drill backup {record.tenant_id}`")
    return manifests[-1]
