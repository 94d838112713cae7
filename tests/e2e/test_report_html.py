"""The HTML report opened offline in headless Chromium (Debian's `chromium`
package): the browser's DOM carries every tenant's figures, the SVG bars scale
with the values, and tenant-supplied text stays text."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime

import pytest

from tenantctl.models import CellSpec, TenantStatus, Tier
from tenantctl.usage.cost import GIB, compare_tiers, cost_inputs, estimate, load_prices
from tenantctl.usage.html_report import DrillVerdict, ReportRow, build_report, write_report
from tenantctl.usage.measure import DbUsage, ObjectUsage, QueueUsage, TenantUsage

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
HOSTILE = '<script>document.title="pwned"</script>'


def usage(tenant_id: str, tier: Tier, obj_bytes: int, db_bytes: int, dlq: int = 0, **kw) -> TenantUsage:
    return TenantUsage(
        tenant_id=tenant_id, tier=tier, status=TenantStatus.active, measured_at=NOW, idle_days=30,
        objects=ObjectUsage(current_objects=obj_bytes // 1000, current_bytes=obj_bytes,
                            bytes_by_class={"STANDARD": obj_bytes}, last_modified=NOW),
        db=DbUsage(scope="database" if tier is Tier.dedicated else "schema", size_bytes=db_bytes,
                   rows={"conversations": 3, "messages": 42, "context_items": 7}, last_write=NOW),
        queues=QueueUsage(visible=2, in_flight=0, delayed=1, dlq_visible=dlq, dlq_in_flight=0),
        last_activity=NOW, **kw,
    )


@pytest.fixture
def report_file(tmp_path):
    usages = [
        usage("acme", Tier.pooled, 10 * GIB, 2 * GIB),
        usage("globex", Tier.dedicated, 5 * GIB, 30 * GIB, dlq=4),
        usage("initech", Tier.pooled, 1 * GIB, GIB // 4, idle=True, errors=[f"queues: {HOSTILE}"]),
    ]
    drills = {"acme": [DrillVerdict(drill="restore", verdict="pass", finished_at=NOW, detail="rto 41s")]}
    prices, cell = load_prices(), CellSpec()
    rows = [ReportRow(usage=u, cost=estimate(inputs, prices, cell, 2),
                      comparison=compare_tiers(inputs, prices, cell, 2), drills=drills.get(u.tenant_id, []))
            for u in usages for inputs in [cost_inputs(u, None)]]
    data = build_report(rows, prices, [cell], [], idle_days=30, drills_available=True)
    return write_report(data, tmp_path / "report.html"), data


def dump_dom(path, tmp_path) -> str:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_report_renders_in_headless_chromium_with_every_tenant(report_file, tmp_path):
    path, data = report_file
    dom = dump_dom(path, tmp_path)
    assert "<title>tenantctl report" in dom
    for row in data.rows:
        tid = row.usage.tenant_id
        assert f'<tr data-tenant="{tid}">' in dom
        assert f"${row.cost.total:.2f}" in dom
    assert "rto 41s" in dom and dom.count("no drill yet") == 2
    assert re.search(r'data-tenant="initech">\s*<td>initech <span class="idle">idle</span>', dom)


def test_svg_bars_scale_with_the_values(report_file, tmp_path):
    path, _ = report_file
    dom = dump_dom(path, tmp_path)
    charts = re.findall(r"<svg.*?</svg>", dom, flags=re.S)
    assert len(charts) == 4
    widths = {tid: float(w) for tid, w in re.findall(
        r'<g class="bar" data-tenant="([a-z]+)".*?<rect class="db"[^>]*width="([\d.]+)"', charts[1], flags=re.S)}
    # Context store: globex 30 GiB is the largest, acme 2 GiB, initech 0.25 GiB.
    assert widths["globex"] > 0
    assert widths["acme"] == pytest.approx(widths["globex"] * 2 / 30, abs=0.1)
    assert widths["initech"] == pytest.approx(widths["globex"] * 0.25 / 30, abs=0.1)


def test_tenant_text_is_escaped_and_nothing_external_is_loaded(report_file, tmp_path):
    path, _ = report_file
    html = path.read_text()
    assert HOSTILE not in html and "&lt;script&gt;" in html
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', html, flags=re.I)
    assert "<script" not in html
    dom = dump_dom(path, tmp_path)
    assert "pwned" not in re.search(r"<title>(.*?)</title>", dom, flags=re.S).group(1)


def test_cost_what_if_from_the_cli_follows_the_price_table(tmp_path):
    """`tenantctl cost --db-gb` prices a hypothetical tenant without touching any target."""
    import json
    import sys
    from pathlib import Path

    from tenantctl.usage.cost import CostInputs, compare_tiers

    exe = Path(sys.executable).with_name("tenantctl")
    (tmp_path / "Pulumi.yaml").write_text("name: scratch\n")  # a project without stacks/: default platform
    proc = subprocess.run([str(exe), "cost", "--db-gb", "40", "--s3-gb", "200", "--pooled-tenants", "12", "--json"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    inputs = CostInputs(tenant_id="what-if", tier=Tier.pooled, db_bytes=40 * GIB,
                        s3_bytes_by_class={"STANDARD": 200 * GIB})
    expected = compare_tiers(inputs, load_prices(), CellSpec(), 12)
    got = out["tenants"][0]
    assert got["estimate"]["total"] == pytest.approx(expected.pooled)
    assert got["comparison"]["cheaper"] == "dedicated"
    assert got["comparison"]["break_even_db_gb"] == expected.break_even_db_gb
    assert any("as of" in a for a in out["assumptions"])
