"""Lifting a dedicated store's RDS deletion protection right before it is
deleted (deprovision; a move to another account or region leaving, or rolling
back, a dedicated store's stack; a move within one removing the dedicated store
it leaves: ``lift_live``), and telling whether the final
snapshot a destroy would take is named already (RDS refuses the delete then)."""

from __future__ import annotations

import time
from typing import Any

from tenantctl.engines.base import EventSink, phase
from tenantctl.errors import ApplyFailed
from tenantctl.models import TenantRecord, TenantSpec, Tier, utcnow
from tenantctl.naming import DEFAULT_CELL, rds_identifier, resource_name
from tenantctl.stackconfig import read_tenant, stack_file, write_tenant
from tenantctl.workspace import Workspace


def lift(ws: Workspace, stack: str, on_event: EventSink | None = None) -> TenantSpec | None:
    """RDS refuses to delete a protected instance: the stack's spec is written
    without the protection (what stays declared if the run dies before its
    destroy), then the live instance, if there is one, is unprotected by one
    ModifyDBInstance. Not by an `up` of the stack: on a stack a provision left
    half-created that would build the whole tenant first (and fail where its
    provision failed, leaving it undeletable), and the file would already say
    "unprotected" to a re-run after a kill between the two. So the live
    instance is what is asked each time. Returns the stack's spec (None: no
    stack file)."""
    path = stack_file(ws.stacks_dir, stack)
    if not path.exists():
        return None
    spec = read_tenant(path)
    if spec.tier is not Tier.dedicated or spec.dedicated is None:
        return spec
    if spec.dedicated.deletion_protection:
        spec = spec.model_copy(update={"dedicated": spec.dedicated.model_copy(update={"deletion_protection": False})})
        write_tenant(ws.stacks_dir, spec, stack=stack)
    lift_live(ws, spec.cell or DEFAULT_CELL, spec.region, spec.id, on_event)
    return spec


def lift_live(ws: Workspace, cell: str, region: str, tenant_id: str, on_event: EventSink | None = None) -> None:
    """The tenant's dedicated instance in ``cell``'s account and ``region``, if
    there is one and it is protected, unprotected by one ModifyDBInstance; once
    it reads unprotected. Its stack's state still says protected: the caller
    has written the stack file unprotected first, so no later `up` protects it
    again, and the `up` or destroy that follows deletes it (RDS asks the live
    instance, which is what this lifted)."""
    rds = ws.cell_clients(cell)("rds", region=region)
    identifier = rds_identifier(tenant_id)
    instance = _instance(rds, identifier)
    if instance is not None and instance.get("DeletionProtection"):
        phase(on_event, tenant_id, "lifting the database's deletion protection")
        rds.modify_db_instance(DBInstanceIdentifier=identifier, DeletionProtection=False, ApplyImmediately=True)
        _wait_unprotected(rds, identifier)


LIFT_WAIT_SECONDS, LIFT_POLL_SECONDS = 600, 5


def _wait_unprotected(rds: Any, identifier: str) -> None:
    """Until the instance reads unprotected and is no longer being modified (the
    delete is refused meanwhile). Not RDS's `available` waiter: a hibernated
    tenant's instance stays `stopped`, and is deleted as it is."""
    deadline = time.monotonic() + LIFT_WAIT_SECONDS
    while (instance := _instance(rds, identifier)) is not None and (
            instance.get("DeletionProtection") or instance.get("DBInstanceStatus") == "modifying"):
        if time.monotonic() > deadline:
            raise ApplyFailed(f"database instance {identifier} still protected or being modified after "
                              f"{LIFT_WAIT_SECONDS} s; run the command again to keep waiting")
        time.sleep(LIFT_POLL_SECONDS)


def _instance(rds: Any, identifier: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("DBInstanceNotFound", "DBInstanceNotFoundFault"):
            return None
        raise


def snapshot_exists(rds: Any, identifier: str) -> bool:
    """An RDS snapshot of that name exists (a final snapshot of that name would be refused)."""
    return _snapshot(rds, identifier) is not None


def _snapshot(rds: Any, identifier: str) -> dict[str, Any] | None:
    """The RDS snapshot of that name, None when there is none."""
    from botocore.exceptions import ClientError

    try:
        return rds.describe_db_snapshots(DBSnapshotIdentifier=identifier)["DBSnapshots"][0]
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("DBSnapshotNotFound", "DBSnapshotNotFoundFault"):
            return None
        raise


def set_aside_final_snapshot(rds: Any, tomb: TenantRecord, key_arn: str) -> str | None:
    """A dedicated tenant's stack names its final RDS snapshot `tenantctl-<id>-final`;
    the one its first deprovision left would make the next deprovision fail
    (DBSnapshotAlreadyExists). Copy it aside, under a name with the deprovision
    time and re-encrypted with ``key_arn`` (a revive's: the new key, the old one is
    going away; a given-up revive's: the old one, enabled by it), and delete the
    original. Named after the snapshot's own time (a given-up revive's destroy takes
    another of the same name, set aside by the next revive beside the first).
    Returns the new identifier, None when there was none."""
    name = resource_name(tomb.tenant_id, "final")
    found = _snapshot(rds, name)
    if found is None:
        return None
    when = found.get("SnapshotCreateTime") or tomb.deprovisioned_at or utcnow()
    aside = f"{name}-{when:%Y%m%d%H%M%S}"
    rds.copy_db_snapshot(SourceDBSnapshotIdentifier=name, TargetDBSnapshotIdentifier=aside, KmsKeyId=key_arn,
                         CopyTags=True)
    rds.get_waiter("db_snapshot_available").wait(DBSnapshotIdentifier=aside,
                                                  WaiterConfig={"Delay": 30, "MaxAttempts": 240})
    rds.delete_db_snapshot(DBSnapshotIdentifier=name)
    return aside
