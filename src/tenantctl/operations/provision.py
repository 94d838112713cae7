"""Provision (or update) one tenant: place it in a cell, reserve it in the
registry, write its stack file, apply, record the outputs, verify the live
posture.

Placement (``tenantctl.placement``) and the registry reservation come first,
so a run that cannot place or reserve creates nothing (the cell slot a refused
run took is given back); a failed apply leaves the lock released, the error on
the record and the slot held (resources may exist), and a re-run converges.
``apply_spec`` + ``activate`` are the apply-and-verify step a revive shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from tenantctl import __version__
from tenantctl.engines.base import EventSink, UpResult
from tenantctl.errors import InvalidInput, TargetUnavailable, TenantctlError, engine_step
from tenantctl.fingerprint import applied_hash
from tenantctl.models import TenantRecord, TenantResources, TenantSpec, describe_validation_error
from tenantctl.placement import Placement
from tenantctl.registry import RegistryUnreachable, RegistryWriter
from tenantctl.stackconfig import read_tenant, stack_file, write_tenant
from tenantctl.workspace import Workspace


def merge_options(ws: Workspace, tenant_id: str, options: dict[str, Any]) -> TenantSpec:
    """The committed spec (if any) with the given options laid over it."""
    path = stack_file(ws.stacks_dir, tenant_id)
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


class Applied(BaseModel):
    """What an up of a tenant's stack produced."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    resources: TenantResources
    result: UpResult
    fingerprint: str


def apply_spec(ws: Workspace, spec: TenantSpec, on_event: EventSink | None = None) -> Applied:
    """Write the tenant's stack file and apply it (the caller holds the tenant's lock)."""
    write_tenant(ws.stacks_dir, spec)
    fingerprint = applied_hash(spec, ws.project_dir)  # of the program about to run, not one edited meanwhile
    with engine_step(f"provisioning {spec.id!r}"):
        result = ws.engine.up(spec.id, on_event=on_event)
        resources = TenantResources.model_validate(result.outputs)
    return Applied(resources=resources, result=result, fingerprint=fingerprint)


def activate(ws: Workspace, record: TenantRecord, spec: TenantSpec, applied: Applied) -> TenantRecord:
    """Record the applied tenant as active, then verify its live posture
    (`tenantctl check`): a violation raises PolicyViolation (exit 8)."""
    from tenantctl.checks import verify_provisioned

    record = ws.registry.mark_active(record, applied.resources, spec, program_version=__version__,
                                     applied_hash=applied.fingerprint)
    return verify_provisioned(ws, record)


def provision(ws: Workspace, spec: TenantSpec, on_event: EventSink | None = None) -> tuple[TenantRecord, UpResult]:
    from tenantctl.placement import place
    from tenantctl.policy import PolicyRefused, refuse_unsafe_spec

    refuse_unsafe_spec(spec)  # the policy gate's spec rules (exit 8): before the registry or stacks/ are touched
    ws.ensure_platform(on_event)  # the home cell: the registry lives there
    registry = ws.registry
    try:
        current = registry.get(spec.id)
        # The cell, its account walls and a slot: refused (exit 11) before anything exists.
        spec, placement = place(ws, spec, current)
    except RegistryUnreachable as exc:
        raise TargetUnavailable(f"cannot reserve tenant {spec.id!r} in the registry, nothing was created: "
                                f"{exc}") from None
    path = stack_file(ws.stacks_dir, spec.id)
    committed = path.read_text() if path.exists() else None
    reserved = False
    try:
        with registry.hold(spec.id, "provision", spec=spec, account_id=placement.account_id,
                           read=(current,)) as held:
            reserved = True
            try:
                applied = apply_spec(ws, spec, on_event)
            except PolicyRefused as refused:
                if refused.changed_nothing:
                    # The engine's gate refused before its first change: put back what this run wrote.
                    _restore(path, committed)
                    if registry.withdraw(held.record):
                        _give_back(registry, placement, spec)
                # Refused during the up (CrossGuard): resources may exist, the record, file and slot stay.
                raise
            held.record = activate(ws, held.record, spec, applied)
    except BaseException:
        if not reserved:  # refused by the registry (locked, tombstoned, unreachable): nothing was created
            _give_back(registry, placement, spec)
        raise
    return held.record, applied.result


def _give_back(registry: RegistryWriter, placement: Placement, spec: TenantSpec) -> None:
    """Release the slot a refused run took; a registry gone meanwhile keeps it
    counted (`tenantctl cell show NAME --recount` corrects that), never hides the refusal."""
    try:
        placement.release(registry, spec.tier)
    except TenantctlError:
        pass


def _restore(path: Path, committed: str | None) -> None:
    if committed is None:
        path.unlink(missing_ok=True)
    elif path.read_text() != committed:
        path.write_text(committed)
