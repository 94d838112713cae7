"""Deprovision one tenant. The registry is marked `deprovisioning` before
anything is removed and `deprovisioned` (a tombstone kept for audit and the
restore window) after; the KMS key is only scheduled for deletion, and the
tenant's objects stay unless the operator asks to purge them.

A run killed at any point leaves the record locked (`status` names owner, host,
pid and time) and `deprovisioning`; a re-run takes the dead run's lock over and
finishes the job: the engine's deletes are idempotent and its state file says
what is left. The tombstone is written with the release of the tenant's slot
in its cell, in one transaction: a run killed on either side of it leaves both
or neither."""

from __future__ import annotations

from typing import Any

from tenantctl.engines.base import ChangeSet, EventSink, Op, phase
from tenantctl.errors import engine_step
from tenantctl.models import TenantRecord, TenantStatus, Tier
from tenantctl.naming import forget_hint, require_valid, ws_s3_prefix_root
from tenantctl.operations.deletion_protection import lift
from tenantctl.registry import refuse_open_move
from tenantctl.stackconfig import stack_file
from tenantctl.workspace import Workspace


def purge_prefix(s3: Any, bucket: str, prefix: str) -> int:
    """Delete every version and delete marker under the tenant prefix."""
    removed = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        batch = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        for i in range(0, len(batch), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": batch[i:i + 1000], "Quiet": True})
            removed += len(batch[i:i + 1000])
    return removed


def purged_prefixes(record: TenantRecord) -> list[str]:
    """What --purge-data empties: the tenant's prefix and its workspaces', which
    lie beside it, not under it. Removed workspaces' included: the registry no
    longer names them, but their final backups and objects stay under their
    prefixes (a purge that left them would keep the tenant's data)."""
    res = record.resources
    return list(dict.fromkeys([res.prefix, *(w.prefix for w in res.workspaces.values()),
                               ws_s3_prefix_root(record.tenant_id)]))


def what_goes(record: TenantRecord, purge_data: bool, final_backup: bool) -> list[str]:
    """What a deprovision of ``record`` deletes and what it keeps, one line each
    (what its confirmation shows)."""
    res = record.resources
    if res is None:
        return [f"the registry record of {record.tenant_id} becomes a tombstone (no resources recorded)"]
    store = res.store
    data = (f"the RDS instance at {store.endpoint} (a final snapshot is kept)" if record.tier is Tier.dedicated
            else f"schema {store.schema_name} and role {store.role} in database {store.database}")
    backed_up = final_backup and not purge_data
    backup = ("a final backup is taken first" if backed_up
              else "NO final backup" + (" (--purge-data deletes the backups too)" if purge_data else ""))
    # Each workspace's final backup is its own (its key), restored with the tenant's by a restore after deprovision.
    return [
        f"{data}: its data is deleted; {backup}",
        f"queues {res.queue_url} and {res.dlq_url}, with their messages",
        f"IAM role {res.role_arn}",
        f"database secret {res.store.secret_arn}",
        f"KMS key {res.kms_key_arn} ({res.kms_alias}): scheduled for deletion (cancellable for 30 days)",
        purged_line(record) if purge_data else f"objects under s3://{res.bucket}/{res.prefix}: kept",
    ] + [f"workspace {name}: schema {w.store.schema_name}: its data is deleted; {backup}"
         + (" (the workspace's own, under its key)" if backed_up else "")
         + f"; role, queues, IAM role and secret deleted; KMS key {w.kms_key_arn} scheduled for deletion; "
         f"objects under {w.prefix} " + ("purged" if purge_data else "kept")
         for name, w in sorted(res.workspaces.items())]


def purged_line(record: TenantRecord) -> str:
    """What --purge-data deletes, as a confirmation says it."""
    res = record.resources
    return (f"EVERY object under s3://{res.bucket}/{res.prefix} and under {ws_s3_prefix_root(record.tenant_id)}*/ "
            "(its workspaces', removed ones included), all versions, backups included (--purge-data)")


def deleted_keys(changes: ChangeSet) -> list[str]:
    """The KMS keys (ARNs, else names) a destroy deleted, i.e. scheduled for deletion: none for a
    record whose provision never made one."""
    from tenantctl.inventory import KEY

    return [c.arn or c.name for c in changes.changes if c.type == KEY and c.op is Op.delete]


def what_went(tombstone: TenantRecord, changes: ChangeSet, details: dict[str, Any], purge_data: bool) -> str:
    """What a deprovision did (``deprovision``'s three results), as one line says it: a key's
    deletion only when there was a key, a record whose provision never finished said to be one."""
    removed = changes.count(Op.delete)
    keys = len(details.get("keys_scheduled_for_deletion") or [])
    never = details.get("never_provisioned", False)
    if never:
        parts = ["never provisioned (no resources recorded): "
                 + (f"{removed} resource(s) its unfinished provision left removed" if removed else "nothing to remove")]
    else:
        parts = [f"{removed} resources removed"]
    parts.append({0: "no KMS key (none was created)", 1: "key scheduled for deletion"}.get(
        keys, f"{keys} keys scheduled for deletion"))
    parts.append(f"retained until {tombstone.retain_until:%Y-%m-%d}" if tombstone.retain_until else "")
    if not never:
        parts.append(f"{details.get('purged_objects', 0)} objects purged" if purge_data else "objects kept")
    if details.get("final_backup"):
        parts.append(f"final backup {details['final_backup']}")
    return "; ".join(p for p in parts if p)


def confirmation_items(ws: Workspace, record: TenantRecord, purge_data: bool, final_backup: bool) -> list[str]:
    """What deprovision's confirmation lists: what goes and what stays, then
    each resource the destroy deletes (the data-bearing ones flagged)."""
    steps = [c for c in ws.engine.preview_destroy(record.current_stack).changes if c.op is not Op.same]
    loss = {Op.delete: ": deleted with its data", Op.replace: ": replaced, its data is lost"}
    return what_goes(record, purge_data, final_backup) + [
        f"{c.op.value} {c.type} {c.name}" + (loss[c.op] if c.loses_data else "") for c in steps]


def deprovision(ws: Workspace, tenant_id: str, purge_data: bool = False,
                on_event: EventSink | None = None,
                final_backup: bool = True) -> tuple[TenantRecord, ChangeSet, dict[str, Any]]:
    require_valid(tenant_id, hint=forget_hint(tenant_id))
    registry = ws.registry
    current = registry.require(tenant_id)
    if current.status is TenantStatus.deprovisioned:
        return _tombstone(ws, current, purge_data, on_event)
    refuse_open_move(current)
    # Final backup (tenantctl.drills) before anything is marked or removed, so a
    # failed one leaves the tenant as it was. Not with --purge-data (which deletes
    # the backups too), nor on a retry of a deprovision that already started.
    final, workspace_finals = None, {}
    if (final_backup and not purge_data and current.lock is None and current.resources is not None
            and current.status in (TenantStatus.active, TenantStatus.suspended)):
        from tenantctl.drills.backup import final_backup as take_final_backup
        from tenantctl.operations.hibernate import awake

        current = awake(ws, current, on_event)  # pg_dump needs its database up
        phase(on_event, tenant_id, "final backup")
        final = take_final_backup(ws, current).backup_id
        # Each workspace is its own schema, prefix and key: each gets its own final backup.
        for name in sorted(current.workspaces):
            phase(on_event, tenant_id, f"final backup of workspace {name}")
            workspace_finals[name] = take_final_backup(ws, current, workspace=name).backup_id
    stack = current.current_stack
    path = stack_file(ws.stacks_dir, stack)
    details: dict[str, Any] = {"purged_objects": 0, "final_backup": final,
                               "workspace_final_backups": workspace_finals,
                               "never_provisioned": current.resources is None}
    phase(on_event, tenant_id, "marking the tenant deprovisioning")
    with registry.hold(tenant_id, "deprovision", status=TenantStatus.deprovisioning) as held:
        retention_days = 14
        with engine_step(f"deprovisioning {tenant_id!r}"):
            spec = lift(ws, stack, on_event)
            if spec is not None:
                retention_days = spec.backup.retention_days
            phase(on_event, tenant_id, "destroying its resources")
            changes = ws.engine.destroy(stack, on_event=on_event)
            details["keys_scheduled_for_deletion"] = deleted_keys(changes)
            if purge_data and held.record.resources is not None:
                details["purged_objects"] = purge_objects(ws, held.record, on_event)
        path.unlink(missing_ok=True)
        phase(on_event, tenant_id, "recording the tombstone")
        held.record = registry.mark_deprovisioned(held.record, retention_days)  # its slot given back with it
    return held.record, changes, details


def purge_objects(ws: Workspace, record: TenantRecord, on_event: EventSink | None = None) -> int:
    """--purge-data: every object version under the tenant's prefixes (``purged_prefixes``) deleted;
    how many."""
    res = record.resources
    s3 = ws.clients_for(record)("s3")
    purged = 0
    for prefix in purged_prefixes(record):
        phase(on_event, record.tenant_id, f"purging every object under s3://{res.bucket}/{prefix}")
        purged += purge_prefix(s3, res.bucket, prefix)
    return purged


def _tombstone(ws: Workspace, tomb: TenantRecord, purge_data: bool,
               on_event: EventSink | None) -> tuple[TenantRecord, ChangeSet, dict[str, Any]]:
    """`deprovision` of a tombstone: what a given-up revive created and left is removed, and with
    ``purge_data`` every object and backup its deprovision kept (an erasure asked for later), under
    its lock; nothing to do either way is the Conflict it always was (exit 5). Idempotent with
    --purge-data: a prefix already empty purges 0 objects."""
    from tenantctl.operations.revive_leftovers import converge

    erase = purge_data and tomb.resources is not None
    changes, purged = converge(ws, tomb, on_event,
                               then=(lambda held: purge_objects(ws, held, on_event)) if erase else None)
    return (ws.registry.require(tomb.tenant_id), changes,
            {"revive_leftovers_removed": changes.count(Op.delete)} | ({"purged_objects": purged} if erase else {}))
