"""`tenantctl status ID`: each store's search analyzer as tenantctl's last
reindex of it recorded it in the registry, and whether this installation
builds another (read from the record alone: no store, no psycopg)."""

from __future__ import annotations

from runtime_fixtures import record, with_workspaces

from tenant_runtime import analyzer
from tenantctl.cli.tenant_cmd import _record_rows, status_json


def test_status_shows_each_stores_recorded_analyzer_and_which_are_outdated():
    now = analyzer.identity()
    rec = with_workspaces(record("acme"), "fin", "hr").model_copy(
        update={"search_analyzers": {"": now, "hr": "v1", "gone": "v1"}})  # "gone": a workspace removed since
    [row] = [text for label, text in _record_rows(rec) if label == "search analyzer"]
    assert row == (f"the tenant's own: {now}; workspace fin: not recorded (no `tenantctl search reindex` of it "
                   f"yet: `tenantctl check acme` reads it); workspace hr: v1 (outdated: this tenantctl builds "
                   f"{now}; `tenantctl search reindex acme`)")
    out = status_json(rec)
    assert out["search_analyzers"] == {"": now, "hr": "v1", "gone": "v1"}
    assert out["search_analyzers_outdated"] == ["hr"]


def test_a_record_with_no_analyzer_recorded_says_so_without_loading_the_analyzer(monkeypatch):
    monkeypatch.setattr(analyzer, "identity", lambda: (_ for _ in ()).throw(AssertionError("loaded")))
    [row] = [text for label, text in _record_rows(record("acme")) if label == "search analyzer"]
    assert row.startswith("the tenant's own: not recorded")
    assert status_json(record("acme"))["search_analyzers_outdated"] == []
