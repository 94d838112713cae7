"""A move's pieces that need no sandbox: the target spec, what the stack
declares while a move is open, the runtime's write freeze and its 503."""

from __future__ import annotations

import asyncio
import json
import re
from contextlib import asynccontextmanager, contextmanager, nullcontext
from datetime import UTC, datetime
from types import SimpleNamespace

import psycopg
import pytest
from infra_mocks import RecordingMocks, platform_outputs, run_program, tenant_config
from runtime_fixtures import Registry, record

from tenant_runtime.asgi import problem
from tenant_runtime.cache import TTLCache
from tenant_runtime.context import from_registry
from tenant_runtime.errors import StoreMoved, WritesFrozen
from tenant_runtime.models import MovePhase, TenantMove
from tenant_runtime.registry import FROZEN_TTL
from tenant_runtime.store import ContextStore
from tenantctl import naming
from tenantctl.errors import Conflict, InvalidInput
from tenantctl.models import TenantSpec, Tier
from tenantctl.operations.move import target_spec
from tenantctl.registry import refusal


def test_target_spec_takes_the_next_store_generation_and_retires_the_current_one():
    spec = TenantSpec(id="acme", owner="team-a")
    up = target_spec(spec, Tier.dedicated)
    assert (up.tier, up.store_generation, up.dedicated is not None) == (Tier.dedicated, 1, True)
    assert (up.retiring.tier, up.retiring.generation, up.retiring.dedicated) == (Tier.pooled, 0, None)
    down = target_spec(up.model_copy(update={"retiring": None}), Tier.pooled)
    assert (down.tier, down.store_generation, down.dedicated) == (Tier.pooled, 2, None)
    assert down.retiring.tier is Tier.dedicated and down.retiring.dedicated == up.dedicated


def test_specs_never_moved_hash_as_before():
    spec = TenantSpec(id="acme")
    assert spec.content_hash() == TenantSpec.model_validate({"id": "acme", "store_generation": 0}).content_hash()
    assert spec.content_hash() != target_spec(spec, Tier.dedicated).content_hash()


def _schemas(mocks):
    return {r.name: r.inputs for r in mocks.resources if r.type == "pulumi-python:dynamic:Resource"
            and r.name.endswith("-schema")}


def test_an_open_move_declares_both_stores_under_different_names_and_neither_owns_the_secret():
    moving = target_spec(TenantSpec(id="acme"), Tier.dedicated)
    mocks = RecordingMocks()
    outputs = run_program("acme", tenant_config(moving.model_dump(mode="json", exclude_none=True)), mocks)
    schemas = _schemas(mocks)
    assert set(schemas) == {"acme-schema", "acme-s1-schema"}  # the pooled store keeps its names: not replaced
    assert not any(inputs["owns_secret"] for inputs in schemas.values())
    assert len(mocks.of_type("aws:rds/instance:Instance")) == 1
    assert outputs["tier"] == "dedicated"  # the outputs are the new store's
    finished = run_program("acme", tenant_config(moving.model_copy(update={"retiring": None}).model_dump(
        mode="json", exclude_none=True)), done := RecordingMocks())
    assert set(_schemas(done)) == {"acme-s1-schema"} and _schemas(done)["acme-s1-schema"]["owns_secret"]
    assert finished["store"] == outputs["store"]


def test_a_move_between_cells_retires_the_store_of_the_old_cell():
    spec = TenantSpec(id="acme", cell="eu1", region="eu-west-1")
    across = target_spec(spec, Tier.pooled, cell="eu2")
    assert (across.cell, across.tier, across.store_generation) == ("eu2", Tier.pooled, 1)
    assert (across.retiring.cell, across.retiring.tier, across.retiring.generation) == ("eu1", Tier.pooled, 0)
    assert target_spec(spec, Tier.dedicated).retiring.cell is None  # within its cell: no cell of its own
    with pytest.raises(ValueError, match="cell"):
        TenantSpec.model_validate({**across.model_dump(mode="json"), "retiring": {"tier": "pooled", "cell": "Bad!"}})


def _cells_ws():
    from tenantctl.models import CellSpec

    def cell(name: str, account: str = "222222222222", region: str = "eu-west-1", **extra) -> CellSpec:
        return CellSpec(name=name, region=region, account_role_arn=f"arn:aws:iam::{account}:role/c", **extra)

    cells = {c.name: c for c in (cell("eu1"), cell("eu2"), cell("other", account="444444444444"),
                                 cell("us", region="us-east-1"), cell("dedicated-only", tiers=[Tier.dedicated]),
                                 cell("euc", region="eu-central-1"))}
    return SimpleNamespace(cells=lambda: cells, cell=cells.__getitem__, cell_outputs=lambda _name: {})


def test_residency_says_which_regions_a_move_may_go_to():
    from tenantctl.models import TenantRecord, TenantStatus
    from tenantctl.operations.move import _refuse_cell

    record = TenantRecord(tenant_id="acme", tier=Tier.pooled, status=TenantStatus.active, region="eu-west-1",
                          cell="eu1")
    spec = TenantSpec(id="acme", region="eu-west-1", cell="eu1", residency=["eu-west-1", "eu-central-1"])
    assert spec.allowed_regions == ["eu-west-1", "eu-central-1"]
    assert TenantSpec(id="acme", region="eu-west-1").allowed_regions == ["eu-west-1"]  # the default: its region
    with pytest.raises(InvalidInput, match=re.escape("must stay in eu-west-1 or eu-central-1 (residency)")):
        _refuse_cell(_cells_ws(), record, spec, Tier.pooled, "us")  # type: ignore[arg-type]
    # Allowed by residency: another region, so the move builds the tenant again there (the keyed path).
    assert _refuse_cell(_cells_ws(), record, spec, Tier.pooled, "euc") is True  # type: ignore[arg-type]
    assert _refuse_cell(_cells_ws(), record, spec, Tier.pooled, "eu2") is False  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not allow the tenant's own region eu-west-1"):
        TenantSpec(id="acme", region="eu-west-1", residency=["eu-central-1"])
    # A spec without residency is written and hashed as before it existed.
    plain = TenantSpec(id="acme", region="eu-west-1")
    assert "residency" not in plain.desired()
    assert plain.content_hash() == TenantSpec(id="acme", region="eu-west-1", residency=[]).content_hash()
    assert spec.content_hash() != plain.content_hash() and spec.desired()["residency"] == spec.residency


@pytest.mark.parametrize("tier,to_cell,refused", [
    (Tier.pooled, "eu2", None),
    (Tier.dedicated, "eu2", None),
    (Tier.pooled, "other", None),  # another account: the keyed path's own refusals follow
    (Tier.pooled, "us", "it is in us-east-1, the tenant's data must stay in eu-west-1 (residency)"),
    (Tier.pooled, "dedicated-only", "it takes dedicated tenants, not pooled"),
    (Tier.pooled, "nowhere", "--cell nowhere: no such cell"),
])
@pytest.mark.parametrize("from_tier", [Tier.pooled, Tier.dedicated])
def test_a_target_cell_is_known_within_residency_and_takes_the_tier(from_tier, tier, to_cell, refused):
    from tenantctl.models import TenantRecord, TenantStatus
    from tenantctl.operations.move import _refuse_cell

    ws = _cells_ws()
    record = TenantRecord(tenant_id="acme", tier=from_tier, status=TenantStatus.active, region="eu-west-1",
                          cell="eu1")
    spec = TenantSpec(id="acme", region="eu-west-1", cell="eu1", tier=from_tier)
    if from_tier is Tier.dedicated and tier is Tier.dedicated and refused is None and to_cell != "other":
        refused = "a second one cannot stand beside it; move it with --tier pooled"
    if refused is None:
        assert _refuse_cell(ws, record, spec, tier, to_cell) is (to_cell == "other")  # type: ignore[arg-type]
        return
    with pytest.raises(InvalidInput, match=re.escape(refused)):
        _refuse_cell(ws, record, spec, tier, to_cell)  # type: ignore[arg-type]


def test_the_stack_file_of_a_move_between_cells_names_the_new_cell_and_keeps_the_old_one(tmp_path):
    from tenantctl.engines.pulumi.engine import effective_config
    from tenantctl.stackconfig import PLATFORM_REF_KEY, read_config, read_tenant, stack_file, write_tenant

    across = target_spec(TenantSpec(id="acme", cell="eu1"), Tier.pooled, cell="eu2")
    write_tenant(tmp_path, across)
    path = stack_file(tmp_path, "acme")
    assert read_config(path)[PLATFORM_REF_KEY] == "cell-eu2"  # the tenant's (new) cell from the move's start
    assert effective_config(path, "org/tenantctl/platform")["config"][PLATFORM_REF_KEY] == "org/tenantctl/cell-eu2"
    assert read_tenant(path).retiring.cell == "eu1"


def test_an_open_move_between_cells_reads_the_retiring_store_from_the_old_cells_stack():
    """The new store is the target cell's (its platformStack), the retiring one
    the old cell's (a second StackReference, qualified like the first); the
    role reaches the prefix in both cells' buckets until the move ends."""
    old, new = platform_outputs(), platform_outputs()
    for outputs, cell in ((old, "eu1"), (new, "eu2")):
        outputs.update(db_endpoint=f"{cell}.rds", db_name=f"tenantctl_cell_{cell}", bucket=f"bucket-{cell}",
                       bucket_arn=f"arn:aws:s3:::bucket-{cell}", gateway_role=f"tenantctl_gateway_{cell}")
    moving = target_spec(TenantSpec(id="acme", cell="eu1"), Tier.pooled, cell="eu2")
    config = {**tenant_config(moving.model_dump(mode="json", exclude_none=True)),
              "tenantctl:platformStack": "org/tenantctl/cell-eu2"}
    mocks = RecordingMocks(platform=new, stacks={"org/tenantctl/cell-eu1": old})
    outputs = run_program("acme", config, mocks)
    references = {r.inputs["name"] for r in mocks.of_type("pulumi:pulumi:StackReference")}
    assert references == {"org/tenantctl/cell-eu2", "org/tenantctl/cell-eu1"}
    schemas = _schemas(mocks)
    assert (schemas["acme-s1-schema"]["database"], schemas["acme-s1-schema"]["gateway_role"]) == (
        "tenantctl_cell_eu2", "tenantctl_gateway_eu2")
    assert (schemas["acme-schema"]["database"], schemas["acme-schema"]["gateway_role"]) == (
        "tenantctl_cell_eu1", "tenantctl_gateway_eu1")
    assert (outputs["bucket"], outputs["store"]["database"]) == ("bucket-eu2", "tenantctl_cell_eu2")
    [policy] = mocks.of_type("aws:iam/rolePolicy:RolePolicy")
    objects = next(st for st in json.loads(policy.inputs["policy"])["Statement"] if st["Sid"] == "TenantObjects")
    assert objects["Resource"] == ["arn:aws:s3:::bucket-eu2/tenants/acme/*", "arn:aws:s3:::bucket-eu1/tenants/acme/*"]
    # Finalized: one reference, one store, one bucket.
    done = RecordingMocks(platform=new, stacks={"org/tenantctl/cell-eu1": old})
    run_program("acme", {**config, "tenantctl:tenant": moving.model_copy(update={"retiring": None}).model_dump(
        mode="json", exclude_none=True)}, done)
    assert len(done.of_type("pulumi:pulumi:StackReference")) == 1 and "bucket-eu1" not in str(
        done.of_type("aws:iam/rolePolicy:RolePolicy")[0].inputs["policy"])


def _moving(phase: MovePhase):
    rec = record("acme")
    return rec.model_copy(update={"move": TenantMove(from_tier=Tier.pooled, to_tier=Tier.dedicated, phase=phase,
                                                     old_store=rec.resources.store)})


@pytest.mark.parametrize("phase,frozen", [(MovePhase.copying, False), (MovePhase.freezing, True),
                                          (MovePhase.switched, False), (MovePhase.rolling_back, True)])
def test_writes_are_refused_retryably_only_while_frozen_and_reads_go_on(phase, frozen):
    ctx = from_registry(Registry(_moving(phase)), "acme")
    store = ContextStore(envelope=SimpleNamespace(encrypt=None, seal_for=None), secret_client_for=lambda _ctx: None)  # type: ignore[arg-type]
    writes = (store._append(ctx, "c", "user", "hi", None), store._delete_conversation(ctx, "c"),
              store._put_document(ctx, "d", "title", "body", None, None), store._delete_document(ctx, "d"),
              store._reindex(ctx))
    history = store._history(ctx, "c", 10, None)
    for op in writes:
        if frozen:
            with pytest.raises(WritesFrozen):
                next(op)
        else:
            assert next(op) is not None  # its first step (sealing / the DELETE)
    assert next(history) is not None  # reads are never frozen


@pytest.mark.parametrize("exc", [WritesFrozen("acme"), StoreMoved("moved")])
def test_a_frozen_or_moved_store_is_a_503_with_retry_after(exc):
    status, headers, _ = problem(exc)
    assert status == 503 and (b"retry-after", b"1") in headers


def test_a_stale_write_is_retried_once_on_the_store_the_registry_names_now():
    old = _moving(MovePhase.switched)
    new = old.model_copy(update={"resources": old.resources.model_copy(update={
        "store": old.resources.store.model_copy(update={"database": "acme"})})})
    registry = Registry(old)
    stale = from_registry(registry, "acme")
    registry.records["acme"] = new
    seen = []

    class Store(ContextStore):
        def _execute(self, ctx, query, params, fetch, locks=(), prepare=None):  # every statement's one transaction
            seen.append(ctx.resources.store.database)
            if ctx.resources.store.database == "postgres":
                raise StoreMoved("revoked")
            return (7, datetime.now(UTC)) if fetch == "one" else 1

    class Sealing:
        def seal_for(self, ctx, conversation_id, plaintext):
            return b"sealed"

    # append (its steps run directly) and delete_conversation (an operation the driver runs)
    for write in (lambda s: s.append(stale, "c", "user", "hi").seq, lambda s: s.delete_conversation(stale, "c")):
        seen.clear()
        store = Store(envelope=Sealing(), secret_client_for=lambda _ctx: None,  # type: ignore[arg-type]
                      reresolve=lambda ctx, patient=False: from_registry(registry, ctx.tenant_id))
        assert write(store) in (7, True)
        assert seen == ["postgres", "acme"]
        without = Store(envelope=Sealing(), secret_client_for=lambda _ctx: None)  # type: ignore[arg-type]
        with pytest.raises(StoreMoved):
            write(without)


def test_a_refused_login_is_a_store_moved_only_once_the_registry_names_another_store():
    """A login the store refuses (libpq: no SQLSTATE) asks the registry again,
    at most once a REREAD_INTERVAL per tenant: the same store, a
    StoreUnavailable as before; another one, a StoreMoved, the cache holding
    the new record for the caller's retry."""
    from tenant_runtime.errors import StoreUnavailable
    from tenant_runtime.logins import LoginRefused
    from tenant_runtime.registry import REREAD_INTERVAL

    now = [0.0]
    old = record("acme")
    new = old.model_copy(update={"resources": old.resources.model_copy(update={
        "store": old.resources.store.model_copy(update={"database": "acme"})})})
    registry = Registry(old)
    registry._cache = TTLCache(10, 30.0, clock=lambda: now[0])
    stale = from_registry(registry, "acme")

    class Store(ContextStore):
        def _execute(self, ctx, query, params, fetch, locks=(), prepare=None):
            if ctx.resources.store.database == "postgres":
                raise LoginRefused("permission denied for database")
            return []

    def reresolve(ctx, patient=False):  # as TenantRuntime's
        registry.refresh(ctx.tenant_id, ctx.record, patient)
        return from_registry(registry, ctx.tenant_id)

    store = Store(envelope=None, secret_client_for=lambda _ctx: None, reresolve=reresolve)  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailable):  # its record read just now: not again
        store.list_conversations(stale)
    assert registry.asked == ["acme"]
    now[0] += REREAD_INTERVAL
    for _ in range(3):  # read again once, the same store named: still StoreUnavailable
        with pytest.raises(StoreUnavailable) as refused:
            store.list_conversations(stale)
        assert not isinstance(refused.value, StoreMoved)
    assert registry.asked == ["acme", "acme"]
    registry.records["acme"] = new  # moved
    now[0] += REREAD_INTERVAL
    with pytest.raises(StoreMoved, match="registry names another store now"):
        store.list_conversations(from_registry(registry, "acme"))
    assert registry.asked == ["acme"] * 3
    assert store.list_conversations(from_registry(registry, "acme")).conversations == []


def _refusing_old_store(ctx):
    """A stand-in for a tenant transaction's entry: the old store (database
    ``postgres``) refuses the login; elsewhere a cursor, and a block's
    ``psycopg.Rollback`` swallowed as ``held`` swallows it."""
    from tenant_runtime.logins import LoginRefused

    if ctx.resources.store.database == "postgres":
        raise LoginRefused("permission denied for database")
    yield from _open_store(ctx)


def _open_store(_ctx):
    """A stand-in for a tenant transaction's entry on a connection already open:
    a cursor; a block's ``psycopg.Rollback`` swallowed as ``held`` swallows it."""
    try:
        yield SimpleNamespace(connection=SimpleNamespace(cursor_factory=None))
    except psycopg.Rollback:
        pass


def _moved_away(old):
    """``old`` with its store in another database (``acme``): the record after a move."""
    return old.model_copy(update={"resources": old.resources.model_copy(update={
        "store": old.resources.store.model_copy(update={"database": "acme"})})})


def _caller_transactions(driver, entry, reresolve, offload):
    """``run(ctx, block)``: ``block(conn)`` in ``store.transaction(ctx)`` of the
    ``driver``'s store, whose transactions begin as ``entry(ctx)`` says."""
    from tenant_runtime.aio import AsyncContextStore
    from tenant_runtime.logins import TenantLogins

    class Sync(ContextStore):
        def _transaction(self, ctx, caller=False):
            return contextmanager(entry)(ctx)

    class Async(AsyncContextStore):
        @asynccontextmanager
        async def _transaction(self, ctx, caller=False):
            with contextmanager(entry)(ctx) as cur:
                yield cur

    if driver == "sync":
        sync = Sync(envelope=None, secret_client_for=lambda _ctx: None, reresolve=reresolve)  # type: ignore[arg-type]

        def run(ctx, block):
            with sync.transaction(ctx) as conn:
                block(conn)
        return run
    store = Async(None, TenantLogins(lambda _ctx: None), offload, reresolve=reresolve)

    def arun(ctx, block):
        async def go():
            async with store.transaction(ctx) as conn:
                block(conn)
        asyncio.run(go())
    return arun


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_transaction_refused_on_entry_is_a_store_moved_only_once_the_registry_names_another_store(driver):
    """``transaction()``: a login refused before the caller's block runs asks the
    registry again: the same store, a StoreUnavailable; another, a StoreMoved
    (the block not run: the caller retries it). What the block itself raises is
    the block's, no registry read; a ``psycopg.Rollback`` it raises, swallowed."""
    from tenant_runtime.aio import Offloader
    from tenant_runtime.errors import StoreUnavailable

    old = record("acme")
    new = _moved_away(old)
    registry = Registry(old)
    registry._cache = TTLCache(10, 30.0)
    stale = from_registry(registry, "acme")
    ran = []

    def reresolve(ctx, patient=False):  # as TenantRuntime's, its record not read just now
        registry.refresh(ctx.tenant_id, ctx.record)
        return from_registry(registry, ctx.tenant_id)

    offload = Offloader(1)
    transaction = _caller_transactions(driver, _refusing_old_store, reresolve, offload)

    def run(ctx, block=ran.append):
        transaction(ctx, block)

    def rolled_back(_conn):
        raise psycopg.Rollback()

    try:
        with pytest.raises(StoreUnavailable) as refused:
            run(stale)
        assert not isinstance(refused.value, StoreMoved) and registry.asked == ["acme", "acme"]
        registry.records["acme"] = new  # moved
        with pytest.raises(StoreMoved, match="registry names another store now"):
            run(stale)
        assert ran == [] and registry.asked == ["acme"] * 3
        fresh = from_registry(registry, "acme")
        with pytest.raises(StoreMoved, match="the block's"):
            run(fresh, lambda _conn: (_ for _ in ()).throw(StoreMoved("the block's")))
        run(fresh, rolled_back)
        run(fresh)
        assert len(ran) == 1 and registry.asked == ["acme"] * 3
    finally:
        offload.close()


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("gone", [psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName,
                                  psycopg.errors.UndefinedObject])
def test_the_blocks_sql_meeting_a_dropped_store_is_a_store_moved_once_the_registry_names_another(driver, gone):
    """``transaction()``: the caller's own SQL on a connection still open to a
    store its tenant left (a move finalized: schema, tables, role dropped) fails
    with what PostgreSQL says of a missing object; once the registry, read again
    (at most once a REREAD_INTERVAL: an application's own bug fails the same way),
    names another store, a StoreMoved chained from it; else the block's error
    as it is."""
    from tenant_runtime.aio import Offloader
    from tenant_runtime.registry import REREAD_INTERVAL

    now = [0.0]
    old = record("acme")
    new = _moved_away(old)
    registry = Registry(old)
    registry._cache = TTLCache(10, 30.0, clock=lambda: now[0])
    stale = from_registry(registry, "acme")

    def reresolve(ctx, patient=False):  # as TenantRuntime's
        registry.refresh(ctx.tenant_id, ctx.record, patient)
        return from_registry(registry, ctx.tenant_id)

    def missing(_conn):
        raise gone("relation \"tenant_acme.messages\" does not exist")

    offload = Offloader(1)
    transaction = _caller_transactions(driver, _open_store, reresolve, offload)

    def run(ctx, block=missing):
        transaction(ctx, block)

    try:
        with pytest.raises(gone):  # its record read just now: not again, the block's error
            run(stale)
        assert registry.asked == ["acme"]
        now[0] += REREAD_INTERVAL
        with pytest.raises(gone):  # read again, the same store named: the block's error as it is
            run(stale)
        assert registry.asked == ["acme", "acme"]
        registry.records["acme"] = new  # moved
        now[0] += REREAD_INTERVAL
        with pytest.raises(StoreMoved, match="registry names another store now") as moved:
            run(from_registry(registry, "acme"))
        assert isinstance(moved.value.__cause__, gone) and registry.asked == ["acme"] * 3
        ran = []
        run(from_registry(registry, "acme"), ran.append)  # the retry, on the store named now
        assert len(ran) == 1 and registry.asked == ["acme"] * 3
        with pytest.raises(psycopg.errors.SyntaxError):  # any other error of the block: no registry read
            run(from_registry(registry, "acme"), lambda _conn: (_ for _ in ()).throw(psycopg.errors.SyntaxError()))
        assert registry.asked == ["acme"] * 3
    finally:
        offload.close()


def test_provision_refuses_a_tenant_being_moved_and_points_tier_changes_at_move():
    moving = _moving(MovePhase.copying)
    assert isinstance(refusal(moving, TenantSpec(id="acme")), Conflict)
    refused = refusal(record("acme"), TenantSpec(id="acme", tier=Tier.dedicated))
    assert isinstance(refused, InvalidInput) and "tenantctl move acme --tier dedicated" in str(refused)


def test_a_frozen_record_is_cached_briefly_so_writes_resume_soon_after_the_switch():
    now = [0.0]
    registry = Registry(_moving(MovePhase.freezing))
    registry._cache = TTLCache(10, 30.0, clock=lambda: now[0])
    registry.lookup("acme")
    registry.records["acme"] = _moving(MovePhase.switched)
    now[0] = FROZEN_TTL + 0.01
    assert registry.lookup("acme").move.phase is MovePhase.switched and registry.asked == ["acme", "acme"]
    now[0] += 10  # a record that is not frozen keeps the reader's TTL
    assert registry.lookup("acme").move.phase is MovePhase.switched and len(registry.asked) == 2


def test_an_open_move_declares_each_workspace_schema_in_both_stores_without_replacing_the_old_one():
    from tenantctl.models import WorkspaceSpec

    spec = TenantSpec(id="acme", workspaces=[WorkspaceSpec(name="legal")])
    schemas = lambda s: {n: i for n, i in _all_schemas(s).items() if "legal" in n}  # noqa: E731
    before = schemas(spec)
    assert list(before) == ["acme--legal-schema"] and before["acme--legal-schema"]["owns_secret"]
    moving = target_spec(spec, Tier.dedicated)
    during = schemas(moving)
    # The old store's keeps its name (not replaced: its rows stay until the move ends); the new one is another.
    assert set(during) == {"acme--legal-schema", "acme--legal-schema-s1"}
    assert during["acme--legal-schema"]["database"] == before["acme--legal-schema"]["database"]
    assert during["acme--legal-schema-s1"]["database"] != before["acme--legal-schema"]["database"]
    assert {i["schema"] for i in during.values()} == {before["acme--legal-schema"]["schema"]}
    assert not any(i["owns_secret"] for i in during.values())  # the move points the secret at the switch
    after = schemas(moving.model_copy(update={"retiring": None}))
    assert list(after) == ["acme--legal-schema-s1"] and after["acme--legal-schema-s1"]["owns_secret"]


def test_a_workspace_schema_keeps_the_resource_name_it_has_when_a_move_starts():
    """A workspace added after the tenant's first move has its schema under the
    plain name in that generation: the next move pins it there, so neither
    store's resource is renamed (a rename plans a delete, which drops the schema)."""
    from tenantctl.models import WorkspaceSpec

    spec = TenantSpec(id="acme", store_generation=1, workspaces=[WorkspaceSpec(name="legal")])
    names = lambda s: sorted(n for n in _all_schemas(s) if "legal" in n)  # noqa: E731
    assert names(spec) == ["acme--legal-schema"]
    moving = target_spec(spec, Tier.dedicated)
    assert moving.workspace("legal").schema_generation == 1
    assert names(moving) == ["acme--legal-schema", "acme--legal-schema-s2"]
    assert names(moving.model_copy(update={"retiring": None})) == ["acme--legal-schema-s2"]


@pytest.mark.parametrize("tier, generation", [(Tier.dedicated, 0), (Tier.pooled, 0), (Tier.pooled, 1)])
def test_a_rolled_back_spec_hashes_as_before_the_move_with_its_workspace_pinned(tier, generation):
    """The rollback writes back the workspace's pin (its plain schema's
    generation, the current one), which declares the same resources as no pin:
    the fingerprint must not see a change `provision --preview` does not."""
    from tenantctl.models import WorkspaceSpec
    from tenantctl.operations.mover import rolled_back

    start = Tier.pooled if tier is Tier.dedicated else Tier.dedicated
    spec = TenantSpec(id="acme", tier=start, store_generation=generation, workspaces=[WorkspaceSpec(name="legal")])
    back = rolled_back(target_spec(spec, tier))
    assert back.workspace("legal").schema_generation == generation  # written to the stack file
    assert back.content_hash() == spec.content_hash()
    assert sorted(_all_schemas(back)) == sorted(_all_schemas(spec))  # the same schema resources, by name
    pinned_elsewhere = spec.model_copy(update={"workspaces": [WorkspaceSpec(name="legal", schema_generation=5)]})
    assert pinned_elsewhere.content_hash() != spec.content_hash()


def test_a_pin_to_the_retiring_store_hashes_as_no_pin_while_a_move_is_open():
    from tenantctl.models import WorkspaceSpec

    moving = target_spec(TenantSpec(id="acme", workspaces=[WorkspaceSpec(name="legal")]), Tier.dedicated)
    unpinned = moving.model_copy(update={"workspaces": [WorkspaceSpec(name="legal")]})
    assert moving.workspace("legal").schema_generation == 0
    assert moving.content_hash() == unpinned.content_hash()
    # Finalized, the pin names the generation that is gone: another deployment than no pin.
    final = moving.model_copy(update={"retiring": None})
    assert final.content_hash() != unpinned.model_copy(update={"retiring": None}).content_hash()


def _all_schemas(spec: TenantSpec) -> dict:
    mocks = RecordingMocks()
    run_program(spec.id, tenant_config(spec.model_dump(mode="json", exclude_none=True)), mocks)
    return {r.name: r.inputs for r in mocks.resources if r.type == "pulumi-python:dynamic:Resource"
            and "-schema" in r.name}


def test_a_move_target_is_applied_in_the_tenants_second_stack_leaving_the_first_as_it_was(tmp_path):
    from runtime_fixtures import record as applied_record

    from tenantctl.engines.base import ChangeSet, UpResult
    from tenantctl.operations.provision import apply_spec
    from tenantctl.stackconfig import read_tenant, stack_file, write_tenant

    outputs = applied_record("acme").resources.model_dump(mode="json")
    ups: list[str] = []

    def up(stack, on_event=None, refresh=False):
        ups.append(stack)
        return UpResult(stack=stack, outputs=outputs, changes=ChangeSet(stack=stack))

    stacks = tmp_path / "stacks"
    stacks.mkdir()
    current, target = TenantSpec(id="acme"), TenantSpec(id="acme", region="eu-west-1")
    write_tenant(stacks, current)
    before = stack_file(stacks, "acme").read_text()
    ws = SimpleNamespace(stacks_dir=stacks, project_dir=tmp_path, engine=SimpleNamespace(up=up))
    applied = apply_spec(ws, target, stack="acme.k1")  # type: ignore[arg-type]
    assert ups == ["acme.k1"] and applied.resources.tenant_id == "acme"
    assert read_tenant(stack_file(stacks, "acme.k1")) == target
    assert stack_file(stacks, "acme").read_text() == before
    apply_spec(ws, current)  # type: ignore[arg-type]
    assert ups == ["acme.k1", "acme"]


LONG_WS = "w" * naming.max_workspace_length("acme")  # its role fits generation 0, not `.k1`


@pytest.mark.parametrize("tier,to_tier,workspaces,applied,stack,refused", [
    (Tier.pooled, Tier.pooled, [], [], None, None),
    (Tier.pooled, Tier.pooled, [], [], "acme.k1", None),
    (Tier.dedicated, Tier.pooled, [], [], None, None),
    (Tier.pooled, Tier.dedicated, [], [], None, None),
    (Tier.dedicated, Tier.dedicated, [], [], None, None),  # whether it can stand beside: keyed_tier's, by the cells
    (Tier.pooled, Tier.pooled, ["legal", "finance"], ["legal", "finance"], None, None),
    (Tier.pooled, Tier.pooled, ["legal", "finance"], ["legal"], None,
     "its spec lists workspaces ['finance', 'legal'] but ['legal'] are applied"),
    (Tier.pooled, Tier.pooled, [], ["legal"], None, "its spec lists workspaces [] but ['legal'] are applied"),
    (Tier.pooled, Tier.pooled, [LONG_WS], [LONG_WS], None, f"workspace {LONG_WS!r} of key generation 1"),
    (Tier.pooled, Tier.pooled, [], [], "acme.k99", "key generation 100 is outside"),
])
def test_a_move_to_another_account_or_region_takes_either_tier_and_the_applied_workspaces(
        tier, to_tier, workspaces, applied, stack, refused):
    from runtime_fixtures import with_workspaces

    from tenantctl.models import TenantRecord, TenantStatus
    from tenantctl.operations.move_keyed import keyed_refusal, next_generation

    resources = with_workspaces(record("acme"), *applied).resources
    moving = TenantRecord(tenant_id="acme", tier=tier, status=TenantStatus.active, region="eu-west-1", cell="eu1",
                          stack=stack, resources=resources)
    spec = TenantSpec(id="acme", region="eu-west-1", cell="eu1", tier=tier,
                      workspaces=[{"name": name} for name in workspaces])
    problem = keyed_refusal(moving, spec, to_tier)
    assert (problem is None) if refused is None else (refused in problem), problem
    assert next_generation(moving) == (2 if stack == "acme.k1" else 100 if stack else 1)


def test_a_keyed_target_takes_the_tier_with_its_dedicated_settings_and_a_snapshot_name_of_its_own():
    from datetime import UTC, datetime

    from tenantctl.models import DedicatedSpec
    from tenantctl.operations.keyed_tier import keyed_target

    euc, started = _cells_ws().cell("euc"), datetime(2026, 12, 4, 18, 0, 1, tzinfo=UTC)
    pooled = TenantSpec(id="acme", region="eu-west-1", cell="eu1", residency=["eu-west-1", "eu-central-1"])
    up = keyed_target(pooled, Tier.dedicated, euc, started)
    assert (up.cell, up.region, up.tier, up.dedicated) == (
        "euc", "eu-central-1", Tier.dedicated, DedicatedSpec(final_snapshot_suffix="20261204180001"))
    assert up.retiring is None and up.store_generation == pooled.store_generation  # a stack of its own
    own = up.model_copy(update={"dedicated": DedicatedSpec(instance_class="db.r6g.large", storage_gb=100)})
    again = keyed_target(own, Tier.dedicated, euc, started)
    assert (again.dedicated.instance_class, again.dedicated.storage_gb, again.dedicated.deletion_protection) == (
        "db.r6g.large", 100, True)
    down = keyed_target(up, Tier.pooled, euc, started)
    assert (down.tier, down.dedicated) == (Tier.pooled, None)


@pytest.mark.parametrize("from_tier,tier,endpoints,refused", [
    (Tier.dedicated, Tier.dedicated, ("pg", "pg"), True),  # the sandbox: one server for every cell
    (Tier.dedicated, Tier.dedicated, ("rds-a", "rds-b"), False),  # AWS: each cell's own instance
    (Tier.pooled, Tier.dedicated, ("pg", "pg"), False),
    (Tier.dedicated, Tier.pooled, ("pg", "pg"), False),
])
def test_a_second_dedicated_store_is_refused_only_where_it_would_share_the_first_ones_server(
        from_tier, tier, endpoints, refused):
    from tenantctl.operations.keyed_tier import one_server_refusal

    outputs = dict(zip(("eu1", "euc"), ({"db_endpoint": e, "db_port": 5432} for e in endpoints), strict=True))
    ws = SimpleNamespace(cell_outputs=outputs.__getitem__, ensure_cell=outputs.__getitem__)
    problem = one_server_refusal(ws, from_tier, tier, "eu1", "euc")  # type: ignore[arg-type]
    assert (problem is not None) is refused, problem
    assert problem is None or "a second one cannot stand beside it; move it with --tier pooled" in problem


def test_the_target_cells_quotas_are_checked_for_the_target_tier(monkeypatch):
    from tenantctl import preflight
    from tenantctl.errors import QuotaExceeded
    from tenantctl.models import TenantRecord, TenantStatus
    from tenantctl.operations.move_keyed import refuse_or_target

    asked: list[tuple[Tier, str, str]] = []

    def check(spec: TenantSpec, platform: dict, clients) -> None:
        asked.append((spec.tier, spec.region, clients))
        if spec.tier is Tier.dedicated:
            raise QuotaExceeded("VPCs: 5 of 5 used in eu-central-1")

    monkeypatch.setattr(preflight, "check", check)
    ws = _cells_ws()
    # Endpoints not known: no refusal of a second dedicated store on their account (AWS: never one server).
    ws.ensure_cell, ws.cell_clients = (lambda _cell: {}), (lambda cell: f"clients of {cell}")
    record = TenantRecord(tenant_id="acme", tier=Tier.dedicated, status=TenantStatus.active, region="eu-west-1",
                          cell="eu1")
    spec = TenantSpec(id="acme", region="eu-west-1", cell="eu1", tier=Tier.dedicated,
                      residency=["eu-west-1", "eu-central-1"])
    with pytest.raises(QuotaExceeded, match="VPCs: 5 of 5") as refused:
        refuse_or_target(ws, record, spec, Tier.dedicated, "euc")  # type: ignore[arg-type]
    assert refused.value.exit_code == 11
    target, stack = refuse_or_target(ws, record, spec, Tier.pooled, "euc")  # type: ignore[arg-type]
    assert (target.tier, target.dedicated, target.cell, stack) == (Tier.pooled, None, "euc", "acme.k1")
    assert asked == [(tier, "eu-central-1", "clients of euc") for tier in (Tier.dedicated, Tier.pooled)]


def test_a_dedicated_target_the_cell_does_not_take_is_refused_before_the_preflight(monkeypatch):
    from tenantctl import preflight
    from tenantctl.models import CellSpec, TenantRecord, TenantStatus
    from tenantctl.operations.move_keyed import refuse_or_target

    monkeypatch.setattr(preflight, "check", lambda *_a: pytest.fail("preflight reached"))
    ws = _cells_ws()
    pooled_only = CellSpec(name="euc", region="eu-central-1", account_role_arn="arn:aws:iam::222222222222:role/c",
                           tiers=[Tier.pooled])
    ws.cell = {"euc": pooled_only}.get
    record = TenantRecord(tenant_id="acme", tier=Tier.pooled, status=TenantStatus.active, region="eu-west-1",
                          cell="eu1")
    spec = TenantSpec(id="acme", region="eu-west-1", cell="eu1", residency=["eu-west-1", "eu-central-1"])
    with pytest.raises(InvalidInput, match="cannot move to cell 'euc': it takes pooled tenants, not dedicated"):
        refuse_or_target(ws, record, spec, Tier.dedicated, "euc")  # type: ignore[arg-type]


def test_a_finalize_rerun_after_a_kill_takes_no_second_final_backup(monkeypatch):
    """Within an account the final backup is of the old store (as it was before
    the move); its id is recorded before the steps after it, so a finalize
    killed after it and run again skips it, as a keyed move's does."""
    from tenantctl.drills import backup
    from tenantctl.operations import mover
    from tenantctl.transfer import store_sync

    taken: list[tuple[str, str, str | None]] = []

    def final_backup(ws, rec, workspace=None):
        taken.append((rec.tier.value, rec.resources.store.schema_name, workspace))
        return SimpleNamespace(backup_id=f"b{len(taken)}")

    def killed(*_args, **_kwargs):
        raise RuntimeError("killed after the final backup")

    moving = _moving(MovePhase.switched)
    new_store = moving.resources.store.model_copy(update={"schema_name": "acme_new"})
    held = SimpleNamespace(record=moving.model_copy(update={
        "tier": Tier.dedicated, "resources": moving.resources.model_copy(update={"store": new_store})}))
    ws = SimpleNamespace(registry=SimpleNamespace(save=lambda rec, **changes: rec.model_copy(update=changes)))
    monkeypatch.setattr(backup, "final_backup", final_backup)
    monkeypatch.setattr(store_sync, "stop", killed)
    monkeypatch.setattr(mover.Mover, "leaving", lambda self, store: nullcontext(object()))  # the old database there
    monkeypatch.setattr(mover.Mover, "spec", lambda self: target_spec(TenantSpec(id="acme"), Tier.dedicated))
    monkeypatch.setattr(mover.Mover, "link", lambda self, backwards=False: None)
    for _ in range(2):  # the run killed, then its re-run killed at the same step
        with pytest.raises(RuntimeError, match="killed"):
            mover.Mover(ws, held).finalize()
    assert taken == [("pooled", moving.resources.store.schema_name, None)]  # the old store's, once
    assert held.record.move.final_backup_id == "b1"


@pytest.mark.parametrize("keyed", [False, True])
def test_a_rollback_is_refused_once_a_finalize_recorded_its_final_backup(keyed):
    """Both movers (within an account, keyed) refuse a rollback from the point
    a --finalize recorded its final backup (it goes on to remove the old side),
    with exit 3 and nothing saved."""
    from tenantctl.operations.move_keyed import KeyedMover
    from tenantctl.operations.mover import Mover

    moving = _moving(MovePhase.switched)
    held = SimpleNamespace(record=moving.model_copy(update={
        "move": moving.move.model_copy(update={"final_backup_id": "b1", "from_stack": "acme"})}))
    saved: list[dict] = []
    ws = SimpleNamespace(registry=SimpleNamespace(save=lambda rec, **changes: saved.append(changes)))
    with pytest.raises(InvalidInput, match="a --finalize has begun removing the old side") as refused:
        (KeyedMover if keyed else Mover)(ws, held).rollback()  # type: ignore[arg-type]
    assert refused.value.exit_code == 3 and "`tenantctl move acme --finalize` finishes it" in str(refused.value)
    assert saved == [] and held.record.move.phase is MovePhase.switched


def test_stores_that_differ_are_named_in_a_sentence_not_a_dict():
    """The exit-9 message of a move (or a rollback) whose two stores differ: each
    table that differs, its rows and checksum on each side, in words."""
    from tenantctl.drills.models import TableCheck
    from tenantctl.errors import DrillFailed
    from tenantctl.transfer.store_sync import _same

    source = {"messages": TableCheck(rows=12, checksum="a1"), "summaries": TableCheck(rows=1, checksum="c3"),
              "documents": TableCheck(rows=2, checksum="d4")}
    target = {"messages": TableCheck(rows=11, checksum="b2"), "documents": TableCheck(rows=2, checksum="d4")}
    with pytest.raises(DrillFailed) as refused:
        _same("acme", source, target)
    assert str(refused.value) == (
        "tenant 'acme': the target store differs from the source after catching up: messages: 12 rows "
        "(checksum a1) in the source, 11 rows (checksum b2) in the target; summaries: 1 row (checksum c3) "
        "in the source, missing in the target")
    assert _same("acme", target, dict(target)) == {"messages": 11, "documents": 2}


def test_the_preview_of_a_switched_move_says_the_stores_are_compared_again():
    from tenantctl.operations.move_preview import SAME_ACCOUNT, MovePreview, Side, _phases

    side = Side(tier=Tier.pooled, cell="default", account_id="111111111111", region="eu-west-1")
    found = MovePreview(tenant_id="acme", outcome="would_resume", source=side,
                        target=side.model_copy(update={"tier": Tier.dedicated}), kind=SAME_ACCOUNT, stack="acme")
    resumed = _phases(found, MovePhase.switched)
    assert len(resumed) == 1 and resumed[0].startswith("switched: the stores compared again"), resumed
    assert "the old store read-only and in step" in resumed[0]
    assert "compared again" not in _phases(found, MovePhase.preparing)[-1]


def test_pinning_two_stores_closes_the_first_snapshot_when_the_second_fails():
    from tenantctl.transfer import store_sync

    class Conn:
        def __init__(self) -> None:
            self.closed = False

        def execute(self, _sql: str) -> None:
            return None

        def close(self) -> None:
            self.closed = True

    opened: list[Conn] = []

    def connect(store: str) -> Conn:
        if store == "down":
            raise psycopg.OperationalError("connection refused")
        opened.append(Conn())
        return opened[-1]

    first, second = store_sync.pin_both(connect, "a", "b")
    assert not first.closed and not second.closed
    with pytest.raises(psycopg.OperationalError):
        store_sync.pin_both(connect, "a", "down")
    assert opened[-1].closed  # the snapshot of "a" held by nobody: closed, not left open on the server


def test_status_says_a_switched_moves_stores_are_being_compared_again():
    from tenantctl.cli.tenant_cmd import _record_rows

    move = TenantMove(from_tier=Tier.pooled, to_tier=Tier.dedicated, phase=MovePhase.switched,
                      old_store=record("acme").resources.store)
    def row(move: TenantMove) -> str:
        [text] = [text for label, text in _record_rows(record("acme").model_copy(update={"move": move}))
                  if label == "move"]
        return text

    plain, again = row(move), row(move.model_copy(update={"reverifying": True}))
    assert "compared again" not in plain
    assert again.startswith(plain) and "writes refused" in again and "`tenantctl move acme`" in again


@pytest.mark.parametrize("resumed", [False, True])
def test_a_freeze_refuses_writes_only_a_reread_interval_after_the_record_said_so(monkeypatch, resumed):
    """A runtime reads the record again on a write its store refuses, but not one read under
    REREAD_INTERVAL ago: the store's writes are revoked no sooner than that after the run wrote the
    record frozen, so a runtime that read it just before answers 503 (retry), not the refusal's 500.
    A resumed run's record said so long ago: no wait."""
    import time

    from tenant_runtime.registry import REREAD_INTERVAL
    from tenantctl.operations import mover

    events: list[tuple[str, float]] = []

    def save(rec, **changes):
        events.append(("record frozen", time.monotonic()))
        return rec.model_copy(update=changes)

    run = mover.Mover(SimpleNamespace(registry=SimpleNamespace(save=save)),  # type: ignore[arg-type]
                      SimpleNamespace(record=_moving(MovePhase.freezing if resumed else MovePhase.copying)))
    monkeypatch.setattr(run, "connect", lambda store: nullcontext())
    monkeypatch.setattr(run, "set_writable", lambda stores, writable: None)
    monkeypatch.setattr(mover.store_sync, "has_subscription", lambda conn, name: True)
    monkeypatch.setattr(mover.store_sync, "quiesce",
                        lambda connect, sources, timeout: events.append(("writes revoked", time.monotonic())) or "0/1")
    for name in ("wait", "pin_both", "align_sequences", "stop"):
        monkeypatch.setattr(mover.store_sync, name, lambda *args, **kwargs: None)
    link = SimpleNamespace(name="l", source="old", sources=["old"], target="new", targets=["new"])
    started = time.monotonic()
    run.catch_up(link, MovePhase.copying, first=lambda: run.frozen(MovePhase.freezing))  # type: ignore[arg-type]
    if resumed:
        assert [e for e, _ in events] == ["writes revoked"] and events[0][1] - started < REREAD_INTERVAL / 2
    else:
        [(_, frozen), (_, revoked)] = events
        assert revoked - frozen >= REREAD_INTERVAL
