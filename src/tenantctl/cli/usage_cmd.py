"""`tenantctl usage | cost | report`: what tenants use, what they cost, one HTML page of both."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tenant_runtime.states import TenantStatus, Tier
from tenantctl.cli.options import JsonFlag, tenant_argument
from tenantctl.cli.output import console, error, escape, print_json, table
from tenantctl.timestamps import utc_minute

TenantArg = Annotated[Optional[str], tenant_argument("Tenant id (or --all).")]
AllFlag = Annotated[bool, typer.Option("--all", help="Every active or suspended tenant in the registry.")]
TierOpt = Annotated[Optional[Tier], typer.Option(help="With --all: only this tier.")]
IdleDays = Annotated[int, typer.Option(min=1, help="A tenant with no activity for this many days is idle.")]
PricesOpt = Annotated[Optional[Path], typer.Option(help="Price table YAML (default: the packaged us-east-1 table).")]
CellOpt = Annotated[Optional[str], typer.Option(help="With --all: only this cell's tenants. For a what-if: its cell.")]
ParallelOpt = Annotated[int, typer.Option(min=1, metavar="N", help="Tenants measured at once (--all, --cell).")]

app = typer.Typer()


# Short column labels of the row counts (a table without one keeps its name).
ROW_LABELS = {"conversations": "conv", "messages": "msg", "context_items": "items", "documents": "docs",
              "search_keys": "keys", "search_vocab": "vocab", "search_stats": "stats",
              "search_analyzers": "analyzers"}


def _when(t) -> str:
    return utc_minute(t) if t else "never"


@contextmanager
def _measuring(many: bool) -> Iterator[Any]:
    """Progress of a fleet read on stderr (`check --all`'s): a plan line, then a stamped line per
    tenant measured; nothing for one tenant."""
    if not many:
        yield None
        return
    from tenantctl.cli.progress import fleet_progress
    from tenantctl.operations.fleet_threads import Watch

    with fleet_progress("measuring") as progress:
        def done(usage) -> None:
            progress.done(escape(f"{usage.tenant_id}: " + (f"{len(usage.errors)} part(s) unread"
                                                           if usage.errors else "measured")))

        yield Watch(on_plan=lambda n: progress.plan(n, f"{n} tenant(s)"), on_result=done)


# -- usage ---------------------------------------------------------------------------
@app.command()
def usage(
    tenant_id: TenantArg = None,
    all_: AllFlag = False,
    tier: TierOpt = None,
    cell: CellOpt = None,
    idle_days: IdleDays = 30,
    parallel: ParallelOpt = 8,
    json_out: JsonFlag = False,
) -> None:
    """Show what a tenant uses: objects, context store, queues, last activity.

    Objects and bytes under the tenant prefix (current and noncurrent versions
    apart), context-store size and rows (read as the DB admin), queue and DLQ
    depth, and the newest write or upload; each workspace on a row of its own
    (``TENANT/WS``) under its tenant. With --all, walks the registry page by page and lists the idle tenants;
    --parallel tenants are measured at once, a progress line each (stderr), the rows in the registry's order.
    """
    from tenant_runtime.tables import TABLES
    from tenantctl.operations.usage import measure_tenants
    from tenantctl.usage.html_report import human_bytes
    from tenantctl.workspace import Workspace

    with _measuring(all_) as watch:
        _, usages = measure_tenants(Workspace(), tenant_id, all_, tier, idle_days, cell=cell, parallel=parallel,
                                    watch=watch)
    idle = [u.tenant_id for u in usages if u.idle]
    if json_out:
        print_json(usages[0] if tenant_id else {"tenants": usages, "idle": idle, "idle_days": idle_days})
        return
    def row(label: str, tier: str, o, d, q, last: str) -> tuple[str, ...]:
        return (label, tier,
                f"{o.current_objects} / {human_bytes(o.current_bytes)}" if o else "n/a",
                f"{o.noncurrent_versions} / {human_bytes(o.noncurrent_bytes)}" if o else "n/a",
                f"{human_bytes(d.size_bytes)} ({d.scope})" if d else "n/a",
                "/".join(str(d.rows[t]) for t in TABLES) if d else "n/a",
                f"{q.visible}+{q.in_flight}+{q.delayed}" if q else "n/a",
                str(q.dlq_visible) if q else "n/a", last)

    rows = []
    for u in usages:
        rows.append(row(u.tenant_id + (" (idle)" if u.idle else ""), u.tier.value, u.objects, u.db, u.queues,
                        _when(u.last_activity)))
        # Each workspace on a row of its own under its tenant (the tenant's figures exclude them).
        rows += [row(f"{u.tenant_id}/{w.name}", "workspace", w.objects, w.db, w.queues, "")
                 for w in u.workspaces.values()]
    counts = "rows: " + "/".join(ROW_LABELS.get(t, t) for t in TABLES)  # a label for each count, in the rows' order
    table("usage", ["tenant", "tier", "objects", "noncurrent", "db size", counts, "queue vis+flight+delayed", "dlq",
                    "last activity"], rows)
    for u in usages:
        for who, errors in ((u.tenant_id, u.errors), *((f"{u.tenant_id}/{w.name}", w.errors)
                                                         for w in u.workspaces.values())):
            for e in errors:
                console.print(f"[red]{who}[/]: {e}", highlight=False)
    for u in usages:
        if u.status is TenantStatus.deprovisioned:
            console.print(f"{u.tenant_id}: deprovisioned: the objects it kept are measured (its queues and store "
                          "are gone)", highlight=False)
    if all_:
        console.print(f"idle (> {idle_days} days): {', '.join(idle) if idle else 'none'}")


# -- cost ----------------------------------------------------------------------------
@app.command()
def cost(
    tenant_id: TenantArg = None,
    all_: AllFlag = False,
    tier: Annotated[Optional[Tier], typer.Option(help="With --all: only this tier. For a what-if: its tier.")] = None,
    db_gb: Annotated[Optional[float], typer.Option(
        min=0, help="What-if: context-store size in GB (overrides the measured one).")] = None,
    s3_gb: Annotated[Optional[float], typer.Option(
        min=0, help="What-if: S3 Standard GB (overrides the measured objects).")] = None,
    pooled_tenants: Annotated[Optional[int], typer.Option(
        min=1, help="Active pooled tenants sharing a cell's platform (default: count the registry).")] = None,
    cell: CellOpt = None,
    idle_days: IdleDays = 30,
    prices: PricesOpt = None,
    parallel: ParallelOpt = 8,
    json_out: JsonFlag = False,
) -> None:
    """Estimate a tenant's monthly cost, and pooled vs dedicated for its usage.

    Each tenant is priced with its own cell's platform, split over that cell's
    pooled tenants (active or suspended). Priced from the documented table (docs/cost.md), with the assumptions printed;
    the comparison says from which context-store size the tiers break even. A
    dedicated tenant that is hibernated is priced with its instance stopped
    (the saving shown); one idle for --idle-days shows what hibernating would save.

    Without a tenant id or --all, --db-gb/--s3-gb describe a hypothetical tenant. --all measures
    --parallel tenants at once, a progress line each (stderr).
    """
    from tenantctl.operations.usage import estimate_costs
    from tenantctl.usage.cost import load_prices
    from tenantctl.workspace import Workspace

    table_ = load_prices(prices)
    with _measuring(all_) as watch:
        priced = estimate_costs(Workspace(), table_, tenant_id, all_, tier=tier, db_gb=db_gb, s3_gb=s3_gb,
                                pooled_tenants=pooled_tenants, cell=cell, idle_days=idle_days, parallel=parallel,
                                watch=watch)
    if json_out:
        print_json(priced)
        return
    one = len({t.estimate.tenant_id for t in priced.tenants}) == 1  # a tenant moving to another account: two rows
    if one:
        for t in priced.tenants:
            est = t.estimate
            table(f"{t.label()} ({est.tier.value}): ${est.total:,.2f}/month", ["item", "USD/month", "detail"],
                  [(line.item, f"{line.monthly:.2f}", line.detail) for line in est.lines])
    table("pooled vs dedicated (USD/month)", ["tenant", "tier", "total", "if pooled", "if dedicated", "break-even DB"],
          [(t.label(), t.estimate.tier.value, f"{t.estimate.total:,.2f}", f"{t.comparison.pooled:,.2f}",
            f"{t.comparison.dedicated:,.2f}", "never" if t.comparison.break_even_db_gb is None
            else f"{t.comparison.break_even_db_gb:g} GB") for t in priced.tenants])
    moving = [t for t in priced.tenants if t.move is not None]
    for tid in dict.fromkeys(t.estimate.tenant_id for t in moving):
        both = [t.estimate.total for t in moving if t.estimate.tenant_id == tid]
        if len(both) == 2:  # the other stack built and not yet destroyed
            console.print(f"{tid}: ${sum(both):,.2f}/month while its move is open (both stacks)", highlight=False)
    # One tenant: always its advice; many: only those better off on the other tier. Not of a stack a move leaves
    # or has not switched to yet: it goes either way.
    for t in priced.tenants:
        if (t.move is None or t.move.serving) and (one or t.comparison.cheaper is not t.estimate.tier):
            console.print(f"{t.estimate.tenant_id}: {t.comparison.advice}", highlight=False)
    for t in priced.tenants:
        advice = t.hibernation.advice(t.estimate.tenant_id) if t.hibernation else None
        if advice:
            console.print(advice, highlight=False, markup=False)
    console.print("assumptions:", highlight=False)
    for a in priced.assumptions:
        console.print(f"  - {a}", highlight=False)


# -- report --------------------------------------------------------------------------
@app.command()
def report(
    out: Annotated[Path, typer.Option(help="Where to write the HTML page.")] = Path("report.html"),
    idle_days: IdleDays = 30,
    prices: PricesOpt = None,
    parallel: Annotated[int, typer.Option(min=1, metavar="N", help="Tenants measured at once.")] = 8,
    json_out: JsonFlag = False,
) -> None:
    """Write an HTML page of every tenant's usage, cost and last drills.

    One static file: inline SVG charts, no script, no external asset, opens offline. --parallel
    tenants are measured at once, a progress line each (stderr).
    """
    from tenantctl.operations.usage import write_html_report
    from tenantctl.usage.cost import load_prices
    from tenantctl.workspace import Workspace

    def drills_unreadable(exc: Exception) -> None:
        error(f"drill history unreadable, report shows none: {type(exc).__name__}: {exc}")

    ws = Workspace()
    with _measuring(True) as watch:
        path, data = write_html_report(ws, load_prices(prices), out, idle_days, on_drill_error=drills_unreadable,
                                       parallel=parallel, watch=watch)
    if json_out:
        print_json({"report": str(path.resolve()), "tenants": data.tenants})
    else:
        console.print(f"report written to {path} ({data.tenants} tenants)", highlight=False)
