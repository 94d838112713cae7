"""Revive: bring a deprovisioned tenant back from a backup, within its retention
window (`tenantctl drill restore ID --target in-place --yes` on a tombstone).

1. The tombstone is locked, taking its cell's slot in the same write (marked
   ``reviving``: the recount counts it); the old KMS key's deletion is
   cancelled and the key enabled (the backup's data key and manifest are
   sealed under it).
2. The tenant is provisioned again from the spec saved in the backup's index
   (or its committed stack file) through provision's own apply step: queues, role,
   secret, alarms, schema and a **new** KMS key (the destroyed stack no longer
   owns the old one).
3. Database and objects are restored in place, the backup opened with the old
   key (the registry's, never the manifest's), and verified against the manifest.
4. Verified: the restored ciphertext moves to the new key
   (``tenantctl.drills.rekey``); each workspace the tombstone records is
   restored the same way into the one re-provisioned with it, from its backup
   that goes with the tenant's (``paired_backup``: the deprovision's final
   ones by default), opened with its old key and re-keyed to its new one; the
   record is activated and the live posture checked exactly as after a
   provision, the old keys are scheduled for deletion again, and fresh
   backups under the new keys start the backup chains again.
   Not verified: the tenant stays deprovisioned (lock released with the error),
   the old key stays enabled, the restored copy is left for inspection (a
   revive refuses to start on it until `deprovision ID` removes it). Failed
   after the lock: what the up created is destroyed and the old key's deletion
   scheduled again (``revive_leftovers``), as `unlock` does for a killed one. A
   workspace that does not verify fails the drill without keeping the tenant
   down: its old key stays enabled and its copy in place for inspection.

RTO here is the whole way back: re-provision, restore, verify, re-key.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any

from tenantctl.drills import store
from tenantctl.drills.backup import backup, key_id, key_state, key_tags
from tenantctl.drills.context import DrillContext
from tenantctl.drills.models import BackupIndex, BackupManifest, Check, RestoreResult, Target
from tenantctl.drills.scope import workspace_view
from tenantctl.errors import Conflict, InvalidInput, Locked, TenantctlError, one_line
from tenantctl.models import TenantRecord, TenantSpec, Tier, utcnow
from tenantctl.naming import OwnerNames, require_valid
from tenantctl.operations.deletion_protection import set_aside_final_snapshot
from tenantctl.operations.provision import activate, apply_spec
from tenantctl.operations.revive_leftovers import OLD_KEY_PENDING_DAYS, retire_old_key, withdraw_revive
from tenantctl.stackconfig import stack_file
from tenantctl.workspace import Workspace

log = logging.getLogger(__name__)


def revive_key(kms: Any, key_arn: str) -> bool:
    """Cancel the key's scheduled deletion (that leaves it Disabled) and enable it.
    True when it was pending deletion."""
    state, _ = key_state(kms, key_arn)
    if state == "PendingDeletion":
        kms.cancel_key_deletion(KeyId=key_id(key_arn))
        kms.enable_key(KeyId=key_id(key_arn))
        return True
    if state == "Disabled":
        kms.enable_key(KeyId=key_id(key_arn))
    return False


def under_key(record: TenantRecord, key_arn: str) -> TenantRecord:
    """``record`` with ``key_arn`` as its key: what opens a backup made under an old one."""
    return record.model_copy(update={"resources": record.resources.model_copy(update={"kms_key_arn": key_arn})})


def paired_backup(restored: BackupIndex, tenant_backups: list[BackupIndex],
                  workspace_backups: list[BackupIndex]) -> BackupIndex | None:
    """The workspace's backup that goes with the tenant's backup ``restored``:
    its newest started before the tenant's next backup (deprovision and `drill
    run --all` back the tenant up first, then each workspace), its newest of
    all when ``restored`` is the tenant's newest. None: it has none that early."""
    until = min((b.started_at for b in tenant_backups if b.started_at > restored.started_at), default=None)
    fits = [b for b in workspace_backups if until is None or b.started_at < until]
    return max(fits, key=lambda b: b.started_at, default=None)


def restore_rekeyed(ctx: DrillContext, live: TenantRecord, manifest: BackupManifest, old_key: str,
                    started: datetime) -> tuple[RestoreResult, str | None]:
    """Restore ``manifest`` in place into ``live`` (the tenant's record, or a
    workspace's view) with the backup opened under ``old_key``, verify it
    against the manifest and, verified, move its ciphertext to ``live``'s key.
    Returns the result with its checks, and what was re-keyed (None: not
    verified, nothing re-keyed)."""
    from tenantctl.drills.rekey import rekey_objects, rekey_store
    from tenantctl.drills.restore import restore_logical
    from tenantctl.drills.verify import verify

    result = restore_logical(ctx, live, manifest, Target.in_place, started, key_arn=old_key)
    checks = verify(ctx, live, manifest, result)
    result = result.model_copy(update={"checks": checks})
    if not all(c.ok for c in checks):
        return result, None
    new = live.resources
    if key_id(new.kms_key_arn) == key_id(old_key):
        return result, "nothing to re-key (the same key)"
    resealed, skipped = rekey_store(ctx, OwnerNames(live.tenant_id, manifest.workspace).key,
                                    new.model_copy(update={"kms_key_arn": old_key}), new)
    moved = rekey_objects(ctx.s3, new.bucket, new.prefix, old_key, new.kms_key_arn)
    left = f" ({skipped} rows not in tenant_runtime's format left as they are)" if skipped else ""
    return result, (f"re-keyed to the new key: {resealed} sealed rows (messages, documents, search key), "
                    f"{moved} SSE-KMS objects{left}")


def spec_for(ws: Workspace, index: BackupIndex, tomb: TenantRecord) -> tuple[TenantSpec, str]:
    """What to re-provision: a committed stack file if one exists again, else
    the spec saved in the backup's index (readable while the old key is still
    pending deletion), else the defaults for the tombstone's tier."""
    from tenantctl.stackconfig import read_tenant

    path = stack_file(ws.stacks_dir, tomb.current_stack)
    if path.exists():
        return read_tenant(path), f"spec from {path.name}"
    if index.spec:
        return TenantSpec.model_validate(index.spec), f"spec saved in backup {index.backup_id}"
    return (TenantSpec(id=tomb.tenant_id, tier=tomb.tier, region=tomb.region, owner=tomb.owner),
            "default spec (the backup holds none)")


def _check_window(tomb: TenantRecord, now: datetime) -> None:
    from tenantctl.registry import describe_lock, died

    # Another live run's lock (a deprovision still running, another revive): a conflict first. One whose
    # holder died (a killed revive's) is taken over with the revive's lock (``lock_reviving``).
    if tomb.lock is not None and died(tomb.lock) is None:
        raise Locked(describe_lock(tomb.tenant_id, tomb.lock))
    if tomb.retain_until is None or tomb.retain_until < now:
        raise InvalidInput(f"tenant {tomb.tenant_id!r} was deprovisioned and its retention window ended "
                           f"({tomb.retain_until or 'no retain_until'}): it cannot be restored in place")
    if tomb.resources is None:
        raise InvalidInput(f"tenant {tomb.tenant_id!r} has no resources on its tombstone: nothing to restore into")


def revive(ws: Workspace, ctx: DrillContext, tomb: TenantRecord, index: BackupIndex,
           target: Target = Target.in_place, yes: bool = False, overwrite: bool = False) -> RestoreResult:
    """Re-provision the tombstoned tenant and restore the backup ``index`` names
    into it (the drill's restore step for a tombstone, see
    ``tenantctl.drills.run.drill``). The backup's manifest is sealed under the
    old key, so it is opened only once that key's deletion is cancelled."""
    from tenantctl import preflight
    from tenantctl.placement import lock_again
    from tenantctl.policy import refuse_unsafe_spec

    require_valid(tomb.tenant_id)
    started = utcnow()
    if target is not Target.in_place or not yes:
        raise InvalidInput(f"tenant {tomb.tenant_id!r} is deprovisioned: only `--target in-place --yes` brings it back")
    if overwrite:
        raise InvalidInput(f"tenant {tomb.tenant_id!r} is deprovisioned: it comes back into new resources, "
                           "there is nothing to --overwrite")
    _check_window(tomb, started)
    if not tomb.reviving and ws.engine.holds_resources(tomb.current_stack):
        # Not a killed revive's (its re-run adopts those): a copy kept for inspection, or what a give-up's
        # failed removal left. Refused before anything changes, so that a re-run never removes it unasked.
        raise Conflict(f"tenant {tomb.tenant_id!r}: its stack {tomb.current_stack} still holds what an earlier "
                       "revive created (a restored copy kept for inspection, or what its give-up could not remove): "
                       f"`tenantctl deprovision {tomb.tenant_id}` removes it, then restore again")
    notes: list[str] = []
    spec, source = spec_for(ws, index, tomb)
    # Back into its own cell and region: its data and backups are there (residency).
    spec = spec.model_copy(update={"cell": tomb.cell, "region": tomb.region})
    # What provisioning refuses before touching anything, refused here too (before the key or registry change).
    refuse_unsafe_spec(spec)
    preflight.check(spec, ws.ensure_cell(tomb.cell), ws.cell_clients(tomb.cell))
    # The first write: the tombstone locked with its cell's slot (the deprovision gave it back), in one
    # transaction, so that a run killed anywhere leaves a counter its records' recount agrees with.
    path = stack_file(ws.stacks_dir, tomb.current_stack)
    committed = path.read_text() if path.exists() else None  # what a give-up puts back
    locked = lock_again(ws, tomb, "drill-restore")
    try:
        result, last = _revive(ws, ctx, tomb, locked, index, spec, source, started, notes, committed)
    except BaseException:
        _give_back_slot(ws, tomb.tenant_id, None)  # the record as the failure left it: read again
        raise
    _give_back_slot(ws, tomb.tenant_id, last)
    return result


def _give_back_slot(ws: Workspace, tenant_id: str, last: TenantRecord | None) -> None:
    """Still a tombstone (refused, failed, not verified): the slot goes back with its mark
    (``give_back_revive_slot``; ``last``: the record as the revive left it, saving the read).
    A registry failing here is a warning naming what gives the slot back, never the revive's
    outcome: its own error and exit code stand."""
    try:
        ws.registry.give_back_revive_slot(tenant_id, last)
    except TenantctlError as exc:
        log.warning("tenant %r: its revive's cell slot was not given back (%s); `tenantctl unlock %s` gives it "
                    "back, or `tenantctl drill restore %s --target in-place --yes` tries the revive again",
                    tenant_id, one_line(exc), tenant_id, tenant_id)


def _revive(ws: Workspace, ctx: DrillContext, tomb: TenantRecord, locked: TenantRecord, index: BackupIndex,
            spec: TenantSpec, source: str, started: datetime, notes: list[str],
            committed: str | None) -> tuple[RestoreResult, TenantRecord]:
    """The revive under the tombstone's lock: the result, and the record as it left it.
    Failing while still a tombstone, what its up created is destroyed (``withdraw_revive``)
    and its stack file put back as it was (``committed``: none, removed)."""
    old = tomb.resources
    registry = ws.registry
    with registry.hold(tomb.tenant_id, "drill-restore", acquired=locked) as held:
        try:
            if revive_key(ctx.kms, old.kms_key_arn):
                notes.append(f"old key {old.kms_key_arn}: deletion cancelled, enabled")
            manifest = store.load_manifest(ctx.s3, ctx.kms, tomb, index.backup_id)
            applied = apply_spec(ws, spec, stack=tomb.current_stack)  # back into the stack it was destroyed from
            new = applied.resources
            notes.append(f"re-provisioned ({source}); new key {new.kms_key_arn}")
            live = held.record.model_copy(update={"resources": new})
            result, rekeyed = restore_rekeyed(ctx, live, manifest, old.kms_key_arn, started)
            if rekeyed is None:
                notes.append("restored copy does not match the backup: the tenant stays deprovisioned, "
                             f"its old key stays enabled and the copy stays in {new.store.database}."
                             f"{new.store.schema_name} for inspection (`tenantctl deprovision "
                             f"{tomb.tenant_id}` removes what the revive created)")
                held.record = registry.release(held.record, error=f"drill restore of {manifest.backup_id}: "
                                                                  "verification failed")
                return (result.model_copy(update={"notes": notes, "finished_at": utcnow(), "manifest": manifest}),
                        held.record)
            notes.append(rekeyed)
            if tomb.tier is Tier.dedicated:
                aside = set_aside_final_snapshot(ctx.rds or ws.clients_for(tomb)("rds"), tomb, new.kms_key_arn)
                if aside:
                    notes.append(f"final RDS snapshot of the deprovision kept as {aside} (new key), so that the "
                                 "next deprovision can take its own")
            # Before the record is activated: the tenant serves again with its workspaces' data.
            workspace_checks, restored = _revive_workspaces(ctx, tomb, live, index, notes)
            held.record = activate(ws, held.record, spec, applied)
        except BaseException:
            # Given up still a tombstone: what its up created goes (a revive brought back keeps it).
            removed = withdraw_revive(ws, tomb.tenant_id, keep_file=committed)
            if removed:
                log.info("tenant %r: revive given up, still deprovisioned: %s", tomb.tenant_id, removed)
            raise
    result = result.model_copy(update={"checks": result.checks + workspace_checks, "finished_at": utcnow()})
    old_keys = {None: old.kms_key_arn} if key_id(new.kms_key_arn) != key_id(old.kms_key_arn) else {}
    # Only once the tenant is back: until then a retry may still need the old keys.
    for name, key in (old_keys | restored).items():
        try:
            retire_old_key(ctx.kms, key)
            notes.append(f"{_of(name)}old key scheduled for deletion again ({OLD_KEY_PENDING_DAYS} days): backups "
                         "made before the restore open only through another restore until then")
        except Exception as exc:
            notes.append(f"{_of(name)}old key {key} could not be scheduled for deletion ({exc}): schedule it by hand")
    for name in [None, *restored]:
        try:
            fresh = backup(replace(ctx, scope=name), workspace_view(held.record, name), reason="after-restore")
            notes.append(f"{_of(name)}new backup {fresh.backup_id} under the new key")
        except Exception as exc:  # the tenant is back; the next scheduled backup will try again
            notes.append(f"{_of(name)}backup after the restore failed: {exc}")
    return result.model_copy(update={"notes": notes, "manifest": manifest}), held.record


def _of(workspace: str | None) -> str:
    """A note's prefix: what it is about (nothing: the tenant itself)."""
    return "" if workspace is None else f"workspace {workspace}: "


def _revive_workspaces(ctx: DrillContext, tomb: TenantRecord, live: TenantRecord, index: BackupIndex,
                       notes: list[str]) -> tuple[list[Check], dict[str, str]]:
    """Each workspace the tombstone records, restored into the one the revive
    re-provisioned (empty) from its backup paired with the tenant's ``index``,
    opened with the key that backup was made under and re-keyed to the new
    one. Returns the checks (named after the workspace; a restore that fails
    is a failed check, and the tenant still comes back) and the old key of
    each workspace restored and re-keyed, by name."""
    tid, checks, restored = tomb.tenant_id, [], {}
    tenant_backups = store.list_backups(ctx.s3, tomb)
    for name, was in sorted(tomb.workspaces.items()):
        if name not in live.workspaces:
            notes.append(f"{_of(name)}not in the spec the tenant was re-provisioned from, not brought back; "
                         f"`tenantctl drill restore {tid} --workspace {name} --target in-place --yes` brings it "
                         "back within its key's deletion window (30 days)")
            continue
        gone = workspace_view(tomb, name)
        found = paired_backup(index, tenant_backups, store.list_backups(ctx.s3, gone))
        if found is None:
            notes.append(f"{_of(name)}re-provisioned empty: it has no backup from before the tenant's next backup "
                         f"after {index.backup_id}")
            continue
        into = workspace_view(live, name)
        again = (f"once dealt with, `tenantctl workspace remove {tid} {name} --no-final-backup --yes` and "
                 f"`tenantctl drill restore {tid} --workspace {name} --backup {found.backup_id} --target in-place "
                 "--yes` try again")
        try:
            # The registry's key of the workspace; an earlier one only when KMS tags it as this workspace's.
            if key_id(found.key_arn) != key_id(was.kms_key_arn):
                _require_workspace_key(ctx.kms, found.key_arn, tid, name)
            if revive_key(ctx.kms, found.key_arn):
                notes.append(f"{_of(name)}old key {found.key_arn}: deletion cancelled, enabled")
            manifest = store.load_manifest(ctx.s3, ctx.kms, under_key(gone, found.key_arn), found.backup_id)
            result, rekeyed = restore_rekeyed(replace(ctx, scope=name), into, manifest, found.key_arn, utcnow())
        except Exception as exc:  # this workspace fails the drill; the tenant and its other workspaces come back
            checks.append(Check(name=f"workspace {name}: restore", expected=f"backup {found.backup_id} restored",
                                actual=f"{type(exc).__name__}: {exc}", ok=False))
            notes.append(f"{_of(name)}backup {found.backup_id} not restored; {again}")
            continue
        checks += [c.model_copy(update={"name": f"workspace {name}: {c.name}"}) for c in result.checks]
        if rekeyed is None:
            notes.append(f"{_of(name)}restored copy of backup {found.backup_id} does not match it: its old key stays "
                         f"enabled and the copy stays in {into.resources.store.schema_name} for inspection; {again}")
            continue
        notes.append(f"{_of(name)}backup {found.backup_id} restored and verified; {rekeyed}")
        restored[name] = found.key_arn
    return checks, restored


def _require_workspace_key(kms: Any, key_arn: str, tenant_id: str, workspace: str) -> None:
    """The key a workspace's backup names, when the registry does not record
    it, is trusted only when KMS tags it as that workspace's of that tenant."""
    tags = key_tags(kms, key_arn)
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
    manifest = store.load_manifest(ctx.s3, ctx.kms, under_key(record, old_key), index.backup_id)
    tenant = add(ws, record.tenant_id, name).record
    live = workspace_view(tenant, name)
    notes.append(f"workspace added again; new key {live.resources.kms_key_arn}")
    with ws.registry.hold(record.tenant_id, "drill-restore"):
        result, rekeyed = restore_rekeyed(ctx, live, manifest, old_key, started)
    if rekeyed is None:
        notes.append("restored copy does not match the backup: the old key stays enabled, the copy stays in "
                     f"{live.resources.store.schema_name} for inspection")
        return result.model_copy(update={"notes": notes, "manifest": manifest})
    notes.append(rekeyed)
    retire_old_key(ctx.kms, old_key)
    notes.append(f"old key scheduled for deletion again ({OLD_KEY_PENDING_DAYS} days)")
    fresh = backup(ctx, live, reason="after-restore")
    notes.append(f"new backup {fresh.backup_id} under the new key")
    return result.model_copy(update={"notes": notes, "finished_at": utcnow(), "manifest": manifest})
