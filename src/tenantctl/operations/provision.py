"""Provision (or update) one tenant: reserve it in the registry, write its
stack file, apply, record the outputs, verify the live posture.

The reservation comes first, so a run that cannot reserve creates nothing; a
failed run leaves the lock released and the error on the record, and a re-run
converges. ``apply_spec`` + ``activate`` are the apply-and-verify step a revive
shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from tenantctl import __version__
from tenantctl.engines.base import EventSink, UpResult, phase
from tenantctl.errors import InvalidInput, NotConfirmed, engine_step
from tenantctl.fingerprint import applied_hash
from tenantctl.models import TenantRecord, TenantResources, TenantSpec, describe_validation_error
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
    from tenantctl import preflight
    from tenantctl.policy import PolicyRefused, refuse_unsafe_spec

    refuse_unsafe_spec(spec)  # the policy gate's spec rules (exit 8): before the registry or stacks/ are touched
    phase(on_event, spec.id, "checking the platform")
    platform = ws.ensure_platform(on_event)
    phase(on_event, spec.id, "preflight: quotas and shared-resource limits")
    preflight.check(spec, platform, ws.client)  # quotas and shared-bucket rules: refuse before anything exists
    registry = ws.registry
    path = stack_file(ws.stacks_dir, spec.id)
    committed = path.read_text() if path.exists() else None
    phase(on_event, spec.id, "reserving the tenant in the registry")
    with registry.hold(spec.id, "provision", spec=spec) as held:
        try:
            phase(on_event, spec.id, f"applying {path.name}")
            applied = apply_spec(ws, spec, on_event)
        except (PolicyRefused, NotConfirmed) as refused:
            if getattr(refused, "changed_nothing", True):
                # The engine's gate (or the operator) refused before its first change: put back what this run wrote.
                _restore(path, committed)
                registry.withdraw(held.record)
            # Refused during the up (CrossGuard): resources may exist, the record and file stay to converge.
            raise
        phase(on_event, spec.id, "recording the tenant active, checking its isolation posture")
        held.record = activate(ws, held.record, spec, applied)
    return held.record, applied.result


def _restore(path: Path, committed: str | None) -> None:
    if committed is None:
        path.unlink(missing_ok=True)
    elif path.read_text() != committed:
        path.write_text(committed)
