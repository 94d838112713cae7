"""A tenant's lock is a lease its run renews: another host's lock whose lease
lapsed is provably stale, one renewed (or taken by a tenantctl that does not
renew) cannot be judged from here."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from tenant_runtime.registry import LEASE, LEASE_UNTIL, item_to_record, lock_identity, record_to_item
from tenantctl import lock_lease
from tenantctl.models import TenantLock, TenantRecord, TenantStatus, Tier, utcnow
from tenantctl.registry import DEAD, describe_lock, died, lock_holder, lock_remedy


def lock(host: str = "ci-runner-7", pid: int = 4242, **kw) -> TenantLock:
    return TenantLock(operation="provision", owner="ci", host=host, pid=pid, **kw)


def record(tenant_id: str = "acme", held: TenantLock | None = None) -> TenantRecord:
    return TenantRecord(tenant_id=tenant_id, tier=Tier.pooled, status=TenantStatus.provisioning, region="us-east-1",
                        lock=held)


def test_another_hosts_lock_past_its_lease_is_lapsed_and_taken_over_without_force():
    stale = lock(lapses_at=utcnow() - timedelta(seconds=1))
    assert lock_holder(stale) == "lapsed" and "lapsed" in DEAD
    text = describe_lock("acme", stale)
    assert "locked by a provision that is no longer running (owner ci, host ci-runner-7, pid 4242 stopped " \
           "renewing it: it lapsed at" in text
    assert "--force" not in text and "re-run the command" in text
    assert "stopped renewing it" in died(stale)


def test_another_hosts_renewed_lock_is_running_elsewhere_and_says_when_it_would_lapse():
    renewed = lock(lapses_at=utcnow() + timedelta(seconds=90))
    assert lock_holder(renewed) == "elsewhere" and died(renewed) is None
    remedy = lock_remedy("acme", "elsewhere", renewed)
    assert "its lock lapses at" in remedy and "a re-run then takes it over" in remedy
    assert "`tenantctl unlock acme --force` removes it now" in remedy
    # Taken by a tenantctl that does not renew: it never lapses, --force is the only way.
    unrenewed = lock(acquired_at=utcnow() - timedelta(days=3))
    assert lock_holder(unrenewed) == "elsewhere"
    assert lock_remedy("acme", "elsewhere", unrenewed) == \
        "if that run is dead, `tenantctl unlock acme --force` removes the lock"


def test_on_this_host_the_pid_decides_not_the_lease():
    mine = lock(host=socket.gethostname(), pid=os.getpid(), lapses_at=utcnow() - timedelta(minutes=5))
    assert lock_holder(mine) == "running"


def test_the_item_carries_the_lease_and_a_renewal_is_read_back():
    lapses = lock_lease.stamped(lock()).lapses_at
    assert lapses.microsecond % 1000 == 0 and timedelta(seconds=119) < lapses - utcnow() <= timedelta(seconds=120)
    held = record(held=lock(lapses_at=lapses))
    item = record_to_item(held)
    assert item[LEASE] == {"S": lock_identity(held.lock)}
    assert item_to_record(item) == held  # to the millisecond
    renewed = {**item, LEASE_UNTIL: {"N": f"{lapses.timestamp() + 30:.3f}"}}
    assert item_to_record(renewed).lock.lapses_at == lapses + timedelta(seconds=30)
    # A lock that does not renew has no lease; neither has an unlocked record.
    assert LEASE not in record_to_item(record(held=lock())) and LEASE not in record_to_item(record())
    assert lock_identity(lock()) != lock_identity(lock(pid=4243))


def test_the_keeper_renews_this_process_locks_until_the_record_lets_them_go():
    keeper, calls, kept = lock_lease.Keeper(), [], {"acme": True, "beta": True}

    def renew(tenant_id: str, held: TenantLock, seconds: float) -> bool:
        calls.append((tenant_id, held.operation, seconds))
        return kept[tenant_id]

    mine = lock(host=socket.gethostname(), pid=os.getpid())
    keeper.written(record("acme", mine), renew)
    keeper.written(record("beta", mine), renew)
    keeper.written(record("gamma", lock()), renew)  # another run's lock: not this process's to renew
    assert set(keeper.holding()) == {"acme", "beta"}
    keeper.renew_all()
    assert sorted(calls) == [("acme", "provision", lock_lease.LEASE_SECONDS),
                             ("beta", "provision", lock_lease.LEASE_SECONDS)]
    keeper.written(record("acme"), renew)  # released
    kept["beta"] = False  # taken over (lapsed, or unlocked by force) elsewhere
    keeper.renew_all()
    assert keeper.holding() == {}
    calls.clear()
    keeper.renew_all()
    assert calls == []


def test_a_failing_renewal_keeps_the_lock_for_the_next_one():
    keeper = lock_lease.Keeper()

    def renew(tenant_id: str, held: TenantLock, seconds: float) -> bool:
        raise ConnectionError("registry unreachable")

    keeper.written(record("acme", lock(host=socket.gethostname(), pid=os.getpid())), renew)
    keeper.renew_all()
    assert set(keeper.holding()) == {"acme"}
    keeper.forget("acme")  # its thread renews nothing more in this process


def test_a_locks_state_in_a_few_words():
    from tenantctl.registry import lock_state

    assert lock_state(lock(lapses_at=utcnow() - timedelta(seconds=1)), "lapsed").startswith(
        "dead: stopped renewing, lapsed at ")
    assert lock_state(lock(), "gone") == "dead: pid gone" and lock_state(lock(), "reused") == "dead: pid reused"
    assert lock_state(lock(), "running") == "alive on this host"
    assert lock_state(lock(), "elsewhere") == "another host's, not renewed: unknowable"
    assert lock_state(lock(lapses_at=utcnow()), "elsewhere").startswith("another host's, renewed until ")


def test_a_renewal_changes_neither_the_lock_nor_the_record():
    """What a run holds is the same lock however recently its lease was read: a run that compares the
    record it holds with the registry's (to tell its own write from another's) is not fooled by one."""
    held = lock(lapses_at=utcnow())
    renewed = held.model_copy(update={"lapses_at": utcnow() + timedelta(seconds=30)})
    assert renewed == held
    before = record(held=held)
    assert before.model_copy(update={"lock": renewed}) == before
    assert lock(pid=4243) != held and held != lock(acquired_at=held.acquired_at + timedelta(seconds=1))
