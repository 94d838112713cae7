"""Dedicated tenants on AWS: RDS snapshots (encrypted with the instance's key,
the tenant key) instead of a logical dump; the restore is a scratch instance
``drill-<id>-<ts>`` made from the snapshot, removed after the drill."""

from __future__ import annotations

from datetime import datetime

from tenantctl import naming
from tenantctl.drills import envelope, store
from tenantctl.drills.context import DrillContext
from tenantctl.drills.models import BackupManifest, RestoreResult, SnapshotInfo, Target
from tenantctl.drills.objects import object_manifest, restore_objects, scratch_prefix
from tenantctl.drills.tables import table_checks
from tenantctl.models import TenantRecord, utcnow

WAIT = {"Delay": 30, "MaxAttempts": 120}


def _tags(record: TenantRecord, purpose: str) -> list[dict[str, str]]:
    return [{"Key": "tenant", "Value": record.tenant_id}, {"Key": "purpose", "Value": purpose},
            {"Key": "managed-by", "Value": "tenantctl"}]


def snapshot_backup(ctx: DrillContext, record: TenantRecord, extra: dict | None = None) -> BackupManifest:
    res = record.resources
    started = utcnow()
    backup_id = store.new_id(started)
    instance = naming.rds_identifier(record.tenant_id)
    # Checksums just before the snapshot: writes in between show up as a verify mismatch, never silently.
    with ctx.connect(res.store.endpoint, res.store.port, res.store.database) as conn:
        tables = table_checks(conn, res.store.schema_name, record.tenant_id)
    identifier = naming.drill_snapshot(record.tenant_id, backup_id)
    snap = ctx.rds.create_db_snapshot(DBSnapshotIdentifier=identifier, DBInstanceIdentifier=instance,
                                      Tags=_tags(record, "backup"))["DBSnapshot"]
    ctx.rds.get_waiter("db_snapshot_available").wait(DBSnapshotIdentifier=identifier, WaiterConfig=WAIT)
    manifest = BackupManifest(
        backup_id=backup_id, tenant_id=record.tenant_id, kind="rds-snapshot", started_at=started,
        finished_at=utcnow(), key_arn=res.kms_key_arn, database=res.store.database,
        schema_name=res.store.schema_name,
        snapshot=SnapshotInfo(identifier=identifier, arn=snap.get("DBSnapshotArn", ""), instance=instance),
        tables=tables, objects=object_manifest(ctx.s3, res.bucket, res.prefix), record=record, **(extra or {}),
    )
    # The snapshot is encrypted by RDS with the tenant key; the manifest is sealed under a data key of it.
    key = envelope.new_data_key(ctx.kms, res.kms_key_arn, envelope.encryption_context(record.tenant_id, backup_id))
    store.put_backup(ctx.s3, record, manifest, key)
    return manifest


def snapshot_restore(ctx: DrillContext, record: TenantRecord, manifest: BackupManifest,
                     started: datetime) -> RestoreResult:
    res = record.resources
    restore_id = store.new_id(started)
    scratch = naming.scratch_instance(record.tenant_id, restore_id)
    source = ctx.rds.describe_db_instances(DBInstanceIdentifier=manifest.snapshot.instance)["DBInstances"][0]
    # Same class, subnets and security groups as the live instance: reachable the same way, never public.
    params = {"DBInstanceClass": source.get("DBInstanceClass", "db.t4g.micro"),
              "DBSubnetGroupName": (source.get("DBSubnetGroup") or {}).get("DBSubnetGroupName"),
              "VpcSecurityGroupIds": [g["VpcSecurityGroupId"] for g in source.get("VpcSecurityGroups", [])]}
    ctx.rds.restore_db_instance_from_db_snapshot(
        DBInstanceIdentifier=scratch, DBSnapshotIdentifier=manifest.snapshot.identifier,
        PubliclyAccessible=False, MultiAZ=False, DeletionProtection=False, Tags=_tags(record, "drill-scratch"),
        **{k: v for k, v in params.items() if v},
    )
    ctx.rds.get_waiter("db_instance_available").wait(DBInstanceIdentifier=scratch, WaiterConfig=WAIT)
    endpoint = ctx.rds.describe_db_instances(DBInstanceIdentifier=scratch)["DBInstances"][0]["Endpoint"]
    dest = scratch_prefix(res.prefix, restore_id)
    copied = restore_objects(ctx.s3, res.bucket, res.prefix, manifest.objects, dest, store.tenant_sse(record))
    return RestoreResult(tenant_id=record.tenant_id, backup_id=manifest.backup_id, target=Target.scratch,
                         database=manifest.database, schema_name=manifest.schema_name, host=endpoint["Address"],
                         port=endpoint.get("Port", 5432), object_prefix=dest, objects_restored=copied,
                         started_at=started, finished_at=utcnow(), scratch_instance=scratch)


def drop_scratch_instance(ctx: DrillContext, identifier: str) -> None:
    if not identifier.startswith("drill-"):
        raise ValueError(f"refusing to delete {identifier!r}: not a drill scratch instance")
    # The restore asks for no deletion protection, but a restore can carry the
    # source's setting over (moto does; so can account defaults): lift it first.
    current = ctx.rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    if current.get("DeletionProtection"):
        ctx.rds.modify_db_instance(DBInstanceIdentifier=identifier, DeletionProtection=False, ApplyImmediately=True)
    ctx.rds.delete_db_instance(DBInstanceIdentifier=identifier, SkipFinalSnapshot=True, DeleteAutomatedBackups=True)
