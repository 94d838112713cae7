"""A drill's markdown report, written where `--markdown` says (no sandbox)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tenantctl.drills.models import DrillReport, Verdict
from tenantctl.drills.report import markdown_target, write_markdown
from tenantctl.errors import InvalidInput

AT = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)


def report(tenant_id: str, drill_id: str) -> DrillReport:
    return DrillReport(drill_id=drill_id, tenant_id=tenant_id, tier="pooled", kind="run", started_at=AT,
                       finished_at=AT, verdict=Verdict.passed)


def test_a_file_keeps_every_report_of_a_run_and_a_directory_gets_one_file_each(tmp_path):
    reports = [report("acme", "d1"), report("beta", "d2"), report("acme", "d3")]
    one = markdown_target(tmp_path / "new" / "dir" / "drills.md")  # its parents made before any drill
    assert one.parent.is_dir()
    assert write_markdown(reports, one) == [one]
    text = one.read_text()
    where = [text.index(f"# Drill {r.drill_id}: tenant `{r.tenant_id}`") for r in reports]
    assert where == sorted(where)  # all three, in the run's order

    folder = markdown_target(tmp_path)
    assert write_markdown(reports, folder) == [tmp_path / f"{r.tenant_id}-{r.drill_id}.md" for r in reports]
    assert "# Drill d2: tenant `beta`" in (tmp_path / "beta-d2.md").read_text()


def test_a_path_under_a_file_is_refused_before_any_drill(tmp_path):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(InvalidInput, match="--markdown"):
        markdown_target(tmp_path / "taken" / "drills.md")


def test_a_path_ending_in_a_slash_is_a_directory_made_before_any_drill(tmp_path):
    # `--markdown reports/`: one file per drill in reports/, not a file named "reports".
    folder = markdown_target(f"{tmp_path}/reports/")
    assert folder == tmp_path / "reports" and folder.is_dir()
    reports = [report("acme", "d1"), report("beta", "d2")]
    assert write_markdown(reports, folder) == [folder / "acme-d1.md", folder / "beta-d2.md"]
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(InvalidInput, match="--markdown"):
        markdown_target(f"{tmp_path}/taken/")
