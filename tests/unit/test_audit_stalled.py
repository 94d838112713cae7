"""`audit`'s ``stalled-run``: a run that stopped without ending, found from the record alone
(a lock its holder provably left behind, a move's write freeze minutes old)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from runtime_fixtures import record

from tenant_runtime.models import MovePhase, TenantMove, Tier
from tenantctl.models import TenantLock, utcnow
from tenantctl.operations.audit import STALLED_FREEZE, stalled


def _lock(pid: int, host: str | None = None) -> TenantLock:
    return TenantLock(operation="move", owner="ops", host=host or socket.gethostname(), pid=pid)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _moving(phase: MovePhase, age: timedelta, lock: TenantLock | None, reverifying: bool = False):
    rec = record("acme")
    move = TenantMove(from_tier=Tier.pooled, to_tier=Tier.dedicated, phase=phase, old_store=rec.resources.store,
                      phase_at=utcnow() - age, reverifying=reverifying)
    return rec.model_copy(update={"move": move, "lock": lock})


def test_a_lock_its_holder_provably_left_is_a_stalled_run_and_a_live_or_unknowable_one_is_not():
    pid = _dead_pid()
    found = stalled(record("acme").model_copy(update={"lock": _lock(pid)}), utcnow())
    assert found is not None and found.kind == "stalled-run" and found.tenant_id == "acme"
    assert f"pid {pid} no longer exists" in found.detail and "`tenantctl unlock acme`" in found.detail
    assert "writes" not in found.detail  # no move: nothing refused meanwhile
    assert stalled(record("acme").model_copy(update={"lock": _lock(os.getpid())}), utcnow()) is None
    assert stalled(record("acme").model_copy(update={"lock": _lock(pid, "build-runner-7")}), utcnow()) is None
    assert stalled(record("acme"), utcnow()) is None


def test_another_hosts_lock_is_a_stalled_run_once_its_lease_lapsed():
    def runner_lock(lapses_in: float) -> TenantLock:
        return _lock(77, "build-runner-7").model_copy(update={"lapses_at": utcnow() + timedelta(seconds=lapses_in)})

    found = stalled(record("acme").model_copy(update={"lock": runner_lock(-1)}), utcnow())
    assert found is not None and "pid 77 stopped renewing it: it lapsed at" in found.detail
    assert "--force" not in found.detail and "`tenantctl unlock acme`" in found.detail
    assert stalled(record("acme").model_copy(update={"lock": runner_lock(60)}), utcnow()) is None


@pytest.mark.parametrize("phase, reverifying", [(MovePhase.freezing, False), (MovePhase.rolling_back, False),
                                                (MovePhase.switched, True)])
def test_writes_frozen_minutes_ago_are_a_stalled_run_whoever_holds_the_lock(phase, reverifying):
    long_ago = STALLED_FREEZE + timedelta(seconds=1)
    elsewhere = _moving(phase, long_ago, _lock(os.getpid(), "build-runner-7"), reverifying)
    found = stalled(elsewhere, utcnow())
    assert found is not None and found.detail.startswith("its writes have been refused since ")
    assert "host build-runner-7" in found.detail and "--force" in found.detail  # the holder can't be judged here
    assert found.detail.endswith("`tenantctl move acme` resumes the move (`--rollback` ends it)")
    unlocked = stalled(_moving(phase, long_ago, None, reverifying), utcnow())
    assert unlocked is not None and "no run holds 'acme'" in unlocked.detail
    # A freeze of seconds is the move working.
    assert stalled(_moving(phase, STALLED_FREEZE - timedelta(seconds=5), None, reverifying), utcnow()) is None


@pytest.mark.parametrize("phase", [MovePhase.copying, MovePhase.switched])
def test_a_move_not_freezing_writes_is_no_stalled_run_however_old(phase):
    assert stalled(_moving(phase, timedelta(days=2), None), utcnow()) is None
