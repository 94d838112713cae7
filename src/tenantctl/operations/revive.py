"""Revive: bring a deprovisioned tenant back from a backup, within its retention
window (`tenantctl drill restore ID --target in-place --yes` on a tombstone).

1. The tombstone is locked; the old KMS key's deletion is cancelled and the
   key enabled (the backup's data key and manifest are sealed under it).
2. The tenant is provisioned again from the spec saved in the backup's index
   (or its committed stack file) through provision's own apply step: queues, role,
   secret, alarms, schema and a **new** KMS key (the destroyed stack no longer
   owns the old one).
3. Database and objects are restored in place, the backup opened with the old
   key (the registry's, never the manifest's), and verified against the manifest.
4. Verified: the restored ciphertext moves to the new key
   (``tenantctl.drills.rekey``), the record is activated and the live posture
   checked exactly as after a provision, the old key is scheduled for deletion
   again, and a fresh backup under the new key starts the backup chain again.
   Not verified: the tenant stays deprovisioned (lock released with the error),
   the old key stays enabled, the restored copy is left for inspection.

RTO here is the whole way back: re-provision, restore, verify, re-key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tenantctl.drills import store
from tenantctl.drills.backup import backup, key_state
from tenantctl.drills.context import DrillContext
from tenantctl.drills.models import BackupIndex, RestoreResult, Target
from tenantctl.errors import InvalidInput
from tenantctl.models import TenantRecord, TenantSpec, TenantStatus, Tier, utcnow
from tenantctl.naming import require_valid, resource_name
from tenantctl.operations.provision import activate, apply_spec
from tenantctl.workspace import Workspace

OLD_KEY_PENDING_DAYS = 30  # the old key's second deletion window: the undo period


def _key_id(key_arn: str) -> str:
    # The bare key id: accepted everywhere (moto's key-state calls reject ARNs).
    return key_arn.rsplit("/", 1)[-1]


def revive_key(kms: Any, key_arn: str) -> bool:
    """Cancel the key's scheduled deletion (that leaves it Disabled) and enable it.
    True when it was pending deletion."""
    state, _ = key_state(kms, key_arn)
    if state == "PendingDeletion":
        kms.cancel_key_deletion(KeyId=_key_id(key_arn))
        kms.enable_key(KeyId=_key_id(key_arn))
        return True
    if state == "Disabled":
        kms.enable_key(KeyId=_key_id(key_arn))
    return False


def spec_for(ws: Workspace, index: BackupIndex, tomb: TenantRecord) -> tuple[TenantSpec, str]:
    """What to re-provision: a committed stack file if one exists again, else
    the spec saved in the backup's index (readable while the old key is still
    pending deletion), else the defaults for the tombstone's tier."""
    from tenantctl.stackconfig import read_tenant, stack_file

    path = stack_file(ws.stacks_dir, tomb.current_stack)
    if path.exists():
        return read_tenant(path), f"spec from {path.name}"
    if index.spec:
        return TenantSpec.model_validate(index.spec), f"spec saved in backup {index.backup_id}"
    return (TenantSpec(id=tomb.tenant_id, tier=tomb.tier, region=tomb.region, owner=tomb.owner),
            "default spec (the backup holds none)")


def set_aside_final_snapshot(rds: Any, tomb: TenantRecord, new_key_arn: str) -> str | None:
    """A dedicated tenant's stack names its final RDS snapshot `tenantctl-<id>-final`;
    the one its first deprovision left would make the next deprovision fail
    (DBSnapshotAlreadyExists). Copy it aside, under a name with the deprovision
    time and re-encrypted with the new key (the old one is going away), and
    delete the original. Returns the new identifier, None when there was none."""
    from tenantctl.operations.deletion_protection import snapshot_exists

    name = resource_name(tomb.tenant_id, "final")
    if not snapshot_exists(rds, name):
        return None
    when = tomb.deprovisioned_at or utcnow()
    aside = f"{name}-{when:%Y%m%d%H%M%S}"
    rds.copy_db_snapshot(SourceDBSnapshotIdentifier=name, TargetDBSnapshotIdentifier=aside, KmsKeyId=new_key_arn,
                         CopyTags=True)
    rds.get_waiter("db_snapshot_available").wait(DBSnapshotIdentifier=aside,
                                                  WaiterConfig={"Delay": 30, "MaxAttempts": 240})
    rds.delete_db_snapshot(DBSnapshotIdentifier=name)
    return aside


def _check_window(tomb: TenantRecord, now: datetime) -> None:
    if tomb.retain_until is None or tomb.retain_until < now:
        raise InvalidInput(f"tenant {tomb.tenant_id!r} was deprovisioned and its retention window ended "
                           f"({tomb.retain_until or 'no retain_until'}): it cannot be restored in place")
    if tomb.resources is None:
        raise InvalidInput(f"tenant {tomb.tenant_id!r} has no resources on its tombstone: nothing to restore into")
    if tomb.lock is not None:
        from tenantctl.registry import describe_lock

        raise InvalidInput(describe_lock(tomb.tenant_id, tomb.lock))


def revive(ws: Workspace, ctx: DrillContext, tomb: TenantRecord, index: BackupIndex,
           target: Target = Target.in_place, yes: bool = False, overwrite: bool = False) -> RestoreResult:
    """Re-provision the tombstoned tenant and restore the backup ``index`` names
    into it (the drill's restore step for a tombstone, see
    ``tenantctl.drills.run.drill``). The backup's manifest is sealed under the
    old key, so it is opened only once that key's deletion is cancelled."""
    from tenantctl import preflight
    from tenantctl.placement import reserve_again
    from tenantctl.policy import refuse_unsafe_spec

    require_valid(tomb.tenant_id)
    started = utcnow()
    if target is not Target.in_place or not yes:
        raise InvalidInput(f"tenant {tomb.tenant_id!r} is deprovisioned: only `--target in-place --yes` brings it back")
    if overwrite:
        raise InvalidInput(f"tenant {tomb.tenant_id!r} is deprovisioned: it comes back into new resources, "
                           "there is nothing to --overwrite")
    _check_window(tomb, started)
    notes: list[str] = []
    spec, source = spec_for(ws, index, tomb)
    # Back into its own cell and region: its data and backups are there (residency).
    spec = spec.model_copy(update={"cell": tomb.cell, "region": tomb.region})
    # What provisioning refuses before touching anything, refused here too (before the key or registry change).
    refuse_unsafe_spec(spec)
    preflight.check(spec, ws.ensure_cell(tomb.cell), ws.cell_clients(tomb.cell))
    registry = ws.registry
    placement = reserve_again(ws, tomb)  # the deprovision gave its slot back
    back = False
    try:
        result = _revive(ws, ctx, tomb, index, spec, source, started, notes)
        current = registry.get(tomb.tenant_id)
        back = current is not None and current.status is TenantStatus.active
        return result
    finally:
        if not back:  # still a tombstone (failed, or not verified): the slot goes back too
            placement.release(registry, tomb.tier)


def _revive(ws: Workspace, ctx: DrillContext, tomb: TenantRecord, index: BackupIndex, spec: TenantSpec,
            source: str, started: datetime, notes: list[str]) -> RestoreResult:
    from tenantctl.drills.rekey import rekey_objects, rekey_store
    from tenantctl.drills.restore import restore_logical
    from tenantctl.drills.verify import verify

    old = tomb.resources
    registry = ws.registry
    with registry.hold(tomb.tenant_id, "drill-restore") as held:
        if revive_key(ctx.kms, old.kms_key_arn):
            notes.append(f"old key {old.kms_key_arn}: deletion cancelled, enabled")
        manifest = store.load_manifest(ctx.s3, ctx.kms, tomb, index.backup_id)
        applied = apply_spec(ws, spec, stack=tomb.current_stack)  # back into the stack it was destroyed from
        new = applied.resources
        notes.append(f"re-provisioned ({source}); new key {new.kms_key_arn}")
        live = held.record.model_copy(update={"resources": new})
        result = restore_logical(ctx, live, manifest, Target.in_place, started, key_arn=old.kms_key_arn)
        checks = verify(ctx, live, manifest, result)
        if not all(c.ok for c in checks):
            notes.append("restored copy does not match the backup: the tenant stays deprovisioned, "
                         f"its old key stays enabled and the copy stays in {new.store.database}."
                         f"{new.store.schema_name} for inspection")
            held.record = registry.release(held.record, error=f"drill restore of {manifest.backup_id}: "
                                                              "verification failed")
            return result.model_copy(update={"checks": checks, "notes": notes, "finished_at": utcnow(),
                                             "manifest": manifest})
        if tomb.tier is Tier.dedicated:
            aside = set_aside_final_snapshot(ctx.rds or ws.clients_for(tomb)("rds"), tomb, new.kms_key_arn)
            if aside:
                notes.append(f"final RDS snapshot of the deprovision kept as {aside} (new key), so that the "
                             "next deprovision can take its own")
        rekeyed = new.kms_key_arn != old.kms_key_arn
        if rekeyed:
            resealed, skipped = rekey_store(ctx, tomb.tenant_id, old, new)
            moved = rekey_objects(ctx.s3, new.bucket, new.prefix, old.kms_key_arn, new.kms_key_arn)
            left = f" ({skipped} rows not in tenant_runtime's format left as they are)" if skipped else ""
            notes.append(f"re-keyed to the new key: {resealed} sealed rows (messages, documents, search key), "
                         f"{moved} SSE-KMS objects{left}")
        held.record = activate(ws, held.record, spec, applied)
    result = result.model_copy(update={"checks": checks, "finished_at": utcnow()})
    if rekeyed:  # only once the tenant is back: until then a retry may still need the old key
        try:
            ctx.kms.schedule_key_deletion(KeyId=_key_id(old.kms_key_arn), PendingWindowInDays=OLD_KEY_PENDING_DAYS)
            notes.append(f"old key scheduled for deletion again ({OLD_KEY_PENDING_DAYS} days): backups made "
                         "before the restore open only through another restore until then")
        except Exception as exc:
            notes.append(f"old key {old.kms_key_arn} could not be scheduled for deletion ({exc}): schedule it by hand")
    try:
        fresh = backup(ctx, held.record, reason="after-restore")
        notes.append(f"new backup {fresh.backup_id} under the new key")
    except Exception as exc:  # the tenant is back; the next scheduled backup will try again
        notes.append(f"backup after the restore failed: {exc}")
    return result.model_copy(update={"notes": notes, "manifest": manifest})



def _require_workspace_key(kms: Any, key_arn: str, tenant_id: str, workspace: str) -> None:
    """The key a removed workspace's backup names is trusted only when KMS tags
    it as that workspace's of that tenant (the registry no longer records it)."""
    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=_key_id(key_arn)).get("Tags", [])}
    if tags.get("tenant") != tenant_id or tags.get("workspace") != workspace:
        raise InvalidInput(f"key {key_arn} is not tagged as workspace {workspace!r} of tenant {tenant_id!r} "
                           f"(tags {tags}): refused")


def revive_workspace(ws: Workspace, ctx: DrillContext, record: TenantRecord, index: BackupIndex,
                     target: Target = Target.in_place, yes: bool = False, overwrite: bool = False) -> RestoreResult:
    """Bring a removed workspace (``ctx.scope``) of a live tenant back from its
    backup ``index``, within its key's deletion window: the old key's deletion
    cancelled, the workspace added again (a new key, schema, role, queues),
    the backup restored in place with the old key and verified, its ciphertext
    moved to the new key, the old key scheduled for deletion again and a fresh
    backup taken. ``record``: the removed workspace's view (``removed_view``)."""
    from tenantctl.drills.rekey import rekey_objects, rekey_store
    from tenantctl.drills.restore import restore_logical
    from tenantctl.drills.scope import workspace_view
    from tenantctl.drills.verify import verify
    from tenantctl.naming import OwnerNames
    from tenantctl.operations.workspaces import add

    name, started, notes = ctx.scope, utcnow(), []
    if target is not Target.in_place or not yes or overwrite:
        raise InvalidInput(f"workspace {name!r} of {record.tenant_id!r} was removed: only `--target in-place --yes` "
                           "(without --overwrite) brings it back")
    old_key = index.key_arn
    _require_workspace_key(ctx.kms, old_key, record.tenant_id, name)
    state, _ = key_state(ctx.kms, old_key)
    if state not in ("PendingDeletion", "Disabled", "Enabled"):
        raise InvalidInput(f"workspace {name!r}: its key {old_key} is {state}: its backups can no longer be opened")
    if revive_key(ctx.kms, old_key):
        notes.append(f"old key {old_key}: deletion cancelled, enabled")
    old = record.model_copy(update={"resources": record.resources.model_copy(update={"kms_key_arn": old_key})})
    manifest = store.load_manifest(ctx.s3, ctx.kms, old, index.backup_id)
    tenant = add(ws, record.tenant_id, name).record
    live = workspace_view(tenant, name)
    notes.append(f"workspace added again; new key {live.resources.kms_key_arn}")
    with ws.registry.hold(record.tenant_id, "drill-restore"):
        result = restore_logical(ctx, live, manifest, Target.in_place, started, key_arn=old_key)
        checks = verify(ctx, live, manifest, result)
        if not all(c.ok for c in checks):
            notes.append("restored copy does not match the backup: the old key stays enabled, the copy stays in "
                         f"{live.resources.store.schema_name} for inspection")
            return result.model_copy(update={"checks": checks, "notes": notes, "manifest": manifest})
        resealed, _ = rekey_store(ctx, OwnerNames(record.tenant_id, name).key, old.resources, live.resources)
        moved = rekey_objects(ctx.s3, live.resources.bucket, live.resources.prefix, old_key,
                              live.resources.kms_key_arn)
        notes.append(f"re-keyed to the new key: {resealed} sealed rows, {moved} SSE-KMS objects")
    ctx.kms.schedule_key_deletion(KeyId=_key_id(old_key), PendingWindowInDays=OLD_KEY_PENDING_DAYS)
    notes.append(f"old key scheduled for deletion again ({OLD_KEY_PENDING_DAYS} days)")
    fresh = backup(ctx, live, reason="after-restore")
    notes.append(f"new backup {fresh.backup_id} under the new key")
    return result.model_copy(update={"checks": checks, "notes": notes, "finished_at": utcnow(),
                                     "manifest": manifest})
