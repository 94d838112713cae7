"""`tenantctl report`: one static HTML page with every tenant's usage, cost and
last drill verdicts, charts drawn as inline SVG (no script, no external asset),
so it opens offline and can be attached to a ticket as a single file."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from tenantctl.files import write_atomic
from tenantctl.models import CellSpec, TenantRecord, utcnow
from tenantctl.templates import render
from tenantctl.usage.cost import CostEstimate, PriceTable, TierComparison, platform_cost
from tenantctl.usage.measure import TenantUsage


# -- drill verdicts (adapter over tenantctl.drills.history) -----------------------------
class DrillVerdict(BaseModel):
    drill: str = ""
    verdict: str
    finished_at: datetime | None = None
    detail: str = ""


def latest_drill_verdicts(records: list[TenantRecord], s3: Any) -> dict[str, list[DrillVerdict]]:
    """The newest drill verdict per tenant (reports stored under each tenant's prefix)."""
    from tenantctl.drills.history import latest_verdicts

    return {
        tenant_id: [DrillVerdict(drill=v.drill, verdict=v.verdict, finished_at=v.finished_at, detail=v.detail)]
        for tenant_id, v in latest_verdicts(records, s3=s3).items()
    }


# -- the report model ------------------------------------------------------------------
class Bar(BaseModel):
    label: str
    value: float
    text: str
    width: float
    css: str = ""


class Chart(BaseModel):
    title: str
    bars: list[Bar]
    width: int = 640
    row_height: int = 22
    label_width: int = 160

    @property
    def height(self) -> int:
        return self.row_height * max(len(self.bars), 1) + 8


class ReportRow(BaseModel):
    """One priced stack: a tenant's, or while its move to another account or
    region is open each of its two (``stack`` named, ``label`` saying which)."""

    usage: TenantUsage
    cost: CostEstimate | None
    comparison: TierComparison | None
    label: str = ""  # the tenant, and during such a move which of its stacks (``TenantCost.label``)
    stack: str | None = None
    drills: list[DrillVerdict] = Field(default_factory=list)

    @model_validator(mode="after")
    def _label_defaults_to_the_tenant(self) -> ReportRow:
        self.label = self.label or self.usage.tenant_id
        return self

    @property
    def name(self) -> str:
        """What a chart calls the row: the tenant id, and its stack during a move."""
        tid = self.usage.tenant_id
        return tid if self.stack is None else f"{tid} · {self.stack}"


class ReportData(BaseModel):
    generated_at: datetime
    idle_days: int
    rows: list[ReportRow]
    platform_monthly: float
    assumptions: list[str]
    drills_available: bool
    prices_as_of: str
    region: str

    @property
    def tenants(self) -> int:
        """Tenants on the page (a tenant whose move is open has a row per stack)."""
        return len({row.usage.tenant_id for row in self.rows})


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - loop always returns


def bar_chart(title: str, items: Iterable[tuple[str, float, str, str]], width: int = 640,
              label_width: int = 160) -> Chart:
    """Horizontal bars scaled to the largest value; items are (label, value, text, css class)."""
    items = list(items)
    room = width - label_width - 110  # leave space for the value text right of the bar
    top = max((v for _, v, _, _ in items), default=0)
    bars = [Bar(label=label, value=v, text=text, css=css, width=round(room * v / top, 1) if top else 0)
            for label, v, text, css in items]
    return Chart(title=title, bars=bars, width=width, label_width=label_width)


def build_report(rows: Iterable[ReportRow], prices: PriceTable, platforms: Iterable[CellSpec],
                 assumptions: list[str], idle_days: int, drills_available: bool) -> ReportData:
    """The page's data from rows priced per cell (``operations.usage``: as `tenantctl cost` prices them);
    ``platforms``: the cells the rows are priced in, whose shared resources the header sums."""
    return ReportData(
        generated_at=utcnow(), idle_days=idle_days, rows=list(rows),
        platform_monthly=sum(platform_cost(prices, p) for p in platforms), assumptions=assumptions,
        drills_available=drills_available, prices_as_of=prices.as_of, region=prices.region,
    )


def charts(data: ReportData) -> list[Chart]:
    rows = data.rows
    return [
        bar_chart("Objects under the prefix (all versions)", [
            (r.name, _obj_bytes(r), human_bytes(_obj_bytes(r)), "s3") for r in rows]),
        bar_chart("Context store size", [
            (r.name, r.usage.db.size_bytes if r.usage.db else 0,
             human_bytes(r.usage.db.size_bytes) if r.usage.db else "n/a", "db") for r in rows]),
        bar_chart("Estimated monthly cost (USD)", [
            (r.name, r.cost.total if r.cost else 0, f"${r.cost.total:,.2f}" if r.cost else "n/a",
             r.usage.tier.value) for r in rows]),
        bar_chart("Queue + DLQ depth", [
            (r.name, _depth(r), str(_depth(r)),
             "dlq" if r.usage.queues and r.usage.queues.dlq_visible else "queue")
            for r in rows]),
    ]


def _obj_bytes(r: ReportRow) -> int:
    o = r.usage.objects
    return o.current_bytes + o.noncurrent_bytes if o else 0


def _depth(r: ReportRow) -> int:
    q = r.usage.queues
    return q.visible + q.in_flight + q.delayed + q.dlq_visible + q.dlq_in_flight if q else 0


def render_html(data: ReportData) -> str:
    # An .html.j2 template: tenantctl.templates escapes it (tenant ids, error
    # messages and drill details are data, not markup).
    return render("report.html.j2", data=data, charts=charts(data), bytes=human_bytes)


def write_report(data: ReportData, out: Path) -> Path:
    out = Path(out)
    write_atomic(out, render_html(data))
    return out
