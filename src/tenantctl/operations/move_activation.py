"""A finalized move's last step, activation, finished by the next run.

A ``--finalize`` ends the move with one registry write (the move cleared,
the old store's slot given back) and then activates the tenant as a
provision does (``provision.activate``: the record marked active and
unlocked, its live posture checked). That ending write already records the
fingerprint and digest of what was applied and the tenant as not verified
yet (``provision_failed``, with ``UNACTIVATED`` in ``last_error``), so a run
killed between the two leaves a record that names the spec it runs and that
`apply` provisions again; `move ID --finalize` (or `move ID`), which then
finds no move, recognises it (``unactivated``) and finishes the activation
itself instead of answering that there is no move."""

from __future__ import annotations

from collections.abc import Callable

from tenant_runtime.models import TenantRecord, TenantStatus
from tenantctl.errors import InvalidInput
from tenantctl.models import TenantSpec
from tenantctl.stackconfig import read_tenant, stack_file
from tenantctl.workspace import Workspace

UNACTIVATED = "its move was finalized, the tenant not yet activated (posture not checked)"


def unactivated_note(tenant_id: str) -> str:
    """``last_error`` of the write ending a finalized move, until the activation replaces it."""
    return f"{UNACTIVATED}: `tenantctl move {tenant_id} --finalize` finishes it"


def unactivated(ws: Workspace, record: TenantRecord) -> TenantSpec | None:
    """The spec a tenant with no open move was applied as but not activated
    with (its stack file, without a store retiring, the one the record's
    digest names, its last provision or finalize not verified: a finalize
    killed after the write ending its move, or whose posture check failed,
    which `apply` would provision again just the same); None when the tenant
    is not in that state."""
    if (record.move is not None or not record.provision_failed or record.resources is None
            or record.status not in (TenantStatus.active, TenantStatus.suspended)):
        return None
    try:
        spec = read_tenant(stack_file(ws.stacks_dir, record.current_stack))
    except (OSError, InvalidInput):
        return None
    if spec.retiring is not None or spec.content_hash() != record.spec_digest:
        return None
    return spec.model_copy(update={"cell": spec.cell or record.cell})


def activate_unactivated(ws: Workspace, tenant_id: str, progress: Callable[[str], None] | None) -> TenantRecord | None:
    """Under the tenant's lock (a killed run's dead lock cleared by taking
    it): its stack applied again (nothing to change: the `up` gives what
    the posture check reads) and the tenant activated. None: the record is
    no longer unactivated (another run finished it since it was read)."""
    from tenantctl.operations.provision import activate, apply_spec

    say = progress or (lambda _line: None)
    with ws.registry.hold(tenant_id, "move") as held:
        spec = unactivated(ws, held.record)
        if spec is None:
            return None
        say(f"move {tenant_id}: no move open, the tenant applied as its stack file says but not activated (a "
            "finalize killed after the write ending its move, or a posture check that failed): applying its stack "
            "again and checking its posture")
        applied = apply_spec(ws, spec, stack=held.record.stack)
        held.record = activate(ws, held.record, spec, applied)
        say(f"move {tenant_id}: activated")
        return held.record
