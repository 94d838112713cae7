"""`drill restore`: a backup into a scratch target (default) or back in place.

Scratch: a new database ``drill_<id>_<ts>`` on the same server (the schema keeps
its name there) restored with --no-acl, so only the admin can read the copy,
and the objects copied to ``<prefix>backups/scratch/<restore-id>/``. In place
(``--yes`` required): the live schema must hold no rows (absent, or the empty
tables provisioning makes) unless ``--overwrite``, which backs the live tenant
up first (reason ``before-overwrite``); the schema template is re-applied
afterwards for the tenant role, its grants and policies. A tombstoned tenant
inside its retention window is brought back by ``tenantctl.operations.revive``
(re-provision, then ``restore_logical`` in place). Restoring into a target that
holds rows is otherwise a conflict (exit 5), refused before the tenant's lock
is taken and not recorded as a drill.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg import sql

from tenant_runtime.registry import TENANT_STORE
from tenantctl import naming
from tenantctl.drills import envelope, store
from tenantctl.drills.backup import earlier_key, require_usable_key
from tenantctl.drills.compression import Compression, decompressed, require
from tenantctl.drills.context import DrillContext
from tenantctl.drills.models import BackupIndex, BackupManifest, Check, RestoreResult, Target
from tenantctl.drills.objects import delete_prefix, is_empty, restore_objects, scratch_prefix
from tenantctl.drills.pgtools import find_tools, pg_env
from tenantctl.drills.rds import drop_scratch_instance, restore_instance, snapshot_restore
from tenantctl.drills.scope import workspace_view
from tenantctl.drills.tables import server_major, table_rows
from tenantctl.errors import BackupCorrupt, Conflict, InvalidInput, KeyUnusable, TenantctlError, UsageError
from tenantctl.models import TenantRecord, TenantStatus, Tier, utcnow
from tenantctl.registry import refuse_open_move


def _database_exists(conn: Any, name: str) -> bool:
    return conn.execute("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %s)", (name,)).fetchone()[0]


def _pg_restore(ctx: DrillContext, record: TenantRecord, manifest: BackupManifest,
                host: str, port: int, database: str, tools, key_arn: str | None = None) -> None:
    """Stream s3 -> decrypt -> pg_restore stdin, checking the plaintext sha256.
    ``key_arn``: the registry's key of the tenant (default: the record's)."""
    dump = manifest.dump
    where = f"backup {manifest.backup_id} ({dump.key})"
    context = envelope.encryption_context(record.tenant_id, manifest.backup_id, manifest.workspace)
    # The tenant's own key, never the one the manifest names: a foreign backup cannot be opened.
    data_key = envelope.open_data_key(ctx.kms, key_arn or record.resources.kms_key_arn, dump.encrypted_data_key,
                                      context)
    body = ctx.s3.get_object(Bucket=record.resources.bucket, Key=dump.key)["Body"]
    cmd = [str(tools / "pg_restore"), "--no-password", "--no-owner", "--no-acl", "--exit-on-error",
           "--single-transaction", "-h", host, "-p", str(port), "-d", database]
    digest = hashlib.sha256()

    def opened() -> Iterator[bytes]:  # the stored plaintext, its digest taken as it goes by
        for plain in envelope.decrypt_stream(body, data_key, bytes.fromhex(dump.nonce_prefix), context, where):
            digest.update(plain)
            yield plain

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=err, stdout=subprocess.DEVNULL,
                                env=pg_env(ctx.admin_user, ctx.admin_password, record.tenant_id))
        try:
            chunks = opened()
            if manifest.stream_compression is not None:
                chunks = decompressed(manifest.stream_compression, chunks, where)
            for chunk in chunks:
                proc.stdin.write(chunk)
            if digest.hexdigest() != dump.sha256:
                raise BackupCorrupt(f"{where}: sha256 of the decrypted dump does not match the manifest")
            proc.stdin.close()
        except BrokenPipeError:
            pass  # pg_restore stopped early: its exit code and stderr say why
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.wait() != 0:
            err.seek(0)
            raise TenantctlError(f"pg_restore of {where} failed: {err.read().decode(errors='replace').strip()[-800:]}")


def _reapply_schema_template(conn: Any, tenant_id: str, workspace: str | None = None) -> None:
    """Role, grants and policies as provisioning makes them (the template is idempotent),
    for the tenant or the workspace the backup is of."""
    from tenantctl.tenant_schema_sql import schema_script

    names = naming.OwnerNames(tenant_id, workspace)
    conn.execute(schema_script(conn, tenant_id=names.key, role=names.db_role, schema=names.schema))


def _check_in_place(record: TenantRecord, yes: bool) -> None:
    if not yes:
        raise InvalidInput("--target in-place overwrites the live tenant: pass --yes to confirm")
    if record.status is TenantStatus.deprovisioned:
        raise InvalidInput(f"tenant {record.tenant_id!r} is deprovisioned: bringing it back re-provisions it "
                           "(tenantctl.operations.revive)")
    if record.status not in (TenantStatus.active, TenantStatus.suspended):
        raise Conflict(f"tenant {record.tenant_id!r} is {record.status.value}: wait for that operation to finish")
    # A restore replaces the store's tables under the link that carries its writes to the other store.
    refuse_open_move(record)


def restore(ctx: DrillContext, record: TenantRecord, manifest: BackupManifest,
            target: Target = Target.scratch, yes: bool = False, overwrite: bool = False) -> RestoreResult:
    """Restore ``manifest`` and return where it landed (timed: the RTO).
    ``overwrite`` (in place only): a target that holds rows is backed up
    (reason ``before-overwrite``) and then replaced, instead of refused."""
    naming.require_valid(record.tenant_id)
    started = utcnow()
    if overwrite and target is not Target.in_place:
        raise UsageError("Option '--overwrite' goes with '--target in-place' only (a scratch target is always new).")
    if target is Target.in_place:
        _check_in_place(record, yes)
    if manifest.kind == "rds-snapshot":
        if target is Target.in_place:
            raise InvalidInput("in-place restore of an RDS snapshot is a new instance + DNS cut-over: "
                               "restore to scratch and follow docs/drills.md")
        return snapshot_restore(ctx, record, manifest, started)
    if target is Target.scratch:
        result = restore_logical(ctx, record, manifest, target, started)
        if manifest.snapshot is None or ctx.rds is None:
            return result
        if record.tier is not Tier.dedicated:  # moved since: no live instance to take the scratch one's settings
            return result.model_copy(update={"notes": [*result.notes, (
                f"snapshot {manifest.snapshot.identifier} not restored: the tenant is {record.tier.value} now, with "
                "no instance of its own whose class, subnet group and security groups a scratch instance would "
                "take; its dump was restored and verified")]})
        # A logical backup with a snapshot (a dedicated tenant on the sandbox): the snapshot path too.
        try:
            instance = restore_instance(ctx, record, manifest.snapshot, store.new_id(started))
        except BaseException:
            drop_scratch(ctx, record, result.database, result.object_prefix)
            raise
        return result.model_copy(update={"scratch_instance": instance, "finished_at": utcnow()})
    if not overwrite:  # refused before the lock is even taken: a conflict leaves no trace
        refuse_rows(ctx, record, manifest.schema_name)
    if ctx.registry is None:
        return _overwrite(ctx, record, manifest, overwrite)
    # In place mutates the tenant: hold its registry lock like provision/deprovision do.
    with ctx.registry.hold(record.tenant_id, "drill-restore") as held:
        refuse_open_move(held.record)  # a move may have started since
        result = _overwrite(ctx, workspace_view(held.record, ctx.scope), manifest, overwrite)
        # The store holds the backup's index now, of whichever analyzer: what a reindex recorded of it goes.
        analyzers = {s: a for s, a in held.record.search_analyzers.items() if s != (ctx.scope or TENANT_STORE)}
        if analyzers != held.record.search_analyzers:
            held.record = ctx.registry.save(held.record, search_analyzers=analyzers)
        return result


def restore_backup(ctx: DrillContext, record: TenantRecord, index: BackupIndex, target: Target = Target.scratch,
                   yes: bool = False, overwrite: bool = False) -> RestoreResult:
    """``restore`` of the backup ``index`` names: its manifest is opened with the
    tenant's key (the registry's) first, and returned with the result."""
    naming.require_valid(record.tenant_id)
    if not record.resources.kms_key_arn:  # a removed workspace's view: its key is known from a backup only
        raise InvalidInput(f"workspace {ctx.scope!r} of {record.tenant_id!r} was removed: its backups open with its "
                           "old key, which only a restore in place brings back (`tenantctl drill restore "
                           f"{record.tenant_id} --workspace {ctx.scope} --backup B --target in-place --yes`)")
    require_usable_key(ctx.kms, record)  # "pending deletion" in plain words, not a KMS error
    try:
        manifest = store.load_manifest(ctx.s3, ctx.kms, record, index.backup_id)
    except KeyUnusable as exc:  # a backup under an earlier key of its owner is not called tampered with
        raise KeyUnusable(earlier_key(ctx.kms, record, index) or str(exc)) from None
    result = restore(ctx, record, manifest, target=target, yes=yes, overwrite=overwrite)
    return result.model_copy(update={"manifest": manifest})


def _overwrite(ctx: DrillContext, record: TenantRecord, manifest: BackupManifest, overwrite: bool) -> RestoreResult:
    """In place; with ``overwrite``, the live target is backed up first (the RTO clock starts after it)."""
    notes = []
    store_conn = record.resources.store
    # One admin connection for the dump check and the restore's own use of it.
    with ctx.connect(store_conn.endpoint, store_conn.port, "postgres") as admin:
        if overwrite:
            from tenantctl.drills.backup import backup

            _restore_tools(ctx, admin, manifest)  # a dump pg_restore can't open must not cost a backup first
            kept = backup(ctx, record, reason="before-overwrite")
            notes.append(f"the target was backed up before being overwritten: backup {kept.backup_id} "
                         f"({', '.join(f'{n}: {t.rows} rows' for n, t in kept.tables.items())})")
        try:
            result = restore_logical(ctx, record, manifest, Target.in_place, utcnow(), overwrite=overwrite,
                                     admin=admin)
        except Exception as exc:  # a failed drill's report names the backup too (drill() reads __notes__)
            for note in notes:
                exc.add_note(note)
            raise
    return result.model_copy(update={"notes": result.notes + notes})


def _restore_tools(ctx: DrillContext, admin: Any, manifest: BackupManifest) -> Path:
    """The PostgreSQL tools for the server; CompressionUnsupported when their
    pg_restore cannot read the dump (refused before the target exists)."""
    tools = find_tools(server_major(admin), ctx.pg_bin_dir)
    if manifest.stream_compression is None:  # tenantctl's own is undone before pg_restore reads the dump
        require(tools, Compression.parse(manifest.compression), doing="restore a dump compressed")
    return tools


def _refuse_full(conn: Any, database: str, schema: str, tenant_id: str) -> dict[str, int]:
    """The target schema's row counts; a Conflict (exit 5) when any table holds rows."""
    rows = table_rows(conn, schema, tenant_id)
    full = {name: n for name, n in rows.items() if n}
    if full:
        raise Conflict(f"target {database}.{schema} is not empty: refused ("
                       + ", ".join(f"{name}: {n} rows" for name, n in full.items())
                       + "); restore to scratch, empty it first, or pass --overwrite (which backs it up first)")
    return rows


def refuse_rows(ctx: DrillContext, record: TenantRecord, schema: str) -> None:
    """Refuse an in-place restore into a live schema that holds rows (a conflict, not a failed drill)."""
    store_conn = record.resources.store
    with ctx.connect(store_conn.endpoint, store_conn.port, "postgres") as admin:
        if record.tier is Tier.dedicated and not _database_exists(admin, store_conn.database):
            return
    with ctx.connect(store_conn.endpoint, store_conn.port, store_conn.database) as conn:
        _refuse_full(conn, store_conn.database, schema, naming.OwnerNames(record.tenant_id, ctx.scope).key)


def _aside_name(schema: str) -> str:
    """Where a live schema waits while a restore replaces it (63 bytes at most, one per schema)."""
    return f"{schema[:40]}__overwritten_{hashlib.md5(schema.encode()).hexdigest()[:8]}"


def _empty_target(conn: Any, database: str, schema: str, tenant_id: str, overwrite: bool = False) -> str | None:
    """Refuse a target schema that holds rows (unless ``overwrite``); a schema
    with tables (empty, as provisioning makes them, or rows to overwrite) is
    renamed aside, not dropped, so that a restore that fails can put it back as
    it was; an empty schema is dropped. Returns the aside name, if any."""
    rows = table_rows(conn, schema, tenant_id) if overwrite else _refuse_full(conn, database, schema, tenant_id)
    if not rows:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {}").format(sql.Identifier(schema)))
        return None
    aside = _aside_name(schema)
    if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (aside,)).fetchone():
        raise Conflict(f"schema {database}.{aside} is left by an interrupted restore over {schema}: it holds what "
                       f"that restore replaced (its before-overwrite backup too); drop it, or put it back with "
                       f"ALTER SCHEMA ... RENAME, then restore again")
    conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(schema), sql.Identifier(aside)))
    return aside


def _settle_target(conn: Any, schema: str, aside: str | None, restored: bool) -> None:
    """After an in-place restore: the set-aside schema goes (restored), or comes
    back in place of whatever the failed restore left (pg_restore ran in one
    transaction, so at most an empty schema)."""
    if aside is None:
        return
    if restored:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(aside)))
        return
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(aside), sql.Identifier(schema)))


def restore_logical(ctx: DrillContext, record: TenantRecord, manifest: BackupManifest,
                    target: Target, started: datetime, key_arn: str | None = None,
                    overwrite: bool = False, admin: Any | None = None) -> RestoreResult:
    """``key_arn`` opens the backup (default: the record's key); restore after
    deprovision passes the tombstone's key while ``record`` holds the new resources.
    ``overwrite``: a live target that holds rows is dropped (its backup was taken).
    ``admin``: the caller's open connection to the server's maintenance database
    (left open); None: one is opened here."""
    res = record.resources
    restore_id = store.new_id(started)
    scratch = target is Target.scratch
    host, port = res.store.endpoint, res.store.port
    database = naming.scratch_database(record.tenant_id, restore_id) if scratch else res.store.database
    dest_prefix = scratch_prefix(res.prefix, restore_id) if scratch else res.prefix
    if scratch and not is_empty(ctx.s3, res.bucket, dest_prefix):
        raise Conflict(f"scratch prefix s3://{res.bucket}/{dest_prefix} is not empty: refused")
    # Say "pending deletion" plainly instead of a KMS error mid-restore.
    require_usable_key(ctx.kms, record)
    # The admin reaches every database of the server through the maintenance database.
    with nullcontext(admin) if admin is not None else ctx.connect(host, port, "postgres") as admin:
        tools = _restore_tools(ctx, admin, manifest)
        if scratch or (record.tier is Tier.dedicated and not _database_exists(admin, database)):
            if scratch and _database_exists(admin, database):
                raise Conflict(f"scratch database {database!r} already exists: refused")
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    with ctx.connect(host, port, database) as conn:
        aside = _empty_target(conn, database, manifest.schema_name,
                              naming.OwnerNames(record.tenant_id, manifest.workspace).key, overwrite)
    try:
        _pg_restore(ctx, record, manifest, host, port, database, tools, key_arn)
        copied = restore_objects(ctx.s3, res.bucket, res.prefix, manifest.objects, dest_prefix,
                                 store.tenant_sse(record))
    except BaseException:
        if scratch:
            drop_scratch(ctx, record, database, dest_prefix)
        else:  # the live schema comes back as it was, rows included
            with ctx.connect(host, port, database) as conn:
                _settle_target(conn, manifest.schema_name, aside, restored=False)
                _reapply_schema_template(conn, record.tenant_id, manifest.workspace)
        raise
    if not scratch:
        with ctx.connect(host, port, database) as conn:
            _settle_target(conn, manifest.schema_name, aside, restored=True)
            _reapply_schema_template(conn, record.tenant_id, manifest.workspace)
    return RestoreResult(tenant_id=record.tenant_id, backup_id=manifest.backup_id, target=target,
                         database=database, schema_name=manifest.schema_name, host=host, port=port,
                         object_prefix=dest_prefix, objects_restored=copied, started_at=started,
                         finished_at=utcnow())


def drop_scratch(ctx: DrillContext, record: TenantRecord, database: str, prefix: str,
                 host: str | None = None, port: int | None = None) -> None:
    """Remove a scratch restore: its database and its objects. Never a live target."""
    if not database.startswith("drill_") or "/backups/scratch/" not in prefix:
        raise InvalidInput(f"refusing to clean up {database!r} / {prefix!r}: not a scratch target")
    res = record.resources
    with ctx.connect(host or res.store.endpoint, port or res.store.port, "postgres") as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
    delete_prefix(ctx.s3, res.bucket, prefix)


def cleanup(ctx: DrillContext, record: TenantRecord, result: RestoreResult) -> list[Check]:
    """Remove a scratch restore; the checks say the scratch instance is gone."""
    if result.target is not Target.scratch:
        return []
    checks = [drop_scratch_instance(ctx, result.scratch_instance)] if result.scratch_instance else []
    if result.database.startswith("drill_"):  # a scratch database (not the scratch instance's own)
        drop_scratch(ctx, record, result.database, result.object_prefix, result.host, result.port)
    else:
        delete_prefix(ctx.s3, record.resources.bucket, result.object_prefix)
    return checks
