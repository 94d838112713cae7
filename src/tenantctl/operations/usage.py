"""What `tenantctl usage | cost | report` compute: which tenants to measure
(one, all, or all of a cell), the committed specs and the cell they are priced
with, how many pooled tenants share each cell's platform, and what-if overrides.
Each tenant is measured with clients in its own cell's account and region.

The measuring and pricing themselves are `tenantctl.usage`; this module ties
them to a workspace (its registry, its stacks/ directory), so that a command,
a test or another operation gets the same figures the CLI prints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from tenantctl.errors import InvalidInput, TenantctlError, UsageError, require_one_or_all
from tenantctl.models import CellSpec, TenantRecord, TenantResources, TenantSpec, TenantStatus, Tier, utcnow
from tenantctl.naming import DEFAULT_CELL, require_valid
from tenantctl.operations.fleet_threads import PARALLEL, Watch, in_threads, require_parallel
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
from tenantctl.usage.html_report import (
    DrillVerdict,
    ReportData,
    ReportRow,
    build_report,
    latest_drill_verdicts,
    write_report,
)
from tenantctl.usage.measure import (
    MEASURED_STATUSES,
    KeptConnections,
    TenantUsage,
    UsageClients,
    list_objects,
    measure,
    per_place,
)
from tenantctl.workspace import Workspace


# -- what to measure, and with what ------------------------------------------------
def check_selection(tenant_id: str | None, all_: bool, tier: Tier | None = None, cell: str | None = None) -> None:
    """Exactly one of a tenant id and --all (checked before touching any target);
    ``tier`` and ``cell`` narrow --all, so beside a tenant id they would be ignored: refused."""
    if tenant_id is not None:
        require_valid(tenant_id)
    require_one_or_all(tenant_id, all_)
    given = [f"--{name}" for name, value in (("tier", tier), ("cell", cell)) if value is not None]
    if tenant_id and given:
        verb = "select" if len(given) > 1 else "selects"
        raise UsageError(f"{' and '.join(given)} {verb} tenants with --all, not with a tenant id "
                         f"({tenant_id!r} is taken as it is)")


def selected_records(ws: Workspace, tenant_id: str | None, tier: Tier | None = None,
                     cell: str | None = None) -> list[TenantRecord]:
    """The named tenant whatever its status, or every active or suspended tenant
    (of ``tier``, of ``cell``), the registry walked page by page."""
    if tenant_id:
        return [ws.registry.require(tenant_id)]
    if cell is not None:
        ws.cell(cell)  # NotFound for an unknown cell rather than an empty answer
    return [r for r in ws.registry.iter_all(tier=tier, cell=cell) if r.status in MEASURED_STATUSES]


def measure_tenants(ws: Workspace, tenant_id: str | None, all_: bool, tier: Tier | None = None,
                    idle_days: int = 30, cell: str | None = None, parallel: int = PARALLEL,
                    watch: Watch | None = None) -> tuple[list[TenantRecord], list[TenantUsage]]:
    """The records selected and the usage of each, in the same order (``parallel``, ``watch``:
    as ``measure_records`` takes them)."""
    check_selection(tenant_id, all_, tier, cell)
    require_parallel(parallel)
    records = selected_records(ws, tenant_id, tier, cell)
    return records, measure_records(ws, records, idle_days, parallel=parallel, watch=watch)


def measure_records(ws: Workspace, records: list[TenantRecord], idle_days: int = 30,
                    clients: Callable[[TenantRecord], UsageClients] | None = None, parallel: int = PARALLEL,
                    watch: Watch | None = None) -> list[TenantUsage]:
    """The usage of each record, each measured in its own cell's account and region (``clients``: the
    caller's ``per_place``, to share its clients), ``parallel`` records at once in threads sharing
    each place's boto3 clients (thread-safe, unlike sessions) and its kept admin connections (one
    per thread at most); in the records' order whichever finishes first. ``watch``: told the
    count, then each usage as it is measured."""
    require_parallel(parallel)
    clients = clients or per_place(ws)

    def place(record: TenantRecord) -> UsageClients | TenantctlError:
        try:
            return clients(record)
        except TenantctlError as exc:  # e.g. its cell is not in this project's stacks/: the others still count
            return exc

    # Both stacks of a moving tenant can be among the records: each is measured where it is.
    places = [place(r) for r in records]
    # Every bucket's objects listed once for all its tenants, not a listing per tenant.
    listed = list_objects((where, r) for where, r in zip(places, records, strict=True)
                          if isinstance(where, UsageClients))
    # And each store's admin connection made once for all its tenants, not a login per tenant.
    with KeptConnections() as kept:
        shared = {id(c): kept.wrap(c) for c in places if isinstance(c, UsageClients)}

        def one(record: TenantRecord, where: UsageClients | TenantctlError) -> TenantUsage:
            if isinstance(where, TenantctlError):
                return TenantUsage(tenant_id=record.tenant_id, tier=record.tier, status=record.status,
                                   measured_at=utcnow(), idle_days=idle_days, errors=[str(where)])
            return measure(record, shared.get(id(where), where), idle_days, listed=listed)

        # Clients and listings are made above, in this thread: the threads only read them.
        return in_threads(lambda pair: one(*pair), list(zip(records, places, strict=True)), parallel, watch)


def committed_specs(ws: Workspace, records: list[TenantRecord]) -> dict[str, TenantSpec]:
    """Committed specs (instance class, storage, retention) where the stack file
    exists: each tenant's current stack, as its record names it."""
    paths = {r.tenant_id: stack_file(ws.stacks_dir, r.current_stack) for r in records}
    return {i: read_tenant(p) for i, p in paths.items() if p.exists()}


# -- a move to another account or region: two stacks, both billed --------------------
class MoveSide(BaseModel):
    """Which of a tenant's two stacks a cost row prices while its move to
    another account or region is open (both exist, both are billed)."""

    stack: str
    side: Literal["from", "to"]  # the stack the move leaves, or the one it builds
    serving: bool  # the registry routes the tenant to it now

    def describe(self) -> str:
        if self.side == "from":
            return f"stack {self.stack}, the one the move leaves: " + (
                "serving until the switch" if self.serving else "kept until --finalize")
        return f"stack {self.stack}, the move's target: " + ("serving" if self.serving else "serving from the switch")


def move_sides(ws: Workspace, record: TenantRecord) -> tuple[MoveSide | None, TenantRecord | None, MoveSide | None]:
    """(the serving stack's side, the other stack as a record to measure and
    price, its side) while a move to a second stack is open; Nones otherwise,
    and for the other stack while it has no outputs (not built yet, or
    destroyed by a --finalize or --rollback under way)."""
    move = record.move
    if move is None or move.to_stack is None:
        return None, None, None
    serving_to = record.current_stack == move.to_stack
    other = next(s for s in record.stacks if s != record.current_stack)
    here = MoveSide(stack=record.current_stack, side="to" if serving_to else "from", serving=True)
    there = MoveSide(stack=other, side="from" if serving_to else "to", serving=False)
    outputs = ws.engine.outputs(other)
    if not outputs:
        return here, None, None
    resources = TenantResources.model_validate(outputs)
    cell, tier = (move.from_cell, move.from_tier) if serving_to else (move.to_cell, move.to_tier)
    return here, record.model_copy(update={
        "cell": cell, "tier": tier, "region": resources.region, "resources": resources, "stack": other}), there


def platform_spec(ws: Workspace, cell: str = DEFAULT_CELL) -> CellSpec:
    """A cell's committed spec (its shared database priced for its pooled tenants), or the defaults."""
    return read_cell(ws.stacks_dir, cell) or CellSpec(name=cell)


def active_pooled(ws: Workspace) -> Counter[str]:
    """Pooled tenants per cell that each cell's platform cost is split over:
    the ones `cost --all` prices, active or suspended (a suspended tenant keeps
    its schema in the shared database and pays its share: counted apart, the
    shares would add up to more than the platform), in one registry scan."""
    return Counter(r.cell for r in ws.registry.iter_all(tier=Tier.pooled) if r.status in MEASURED_STATUSES)


def pooled_among(records: list[TenantRecord]) -> Counter[str]:
    """``active_pooled`` of the cells of ``records`` from ``records`` themselves, when they are every
    active or suspended pooled tenant of those cells (`cost --all`, `--cell C`, the report): a second
    scan of the registry, for counts its first already held, doubled what a fleet-wide read costs."""
    return Counter(r.cell for r in records if r.tier is Tier.pooled and r.status in MEASURED_STATUSES)


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
    move: MoveSide | None = None  # an open move to another account or region: which stack this row prices

    def label(self) -> str:
        """The tenant, and while such a move is open which of its stacks."""
        tid = self.estimate.tenant_id
        return tid if self.move is None else f"{tid} ({self.move.describe()})"


class CostReport(BaseModel):
    tenants: list[TenantCost]
    assumptions: list[str]


class Placed(BaseModel):
    """One row to price: the cell whose platform it is priced with, its inputs
    (and the usage they were read from; none for a what-if)."""

    cell: str
    inputs: CostInputs
    usage: TenantUsage | None = None
    hibernation: HibernationCost | None = None
    move: MoveSide | None = None
    hypothetical: bool = False  # a what-if tenant: in no registry count

    @property
    def uncounted(self) -> bool:
        """A pooled tenant or stack its cell's registry count does not include: a
        what-if tenant, or the stack a move builds or leaves (the record names the
        serving cell only)."""
        elsewhere = self.hypothetical or (self.move is not None and not self.move.serving)
        return elsewhere and self.inputs.tier is Tier.pooled


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
                   pooled_tenants: int | None = None, cell: str | None = None, idle_days: int = 30,
                   parallel: int = PARALLEL, watch: Watch | None = None) -> CostReport:
    """Estimates and the tier comparison for one tenant, all of them (of
    ``cell``; measured, with ``db_gb`` / ``s3_gb`` overriding the measured
    figures), or, with neither, a hypothetical tenant of ``tier`` in ``cell``
    described by ``db_gb`` / ``s3_gb``. Each tenant is priced with its own
    cell's platform split over that cell's pooled tenants (active or suspended);
    ``pooled_tenants`` replaces the registry's count. A dedicated tenant also
    gets its hibernation: stopped now (its instance priced at 0), idle for
    ``idle_days``, and what stopping it saves. A tenant whose move to another
    account or region is open is priced twice, once per stack (``move``). ``parallel``, ``watch``:
    as ``measure_records`` takes them."""
    require_parallel(parallel)
    hypothetical = not tenant_id and not all_
    if hypothetical and db_gb is None and s3_gb is None:
        raise UsageError("Missing argument 'ID': give a tenant id, --all, or a what-if usage (--db-gb and/or --s3-gb)")
    if hypothetical:
        placed = [Placed(cell=cell or DEFAULT_CELL, inputs=CostInputs(tenant_id="what-if", tier=tier or Tier.pooled),
                         hypothetical=True)]
    else:
        check_selection(tenant_id, all_, tier, cell)
        records = selected_records(ws, tenant_id, tier, cell)
        for record in records:
            if record.status is TenantStatus.deprovisioned:  # priced as live it would bill a platform share
                raise InvalidInput(f"tenant {record.tenant_id!r} is deprovisioned: it is not priced (only the "
                                   f"objects it kept still bill: `tenantctl usage {record.tenant_id}` measures them)")
        placed = placed_tenants(ws, prices, records, idle_days, parallel=parallel, watch=watch)
    # When every tenant of each cell priced was read (all of them, or all of the one cell every row is
    # in: not one id, nor only dedicated ones, nor a move's other stack in another cell), they hold the count.
    whole = (not hypothetical and not tenant_id and tier is not Tier.dedicated
             and (cell is None or all(p.cell == cell for p in placed)))
    return price_placed(ws, prices, placed, db_gb, s3_gb, pooled_tenants, pooled_among(records) if whole else None)


def price_placed(ws: Workspace, prices: PriceTable, placed: list[Placed], db_gb: float | None = None,
                 s3_gb: float | None = None, pooled_tenants: int | None = None,
                 counted: Counter[str] | None = None) -> CostReport:
    """Each row priced with its own cell's platform split over that cell's
    pooled tenants (active or suspended; ``counted``: already counted, ``pooled_among``),
    with the pooled rows the registry does not count
    there (a what-if tenant joins its cell; ``pooled_tenants`` replaces the
    whole count, when given)."""
    platforms = {c: platform_spec(ws, c) for c in {p.cell for p in placed}}
    counted = Counter() if pooled_tenants else Counter(counted) if counted is not None else active_pooled(ws)
    if not pooled_tenants:
        counted.update(p.cell for p in placed if p.uncounted)
    sharing = {c: pooled_tenants or counted[c] for c in platforms}
    tenants = []
    for p in placed:
        inputs = what_if(p.inputs, db_gb, s3_gb)
        n = sharing[p.cell]
        tenants.append(TenantCost(estimate=estimate(inputs, prices, platforms[p.cell], n),
                                  comparison=compare_tiers(inputs, prices, platforms[p.cell], n),
                                  hibernation=p.hibernation, move=p.move))
    return CostReport(tenants=tenants, assumptions=assumptions_text(prices, platforms or {DEFAULT_CELL: CellSpec()},
                                                                    sharing))


def placed_tenants(ws: Workspace, prices: PriceTable, records: list[TenantRecord], idle_days: int,
                   clients: Callable[[TenantRecord], UsageClients] | None = None, parallel: int = PARALLEL,
                   watch: Watch | None = None) -> list[Placed]:
    """Each tenant of ``records`` measured, with its committed spec, in its
    cell; while its move to another account or region is open, its other
    stack right after it, measured in that stack's cell."""
    stacks: list[tuple[TenantRecord, MoveSide | None]] = []
    for record in records:
        here, other, there = move_sides(ws, record)
        stacks.append((record, here))
        if other is not None:
            stacks.append((other, there))
    # One measurement over them all: each cell's clients made once (``per_place``).
    usages = measure_records(ws, [record for record, _ in stacks], idle_days, clients, parallel, watch)
    # In the pool too: a hibernated dedicated tenant's instance state is a call to RDS each.
    return in_threads(lambda each: _placed(ws, prices, *each),
                      [(record, usage, side) for (record, side), usage in zip(stacks, usages, strict=True)], parallel)


def _placed(ws: Workspace, prices: PriceTable, record: TenantRecord, usage: TenantUsage,
            move: MoveSide | None) -> Placed:
    """One stack of a tenant priced with its committed spec; a dedicated
    serving store with its hibernation."""
    inputs = cost_inputs(usage, committed_specs(ws, [record]).get(record.tenant_id))
    sleep = None
    if record.tier is Tier.dedicated and (move is None or move.serving):
        asleep = _hibernated(ws, record)
        inputs = inputs.model_copy(update={"hibernated": asleep})
        sleep = HibernationCost(hibernated=asleep, idle=usage.idle, monthly_saving=hibernation_saving(inputs, prices))
    return Placed(cell=record.cell, inputs=inputs, usage=usage, hibernation=sleep, move=move)


def _hibernated(ws: Workspace, record: TenantRecord) -> bool:
    """Its instance is stopped now: the record says hibernated and the runtime has not woken it since."""
    from tenantctl.errors import TenantctlError
    from tenantctl.operations.hibernate import instance_state

    try:
        return instance_state(ws, record) in ("stopping", "stopped")
    except TenantctlError:  # unreadable: trust the record
        return record.store_hibernation is not None


# -- report ----------------------------------------------------------------------------
def write_html_report(ws: Workspace, prices: PriceTable, out: Path, idle_days: int = 30,
                      on_drill_error: Callable[[Exception], None] | None = None, parallel: int = PARALLEL,
                      watch: Watch | None = None) -> tuple[Path, ReportData]:
    """Measure and price every active or suspended tenant (``report_data``),
    read their last drill verdicts, and write the HTML page to ``out``. A
    drill history that cannot be read is passed to ``on_drill_error`` and the
    page shows no drills rather than none of the usage and cost. Returns the
    path written and the report's data (``parallel``, ``watch``: as ``measure_records`` takes them)."""
    require_parallel(parallel)
    records = selected_records(ws, None)
    clients = per_place(ws)  # the drill history's reads and the measurement share each cell's clients
    try:
        drills: dict[str, list[DrillVerdict]] | None = {}
        places = {r.tenant_id: clients(r).s3 for r in records}  # made here: the threads only read them
        # Each tenant's history is in its own cell's bucket: read ``parallel`` at once, as they are measured.
        for verdicts in in_threads(lambda r: latest_drill_verdicts([r], places[r.tenant_id]), records, parallel):
            drills.update(verdicts)
    except Exception as exc:  # the drill history must not cost the operator the usage/cost page
        if on_drill_error is not None:
            on_drill_error(exc)
        drills = None
    data = report_data(ws, prices, records, idle_days, drills, clients, pooled_among(records), parallel, watch)
    return write_report(data, out), data


def report_data(ws: Workspace, prices: PriceTable, records: list[TenantRecord], idle_days: int = 30,
                drills: dict[str, list[DrillVerdict]] | None = None,
                clients: Callable[[TenantRecord], UsageClients] | None = None,
                counted: Counter[str] | None = None, parallel: int = PARALLEL,
                watch: Watch | None = None) -> ReportData:
    """The page's data for ``records``, each measured and priced as `tenantctl
    cost` prices it (in its own cell; both stacks of an open move to another
    account or region, the drills on the serving one); ``drills`` None: the
    history could not be read; ``counted``: as ``price_placed`` takes it."""
    placed = placed_tenants(ws, prices, records, idle_days, clients, parallel, watch)
    priced = price_placed(ws, prices, placed, counted=counted)
    rows = [ReportRow(usage=p.usage, cost=c.estimate, comparison=c.comparison, label=c.label(),
                      stack=c.move.stack if c.move else None,
                      drills=(drills or {}).get(p.inputs.tenant_id, []) if c.move is None or c.move.serving else [])
            for p, c in zip(placed, priced.tenants, strict=True)]
    platforms = [platform_spec(ws, cell) for cell in dict.fromkeys(p.cell for p in placed)] or [platform_spec(ws)]
    return build_report(rows, prices, platforms, priced.assumptions, idle_days, drills_available=drills is not None)
