"""`tenantctl usage | cost | report`: what tenants use, what they cost, one HTML page of both."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Iterator, Optional

import typer

from tenantctl.cli.output import console, print_json, table
from tenantctl.models import Tier

if TYPE_CHECKING:
    from tenantctl.models import TenantRecord, TenantSpec
    from tenantctl.usage import TenantUsage
    from tenantctl.workspace import Workspace

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
TenantArg = Annotated[Optional[str], typer.Argument(help="Tenant id (or --all).")]
AllFlag = Annotated[bool, typer.Option("--all", help="Every active or suspended tenant in the registry.")]
TierOpt = Annotated[Optional[Tier], typer.Option(help="With --all: only this tier.")]
IdleDays = Annotated[int, typer.Option(min=1, help="A tenant with no activity for this many days is idle.")]
PricesOpt = Annotated[Optional[Path], typer.Option(help="Price table YAML (default: the packaged us-east-1 table).")]


# -- shared plumbing -------------------------------------------------------------------
def _check_target(tenant_id: str | None, all_: bool) -> None:
    from tenantctl.errors import InvalidInput

    if bool(tenant_id) == all_:  # checked before touching any target
        raise InvalidInput("give either a tenant id or --all")


def _records(ws: "Workspace", tenant_id: str | None, all_: bool, tier: Tier | None) -> Iterator["TenantRecord"]:
    if tenant_id:
        yield ws.registry.require(tenant_id)
    else:
        yield from ws.registry.iter_all(tier=tier)


def _measure(ws: "Workspace", tenant_id: str | None, all_: bool, tier: Tier | None, idle_days: int,
             keep: list["TenantRecord"] | None = None) -> list["TenantUsage"]:
    """Usage of one tenant or all; ``keep`` collects the records measured."""
    from tenantctl.usage import MEASURED_STATUSES, clients_from_workspace, measure

    _check_target(tenant_id, all_)
    clients = clients_from_workspace(ws)
    records = [r for r in _records(ws, tenant_id, all_, tier) if tenant_id or r.status in MEASURED_STATUSES]
    if keep is not None:
        keep.extend(records)
    return [measure(r, clients, idle_days) for r in records]


def _specs(ws: "Workspace", ids: list[str]) -> dict[str, "TenantSpec"]:
    """Committed specs (instance class, storage, retention) where the stack file exists."""
    from tenantctl.stackconfig import read_tenant, stack_file

    return {i: read_tenant(stack_file(ws.stacks_dir, i)) for i in ids if stack_file(ws.stacks_dir, i).exists()}


def _active_pooled(ws: "Workspace") -> int:
    from tenantctl.models import TenantStatus

    return sum(1 for _ in ws.registry.iter_all(tier=Tier.pooled, status=TenantStatus.active))


def _platform(ws: "Workspace"):
    from tenantctl.models import PlatformSpec
    from tenantctl.stackconfig import read_platform

    return read_platform(ws.stacks_dir) or PlatformSpec()


def _when(t) -> str:
    return f"{t:%Y-%m-%d %H:%M}Z" if t else "never"


# -- usage ---------------------------------------------------------------------------
def usage(
    tenant_id: TenantArg = None,
    all_: AllFlag = False,
    tier: TierOpt = None,
    idle_days: IdleDays = 30,
    json_out: JsonFlag = False,
) -> None:
    """Show what a tenant uses: objects, context store, queues, last activity.

    Objects and bytes under the tenant prefix (current and noncurrent versions
    apart), context-store size and rows (read as the DB admin), queue and DLQ
    depth, and the newest write or upload. With --all, walks the registry page by page and lists the idle tenants.
    """
    from tenantctl.report import human_bytes
    from tenantctl.workspace import Workspace

    usages = _measure(Workspace(), tenant_id, all_, tier, idle_days)
    idle = [u.tenant_id for u in usages if u.idle]
    if json_out:
        print_json(usages[0] if tenant_id else {"tenants": usages, "idle": idle, "idle_days": idle_days})
        return
    rows = []
    for u in usages:
        o, d, q = u.objects, u.db, u.queues
        rows.append((
            u.tenant_id + (" (idle)" if u.idle else ""), u.tier.value,
            f"{o.current_objects} / {human_bytes(o.current_bytes)}" if o else "n/a",
            f"{o.noncurrent_versions} / {human_bytes(o.noncurrent_bytes)}" if o else "n/a",
            f"{human_bytes(d.size_bytes)} ({d.scope})" if d else "n/a",
            "/".join(str(d.rows[t]) for t in ("conversations", "messages", "context_items")) if d else "n/a",
            f"{q.visible}+{q.in_flight}+{q.delayed}" if q else "n/a",
            str(q.dlq_visible) if q else "n/a", _when(u.last_activity),
        ))
    table("usage", ["tenant", "tier", "objects", "noncurrent", "db size", "conv/msg/items",
                    "queue vis+flight+delayed", "dlq", "last activity"], rows)
    for u in usages:
        for e in u.errors:
            console.print(f"[red]{u.tenant_id}[/]: {e}", highlight=False)
    if all_:
        console.print(f"idle (> {idle_days} days): {', '.join(idle) if idle else 'none'}")


# -- cost ----------------------------------------------------------------------------
def cost(
    tenant_id: TenantArg = None,
    all_: AllFlag = False,
    tier: Annotated[Optional[Tier], typer.Option(help="With --all: only this tier. For a what-if: its tier.")] = None,
    db_gb: Annotated[Optional[float], typer.Option(min=0, help="What-if: context-store size in GB (overrides the measured one).")] = None,
    s3_gb: Annotated[Optional[float], typer.Option(min=0, help="What-if: S3 Standard GB (overrides the measured objects).")] = None,
    pooled_tenants: Annotated[Optional[int], typer.Option(min=1, help="Active pooled tenants sharing the platform (default: count the registry).")] = None,
    prices: PricesOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Estimate a tenant's monthly cost, and pooled vs dedicated for its usage.

    Priced from the documented table (docs/cost.md), with the assumptions printed;
    the comparison says from which context-store size the tiers break even.

    Without a tenant id or --all, --db-gb/--s3-gb describe a hypothetical tenant.
    """
    from tenantctl.cost import GIB, CostInputs, assumptions_text, compare_tiers, estimate, load_prices
    from tenantctl.errors import InvalidInput
    from tenantctl.report import cost_inputs
    from tenantctl.workspace import Workspace

    table_ = load_prices(prices)
    ws = Workspace()
    what_if = not tenant_id and not all_
    if what_if and db_gb is None and s3_gb is None:
        raise InvalidInput("give a tenant id, --all, or a what-if usage (--db-gb and/or --s3-gb)")
    platform = _platform(ws)
    n = pooled_tenants or _active_pooled(ws)
    if what_if:
        inputs_list = [CostInputs(tenant_id="what-if", tier=tier or Tier.pooled)]
        n = max(n, 1)
    else:
        usages = _measure(ws, tenant_id, all_, tier, idle_days=30)
        specs = _specs(ws, [u.tenant_id for u in usages])
        inputs_list = [cost_inputs(u, specs.get(u.tenant_id)) for u in usages]
    overrides = {}
    if db_gb is not None:
        overrides["db_bytes"] = int(db_gb * GIB)
    if s3_gb is not None:
        overrides["s3_bytes_by_class"] = {"STANDARD": int(s3_gb * GIB)}
    inputs_list = [i.model_copy(update=overrides) for i in inputs_list]
    results = [(estimate(i, table_, platform, n), compare_tiers(i, table_, platform, n)) for i in inputs_list]
    assumptions = assumptions_text(table_, platform, n)
    if json_out:
        print_json({"tenants": [{"estimate": e, "comparison": c} for e, c in results], "assumptions": assumptions})
        return
    if len(results) == 1:
        est, cmp_ = results[0]
        table(f"{est.tenant_id} ({est.tier.value}): ${est.total:,.2f}/month", ["item", "USD/month", "detail"],
              [(line.item, f"{line.monthly:.2f}", line.detail) for line in est.lines])
    table("pooled vs dedicated (USD/month)", ["tenant", "tier", "total", "if pooled", "if dedicated", "break-even DB"],
          [(e.tenant_id, e.tier.value, f"{e.total:,.2f}", f"{c.pooled:,.2f}", f"{c.dedicated:,.2f}",
            "never" if c.break_even_db_gb is None else f"{c.break_even_db_gb:g} GB") for e, c in results])
    # One tenant: always its advice; many: only those better off on the other tier.
    for est, c in results:
        if len(results) == 1 or c.cheaper is not est.tier:
            console.print(f"{est.tenant_id}: {c.advice}", highlight=False)
    console.print("assumptions:", highlight=False)
    for a in assumptions:
        console.print(f"  - {a}", highlight=False)


# -- report --------------------------------------------------------------------------
def report(
    out: Annotated[Path, typer.Option(help="Where to write the HTML page.")] = Path("report.html"),
    idle_days: IdleDays = 30,
    prices: PricesOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Write an HTML page of every tenant's usage, cost and last drills.

    One static file: inline SVG charts, no script, no external asset, opens offline.
    """
    from tenantctl.cost import load_prices
    from tenantctl.report import build_report, latest_drill_verdicts, write_report
    from tenantctl.workspace import Workspace

    ws = Workspace()
    table_ = load_prices(prices)
    records: list[TenantRecord] = []
    usages = _measure(ws, None, True, None, idle_days, keep=records)
    ids = [u.tenant_id for u in usages]
    try:
        drills = latest_drill_verdicts(records)
    except Exception as exc:  # the drill history must not cost the operator the usage/cost page
        from tenantctl.cli.output import error

        error(f"drill history unreadable, report shows none: {type(exc).__name__}: {exc}")
        drills = None
    data = build_report(usages, _specs(ws, ids), table_, _platform(ws), idle_days, drills)
    path = write_report(data, out)
    if json_out:
        print_json({"report": str(path.resolve()), "tenants": len(data.rows)})
    else:
        console.print(f"report written to {path} ({len(data.rows)} tenants)", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(usage)
    app.command()(cost)
    app.command()(report)
