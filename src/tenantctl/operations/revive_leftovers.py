"""What a given-up revive leaves, removed.

A revive re-provisions a tombstone through provision's own up, into the stack
its deprovision destroyed. Given up — failed after its lock, killed and then
`tenantctl unlock`ed — the tenant stays a tombstone, so whatever its up got to
create (a new KMS key, queues, role, secret, alarms, schema) would be live
resources of a deprovisioned tenant, in a stack state and a stack file no
command of a tombstone reads. So a give-up destroys them (``withdraw_revive``)
and schedules the old key's deletion again (the revive cancelled it first;
the next revive cancels it again). A destroy that fails is not the give-up's
outcome: a warning names what is left and `tenantctl deprovision ID`, which
on a tombstone holding such resources removes them (``converge``). A revive
that ran to its verification and failed it keeps its copy for inspection
(named in its notes) until that deprovision; a revive refuses to start on it
meanwhile (a killed revive's, still marked ``reviving``, its re-run adopts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from tenantctl.engines.base import ChangeSet, EventSink, Op, phase
from tenantctl.errors import Conflict, engine_step, one_line
from tenantctl.models import TenantRecord, TenantStatus, Tier
from tenantctl.stackconfig import stack_file
from tenantctl.workspace import Workspace

log = logging.getLogger(__name__)

OLD_KEY_PENDING_DAYS = 30  # an old key's deletion window when a revive ends: the undo period


def holds_leftovers(ws: Workspace, tomb: TenantRecord) -> bool:
    """The tombstone's stack records a resource (a revive's up got that far), or its stack file is back."""
    stack = tomb.current_stack
    return ws.engine.holds_resources(stack) or stack_file(ws.stacks_dir, stack).exists()


def destroy_leftovers(ws: Workspace, tomb: TenantRecord, on_event: EventSink | None = None,
                      keep_file: str | None = None) -> ChangeSet:
    """Destroy what the tombstone's stack holds and remove its stack file (``keep_file``:
    the committed text it had before the revive, written back instead); the tombstone's old key
    is scheduled for deletion again first. Raises what fails."""
    from tenantctl.operations.deletion_protection import lift, set_aside_final_snapshot

    stack = tomb.current_stack
    path = stack_file(ws.stacks_dir, stack)
    with engine_step(f"removing what {tomb.tenant_id!r}'s given-up revive created"):
        if tomb.tier is Tier.dedicated and tomb.resources is not None and ws.engine.holds_resources(stack):
            # The destroy's final snapshot takes the name of the deprovision's: that one goes aside first,
            # under the old key (the revive enabled it before its up).
            set_aside_final_snapshot(ws.clients_for(tomb)("rds"), tomb, tomb.resources.kms_key_arn)
        if tomb.resources is not None:
            # Before the destroy: the old key carries the stack's key urn tag too, and a key the killed up
            # had only begun (no id recorded) is found by that tag among the keys not pending deletion (and
            # made since its intent, when the intent has its time: a state written before it had none).
            _reschedule_old_key(ws, tomb)
        lift(ws, stack, on_event)
        phase(on_event, tomb.tenant_id, "destroying what the given-up revive created")
        changes = ws.engine.destroy(stack, on_event=on_event)
    if keep_file is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(keep_file)
    return changes


def retire_old_key(kms: Any, key_arn: str) -> None:
    """The revive cancelled the old key's deletion to open its backups: back to pending deletion
    for the undo period."""
    from tenantctl.drills.backup import key_id
    kms.schedule_key_deletion(KeyId=key_id(key_arn), PendingWindowInDays=OLD_KEY_PENDING_DAYS)


def _reschedule_old_key(ws: Workspace, tomb: TenantRecord) -> None:
    """The tombstone's old key retired again, unless it already is (a give-up may come twice)."""
    from tenantctl.drills.backup import key_state
    kms = ws.clients_for(tomb)("kms")
    key = tomb.resources.kms_key_arn
    if key_state(kms, key)[0] in ("Enabled", "Disabled"):
        retire_old_key(kms, key)


def withdraw_revive(ws: Workspace, tenant_id: str, keep_file: str | None = None) -> str | None:
    """A give-up's removal of what the revive created, read from the registry: only while the
    tenant is a tombstone (a revive that activated it and failed its posture check keeps its
    resources). A note of what was done, or None (nothing to do). A failure is a warning naming
    what is left and the command that retries; it never replaces the give-up's own outcome."""
    try:
        tomb = ws.registry.get(tenant_id)
        if tomb is None or tomb.status is not TenantStatus.deprovisioned:
            return None
        removed = 0
        if holds_leftovers(ws, tomb):
            removed = destroy_leftovers(ws, tomb, keep_file=keep_file).count(Op.delete)
        elif tomb.resources is not None:
            _reschedule_old_key(ws, tomb)
    except Exception as exc:  # noqa: BLE001 - any failure here is a warning, the give-up's outcome stands
        log.warning("tenant %r: what its given-up revive created could not all be removed (%s): what is left "
                    "stays in stack %s; `tenantctl deprovision %s` removes it", tenant_id, one_line(exc),
                    tenant_id, tenant_id)
        return None
    return (f"{removed} resource(s) its revive created destroyed; old key scheduled for deletion again"
            if removed else None)


def converge(ws: Workspace, tomb: TenantRecord, on_event: EventSink | None = None,
             then: Callable[[TenantRecord], Any] | None = None) -> tuple[ChangeSet, Any]:
    """`deprovision` of a tombstone: what a given-up revive left (its stack's resources, its stack
    file) destroyed under the tenant's lock, then ``then`` under the same lock (an erasure of the
    data its deprovision kept), whose result is returned beside the changes; nothing left and
    nothing to do after is the Conflict it always was."""
    if tomb.reviving or (then is None and not holds_leftovers(ws, tomb)):
        raise Conflict(f"tenant {tomb.tenant_id!r} is already deprovisioned (since {tomb.deprovisioned_at:%Y-%m-%d})"
                       + (f"; a revive holds it: `tenantctl unlock {tomb.tenant_id}` gives it up" if tomb.reviving
                          else ""))
    with ws.registry.hold(tomb.tenant_id, "deprovision") as held:
        changes = (destroy_leftovers(ws, held.record, on_event) if holds_leftovers(ws, held.record)
                   else ChangeSet(stack=held.record.current_stack))
        return changes, None if then is None else then(held.record)
