"""Lock messages tell a live holder from a dead one on this host (a killed run
leaves its lock behind; its pid may since belong to another process)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta

from tenantctl.models import TenantLock, utcnow
from tenantctl.registry import _process_started, describe_lock, lock_holder, lock_remedy


def lock(pid: int, host: str | None = None, **kw) -> TenantLock:
    return TenantLock(operation="provision", owner="ops", host=host or socket.gethostname(), pid=pid, **kw)


def test_a_live_holder_on_this_host_is_running():
    held = lock(os.getpid())
    assert lock_holder(held) == "running"
    text = describe_lock("acme", held)
    assert "locked by a running provision" in text and f"pid {os.getpid()}, alive on this host" in text
    # Once stopped, this host proves it dead: no --force then either.
    assert "--force" not in text and "wait for it" in text and "`tenantctl unlock acme`" in text


def test_a_dead_holder_on_this_host_is_named_dead():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    held = lock(child.pid)
    assert lock_holder(held) == "gone"
    text = describe_lock("acme", held)
    assert "running provision" not in text
    assert (f"provision that is no longer running (owner ops, host {socket.gethostname()}, "
            f"pid {child.pid} no longer exists") in text
    # Provably dead: a re-run takes its lock over, a plain unlock removes it; --force is not needed.
    assert "--force" not in text and "`tenantctl unlock acme`" in text and "re-run" in text


def test_a_reused_pid_is_not_the_holder():
    # Our pid, but the lock is older than this process: whoever took it had the pid before us.
    before_we_started = _process_started(os.getpid()) - timedelta(minutes=5)
    held = lock(os.getpid(), acquired_at=before_we_started)
    assert lock_holder(held) == "reused"
    assert "no longer running" in describe_lock("acme", held)
    assert "started after the lock was taken" in describe_lock("acme", held)
    assert "--force" not in describe_lock("acme", held)


def test_another_hosts_holder_cannot_be_judged_from_here():
    held = lock(os.getpid(), host="build-runner-7")
    assert lock_holder(held) == "elsewhere"
    text = describe_lock("acme", held)
    assert "running provision (owner ops, host build-runner-7" in text
    assert "if that run is dead, `tenantctl unlock acme --force` removes the lock" in text


def test_the_remedy_is_worded_by_what_this_host_knows_of_the_holder():
    assert lock_remedy("acme", "gone") == lock_remedy("acme", "reused")
    assert "--force" not in lock_remedy("acme", "gone") and "--force" not in lock_remedy("acme", "running")
    assert "`tenantctl unlock acme --force`" in lock_remedy("acme", "elsewhere")


def test_process_start_is_read_for_this_process():
    started = _process_started(os.getpid())
    assert started is not None and timedelta(0) <= utcnow() - started < timedelta(hours=24)
