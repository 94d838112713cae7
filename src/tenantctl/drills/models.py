"""What crosses the drill's boundaries: the backup manifest (stored next to the
encrypted dump), the restore result and the drill report (stored as history)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, Field

from tenantctl.drills.restore_target import Target
from tenantctl.models import TenantRecord

BackupKind = Literal["pg_dump-schema", "logical (sandbox)", "rds-snapshot"]
# Why a backup was taken: by hand / `drill run`, by `deprovision` just before
# destroying, right after a restore brought a deprovisioned tenant back, or of
# the live tenant just before `drill restore --overwrite` replaced it.
BackupReason = Literal["manual", "final", "after-restore", "before-overwrite"]


class TableCheck(BaseModel):
    rows: int
    # Sum over rows of the first 64 bits of md5(row::text): order-independent, computed in SQL.
    checksum: str


class ObjectEntry(BaseModel):
    key: str            # relative to the tenant prefix
    size: int
    etag: str
    version_id: str | None = None


class DumpInfo(BaseModel):
    key: str
    plaintext_bytes: int
    stored_bytes: int
    sha256: str
    encrypted_data_key: str
    nonce_prefix: str   # hex
    chunk_bytes: int


class SnapshotInfo(BaseModel):
    identifier: str
    arn: str = ""
    instance: str


class BackupManifest(BaseModel):
    """Everything about one backup (sealed under the tenant's key as manifest.enc;
    format 1 backups stored it in clear as manifest.json)."""

    format: Literal[1, 2] = 2
    backup_id: str
    tenant_id: str
    kind: BackupKind
    started_at: datetime
    finished_at: datetime
    key_arn: str
    database: str
    schema_name: str
    dump: DumpInfo | None = None          # logical backups
    # The dump's pg_dump --compress (tenantctl.drills.compression); None: an RDS
    # snapshot, or a logical backup from before the option (gzip, pg_dump's default).
    compression: str | None = None
    # The method tenantctl compressed the dump's stream with (``compression.STREAMED``: pg_dump
    # wrote it uncompressed; a restore decompresses it before pg_restore); None: as pg_dump wrote it.
    stream_compression: str | None = None
    snapshot: SnapshotInfo | None = None  # rds-snapshot backups
    tables: dict[str, TableCheck]
    objects: list[ObjectEntry]
    record: TenantRecord
    reason: BackupReason = "manual"
    # A workspace's backup (its schema, prefix and key); None: the tenant's own.
    workspace: str | None = None
    # The committed stack spec (stacks/Pulumi.<id>.yaml) at backup time: what a
    # restore after deprovision re-provisions (the stack file is gone by then).
    spec: dict[str, Any] | None = None

    @property
    def object_bytes(self) -> int:
        return sum(o.size for o in self.objects)


class BackupIndex(BaseModel):
    """What a backup keeps in clear (index.json, written last): enough to list
    backups and to prepare a restore without KMS, and no tenant data — ids,
    kind, reason, times, the key's ARN, the backup's data key as KMS wrapped it
    (opens only with the tenant's key), the sealed manifest's nonce, the
    encrypted dump's size, and the committed stack spec (configuration that
    git keeps in clear anyway; a restore after deprovision re-provisions from
    it before the key's deletion is cancelled)."""

    format: Literal[1, 2] = 2
    backup_id: str
    tenant_id: str
    kind: BackupKind
    reason: BackupReason = "manual"
    started_at: datetime
    finished_at: datetime
    key_arn: str
    encrypted_data_key: str | None = None  # None: a format 1 backup (manifest.json in clear)
    manifest_nonce: str | None = None      # hex
    stored_bytes: int | None = None        # the encrypted dump; None for an RDS snapshot
    spec: dict[str, Any] | None = None
    workspace: str | None = None           # a workspace's backup


class RestoreResult(BaseModel):
    tenant_id: str
    backup_id: str
    target: Target
    database: str
    schema_name: str
    host: str
    port: int
    object_prefix: str
    objects_restored: int
    started_at: datetime
    finished_at: datetime
    scratch_instance: str | None = None  # the RDS instance restored from the snapshot
    # Set when the restore verified itself (restore after deprovision verifies
    # before re-keying, so a later verification would compare re-keyed rows).
    checks: list[Check] | None = None
    notes: list[str] = Field(default_factory=list)
    # The manifest the restore opened (under the tenant's key); not part of any report.
    manifest: BackupManifest | None = Field(default=None, exclude=True, repr=False)

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


class Check(BaseModel):
    name: str
    expected: str
    actual: str
    ok: bool


class Verdict(str, Enum):
    passed = "pass"
    failed = "fail"


class DrillReport(BaseModel):
    drill_id: str
    tenant_id: str
    tier: str
    kind: Literal["run", "restore"]
    workspace: str | None = None  # a drill of one of the tenant's workspaces
    backup_id: str | None = None
    backup_kind: str | None = None
    target: str = "scratch"
    started_at: datetime
    finished_at: datetime
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    rpo_basis: str = ""
    max_rto: float | None = None
    max_rpo: float | None = None
    dump_bytes: int | None = None
    stored_bytes: int | None = None
    object_count: int | None = None
    object_bytes: int | None = None
    checks: list[Check] = Field(default_factory=list)
    verdict: Verdict
    reasons: list[str] = Field(default_factory=list)
    key_unusable: bool = False  # the tenant key was pending deletion, disabled or refused
    cleaned_up: bool = False
    scratch: str | None = None
    notes: list[str] = Field(default_factory=list)  # what a restore after deprovision did besides the data

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.passed


RestoreResult.model_rebuild()
