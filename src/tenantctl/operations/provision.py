"""Provision (or update) one tenant: place it in a cell, reserve it in the
registry, write its stack file, apply, record the outputs, verify the live
posture.

Placement (``tenantctl.placement``) and the registry reservation come first,
so a run that cannot place or reserve creates nothing (the cell slot a refused
run took is given back); a failed apply leaves the lock released, the error on
the record and the slot held (resources may exist), and a re-run converges.
``apply_spec`` + ``activate`` are the apply-and-verify step a revive shares.

An existing tenant is repaired as it is updated: its up refreshes first (a
resource changed out of band is reset, one deleted is created again) and the
resources tagged as its own that its state does not know (orphans) are removed
where tenantctl may remove them; the result says what was repaired. A removal
that fails fails the run (``OrphansNotRemoved``) once the tenant is recorded.
``preview`` shows all of that without doing it, refused where the run would be.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tenantctl import __version__, inventory
from tenantctl.engines.base import ChangeSet, EventSink, UpResult, phase
from tenantctl.errors import InvalidInput, NotConfirmed, TargetUnavailable, TenantctlError, engine_step
from tenantctl.fingerprint import applied_hash
from tenantctl.models import TenantRecord, TenantResources, TenantSpec, describe_validation_error
from tenantctl.naming import require_valid
from tenantctl.operations.refresh import Orphan, orphans_of, removal_failures, remove_orphans
from tenantctl.registry import PROVISION, RegistryUnreachable, refusal
from tenantctl.stackconfig import read_tenant, stack_file, stack_of, write_tenant
from tenantctl.workspace import Workspace


def unreserved(tenant_id: str, exc: RegistryUnreachable) -> TargetUnavailable:
    return TargetUnavailable(f"cannot reserve tenant {tenant_id!r} in the registry, nothing was created: {exc}")


Read = tuple[TenantRecord | None]  # a registry read: (the record,) or (None,) when the tenant has none


def read_record(ws: Workspace, tenant_id: str) -> Read | None:
    """The tenant's record as read now, or None before the first provision on
    a target (no registry yet: nothing to read, the stack is the id)."""
    require_valid(tenant_id)
    try:
        return (ws.registry.get(tenant_id),) if ws.platform_outputs().get("registry_table") else None
    except RegistryUnreachable as exc:
        raise unreserved(tenant_id, exc) from None


def merge_options(ws: Workspace, tenant_id: str, options: dict[str, Any], read: Read | None = None) -> TenantSpec:
    """The committed spec (if any, in the stack its record names) with the
    given options laid over it. ``read``: the record the caller read
    (``read_record``), passed on to ``provision`` / ``preview`` too."""
    read = read if read is not None else read_record(ws, tenant_id)
    path = stack_file(ws.stacks_dir, stack_of(tenant_id, read[0] if read is not None else None))
    base = read_tenant(path).model_dump(mode="json", exclude_none=True) if path.exists() else {"id": tenant_id}
    for key, value in options.items():
        if value is None:
            continue
        section, _, field = key.partition(".")
        if field:
            base.setdefault(section, {})[field] = value
        else:
            base[key] = value
    if base.get("tier") == "pooled":
        base.pop("dedicated", None)
    try:
        return TenantSpec.model_validate(base)
    except ValidationError as exc:
        raise InvalidInput(describe_validation_error(exc)) from None


class Provisioned(UpResult):
    """What a provision did: the up (``drift``: what its refresh found out of
    line and the up brought back) and the orphans it found (removed where it may)."""

    orphans: list[Orphan] = Field(default_factory=list)


class OrphansNotRemoved(TenantctlError):
    """The tenant is applied and recorded, but removing some of its orphan
    resources failed: the run fails, carrying what it did (``record``, ``result``)."""

    def __init__(self, record: TenantRecord, result: Provisioned, failures: str) -> None:
        super().__init__(f"tenant {record.tenant_id!r} is {record.status.value}, but {failures}: remove them by hand, "
                         f"or fix what stopped it and repair again (`tenantctl provision {record.tenant_id}`)")
        self.record, self.result = record, result


class Preview(BaseModel):
    """What a provision would do: the planned steps (with property diffs) and
    the orphans it would remove."""

    changes: ChangeSet
    orphans: list[Orphan] = Field(default_factory=list)
    existing: bool = False
    cell: str  # the tenant's cell, or the one placement would pick for a new tenant
    # A committed cell the sandbox has not applied yet (the run applies it first): the
    # tenant's stack reads its outputs, so its resources can be planned only once it exists.
    cell_created_first: bool = False


class Applied(BaseModel):
    """What an up of a tenant's stack produced."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    resources: TenantResources
    result: UpResult
    fingerprint: str


def apply_spec(ws: Workspace, spec: TenantSpec, on_event: EventSink | None = None, refresh: bool = False,
               stack: str | None = None) -> Applied:
    """Write the tenant's stack file and apply it (the caller holds the tenant's
    lock); ``refresh``: against the live state (drift is repaired). ``stack``:
    one of the tenant's stacks of another key generation (a move's target,
    ``acme.k1``), else the one named by its id."""
    write_tenant(ws.stacks_dir, spec, stack=stack)
    # Of the program about to run (not one edited meanwhile) and the cell it reads.
    fingerprint = applied_hash(spec, ws.project_dir, cell=ws.cell(spec.cell) if spec.cell else None)
    with engine_step(f"provisioning {spec.id!r}"):
        result = ws.engine.up(stack or spec.id, on_event=on_event, refresh=refresh)
        resources = TenantResources.model_validate(result.outputs)
    return Applied(resources=resources, result=result, fingerprint=fingerprint)


def activate(ws: Workspace, record: TenantRecord, spec: TenantSpec, applied: Applied) -> TenantRecord:
    """Record the applied tenant as active, then verify its live posture
    (`tenantctl check`): a violation raises PolicyViolation (exit 8)."""
    from tenantctl.checks import verify_provisioned

    record = ws.registry.mark_active(record, applied.resources, spec, program_version=__version__,
                                     applied_hash=applied.fingerprint)
    try:
        return verify_provisioned(ws, record, applied.result.applied)  # reuses what the up wrote or read
    except BaseException:
        # Active with its fingerprint yet not verified, whichever command applied it (a provision, a
        # move's finalize, a revive): the next `apply` must run the provision again, not skip it.
        with suppress(TenantctlError):
            ws.registry.save(record, provision_failed=True)
        raise


def provision(ws: Workspace, spec: TenantSpec, on_event: EventSink | None = None,
              refresh: bool | None = None, read: Read | None = None) -> tuple[TenantRecord, Provisioned]:
    """``refresh``: repair drift and orphans while applying (default: when the
    tenant already exists; `apply` passes its --refresh). ``read``: the
    record the caller just read (``read_record``), else it is read here; the
    reservation is conditional on it, so a stale one is refused, never used."""
    from tenantctl.placement import place
    from tenantctl.policy import PolicyRefused, refuse_unsafe_spec

    require_valid(spec.id)  # a spec built without validation must not reach the registry or stacks/
    refuse_unsafe_spec(spec)  # the policy gate's spec rules (exit 8): before the registry or stacks/ are touched
    phase(on_event, spec.id, "checking the platform")
    ws.ensure_platform(on_event)  # the home cell: the registry lives there
    registry = ws.registry
    phase(on_event, spec.id, "placing: cells, quotas and shared-resource limits")
    try:
        current = read[0] if read is not None else registry.get(spec.id)
        # What the registry refuses (a tombstone, an open move, a tier change) before placement
        # judges the spec against the record, as the preview does: the same exit code for both.
        refused = refusal(current, spec, locks=False)
        if refused is not None:
            raise refused
        stack = stack_of(spec.id, current)
        path = stack_file(ws.stacks_dir, stack)
        committed = path.read_text() if path.exists() else None
        # The cell, its account walls and a slot: refused (exit 11) before anything exists. A new
        # tenant's record is created with its slot, in one transaction: nothing else between them.
        spec, placement = place(ws, spec, current)
    except RegistryUnreachable as exc:
        raise unreserved(spec.id, exc) from None
    phase(on_event, spec.id, "reserving the tenant in the registry")
    with registry.hold(spec.id, PROVISION, spec=spec, account_id=placement.account_id,
                       read=(current,), acquired=placement.record) as held:
        if held.record.hibernation is not None:  # the up's schema steps and the posture check need its database
            from tenantctl.operations.hibernate import wake_held

            wake_held(ws, held, on_event)
        repair = held.record.resources is not None if refresh is None else refresh
        # Tagged before the up: what this run creates can never look like an orphan.
        clients = ws.cell_clients(spec.cell)  # the tenant's resources live in its cell's account
        tagged = inventory.scan(clients, [spec.region], tenant=spec.id) if repair else []
        try:
            phase(on_event, spec.id, f"applying {path.name}")
            applied = apply_spec(ws, spec, on_event, refresh=repair, stack=stack)
        except (PolicyRefused, NotConfirmed) as refused:
            if refused.changed_nothing:
                # The engine's gate (or the operator) refused before its first change: put back what
                # this run wrote (a new tenant's record goes with its slot, in one transaction).
                _restore(path, committed)
                registry.withdraw(held.record)
            # Refused during the up (CrossGuard): resources may exist, the record, file and slot stay.
            raise
        # A store that may hold items (a new tenant's holds none) whose schema template the up
        # re-ran: one of the earlier index layout lost its postings there. Recorded at once, so
        # that a run failing from here on still leaves the rebuild owed.
        if current is not None and current.resources is not None and any(
                c.ran_schema_template for c in applied.result.changes.changes):
            held.record = registry.save(held.record, search_rebuild_due=True)
        orphans = remove_orphans(ws, held.record, applied.result.changes, tagged) if repair else []
        status = "suspended" if spec.suspended else "active"
        phase(on_event, spec.id, f"recording the tenant {status}, checking its isolation posture")
        held.record = activate(ws, held.record, spec, applied)
    if held.record.search_rebuild_due:  # this up's, or one a failure or a suspension put off
        from tenantctl.operations.reindex import rebuild_unindexed, rebuilding

        held.record, _ = rebuild_unindexed(ws, held.record, lambda workspace, items: phase(
            on_event, spec.id, rebuilding(workspace, items, "the schema upgrade left unindexed")))
    done = Provisioned.model_validate({**applied.result.model_dump(), "orphans": orphans})
    failures = removal_failures(orphans)
    if failures:
        raise OrphansNotRemoved(held.record, done, failures)
    return held.record, done


def preview(ws: Workspace, spec: TenantSpec, on_event: EventSink | None = None, read: Read | None = None) -> Preview:
    """What ``provision(ws, spec)`` would do, changing nothing; raises what the
    run would refuse with (invalid or unsafe spec, tombstoned id, tier move,
    lock, quota, policy gate), so a clean preview means the run goes through.
    A new tenant is previewed in the cell placement would pick (no slot is
    taken). ``read``: the record the caller just read, else it is read here."""
    from tenantctl import preflight
    from tenantctl.placement import choose
    from tenantctl.policy import refuse_unsafe_spec

    require_valid(spec.id)
    refuse_unsafe_spec(spec)
    if not ws.platform_outputs().get("registry_table"):
        raise TargetUnavailable("no platform is deployed on this target yet: nothing to preview a tenant against "
                                "(`tenantctl provision` brings it up first; `tenantctl platform up` alone)")
    record = read[0] if read is not None else ws.registry.get(spec.id)
    refused = refusal(record, spec)
    if refused is not None:
        raise refused
    spec = choose(ws, spec, record)
    stack = stack_of(spec.id, record)
    outputs = ws.cell_outputs(spec.cell)
    if not outputs.get("bucket"):  # only on the sandbox: elsewhere `choose` refuses a cell never applied
        return Preview(changes=ChangeSet(stack=stack), cell=spec.cell, cell_created_first=True)
    clients = ws.cell_clients(spec.cell)
    ws.refuse_relocated(ws.cell(spec.cell), outputs)
    preflight.check(spec, outputs, clients)
    existing = record is not None and record.resources is not None
    tagged = inventory.scan(clients, [spec.region], tenant=spec.id) if existing else []
    with proposed(ws, spec, stack), engine_step(f"previewing {spec.id!r}"):
        changes = ws.engine.preview(stack, on_event=on_event, refresh=existing)
    found = orphans_of(ws, record, changes, tagged)[0] if existing else []  # a missing subscription: planned
    return Preview(changes=changes, orphans=[Orphan.of(t, spec.id) for t in found], existing=existing,
                   cell=spec.cell)


@contextmanager
def proposed(ws: Workspace, spec: TenantSpec, stack: str | None = None) -> Iterator[None]:
    """The spec in its stack file (``stack``: the one its record names, else
    its id) for the length of a preview (the engines read stacks/), then the
    committed file exactly as it was, or none."""
    path = stack_file(ws.stacks_dir, stack or spec.id)
    committed = path.read_text() if path.exists() else None
    write_tenant(ws.stacks_dir, spec, stack=stack)
    try:
        yield
    finally:
        _restore(path, committed)


def _restore(path: Path, committed: str | None) -> None:
    if committed is None:
        path.unlink(missing_ok=True)
    elif path.read_text() != committed:
        path.write_text(committed)
