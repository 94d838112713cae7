"""`tenantctl move`: a tenant to another tier with its data while a writer
appends, on the sandbox (LocalEngine, moto, one real PostgreSQL with
wal_level=logical, real logical replication), read back from PostgreSQL.

The tenants are shared by the tests of this module (each move costs a store;
a dedicated one costs a VPC of the sandbox's 5)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
import yaml
from fault_tools import POOLED, Cli, aws, inventory, registry_record, run_id, write_record
from faults import FAULT_AFTER_ENV, FAULT_POINT_ENV
from move_tools import writing
from psycopg import sql
from runtime_tenants import jwt_settings, sandbox_runtime
from waiting import wait_for

from tenant_runtime import AsyncTenantRuntime, StoreMoved, TenantRuntime, WritesFrozen
from tenant_runtime.models import Hibernation, MovePhase, StoreConnection
from tenant_runtime.tables import TABLES
from tenantctl import naming
from tenantctl.cli.tenant_cmd import _record_rows
from tenantctl.drills.backup import backup
from tenantctl.drills.context import context_from_workspace
from tenantctl.drills.models import Verdict
from tenantctl.drills.run import drill
from tenantctl.drills.scope import workspace_view
from tenantctl.drills.store import list_backups
from tenantctl.drills.tables import table_checks
from tenantctl.errors import Conflict, InvalidInput, QuotaExceeded, TargetUnavailable
from tenantctl.models import TenantStatus, Tier
from tenantctl.operations import mover
from tenantctl.operations.deprovision import deprovision
from tenantctl.operations.hibernate import hibernate, wake
from tenantctl.operations.move import move
from tenantctl.operations.suspend import resume, set_suspended
from tenantctl.stackconfig import read_tenant, stack_file, write_tenant
from tenantctl.transfer import store_sync
from tenantctl.transfer.store_sync import compare

pytestmark = pytest.mark.integration

MOVED = "mv-a"  # pooled -> dedicated -> (rollback) pooled -> dedicated (finalized)


@pytest.fixture(scope="module")
def runtime(sandbox, workspace) -> Iterator[TenantRuntime]:
    # A short registry TTL, as a service would have: the freeze is seen within it.
    with sandbox_runtime(sandbox, workspace, registry_ttl=0.2) as rt:
        yield rt


@pytest.fixture(scope="module")
def moved(provision_tenant, workspace):
    record = provision_tenant(MOVED)
    yield record
    left = workspace.registry.get(MOVED)
    if left is not None and left.status is TenantStatus.active:
        if left.move is not None:
            move(workspace, MOVED, rollback=True)
        deprovision(workspace, MOVED, final_backup=False)


def _followed(sandbox, store) -> None:
    """Until the links out of ``store``'s database confirmed a position after
    every write committed there (a logical message flushed behind them, as the
    move's freeze marks its own): what the stores following it hold then is
    the links' doing, however slowly the machine ran them."""
    with psycopg.connect(sandbox.pg_dsn(store.database), autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL synchronous_commit = on")
            lsn = conn.execute("SELECT pg_logical_emit_message(true, 'test', 'followed')::text").fetchone()[0]
        wait_for(f"the links out of {store.database} confirming {lsn}", lambda: conn.execute(
            "SELECT count(*) > 0 AND bool_and(confirmed_flush_lsn >= %s::pg_lsn) FROM pg_replication_slots "
            "WHERE database = current_database()", (lsn,)).fetchone()[0])


def _rows(sandbox, record) -> list[tuple[int, str]]:
    store = record.resources.store
    with psycopg.connect(sandbox.pg_dsn(store.database), autocommit=True) as conn:
        return conn.execute(f'SELECT seq, conversation_id FROM "{store.schema_name}".messages ORDER BY seq').fetchall()


def _slots(workspace, record) -> dict[str, int]:
    """The slots of each tier taken in the tenant's cell."""
    counts = workspace.registry.cell_counts([record.cell])[record.cell][0]
    return {tier.value: counts.get(tier.value, 0) for tier in Tier}


def _admin(sandbox):
    return lambda s: psycopg.connect(sandbox.pg_dsn(s.database), autocommit=True)


def test_move_with_a_writer_keeps_every_acknowledged_write_and_rolls_back(moved, workspace, runtime, sandbox):
    for i in range(200):  # history before the move
        runtime.store.append(runtime.context(MOVED), f"c{i % 7}", "user", f"before {i}")
    slots = _slots(workspace, moved)
    with writing(runtime, MOVED) as writer:
        writer.wait_for_acks(10)
        result = move(workspace, MOVED, tier=Tier.dedicated)
        writer.wait_for_acks(11)  # writes after the switch, on the new store: with the 10 before, over 20

    record = workspace.registry.require(MOVED)
    assert result.outcome == "switched" and record.tier is Tier.dedicated
    assert result.rows["messages"] > 200  # verified (counts + checksums) as of the freeze
    # Both stores exist: the move holds a dedicated slot beside its pooled one, in the tenant's cell.
    assert record.cell == moved.cell and record.account_id == moved.account_id
    assert _slots(workspace, record) == {**slots, "dedicated": slots["dedicated"] + 1}
    for refused in (deprovision, hibernate):  # not with two stores and a link between them
        with pytest.raises(Conflict, match=r"being moved \(switched\): roll the move back"):
            refused(workspace, MOVED)
    assert record.move.phase is MovePhase.switched and record.lock is None
    # The dedicated store hibernated all the same, as an older tenantctl let it be: the rollback drops the flag.
    write_record(sandbox, record.model_copy(update={"hibernation": Hibernation(
        db_instance=naming.rds_identifier(MOVED), region=record.region)}))
    record = workspace.registry.require(MOVED)
    old, new = record.move.old_store, record.resources.store
    assert new.database != old.database
    # Every acknowledged write is in the new store, with the seq it was acknowledged with.
    seqs = {seq for seq, _ in _rows(sandbox, record)}
    assert {seq for seq, _ in writer.acked} <= seqs
    assert len(writer.acked) > 20
    # The old store is read-only for the tenant role and follows the new one.
    _followed(sandbox, new)
    compare(_admin(sandbox), MOVED, new, old)
    page = runtime.store.history(runtime.context(MOVED), "live", limit=500)
    assert [m.content for m in reversed(page.messages)] == [c for _, c in writer.acked][-500:]

    # Past the rollback window (its end moved back, as time would move it) a rollback is refused, nothing
    # changed, unless asked for explicitly.
    ended = record.move.switched_at
    record = workspace.registry.save(record, move=record.move.model_copy(update={"window_ends_at": ended}))
    with pytest.raises(InvalidInput, match=rf"rollback window ended at {ended:%Y-%m-%d %H:%M:%S}Z .*--past-window"):
        move(workspace, MOVED, rollback=True)
    assert workspace.registry.require(MOVED) == record
    # Rolled back: to pooled with the writes made since the switch.
    with writing(runtime, MOVED) as writer:
        writer.wait_for_acks(5)
        back = move(workspace, MOVED, rollback=True, past_window=True)
        writer.wait_for_acks(5)  # writes after the rollback, on the old store again
    record = workspace.registry.require(MOVED)
    assert back.outcome == "rolled_back" and record.tier is Tier.pooled and record.move is None
    assert record.hibernation is None
    assert record.resources.store == old
    assert _slots(workspace, record) == slots  # the dedicated slot went back with the dedicated store
    assert {seq for seq, _ in writer.acked} <= {seq for seq, _ in _rows(sandbox, record)}
    with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as admin:
        assert admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (new.database,)).fetchone() is None
        assert admin.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0] == 0


def _own_write(rt: TenantRuntime) -> str:
    """A transaction of the application's own SQL writing its tenant's table (a
    write that touches no row: its privilege is checked all the same); the
    database it ran on."""
    ctx = rt.context(MOVED)
    with rt.store.transaction(ctx) as conn:
        conn.execute(sql.SQL("DELETE FROM {} WHERE conversation_id = 'none'").format(
            sql.Identifier(ctx.resources.store.schema_name, "messages")))
        return conn.execute("SELECT current_database()").fetchone()[0]


async def _aown_write(rt: AsyncTenantRuntime) -> str:
    """``_own_write`` on the async runtime."""
    ctx = await rt.context(MOVED)
    async with rt.store.transaction(ctx) as conn:
        await conn.execute(sql.SQL("DELETE FROM {} WHERE conversation_id = 'none'").format(
            sql.Identifier(ctx.resources.store.schema_name, "messages")))
        return (await (await conn.execute("SELECT current_database()")).fetchone())[0]


def _outcome(call) -> object:
    """What ``call`` returned, or the exception it raised (in the freeze: a test's
    assertion there would fail the move instead)."""
    try:
        return call()
    except Exception as exc:
        return exc


def test_a_stale_runtime_fails_closed_on_the_old_store_and_recovers_then_the_move_finalizes(
        moved, workspace, runtime, sandbox, monkeypatch, caplog):
    slots = _slots(workspace, moved)
    settings = dict(endpoint_url=sandbox.aws_endpoint_url, region=sandbox.region, registry_ttl=3600)
    stale = TenantRuntime(jwt_settings(), workspace.ensure_platform()["registry_table"], **settings)
    astale = AsyncTenantRuntime(jwt_settings(), workspace.ensure_platform()["registry_table"], **settings)
    loop = asyncio.new_event_loop()  # one loop for both halves: the async runtime's connections belong to it

    # Runtimes that read the tenant before the move and not again until it is finalized, their record
    # cached throughout (a move and its finalize within a registry TTL: an evacuation's `--finalize`).
    # ``late`` holds a connection to the old store, ``unread``, ``alate``, ``txn`` and ``atxn`` none (they
    # log in after it; the last two for a transaction: the application's own SQL).
    late, unread, txn = (TenantRuntime(jwt_settings(), workspace.ensure_platform()["registry_table"], **settings)
                         for _ in range(3))
    alate, atxn = (AsyncTenantRuntime(jwt_settings(), workspace.ensure_platform()["registry_table"], **settings)
                   for _ in range(2))
    # ``opened`` and ``aopened`` keep a connection to the old store from a transaction of the
    # application's own SQL before the move: their next one meets the dropped schema.
    opened = TenantRuntime(jwt_settings(), workspace.ensure_platform()["registry_table"], **settings)
    aopened = AsyncTenantRuntime(jwt_settings(), workspace.ensure_platform()["registry_table"], **settings)
    # Runtimes whose application writes inside its own transaction: ``frozen`` and ``afrozen`` in the
    # freeze, ``retired`` and ``aretired`` on the old store (its writes revoked) after the switch,
    # ``blind`` and ``ablind`` there too with their registry unreadable when they read it again.
    frozen, retired, blind = (TenantRuntime(jwt_settings(), workspace.ensure_platform()["registry_table"],
                                            **settings) for _ in range(3))
    afrozen, aretired, ablind = (AsyncTenantRuntime(jwt_settings(), workspace.ensure_platform()["registry_table"],
                                                    **settings) for _ in range(3))
    def registry_down(rt, call, error) -> None:
        """``call`` with ``rt``'s registry unreadable when the store's refusal reads it
        again: the application's ``error`` stands, the registry's failure logged and
        noted on it (``__notes__``)."""
        table, rt.registry.table = rt.registry.table, "no-such-registry-table"
        caplog.clear()
        try:
            with pytest.raises(error) as raised:
                call()
        finally:
            rt.registry.table = table
        assert any("no-such-registry-table" in note for note in getattr(raised.value, "__notes__", ()))
        assert any("no-such-registry-table" in r.getMessage() for r in caplog.records)

    in_freeze: dict[str, object] = {}
    quiesce = store_sync.quiesce

    def freezing(connect, stores, timeout):  # the move's freeze, the applications writing in it
        frozen_at = quiesce(connect, stores, timeout)
        in_freeze["sync"] = _outcome(lambda: _own_write(frozen))
        in_freeze["async"] = _outcome(lambda: loop.run_until_complete(_aown_write(afrozen)))
        return frozen_at

    async def put_document(title: str):
        return await astale.store.put_document(await astale.context(MOVED), "stale-doc", title, "written async")

    async def alate_history():
        return await alate.store.history(await alate.context(MOVED), "stale")

    async def atxn_database():
        async with atxn.store.transaction(await atxn.context(MOVED)) as conn:
            return (await (await conn.execute("SELECT current_database()")).fetchone())[0]

    def own_sql(ctx) -> sql.Composed:  # the application's own query of its tenant's tables
        return sql.SQL("SELECT current_database(), count(*) FROM {}").format(
            sql.Identifier(ctx.resources.store.schema_name, "messages"))

    def opened_database():
        ctx = opened.context(MOVED)
        with opened.store.transaction(ctx) as conn:
            return conn.execute(own_sql(ctx)).fetchone()[0]

    async def aopened_database():
        ctx = await aopened.context(MOVED)
        async with aopened.store.transaction(ctx) as conn:
            return (await (await conn.execute(own_sql(ctx))).fetchone())[0]

    try:
        stale.store.append(stale.context(MOVED), "stale", "user", "cached")  # caches the record and a connection
        loop.run_until_complete(put_document("cached"))
        late.store.history(late.context(MOVED), "stale")
        unread.context(MOVED)
        txn.context(MOVED)
        loop.run_until_complete(alate.context(MOVED))
        loop.run_until_complete(atxn.context(MOVED))
        opened_database()
        loop.run_until_complete(aopened_database())
        for rt in (frozen, retired, blind):
            rt.context(MOVED)
        for art in (afrozen, aretired, ablind):
            loop.run_until_complete(art.context(MOVED))
        monkeypatch.setattr(store_sync, "quiesce", freezing)
        result = move(workspace, MOVED, tier=Tier.dedicated)
        monkeypatch.undo()
        assert result.outcome == "switched" and result.freeze_seconds < 30
        record = workspace.registry.require(MOVED)
        old, new = record.move.old_store, record.resources.store
        # In the freeze, the application's own write on a record read before it (the store refuses
        # it: the role's writes revoked) is a WritesFrozen (503, retry), chained from psycopg's error.
        for way in ("sync", "async"):
            assert isinstance(in_freeze[way], WritesFrozen), (way, in_freeze[way])
            assert isinstance(in_freeze[way].__cause__, psycopg.errors.InsufficientPrivilege), way
        frozen.close()  # their connections count against the role's CONNECTION LIMIT
        loop.run_until_complete(afrozen.aclose())
        # After the switch, the application's own write on the old store is a StoreMoved (503): the
        # registry, read again, names the new store, where the whole block's retry runs.
        with pytest.raises(StoreMoved) as moved_away:
            _own_write(retired)
        assert isinstance(moved_away.value.__cause__, psycopg.errors.InsufficientPrivilege)
        assert _own_write(retired) == new.database and retired.registry.reads == 2
        with pytest.raises(StoreMoved) as moved_away:
            loop.run_until_complete(_aown_write(aretired))
        assert isinstance(moved_away.value.__cause__, psycopg.errors.InsufficientPrivilege)
        assert loop.run_until_complete(_aown_write(aretired)) == new.database and aretired.registry.reads == 2
        retired.close()
        loop.run_until_complete(aretired.aclose())
        # The registry unreadable then: the application's error stands; once readable, the StoreMoved.
        for rt, write in ((blind, lambda: _own_write(blind)),
                          (ablind, lambda: loop.run_until_complete(_aown_write(ablind)))):
            registry_down(rt, write, psycopg.errors.InsufficientPrivilege)
            with pytest.raises(StoreMoved):
                write()
            assert write() == new.database
        blind.close()
        loop.run_until_complete(ablind.aclose())
        # The old store refuses the tenant role's writes (what a stale runtime holds)...
        secret = runtime.store.logins.credentials(runtime.context(MOVED))
        with psycopg.connect(host=old.endpoint, port=old.port, dbname=old.database, user=old.role,
                             password=secret.password, autocommit=True) as conn:
            conn.execute("SELECT set_config('app.tenant_id', %s, false)", (MOVED,))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f'DELETE FROM "{old.schema_name}".conversations')
        # ...so the stale runtime's write fails closed there, re-reads the registry, lands on the new store.
        stale_ctx = stale.context(MOVED)
        assert stale_ctx.resources.store == old  # still the cached record
        msg = stale.store.append(stale_ctx, "stale", "user", "after the switch")
        assert (msg.seq, "stale") in _rows(sandbox, record)
        assert stale.context(MOVED).resources.store == new
        # The async runtime's writes (a document here) recover the same way.
        assert loop.run_until_complete(put_document("after the switch")).title == "after the switch"
        assert loop.run_until_complete(astale.context(MOVED)).resources.store == new
    finally:
        stale.close()
        loop.run_until_complete(astale.aclose())
        for rt in (frozen, retired, blind):
            rt.close()
        for art in (afrozen, aretired, ablind):
            loop.run_until_complete(art.aclose())

    done = move(workspace, MOVED, finalize=True)  # final backup, old store removed, `check` passes
    record = workspace.registry.require(MOVED)
    assert done.outcome == "finalized" and record.move is None and record.tier is Tier.dedicated
    # The pooled slot was given back with the pooled store; the dedicated one stays.
    assert _slots(workspace, record) == {"pooled": slots["pooled"] - 1, "dedicated": slots["dedicated"] + 1}
    with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as admin:
        assert admin.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0] == 0
        assert admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (new.role,)).fetchone()  # still used
    with psycopg.connect(sandbox.pg_dsn(old.database), autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (old.schema_name,)).fetchone() is None
    report = drill(context_from_workspace(workspace), record)
    assert report.verdict is Verdict.passed, report
    assert runtime.store.history(runtime.context(MOVED), "stale").messages[0].content == "after the switch"
    assert runtime.store.get_document(runtime.context(MOVED), "stale-doc").title == "after the switch"

    # The late runtimes' records name the store the finalize removed (its schema gone, its role's
    # login refused), which was a 503 until their cache expired (a StoreUnavailable for a login, a
    # StoreMoved read again from the same cached record). Now a write lands on the new store at once
    # and a read is a StoreMoved (503) the application's one retry gets past, each runtime having
    # read the registry once more.
    try:
        assert late.context(MOVED).resources.store == old and late.registry.reads == 1
        with pytest.raises(StoreMoved):
            late.store.history(late.context(MOVED), "stale")
        assert late.store.history(late.context(MOVED), "stale").messages[0].content == "after the switch"
        assert late.context(MOVED).resources.store == new and late.registry.reads == 2
        assert unread.context(MOVED).resources.store == old
        msg = unread.store.append(unread.context(MOVED), "late", "user", "stale across the finalize")
        assert (msg.seq, "late") in _rows(sandbox, record) and unread.registry.reads == 2
        with pytest.raises(StoreMoved):
            loop.run_until_complete(alate_history())
        assert loop.run_until_complete(alate_history()).messages[0].content == "after the switch"
        assert alate.registry.reads == 2
        # A transaction (the application's code: never run again for it) is a StoreMoved before its
        # block runs, its retry on the new store.
        with pytest.raises(StoreMoved), txn.store.transaction(txn.context(MOVED)):
            pytest.fail("the block ran on the removed store")
        with txn.store.transaction(txn.context(MOVED)) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == new.database
        assert txn.registry.reads == 2
        with pytest.raises(StoreMoved):
            loop.run_until_complete(atxn_database())
        assert loop.run_until_complete(atxn_database()) == new.database and atxn.registry.reads == 2
        # A transaction on a connection still open to the old store: the application's SQL finds its
        # schema gone (UndefinedTable), a StoreMoved (503) once the registry names another store, the
        # whole block retried there; psycopg's error while the registry cannot be read.
        registry_down(opened, opened_database, psycopg.errors.UndefinedTable)
        with pytest.raises(StoreMoved) as moved_away:
            opened_database()
        assert isinstance(moved_away.value.__cause__, psycopg.errors.UndefinedTable)
        assert opened_database() == new.database and opened.registry.reads == 3
        registry_down(aopened, lambda: loop.run_until_complete(aopened_database()), psycopg.errors.UndefinedTable)
        with pytest.raises(StoreMoved) as moved_away:
            loop.run_until_complete(aopened_database())
        assert isinstance(moved_away.value.__cause__, psycopg.errors.UndefinedTable)
        assert loop.run_until_complete(aopened_database()) == new.database and aopened.registry.reads == 3
    finally:
        late.close()
        unread.close()
        txn.close()
        opened.close()
        loop.run_until_complete(alate.aclose())
        loop.run_until_complete(atxn.aclose())
        loop.run_until_complete(aopened.aclose())
        loop.close()


def _seqs(sandbox, store) -> set[int]:
    with psycopg.connect(sandbox.pg_dsn(store.database), autocommit=True) as conn:
        return {r[0] for r in conn.execute(f'SELECT seq FROM "{store.schema_name}".messages')}


def _ws_writable(sandbox, store) -> bool:
    with psycopg.connect(sandbox.pg_dsn(store.database), autocommit=True) as conn:
        return store_sync.writable(conn, store)


def test_a_tier_move_carries_the_workspaces_schemas_rolls_them_back_and_finalizes(
        provision_tenant, workspace, runtime, sandbox, tenantctl_cli):
    """Pooled -> dedicated with a writer in workspace ``legal``: its schema is
    copied by the same link as the tenant's, frozen with it (its role's writes
    revoked), verified and switched in the same registry write; the rollback
    brings it back with the writes made since, and leaves no link behind; a
    second move is finalized: the old schemas go, each after a final backup.
    After the rollback and after the finalize, `apply --preview` sees the
    tenant unchanged (the stack file the move wrote, its workspaces pinned,
    is what the registry's fingerprint was recorded from)."""
    tid = f"mv-w{run_id()}"
    provision_tenant(tid, workspaces=[{"name": "legal"}, {"name": "finance"}])
    legal, finance = runtime.context(tid, "legal"), runtime.context(tid, "finance")
    for i in range(40):
        runtime.store.append(legal, f"c{i % 3}", "user", f"legal {i}")
    runtime.store.append(finance, "f", "user", "finance only")
    runtime.store.append(runtime.context(tid), "t", "user", "the tenant's")
    old = workspace.registry.require(tid)
    with writing(runtime, tid, workspace="legal") as writer:
        writer.wait_for_acks(5)
        result = move(workspace, tid, tier=Tier.dedicated)
        writer.wait_for_acks(6)  # writes after the switch, on the new store: with the 5 before, over 10
    record = workspace.registry.require(tid)
    assert result.outcome == "switched" and record.tier is Tier.dedicated
    assert result.rows[f"{tid}/legal:messages"] >= 40 and result.rows[f"{tid}/finance:messages"] == 1
    new_db = record.resources.store.database
    for name in ("legal", "finance"):  # switched with the tenant, in the same write; the old schema read-only
        moved_ws, was = record.workspaces[name].store, old.workspaces[name].store
        assert (moved_ws.database, moved_ws.schema_name, moved_ws.role) == (new_db, was.schema_name, was.role)
        assert (_ws_writable(sandbox, was), _ws_writable(sandbox, moved_ws)) == (False, True)
    acked = {seq for seq, _ in writer.acked}  # with the seq each was acknowledged with
    assert len(acked) > 10 and acked <= _seqs(sandbox, record.workspaces["legal"].store)
    assert runtime.store.history(runtime.context(tid, "finance"), "f").messages[0].content == "finance only"
    assert runtime.store.history(runtime.context(tid), "t").messages[0].content == "the tenant's"

    with writing(runtime, tid, workspace="legal") as writer:
        writer.wait_for_acks(5)
        assert move(workspace, tid, rollback=True).outcome == "rolled_back"
    record = workspace.registry.require(tid)
    assert record.tier is Tier.pooled and record.resources.workspaces == old.resources.workspaces
    # Every write acknowledged on either store, the ones since the switch included, is back in the old one.
    assert acked | {seq for seq, _ in writer.acked} <= _seqs(sandbox, old.workspaces["legal"].store)
    assert all(_ws_writable(sandbox, old.workspaces[n].store) for n in ("legal", "finance"))
    assert _replication_left(sandbox) == []
    assert _apply_preview(tenantctl_cli, tid) == (0, "unchanged")

    assert move(workspace, tid, tier=Tier.dedicated).outcome == "switched"
    assert move(workspace, tid, finalize=True).outcome == "finalized"
    record = workspace.registry.require(tid)
    assert record.move is None and {w.store.database for w in record.workspaces.values()} == {
        record.resources.store.database} != {old.resources.store.database}
    with psycopg.connect(sandbox.pg_dsn(old.resources.store.database), autocommit=True) as conn:
        assert conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (
            [w.store.schema_name for w in old.workspaces.values()],)).fetchall() == []
    admin = context_from_workspace(workspace)
    for name in ("legal", "finance"):  # each old schema backed up under its own key before it went
        finals = [b for b in list_backups(admin.s3, workspace_view(record, name)) if b.reason == "final"]
        assert [(b.workspace, b.key_arn) for b in finals][-1:] == [(name, record.workspaces[name].kms_key_arn)]
    assert len(_seqs(sandbox, record.workspaces["finance"].store)) == 1
    assert _apply_preview(tenantctl_cli, tid) == (0, "unchanged")
    deprovision(workspace, tid, final_backup=False)


def _apply_preview(tenantctl_cli, tenant_id: str) -> tuple[int, str]:
    """`tenantctl apply --preview` of the tenant alone: its exit code and what it plans for it."""
    run = tenantctl_cli("apply", "--preview", "--match", tenant_id, "--json")
    [planned] = [t for t in json.loads(run.stdout)["results"] if t["tenant_id"] == tenant_id]
    return run.returncode, planned["action"]


def test_a_finalize_logs_in_to_the_old_store_once_to_drop_the_way_back(provision_tenant, workspace, sandbox,
                                                                        monkeypatch):
    """The finalize asks whether the old store's database is still there
    (``Mover.leaving``) by connecting to it, and drops the link the old store
    follows the new one by (``stop_way_back``) through that same connection:
    one login to the old database, not one to ask and another to drop."""
    tid = f"mv-l{run_id()}"
    old = provision_tenant(tid).resources.store
    logins = []
    connect = mover.Mover.connect

    def counted(self, store):
        logins.append(store.database)
        return connect(self, store)

    try:
        assert move(workspace, tid, tier=Tier.dedicated).outcome == "switched"
        monkeypatch.setattr(mover.Mover, "connect", counted)
        assert move(workspace, tid, finalize=True).outcome == "finalized"
        assert logins.count(old.database) == 1, logins
        assert _replication_left(sandbox) == []  # the way back dropped all the same
    finally:
        monkeypatch.undo()
        deprovision(workspace, tid, final_backup=False)  # its VPC is one of the session sandbox's five


def test_refusals_create_nothing(moved, workspace):
    before = workspace.registry.require(MOVED)
    spec_file = (workspace.stacks_dir / f"Pulumi.{MOVED}.yaml").read_text()
    with pytest.raises(InvalidInput, match="no such cell"):
        move(workspace, MOVED, tier=Tier.pooled, cell="nowhere")
    assert move(workspace, MOVED, cell=before.cell).outcome == "unchanged"  # its own cell, its own tier
    # The tenant's cell holds as many pooled tenants as it takes: no pooled slot for the move.
    slots = _slots(workspace, before)
    full = {**slots, "pooled": workspace.cell(before.cell).max_pooled_tenants}
    workspace.registry.set_counts(before.cell, full)
    try:
        with pytest.raises(QuotaExceeded, match="no pooled slot"):
            move(workspace, MOVED, tier=Tier.pooled)
        assert _slots(workspace, before) == full  # nothing taken
    finally:
        workspace.registry.set_counts(before.cell, slots)
    # A stack file edited since its last apply: the move would apply the edit with it (a tier
    # edited there would also name the store it retires wrongly), so it is refused first.
    other = Tier.pooled if before.tier is Tier.dedicated else Tier.dedicated
    path = workspace.stacks_dir / f"Pulumi.{MOVED}.yaml"
    doc = yaml.safe_load(spec_file)
    tenant = doc["config"]["tenantctl:tenant"]
    retiered = {key: value for key, value in tenant.items() if key != "dedicated"} | {"tier": other.value}
    delayed = tenant | {"queue": tenant["queue"] | {"delay_seconds": 7}}
    try:
        for spec, says in ((retiered, f"says `tier: {other.value}`"), (delayed, "edited since its last apply")):
            config = doc["config"] | {"tenantctl:tenant": spec}
            path.write_text(yaml.safe_dump(doc | {"config": config}, sort_keys=False))
            with pytest.raises(InvalidInput, match=says) as refused:
                move(workspace, MOVED, tier=other)
            assert refused.value.rule == "unapplied-edits"
            assert _slots(workspace, before) == slots
    finally:
        path.write_text(spec_file)
    after = workspace.registry.require(MOVED)
    assert (after.version, after.move, after.lock) == (before.version, None, None)
    assert path.read_text() == spec_file


def test_the_freeze_waits_for_a_position_after_every_acknowledged_commit(moved, workspace, runtime, sandbox):
    """With asynchronous commit (the sandbox's), a write is acknowledged before
    its commit record is written: the WAL position the catch-up waits for must
    be after that commit, and flushed, or the subscription confirms it early."""
    store = workspace.registry.require(MOVED).resources.store
    runtime.store.append(runtime.context(MOVED), "freeze", "user", "acknowledged")
    with psycopg.connect(sandbox.pg_dsn(store.database), autocommit=True) as conn:
        committed = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]  # past that commit record
        try:
            frozen_at = store_sync.quiesce(_admin(sandbox), [store], 10.0)
            flushed = conn.execute("SELECT pg_current_wal_flush_lsn()").fetchone()[0]
        finally:
            store_sync.set_writable(conn, store, True)
        assert conn.execute("SELECT %s::pg_lsn >= %s::pg_lsn AND %s::pg_lsn >= %s::pg_lsn",
                            (frozen_at, str(committed), str(flushed), frozen_at)).fetchone()[0], \
            (frozen_at, committed, flushed)


def test_the_freeze_waits_out_a_writer_writing_the_tables_in_the_other_order(moved, workspace, sandbox):
    """A transaction holding the last table when the freeze begins, then
    writing the first: the freeze waits for it to end and returns a position
    after its commit. (A SHARE lock taken on every table in order deadlocked
    with it: the lock holds the first table and waits for the last.)"""
    store = workspace.registry.require(MOVED).resources.store
    tables = [sql.Identifier(store.schema_name, t) for t in (TABLES[-1], TABLES[0])]
    frozen: list[str] = []
    with psycopg.connect(sandbox.pg_dsn(store.database), autocommit=True) as writer:
        try:
            writer.execute("BEGIN")
            writer.execute(sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(tables[0]))  # a write's lock
            freezing = threading.Thread(target=lambda: frozen.append(
                store_sync.quiesce(_admin(sandbox), [store], 120.0)))
            freezing.start()
            wait_for("the freeze begun", lambda: not _ws_writable(sandbox, store) or not freezing.is_alive())
            assert freezing.is_alive() and not frozen  # waiting for the write under way
            writer.execute(sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(tables[1]))
            writer.execute("SELECT pg_logical_emit_message(true, 'test', 'a write')")  # a commit record
            writer.execute("COMMIT")
            committed = writer.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
            freezing.join(120)
            assert frozen and writer.execute("SELECT %s::pg_lsn >= %s::pg_lsn",
                                             (frozen[0], str(committed))).fetchone()[0], (frozen, committed)
        finally:
            store_sync.set_writable(writer, store, True)


def test_a_target_not_caught_up_in_time_ends_the_freeze_with_nothing_switched(
        moved, workspace, runtime, sandbox, monkeypatch):
    """The subscription is stopped as the freeze begins, so the target never
    confirms the freeze's position: the move fails (exit 7) after the catch-up
    timeout with the tenant writable on its store; a re-run switches."""
    before = workspace.registry.require(MOVED)
    freeze = store_sync.quiesce

    def stalled(connect, stores, timeout):
        with connect(workspace.registry.require(MOVED).move.new_store) as conn:
            for (name,) in conn.execute("SELECT subname FROM pg_subscription").fetchall():
                conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(sql.Identifier(name)))
        return freeze(connect, stores, timeout)

    monkeypatch.setattr(mover, "CATCH_UP_TIMEOUT", 1.0)
    monkeypatch.setattr(store_sync, "quiesce", stalled)
    with pytest.raises(TargetUnavailable, match="catch-up"):
        move(workspace, MOVED, tier=Tier.pooled)
    record = workspace.registry.require(MOVED)
    assert (record.tier, record.resources, record.move.phase, record.lock) == (
        Tier.dedicated, before.resources, MovePhase.copying, None)
    runtime.store.append(runtime.context(MOVED), "stalled", "user", "the source takes writes again")
    monkeypatch.undo()
    with _admin(sandbox)(record.move.new_store) as conn:
        for (name,) in conn.execute("SELECT subname FROM pg_subscription").fetchall():
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(sql.Identifier(name)))
    assert move(workspace, MOVED).outcome == "switched"
    assert runtime.store.history(runtime.context(MOVED), "stalled").messages[0].content == \
        "the source takes writes again"
    assert move(workspace, MOVED, rollback=True).outcome == "rolled_back"
    assert workspace.registry.require(MOVED).resources == before.resources


def test_a_server_with_no_slot_for_the_way_back_refuses_the_switch_with_the_tenant_writable(
        moved, workspace, runtime, sandbox, monkeypatch):
    """After a switch the old store follows the new one by a link whose slot
    is on the new store's server. With every slot there taken as the freeze
    begins, and any the freeze frees (the sandbox's one server holds the
    link it stops too; physical slots the test makes and drops), the switch
    is refused (exit 3, rule ``replication-slots``) before anything is
    switched: the tenant writable on its old store, the move back in
    ``copying``. A run
    that dies once it took that slot leaves nothing once rolled back; with
    the slots free a re-run switches."""
    before = workspace.registry.require(MOVED)
    freeze, stop, taken = store_sync.quiesce, store_sync.stop, []

    def take_every_slot() -> None:
        with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as admin:
            free = admin.execute("SELECT current_setting('max_replication_slots')::int - count(*) "
                                 "FROM pg_replication_slots").fetchone()[0]
            for _ in range(free):
                taken.append(f"full_{len(taken)}")
                admin.execute("SELECT pg_create_physical_replication_slot(%s)", (taken[-1],))

    def frozen_full(connect, stores, timeout):
        take_every_slot()
        return freeze(connect, stores, timeout)

    def stopped_full(connect, link):  # the slot a stopped link frees is taken too, as on a server of its own
        stop(connect, link)
        take_every_slot()

    monkeypatch.setattr(store_sync, "quiesce", frozen_full)
    monkeypatch.setattr(store_sync, "stop", stopped_full)
    try:
        with pytest.raises(InvalidInput) as refused:
            move(workspace, MOVED, tier=Tier.pooled)
    finally:
        monkeypatch.undo()
        with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as admin:
            for name in taken:
                admin.execute("SELECT pg_drop_replication_slot(%s)", (name,))
    assert taken and refused.value.exit_code == 3 and refused.value.rule == "replication-slots"
    assert "max_replication_slots" in str(refused.value) and "nothing was switched" in str(refused.value)
    record = workspace.registry.require(MOVED)
    assert (record.tier, record.resources, record.move.phase, record.lock) == (
        Tier.dedicated, before.resources, MovePhase.copying, None)
    with _admin(sandbox)(record.move.old_store) as conn:
        assert store_sync.writable(conn, record.move.old_store)
    runtime.store.append(runtime.context(MOVED), "refused", "user", "the old store takes writes")

    def dies(connect, store):
        raise RuntimeError("killed")

    monkeypatch.setattr(store_sync, "pin", dies)
    with pytest.raises(RuntimeError, match="killed"):
        move(workspace, MOVED)
    monkeypatch.undo()
    with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as admin:  # the link's slot and the way back's
        assert admin.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE %s",
                             (store_sync.link_name(MOVED, 0)[:-1] + "%",)).fetchone()[0] == 2
    assert move(workspace, MOVED, rollback=True).outcome == "rolled_back"
    assert _replication_left(sandbox) == []
    assert workspace.registry.require(MOVED).resources == before.resources

    assert move(workspace, MOVED, tier=Tier.pooled).outcome == "switched"
    assert runtime.store.history(runtime.context(MOVED), "refused").messages[0].content == \
        "the old store takes writes"
    assert move(workspace, MOVED, rollback=True).outcome == "rolled_back"
    assert workspace.registry.require(MOVED).resources == before.resources


def test_a_hibernated_tenant_is_woken_to_move_and_no_flag_outlives_its_store(moved, workspace, runtime, sandbox):
    """A move copies from the tenant's store, so a hibernated dedicated tenant
    is woken first; the flags an older tenantctl left behind (for an instance
    that is gone, on a tenant since moved to pooled) stop neither the runtime
    nor `resume`, which clears them and says so."""
    rds = aws(sandbox, "rds")
    instance = naming.rds_identifier(MOVED)

    def instance_state() -> str:
        return rds.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"][0]["DBInstanceStatus"]

    def left_behind(db_instance: str = instance) -> None:
        """The flag written past the registry writer, as an older tenantctl left it; the runtime sees it."""
        current = workspace.registry.require(MOVED)
        write_record(sandbox, current.model_copy(update={"hibernation": Hibernation(
            db_instance=db_instance, region=current.region)}))
        runtime.registry.invalidate(MOVED)

    def served(content: str) -> None:
        asked = runtime.waker.describes
        assert runtime.store.append(runtime.context(MOVED), "slept", "user", content).content == content
        assert runtime.waker.describes == asked  # the flag is no reason to call RDS

    # Dedicated, its flag naming an instance that no longer exists: served, and `resume` clears it.
    left_behind("tenantctl-mv-a-before")
    assert runtime.store.append(runtime.context(MOVED), "slept", "user", "first").content == "first"
    served("no second look")
    woken, done = wake(workspace, MOVED)
    assert woken.hibernation is None and woken.lock is None
    assert done == "stale hibernation cleared: database instance tenantctl-mv-a-before no longer exists"

    slept, _ = hibernate(workspace, MOVED, force=True)
    assert slept.store_hibernation is not None and instance_state() == "stopped"
    lines: list[str] = []
    result = move(workspace, MOVED, tier=Tier.pooled, progress=lines.append)
    record = workspace.registry.require(MOVED)
    assert result.outcome == "switched" and record.tier is Tier.pooled and record.hibernation is None
    assert f"move {MOVED}: woken from hibernation (a move copies from its store)" in lines
    assert instance_state() == "available"  # and followed the new store, read-only, for the rollback window
    with pytest.raises(Conflict, match=r"being moved \(switched\)"):
        hibernate(workspace, MOVED, force=True)

    # Hibernated while the move was open (as an older tenantctl let it be): the pooled tenant is served as is,
    # `status` calls the flag stale, and the finalize's first write drops it.
    left_behind()
    served("while switched")
    assert any(label == "hibernation" and "stale" in text for label, text in _record_rows(
        workspace.registry.require(MOVED)))
    # As a finalize killed right after writing the old store unprotected left it: the file says so, the live
    # instance does not. The finalize asks the live instance and lifts it with one ModifyDBInstance, the old
    # store going with its one `up` (no whole-stack `up` to lift it first).
    assert rds.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"][0]["DeletionProtection"]
    path = stack_file(workspace.stacks_dir, MOVED)
    spec = read_tenant(path)
    write_tenant(workspace.stacks_dir, spec.model_copy(update={"retiring": spec.retiring.model_copy(update={
        "dedicated": spec.retiring.dedicated.model_copy(update={"deletion_protection": False})})}))
    ups: list[str] = []
    up = workspace.engine.up
    with pytest.MonkeyPatch.context() as m:
        m.setattr(workspace.engine, "up", lambda stack, **kw: (ups.append(stack), up(stack, **kw))[1])
        assert move(workspace, MOVED, finalize=True).outcome == "finalized"
    assert ups == [MOVED]
    record = workspace.registry.require(MOVED)
    assert record.tier is Tier.pooled and record.move is None and record.hibernation is None
    with pytest.raises(rds.exceptions.DBInstanceNotFoundFault):  # the dedicated store went with the finalize
        instance_state()

    # A suspended pooled tenant with a flag for that deleted instance (what QA found): resumed all the same.
    assert set_suspended(workspace, MOVED, True)[0].status is TenantStatus.suspended
    left_behind()
    back, done = resume(workspace, MOVED)
    assert back.status is TenantStatus.active and back.hibernation is None
    assert done == [f"stale hibernation cleared: it named database instance {instance} ({record.region}), "
                    "which is not the store of this pooled tenant", "suspension lifted"]
    served("resumed")


def _checks(sandbox, store: dict, tenant_id: str) -> dict:
    with psycopg.connect(sandbox.pg_dsn(store["database"]), autocommit=True) as conn:
        return table_checks(conn, store["schema_name"], tenant_id)


def _replication_left(sandbox) -> list:
    with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as admin:
        dbs = [r[0] for r in admin.execute("SELECT datname FROM pg_database WHERE NOT datistemplate")]
        left = admin.execute("SELECT slot_name FROM pg_replication_slots").fetchall()
    for db in dbs:
        with psycopg.connect(sandbox.pg_dsn(db), autocommit=True) as conn:
            left += conn.execute("SELECT pubname FROM pg_publication UNION ALL "
                                 "SELECT subname FROM pg_subscription WHERE subdbid = "
                                 "(SELECT oid FROM pg_database WHERE datname = current_database())").fetchall()
    return left


def _unfollowed(sandbox, store: dict, statement: str) -> str:
    """``statement`` ({} the store's `messages`) run on ``store`` with that
    table out of the publication there for its length: a change the store's
    follower never gets. Returns row 7's conversation before it."""
    table = sql.Identifier(store["schema_name"], "messages")
    with psycopg.connect(sandbox.pg_dsn(store["database"]), autocommit=True) as conn:
        was = conn.execute(sql.SQL("SELECT conversation_id FROM {} WHERE seq = 7").format(table)).fetchone()[0]
        (name,), = conn.execute("SELECT pubname FROM pg_publication").fetchall()
        publication = sql.Identifier(name)
        conn.execute(sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(publication, table))
        assert conn.execute(sql.SQL(statement).format(table)).rowcount == 1
        conn.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(publication, table))
    return was


def _way_back(sandbox, old: dict, new: dict) -> tuple[bool, bool]:
    """(the old store's database subscribes, enabled; the new store's keeps the slot it reads)."""
    with psycopg.connect(sandbox.pg_dsn(old["database"]), autocommit=True) as conn:
        subscribed = conn.execute("SELECT coalesce(bool_and(subenabled), false) FROM pg_subscription WHERE subdbid = "
                                  "(SELECT oid FROM pg_database WHERE datname = current_database())").fetchone()[0]
    with psycopg.connect(sandbox.pg_dsn(new["database"]), autocommit=True) as conn:
        slot = conn.execute("SELECT count(*) = 1 FROM pg_replication_slots WHERE database = current_database()"
                            ).fetchone()[0]
    return subscribed, slot


def _writable(sandbox, store: dict) -> bool:
    with psycopg.connect(sandbox.pg_dsn(store["database"]), autocommit=True) as conn:
        return bool(conn.execute("SELECT has_table_privilege(%s, %s, 'INSERT')",
                                 (store["role"], f"{store['schema_name']}.messages")).fetchone()[0])


def _counted_as_recounted(workspace) -> None:
    """The default cell's counter holds what a recount of the records finds."""
    counts = workspace.registry.cell_counts(["default"])["default"][0]
    assert workspace.registry.recount("default") == {"pooled": counts["pooled"], "dedicated": counts["dedicated"]}


def test_a_killed_move_resumes_or_rolls_back_with_nothing_lost_and_nothing_left(
        sandbox, workspace, runtime, tmp_path_factory):
    """Real CLI processes killed (os._exit) right after the move recorded a
    phase: frozen (then rolled back) and copying (then resumed and finalized)."""
    cli = Cli.create(sandbox, tmp_path_factory.mktemp("move-cli"))
    tid = f"mv-k{run_id()}"
    assert cli("provision", tid).returncode == 0
    for i in range(50):
        runtime.store.append(runtime.context(tid), f"c{i % 3}", "user", f"m{i}")
    pooled = registry_record(sandbox, tid)["resources"]["store"]
    before = _checks(sandbox, pooled, tid)

    # Killed holding the lock, its move not recorded yet: no slot is taken for a move that does not exist.
    slots = workspace.registry.cell_counts(["default"])["default"][0]
    killed = cli("move", tid, "--tier", "dedicated", env={"TENANTCTL_FAULT_AFTER": "move:locked"})
    assert killed.returncode == 86, killed
    assert registry_record(sandbox, tid)["move"] is None
    assert workspace.registry.cell_counts(["default"])["default"][0] == slots
    assert workspace.registry.recount("default") == {"pooled": slots["pooled"], "dedicated": slots["dedicated"]}

    killed = cli("move", tid, "--tier", "dedicated", env={"TENANTCTL_FAULT_AFTER": "move:freezing"})
    assert killed.returncode == 86, killed
    assert registry_record(sandbox, tid)["move"]["phase"] == "freezing"
    # `refresh` reads a tenant whose lock's holder provably died (before: skipped, `not read`, exit 0 as if
    # clean, right when the killed run may have left something half-done); only a live holder is waited for.
    refreshed = cli("refresh", tid, "--json")
    assert refreshed.returncode == 0 and refreshed.json()["counts"]["skipped"] == 0, refreshed
    # The killed run's lock names a process gone from this host: the next run clears it itself. That rollback
    # killed in the `up` removing the dedicated store (its stack file already the pooled spec again) is finished
    # by the next (before: it cleared the move with the store half removed, `check` failing).
    rolled = cli("move", tid, "--rollback", env={"TENANTCTL_FAULT_AFTER": "3"})
    assert rolled.returncode == 86, rolled
    # That run killed right after the write ending the move: the target's slot was given back in that write
    # (before: by a write after it, so the cell counted one slot too many until `cell show --recount`).
    rolled = cli("move", tid, "--rollback", env={"TENANTCTL_FAULT_AFTER": "move:cleared"})
    assert rolled.returncode == 86, rolled
    _counted_as_recounted(workspace)
    record = registry_record(sandbox, tid)
    assert (record["tier"], record["move"]) == ("pooled", None)
    assert _checks(sandbox, record["resources"]["store"], tid) == before
    assert _replication_left(sandbox) == []
    # The dedicated store's VPC, instance, groups... gone; its final snapshot kept, as every deleted instance's is.
    assert inventory(sandbox, tid) == {**POOLED, "rds:snapshot": 1}
    runtime.store.append(runtime.context(tid), "c0", "user", "writable again")

    killed = cli("move", tid, "--tier", "dedicated", env={"TENANTCTL_FAULT_AFTER": "move:copying"})
    assert killed.returncode == 86, killed
    # Its secret rotated by the dedicated store's function, its tags saying dedicated: what the move set.
    checked = cli("check", tid)
    assert checked.returncode == 0, checked
    # Resumed, and that run killed right after recording the switch (window 0: it ends at the switch), before
    # pointing the tenant's secret at the new store: the next run finishes that, not only says "switched".
    killed = cli("move", tid, "--window-hours", "0", env={"TENANTCTL_FAULT_AFTER": "move:switched"})
    assert killed.returncode == 86, killed
    # The stores compared by the run resuming it (before: it carried on switched, never compared): a row of the
    # new store its old one never got (as a copy that got it wrong leaves) is reported, exit 9, and nothing the
    # way back needs is touched: the move stays switched, the old store following the new one, unchanged.
    new = registry_record(sandbox, tid)["resources"]["store"]
    followed = _checks(sandbox, pooled, tid)
    assert _checks(sandbox, new, tid) == followed
    was = _unfollowed(sandbox, new, "UPDATE {} SET conversation_id = CASE conversation_id WHEN 'c0' THEN 'c1' "
                      "ELSE 'c0' END WHERE seq = 7")  # another conversation of the tenant's
    # Interrupted as it records that the new store's writes are refused (the write made, its answer not back):
    # exit 130 and the writes given back, not a tenant refusing writes until someone re-runs the move.
    interrupted = cli("move", tid, env={"TENANTCTL_FAULT_AFTER": "move:switched",
                                        "TENANTCTL_FAULT_POINT": "interrupted"})
    assert interrupted.returncode == 130, interrupted
    record = registry_record(sandbox, tid)
    assert (record["move"]["phase"], record["move"]["reverifying"], record["lock"]) == ("switched", False, None)
    assert _writable(sandbox, new)
    differs = cli("move", tid, "--json")
    assert differs.returncode == 9, differs
    said = differs.json()["error"]["message"]
    assert "differs from the source" in said and "messages:" in said and "Nothing was rolled back" in said, said
    assert f"`tenantctl move {tid} --rollback`" in said, said
    record = registry_record(sandbox, tid)
    assert (record["move"]["phase"], record["move"]["reverifying"], record["lock"]) == ("switched", False, None)
    assert record["resources"]["store"] == new and _checks(sandbox, pooled, tid) == followed
    assert _way_back(sandbox, pooled, new) == (True, True) and _writable(sandbox, new)
    _unfollowed(sandbox, new, f"UPDATE {{}} SET conversation_id = '{was}' WHERE seq = 7")  # as the copy made it
    resumed = cli("move", tid, "--json")
    assert resumed.returncode == 0, resumed
    assert (resumed.json()["outcome"], resumed.json()["verified"]) == ("switched", True), resumed
    assert resumed.json()["rows"]["messages"] == followed["messages"].rows, resumed
    assert _writable(sandbox, new) and not registry_record(sandbox, tid)["move"]["reverifying"]
    record = registry_record(sandbox, tid)
    secret = json.loads(aws(sandbox, "secretsmanager").get_secret_value(
        SecretId=record["resources"]["store"]["secret_arn"])["SecretString"])
    assert (secret["host"], secret["dbname"]) == (record["resources"]["store"]["endpoint"],
                                                  record["resources"]["store"]["database"]) != ("", pooled["database"])
    assert record["tier"] == "dedicated" and record["move"]["phase"] == "switched"
    other = cli("move", tid, "--tier", "pooled", "--json")  # another move while this one is open: exit 5, as
    assert other.returncode == 5, other  # a provision's or deprovision's
    assert "is being moved (switched) to dedicated" in other.json()["error"]["message"], other
    assert registry_record(sandbox, tid) == record
    refused = cli("move", tid, "--rollback")
    assert refused.returncode == 3 and refused.stderr.count("\n") == 1, refused
    assert "rollback window ended at" in refused.stderr and "--rollback --past-window" in refused.stderr
    assert registry_record(sandbox, tid) == record
    assert "a rollback needs `--rollback --past-window`" in cli("status", tid).stdout
    assert cli("move", tid, "--past-window").returncode == 2  # only with --rollback: a usage error
    assert _checks(sandbox, record["resources"]["store"], tid) == _checks(sandbox, pooled, tid) != before
    refused = cli("hibernate", tid, "--force")  # its dedicated store, while the move is open: exit 5
    assert refused.returncode == 5 and "is being moved (switched): roll the move back" in refused.stderr, refused
    refused = cli("workspace", "add", tid, "late")  # the move carries the workspaces it started with: exit 5 too
    assert refused.returncode == 5 and "is being moved (switched)" in refused.stderr, refused
    # A run killed while comparing the stores again left the new store's writes refused and the record saying
    # so: runtimes answer 503 meanwhile (`WritesFrozen`), and the next run (here a --finalize) gives them back.
    write_record(sandbox, {**record, "move": {**record["move"], "reverifying": True}})
    with psycopg.connect(sandbox.pg_dsn(new["database"]), autocommit=True) as conn:
        store_sync.set_writable(conn, StoreConnection.model_validate(new), False)
    time.sleep(0.3)  # the runtime's registry TTL
    with pytest.raises(WritesFrozen):
        runtime.store.append(runtime.context(tid), "c0", "user", "while compared")
    # A --finalize killed in the `up` removing the old store (its stack file already without it) is finished
    # by the next one (before: an AssertionError, exit 1, every time, the move stuck open).
    killed = cli("move", tid, "--finalize", env={"TENANTCTL_FAULT_AFTER": "2"})
    assert killed.returncode == 86, killed
    assert _writable(sandbox, new) and not registry_record(sandbox, tid)["move"]["reverifying"]
    # Killed right after the write ending the move, which gave the old store's slot back with it.
    finished = cli("move", tid, "--finalize", env={"TENANTCTL_FAULT_AFTER": "move:cleared"})
    assert finished.returncode == 86, finished
    assert registry_record(sandbox, tid)["move"] is None and _replication_left(sandbox) == []
    _counted_as_recounted(workspace)
    # Killed before activating the tenant: the record names the spec it runs (its fingerprint, as `apply` compares
    # it), not verified yet; `status` says so and how to finish, `apply` would provision it again, and the next
    # `--finalize` activates it (before: the pre-move fingerprint, a dead lock, "has no move to finalize", exit 3).
    record = registry_record(sandbox, tid)
    assert record["spec_digest"] == read_tenant(cli.stack_file(tid)).content_hash() and record["provision_failed"]
    shown = cli("status", tid).stdout
    assert "(that run is no longer running)" in shown and "not yet activated" in shown, shown
    assert f"`tenantctl move {tid} --finalize` finishes it" in shown, shown
    assert _apply_preview(cli, tid) == (12, "update")
    previewed = cli("move", tid, "--preview", "--json")  # what `move ID` would do: activate it, nothing else
    assert previewed.returncode == 12 and previewed.json()["outcome"] == "would_activate", previewed
    assert registry_record(sandbox, tid) == record
    activated = cli("move", tid, "--finalize")
    assert activated.returncode == 0, activated
    assert activated.stdout.strip() == f"tenant {tid}: activated (dedicated in cell default; no move was open, " \
                                       "its last finalize or provision had not been verified)", activated
    assert "a finalize killed after the write ending its move" in activated.stderr, activated
    record = registry_record(sandbox, tid)
    assert (record["status"], record["lock"], record["last_error"], record["provision_failed"]) == (
        "active", None, None, False), record
    again = cli("move", tid, "--finalize")  # nothing left to finish: as after any finalize
    assert again.returncode == 3 and "has no move to finalize" in again.stderr, again
    assert _apply_preview(cli, tid) == (0, "unchanged")
    _counted_as_recounted(workspace)

    # Back to pooled, each --finalize killed at its first resource write until the `up` removing the dedicated
    # store has dropped its database: the next one finishes (before: it connected to that database to drop the
    # way back's subscription, exit 1, every time).
    store = registry_record(sandbox, tid)["resources"]["store"]
    dedicated, held = store["database"], _checks(sandbox, store, tid)
    assert cli("move", tid, "--tier", "pooled").returncode == 0
    for _ in range(10):
        killed = cli("move", tid, "--finalize", env={"TENANTCTL_FAULT_AFTER": "1"})
        assert killed.returncode == 86, killed
        if not _database_exists(sandbox, dedicated):
            break
    assert not _database_exists(sandbox, dedicated) and registry_record(sandbox, tid)["move"] is not None
    finished = cli("move", tid, "--finalize", "--json")
    assert finished.returncode == 0 and finished.json()["outcome"] == "finalized", finished
    record = registry_record(sandbox, tid)
    assert (record["tier"], record["move"], record["lock"]) == ("pooled", None, None)
    assert _checks(sandbox, record["resources"]["store"], tid) == held
    assert _replication_left(sandbox) == [] and _apply_preview(cli, tid) == (0, "unchanged")
    _counted_as_recounted(workspace)
    assert cli("deprovision", tid, "--yes", "--no-final-backup").returncode == 0


def _database_exists(sandbox, database: str) -> bool:
    with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as admin:
        return admin.execute("SELECT EXISTS (SELECT FROM pg_database WHERE datname = %s)", (database,)).fetchone()[0]


def _sync_slots(conn, oid: int) -> dict[str, bool]:
    """The table-sync slots of the subscription of oid ``oid`` on ``conn``'s server, and whether in use."""
    return dict(conn.execute("SELECT slot_name, active FROM pg_replication_slots WHERE slot_name LIKE %s",
                             (f"pg\\_{oid}\\_sync\\_%",)).fetchall())


HELD = 7_411_000  # the advisory lock the test's copies wait on


def test_stopping_a_link_whose_subscription_is_gone_drops_its_table_sync_slot_and_no_other(
        moved, workspace, sandbox):
    """A link whose subscription a killed run dropped while a table's copy
    held its table-sync slot (``pg_<oid>_sync_<relid>_<sysid>``, left by DROP
    SUBSCRIPTION when it cannot reach the source): stopping the link drops
    that slot too, and only it: another link's copy out of the same database
    keeps its own (dropping those left parallel moves hung in `copying`)."""
    from tenantctl.tenant_schema_sql import schema_script

    source = workspace.registry.require(MOVED).resources.store
    connect = _admin(sandbox)
    gone, other = (store_sync.Link(f"tenantctl_move_orphan_{i}", source, source.model_copy(
        update={"database": f"orphan_{i}_{run_id()}"})) for i in (0, 1))
    lockers = []
    with connect(source) as admin:
        try:
            for link in (gone, other):  # each target an empty store of the tenant's schema, in a database of its own
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(link.target.database)))
                with connect(link.target) as dst:
                    dst.execute(schema_script(dst, tenant_id=MOVED, role=f"{link.target.database}_app",
                                              schema=source.schema_name).encode())
                    # Its copy of `messages` waits on an advisory lock the test holds (no transaction id:
                    # a slot is made once those running end), its table-sync slot made on the source.
                    dst.execute(sql.SQL("CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS "
                                        "'BEGIN PERFORM pg_advisory_xact_lock_shared({}); RETURN NULL; END'").format(
                        sql.Identifier(source.schema_name, "held"), sql.Literal(HELD)))
                    messages = sql.Identifier(source.schema_name, "messages")
                    dst.execute(sql.SQL("CREATE TRIGGER held BEFORE INSERT ON {} FOR EACH STATEMENT EXECUTE "
                                        "FUNCTION {}()").format(messages, sql.Identifier(source.schema_name, "held")))
                    dst.execute(sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER held").format(messages))
                lockers.append(connect(link.target))  # advisory locks are a database's own
                lockers[-1].execute("SELECT pg_advisory_lock(%s)", (HELD,))
            slots = {}
            for link in (gone, other):
                store_sync.start(connect, link, sandbox.pg_user, sandbox.pg_password)
                with connect(link.target) as dst:
                    slots[link.name] = (dst.execute("SELECT oid FROM pg_subscription WHERE subname = %s",
                                                    (link.name,)).fetchone()[0],
                                        "pg_{}_sync_{}_{}".format(*dst.execute(
                                            "SELECT s.oid, %s::regclass::oid, c.system_identifier FROM "
                                            "pg_subscription s, pg_control_system() c WHERE s.subname = %s",
                                            (f"{source.schema_name}.messages", link.name)).fetchone()))
            wait_for("both copies' table-sync slots of `messages`", lambda: all(
                slot in _sync_slots(admin, oid) for oid, slot in slots.values()), 60)
            # The killed run: the subscription dropped where the source was out of reach.
            with connect(gone.target) as dst:
                for step in ("ALTER SUBSCRIPTION {} CONNECTION 'host=127.0.0.1 port=1'",
                             "ALTER SUBSCRIPTION {} DISABLE", "ALTER SUBSCRIPTION {} SET (slot_name = NONE)",
                             "DROP SUBSCRIPTION {}"):
                    dst.execute(sql.SQL(step).format(sql.Identifier(gone.name)))
            oid, orphan = slots[gone.name]
            assert orphan in _sync_slots(admin, oid)

            store_sync.stop(connect, gone)
            assert _sync_slots(admin, oid) == {} and not store_sync.has_slot(admin, gone.name)
            # The other copy's, not in use either between its slot's making and its catch-up: kept.
            oid, copying = slots[other.name]
            assert copying in _sync_slots(admin, oid) and store_sync.has_slot(admin, other.name)
        finally:
            for locker in lockers:
                locker.close()
            for link in (gone, other):
                if sandbox.has_database(link.target.database):
                    store_sync.stop(connect, link)
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(link.target.database)))
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(
                    sql.Identifier(f"{link.target.database}_app")))
        assert _replication_left(sandbox) == []


def test_a_move_interrupted_in_its_freeze_ends_the_freeze_with_the_tenant_writable(
        sandbox, runtime, tmp_path_factory):
    """A real CLI process sent SIGTERM (a cancelled CI job; Ctrl-C alike) while
    its freeze waits out a write under way: it ends the freeze as a catch-up
    timeout does (the role writes its store again, the move back in
    `copying`, the lock released) instead of leaving the tenant refusing
    every write until someone runs the move again."""
    cli = Cli.create(sandbox, tmp_path_factory.mktemp("move-term"))
    tid = f"mv-t{run_id()}"
    assert cli("provision", tid).returncode == 0
    store = registry_record(sandbox, tid)["resources"]["store"]
    proc = cli.start("move", tid, "--tier", "dedicated")
    with psycopg.connect(sandbox.pg_dsn(store["database"]), autocommit=True) as writer:
        try:
            wait_for("the move copying", lambda: (registry_record(sandbox, tid)["move"] or {}).get("phase")
                     == "copying" or proc.poll() is not None)
            writer.execute("BEGIN")  # a write under way that does not end: the freeze waits for it
            writer.execute(sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(
                sql.Identifier(store["schema_name"], "messages")))
            insert = (f"{store['schema_name']}.messages", "INSERT")
            revoked = "SELECT NOT has_table_privilege(%s, %s, %s)"
            with psycopg.connect(sandbox.pg_dsn(store["database"]), autocommit=True) as admin:
                wait_for("the freeze begun", lambda: admin.execute(revoked, (store["role"], *insert)).fetchone()[0])
            assert registry_record(sandbox, tid)["move"]["phase"] == "freezing"
            proc.terminate()
            proc.communicate(timeout=60)
        finally:
            writer.execute("ROLLBACK")
    assert proc.returncode == 143
    record = registry_record(sandbox, tid)
    assert (record["move"]["phase"], record["lock"], record["tier"]) == ("copying", None, "pooled"), record
    assert "interrupted" in record["last_error"]
    runtime.registry.invalidate(tid)
    runtime.store.append(runtime.context(tid), "after", "user", "the tenant writes again at once")

    # Ctrl-C right as a run records the freeze (forward: `freezing`; a rollback: `rolling_back`), before
    # the freeze's own steps: the record goes back as well (before: it stayed frozen, every runtime
    # refusing the tenant's writes until someone ran the move again).
    for args, frozen, back in ((("move", tid), "move:freezing", "copying"),
                               (("move", tid, "--rollback"), "move:rolling_back", "switched")):
        if back == "switched":
            assert cli("move", tid).returncode == 0  # the resumed move switched
        stopped = cli(*args, env={FAULT_AFTER_ENV: frozen, FAULT_POINT_ENV: "interrupted"})
        assert stopped.returncode == 130 and stopped.stderr.rstrip().endswith("error: interrupted"), stopped
        record = registry_record(sandbox, tid)
        assert (record["move"]["phase"], record["lock"]) == (back, None), record
        runtime.registry.invalidate(tid)
        runtime.store.append(runtime.context(tid), "after", "user", f"writable after an interrupt at {frozen}")
    rolled = cli("move", tid, "--rollback")
    assert rolled.returncode == 0, rolled
    assert cli("deprovision", tid, "--yes", "--no-final-backup").returncode == 0


RELAYED = "mv-r"


def _table_rows(conn, schema: str, table: str, keys: list[str]) -> list[dict]:
    order = sql.SQL(", ").join(map(sql.Identifier, keys))
    cur = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY {}").format(sql.Identifier(schema, table), order))
    return [dict(zip([d.name for d in cur.description], row, strict=True)) for row in cur.fetchall()]


def test_the_row_relay_carries_every_acknowledged_write_re_wrapped_and_leaves_nothing_behind(
        provision_tenant, workspace, runtime, sandbox):
    """The relay of a move to another key, on the real store: rows copied and
    then followed by change capture while a writer appends through the
    runtime, a cascade delete carried, every sealed column through the
    re-wrap and nothing else, the capture gone afterwards."""
    from tenant_runtime.tables import SEALED_BY_TABLE, TABLES
    from tenantctl.transfer import row_relay

    record = provision_tenant(RELAYED)
    source = record.resources.store
    target = source.model_copy(update={"schema_name": f"{source.schema_name}_relay"})
    wrapped: list[str] = []

    def rewrap(table: str, key: tuple, blob: bytes) -> bytes:
        wrapped.append(table)
        return b"NEWKEY" + blob

    connect = _admin(sandbox)
    with connect(source) as src, connect(target) as dst:
        dst.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema_name)))
        dst.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(target.schema_name)))
        for table in TABLES:  # the target's tables as the source's (keys, identities), in another schema
            dst.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                sql.Identifier(target.schema_name, table), sql.Identifier(source.schema_name, table)))
        ctx = runtime.context(RELAYED)
        runtime.store.append(ctx, "gone", "user", "deleted while the move runs")
        runtime.store.append(ctx, "kept", "user", "before the capture")
        row_relay.install(src, source)
        row_relay.install(src, source)  # idempotent: a resumed prepare runs it again
        with writing(runtime, RELAYED) as writer:
            relay = row_relay.Relay(src, source, dst, target, rewrap, batch=7)
            assert relay.copy() >= 3
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                relay.relay()
            src.execute(sql.SQL("DELETE FROM {} WHERE conversation_id = 'gone'").format(
                sql.Identifier(source.schema_name, "conversations")))
        assert len(writer.acked) > 10 and not writer.errors  # the tenant's login writes on under the triggers
        assert row_relay.pending(src, source) > 0
        relay.catch_up()
        assert row_relay.pending(src, source) == 0
        keys = row_relay.primary_keys(src, source.schema_name)
        for table in TABLES:
            expected = _table_rows(src, source.schema_name, table, keys[table])
            sealed = SEALED_BY_TABLE.get(table)
            if sealed is not None:
                expected = [{**r, sealed.column: b"NEWKEY" + bytes(r[sealed.column])} for r in expected]
            got = [{**r, **({sealed.column: bytes(r[sealed.column])} if sealed else {})}
                   for r in _table_rows(dst, target.schema_name, table, keys[table])]
            assert got == expected, table
        carried = {c for (c,) in dst.execute(sql.SQL("SELECT DISTINCT conversation_id FROM {}").format(
            sql.Identifier(target.schema_name, "messages")))}
        assert carried == {"kept", "live"}  # the cascade delete reached the target
        live = {s for (s,) in dst.execute(sql.SQL("SELECT seq FROM {} WHERE conversation_id = 'live'").format(
            sql.Identifier(target.schema_name, "messages")))}
        assert {seq for seq, _ in writer.acked} <= live  # every acknowledged write is in the target
        assert set(wrapped) == {"messages"}  # sealed columns only, never a key or another column
        # The verification: each side opened with its own key, the digests agree, and see a difference.
        opened = row_relay.digests(src, source, lambda table, key, blob: blob)
        assert opened == row_relay.digests(dst, target, lambda table, key, blob: blob.removeprefix(b"NEWKEY"))
        assert opened["messages"][0] == len(_table_rows(src, source.schema_name, "messages", keys["messages"]))
        dst.execute(sql.SQL("UPDATE {} SET content = content || 'x'::bytea WHERE seq = %s").format(
            sql.Identifier(target.schema_name, "messages")), (writer.acked[-1][0],))
        changed = row_relay.digests(dst, target, lambda table, key, blob: blob.removeprefix(b"NEWKEY"))
        assert changed["messages"] != opened["messages"] and changed["conversations"] == opened["conversations"]
        # The target's identity moved past the relayed rows: the next append there does not collide.
        row_relay.advance_identities(dst, target)
        row_relay.advance_identities(dst, target)
        (seq,) = dst.execute(sql.SQL("INSERT INTO {} (tenant_id, conversation_id, role, content) "
                                     "VALUES (%s, 'live', 'user', 'x') RETURNING seq").format(
            sql.Identifier(target.schema_name, "messages")), (RELAYED,)).fetchone()
        assert seq > max(live)
        row_relay.remove(src, source)
        row_relay.remove(src, source)
        left = src.execute("SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                           "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND t.tgname = %s",
                           (source.schema_name, row_relay.TRIGGER)).fetchone()[0]
        assert left == 0 and src.execute("SELECT to_regclass(%s)", (
            row_relay.changelog(source).as_string(src),)).fetchone()[0] is None
        dst.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(target.schema_name)))
    deprovision(workspace, RELAYED, final_backup=False)


def test_a_backup_of_the_dedicated_store_restores_after_a_move_to_pooled(moved, workspace):
    """A dedicated-era backup (on the sandbox: dump + RDS snapshot) of a tenant
    moved to pooled since: the live instance the scratch instance took its
    settings from is gone, so the dump is restored and verified alone, a note
    saying the snapshot was not restored (before: a failed drill,
    `DBInstanceNotFound ... tenantctl-mv-a`)."""
    ctx = context_from_workspace(workspace)
    if workspace.registry.require(MOVED).tier is not Tier.dedicated:
        move(workspace, MOVED, tier=Tier.dedicated)
        move(workspace, MOVED, finalize=True)
    made = backup(ctx, workspace.registry.require(MOVED))
    assert made.kind == "logical (sandbox)" and made.snapshot is not None
    assert move(workspace, MOVED, tier=Tier.pooled).outcome == "switched"
    assert move(workspace, MOVED, finalize=True).outcome == "finalized"
    report = drill(ctx, workspace.registry.require(MOVED), backup_id=made.backup_id, kind="restore")
    assert report.verdict is Verdict.passed, report.reasons
    assert any(made.snapshot.identifier in note and "pooled" in note for note in report.notes), report.notes
