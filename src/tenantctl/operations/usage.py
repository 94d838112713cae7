"""What `tenantctl usage | cost | report` compute: which tenants to measure,
the committed specs and platform they are priced with, how many pooled tenants
share the platform, and what-if overrides.

The measuring and pricing themselves are `tenantctl.usage`; this module ties
them to a workspace (its registry, its stacks/ directory), so that a command,
a test or another operation gets the same figures the CLI prints.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from tenantctl.errors import InvalidInput
from tenantctl.models import PlatformSpec, TenantRecord, TenantSpec, TenantStatus, Tier
from tenantctl.naming import require_valid
from tenantctl.stackconfig import read_platform, read_tenant, stack_file
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
from tenantctl.usage.measure import MEASURED_STATUSES, TenantUsage, clients_from_workspace, measure
from tenantctl.workspace import Workspace


# -- what to measure, and with what ------------------------------------------------
def check_selection(tenant_id: str | None, all_: bool) -> None:
    """Exactly one of a tenant id and --all (checked before touching any target)."""
    if tenant_id is not None:
        require_valid(tenant_id)
    if bool(tenant_id) == all_:
        raise InvalidInput("give either a tenant id or --all")


def selected_records(ws: Workspace, tenant_id: str | None, tier: Tier | None = None) -> list[TenantRecord]:
    """The named tenant whatever its status, or every active or suspended tenant
    (of ``tier``), the registry walked page by page."""
    if tenant_id:
        return [ws.registry.require(tenant_id)]
    return [r for r in ws.registry.iter_all(tier=tier) if r.status in MEASURED_STATUSES]


def measure_tenants(ws: Workspace, tenant_id: str | None, all_: bool, tier: Tier | None = None,
                    idle_days: int = 30) -> tuple[list[TenantRecord], list[TenantUsage]]:
    """The records selected and the usage of each, in the same order."""
    check_selection(tenant_id, all_)
    clients = clients_from_workspace(ws)
    records = selected_records(ws, tenant_id, tier)
    return records, [measure(r, clients, idle_days) for r in records]


def committed_specs(ws: Workspace, ids: list[str]) -> dict[str, TenantSpec]:
    """Committed specs (instance class, storage, retention) where the stack file exists."""
    return {i: read_tenant(stack_file(ws.stacks_dir, i)) for i in ids if stack_file(ws.stacks_dir, i).exists()}


def platform_spec(ws: Workspace) -> PlatformSpec:
    """The committed platform spec (the shared database priced for pooled tenants), or the defaults."""
    return read_platform(ws.stacks_dir) or PlatformSpec()


def active_pooled(ws: Workspace) -> int:
    """Active pooled tenants in the registry: those the platform cost is split over."""
    return sum(1 for _ in ws.registry.iter_all(tier=Tier.pooled, status=TenantStatus.active))


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
                   pooled_tenants: int | None = None, idle_days: int = 30) -> CostReport:
    """Estimates and the tier comparison for one tenant, all of them (measured,
    with ``db_gb`` / ``s3_gb`` overriding the measured figures), or, with
    neither, a hypothetical tenant of ``tier`` described by ``db_gb`` / ``s3_gb``.
    ``pooled_tenants`` replaces the registry's count of active pooled tenants.
    A dedicated tenant also gets its hibernation: stopped now (its instance
    priced at 0), idle for ``idle_days``, and what stopping it saves."""
    hypothetical = not tenant_id and not all_
    if hypothetical and db_gb is None and s3_gb is None:
        raise InvalidInput("give a tenant id, --all, or a what-if usage (--db-gb and/or --s3-gb)")
    platform = platform_spec(ws)
    n = pooled_tenants or active_pooled(ws)
    sleep: dict[str, HibernationCost] = {}
    if hypothetical:
        inputs_list = [CostInputs(tenant_id="what-if", tier=tier or Tier.pooled)]
        n = max(n, 1)
    else:
        records, usages = measure_tenants(ws, tenant_id, all_, tier, idle_days=idle_days)
        specs = committed_specs(ws, [u.tenant_id for u in usages])
        inputs_list = []
        for record, usage in zip(records, usages, strict=True):
            inputs = cost_inputs(usage, specs.get(usage.tenant_id))
            if record.tier is Tier.dedicated:
                asleep = _hibernated(ws, record)
                inputs = inputs.model_copy(update={"hibernated": asleep})
                sleep[record.tenant_id] = HibernationCost(hibernated=asleep, idle=usage.idle,
                                                          monthly_saving=hibernation_saving(inputs, prices))
            inputs_list.append(inputs)
    inputs_list = [what_if(i, db_gb, s3_gb) for i in inputs_list]
    return CostReport(
        tenants=[TenantCost(estimate=estimate(i, prices, platform, n), comparison=compare_tiers(i, prices, platform, n),
                            hibernation=sleep.get(i.tenant_id))
                 for i in inputs_list],
        assumptions=assumptions_text(prices, platform, n),
    )


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
    ids = [u.tenant_id for u in usages]
    try:
        drills = latest_drill_verdicts(records, ws.client("s3"))
    except Exception as exc:  # the drill history must not cost the operator the usage/cost page
        if on_drill_error is not None:
            on_drill_error(exc)
        drills = None
    data = build_report(usages, committed_specs(ws, ids), prices, platform_spec(ws), idle_days, drills)
    return write_report(data, out), data
