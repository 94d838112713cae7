"""The registry writer against DynamoDB on the sandbox's moto server."""

import threading
import uuid

import boto3
import pytest

from tenant_runtime.registry import record_to_item
from tenantctl.errors import Conflict, InvalidInput, UsageError
from tenantctl.models import Hibernation, StoreConnection, TenantResources, TenantSpec, TenantStatus, Tier
from tenantctl.registry import RegistryWriter


@pytest.fixture
def registry(sandbox):
    name = f"registry-{uuid.uuid4().hex[:8]}"
    client = boto3.client("dynamodb", endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)
    client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "tenant_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "tenant_id", "KeyType": "HASH"}],
    )
    yield RegistryWriter(name, client=client)
    client.delete_table(TableName=name)


def resources(tenant_id: str, tier: Tier = Tier.pooled) -> TenantResources:
    return TenantResources(
        tenant_id=tenant_id, tier=tier, region="us-east-1",
        store=StoreConnection(endpoint="127.0.0.1", database="platform", schema_name=f"tenant_{tenant_id}",
                              role=f"tenant_{tenant_id}_app", secret_arn="arn:aws:secretsmanager:x"),
        kms_key_arn="arn:aws:kms:k", kms_alias=f"alias/tenantctl/{tenant_id}", bucket="b",
        prefix=f"tenants/{tenant_id}/", queue_url="q", dlq_url="d", role_arn="r",
    )


def test_reserve_lock_activate_and_refuse_a_second_run(registry):
    spec = TenantSpec(id="acme", owner="team-a")
    held = registry.acquire(spec, "provision")
    assert held.status is TenantStatus.provisioning and held.lock is not None and held.version == 1
    with pytest.raises(Conflict, match=r"locked by a running provision \(owner .* pid \d+"):
        registry.acquire(spec, "provision")
    active = registry.mark_active(held, resources("acme"), spec, "0.1.0", "h1")
    assert active.status is TenantStatus.active and active.lock is None and active.spec_hash == "h1"
    assert registry.get("acme") == active
    again = registry.acquire(spec, "provision")  # re-provision of an active tenant is allowed
    assert again.status is TenantStatus.active and again.lock is not None


def test_stale_version_is_a_conflict(registry):
    spec = TenantSpec(id="beta")
    held = registry.acquire(spec, "provision")
    registry.release(held, error="boom")
    with pytest.raises(Conflict, match="changed in the registry"):
        registry.mark_active(held, resources("beta"), spec, "0.1.0", "h")
    assert registry.get("beta").last_error == "boom"


def test_only_one_of_many_concurrent_reservations_wins(registry):
    spec = TenantSpec(id="gamma")
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def attempt():
        barrier.wait()
        try:
            registry.acquire(spec, "provision")
            outcomes.append("won")
        except Conflict:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 5 + ["won"]


def test_a_placement_racing_the_first_into_a_cell_gets_a_slot(registry):
    """Two provisions into a cell with no counter yet: the first's refused update is
    followed by the other run creating the counter and taking a slot before the
    first looks; the first still gets a slot (it was taken for a full cell before)."""
    other = RegistryWriter(registry.table, client=registry.client)
    init = registry._init_counter

    def raced(cell: str) -> bool:
        assert other.reserve_slot(cell, Tier.pooled, cap=500)  # creates the counter, takes a slot
        return init(cell)

    registry._init_counter = raced
    assert registry.reserve_slot("eu9", Tier.pooled, cap=500)
    assert registry.cell_counts(["eu9"])["eu9"] == ({"pooled": 2, "dedicated": 0}, False)
    # A cell that is really full still refuses, counter in place or not.
    registry._init_counter = init
    assert not registry.reserve_slot("eu9", Tier.pooled, cap=2)


def test_tombstone_is_not_reused_and_tier_change_is_refused(registry):
    spec = TenantSpec(id="delta")
    record = registry.mark_active(registry.acquire(spec, "provision"), resources("delta"), spec, "0.1.0", "h")
    with pytest.raises(InvalidInput, match="tenantctl move"):
        registry.acquire(TenantSpec(id="delta", tier=Tier.dedicated), "provision")
    # A recorded search analyzer goes with its store: a workspace's the tenant no longer has, all with the tenant.
    saved = registry.save(registry.get("delta"), search_analyzers={"": "v3", "hr": "v1"})
    assert saved.search_analyzers == registry.get("delta").search_analyzers == {"": "v3"}
    record = registry.lock_for("delta", "deprovision", status=TenantStatus.deprovisioning)
    tomb = registry.mark_deprovisioned(record, retention_days=14)
    assert tomb.status is TenantStatus.deprovisioned and tomb.retain_until > tomb.deprovisioned_at
    assert tomb.search_analyzers == {}
    with pytest.raises(Conflict, match="tombstoned"):
        registry.acquire(spec, "provision")


def test_a_hibernation_is_dropped_by_the_first_write_that_leaves_the_record_without_its_store(registry):
    spec = TenantSpec(id="eps", tier=Tier.dedicated)
    registry.mark_active(registry.acquire(spec, "provision"), resources("eps", Tier.dedicated), spec, "0.1.0", "h")
    sleeping = Hibernation(db_instance="tenantctl-eps", region=spec.region)

    def hibernated():
        return registry.mark_hibernation(registry.lock_for("eps", "hibernate"), sleeping)

    assert hibernated().hibernation == sleeping
    held = registry.lock_for("eps", "provision")  # its own dedicated store: the flag stays through any write
    assert held.hibernation == sleeping and registry.release(held).hibernation == sleeping
    # A move's switch (or a rollback) to the pooled tier, or to another region: not its store any more.
    assert registry.save(registry.get("eps"), tier=Tier.pooled, resources=resources("eps")).hibernation is None
    back = registry.save(registry.get("eps"), tier=Tier.dedicated, resources=resources("eps", Tier.dedicated))
    assert back.hibernation is None  # never comes back by itself
    hibernated()
    assert registry.save(registry.get("eps"), region="eu-west-1").hibernation is None
    registry.save(registry.get("eps"), region=spec.region)
    hibernated()
    tomb = registry.mark_deprovisioned(registry.lock_for("eps", "deprovision"), retention_days=14)
    assert tomb.hibernation is None  # its instance went with its stack

    # A tombstone an older tenantctl left with the flag: the first write (a revive's lock) drops it.
    registry.client.put_item(TableName=registry.table,
                             Item=record_to_item(tomb.model_copy(update={"hibernation": sleeping})))
    assert registry.get("eps").hibernation == sleeping  # reading changes nothing
    assert registry.lock_for("eps", "drill-restore").hibernation is None


def test_list_pages_cover_everything_once_with_filters(registry):
    ids = [f"t{i:02d}" for i in range(23)]
    for i, tenant_id in enumerate(ids):
        spec = TenantSpec(id=tenant_id)
        held = registry.acquire(spec, "provision")
        if i % 2 == 0:
            registry.mark_active(held, resources(tenant_id), spec, "0.1.0", "h")
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = registry.list(limit=5, cursor=cursor)
        seen += [r.tenant_id for r in page]
        pages += 1
        assert len(page) <= 5
        if cursor is None:
            break
    assert sorted(seen) == ids and pages == 5
    active = [r.tenant_id for r in registry.iter_all(status=TenantStatus.active)]
    assert sorted(active) == ids[::2]
    assert list(registry.iter_all(tier=Tier.dedicated)) == []
    with pytest.raises(UsageError, match="is not a cursor of this listing"):
        registry.list(cursor="not-a-cursor!")


def test_a_held_lock_is_renewed_without_a_new_version_and_let_go_with_it(registry, monkeypatch):
    """The run holding a tenant's lock extends its lease in the record's item (the
    item's version, which the run's own next write is conditional on, unchanged);
    its thread does so by itself; releasing the lock ends the lease and the renewals."""
    import time

    from waiting import wait_for

    from tenant_runtime.registry import LEASE, LEASE_UNTIL, item_key
    from tenantctl import lock_lease

    def item() -> dict:
        return registry._call("get_item", Key=item_key("leased"), ConsistentRead=True)["Item"]

    held = registry.acquire(TenantSpec(id="leased"), "provision")
    assert "leased" in lock_lease.KEEPER.holding()
    first = float(item()[LEASE_UNTIL]["N"])
    assert abs(first - (time.time() + lock_lease.LEASE_SECONDS)) < 10
    time.sleep(0.01)
    assert registry.renew_lock("leased", held.lock, lock_lease.LEASE_SECONDS)
    renewed = item()
    assert float(renewed[LEASE_UNTIL]["N"]) > first and renewed["version"]["N"] == "1"
    assert registry.get("leased").lock.lapses_at > held.lock.lapses_at
    # The keeper's own thread renews it too (a keeper of its own, so its first wait is short).
    monkeypatch.setattr(lock_lease, "RENEW_SECONDS", 0.05)
    keeper = lock_lease.Keeper()
    keeper.written(held, registry.renew_lock)
    before = float(item()[LEASE_UNTIL]["N"])
    wait_for("the lease renewed by the keeper's thread", lambda: float(item()[LEASE_UNTIL]["N"]) > before)
    saved = registry.save(held, last_error="a note")  # the run's next write: its version is still its own
    assert saved.version == 2 and float(item()[LEASE_UNTIL]["N"]) >= before
    # Renewals end before the write letting the lock go is made (one just after it would call the lock lost).
    registry._put_request(saved.model_copy(update={"lock": None}), saved.version)
    assert "leased" not in lock_lease.KEEPER.holding()
    released = registry.release(saved)
    keeper.written(released, registry.renew_lock)
    assert released.lock is None and LEASE not in item() and LEASE_UNTIL not in item()
    assert "leased" not in lock_lease.KEEPER.holding() and keeper.holding() == {}
    assert not registry.renew_lock("leased", held.lock, lock_lease.LEASE_SECONDS)  # nothing to renew: refused
    assert LEASE_UNTIL not in item()


def test_another_hosts_lock_is_taken_over_once_its_lease_lapses(registry, caplog):
    """A run killed on another host (a lost CI runner) stops renewing: its lock
    refuses the next run while its lease holds and is taken over after."""
    from datetime import timedelta

    from tenantctl import lock_lease
    from tenantctl.errors import Locked
    from tenantctl.models import TenantLock, TenantRecord, utcnow

    lost = TenantLock(operation="provision", owner="ci", host="lost-runner-3", pid=77,
                      lapses_at=utcnow() + timedelta(seconds=60))
    record = TenantRecord(tenant_id="orphan", tier=Tier.pooled, status=TenantStatus.provisioning,
                          region="us-east-1", lock=lost)
    registry._call("put_item", Item=record_to_item(record))
    with pytest.raises(Locked, match="its lock lapses at .* unless renewed"):
        registry.acquire(TenantSpec(id="orphan"), "provision")
    lapsed = lost.model_copy(update={"lapses_at": utcnow() - timedelta(seconds=1)})
    registry._call("put_item", Item=record_to_item(record.model_copy(update={"lock": lapsed})))
    with caplog.at_level("WARNING", logger="tenantctl.registry"):
        taken = registry.acquire(TenantSpec(id="orphan"), "provision")
    assert "pid 77 stopped renewing it: it lapsed at" in caplog.text
    assert registry.get("orphan").lock == taken.lock and lock_lease.KEEPER.holding()["orphan"] == taken.lock
    # The lost run, were it alive after all, can no longer renew: its next write is refused too.
    assert not registry.renew_lock("orphan", lost, 120)


def test_a_cell_lease_is_renewed_while_held_and_free_with_the_fingerprint_after(registry, monkeypatch):
    """Held past its length it stays held (renewed); a second run is refused all
    along, then takes it once it is given back, and reads what the first applied.
    The lease is run out by rewriting its expiry, not by a short one's timer: a
    renewing thread stalled on a loaded machine lets a 0.6 s lease lapse."""
    import time

    from waiting import wait_for

    from tenant_runtime.registry import LEASE_UNTIL, counter_key
    from tenantctl import cell_lease
    from tenantctl.registry import new_lock
    from tenantctl.registry_cells import CellBusy

    def lease_until() -> float:
        item = registry._call("get_item", Key=counter_key("eu9"), ConsistentRead=True)["Item"]
        return float(item[LEASE_UNTIL]["N"])

    monkeypatch.setattr(cell_lease, "RENEW_SECONDS", 0.05)  # its length stays LEASE_SECONDS (minutes)
    with cell_lease.held(registry, "eu9", "cell up") as lease:
        assert lease.applied is None
        for _ in range(3):  # its time runs out (as if held that long) and it is renewed, each time
            with pytest.raises(CellBusy, match="cell 'eu9' is being applied by a cell up"):
                registry.claim_cell("eu9", new_lock("cell up"), 0.6)
            registry._call("update_item", Key=counter_key("eu9"), UpdateExpression="SET #u = :u",
                           ExpressionAttributeNames={"#u": LEASE_UNTIL},
                           ExpressionAttributeValues={":u": {"N": f"{time.time() - 1:.3f}"}})
            wait_for("the lease renewed by its holder", lambda: lease_until() > time.time())
        with pytest.raises(CellBusy, match="cell 'eu9' is being applied by a cell up"):
            registry.claim_cell("eu9", new_lock("cell up"), 0.6)
        lease.done = "f1"
    with cell_lease.held(registry, "eu9", "cell up") as again:
        assert again.applied == "f1"
    # A lease nobody renews lapses: the next claim takes it. (Its end is the claim's clock plus 0.3 s,
    # the next claim's clock is at least 0.4 s later: no race, however slow the machine.)
    registry.claim_cell("eu9", new_lock("cell up"), 0.3)
    time.sleep(0.4)
    assert registry.claim_cell("eu9", new_lock("cell up"), 0.3) == "f1"


def test_a_lease_given_back_between_a_refused_claim_and_its_look_is_claimed_not_refused(registry, monkeypatch):
    """A claim refused by a holder that lets go before the claimant reads who holds
    it (a quick `cell drain` beside a `cell add`) is tried again and gets the
    lease: no exit 5 saying the cell "is being applied by another run" when no
    run holds it any more."""
    from tenant_runtime.registry import counter_key
    from tenantctl.registry import new_lock
    from tenantctl.registry_cells import lease_of

    holder = new_lock("cell drain")
    registry.claim_cell("q7-lease", holder, 30)
    real, refused = registry._call, []

    def call(operation, **kwargs):
        if operation == "get_item" and refused and len(refused) == 1:  # the look after the refused claim
            refused.append("looked")
            registry.release_cell("q7-lease", holder)  # ... the holder lets go just before it
        try:
            return real(operation, **kwargs)
        except Exception:
            if operation == "update_item" and not refused:
                refused.append("refused")
            raise

    monkeypatch.setattr(registry, "_call", call)
    registry.claim_cell("q7-lease", new_lock("cell add"), 30)
    assert refused == ["refused", "looked"]
    item = real("get_item", Key=counter_key("q7-lease"), ConsistentRead=True)["Item"]
    assert lease_of(item).operation == "cell add"


def test_a_cell_lease_whose_holder_was_killed_on_this_host_is_taken_over_at_once(registry, sandbox, caplog):
    """`kill -9` of a run holding a cell's lease (a `cell add` mid-up): the next
    run proves it dead as a tenant lock's holder is proved dead (its pid gone on
    this host, or reused by a newer process) and takes the lease over at once,
    saying so, instead of refusing until it lapses; a live holder, or one on
    another host, still refuses it."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from tenantctl import cell_lease
    from tenantctl.registry import new_lock
    from tenantctl.registry_cells import CellBusy

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, boto3; from tenantctl.registry import RegistryWriter, new_lock; "
        "client = boto3.client('dynamodb', endpoint_url=sys.argv[1], region_name=sys.argv[2]); "
        "RegistryWriter(sys.argv[3], client=client).claim_cell('k9', new_lock('cell up'), 120); "
        "print('held', flush=True); time.sleep(60)"), sandbox.aws_endpoint_url, sandbox.region, registry.table],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "TENANTCTL_OPERATOR": "killed"})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CellBusy, match=f"pid {holder.pid}"):  # alive: refused
            registry.claim_cell("k9", new_lock("cell add"), 120)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with caplog.at_level("WARNING", logger="tenantctl.cell_lease"):
        with cell_lease.held(registry, "k9", "cell add") as lease:  # no wait: at once
            assert lease.lock.pid == os.getpid()
    said = " ".join(r.getMessage() for r in caplog.records)
    assert f"the cell up holding its lease died (owner killed, host {new_lock('x').host}, pid {holder.pid} is gone" \
        in said and "lease taken over" in said, said

    # Held by this very (live) process, or by a run on another host: still refused.
    registry.claim_cell("k9", new_lock("cell up"), 120)
    with pytest.raises(CellBusy):
        with cell_lease.held(registry, "k9", "cell add"):
            pass
    elsewhere = new_lock("cell up").model_copy(update={"host": "another-host", "pid": holder.pid})
    registry.release_cell("k9", registry_lease(registry, "k9"))
    registry.claim_cell("k9", elsewhere, 120)
    with pytest.raises(CellBusy, match="another-host"):
        with cell_lease.held(registry, "k9", "cell add"):
            pass
    assert json.loads(registry_lease(registry, "k9").model_dump_json())["host"] == "another-host"


def registry_lease(registry, cell: str):
    from tenant_runtime.registry import counter_key
    from tenantctl.registry_cells import lease_of

    return lease_of(registry._call("get_item", Key=counter_key(cell), ConsistentRead=True)["Item"])


def test_every_page_of_a_filtered_listing_is_one_pass_of_scan_pages(registry):
    """`list --all` with a filter the table cannot apply (`--cell`, `--region`) reads the table once, in
    DynamoDB's 1 MB pages: paging it ``limit`` matches at a time re-read a 1 MB page per page of matches
    (5,000 records, `--cell`: 42 scans of 1 MB for what 8 hold)."""
    for i in range(9):
        spec = TenantSpec(id=f"w{i}", cell="c1" if i % 3 else "c2")
        registry.mark_active(registry.acquire(spec, "provision"), resources(f"w{i}"), spec, "0.1.0", "h")
    scans = []
    registry.client.meta.events.register("before-call.dynamodb.Scan", lambda **kw: scans.append(1))
    records, cursor = registry.list(limit=None, where=lambda r: r.cell == "c1")
    assert sorted(r.tenant_id for r in records) == [f"w{i}" for i in range(9) if i % 3] and cursor is None
    assert len(scans) == 1
    first, cursor = registry.list(limit=2, where=lambda r: r.cell == "c1")
    rest, end = registry.list(limit=None, cursor=cursor, where=lambda r: r.cell == "c1")
    assert sorted(r.tenant_id for r in first + rest) == [f"w{i}" for i in range(9) if i % 3] and end is None
