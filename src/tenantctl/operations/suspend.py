"""Suspend and resume a tenant: it keeps every resource and all its data, and
serves nothing while suspended.

- The registry record says `suspended`: the runtime refuses the tenant
  (TenantInactive, 403) as soon as its registry cache entry expires (30 s by
  default, ``TenantRuntime(registry_ttl=...)``).
- The tenant role's trust policy gets an explicit Deny of every AssumeRole, so
  the runtime cannot renew a role session (one already issued runs out within
  its duration: 15 min with the runtime's default).
- Its database logins (its role's and its workspaces', pooled or dedicated)
  are NOLOGIN and their open sessions ended (the schema script, then
  ``tenant_schema_sql.end_sessions``); the admin login tenantctl uses is
  never touched.

Suspension is desired state like any provision option: ``suspended: true`` in
the tenant's stack file, applied by a provision (commit the file: an `apply` of
one without it resumes the tenant). ``resume`` clears it, and wakes a
hibernated tenant (``operations.hibernate``) too.

The 30-day password rotation logs in as the role, so one that comes due while
the tenant is suspended waits, pending (its logins stay closed, its password
unchanged); ``resume`` finishes it once the logins are back
(``operations.deferred_rotation``).
"""

from __future__ import annotations

from tenantctl.engines.base import EventSink, UpResult
from tenantctl.errors import InvalidInput
from tenantctl.models import TenantRecord, TenantStatus
from tenantctl.operations.provision import provision
from tenantctl.stackconfig import read_tenant, stack_file
from tenantctl.workspace import Workspace

SERVING = (TenantStatus.active, TenantStatus.suspended)


def set_suspended(ws: Workspace, tenant_id: str, suspended: bool,
                  on_event: EventSink | None = None) -> tuple[TenantRecord, UpResult]:
    """Suspend (or resume) ``tenant_id``: its committed spec with ``suspended``
    set, provisioned (idempotent: a suspended tenant suspended again changes nothing)."""
    record = _serving(ws, tenant_id)
    path = stack_file(ws.stacks_dir, record.current_stack)
    if not path.exists():
        raise InvalidInput(f"{path} does not exist: suspending changes the tenant's committed spec, so run it in "
                           "the project that holds its stack file")
    spec = read_tenant(path).model_copy(update={"suspended": suspended})
    return provision(ws, spec, on_event=on_event)


def suspend(ws: Workspace, tenant_id: str, on_event: EventSink | None = None) -> tuple[TenantRecord, list[str]]:
    """Suspend the tenant. Returns the record and what was done (nothing when
    it was suspended already: idempotent)."""
    before = _serving(ws, tenant_id).status
    record, _ = set_suspended(ws, tenant_id, True, on_event=on_event)
    return record, [] if before is TenantStatus.suspended else ["suspended"]


def resume(ws: Workspace, tenant_id: str, on_event: EventSink | None = None) -> tuple[TenantRecord, list[str]]:
    """Serve the tenant again: wake its database when it hibernates, lift a
    suspension, finish a password rotation the suspension deferred. Returns
    the record and what was done (nothing when it was active and nothing was pending)."""
    from tenantctl.operations.deferred_rotation import finish_deferred
    from tenantctl.operations.hibernate import wake

    _serving(ws, tenant_id)
    record, woken = wake(ws, tenant_id, on_event=on_event)
    done = [woken] if woken else []
    path = stack_file(ws.stacks_dir, record.current_stack)
    if record.status is TenantStatus.suspended or (path.exists() and read_tenant(path).suspended):
        record, _ = set_suspended(ws, tenant_id, False, on_event=on_event)
        done.append("suspension lifted")
    # The logins are back: a rotation the suspension deferred (or a resume that failed to finish) runs now.
    if rotated := finish_deferred(ws, record, on_event):
        done.append(rotated)
    return record, done


def _serving(ws: Workspace, tenant_id: str) -> TenantRecord:
    """The tenant's record; InvalidInput (exit 3) unless it is active or suspended."""
    record = ws.registry.require(tenant_id)
    if record.status not in SERVING:
        raise InvalidInput(f"tenant {tenant_id!r} is {record.status.value}: only an active or suspended tenant is "
                           "suspended or resumed")
    return record
