"""What `usage | cost | report` compute before anything is measured: which
records, which specs and platform, how many pooled tenants share it, what-if
overrides (a stand-in registry, no sandbox); and the one template environment
escaping HTML pages only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tenantctl.errors import InvalidInput, UsageError
from tenantctl.models import CellSpec, DedicatedSpec, TenantRecord, TenantSpec, TenantStatus, Tier
from tenantctl.operations.apply import Action, ApplySummary, TenantResult
from tenantctl.operations.usage import (
    active_pooled,
    check_selection,
    committed_specs,
    estimate_costs,
    platform_spec,
    selected_records,
    what_if,
)
from tenantctl.stackconfig import write_cell, write_tenant
from tenantctl.templates import _env, render
from tenantctl.usage.cost import GIB, CostInputs, compare_tiers, estimate, load_prices


def record(tenant_id: str, status: TenantStatus = TenantStatus.active, tier: Tier = Tier.pooled) -> TenantRecord:
    return TenantRecord(tenant_id=tenant_id, tier=tier, status=status, region="us-east-1")


class Registry:
    """The registry calls the operations make, answered from a list."""

    def __init__(self, records: list[TenantRecord]) -> None:
        self.records = records
        self.calls: list[tuple] = []

    def require(self, tenant_id: str) -> TenantRecord:
        self.calls.append(("require", tenant_id))
        return next(r for r in self.records if r.tenant_id == tenant_id)

    def iter_all(self, tier: Tier | None = None, status: TenantStatus | None = None, cell: str | None = None):
        self.calls.append(("iter_all", tier, status))
        return iter([r for r in self.records if (tier is None or r.tier is tier)
                     and (status is None or r.status is status) and (cell is None or r.cell == cell)])


@pytest.fixture
def ws(tmp_path):
    (tmp_path / "stacks").mkdir()
    return SimpleNamespace(stacks_dir=tmp_path / "stacks", registry=Registry([
        record("acme"), record("beta", TenantStatus.suspended), record("gone", TenantStatus.deprovisioned),
        record("mid", TenantStatus.provisioning), record("big", tier=Tier.dedicated),
    ]))


@pytest.mark.parametrize("tenant_id, all_, says", [(None, False, "Missing argument 'ID'"),
                                                    ("acme", True, "'--all' cannot be used with a tenant id")])
def test_exactly_one_of_a_tenant_and_all_is_a_usage_error(tenant_id, all_, says):
    with pytest.raises(UsageError, match=says) as refused:
        check_selection(tenant_id, all_)
    assert refused.value.exit_code == 2


@pytest.mark.parametrize("tier, cell, named", [(Tier.dedicated, None, "--tier selects"),
                                               (None, "eu", "--cell selects"),
                                               (Tier.pooled, "eu", "--tier and --cell select")])
def test_filters_of_all_beside_a_tenant_id_are_refused_not_ignored(tier, cell, named):
    with pytest.raises(UsageError, match=f"{named} tenants with --all, not with a tenant id") as refused:
        check_selection("acme", False, tier, cell)
    assert refused.value.exit_code == 2
    check_selection(None, True, tier, cell)  # what they are for


def test_all_selects_active_and_suspended_a_named_tenant_whatever_its_status(ws):
    assert [r.tenant_id for r in selected_records(ws, None)] == ["acme", "beta", "big"]
    assert [r.tenant_id for r in selected_records(ws, None, Tier.pooled)] == ["acme", "beta"]
    assert [r.tenant_id for r in selected_records(ws, "gone")] == ["gone"]


def test_active_pooled_counts_each_cell_in_one_scan(ws):
    """... the pooled tenants `cost --all` prices, suspended ones too (each pays a share:
    counted apart, the shares would add up to more than the platform costs)."""
    ws.registry.records.append(record("eu").model_copy(update={"cell": "eu1"}))
    assert active_pooled(ws) == {"default": 2, "eu1": 1}
    assert sum(active_pooled(ws).values()) == len(selected_records(ws, None, Tier.pooled))
    assert [c[:2] for c in ws.registry.calls if c[0] == "iter_all"][0] == ("iter_all", Tier.pooled)


def test_specs_and_platform_come_from_the_committed_stack_files(ws):
    assert platform_spec(ws) == CellSpec()
    committed = CellSpec(db_instance_class="db.t4g.large", db_storage_gb=200)
    write_cell(ws.stacks_dir, committed)
    assert platform_spec(ws) == committed
    big = TenantSpec(id="big", tier=Tier.dedicated, dedicated=DedicatedSpec(instance_class="db.t4g.small"))
    write_tenant(ws.stacks_dir, big)
    records = [record("big"), record("acme")]
    assert committed_specs(ws, records) == {"big": big}
    # A tenant whose record names its stack of another key generation is priced from that stack's file.
    moved = big.model_copy(update={"region": "eu-west-1"})
    write_tenant(ws.stacks_dir, moved, stack="big.k1")
    records[0] = records[0].model_copy(update={"stack": "big.k1"})
    assert committed_specs(ws, records) == {"big": moved}


def test_what_if_replaces_only_what_is_given():
    base = CostInputs(tenant_id="acme", tier=Tier.pooled, db_bytes=5, s3_bytes_by_class={"GLACIER": 7})
    assert what_if(base) == base
    assert what_if(base, db_gb=2).db_bytes == 2 * GIB and what_if(base, db_gb=2).s3_bytes_by_class == {"GLACIER": 7}
    assert what_if(base, s3_gb=1.5) == base.model_copy(update={"s3_bytes_by_class": {"STANDARD": int(1.5 * GIB)}})


def test_a_hypothetical_tenant_is_priced_without_measuring(ws):
    prices = load_prices()
    out = estimate_costs(ws, prices, db_gb=40, s3_gb=200, tier=Tier.dedicated, pooled_tenants=12)
    inputs = CostInputs(tenant_id="what-if", tier=Tier.dedicated, db_bytes=40 * GIB,
                        s3_bytes_by_class={"STANDARD": 200 * GIB})
    assert [(t.estimate, t.comparison) for t in out.tenants] == [
        (estimate(inputs, prices, CellSpec(), 12), compare_tiers(inputs, prices, CellSpec(), 12))]
    assert ws.registry.calls == []  # --pooled-tenants given: the registry is not read
    assert any("12 pooled tenant(s)" in a for a in out.assumptions)


def test_a_hypothetical_tenant_shares_the_platform_with_at_least_itself(ws):
    ws.registry.records = []
    out = estimate_costs(ws, load_prices(), db_gb=1)
    assert out.tenants[0].estimate.tier is Tier.pooled
    assert any("split over 1 pooled tenant(s)" in a for a in out.assumptions)


def test_a_what_if_tenant_joins_its_cell_whichever_tier_it_is_priced_as(ws):
    # acme (active) and beta (suspended) are the default cell's pooled tenants: a hypothetical pooled tenant
    # makes three, as the "if pooled" of the same tenant priced dedicated does.
    prices = load_prices()
    as_pooled = estimate_costs(ws, prices, db_gb=5, tier=Tier.pooled).tenants[0]
    as_dedicated = estimate_costs(ws, prices, db_gb=5, tier=Tier.dedicated).tenants[0]
    assert as_pooled.comparison.pooled == as_dedicated.comparison.pooled == as_pooled.estimate.total
    inputs = CostInputs(tenant_id="what-if", tier=Tier.pooled, db_bytes=5 * GIB)
    assert as_pooled.estimate == estimate(inputs, prices, CellSpec(), 3)
    assert any("split over 3 pooled tenant(s)" in a for a in estimate_costs(ws, prices, db_gb=5).assumptions)


def test_cost_needs_a_tenant_all_or_a_what_if(ws):
    with pytest.raises(InvalidInput, match="what-if usage"):
        estimate_costs(ws, load_prices())


def test_only_html_templates_are_escaped():
    env = _env()
    assert env.autoescape("report.html.j2") is True
    assert not any(env.autoescape(name) for name in ("stack.yaml.j2", "tenant_schema.sql.j2", "drill_report.md.j2"))
    assert env.from_string("{{ x }}").render(x="<a & b>") == "<a & b>"
    failed = TenantResult(tenant_id="acme", action=Action.update, ok=False, error="quota <5> & more")
    markdown = render("apply_summary.md.j2", summary=ApplySummary(preview=False, shard="1/1", seconds=1.0,
                                                                   results=[failed]))
    assert "quota <5> & more" in markdown


def moving_acme(ws, monkeypatch, switched: bool) -> list[tuple[str, str, str]]:
    """acme moving pooled in eu1 -> dedicated in euc (stack acme.k1), before or after
    the switch, each stack measured where it is: the (cell, region, bucket) measured."""
    from runtime_fixtures import record as applied

    from tenant_runtime.models import MovePhase, TenantMove
    from tenantctl.operations import usage as usage_ops
    from tenantctl.usage.measure import DbUsage, TenantUsage

    old = applied("acme").resources.model_copy(update={"region": "eu-west-1"})
    new = old.model_copy(update={"tier": Tier.dedicated, "region": "eu-central-1", "bucket": "euc-bucket"})
    move = TenantMove(from_tier=Tier.pooled, to_tier=Tier.dedicated, from_cell="eu1", to_cell="euc",
                      phase=MovePhase.switched if switched else MovePhase.copying, old_store=old.store,
                      to_stack="acme.k1", from_stack="acme")
    serving = {"tier": Tier.dedicated, "cell": "euc", "region": "eu-central-1", "resources": new, "stack": "acme.k1"}
    moving = TenantRecord(tenant_id="acme", tier=Tier.pooled, status=TenantStatus.active, region="eu-west-1",
                          cell="eu1", resources=old, move=move)
    moving = moving.model_copy(update=serving) if switched else moving
    ws.registry = Registry([moving, record("other").model_copy(update={"cell": "eu1"})])
    ws.engine = SimpleNamespace(outputs=lambda stack: {"acme": old, "acme.k1": new}[stack].model_dump(mode="json"))
    write_tenant(ws.stacks_dir, TenantSpec(id="acme", region="eu-west-1", cell="eu1"))
    write_tenant(ws.stacks_dir, TenantSpec(id="acme", region="eu-central-1", cell="euc", tier=Tier.dedicated,
                                           dedicated=DedicatedSpec(instance_class="db.m6g.large")), stack="acme.k1")
    measured: list[tuple[str, str, str]] = []

    def measure(rec, clients, idle_days=30, listed=None):
        measured.append((rec.cell, rec.region, rec.resources.bucket))
        return TenantUsage(tenant_id=rec.tenant_id, tier=rec.tier, status=rec.status, measured_at=rec.created_at,
                           idle_days=idle_days, db=DbUsage(scope="schema", size_bytes=GIB, rows=dict.fromkeys(
                               ("conversations", "messages", "context_items"), 0)))

    monkeypatch.setattr(usage_ops, "measure", measure)
    monkeypatch.setattr("tenantctl.usage.measure.clients_from_workspace", lambda _ws, rec: f"clients of {rec.cell}")
    monkeypatch.setattr(usage_ops, "_hibernated", lambda _ws, _rec: False)
    return measured


@pytest.mark.parametrize("switched", [False, True])
def test_a_tenant_moving_to_another_account_or_region_is_priced_for_both_stacks(ws, monkeypatch, switched):
    """Pooled in eu1 -> dedicated in euc (stack acme.k1): before and after the
    switch both stacks exist and are billed; each row is measured where its
    stack is, priced with its cell and spec, and says which stack it is."""
    measured = moving_acme(ws, monkeypatch, switched)
    out = estimate_costs(ws, prices := load_prices(), "acme")
    rows = {t.move.side: t for t in out.tenants}
    assert [t.move.side for t in out.tenants] == (["to", "from"] if switched else ["from", "to"])  # serving first
    assert (rows["from"].move.serving, rows["to"].move.serving) == (not switched, switched)
    assert sorted(measured) == [("eu1", "eu-west-1", "shared"), ("euc", "eu-central-1", "euc-bucket")]
    assert (rows["from"].estimate.tier, rows["to"].estimate.tier) == (Tier.pooled, Tier.dedicated)
    assert "db.m6g.large" in next(line.detail for line in rows["to"].estimate.lines if line.item == "RDS instance")
    # The pooled stack shares eu1 with `other` and itself (after the switch the registry counts it in euc).
    pooled = CostInputs(tenant_id="acme", tier=Tier.pooled, db_bytes=GIB)
    assert rows["from"].estimate.total == estimate(pooled, prices, CellSpec(name="eu1"), 2).total
    assert (rows["to"].hibernation is not None) is switched  # a dedicated stack's hibernation: the serving one's
    assert rows["from"].label() == ("acme (stack acme, the one the move leaves: "
                                    + ("kept until --finalize)" if switched else "serving until the switch)"))
    assert rows["to"].label() == "acme (stack acme.k1, the move's target: " + (
        "serving)" if switched else "serving from the switch)")


def test_cost_of_one_cell_splits_another_cells_platform_over_all_of_that_cells_tenants(ws, monkeypatch):
    """`cost --all --cell euc` reads euc's tenants only; acme, switched to euc, still has its pooled
    stack in eu1, priced with eu1's platform: split over eu1's two (other, and acme's old stack), not
    over the one row of eu1 this listing happened to hold."""
    moving_acme(ws, monkeypatch, switched=True)
    ws.cell = lambda name: CellSpec(name=name)
    prices = load_prices()
    rows = {t.move.side: t for t in estimate_costs(ws, prices, all_=True, cell="euc").tenants}
    pooled = CostInputs(tenant_id="acme", tier=Tier.pooled, db_bytes=GIB)
    assert rows["from"].estimate.total == estimate(pooled, prices, CellSpec(name="eu1"), 2).total


def test_cost_all_reads_each_stack_file_once_and_each_cell_file_once(ws, monkeypatch):
    """Pricing after the measurement is this process's own work, per tenant: a committed spec
    parsed again per row or per estimate would be paid a thousand times over on a fleet."""
    from runtime_fixtures import record as applied

    from tenantctl import stackconfig

    moving_acme(ws, monkeypatch, switched=False)
    other = applied("other").model_copy(update={"cell": "eu1"})
    ws.registry.records[1] = other
    write_tenant(ws.stacks_dir, TenantSpec(id="other", region=other.region, cell="eu1"))
    write_cell(ws.stacks_dir, CellSpec(name="eu1"))
    write_cell(ws.stacks_dir, CellSpec(name="euc"))
    parsed = []
    real = stackconfig.load_yaml
    monkeypatch.setattr(stackconfig, "load_yaml", lambda text: parsed.append(text) or real(text))
    stackconfig._CELLS.clear()  # cell specs are kept by file text: parsed once per process, not per run
    out = estimate_costs(ws, load_prices(), all_=True)
    assert len(out.tenants) == 3  # acme's two stacks, other
    files = sorted(stackconfig.stack_file(ws.stacks_dir, s).read_text() for s in
                   ("acme", "acme.k1", "other", stackconfig.cell_stack("eu1"), stackconfig.cell_stack("euc")))
    assert sorted(parsed) == files


@pytest.mark.parametrize("switched", [False, True])
def test_the_report_shows_both_stacks_of_an_open_move_as_cost_does(ws, monkeypatch, switched):
    from markupsafe import escape

    from tenantctl.operations.usage import report_data
    from tenantctl.usage.html_report import DrillVerdict, render_html

    moving_acme(ws, monkeypatch, switched)
    prices, drilled = load_prices(), [DrillVerdict(drill="restore", verdict="pass")]
    data = report_data(ws, prices, selected_records(ws, "acme"), drills={"acme": drilled})
    priced = estimate_costs(ws, prices, "acme").tenants
    assert [(r.label, r.cost.total) for r in data.rows] == [(t.label(), t.estimate.total) for t in priced]
    assert [r.drills for r in data.rows] == [drilled, []]  # the serving stack's, once
    html = render_html(data)
    assert all(str(escape(t.label())) in html for t in priced) and "1 tenant(s)" in html


def test_a_move_whose_other_stack_is_not_built_prices_the_serving_one_alone(ws, monkeypatch):
    from runtime_fixtures import record as applied

    from tenant_runtime.models import MovePhase, TenantMove
    from tenantctl.operations.usage import move_sides

    rec = applied("acme").model_copy(update={"move": TenantMove(
        from_tier=Tier.pooled, to_tier=Tier.pooled, from_cell="eu1", to_cell="euc", phase=MovePhase.preparing,
        old_store=applied("acme").resources.store, to_stack="acme.k1", from_stack="acme")})
    ws.engine = SimpleNamespace(outputs=lambda stack: {})
    here, other, there = move_sides(ws, rec)
    assert (here.stack, here.side, here.serving, other, there) == ("acme", "from", True, None, None)
    assert move_sides(ws, applied("acme")) == (None, None, None)  # no move: nothing to tell apart


def test_the_report_makes_each_cells_clients_once(ws, monkeypatch, tmp_path):
    """The drill history's reads and the measurement of both stacks of a move
    share one set of clients per cell (each set is a handful of boto3 clients)."""
    from tenantctl.operations import usage as usage_ops

    moving_acme(ws, monkeypatch, switched=False)
    ws.registry.records = ws.registry.records[:1]  # acme alone
    made: list[str] = []

    def clients(_ws, rec):
        made.append(rec.cell)
        return SimpleNamespace(s3=f"s3 of {rec.cell}")

    monkeypatch.setattr("tenantctl.usage.measure.clients_from_workspace", clients)  # per_place's
    monkeypatch.setattr(usage_ops, "latest_drill_verdicts", lambda records, s3: {})
    path, data = usage_ops.write_html_report(ws, load_prices(), tmp_path / "report.html")
    assert path.exists() and len(data.rows) == 2  # acme's two stacks
    assert sorted(made) == ["eu1", "euc"]


def test_kept_connections_give_threads_at_once_a_connection_each_and_keep_them():
    """Threads measuring tenants of one store at the same time never share an admin connection (a
    psycopg connection runs one transaction at a time): each gets one of its own, made once and
    handed to the next tenant a thread measures; all closed at the end."""
    import threading

    from tenantctl.models import StoreConnection, TenantResources
    from tenantctl.usage.measure import KeptConnections, UsageClients

    class Conn:
        closed = False

        def close(self) -> None:
            self.closed = True

    made: list[Conn] = []

    def connect(rec):
        made.append(Conn())
        return made[-1]

    store = StoreConnection(endpoint="db", port=5432, database="platform", schema_name="s", secret_arn="arn",
                            role="r")
    resources = TenantResources.model_construct(store=store)
    tenants = [record(f"t{i}").model_copy(update={"resources": resources}) for i in range(4)]
    together = threading.Barrier(4, timeout=5)
    held: list[Conn] = []
    with KeptConnections() as kept:
        shared = kept.wrap(UsageClients(s3=None, sqs=None, admin_connect=connect))

        def measure(rec) -> None:
            with shared.admin_connect(rec) as conn:
                held.append(conn)
                together.wait()  # all four inside at once

        threads = [threading.Thread(target=measure, args=(t,)) for t in tenants]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({id(c) for c in held}) == 4 and len(made) == 4
        for rec in tenants:  # one after another now: the kept ones serve, no new login
            with shared.admin_connect(rec) as conn:
                assert conn in made
        assert len(made) == 4
    assert all(c.closed for c in made)


def test_threads_read_different_admin_secrets_at_once_and_each_secret_once(monkeypatch):
    """Dedicated stores each have their own master secret: threads measuring them read theirs at the
    same time (a read of one does not wait on another's), and a secret two threads need is read once."""
    import threading

    import psycopg

    from tenantctl.models import StoreConnection, TenantResources
    from tenantctl.usage.measure import admin_connector

    reads: list[str] = []
    together = threading.Barrier(2, timeout=2)

    class Secrets:
        def get_secret_value(self, SecretId: str) -> dict:  # noqa: N803 - boto3's name
            reads.append(SecretId)
            if SecretId != "arn:same":
                together.wait()  # both dedicated tenants' reads in flight at once
            return {"SecretString": '{"username": "admin", "password": "pw"}'}

    class Rds:
        def describe_db_instances(self, DBInstanceIdentifier: str) -> dict:  # noqa: N803
            name = "same" if DBInstanceIdentifier.endswith(("c", "d")) else DBInstanceIdentifier
            return {"DBInstances": [{"MasterUserSecret": {"SecretArn": f"arn:{name}"}}]}

    monkeypatch.setattr(psycopg, "connect", lambda **kw: kw)
    connect = admin_connector(Secrets(), "arn:platform", rds=Rds())
    store = StoreConnection(endpoint="db", port=5432, database="d", schema_name="s", secret_arn="arn", role="r")

    def tenant(tid: str) -> TenantRecord:
        return record(tid, tier=Tier.dedicated).model_copy(
            update={"resources": TenantResources.model_construct(store=store)})

    failed: list[BaseException] = []

    def measure(tid: str) -> None:
        try:
            connect(tenant(tid))
        except BaseException as exc:  # noqa: BLE001 - asserted below
            failed.append(exc)

    threads = [threading.Thread(target=measure, args=(tid,)) for tid in ("da", "db", "dc", "dd")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failed == []
    assert sorted(reads) == ["arn:same", "arn:tenantctl-da", "arn:tenantctl-db"], reads


def test_hibernated_instances_are_read_at_once_while_pricing(ws, monkeypatch):
    """A hibernated dedicated tenant's instance state is an RDS call while it is priced: the pricing
    reads them in the fleet pool too, not one after another after the measurement."""
    import threading

    from tenantctl.operations import usage as usage_ops
    from tenantctl.usage.measure import TenantUsage

    ws.registry = Registry([record("d1", tier=Tier.dedicated), record("d2", tier=Tier.dedicated)])
    monkeypatch.setattr("tenantctl.usage.measure.clients_from_workspace", lambda _ws, rec: "clients")
    monkeypatch.setattr(usage_ops, "measure", lambda rec, clients, idle_days=30, listed=None: TenantUsage(
        tenant_id=rec.tenant_id, tier=rec.tier, status=rec.status, measured_at=rec.created_at, idle_days=idle_days))
    together = threading.Barrier(2, timeout=5)
    monkeypatch.setattr(usage_ops, "_hibernated", lambda _ws, rec: together.wait() >= 0)  # both in flight at once
    out = estimate_costs(ws, load_prices(), all_=True, parallel=2)
    assert [(t.estimate.tenant_id, t.hibernation.hibernated) for t in out.tenants] == [("d1", True), ("d2", True)]
