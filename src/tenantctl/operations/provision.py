"""Provision (or update) one tenant: reserve in the registry, write its stack
file, apply, record the outputs. The registry reservation comes first, so a run
that cannot reserve creates nothing; a failed run leaves the lock released and
the error on the record, and a re-run converges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tenantctl import __version__
from tenantctl.engines.base import EventSink, UpResult
from tenantctl.fingerprint import applied_hash
from tenantctl.errors import ApplyFailed, InvalidInput, TargetUnavailable, TenantctlError
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


def provision(ws: Workspace, spec: TenantSpec, on_event: EventSink | None = None) -> tuple[TenantRecord, UpResult]:
    from tenantctl import preflight
    from tenantctl.policy import PolicyRefused, refuse_unsafe_spec

    refuse_unsafe_spec(spec)  # the policy gate's spec rules (exit 8): before the registry or stacks/ are touched
    platform = ws.platform_outputs(on_event)
    preflight.check(spec, platform)  # quotas and shared-bucket rules: refuse before anything exists
    registry = ws.registry
    try:
        record = registry.acquire(spec, operation="provision")
    except TargetUnavailable as exc:
        raise TargetUnavailable(
            f"cannot reserve tenant {spec.id!r} in the registry, nothing was created: {exc}") from None
    path = stack_file(ws.stacks_dir, spec.id)
    committed = path.read_text() if path.exists() else None
    try:
        write_tenant(ws.stacks_dir, spec)
        fingerprint = applied_hash(spec, ws.project_dir)  # of the program about to run, not one edited meanwhile
        result = ws.engine.up(spec.id, on_event=on_event)
        resources = TenantResources.model_validate(result.outputs)
    except PolicyRefused as exc:
        # The engine's gate refuses before its first change: put back what this run wrote.
        _restore(path, committed)
        if not registry.withdraw(record):
            registry.release(record, error=str(exc))
        raise
    except TenantctlError as exc:
        registry.release(record, error=str(exc))
        raise
    except Exception as exc:
        registry.release(record, error=f"{type(exc).__name__}: {exc}")
        raise ApplyFailed(f"provisioning {spec.id!r} failed: {exc}") from exc
    record = registry.mark_active(record, resources, spec, program_version=__version__,
                                  applied_hash=fingerprint)
    from tenantctl.checks import verify_provisioned

    # `tenantctl check` on the live resources: a violation -> last_error, exit 8
    record = verify_provisioned(ws, record)
    return record, result


def _restore(path: Path, committed: str | None) -> None:
    if committed is None:
        path.unlink(missing_ok=True)
    elif path.read_text() != committed:
        path.write_text(committed)
