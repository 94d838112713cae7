"""`tenantctl status ID`: each store's search analyzer as tenantctl's last
reindex of it recorded it in the registry, and whether this installation
builds another (read from the record alone: no store, no psycopg)."""

from __future__ import annotations

from runtime_fixtures import record, with_workspaces

from tenant_runtime import analyzer
from tenantctl.cli.tenant_cmd import _record_rows, status_json

NO_REINDEX = ("none yet: no `tenantctl search reindex` has finished on this store (its index takes the analyzer of the "
              "runtime that writes its first document; `tenantctl check acme` reads the live one)")


def test_status_shows_each_stores_recorded_analyzer_and_which_are_outdated():
    now = analyzer.identity()
    rec = with_workspaces(record("acme"), "fin", "hr").model_copy(
        update={"search_analyzers": {"": now, "hr": "v1", "gone": "v1"}})  # "gone": a workspace removed since
    [row] = [text for label, text in _record_rows(rec) if label == "search analyzer"]
    assert row == (f"the tenant's own: {now}; workspace fin: {NO_REINDEX}; workspace hr: v1 (outdated: this "
                   f"tenantctl builds {now}; `tenantctl search reindex acme`)")
    out = status_json(rec)
    assert out["search_analyzers"] == {"": now, "hr": "v1", "gone": "v1"}
    assert out["search_analyzers_outdated"] == ["hr"]
    assert out["search_analyzers_unrecorded"] == ["fin"]


def test_a_fresh_tenant_says_no_reindex_has_run_without_loading_the_analyzer(monkeypatch):
    """A store no reindex finished on (a new tenant's) has no analyzer recorded: said as such, not as missing data."""
    monkeypatch.setattr(analyzer, "identity", lambda: (_ for _ in ()).throw(AssertionError("loaded")))
    [row] = [text for label, text in _record_rows(record("acme")) if label == "search analyzer"]
    assert row == f"the tenant's own: {NO_REINDEX}"
    out = status_json(record("acme"))
    assert (out["search_analyzers"], out["search_analyzers_outdated"], out["search_analyzers_unrecorded"]) == (
        {}, [], [""])
