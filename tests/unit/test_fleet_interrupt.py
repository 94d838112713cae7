"""Ctrl-C in the fleet commands built on the shared pool (`check --all`, `refresh --all`, `search
reindex --all`, `audit`): the tenants not yet started never start and the command stops at once,
not after the whole queue (a plain pool's exit waits for every queued tenant)."""

from __future__ import annotations

import _thread
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from runtime_fixtures import record

from tenantctl.operations import audit, fleet_check, fleet_reindex, refresh

TENANTS = [record(f"t{i:02}") for i in range(40)]
PARALLEL = 4
SLOW = 0.2  # each tenant's work: 40 of them at 4 threads take 2 s


class FleetWorkspace:
    """Just what the fleet commands read before their threads start: the tenants (each in a
    defined cell) and the shared clients, made once."""

    engine = client = object()
    stacks_dir = SimpleNamespace(is_dir=lambda: False)

    def __init__(self) -> None:
        self.registry = SimpleNamespace(iter_all=lambda cell=None: iter(TENANTS))

    def cells_of(self, records: Any) -> dict[str, Any]:
        return {r.tenant_id: SimpleNamespace(account_id=None) for r in records}

    def cells(self) -> dict[str, Any]:
        return {}

    def account_roles(self, specs: Any) -> dict[None, None]:
        return {None: None}

    def platform_outputs(self) -> dict[str, str]:
        return {}


def _stop(*_: Any) -> None:
    raise KeyboardInterrupt


def _blocking(started: list[str], answer: Any) -> Any:
    """A tenant's work that waits on "the servers", noting which tenants started."""

    def work(*args: Any, **_: Any) -> Any:
        tenant = next(a for a in args if hasattr(a, "tenant_id"))
        started.append(tenant.tenant_id)
        time.sleep(SLOW)
        return answer(tenant)

    return work


def _check(monkeypatch, started):
    monkeypatch.setattr(fleet_check, "check_tenant", lambda ws, tid, r: _blocking(started, lambda t: (
        fleet_check.PostureReport(tenant_id=t.tenant_id, checks=[])))(r))
    fleet_check.check_fleet(FleetWorkspace(), every=True, parallel=PARALLEL, on_result=_stop)


def _refresh(monkeypatch, started):
    monkeypatch.setattr(refresh, "_tagged_by_account", lambda *a: {None: []})
    monkeypatch.setattr(refresh, "refresh_tenant", _blocking(started, lambda t: refresh.TenantDrift(
        tenant_id=t.tenant_id)))
    refresh.refresh_many(FleetWorkspace(), TENANTS, parallel=PARALLEL, on_result=_stop)


def _reindex(monkeypatch, started):
    monkeypatch.setattr(fleet_reindex, "reindex_one", _blocking(started, lambda t: fleet_reindex.Skipped(
        tenant_id=t.tenant_id, reason="test")))
    fleet_reindex.reindex_fleet(FleetWorkspace(), every=True, parallel=PARALLEL, on_result=_stop)


def _audit(monkeypatch, started):
    """`audit` reports no progress: the interrupt comes as a signal would, to the main thread."""
    monkeypatch.setattr(audit, "_accounts", lambda ws, records, cells: ({None: SimpleNamespace(tagged=[])}, {
        r.tenant_id: None for r in TENANTS}))
    monkeypatch.setattr(audit, "_gone", _blocking(started, lambda t: None))
    threading.Timer(SLOW * 1.5, _thread.interrupt_main).start()
    audit.audit(FleetWorkspace(), parallel=PARALLEL)


@pytest.mark.parametrize("command", [_check, _refresh, _reindex, _audit], ids=["check", "refresh", "reindex",
                                                                              "audit"])
def test_ctrl_c_starts_no_more_tenants_and_returns_at_once(monkeypatch, command, ctrl_c_handled):
    started: list[str] = []
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        command(monkeypatch, started)
    assert time.monotonic() - began < SLOW * 4, f"returned after {time.monotonic() - began:.2f} s"
    time.sleep(SLOW * 2.5)  # what was running ends; nothing else starts
    assert len(started) <= 3 * PARALLEL, started
