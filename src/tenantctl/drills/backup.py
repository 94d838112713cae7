"""`drill backup`: a consistent, encrypted backup of one tenant.

Logical (pooled: the tenant's schema; dedicated on the sandbox: its whole
database): a REPEATABLE READ transaction exports its snapshot, the row counts
and checksums are taken in it and pg_dump dumps that very snapshot, so the
manifest describes exactly what the dump holds. The dump streams through
envelope encryption into a multipart upload: never whole in memory or on disk.
Dedicated on AWS: an RDS snapshot (checksums taken from the instance just before);
dedicated on the sandbox: the logical dump, plus a snapshot of the tenant's
moto instance, so that drills exercise the snapshot path too."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from typing import Any

from botocore.exceptions import ClientError

from tenantctl.drills import envelope, store
from tenantctl.drills.compression import Compression, require
from tenantctl.drills.context import DrillContext
from tenantctl.drills.models import BackupIndex, BackupKind, BackupManifest, BackupReason, DumpInfo
from tenantctl.drills.objects import object_manifest
from tenantctl.drills.pgtools import find_tools, pg_env
from tenantctl.drills.scope import scoped_context
from tenantctl.drills.tables import server_major, table_checks
from tenantctl.engines.base import EventSink, phase
from tenantctl.errors import Conflict, InvalidInput, KeyUnusable, TenantctlError
from tenantctl.models import TenantRecord, TenantStatus, Tier, utcnow
from tenantctl.naming import OwnerNames, require_valid
from tenantctl.registry import refuse_held_elsewhere


def backup_kind(record: TenantRecord, ctx: DrillContext) -> BackupKind:
    if record.tier is Tier.pooled:
        return "pg_dump-schema"
    # The sandbox's RDS instances are moto's (no data): a logical dump, which also snapshots the instance.
    return "logical (sandbox)" if ctx.is_sandbox else "rds-snapshot"


def key_id(key_arn: str) -> str:
    """The bare key id: accepted everywhere (moto's key-state calls reject ARNs)."""
    return key_arn.rsplit("/", 1)[-1]


def key_state(kms: Any, key_arn: str) -> tuple[str, str]:
    """(KeyState, deletion date or '') of the tenant key."""
    meta = kms.describe_key(KeyId=key_arn)["KeyMetadata"]
    when = meta.get("DeletionDate")
    return meta.get("KeyState", "Unknown"), f"{when:%Y-%m-%d}" if when else ""


def key_tags(kms: Any, key_arn: str) -> dict[str, str]:
    return {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key_id(key_arn)).get("Tags", [])}


def earlier_key(kms: Any, record: TenantRecord, index: BackupIndex) -> str | None:
    """Why the current key of the backup's owner (``record``: the tenant, or a
    workspace's view) does not open it, when its clear index names an earlier
    key of that same owner (KMS tags it as the tenant's, or as that
    workspace's): which key, its state, and how such a backup is restored.
    None otherwise: KMS's refusal stands (another tenant's backup, a data key
    tampered with)."""
    current, tid, name = record.resources.kms_key_arn, record.tenant_id, index.workspace
    if not index.key_arn or key_id(index.key_arn) == key_id(current):
        return None
    try:
        tags, (state, when) = key_tags(kms, index.key_arn), key_state(kms, index.key_arn)
    except ClientError:
        return None
    if tags.get("tenant") != tid or tags.get("workspace") != name:
        return None
    who = f"workspace {name} of {tid}" if name else f"tenant {tid}"
    why = (f"backup {index.backup_id} was made under an earlier key of {who}, {index.key_arn} "
           f"({state}{f', deleted on {when}' if when else ''}), not under its current key {current}: "
           "only that key opens it")
    if name is None:
        return why + f"; restore a backup made under the current key (`tenantctl drill history {tid}`)"
    return why + (f"; to restore it, remove the workspace (`tenantctl workspace remove {tid} {name} --yes` backs "
                  f"it up as it is now first) and bring it back from this backup before that key is deleted: "
                  f"`tenantctl drill restore {tid} --workspace {name} --backup {index.backup_id} "
                  "--target in-place --yes`")


def require_usable_key(kms: Any, record: TenantRecord) -> None:
    state, when = key_state(kms, record.resources.kms_key_arn)
    if state == "PendingDeletion":
        raise KeyUnusable(
            f"tenant {record.tenant_id!r}: KMS key {record.resources.kms_key_arn} is pending deletion "
            f"(deleted on {when}); its backups cannot be made or read until the deletion is cancelled "
            f"(for a deprovisioned tenant, `tenantctl drill restore {record.tenant_id} --target in-place --yes` "
            "does that within its retention window)")
    if state != "Enabled":
        raise KeyUnusable(f"tenant {record.tenant_id!r}: KMS key {record.resources.kms_key_arn} is {state}")


def committed_spec(ctx: DrillContext, record: TenantRecord) -> dict[str, Any] | None:
    """The tenant's committed stack spec (of the stack its record names), when
    the context has a workspace."""
    ws = ctx.workspace
    if ws is None:
        return None
    from tenantctl.stackconfig import read_tenant, stack_file

    path = stack_file(ws.stacks_dir, record.current_stack)
    return read_tenant(path).model_dump(mode="json") if path.exists() else None


def backup(ctx: DrillContext, record: TenantRecord, reason: BackupReason = "manual",
           compression: Compression | None = None, on_event: EventSink | None = None) -> BackupManifest:
    """``compression``: the logical dump's (default gzip); an RDS snapshot has none.
    ``on_event``: the dump's (or snapshot's) phase, once every refusal has passed.
    A context scoped to a workspace (``tenantctl.drills.scope``) backs that
    workspace up: ``record`` is then its view."""
    require_valid(record.tenant_id)
    if record.resources is None:
        raise InvalidInput(f"tenant {record.tenant_id!r} has no resources recorded (never provisioned)")
    live = (ctx.registry.get(record.tenant_id) if ctx.registry is not None else None) or record
    refuse_held_elsewhere(live)
    if live.status in (TenantStatus.deprovisioning, TenantStatus.deprovisioned):
        left = ("its earlier backups can still be restored" if store.list_backups(ctx.s3, record)
                else "and no backup of it is left to restore")
        if live.status is TenantStatus.deprovisioning:  # mid-operation: a conflict, as a locked tenant
            raise Conflict(f"tenant {record.tenant_id!r} is deprovisioning (its deprovision has not finished: "
                           f"`tenantctl deprovision {record.tenant_id}` again finishes it): nothing live to back "
                           f"up ({left})")
        raise InvalidInput(f"tenant {record.tenant_id!r} is deprovisioned: nothing live to back up ({left})")
    if not record.resources.kms_key_arn:  # a removed workspace's view
        raise InvalidInput(f"workspace {ctx.scope!r} of {record.tenant_id!r} was removed: nothing live to back up "
                           "(its backups can still be restored)")
    require_usable_key(ctx.kms, record)
    kind = backup_kind(record, ctx)
    extra = {"reason": reason, "spec": committed_spec(ctx, record), "workspace": ctx.scope}
    if kind == "rds-snapshot":
        from tenantctl.drills.rds import snapshot_backup

        phase(on_event, record.tenant_id, "taking an RDS snapshot")
        return snapshot_backup(ctx, record, extra)
    return logical_backup(ctx, record, kind, extra, compression or Compression(), on_event)


def final_backup(ws: Any, record: TenantRecord, workspace: str | None = None) -> BackupManifest:
    """The backup `deprovision` (or `workspace remove`, of ``workspace``) takes
    before destroying anything (pass --no-final-backup to go without). Failing
    it stops the removal."""
    from tenantctl.drills.context import context_from_workspace

    what = record.tenant_id if workspace is None else f"workspace {workspace} of {record.tenant_id}"
    command = "deprovision" if workspace is None else "workspace remove"
    try:
        ctx, scoped = scoped_context(context_from_workspace(ws, record), record, workspace)
        return backup(ctx, scoped, reason="final")
    except Exception as exc:
        cls = type(exc) if isinstance(exc, TenantctlError) else TenantctlError
        raise cls(f"final backup of {what!r} failed, nothing was removed: {exc} "
                  f"(`tenantctl {command} --no-final-backup` goes ahead without one)") from None


def _stream_dump(cmd: list[str], env: dict[str, str], sink) -> None:
    """Run pg_dump, feeding its stdout to ``sink``; stderr goes to a file (no pipe deadlock)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)
        try:
            sink(proc.stdout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        if proc.wait() != 0:
            err.seek(0)
            raise TenantctlError(f"pg_dump failed ({proc.returncode}): {err.read().decode(errors='replace').strip()}")


def logical_backup(ctx: DrillContext, record: TenantRecord, kind: BackupKind,
                   extra: dict[str, Any] | None = None, compression: Compression | None = None,
                   on_event: EventSink | None = None) -> BackupManifest:
    res = record.resources
    compression = compression or Compression()
    store_conn = res.store
    started = utcnow()
    backup_id = store.new_id(started)
    workspace = (extra or {}).get("workspace")
    context = envelope.encryption_context(record.tenant_id, backup_id, workspace)
    key = envelope.new_data_key(ctx.kms, res.kms_key_arn, context)
    dump_key = store.backup_dir(record, backup_id) + store.DUMP
    digest, plain_bytes = hashlib.sha256(), 0

    def count(chunk: bytes) -> None:
        nonlocal plain_bytes
        digest.update(chunk)
        plain_bytes += len(chunk)

    with ctx.connect(store_conn.endpoint, store_conn.port, store_conn.database) as conn:
        tools = find_tools(server_major(conn), ctx.pg_bin_dir)
        # Refused here: nothing dumped or uploaded yet, nor said to be.
        compress = ["--compress=0"] if compression.streamed else require(tools, compression)
        phase(on_event, record.tenant_id, f"dumping ({compression}), encrypting and uploading")
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            # Same snapshot for the checks and the dump: the manifest describes the dump exactly.
            tables = table_checks(conn, store_conn.schema_name, OwnerNames(record.tenant_id, workspace).key,
                                  in_transaction=True)
            cmd = [str(tools / "pg_dump"), "--format=custom", *compress, "--no-password",
                   f"--snapshot={snapshot}", "-h", store_conn.endpoint, "-p", str(store_conn.port),
                   "-d", store_conn.database]
            if kind == "pg_dump-schema":
                cmd.append(f"--schema={store_conn.schema_name}")
            env = pg_env(ctx.admin_user, ctx.admin_password, record.tenant_id)
            stored = 0

            def upload(stdout) -> None:
                nonlocal stored
                source = compression.compressing(stdout) if compression.streamed else stdout
                stored = store.upload_stream(ctx.s3, res.bucket, dump_key,
                                             envelope.encrypt_stream(source, key, context, on_plain=count),
                                             store.tenant_sse(record))

            _stream_dump(cmd, env, upload)
    snapshot = None
    if record.tier is Tier.dedicated and ctx.rds is not None:  # the snapshot path is drilled as well
        from tenantctl.drills.rds import take_snapshot

        snapshot = take_snapshot(ctx, record, backup_id)
    manifest = BackupManifest(
        backup_id=backup_id, tenant_id=record.tenant_id, kind=kind, started_at=started, finished_at=utcnow(),
        key_arn=res.kms_key_arn, database=store_conn.database, schema_name=store_conn.schema_name,
        compression=str(compression), stream_compression=str(compression) if compression.streamed else None,
        dump=DumpInfo(key=dump_key, plaintext_bytes=plain_bytes, stored_bytes=stored, sha256=digest.hexdigest(),
                      encrypted_data_key=key.encrypted_b64, nonce_prefix=key.nonce_prefix.hex(),
                      chunk_bytes=envelope.CHUNK),
        snapshot=snapshot, tables=tables, objects=object_manifest(ctx.s3, res.bucket, res.prefix), record=record,
        **(extra or {}),
    )
    store.put_backup(ctx.s3, record, manifest, key)
    return manifest
