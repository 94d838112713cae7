"""`hibernate --all`'s sweep: tenants hibernated several at once (each waits minutes for RDS to
stop its instance on AWS), reported as each ends, listed in id order (no sandbox: the sweep's
own orchestration; the CLI's sweep runs on the sandbox in tests/integration/test_operator_cli.py)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from tenantctl.errors import ApplyFailed, Conflict
from tenantctl.operations import hibernate as hibernation
from tenantctl.operations.fleet_threads import Watch


@pytest.fixture
def fleet(monkeypatch):
    """Four candidates and one skipped before any run; ``runs`` is each tenant's hibernation."""
    runs: dict[str, object] = {}
    monkeypatch.setattr(hibernation, "candidates",
                        lambda ws, cell: (["d1", "d2", "d3", "d4"], {"d0": "its cell is gone"}))
    monkeypatch.setattr(hibernation, "per_place", lambda ws: object())

    def hibernate(ws, tenant_id, idle_days, force, on_event, usage_clients):
        return runs[tenant_id]()

    monkeypatch.setattr(hibernation, "hibernate", hibernate)
    return runs


def test_tenants_hibernate_at_once_and_are_listed_in_id_order_whichever_ends_first(fleet):
    together = threading.Barrier(4, timeout=5)  # all four waiting for their instance at the same time
    ended: list[str] = []

    def waits(tenant_id: str, after: threading.Event | None = None):
        def run():
            together.wait()
            if after is not None:
                assert after.wait(5)
            return SimpleNamespace(tenant_id=tenant_id), SimpleNamespace(last_activity=None)
        return run

    d4_ended = threading.Event()

    def on_result(each) -> None:
        ended.append(each.tenant_id)
        if each.tenant_id == "d4":
            d4_ended.set()

    fleet.update(d1=waits("d1", after=d4_ended), d2=waits("d2", after=d4_ended), d3=waits("d3", after=d4_ended),
                 d4=waits("d4"))
    swept = hibernation.sweep(None, idle_days=30, force=False, parallel=4, watch=Watch.of(on_result=on_result))
    assert ended[0] == "d4"  # reported as it ended...
    assert [h["record"].tenant_id for h in swept.hibernated] == ["d1", "d2", "d3", "d4"]  # ...listed in id order
    assert swept.skipped == {"d0": "its cell is gone"} and swept.exit_code() == 0


def test_a_tenant_refused_is_skipped_one_that_fails_is_listed_and_the_rest_still_hibernate(fleet):
    def ok(tenant_id: str):
        return lambda: (SimpleNamespace(tenant_id=tenant_id), SimpleNamespace(last_activity=None))

    def raises(exc: Exception):
        def run():
            raise exc
        return run

    fleet.update(d1=raises(Conflict("tenant 'd1' is locked")), d2=raises(ApplyFailed("stopping it failed")),
                 d3=raises(RuntimeError("boom")), d4=ok("d4"))
    swept = hibernation.sweep(None, idle_days=30, force=False, parallel=2)
    assert [h["record"].tenant_id for h in swept.hibernated] == ["d4"]
    assert swept.skipped == {"d0": "its cell is gone", "d1": "tenant 'd1' is locked"}
    assert [(f.tenant_id, f.exit_code) for f in swept.failed] == [("d2", ApplyFailed.exit_code), ("d3", 1)]
    assert swept.exit_code() == ApplyFailed.exit_code
