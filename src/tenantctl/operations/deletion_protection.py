"""Lifting a dedicated store's RDS deletion protection right before its stack
is destroyed (deprovision; a move to another account or region leaving, or
rolling back, a dedicated store's stack), and telling whether the final
snapshot a destroy would take is named already (RDS refuses the delete then)."""

from __future__ import annotations

from typing import Any

from tenantctl.engines.base import EventSink, phase
from tenantctl.models import TenantSpec, Tier
from tenantctl.stackconfig import read_tenant, stack_file, write_tenant
from tenantctl.workspace import Workspace


def lift(ws: Workspace, stack: str, on_event: EventSink | None = None) -> TenantSpec | None:
    """RDS refuses to delete a protected instance: the stack's spec is written
    without the protection, then applied in one update the policy gate lets
    through (the final snapshot is still taken at the destroy). The file is
    written first, so a run killed after the update finds nothing to lift
    (an `up` of a half-destroyed stack would build it again). Returns the
    stack's spec (None: no stack file)."""
    path = stack_file(ws.stacks_dir, stack)
    if not path.exists():
        return None
    spec = read_tenant(path)
    if spec.tier is not Tier.dedicated or spec.dedicated is None or not spec.dedicated.deletion_protection:
        return spec
    from tenantctl.policy import waived

    spec = spec.model_copy(update={"dedicated": spec.dedicated.model_copy(update={"deletion_protection": False})})
    write_tenant(ws.stacks_dir, spec, stack=stack)
    phase(on_event, spec.id, "lifting the database's deletion protection")
    with waived("deletion-protection"):  # the policy gate lets exactly this update through
        ws.engine.up(stack, on_event=on_event)
    return spec


def snapshot_exists(rds: Any, identifier: str) -> bool:
    """An RDS snapshot of that name exists (a final snapshot of that name would be refused)."""
    from botocore.exceptions import ClientError

    try:
        rds.describe_db_snapshots(DBSnapshotIdentifier=identifier)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("DBSnapshotNotFound", "DBSnapshotNotFoundFault"):
            return False
        raise
    return True
