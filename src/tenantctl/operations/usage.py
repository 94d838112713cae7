"""What `tenantctl usage | cost | report` compute: which tenants to measure
(one, all, or all of a cell), the committed specs and the cell they are priced
with, how many pooled tenants share each cell's platform, and what-if overrides.
Each tenant is measured with clients in its own cell's account and region.

The measuring and pricing themselves are `tenantctl.usage`; this module ties
them to a workspace (its registry, its stacks/ directory), so that a command,
a test or another operation gets the same figures the CLI prints.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from tenantctl.errors import InvalidInput, TenantctlError
from tenantctl.models import CellSpec, TenantRecord, TenantSpec, TenantStatus, Tier, utcnow
from tenantctl.naming import DEFAULT_CELL, require_valid
from tenantctl.stackconfig import read_cell, read_tenant, stack_file
from tenantctl.usage.cost import (
    GIB,
    CostEstimate,
    CostInputs,
    PriceTable,
    TierComparison,
    assumptions_text,
    compare_tiers,
    cost_inputs,
    estimate,
    hibernation_saving,
)
from tenantctl.usage.html_report import ReportData, build_report, latest_drill_verdicts, write_report
from tenantctl.usage.measure import MEASURED_STATUSES, TenantUsage, UsageClients, clients_from_workspace, measure
from tenantctl.workspace import Workspace


# -- what to measure, and with what ------------------------------------------------
def check_selection(tenant_id: str | None, all_: bool) -> None:
    """Exactly one of a tenant id and --all (checked before touching any target)."""
    if tenant_id is not None:
        require_valid(tenant_id)
    if bool(tenant_id) == all_:
        raise InvalidInput("give either a tenant id or --all")


def selected_records(ws: Workspace, tenant_id: str | None, tier: Tier | None = None,
                     cell: str | None = None) -> list[TenantRecord]:
    """The named tenant whatever its status, or every active or suspended tenant
    (of ``tier``, of ``cell``), the registry walked page by page."""
    if tenant_id:
        return [ws.registry.require(tenant_id)]
    if cell is not None:
        ws.cell(cell)  # NotFound for an unknown cell rather than an empty answer
    return [r for r in ws.registry.iter_all(tier=tier, cell=cell) if r.status in MEASURED_STATUSES]


def per_place(ws: Workspace) -> Callable[[TenantRecord], UsageClients]:
    """Usage clients per (cell, region), made once each."""
    made: dict[tuple[str, str], UsageClients] = {}

    def clients(record: TenantRecord) -> UsageClients:
        key = (record.cell, record.region)
        if key not in made:
            made[key] = clients_from_workspace(ws, record)
        return made[key]

    return clients


def measure_tenants(ws: Workspace, tenant_id: str | None, all_: bool, tier: Tier | None = None,
                    idle_days: int = 30, cell: str | None = None) -> tuple[list[TenantRecord], list[TenantUsage]]:
    """The records selected and the usage of each, in the same order."""
    check_selection(tenant_id, all_)
    records = selected_records(ws, tenant_id, tier, cell)
    clients = per_place(ws)

    def one(record: TenantRecord) -> TenantUsage:
        try:
            where = clients(record)
        except TenantctlError as exc:  # e.g. its cell is not in this project's stacks/: the others still count
            return TenantUsage(tenant_id=record.tenant_id, tier=record.tier, status=record.status,
                               measured_at=utcnow(), idle_days=idle_days, errors=[str(exc)])
        return measure(record, where, idle_days)

    return records, [one(r) for r in records]


def committed_specs(ws: Workspace, records: list[TenantRecord]) -> dict[str, TenantSpec]:
    """Committed specs (instance class, storage, retention) where the stack file
    exists: each tenant's current stack, as its record names it."""
    paths = {r.tenant_id: stack_file(ws.stacks_dir, r.current_stack) for r in records}
    return {i: read_tenant(p) for i, p in paths.items() if p.exists()}


def platform_spec(ws: Workspace, cell: str = DEFAULT_CELL) -> CellSpec:
    """A cell's committed spec (its shared database priced for its pooled tenants), or the defaults."""
    return read_cell(ws.stacks_dir, cell) or CellSpec(name=cell)


def active_pooled(ws: Workspace, cell: str = DEFAULT_CELL) -> int:
    """Active pooled tenants of a cell: those its platform cost is split over."""
    return sum(1 for _ in ws.registry.iter_all(tier=Tier.pooled, status=TenantStatus.active, cell=cell))


# -- cost ------------------------------------------------------------------------------
class HibernationCost(BaseModel):
    """A dedicated tenant's hibernation: whether its instance is stopped now,
    whether it is idle, and what stopping it saves per month."""

    hibernated: bool
    idle: bool
    monthly_saving: float

    def advice(self, tenant_id: str) -> str | None:
        if self.hibernated:
            return f"{tenant_id}: hibernated, its RDS instance is stopped: saves ${self.monthly_saving:,.2f}/month"
        if self.idle:
            return (f"{tenant_id}: idle; `tenantctl hibernate {tenant_id}` would save "
                    f"${self.monthly_saving:,.2f}/month (its RDS instance)")
        return None


class TenantCost(BaseModel):
    estimate: CostEstimate
    comparison: TierComparison
    hibernation: HibernationCost | None = None  # dedicated tenants


class CostReport(BaseModel):
    tenants: list[TenantCost]
    assumptions: list[str]


def what_if(inputs: CostInputs, db_gb: float | None = None, s3_gb: float | None = None) -> CostInputs:
    """``inputs`` with the context-store size and/or S3 Standard bytes replaced."""
    overrides: dict[str, object] = {}
    if db_gb is not None:
        overrides["db_bytes"] = int(db_gb * GIB)
    if s3_gb is not None:
        overrides["s3_bytes_by_class"] = {"STANDARD": int(s3_gb * GIB)}
    return inputs.model_copy(update=overrides)


def estimate_costs(ws: Workspace, prices: PriceTable, tenant_id: str | None = None, all_: bool = False,
                   tier: Tier | None = None, db_gb: float | None = None, s3_gb: float | None = None,
                   pooled_tenants: int | None = None, cell: str | None = None, idle_days: int = 30) -> CostReport:
    """Estimates and the tier comparison for one tenant, all of them (of
    ``cell``; measured, with ``db_gb`` / ``s3_gb`` overriding the measured
    figures), or, with neither, a hypothetical tenant of ``tier`` in ``cell``
    described by ``db_gb`` / ``s3_gb``. Each tenant is priced with its own
    cell's platform split over that cell's active pooled tenants;
    ``pooled_tenants`` replaces the registry's count. A dedicated tenant also
    gets its hibernation: stopped now (its instance priced at 0), idle for
    ``idle_days``, and what stopping it saves."""
    hypothetical = not tenant_id and not all_
    if hypothetical and db_gb is None and s3_gb is None:
        raise InvalidInput("give a tenant id, --all, or a what-if usage (--db-gb and/or --s3-gb)")
    sleep: dict[str, HibernationCost] = {}
    if hypothetical:
        where = cell or DEFAULT_CELL
        placed = [(where, CostInputs(tenant_id="what-if", tier=tier or Tier.pooled))]
    else:
        records, usages = measure_tenants(ws, tenant_id, all_, tier, idle_days=idle_days, cell=cell)
        specs = committed_specs(ws, records)
        placed = []
        for record, usage in zip(records, usages, strict=True):
            inputs = cost_inputs(usage, specs.get(usage.tenant_id))
            if record.tier is Tier.dedicated:
                asleep = _hibernated(ws, record)
                inputs = inputs.model_copy(update={"hibernated": asleep})
                sleep[record.tenant_id] = HibernationCost(hibernated=asleep, idle=usage.idle,
                                                          monthly_saving=hibernation_saving(inputs, prices))
            placed.append((record.cell, inputs))
    platforms = {c: platform_spec(ws, c) for c in {c for c, _ in placed}}
    sharing = {c: pooled_tenants or active_pooled(ws, c) for c in platforms}
    if hypothetical:
        sharing = {c: max(n, 1) for c, n in sharing.items()}
    tenants = []
    for c, inputs in placed:
        inputs = what_if(inputs, db_gb, s3_gb)
        tenants.append(TenantCost(estimate=estimate(inputs, prices, platforms[c], sharing[c]),
                                  comparison=compare_tiers(inputs, prices, platforms[c], sharing[c]),
                                  hibernation=sleep.get(inputs.tenant_id)))
    first = next(iter(platforms), DEFAULT_CELL)
    return CostReport(tenants=tenants, assumptions=assumptions_text(prices, platforms.get(first) or CellSpec(),
                                                                    sharing.get(first, 1)))


def _hibernated(ws: Workspace, record: TenantRecord) -> bool:
    """Its instance is stopped now: the record says hibernated and the runtime has not woken it since."""
    from tenantctl.errors import TenantctlError
    from tenantctl.operations.hibernate import instance_state

    try:
        return instance_state(ws, record) in ("stopping", "stopped")
    except TenantctlError:  # unreadable: trust the record
        return record.hibernation is not None


# -- report ----------------------------------------------------------------------------
def write_html_report(ws: Workspace, prices: PriceTable, out: Path, idle_days: int = 30,
                      on_drill_error: Callable[[Exception], None] | None = None) -> tuple[Path, ReportData]:
    """Measure and price every active or suspended tenant, read their last drill
    verdicts, and write the HTML page to ``out``. A drill history that cannot be
    read is passed to ``on_drill_error`` and the page shows no drills rather than
    none of the usage and cost. Returns the path written and the report's data."""
    records, usages = measure_tenants(ws, None, True, None, idle_days)
    try:
        drills = {}
        clients = per_place(ws)
        for record in records:  # each tenant's history is in its own cell's bucket
            drills.update(latest_drill_verdicts([record], clients(record).s3))
    except Exception as exc:  # the drill history must not cost the operator the usage/cost page
        if on_drill_error is not None:
            on_drill_error(exc)
        drills = None
    data = build_report(usages, committed_specs(ws, records), prices, platform_spec(ws), idle_days, drills)
    return write_report(data, out), data
