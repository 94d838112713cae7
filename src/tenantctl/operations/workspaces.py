"""Workspaces of a tenant (departments, projects): add, list, show, remove.

A workspace is desired state like any tenant option: ``workspaces:`` in the
tenant's stack file. ``add`` and ``remove`` change that list and provision the
tenant (the same path, lock, policy gate and posture check as `provision`), so
`apply` manages workspaces from committed stack files, and a run killed
midway converges when run again: the stack file already says what is wanted,
the registry says what was applied.

Refused before anything is written: an unknown tenant (exit 6), a name that
breaks the workspace naming rules (exit 3), a tenant that is not serving or
has a move open (exit 3), a remove of a workspace the tenant does not have
(exit 6).
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from tenantctl.engines.base import EventSink, phase
from tenantctl.errors import InvalidInput, NotFound
from tenantctl.models import (
    TenantRecord,
    TenantSpec,
    TenantStatus,
    WorkspaceResources,
    WorkspaceSpec,
    describe_validation_error,
)
from tenantctl.naming import require_valid, require_valid_workspace
from tenantctl.operations.provision import provision
from tenantctl.registry import refuse_open_move
from tenantctl.stackconfig import read_tenant, stack_file
from tenantctl.workspace import Workspace

SERVING = (TenantStatus.active, TenantStatus.suspended)


class WorkspaceView(BaseModel):
    """A workspace as `list` and `show` report it: desired (in the stack file) and applied (in the registry)."""

    tenant_id: str
    name: str
    desired: bool
    applied: bool
    spec: WorkspaceSpec | None = None
    resources: WorkspaceResources | None = None


class Changed(BaseModel):
    record: TenantRecord
    changed: bool  # False: it already was as asked (an idempotent re-run)
    final_backup: str | None = None  # the backup `remove` took before removing


def _committed(ws: Workspace, tenant_id: str) -> tuple[TenantRecord, TenantSpec]:
    """The tenant's record and committed spec, or the refusal (nothing written)."""
    require_valid(tenant_id)
    record = ws.registry.require(tenant_id)
    if record.status is TenantStatus.deprovisioned:  # its stack file went with it: say why, not that it is missing
        raise InvalidInput(f"tenant {tenant_id!r} is deprovisioned: its workspaces went with it (`tenantctl drill "
                           f"restore {tenant_id} --target in-place` brings the tenant back with them)")
    path = stack_file(ws.stacks_dir, record.current_stack)
    if not path.exists():
        raise InvalidInput(f"{path} does not exist: workspaces are part of the tenant's committed spec, so run this "
                           "in the project that holds its stack file")
    return record, read_tenant(path).model_copy(update={"cell": record.cell})


def _serving(record: TenantRecord) -> None:
    if record.status not in SERVING:
        raise InvalidInput(f"tenant {record.tenant_id!r} is {record.status.value}: workspaces are added to or "
                           "removed from an active or suspended tenant only")
    refuse_open_move(record)  # the move carries the workspaces it started with


def _with(spec: TenantSpec, workspaces: list[WorkspaceSpec]) -> TenantSpec:
    try:  # validated again: the names must fit with this tenant's id
        return TenantSpec.model_validate({**spec.model_dump(mode="json", exclude_none=True),
                                          "workspaces": [w.model_dump(mode="json", exclude_none=True)
                                                         for w in workspaces]})
    except ValidationError as exc:
        raise InvalidInput(describe_validation_error(exc)) from None


def add(ws: Workspace, tenant_id: str, name: str, owner: str | None = None,
        on_event: EventSink | None = None) -> Changed:
    """Add workspace ``name`` to the tenant (idempotent: one it has is left as it is)."""
    require_valid(tenant_id)
    require_valid_workspace(tenant_id, name)
    record, spec = _committed(ws, tenant_id)
    _serving(record)
    if spec.workspace(name) is not None:
        if name in record.workspaces:
            return Changed(record=record, changed=False)
        # In the stack file, not applied: a killed add (or an edit not applied yet) converges.
        record, _ = provision(ws, spec, on_event=on_event)
        return Changed(record=record, changed=True)
    wanted = WorkspaceSpec(name=name, **({"owner": owner} if owner else {}))
    record, _ = provision(ws, _with(spec, [*spec.workspaces, wanted]), on_event=on_event)
    return Changed(record=record, changed=True)


def remove(ws: Workspace, tenant_id: str, name: str, on_event: EventSink | None = None,
           final_backup: bool = True) -> Changed:
    """Remove workspace ``name``: a final backup of it first (unless
    ``final_backup`` is False; failing it stops the removal, nothing changed),
    then its schema (with its data), role, queues and secret are deleted, its
    key scheduled for deletion (30 days, cancellable: the window a final
    backup can be restored in), its objects kept. Unknown to both the stack
    file and the registry: NotFound."""
    require_valid(tenant_id)
    require_valid_workspace(tenant_id, name)
    record, spec = _committed(ws, tenant_id)
    if spec.workspace(name) is None and name not in record.workspaces:
        raise NotFound(f"tenant {tenant_id!r} has no workspace {name!r}")
    _serving(record)
    final = None
    if final_backup and name in record.workspaces:  # never applied: nothing to back up
        from tenantctl.drills.backup import final_backup as take_final_backup
        from tenantctl.operations.hibernate import awake

        record = awake(ws, record, on_event)  # pg_dump needs its database up
        phase(on_event, tenant_id, f"final backup of workspace {name}")
        final = take_final_backup(ws, record, workspace=name).backup_id
    # Gone from the stack file but still applied: a killed remove converges.
    record, _ = provision(ws, _with(spec, [w for w in spec.workspaces if w.name != name]), on_event=on_event)
    return Changed(record=record, changed=True, final_backup=final)


def views(ws: Workspace, tenant_id: str) -> list[WorkspaceView]:
    """Every workspace of the tenant, desired or applied, by name."""
    record, spec = _committed(ws, tenant_id)
    names = sorted({w.name for w in spec.workspaces} | set(record.workspaces))
    return [WorkspaceView(tenant_id=tenant_id, name=n, desired=spec.workspace(n) is not None,
                          applied=n in record.workspaces, spec=spec.workspace(n),
                          resources=record.workspaces.get(n)) for n in names]


def view(ws: Workspace, tenant_id: str, name: str) -> WorkspaceView:
    require_valid_workspace(tenant_id, name)
    found = [v for v in views(ws, tenant_id) if v.name == name]
    if not found:
        raise NotFound(f"tenant {tenant_id!r} has no workspace {name!r}")
    return found[0]


def what_goes(record: TenantRecord, name: str, final_backup: bool = True) -> list[str]:
    """What removing workspace ``name`` deletes and keeps, one line each (its confirmation)."""
    res = record.workspaces.get(name)
    if res is None:
        return [f"workspace {name} of tenant {record.tenant_id} (in its stack file, never applied)"]
    return [
        f"schema {res.store.schema_name} and role {res.store.role} in database {res.store.database}: its data is "
        "deleted; " + ("a final backup is taken first (under the workspace's key)" if final_backup
                       else "NO final backup"),
        f"queues {res.queue_url} and {res.dlq_url}, with their messages",
        f"IAM role {res.role_arn}",
        f"database secret {res.store.secret_arn}",
        f"KMS key {res.kms_key_arn} ({res.kms_alias}): scheduled for deletion (cancellable for 30 days)",
        f"objects under {res.prefix}: kept (unreadable once the key is deleted)",
    ]
