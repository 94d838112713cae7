"""Which tenants a fleet-wide read runs on (`refresh`, `check`): the named ones,
every tenant (`--all`) or every tenant of one cell (`--cell`), never a tenant
whose resources are gone (deprovisioned, or being deprovisioned)."""

from __future__ import annotations

from collections.abc import Sequence

from tenantctl.errors import InvalidInput, UsageError
from tenantctl.models import TenantRecord, TenantStatus
from tenantctl.workspace import Workspace

GONE = (TenantStatus.deprovisioned, TenantStatus.deprovisioning)


def select(ws: Workspace, tenant_ids: Sequence[str], every: bool, cell: str | None = None,
           verb: str = "refresh") -> list[TenantRecord]:
    """The records to ``verb``: the named tenants, or every tenant not
    deprovisioned (of ``cell`` only, when given)."""
    if not tenant_ids and not every and cell is None:
        raise UsageError(f"Missing argument 'ID...': name the tenants to {verb}, or pass --all or --cell")
    if bool(tenant_ids) + every + (cell is not None) > 1:
        raise UsageError("Invalid value: tenant ids, --all and --cell exclude each other (one of them, not both)")
    if cell is not None:
        ws.cell(cell)  # an unknown cell is refused (exit 6), not an empty report
        return [r for r in ws.registry.iter_all(cell=cell) if r.status not in GONE]
    if every:
        return [r for r in ws.registry.iter_all() if r.status not in GONE]
    records = []
    for tenant_id in dict.fromkeys(tenant_ids):
        record = ws.registry.require(tenant_id)
        if record.status in GONE:
            raise InvalidInput(f"tenant {tenant_id!r} is {record.status.value}: nothing to {verb}")
        records.append(record)
    return records
