"""RDS snapshots of dedicated tenants (encrypted by RDS with the instance's
key, the tenant key), restored into a scratch instance ``drill-<id>-<ts>``
whose posture is verified and which is removed after the drill.

On AWS the snapshot is the backup. On the sandbox the instance is moto's (it
accepts no connections: the data lives in the sandbox PostgreSQL), so a
dedicated tenant's backup is a logical dump that also takes a snapshot, and a
scratch restore exercises both paths: the dump into a scratch database (rows
and checksums verified) and the snapshot into a scratch instance (its posture
verified on what RDS reports)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from tenantctl import naming
from tenantctl.drills import envelope, store
from tenantctl.drills.context import DrillContext
from tenantctl.drills.models import BackupManifest, Check, RestoreResult, SnapshotInfo, Target
from tenantctl.drills.objects import object_manifest, restore_objects, scratch_prefix
from tenantctl.drills.tables import table_checks
from tenantctl.models import TenantRecord, utcnow

WAIT = {"Delay": 30, "MaxAttempts": 120}
SCRATCH_PURPOSE = "drill-scratch"


def _tags(record: TenantRecord, purpose: str) -> list[dict[str, str]]:
    return [{"Key": "tenant", "Value": record.tenant_id}, {"Key": "purpose", "Value": purpose},
            {"Key": "managed-by", "Value": "tenantctl"}]


def take_snapshot(ctx: DrillContext, record: TenantRecord, backup_id: str) -> SnapshotInfo:
    """Snapshot the tenant's instance and wait until it is available."""
    instance = naming.rds_identifier(record.tenant_id)
    identifier = naming.drill_snapshot(record.tenant_id, backup_id)
    snap = ctx.rds.create_db_snapshot(DBSnapshotIdentifier=identifier, DBInstanceIdentifier=instance,
                                      Tags=_tags(record, "backup"))["DBSnapshot"]
    ctx.rds.get_waiter("db_snapshot_available").wait(DBSnapshotIdentifier=identifier, WaiterConfig=WAIT)
    return SnapshotInfo(identifier=identifier, arn=snap.get("DBSnapshotArn", ""), instance=instance)


def snapshot_backup(ctx: DrillContext, record: TenantRecord, extra: dict | None = None) -> BackupManifest:
    res = record.resources
    started = utcnow()
    backup_id = store.new_id(started)
    # Checksums just before the snapshot: writes in between show up as a verify mismatch, never silently.
    with ctx.connect(res.store.endpoint, res.store.port, res.store.database) as conn:
        tables = table_checks(conn, res.store.schema_name, record.tenant_id)
    snapshot = take_snapshot(ctx, record, backup_id)
    manifest = BackupManifest(
        backup_id=backup_id, tenant_id=record.tenant_id, kind="rds-snapshot", started_at=started,
        finished_at=utcnow(), key_arn=res.kms_key_arn, database=res.store.database,
        schema_name=res.store.schema_name, snapshot=snapshot,
        tables=tables, objects=object_manifest(ctx.s3, res.bucket, res.prefix), record=record, **(extra or {}),
    )
    # The snapshot is encrypted by RDS with the tenant key; the manifest is sealed under a data key of it.
    key = envelope.new_data_key(ctx.kms, res.kms_key_arn, envelope.encryption_context(record.tenant_id, backup_id))
    store.put_backup(ctx.s3, record, manifest, key)
    return manifest


def restore_instance(ctx: DrillContext, record: TenantRecord, snapshot: SnapshotInfo, restore_id: str) -> str:
    """A scratch instance from ``snapshot``, with the live instance's class,
    subnet group and security groups (reachable the same way), never public,
    tagged as a drill's scratch; waited for. Returns its identifier."""
    scratch = naming.scratch_instance(record.tenant_id, restore_id)
    source = ctx.rds.describe_db_instances(DBInstanceIdentifier=snapshot.instance)["DBInstances"][0]
    params = {"DBInstanceClass": source.get("DBInstanceClass", "db.t4g.micro"),
              "DBSubnetGroupName": (source.get("DBSubnetGroup") or {}).get("DBSubnetGroupName"),
              "VpcSecurityGroupIds": [g["VpcSecurityGroupId"] for g in source.get("VpcSecurityGroups", [])]}
    ctx.rds.restore_db_instance_from_db_snapshot(
        DBInstanceIdentifier=scratch, DBSnapshotIdentifier=snapshot.identifier,
        PubliclyAccessible=False, MultiAZ=False, DeletionProtection=False, Tags=_tags(record, SCRATCH_PURPOSE),
        **{k: v for k, v in params.items() if v},
    )
    ctx.rds.get_waiter("db_instance_available").wait(DBInstanceIdentifier=scratch, WaiterConfig=WAIT)
    return scratch


def snapshot_restore(ctx: DrillContext, record: TenantRecord, manifest: BackupManifest,
                     started: datetime) -> RestoreResult:
    res = record.resources
    restore_id = store.new_id(started)
    scratch = restore_instance(ctx, record, manifest.snapshot, restore_id)
    endpoint = ctx.rds.describe_db_instances(DBInstanceIdentifier=scratch)["DBInstances"][0]["Endpoint"]
    dest = scratch_prefix(res.prefix, restore_id)
    copied = restore_objects(ctx.s3, res.bucket, res.prefix, manifest.objects, dest, store.tenant_sse(record))
    return RestoreResult(tenant_id=record.tenant_id, backup_id=manifest.backup_id, target=Target.scratch,
                         database=manifest.database, schema_name=manifest.schema_name, host=endpoint["Address"],
                         port=endpoint.get("Port", 5432), object_prefix=dest, objects_restored=copied,
                         started_at=started, finished_at=utcnow(), scratch_instance=scratch)


def _same_key(found: str | None, key_arn: str) -> bool:
    return bool(found) and found.rsplit("/", 1)[-1] == key_arn.rsplit("/", 1)[-1]


def instance_checks(ctx: DrillContext, record: TenantRecord, scratch: str) -> list[Check]:
    """The scratch instance's posture as RDS reports it, against the live instance."""
    live = ctx.rds.describe_db_instances(DBInstanceIdentifier=naming.rds_identifier(record.tenant_id))["DBInstances"][0]
    got = ctx.rds.describe_db_instances(DBInstanceIdentifier=scratch)["DBInstances"][0]
    key = record.resources.kms_key_arn

    def groups(instance: dict[str, Any]) -> str:
        return ",".join(sorted(g["VpcSecurityGroupId"] for g in instance.get("VpcSecurityGroups", [])))

    def subnets(instance: dict[str, Any]) -> str:
        return (instance.get("DBSubnetGroup") or {}).get("DBSubnetGroupName", "none")

    tags = {t["Key"]: t["Value"] for t in got.get("TagList", [])}
    wanted_tags = {t["Key"]: t["Value"] for t in _tags(record, SCRATCH_PURPOSE)}
    encrypted = f"{got.get('KmsKeyId')}" if got.get("StorageEncrypted") else "not encrypted"
    return [
        Check(name="scratch instance: not public", expected="PubliclyAccessible false",
              actual=f"PubliclyAccessible {str(bool(got.get('PubliclyAccessible'))).lower()}",
              ok=not got.get("PubliclyAccessible")),
        Check(name="scratch instance: the tenant's key", expected=key, actual=encrypted,
              ok=bool(got.get("StorageEncrypted")) and _same_key(got.get("KmsKeyId"), key)),
        Check(name="scratch instance: security groups", expected=groups(live), actual=groups(got),
              ok=bool(groups(got)) and groups(got) == groups(live)),
        Check(name="scratch instance: subnet group", expected=subnets(live), actual=subnets(got),
              ok=subnets(got) == subnets(live) != "none"),
        Check(name="scratch instance: tags", expected=", ".join(f"{k}={v}" for k, v in wanted_tags.items()),
              actual=", ".join(f"{k}={tags.get(k, '-')}" for k in wanted_tags),
              ok=all(tags.get(k) == v for k, v in wanted_tags.items())),
    ]


def drop_scratch_instance(ctx: DrillContext, identifier: str) -> Check:
    """Delete a drill's scratch instance; the check says whether RDS then reports
    it gone (or, on AWS where deletion takes minutes, deleting)."""
    if not identifier.startswith("drill-"):
        raise ValueError(f"refusing to delete {identifier!r}: not a drill scratch instance")
    # The restore asks for no deletion protection, but a restore can carry the
    # source's setting over (moto does; so can account defaults): lift it first.
    current = ctx.rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    if current.get("DeletionProtection"):
        ctx.rds.modify_db_instance(DBInstanceIdentifier=identifier, DeletionProtection=False, ApplyImmediately=True)
    ctx.rds.delete_db_instance(DBInstanceIdentifier=identifier, SkipFinalSnapshot=True, DeleteAutomatedBackups=True)
    try:
        status = ctx.rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]["DBInstanceStatus"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("DBInstanceNotFound", "DBInstanceNotFoundFault"):
            raise
        status = "gone"
    return Check(name="scratch instance: deleted afterwards", expected="gone or deleting", actual=status,
                 ok=status in ("gone", "deleting"))
