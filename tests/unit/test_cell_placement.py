"""Cells without a sandbox: names and specs, their stack files, the registry's
per-cell counters (moto in-process), placement's choices (a stand-in
workspace over that registry and moto's accounts), and the two engines'
provider config for a cell in another account."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest

from tenant_runtime.models import MovePhase, StoreConnection, TenantMove
from tenant_runtime.registry import counter_key, record_to_item
from tenantctl import naming
from tenantctl.aws import Clients
from tenantctl.errors import Conflict, InvalidInput, QuotaExceeded, TargetUnavailable
from tenantctl.models import (
    CellSpec,
    LifecycleSpec,
    RetentionMenu,
    TenantLock,
    TenantRecord,
    TenantSpec,
    TenantStatus,
    Tier,
    utcnow,
)
from tenantctl.operations import cell_evacuate
from tenantctl.operations.cell import _shares_account_region, free_vpc_cidr
from tenantctl.operations.cell_evacuate import _by_link, _copies, pick
from tenantctl.placement import choose, place
from tenantctl.registry import RegistryWriter
from tenantctl.stackconfig import (
    cell_specs,
    provider_config,
    read_cell,
    read_tenant,
    render_tenant,
    tenant_stack_files,
    write_cell,
    write_tenant,
)
from tenantctl.workspace import Workspace, relocation

ROLE_A = "arn:aws:iam::222222222222:role/tenantctl-cell"
TABLE = "reg"


# -- names and specs -------------------------------------------------------------------
def test_cell_names_never_collide_with_tenant_names():
    assert naming.cell_stack("default") == "platform" and naming.cell_stack("eu1") == "cell-eu1"
    assert naming.cell_of_stack("cell-eu1") == "eu1" and naming.cell_of_stack("platform") == "default"
    assert naming.cell_of_stack("acme") is None
    assert naming.broken_rule("cell-eu1").name == "reserved"  # a tenant can never be named like a cell's stack
    assert naming.cell_rds_identifier("eu1") == "tenantctl-cell-eu1"
    assert naming.cell_database("eu-1") == "tenantctl_cell_eu_1" and naming.cell_database("default") == "tenantctl"
    longest = naming.cell_bucket_name("123456789012", "ap-southeast-3", "a" * naming.MAX_CELL_NAME)
    assert len(longest) <= 63
    assert naming.cell_name_problem("a" * (naming.MAX_CELL_NAME + 1))
    assert naming.cell_name_problem("Eu_1") and naming.cell_name_problem("eu--1")


def test_a_new_cells_vpc_range_overlaps_no_other_cell_of_its_account_and_region_nor_dedicated_tenants():
    assert free_vpc_cidr([], "eu1") == "10.0.0.0/16"
    assert free_vpc_cidr(["10.0.0.0/16", "10.2.0.0/16"], "eu1") == "10.1.0.0/16"
    assert free_vpc_cidr(["10.0.4.0/22", "10.1.0.0/24"], "eu1") == "10.2.0.0/16"  # overlap, not equality
    assert free_vpc_cidr([f"10.{n}.0.0/16" for n in range(42)], "eu1") == "10.43.0.0/16"  # 10.42: dedicated's
    with pytest.raises(InvalidInput, match="give its --vpc-cidr"):
        free_vpc_cidr(["10.0.0.0/8"], "eu1")


def test_a_cell_spec_validates_its_account_and_its_menu():
    assert CellSpec(name="eu1", account_role_arn=ROLE_A).account_id == "222222222222"
    with pytest.raises(ValueError, match="home of the registry"):
        CellSpec(account_role_arn=ROLE_A)  # the default cell runs in the target's own account
    with pytest.raises(ValueError, match="account_role_arn"):
        CellSpec(name="eu1", account_role_arn="arn:aws:iam::2222:user/x")
    with pytest.raises(ValueError, match="S3 allows 1000 per bucket"):
        CellSpec(retention=RetentionMenu(temp_upload_days=list(range(1, 366)),
                                         archive=[{"transition_days": t, "expiry_days": 3650} for t in range(1, 700)]))
    menu = RetentionMenu()
    assert menu.refuses(LifecycleSpec()) is None
    assert "not offered" in menu.refuses(LifecycleSpec(temp_upload_days=5))
    assert "30/400" in menu.refuses(LifecycleSpec(archive_expiry_days=400))


def test_old_stack_files_with_the_default_abort_days_still_read(tmp_path: Path):
    assert LifecycleSpec.model_validate({"abort_multipart_days": 1}) == LifecycleSpec()
    with pytest.raises(ValueError, match="setting of the tenant's cell"):
        LifecycleSpec.model_validate({"abort_multipart_days": 3})


def test_the_cell_is_left_out_of_the_fingerprint_but_pinned_in_the_stack_file(tmp_path: Path):
    placed = TenantSpec(id="acme", region="eu-west-1", cell="eu1")
    assert placed.content_hash() == placed.model_copy(update={"cell": None}).content_hash()
    write_tenant(tmp_path, placed)
    assert read_tenant(tmp_path / "Pulumi.acme.yaml") == placed
    assert "tenantctl:platformStack: cell-eu1" in render_tenant(placed)


def test_stack_files_of_cells_and_tenants_stay_apart(tmp_path: Path):
    assert cell_specs(tmp_path) == {"default": CellSpec()}  # a fresh project: the default cell's defaults
    write_cell(tmp_path, CellSpec(name="eu1", region="eu-west-1", account_role_arn=ROLE_A))
    write_cell(tmp_path, CellSpec())
    write_tenant(tmp_path, TenantSpec(id="acme", cell="eu1", region="eu-west-1"))
    write_tenant(tmp_path, TenantSpec(id="beta"))
    assert list(cell_specs(tmp_path)) == ["default", "eu1"]
    assert read_cell(tmp_path, "eu1").account_id == "222222222222"
    assert set(tenant_stack_files(tmp_path)) == {"acme", "beta"}
    # Both engines lay the cell's account over the stacks that run in it, and only those.
    assumed = {"aws:assumeRoles": [{"roleArn": ROLE_A, "sessionName": "tenantctl"}]}
    assert provider_config(tmp_path, "cell-eu1") == assumed
    assert provider_config(tmp_path, "acme") == assumed
    assert provider_config(tmp_path, "beta") == {} and provider_config(tmp_path, "platform") == {}
    # A cell's alarm subscriptions reach its tenants' stacks (not its own): its file says them once.
    ops = {"protocol": "sqs", "endpoint": "arn:aws:sqs:us-east-1:123456789012:ops"}
    write_cell(tmp_path, CellSpec(alarm_subscriptions=[ops]))
    assert provider_config(tmp_path, "beta") == {"tenantctl:alarmSubscriptions": [ops]}
    assert provider_config(tmp_path, "platform") == {} and provider_config(tmp_path, "acme") == assumed


def test_the_pulumi_engine_qualifies_a_cell_reference_and_adds_the_account(tmp_path: Path):
    from tenantctl.engines.pulumi.engine import effective_config

    write_cell(tmp_path, CellSpec(name="eu1", region="eu-west-1", account_role_arn=ROLE_A))
    write_tenant(tmp_path, TenantSpec(id="acme", cell="eu1", region="eu-west-1"))
    path = tmp_path / "Pulumi.acme.yaml"
    data = effective_config(path, "org/tenantctl/platform", provider_config(tmp_path, "acme"))
    assert data["config"]["tenantctl:platformStack"] == "org/tenantctl/cell-eu1"
    assert data["config"]["aws:assumeRoles"] == [{"roleArn": ROLE_A, "sessionName": "tenantctl"}]
    assert effective_config(path, "platform", {}) is None  # a DIY backend, own account: the file as it is


# -- the registry's counters ---------------------------------------------------------------
@pytest.fixture
def registry(moto_account) -> RegistryWriter:
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    dynamodb.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "tenant_id", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "tenant_id", "AttributeType": "S"}],
                          BillingMode="PAY_PER_REQUEST")
    return RegistryWriter(TABLE, client=dynamodb)


def put_record(registry: RegistryWriter, tenant_id: str, cell: str | None = None,
               status: TenantStatus = TenantStatus.active, tier: Tier = Tier.pooled,
               move: TenantMove | None = None) -> None:
    item = record_to_item(TenantRecord(tenant_id=tenant_id, tier=tier, status=status, region="us-east-1",
                                       cell=cell or "default", move=move))
    if cell is None:  # written before cells: no cell attribute, no cell in the record JSON
        item.pop("cell")
    registry.client.put_item(TableName=TABLE, Item=item)


def test_slots_are_reserved_up_to_the_cap_never_while_draining_and_given_back(registry: RegistryWriter):
    assert [registry.reserve_slot("eu1", Tier.pooled, cap=2) for _ in range(3)] == [True, True, False]
    assert registry.reserve_slot("eu1", Tier.dedicated, cap=None)  # counted apart, no cap
    assert registry.cell_counts(["eu1", "nope"]) == {"eu1": ({"pooled": 2, "dedicated": 1}, False), "nope": None}
    put_record(registry, "t1")
    record = registry.save_giving_slot(registry.require("t1"), "eu1", Tier.pooled)
    registry.set_draining("eu1", True)
    assert not registry.reserve_slot("eu1", Tier.pooled, cap=2)
    registry.set_draining("eu1", False)
    assert registry.reserve_slot("eu1", Tier.pooled, cap=2)
    for _ in range(4):  # at 0 the record is written alone
        record = registry.save_giving_slot(record, "eu1", Tier.dedicated)
    assert registry.cell_counts(["eu1"])["eu1"] == ({"pooled": 2, "dedicated": 0}, False)  # never below 0
    assert registry.require("t1") == record


def test_a_counter_starts_from_one_recount_of_the_cells_records(registry: RegistryWriter):
    put_record(registry, "old-a")  # before cells: the default cell's
    put_record(registry, "old-b", status=TenantStatus.deprovisioned)  # a tombstone holds no slot
    put_record(registry, "eu-a", cell="eu1")
    assert registry.reserve_slot("default", Tier.pooled, cap=2)  # counter made: 1 existing + this one
    assert not registry.reserve_slot("default", Tier.pooled, cap=2)
    assert registry.recount("default") == {"pooled": 1, "dedicated": 0}  # the reservation has no record yet


def test_a_tenant_being_moved_holds_a_slot_of_both_tiers_in_its_cell(registry: RegistryWriter):
    store = StoreConnection(endpoint="h", port=5432, database="d", schema_name="s", role="r", secret_arn="a")
    put_record(registry, "mv-p", cell="eu1", move=TenantMove(from_tier=Tier.pooled, to_tier=Tier.dedicated,
                                                             old_store=store))
    put_record(registry, "mv-d", cell="eu1", tier=Tier.pooled,  # switched: the record names the new tier
               move=TenantMove(from_tier=Tier.dedicated, to_tier=Tier.pooled, old_store=store))
    put_record(registry, "still", cell="eu1", tier=Tier.dedicated)
    assert registry.recount("eu1") == {"pooled": 2, "dedicated": 3}


def test_a_tenant_moving_between_cells_holds_a_slot_in_each_whichever_its_record_names(registry: RegistryWriter):
    store = StoreConnection(endpoint="h", port=5432, database="d", schema_name="s", role="r", secret_arn="a")
    move = TenantMove(from_tier=Tier.pooled, to_tier=Tier.pooled, from_cell="eu1", to_cell="eu2", old_store=store)
    put_record(registry, "across", cell="eu1", move=move)  # before the switch
    put_record(registry, "switched", cell="eu2", tier=Tier.dedicated,
               move=move.model_copy(update={"to_tier": Tier.dedicated}))
    assert registry.recount("eu1") == {"pooled": 2, "dedicated": 0}
    assert registry.recount("eu2") == {"pooled": 1, "dedicated": 1}


def test_listings_skip_counters_and_filter_by_cell(registry: RegistryWriter):
    for i in range(5):
        put_record(registry, f"t{i}", cell="eu1" if i % 2 else None)
    registry.reserve_slot("eu1", Tier.pooled, cap=10)
    assert registry.client.get_item(TableName=TABLE, Key=counter_key("eu1"))["Item"]
    with pytest.raises(InvalidInput, match="charset"):  # a counter's key is no tenant id: never read as one
        registry.get("cell#eu1")
    assert sorted(r.tenant_id for r in registry.iter_all()) == ["t0", "t1", "t2", "t3", "t4"]
    records, cells = registry.fleet()  # apply's one scan: the records, and which cells have a counter
    assert sorted(r.tenant_id for r in records) == ["t0", "t1", "t2", "t3", "t4"] and cells == ["eu1"]
    assert sorted(r.tenant_id for r in registry.iter_all(cell="eu1")) == ["t1", "t3"]
    assert sorted(r.tenant_id for r in registry.iter_all(cell="default")) == ["t0", "t2", "t4"]
    seen, cursor = [], None
    while True:  # pages of 2 walk every record once, counters never among them
        page, cursor = registry.list(limit=2, cursor=cursor)
        seen += [r.tenant_id for r in page]
        if cursor is None:
            break
    assert sorted(seen) == ["t0", "t1", "t2", "t3", "t4"]


# -- placement ----------------------------------------------------------------------------
def workspace(tmp_path: Path, registry: RegistryWriter, cells: list[CellSpec]) -> SimpleNamespace:
    """The workspace calls placement makes, over real stack files, the moto registry and moto accounts."""
    for cell in cells:
        write_cell(tmp_path, cell)
    clients = Clients(region="us-east-1", credentials=("testing", "testing"))
    ws = SimpleNamespace(registry=registry, cells=lambda: cell_specs(tmp_path), ensure_cell=lambda name: {},
                         cell_outputs=lambda name: {},
                         cell=lambda name: cell_specs(tmp_path)[name], is_sandbox=True,
                         cell_clients=lambda name: clients.in_account(cell_specs(tmp_path)[name].account_role_arn,
                                                                      cell_specs(tmp_path)[name].region))
    ws.relocation = lambda spec, outputs: relocation(spec, outputs, "111111111111")
    ws.refuse_relocated = lambda spec, outputs: Workspace.refuse_relocated(ws, spec, outputs)
    return ws


def test_the_first_cell_of_an_account_and_region_owns_its_rds_os_metrics_group():
    home = CellSpec()  # the target's own account (111111111111 here), us-east-1
    cells = {"platform": home, "eua": CellSpec(name="eua", region="eu-west-1", account_role_arn=ROLE_A)}
    ws = SimpleNamespace(cells=lambda: cells)

    def shares(spec: CellSpec) -> bool:
        return _shares_account_region(ws, spec, "111111111111")

    assert shares(CellSpec(name="use2", region="us-east-1"))  # the home's account and region
    assert shares(CellSpec(name="use3", region="us-east-1",
                           account_role_arn="arn:aws:iam::111111111111:role/x"))  # the same account by a role
    assert not shares(CellSpec(name="euh", region="eu-west-1"))  # the home's account, another region
    assert shares(CellSpec(name="eub", region="eu-west-1", account_role_arn=ROLE_A))
    cells["eua"] = cells["eua"].model_copy(update={"os_metrics_group": False})
    assert not shares(CellSpec(name="eub", region="eu-west-1", account_role_arn=ROLE_A))  # nobody has it yet


def test_placement_picks_the_least_loaded_cell_of_the_region(tmp_path: Path, registry: RegistryWriter):
    ws = workspace(tmp_path, registry, [
        CellSpec(name="eua", region="eu-west-1", account_role_arn=ROLE_A, max_pooled_tenants=4),
        CellSpec(name="eub", region="eu-west-1", max_pooled_tenants=2),
        CellSpec(name="ded", region="eu-west-1", tiers=[Tier.dedicated])])
    chosen = []
    for i in range(6):
        spec, placement = place(ws, TenantSpec(id=f"t{i}", region="eu-west-1"), None)
        assert spec.cell == placement.cell and placement.record is not None
        assert placement.account_id == ("222222222222" if placement.cell == "eua" else None)
        chosen.append(placement.cell)
    assert sorted(chosen) == ["eua"] * 4 + ["eub"] * 2  # filled by load (placed / cap), never the dedicated-only cell
    assert chosen[:2] == ["eua", "eub"]
    with pytest.raises(QuotaExceeded) as full:
        place(ws, TenantSpec(id="t9", region="eu-west-1"), None)
    assert "cell eua: 4 of 4" in str(full.value) and "cell ded: it takes dedicated tenants" in str(full.value)
    with pytest.raises(InvalidInput, match="retention menu"):
        place(ws, TenantSpec(id="t9", region="eu-west-1", cell="eub", lifecycle={"temp_upload_days": 5}), None)


def test_an_evacuated_tenant_goes_to_its_own_accounts_cells_first_then_the_least_loaded(
        tmp_path: Path, registry: RegistryWriter):
    ws = workspace(tmp_path, registry, [
        CellSpec(name="eux", region="eu-west-1", draining=True),  # the one being emptied
        CellSpec(name="euy", region="eu-west-1", max_pooled_tenants=2),
        CellSpec(name="euz", region="eu-west-1", account_role_arn=ROLE_A, max_pooled_tenants=10),
        CellSpec(name="eud", region="eu-west-1", tiers=[Tier.dedicated]),
        CellSpec(name="usx", region="us-east-1")])
    ws.cell_outputs = lambda name: {"account_id": "111111111111"}
    cells, leaving, loads = ws.cells(), ws.cell("eux"), {}
    pooled = TenantSpec(id="t1", region="eu-west-1")
    # euz is emptier, but euy is of the leaving cell's account (the move keeps the tenant's key and role).
    assert [pick(ws, cells, leaving, pooled, loads)[0] for _ in range(4)] == ["euy", "euy", "euz", "euz"]
    chosen, refusals = pick(ws, cells, leaving, pooled, {})  # a run: only the counters count
    assert chosen == "euy" and refusals == ["cell eud: it takes dedicated tenants, not pooled"]
    # A dedicated store never stands beside its own in one account and region.
    chosen, refusals = pick(ws, cells, leaving, pooled.model_copy(update={"tier": Tier.dedicated}), {})
    assert chosen == "euz"
    assert [r.split(":")[0] for r in refusals] == ["cell eud", "cell euy"]
    assert all("a dedicated store cannot stand beside its own" in r for r in refusals)
    registry.reserve_slot("euy", Tier.pooled, cap=2)
    registry.reserve_slot("euy", Tier.pooled, cap=2)
    registry.set_draining("euz", True)
    chosen, refusals = pick(ws, cells, leaving, pooled, {})
    assert chosen is None and "cell euz: draining" in refusals
    assert "cell euy: 2 of 2 pooled tenants placed" in refusals[1]


def test_an_evacuation_places_each_tenant_once_up_front_reading_its_stack_file_once(
        tmp_path: Path, registry: RegistryWriter, monkeypatch: pytest.MonkeyPatch):
    """The placement the run's up-front checks count is the one its moves use: each tenant
    placed in turn as if the ones before had taken their slots, from the one read of its file."""
    ws = workspace(tmp_path, registry, [
        CellSpec(name="eux", region="eu-west-1", draining=True),
        CellSpec(name="euy", region="eu-west-1", max_pooled_tenants=2),
        CellSpec(name="euz", region="eu-west-1", account_role_arn=ROLE_A, max_pooled_tenants=2)])
    ws.cell_outputs, ws.stacks_dir = (lambda name: {"account_id": "111111111111"}), tmp_path
    records = [TenantRecord(tenant_id=f"t{i}", tier=Tier.pooled, status=TenantStatus.active, region="eu-west-1",
                            cell="eux") for i in range(5)]
    for r in records[:4]:  # t4 has no stack file
        write_tenant(tmp_path, TenantSpec(id=r.tenant_id, region="eu-west-1", cell="eux"))
    reads: list[str] = []
    monkeypatch.setattr(cell_evacuate, "read_tenant", lambda path: reads.append(path.name) or read_tenant(path))
    specs = cell_evacuate._stack_specs(ws, records)
    queue = deque((r, cell_evacuate.Evacuee(tenant_id=r.tenant_id, tier=r.tier, outcome="planned")) for r in records)
    cell_evacuate._place(ws, ws.cells(), ws.cell("eux"), None, queue, specs, dry_run=False)
    assert [(e.to_cell, e.outcome) for _, e in queue] == [("euy", "planned")] * 2 + [("euz", "planned")] * 2 + [
        (None, "skipped")]
    assert sorted(reads) == [f"Pulumi.t{i}.yaml" for i in range(4)]  # once each, checks and placement alike


def test_an_evacuated_tenants_rollback_window_end_reads_as_moves_does():
    """`cell evacuate` says when a switched move's window ends as `move` prints it, not as ISO."""
    from concurrent.futures import Future

    from tenantctl.cli.move_cmd import _summary
    from tenantctl.operations.apply_guard import FailureBudget
    from tenantctl.operations.move import MoveResult

    moved = MoveResult(tenant_id="t1", outcome="switched", from_tier=Tier.pooled, to_tier=Tier.pooled,
                       from_cell="eux", to_cell="euy", window_ends_at="2026-12-07T21:13:45.123456+00:00")
    future: Future = Future()
    future.set_result(moved)
    evacuee = cell_evacuate.Evacuee(tenant_id="t1", tier=Tier.pooled, outcome="planned")
    cell_evacuate._settle(evacuee, future, FailureBudget())
    assert evacuee.detail == "rollback window until 2026-12-07 21:13Z"
    assert "rollback window until 2026-12-07 21:13Z" in _summary(moved)


def test_an_evacuation_counts_as_copies_from_the_cells_database_only_the_replication_links(
        tmp_path: Path, registry: RegistryWriter):
    """A pooled store's move within the account and region copies from the cell's database; a
    dedicated tenant's store is its own instance, a move to another account relays rows, a move
    done copying (freezing) takes its next slot where its new store is, but still goes by a link
    and makes its way back on the cell's own server."""
    ws = workspace(tmp_path, registry, [
        CellSpec(name="eux", region="eu-west-1", draining=True),
        CellSpec(name="euy", region="eu-west-1"),
        CellSpec(name="euz", region="eu-west-1", account_role_arn=ROLE_A)])
    ws.cell_outputs = lambda name: {}
    cells, leaving = ws.cells(), ws.cell("eux")
    store = StoreConnection(endpoint="h", port=5432, database="d", schema_name="s", role="r", secret_arn="a")

    def linked(record: TenantRecord, to: str | None = None) -> bool:
        return _by_link(ws, cells, leaving, cells[to] if to else None, record)

    def copies(record: TenantRecord, to: str | None = None) -> bool:
        return linked(record, to) and _copies(record)

    pooled = TenantRecord(tenant_id="t1", tier=Tier.pooled, status=TenantStatus.active, region="eu-west-1",
                          cell="eux")
    assert copies(pooled) and copies(pooled, "euy") and not copies(pooled, "euz")
    assert not copies(pooled.model_copy(update={"tier": Tier.dedicated}))
    only_other_account = {n: c for n, c in cells.items() if n != "euy"}
    assert not _by_link(ws, only_other_account, leaving, None, pooled)
    move = TenantMove(from_tier=Tier.pooled, to_tier=Tier.pooled, from_cell="eux", to_cell="euy", old_store=store,
                      phase=MovePhase.copying)
    assert copies(pooled.model_copy(update={"move": move}))
    frozen = pooled.model_copy(update={"move": move.model_copy(update={"phase": MovePhase.freezing})})
    assert not copies(frozen) and linked(frozen)
    assert not copies(pooled.model_copy(update={"move": move.model_copy(update={"to_stack": "t1.k1"})}))
    assert not copies(pooled.model_copy(update={"move": move.model_copy(update={"from_tier": Tier.dedicated})}))


def test_a_committed_cell_not_applied_yet_is_passed_over_unless_forced(tmp_path: Path, registry: RegistryWriter):
    """Off the sandbox `ensure_cell` refuses a cell with no outputs (`cell add --write-only`,
    not merged yet): placement goes on to the next cell; a tenant forced there gets the refusal."""
    ws = workspace(tmp_path, registry, [CellSpec(name="eua", region="eu-west-1", account_role_arn=ROLE_A),
                                        CellSpec(name="new", region="eu-west-1")])
    registry.reserve_slot("eua", Tier.pooled, cap=None)  # "new" is the least loaded

    def ensure_cell(name: str) -> dict:
        if name == "new":
            raise TargetUnavailable("cell 'new' has no platform outputs on this target")
        return {}

    ws.ensure_cell = ensure_cell
    # A preview's choice (no slot taken) passes over it too: "eua" recorded no fingerprint, its outputs say it is up.
    ws.is_sandbox, ws.cell_outputs = False, lambda name: {} if name == "new" else {"bucket": "b"}
    assert choose(ws, TenantSpec(id="t0", region="eu-west-1"), None).cell == "eua"
    spec, placement = place(ws, TenantSpec(id="t1", region="eu-west-1"), None)
    assert placement.cell == "eua" and spec.cell == "eua"
    with pytest.raises(TargetUnavailable, match="no platform outputs"):
        place(ws, TenantSpec(id="t2", region="eu-west-1", cell="new"), None)
    registry.set_draining("eua", True)  # no other cell: the region is refused, naming why for each
    with pytest.raises(QuotaExceeded) as refused:
        place(ws, TenantSpec(id="t3", region="eu-west-1"), None)
    assert "cell new: not applied yet (`tenantctl apply` or `tenantctl cell add new` applies it)" in str(refused.value)
    registry.set_draining("eua", False)
    registry.set_applied("eua", "f" * 64)  # an up recorded: no outputs read (a Pulumi CLI call on AWS)
    ws.cell_outputs = lambda name: {} if name == "new" else pytest.fail(f"{name}'s outputs read")
    assert choose(ws, TenantSpec(id="t4", region="eu-west-1"), None).cell == "eua"
    ws.is_sandbox = True  # there the provision applies it first: the preview names it
    assert choose(ws, TenantSpec(id="t5", region="eu-west-1"), None).cell == "new"


def test_an_existing_tenant_stays_in_its_cell_and_region(tmp_path: Path, registry: RegistryWriter):
    ws = workspace(tmp_path, registry, [CellSpec(name="eua", region="eu-west-1", account_role_arn=ROLE_A)])
    record = TenantRecord(tenant_id="acme", tier=Tier.pooled, status=TenantStatus.active, region="eu-west-1",
                          cell="eua", account_id="222222222222")
    spec, placement = place(ws, TenantSpec(id="acme", region="eu-west-1"), record)
    assert (spec.cell, placement.cell, placement.record) == ("eua", "eua", None)  # no second slot
    with pytest.raises(InvalidInput, match="does not change cells in place"):
        place(ws, TenantSpec(id="acme", region="eu-west-1", cell="default"), record)
    with pytest.raises(InvalidInput, match="residency"):
        place(ws, TenantSpec(id="acme", region="us-east-1"), record)


def test_a_preview_refuses_what_placement_would_and_a_forced_cells_refusal_names_only_it(
        tmp_path: Path, registry: RegistryWriter):
    ws = workspace(tmp_path, registry, [CellSpec(name="apa", region="ap-south-1", max_pooled_tenants=1),
                                        CellSpec(name="apb", region="ap-south-1", max_pooled_tenants=1),
                                        CellSpec(name="apx", region="ap-south-1", tiers=[Tier.dedicated])])
    assert place(ws, TenantSpec(id="t0", region="ap-south-1"), None)[1].cell == "apa"  # the first of two empty
    # The preview passes over the full cell, as the run does.
    assert choose(ws, TenantSpec(id="t1", region="ap-south-1"), None).cell == "apb"
    with pytest.raises(QuotaExceeded) as forced:
        choose(ws, TenantSpec(id="t1", region="ap-south-1", cell="apa"), None)
    with pytest.raises(QuotaExceeded) as forced_run:
        place(ws, TenantSpec(id="t1", region="ap-south-1", cell="apa"), None)
    for refusal in (forced.value, forced_run.value):
        assert "cell apa cannot take it (cell apa: 1 of 1 pooled tenants placed" in str(refusal)
        assert "apb" not in str(refusal) and "None" not in str(refusal)
    assert place(ws, TenantSpec(id="t1", region="ap-south-1"), None)[1].cell == "apb"
    for attempt in (choose, lambda *a: place(*a)[0]):  # both full now: one refusal, each cell's reason
        with pytest.raises(QuotaExceeded) as full:
            attempt(ws, TenantSpec(id="t2", region="ap-south-1"), None)
        assert "no cell in ap-south-1 can take it" in str(full.value)
        assert sorted(full.value.details) == ["cell apa: 1 of 1 pooled tenants placed (max_pooled_tenants: schemas "
                                              "per PostgreSQL)", "cell apb: 1 of 1 pooled tenants placed "
                                              "(max_pooled_tenants: schemas per PostgreSQL)",
                                              "cell apx: it takes dedicated tenants, not pooled"]
    registry.set_draining("apx", True)  # the counter's flag, whatever the file says
    with pytest.raises(QuotaExceeded, match=r"cell apx cannot take it \(cell apx: draining\)"):
        choose(ws, TenantSpec(id="t3", region="ap-south-1", tier=Tier.dedicated, cell="apx"), None)
    # An existing tenant: the spec names another cell or region, refused as the run refuses it.
    record = TenantRecord(tenant_id="t0", tier=Tier.pooled, status=TenantStatus.active, region="ap-south-1",
                          cell="apa")
    assert choose(ws, TenantSpec(id="t0", region="ap-south-1"), record).cell == "apa"
    with pytest.raises(InvalidInput, match="tenantctl move t0 --cell apb"):
        choose(ws, TenantSpec(id="t0", region="ap-south-1", cell="apb"), record)
    with pytest.raises(InvalidInput, match="region never changes in place"):
        choose(ws, TenantSpec(id="t0", region="us-west-2"), record)


def test_a_draining_cells_refusal_says_to_undrain_it_or_place_elsewhere_not_to_free_capacity(
        tmp_path: Path, registry: RegistryWriter):
    ws = workspace(tmp_path, registry, [CellSpec(name="sga", region="ap-southeast-1", draining=True),
                                        CellSpec(name="sgb", region="ap-southeast-1", max_pooled_tenants=1)])
    registry.set_draining("sgb", True)  # the counter's flag, whatever the file says
    for attempt in (choose, lambda *a: place(*a)[0]):
        with pytest.raises(QuotaExceeded) as drained:
            attempt(ws, TenantSpec(id="t0", region="ap-southeast-1"), None)
        said = str(drained.value)
        assert "free capacity" not in said, said
        assert "`tenantctl cell drain sga --undo`" in said and "`tenantctl cell drain sgb --undo`" in said, said
        assert "another cell" in said and "tenantctl cell add NAME --region ap-southeast-1" in said, said
        assert drained.value.exit_code == 11
    registry.set_draining("sgb", False)
    registry.reserve_slot("sgb", Tier.pooled, cap=None)  # one draining, one full: each its own remedy
    with pytest.raises(QuotaExceeded) as mixed:
        choose(ws, TenantSpec(id="t1", region="ap-southeast-1"), None)
    assert "`tenantctl cell drain sga --undo`" in str(mixed.value) and "free capacity" in str(mixed.value)
    assert "cell drain sgb" not in str(mixed.value)


def test_a_region_no_partition_has_is_refused_as_input_not_as_a_full_region(tmp_path: Path,
                                                                            registry: RegistryWriter):
    ws = workspace(tmp_path, registry, [])
    with pytest.raises(InvalidInput, match="'zz-nowhere-1': no AWS partition has it") as typo:
        place(ws, TenantSpec(id="t0", region="zz-nowhere-1"), None)
    assert typo.value.rule == "region"
    with pytest.raises(QuotaExceeded, match="sa-east-1 has no cell; add a cell: `tenantctl cell add NAME "
                                            "--region sa-east-1`") as empty:
        choose(ws, TenantSpec(id="t0", region="sa-east-1"), None)
    assert "free capacity" not in str(empty.value)


def test_a_cell_file_naming_another_region_or_account_than_its_deployment_is_refused(
        tmp_path: Path, registry: RegistryWriter):
    deployed = {"bucket": "b", "region": "eu-west-1", "account_id": "222222222222"}
    same = CellSpec(name="eua", region="eu-west-1", account_role_arn=ROLE_A)
    assert relocation(same, deployed, "111111111111") is None
    assert relocation(same.model_copy(update={"region": "us-west-2"}), {}, "111111111111") is None  # not deployed
    moved = relocation(same.model_copy(update={"region": "us-west-2"}), deployed, "111111111111")
    assert moved.startswith("the stack file of cell 'eua' names region us-west-2 (deployed in eu-west-1): a cell's "
                            "region and account never change")
    # No role: the target's own account, which is not where it was deployed.
    assert "account 111111111111 (deployed in 222222222222)" in relocation(
        CellSpec(name="eua", region="eu-west-1"), deployed, "111111111111")
    assert relocation(CellSpec(name="eua", region="eu-west-1"), {**deployed, "account_id": "111111111111"},
                      "111111111111") is None
    # Placement refuses the cell, whatever its room.
    ws = workspace(tmp_path, registry, [same.model_copy(update={"region": "us-west-2"})])
    ws.ensure_cell = lambda name: deployed
    with pytest.raises(InvalidInput, match="names region us-west-2 \\(deployed in eu-west-1\\)"):
        place(ws, TenantSpec(id="t0", region="us-west-2"), None)
    assert registry.cell_counts(["eua"])["eua"] is None  # no slot taken


def test_a_service_specific_endpoint_wins_over_the_targets(monkeypatch):
    clients = Clients(region="us-east-1", endpoint_url="http://127.0.0.1:1", credentials=("x", "x"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:2")
    assert clients("dynamodb").meta.endpoint_url == "http://127.0.0.1:2"
    assert clients("s3").meta.endpoint_url == "http://127.0.0.1:1"
    assert clients.in_account(None, "eu-west-1")("dynamodb").meta.endpoint_url == "http://127.0.0.1:2"


def test_a_moves_record_and_its_target_slot_are_written_together_or_not_at_all(registry: RegistryWriter):
    """``save_taking_slot``: a full or draining cell writes neither the record nor the counter (None); a
    record changed meanwhile neither (Conflict); otherwise both, in one transaction. ``save_giving_slot``
    gives the slot back with the record write ending the move, or neither."""
    put_record(registry, "t1")
    record = registry.require("t1")
    store = StoreConnection(endpoint="h", port=5432, database="d", schema_name="s", role="r", secret_arn="a")
    move = TenantMove(from_tier=Tier.pooled, to_tier=Tier.pooled, from_cell="default", to_cell="eu1", old_store=store)
    assert registry.reserve_slot("eu1", Tier.pooled, cap=1)
    assert registry.save_taking_slot(record, "eu1", Tier.pooled, 1, move=move) is None  # full
    assert registry.require("t1") == record and registry.cell_counts(["eu1"])["eu1"][0]["pooled"] == 1
    registry.set_draining("eu1", True)
    assert registry.save_taking_slot(record, "eu1", Tier.pooled, 2, move=move) is None  # draining
    registry.set_draining("eu1", False)
    with pytest.raises(Conflict, match="changed in the registry"):
        registry.save_taking_slot(record.model_copy(update={"version": record.version - 1}), "eu1", Tier.pooled, 2,
                                  move=move)
    assert registry.require("t1") == record and registry.cell_counts(["eu1"])["eu1"][0]["pooled"] == 1
    saved = registry.save_taking_slot(record, "eu1", Tier.pooled, 2, move=move)
    assert saved is not None and saved.move == move and registry.require("t1") == saved
    assert registry.cell_counts(["eu1"])["eu1"][0]["pooled"] == 2
    # ``save_giving_slot``, the write ending it (here a rollback: the target's slot): a record changed
    # meanwhile writes neither; otherwise both, and the counter is what a recount of the records says.
    with pytest.raises(Conflict, match="changed in the registry"):
        registry.save_giving_slot(record, "eu1", Tier.pooled, move=None)
    assert registry.require("t1") == saved and registry.cell_counts(["eu1"])["eu1"][0]["pooled"] == 2
    ended = registry.save_giving_slot(saved, "eu1", Tier.pooled, move=None)
    assert ended.move is None and registry.require("t1") == ended
    assert registry.cell_counts(["eu1"])["eu1"][0]["pooled"] == 1  # the one ``reserve_slot`` took above


def test_a_new_tenants_record_and_its_slot_are_written_together_or_not_at_all(registry: RegistryWriter):
    """``acquire_new``: a full or draining cell writes neither the record nor the counter (None); a
    record there already neither (Conflict); otherwise both, in one transaction (the counter made first
    from a recount when the cell has none)."""
    spec = TenantSpec(id="t1", cell="eu1")
    assert registry.reserve_slot("eu1", Tier.pooled, cap=1)
    assert registry.acquire_new(spec, "provision", None, cap=1) is None  # full
    assert registry.get("t1") is None and registry.cell_counts(["eu1"])["eu1"][0]["pooled"] == 1
    registry.set_draining("eu1", True)
    assert registry.acquire_new(spec, "provision", None, cap=2) is None  # draining
    registry.set_draining("eu1", False)
    put_record(registry, "t2", cell="eu1")
    with pytest.raises(Conflict, match="being provisioned by another run"):
        registry.acquire_new(TenantSpec(id="t2", cell="eu1"), "provision", None, cap=2)
    assert registry.cell_counts(["eu1"])["eu1"][0]["pooled"] == 1
    made = registry.acquire_new(spec, "provision", "111111111111", cap=2)
    assert made is not None and made.status is TenantStatus.provisioning and made.lock is not None
    assert registry.get("t1") == made and made.account_id == "111111111111"
    assert registry.cell_counts(["eu1"])["eu1"][0]["pooled"] == 2
    fresh = registry.acquire_new(TenantSpec(id="t3", cell="eu2"), "provision", None, cap=None)  # no counter yet
    assert fresh is not None and registry.cell_counts(["eu2"])["eu2"][0] == registry.recount("eu2")


def test_a_withdrawn_reservation_gives_its_slot_back_in_the_same_transaction(registry: RegistryWriter):
    """``withdraw``: a refused provision's new record (version 1) is deleted with its slot given back in
    one transaction; a record that moved on is kept with its slot (False); a counter at 0 gives nothing
    back and the record is deleted alone."""
    made = registry.acquire_new(TenantSpec(id="t1", cell="eu1"), "provision", None, cap=2)
    assert registry.cell_counts(["eu1"])["eu1"][0]["pooled"] == 1
    assert not registry.withdraw(registry.save(made, last_error="moved on"))  # version 2: kept
    assert registry.get("t1") is not None and registry.cell_counts(["eu1"])["eu1"][0]["pooled"] == 1
    fresh = registry.acquire_new(TenantSpec(id="t2", cell="eu1"), "provision", None, cap=2)
    assert registry.withdraw(fresh)
    assert registry.get("t2") is None and registry.cell_counts(["eu1"])["eu1"][0] == registry.recount("eu1")
    again = registry.acquire_new(TenantSpec(id="t3", cell="eu2"), "provision", None, cap=2)
    registry.set_counts("eu2", {"pooled": 0, "dedicated": 0})  # a counter reset below its records
    assert registry.withdraw(again) and registry.get("t3") is None
    assert registry.cell_counts(["eu2"])["eu2"][0]["pooled"] == 0


def test_a_revive_takes_its_slot_with_the_tombstones_lock_and_gives_it_back_with_its_mark(registry: RegistryWriter):
    """``lock_reviving``: a full cell writes neither the lock nor the counter (None); otherwise both in
    one transaction, the tombstone marked ``reviving`` and counted by the recount; a marked one (a killed
    revive's, unlocked) is only locked again. ``give_back_revive_slot``: the slot and the mark go
    together; a tenant brought back (the mark dropped with the tombstone) gives nothing back."""
    put_record(registry, "gone", cell="eu1", status=TenantStatus.deprovisioned)
    assert registry.reserve_slot("eu1", Tier.pooled, cap=1)  # another tenant's, made from a recount of 0
    tomb = registry.require("gone")
    assert registry.lock_reviving(tomb, "drill-restore", cap=1) is None  # full
    assert registry.require("gone") == tomb and registry.cell_counts(["eu1"])["eu1"][0]["pooled"] == 1
    locked = registry.lock_reviving(tomb, "drill-restore", cap=2)
    assert locked is not None and locked.reviving and locked.lock is not None
    assert registry.cell_counts(["eu1"])["eu1"][0]["pooled"] == 2 and registry.recount("eu1")["pooled"] == 1
    unlocked = registry.release(locked)
    assert unlocked.reviving and registry.lock_reviving(unlocked, "drill-restore", cap=2) is not None  # cap unread
    assert registry.cell_counts(["eu1"])["eu1"][0]["pooled"] == 2
    registry.release(registry.require("gone"))
    registry.give_back_revive_slot("gone")
    assert not registry.require("gone").reviving and registry.cell_counts(["eu1"])["eu1"][0]["pooled"] == 1
    registry.give_back_revive_slot("gone")  # nothing marked: nothing given back
    assert registry.cell_counts(["eu1"])["eu1"][0]["pooled"] == 1
    back = registry.save(registry.lock_reviving(registry.require("gone"), "drill-restore", cap=2),
                         status=TenantStatus.active, lock=None)
    assert not back.reviving and registry.recount("eu1")["pooled"] == 1
    registry.give_back_revive_slot("gone")
    assert registry.cell_counts(["eu1"])["eu1"][0]["pooled"] == 2


def dead_lock(operation: str = "drill-restore") -> TenantLock:
    """The lock of a run killed on this host: its pid gone."""
    import socket
    import subprocess

    ended = subprocess.Popen(["true"])
    ended.wait()
    return TenantLock(operation=operation, owner="o", host=socket.gethostname(), pid=ended.pid)


def test_a_killed_revive_is_taken_over_by_its_rerun_or_given_up_by_unlock(registry: RegistryWriter, monkeypatch):
    """A killed revive leaves its tombstone marked (holding its slot) and locked by a dead run. Its re-run
    takes the dead lock over, as provision and move do, without a second slot; a live holder refuses it
    (exit 5, naming it). `unlock` (a dead holder's, or --force) clears the lock and gives the slot back
    with the mark in one transaction: the counter equals the recount, and `cell remove` no longer finds
    the tenant (nor a stray count). A revive's give-back from the record it last wrote reads nothing."""
    import os

    from tenantctl.errors import Locked
    from tenantctl.operations.cell_remove import _counted_without_record, holds
    from tenantctl.registry import new_lock

    def counted() -> dict[str, int]:
        return registry.cell_counts(["eu1"])["eu1"][0]

    def killed() -> TenantRecord:  # as a revive killed after its first write leaves the tombstone
        locked = registry.lock_reviving(registry.require("gone"), "drill-restore", cap=2)
        return registry.save(locked, lock=dead_lock())

    put_record(registry, "gone", cell="eu1", status=TenantStatus.deprovisioned)
    tomb = killed()
    assert counted() == registry.recount("eu1") and counted()["pooled"] == 1
    live = registry.save(tomb, lock=new_lock("drill-restore"))
    with pytest.raises(Locked, match=f"pid {os.getpid()}") as err:
        registry.lock_reviving(live, "drill-restore", cap=None)
    assert err.value.exit_code == 5
    again = registry.lock_reviving(registry.save(live, lock=dead_lock()), "drill-restore", cap=None)
    assert again.lock.pid == os.getpid() and again.reviving and counted()["pooled"] == 1  # taken over
    given_up = registry.clear_dead_lock(registry.save(again, lock=dead_lock()), abandon=True)
    assert given_up.lock is None and not given_up.reviving and "interrupted" in given_up.last_error
    assert counted() == registry.recount("eu1") and counted()["pooled"] == 0
    found = holds(registry, CellSpec(name="eu1", region="us-east-1"), None, utcnow())
    assert found == [] and _counted_without_record(registry, "eu1", found) is None
    elsewhere = registry.save(killed(), lock=dead_lock().model_copy(update={"host": "another-host"}))
    assert counted()["pooled"] == 1 and elsewhere.reviving
    forced = registry.force_unlock("gone")
    assert forced.lock is None and not forced.reviving and counted() == registry.recount("eu1")
    back = registry.save(registry.lock_reviving(forced, "drill-restore", cap=2), status=TenantStatus.active,
                         lock=None)
    monkeypatch.setattr(registry, "get", lambda tenant_id: pytest.fail("read"))
    assert registry.give_back_revive_slot("gone", back) == back and counted()["pooled"] == 1


def test_a_tombstone_a_revive_holds_keeps_its_cell_as_a_placed_tenant_not_as_a_stray_count(registry: RegistryWriter):
    """`cell remove` reads a ``reviving`` tombstone as holding its slot (naming the re-run that finishes
    or gives it back), so the counter's slot is no stray count; without the mark the slot is stale."""
    from tenantctl.operations.cell_remove import _counted_without_record, holds

    put_record(registry, "gone", cell="eu1", status=TenantStatus.deprovisioned)
    registry.lock_reviving(registry.require("gone"), "drill-restore", cap=None)
    found = holds(registry, CellSpec(name="eu1", region="us-east-1"), None, utcnow())
    assert [(h.tenant_id, h.kind) for h in found] == [("gone", "placed")]
    assert "being restored in place" in found[0].why and "drill restore gone" in found[0].why
    assert _counted_without_record(registry, "eu1", found) is None
    registry.save(registry.require("gone"), reviving=False, lock=None)  # the mark gone, the slot left: stale
    found = holds(registry, CellSpec(name="eu1", region="us-east-1"), None, utcnow())
    stray = _counted_without_record(registry, "eu1", found)
    assert found == [] and stray is not None and "stale" in stray.why
