"""Forget what a tenant id that breaks the naming rules left behind: its
registry record and its stack file (`tenantctl forget ID --yes`).

Such leftovers predate the re-validation of the id in every operation (a spec
built without validation reached the registry and stacks/ before the engine
refused it) or come from a hand edit. No operation accepts such an id, so
`deprovision` cannot remove them; `list` and `apply` report them. Nothing in
the cloud exists under such an id (the engine refuses it before its first
change), so forgetting removes only those two entries; a record that names
resources is refused rather than orphaning them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from tenantctl.errors import InvalidInput, NotFound
from tenantctl.models import TenantRecord
from tenantctl.naming import broken_rule
from tenantctl.stackconfig import tenant_stack_files
from tenantctl.workspace import Workspace


class Leftover(BaseModel):
    """A registry record and/or stack file under an id that breaks a naming rule."""

    tenant_id: str
    rule: str
    record: bool = False
    stack_file: str | None = None


def invalid_stack_files(stacks_dir: Path) -> dict[str, Path]:
    """Stack files whose name holds an invalid tenant id."""
    return {t: p for t, p in tenant_stack_files(stacks_dir).items() if broken_rule(t) is not None}


def leftovers(ws: Workspace, records: list[TenantRecord], stack_files: bool = True) -> list[Leftover]:
    """The invalid ids among ``records`` (a listing page) and, with
    ``stack_files``, among the committed stack files."""
    found: dict[str, Leftover] = {}
    for record in records:
        rule = broken_rule(record.tenant_id)
        if rule is not None:
            found[record.tenant_id] = Leftover(tenant_id=record.tenant_id, rule=rule.name, record=True)
    if stack_files and ws.stacks_dir.is_dir():
        for tenant_id, path in invalid_stack_files(ws.stacks_dir).items():
            entry = found.setdefault(tenant_id, Leftover(tenant_id=tenant_id, rule=broken_rule(tenant_id).name))
            entry.stack_file = str(path)
    return sorted(found.values(), key=lambda e: e.tenant_id)


def forgettable(tenant_id: str) -> str:
    """The naming rule ``tenant_id`` breaks; a valid id is refused (exit 3)."""
    rule = broken_rule(tenant_id)
    if rule is None:
        raise InvalidInput(f"tenant id {tenant_id!r} is valid: `tenantctl deprovision {tenant_id}` removes a tenant; "
                           "forget only removes what an id that breaks the naming rules left behind")
    return rule.name


def _stack_file(ws: Workspace, tenant_id: str) -> Path | None:
    # A file is only ever found by listing stacks/, so an id such as '../x' cannot name a path elsewhere.
    return invalid_stack_files(ws.stacks_dir).get(tenant_id) if ws.stacks_dir.is_dir() else None


def left_behind(ws: Workspace, tenant_id: str) -> Leftover:
    """What ``forget`` would remove, read before anyone is asked: NotFound
    (exit 6) when there is nothing, Conflict (exit 5) for a record naming resources."""
    rule = forgettable(tenant_id)
    path = _stack_file(ws, tenant_id)
    record = ws.registry.invalid_record(tenant_id) if tenant_id else None
    if record is None and path is None:
        raise NotFound(f"nothing to forget under {tenant_id!r}: no registry record and no stack file")
    return Leftover(tenant_id=tenant_id, rule=rule, record=record is not None, stack_file=str(path) if path else None)


def forget(ws: Workspace, tenant_id: str) -> Leftover:
    """Delete the registry record and the stack file of an invalid id."""
    rule = forgettable(tenant_id)
    path = _stack_file(ws, tenant_id)
    record = ws.registry.forget_invalid(tenant_id) if tenant_id else None
    if record is None and path is None:
        raise NotFound(f"nothing to forget under {tenant_id!r}: no registry record and no stack file")
    if path is not None:
        path.unlink(missing_ok=True)
    return Leftover(tenant_id=tenant_id, rule=rule, record=record is not None,
                    stack_file=str(path) if path else None)
