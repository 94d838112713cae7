"""Where backups live: ``s3://<bucket>/<prefix>backups/<backup-id>/``.

Everything a backup holds is under the tenant's key, so crypto-shredding the
key shreds the backup: ``db.dump.enc`` (envelope-encrypted with a data key of
the tenant key, and stored SSE-KMS under it) and ``manifest.enc`` (the
manifest, sealed with a key derived from that data key, SSE-KMS likewise).
Only ``index.json`` is in clear (``BackupIndex``: no tenant data), written
last: a backup without it is incomplete and ignored. Listing reads indexes
only (no KMS call); the manifest is opened with the tenant's current key from
the registry, never a key a file names. Backups of format 1 kept the manifest
in clear (``manifest.json``): they are still listed and restored.

Reads are confined to the tenant's own prefix, and a manifest or index naming
another tenant or backup is refused, as is a manifest whose schema is not its
owner's or whose dump lies outside its backup's folder: a restore drops and
fills the schema a manifest names, as the database admin.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from tenantctl.drills import envelope
from tenantctl.drills.models import BackupIndex, BackupManifest
from tenantctl.drills.objects import backups_prefix
from tenantctl.errors import BackupCorrupt, NotFound
from tenantctl.models import TenantRecord, TenantStatus
from tenantctl.naming import OwnerNames

PART = 8 * 1024 * 1024  # multipart part size (S3 minimum is 5 MiB)
RESERVED = ("drills", "scratch")  # folders under backups/ that are not backups
DUMP, MANIFEST, INDEX, LEGACY_MANIFEST = "db.dump.enc", "manifest.enc", "index.json", "manifest.json"
Doc = TypeVar("Doc", BackupIndex, BackupManifest)


def new_id(now: datetime) -> str:
    """Sorts by age to the millisecond: two backups of one second (a restore's
    "after-restore" one right behind a deprovision's final one) were ordered by
    their random suffix, and "latest" could be the older."""
    # Letters, digits and hyphens only: RDS snapshot identifiers are made from it.
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def backup_dir(record: TenantRecord, backup_id: str) -> str:
    return f"{backups_prefix(record.resources.prefix)}{backup_id}/"


def tenant_sse(record: TenantRecord) -> dict[str, str]:
    """S3 encryption at rest under the tenant's key (not the bucket's platform default)."""
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": record.resources.kms_key_arn}


def upload_stream(s3: Any, bucket: str, key: str, chunks: Iterable[bytes], sse: dict[str, str]) -> int:
    """Multipart upload of a byte stream holding at most one part in memory."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, **sse)["UploadId"]
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


def put_backup(s3: Any, record: TenantRecord, manifest: BackupManifest, key: envelope.DataKey) -> BackupIndex:
    """Seal and store the manifest, then write the index that completes the backup."""
    context = envelope.encryption_context(record.tenant_id, manifest.backup_id, manifest.workspace)
    sealed, nonce = envelope.seal_document(key, context, manifest.model_dump_json().encode())
    where, bucket = backup_dir(record, manifest.backup_id), record.resources.bucket
    s3.put_object(Bucket=bucket, Key=where + MANIFEST, Body=sealed, ContentType="application/octet-stream",
                  **tenant_sse(record))
    index = BackupIndex(backup_id=manifest.backup_id, tenant_id=manifest.tenant_id, kind=manifest.kind,
                        reason=manifest.reason, started_at=manifest.started_at, finished_at=manifest.finished_at,
                        key_arn=manifest.key_arn, encrypted_data_key=key.encrypted_b64, manifest_nonce=nonce.hex(),
                        stored_bytes=manifest.dump.stored_bytes if manifest.dump else None, spec=manifest.spec,
                        workspace=manifest.workspace)
    s3.put_object(Bucket=bucket, Key=where + INDEX, Body=index.model_dump_json(indent=2).encode(),
                  ContentType="application/json")
    return index


def _backup_ids(s3: Any, record: TenantRecord) -> Iterator[str]:
    root = backups_prefix(record.resources.prefix)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=record.resources.bucket, Prefix=root,
                                                             Delimiter="/"):
        for p in page.get("CommonPrefixes", []):
            name = p["Prefix"][len(root):].rstrip("/")
            if name not in RESERVED:
                yield name


def _read(s3: Any, record: TenantRecord, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=record.resources.bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise


def _parse(model: type[Doc], body: bytes, record: TenantRecord, backup_id: str, name: str) -> Doc:
    """``body`` as ``model``; refused when unreadable or naming another tenant or backup."""
    try:
        found = model.model_validate_json(body)
    except ValueError as exc:
        raise BackupCorrupt(f"backup {backup_id}: {name} is unreadable ({str(exc).splitlines()[0]})") from None
    if found.tenant_id != record.tenant_id or found.backup_id != backup_id:
        raise BackupCorrupt(f"backup {backup_id} under tenant {record.tenant_id!r} names tenant "
                            f"{found.tenant_id!r} / backup {found.backup_id!r}: refused")
    return found


def _confined(manifest: BackupManifest, record: TenantRecord, backup_id: str, workspace: str | None) -> BackupManifest:
    """``manifest`` when it describes its owner's own schema and dump; BackupCorrupt otherwise."""
    where = f"backup {backup_id} of {record.tenant_id!r}"
    owner = OwnerNames(record.tenant_id, workspace)
    if manifest.workspace != workspace or owner.s3_prefix != record.resources.prefix:
        raise BackupCorrupt(f"{where}: the manifest is of workspace {manifest.workspace!r}, its index of "
                            f"{workspace!r}, and it lies under {record.resources.prefix!r}: refused")
    schema = owner.schema
    if manifest.schema_name != schema:
        raise BackupCorrupt(f"{where}: the manifest names schema {manifest.schema_name!r}, not its owner's "
                            f"{schema!r}: refused")
    dump = backup_dir(record, backup_id) + DUMP
    if manifest.dump is not None and manifest.dump.key != dump:
        raise BackupCorrupt(f"{where}: the manifest names dump {manifest.dump.key!r}, not {dump!r}: refused")
    return manifest


def _legacy(s3: Any, record: TenantRecord, backup_id: str) -> BackupManifest | None:
    """A format 1 backup's manifest (in clear)."""
    body = _read(s3, record, backup_dir(record, backup_id) + LEGACY_MANIFEST)
    return None if body is None else _parse(BackupManifest, body, record, backup_id, LEGACY_MANIFEST)


def backup_index(s3: Any, record: TenantRecord, backup_id: str) -> BackupIndex:
    """The clear index of one backup (no KMS call)."""
    if "/" in backup_id or backup_id in RESERVED or not backup_id:
        raise NotFound(f"no backup {backup_id!r} for tenant {record.tenant_id!r}")
    key = backup_dir(record, backup_id) + INDEX
    body = _read(s3, record, key)
    if body is None:
        legacy = _legacy(s3, record, backup_id)
        if legacy is None:
            raise NotFound(f"no backup {backup_id!r} for tenant {record.tenant_id!r} "
                           f"(nothing at s3://{record.resources.bucket}/{key})")
        return BackupIndex(format=1, stored_bytes=legacy.dump.stored_bytes if legacy.dump else None,
                           **legacy.model_dump(include={"backup_id", "tenant_id", "kind", "reason", "started_at",
                                                        "finished_at", "key_arn", "spec", "workspace"}))
    return _parse(BackupIndex, body, record, backup_id, INDEX)


def load_manifest(s3: Any, kms: Any, record: TenantRecord, backup_id: str) -> BackupManifest:
    """The manifest of one backup, opened with the tenant's key (``record``'s,
    the registry's): a KMS call; KeyUnusable when that key cannot open it."""
    index = backup_index(s3, record, backup_id)
    if index.format == 1:
        return _confined(_legacy(s3, record, backup_id), record, backup_id, index.workspace)
    context = envelope.encryption_context(record.tenant_id, backup_id, index.workspace)
    data_key = envelope.open_data_key(kms, record.resources.kms_key_arn, index.encrypted_data_key, context)
    where = backup_dir(record, backup_id) + MANIFEST
    sealed = _read(s3, record, where)
    if sealed is None:
        raise BackupCorrupt(f"backup {backup_id}: {MANIFEST} is missing although its index exists")
    body = envelope.open_document(data_key, bytes.fromhex(index.manifest_nonce), context, sealed, where)
    return _confined(_parse(BackupManifest, body, record, backup_id, "the manifest"), record, backup_id,
                     index.workspace)


def list_backups(s3: Any, record: TenantRecord) -> list[BackupIndex]:
    """Complete backups, oldest first, from their indexes (no KMS call;
    unreadable ones are skipped here, restoring them reports why)."""
    out = []
    for backup_id in sorted(_backup_ids(s3, record)):
        try:
            out.append(backup_index(s3, record, backup_id))
        except (NotFound, BackupCorrupt):
            continue
    return out


def latest_backup(s3: Any, record: TenantRecord, workspace: str | None = None) -> BackupIndex:
    """The newest complete backup of the tenant (or of its ``workspace``: ``record`` is then its view)."""
    backups = list_backups(s3, record)
    if backups:
        return backups[-1]
    tid = record.tenant_id
    if record.status is TenantStatus.deprovisioned:
        raise NotFound(f"tenant {tid!r} was deprovisioned and has no backup (none taken, or purged): "
                       "nothing to restore it from")
    if workspace is not None:
        raise NotFound(f"workspace {workspace!r} of {tid!r} has no backup yet: "
                       f"run `tenantctl drill backup {tid} --workspace {workspace}`")
    raise NotFound(f"tenant {tid!r} has no backup yet: run `tenantctl drill backup {tid}`")

