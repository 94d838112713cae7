"""Shared-pool mode and the async API on the sandbox, tenants provisioned by the
real operation (runtime_tenants.py): the gateway role alone reads nothing, one
connection serves A's transaction then B's and leaks nothing, a query cancelled
mid-flight leaves the connection clean for the next tenant, timeouts map to
StoreTimeout, connections stay bounded, and `tenantctl check` watches the role."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import psycopg
import pytest
from protocol_trace import round_trips
from psycopg import sql
from runtime_tenants import WS_TENANT, jwt_settings, runtime, runtime_env, ws_tenant  # noqa: F401  (fixtures)
from waiting import wait_for

from tenant_runtime import Gateway, StoreTimeout, StoreUnavailable, TenantRuntime
from tenant_runtime.aio import AsyncTenantRuntime


@pytest.fixture(scope="module")
def platform(workspace):
    return workspace.ensure_platform()


@pytest.fixture(scope="module")
def gateway_secret(runtime_env, platform):
    return json.loads(runtime_env.client("secretsmanager").get_secret_value(
        SecretId=platform["gateway_secret_arn"])["SecretString"])


def settings(runtime_env, platform, **options):
    return dict(endpoint_url=runtime_env.sandbox.aws_endpoint_url, region=runtime_env.sandbox.region,
                gateway=Gateway(secret_arn=platform["gateway_secret_arn"], **options))


@pytest.fixture(scope="module")
def shared(runtime_env, platform):
    """A runtime whose shared pool holds one connection: every pooled request uses it."""
    rt = TenantRuntime(jwt_settings(), runtime_env.registry_table, **settings(runtime_env, platform, max_size=1))
    yield rt
    rt.close()


def ctx_of(rt, env, key):
    tid = env.ids[key]
    return rt.resolve(env.token(tid), tid)


def test_the_gateway_role_alone_reads_nothing(runtime, runtime_env, gateway_secret):
    """Logged in as the gateway, without switching role: every tenant table of
    both pooled tenants refuses reads and writes, tenant setting or not."""
    for key in ("a", "b"):
        runtime.store.append(ctx_of(runtime, runtime_env, key), "conv-gw-alone", "user", "a row to hide")
    s = gateway_secret
    with psycopg.connect(host=s["host"], port=s["port"], dbname=s["dbname"], user=s["username"],
                         password=s["password"], autocommit=True) as conn:
        assert conn.execute("SELECT current_user, rolinherit FROM pg_roles WHERE rolname = current_user"
                            ).fetchone() == (s["username"], False)
        for key in ("a", "b"):
            record = runtime_env.record(key)
            schema = record.resources.store.schema_name
            assert not conn.execute("SELECT has_schema_privilege(%s, 'USAGE')", (schema,)).fetchone()[0]
            for table in ("conversations", "messages", "context_items"):
                for setting in (None, record.tenant_id):
                    for statement in ("SELECT count(*) FROM {}", "DELETE FROM {}"):
                        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                            if setting:
                                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (setting,))
                            conn.execute(sql.SQL(statement).format(sql.Identifier(schema, table)))
        # It cannot become anything but a tenant role either.
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("SET LOCAL ROLE postgres")


def test_one_connection_serves_a_then_b_and_leaks_nothing(shared, runtime_env):
    ctx_a, ctx_b = ctx_of(shared, runtime_env, "a"), ctx_of(shared, runtime_env, "b")
    assert shared.store.gateway.serves(ctx_a) and shared.store.gateway.serves(ctx_b)
    shared.store.append(ctx_a, "conv-shared", "user", "only a's")
    shared.store.append(ctx_b, "conv-shared", "user", "only b's")
    seen = []
    for ctx in (ctx_a, ctx_b, ctx_a):  # the store's own transactions (a caller's SQL has its own login)
        with shared.store._transaction(ctx) as conn:
            pid, user, tenant = conn.execute("SELECT pg_backend_pid(), current_user, "
                                             "current_setting('app.tenant_id')").fetchone()
            rows = conn.execute(sql.SQL("SELECT DISTINCT tenant_id FROM {}").format(
                sql.Identifier(ctx.resources.store.schema_name, "messages"))).fetchall()
        seen.append(pid)
        assert (user, tenant, rows) == (ctx.resources.store.role, ctx.tenant_id, [(ctx.tenant_id,)])
        assert [m.content for m in shared.store.history(ctx, "conv-shared").messages] == [
            f"only {ctx.tenant_id[-1]}'s"]
    assert len(set(seen)) == 1  # the same physical connection throughout
    # Between transactions the connection is the gateway again, with no tenant.
    with shared.store.gateway.pool().connection() as conn:
        assert conn.execute("SELECT pg_backend_pid(), current_user, current_setting('app.tenant_id', true)"
                            ).fetchone() in ((seen[0], runtime_env.record("a").resources.store.role, None),
                                             (seen[0], "tenantctl_gateway", None), (seen[0], "tenantctl_gateway", ""))
        assert conn.execute("SELECT current_user").fetchone() == ("tenantctl_gateway",)
    # A's role cannot be used with B's schema, even on this connection.
    with pytest.raises(psycopg.errors.InsufficientPrivilege), shared.store._transaction(ctx_a) as conn:
        conn.execute(sql.SQL("SELECT 1 FROM {}").format(
            sql.Identifier(ctx_b.resources.store.schema_name, "messages")))


ROLE_SWITCHES = ("SET ROLE {b}", "SET LOCAL ROLE {b}", "SELECT set_config('role', '{b}', true)",
                 "DO $$ BEGIN PERFORM set_config('role', '{b}', true); END $$")


def test_a_callers_own_sql_cannot_become_another_tenant(shared, runtime_env):
    """The gateway may become every pooled tenant's role, and SET ROLE is
    checked against the login: ``store.transaction(ctx)`` hands the caller's
    SQL a connection logged in as ``ctx``'s own role, from which neither a
    SET ROLE nor set_config (in a DO block too) reaches B's rows."""
    ctx_a, ctx_b = ctx_of(shared, runtime_env, "a"), ctx_of(shared, runtime_env, "b")
    shared.store.append(ctx_b, "conv-role-escape", "user", "only b's")
    b_role, b_messages = ctx_b.resources.store.role, sql.Identifier(ctx_b.resources.store.schema_name, "messages")
    for switch in ROLE_SWITCHES:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), shared.store.transaction(ctx_a) as conn:
            conn.execute(switch.format(b=b_role))
            conn.execute(sql.SQL("SET LOCAL app.tenant_id = {}").format(sql.Literal(ctx_b.key)))
            conn.execute(sql.SQL("SELECT conversation_id FROM {}").format(b_messages)).fetchall()
    with shared.store.transaction(ctx_a) as conn:
        assert conn.execute("SELECT session_user, current_user").fetchone() == (ctx_a.resources.store.role,) * 2


@pytest.mark.anyio
async def test_async_a_callers_own_sql_cannot_become_another_tenant(runtime_env, platform):
    async with AsyncTenantRuntime(jwt_settings(), runtime_env.registry_table,
                                  **settings(runtime_env, platform, max_size=1)) as art:
        ctx_a = await art.resolve(runtime_env.token(runtime_env.ids["a"]), runtime_env.ids["a"])
        ctx_b = await art.resolve(runtime_env.token(runtime_env.ids["b"]), runtime_env.ids["b"])
        b_messages = sql.Identifier(ctx_b.resources.store.schema_name, "messages")
        for switch in ROLE_SWITCHES:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                async with art.store.transaction(ctx_a) as conn:
                    await conn.execute(switch.format(b=ctx_b.resources.store.role))
                    await (await conn.execute(sql.SQL("SELECT conversation_id FROM {}").format(b_messages))).fetchall()


@pytest.mark.anyio
async def test_workspaces_ride_the_shared_pool_and_the_async_api_as_their_own_roles(
        shared, runtime_env, platform, ws_tenant):
    token = runtime_env.token(WS_TENANT, workspaces=["finance", "legal"])
    contexts = [shared.resolve(token, WS_TENANT, workspace=ws) for ws in (None, "finance", "legal")]
    for ctx in contexts:  # one gateway connection, switched to the workspace's role and key per transaction
        assert shared.store.gateway.serves(ctx)
        shared.store.append(ctx, "conv-ws-pool", "user", f"only {ctx.key}")
        with shared.store.transaction(ctx) as conn:
            assert conn.execute("SELECT current_user, current_setting('app.tenant_id')").fetchone() == (
                ctx.resources.store.role, ctx.key)
    for ctx in contexts:
        assert [m.content for m in shared.store.history(ctx, "conv-ws-pool").messages] == [f"only {ctx.key}"]
    async with AsyncTenantRuntime(jwt_settings(), runtime_env.registry_table, **settings(runtime_env, platform)) as art:
        for ws in ("finance", "legal"):
            ctx = await art.resolve(token, WS_TENANT, workspace=ws)
            await art.store.append(ctx, "conv-ws-async", "user", ws)
            assert [m.content for m in (await art.store.history(ctx, "conv-ws-async")).messages] == [ws]


def test_a_shared_pool_append_is_four_round_trips_begin_and_the_scope_in_one(shared, runtime_env):
    """Through the shared pool: the checkout's check (an empty query), then
    BEGIN with the role and the tenant in one query, the statement, COMMIT
    (five before: BEGIN alone first), read from libpq's protocol trace of the
    pool's one connection."""
    ctx = ctx_of(shared, runtime_env, "a")
    shared.store.append(ctx, "conv-shared-trips", "user", "warm")
    with shared.store.gateway.pool().connection() as conn:
        pass  # the pool's only connection: the next request draws it
    scope = f"BEGIN; SET LOCAL role = '{ctx.resources.store.role}'; SET LOCAL app.tenant_id = '{ctx.key}'"
    with round_trips(conn) as trips:
        shared.store.append(ctx, "conv-shared-trips", "user", "counted")
    assert len(trips) == 4 and trips[0] == "" and trips[1].startswith(scope) and trips[3] == "COMMIT", trips
    assert "INSERT INTO" in trips[2], trips  # no server-side prepared statement on the gateway's connections


def test_dedicated_tenants_keep_their_own_login(shared, runtime_env):
    ctx_d = ctx_of(shared, runtime_env, "d")
    assert not shared.store.gateway.serves(ctx_d)
    shared.store.append(ctx_d, "conv-own-login", "user", "dedicated")
    with shared.store.transaction(ctx_d) as conn:
        assert conn.execute("SELECT session_user").fetchone() == (ctx_d.resources.store.role,)


def gateway_connections(env) -> int:
    with env.admin() as admin:
        return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                             "'tenant_runtime_gateway' AND usename = 'tenantctl_gateway'").fetchone()[0]


def test_connections_stay_bounded_whatever_the_concurrency(runtime_env, platform):
    others = gateway_connections(runtime_env)  # other runtimes of this module
    rt = TenantRuntime(jwt_settings(), runtime_env.registry_table, **settings(runtime_env, platform, max_size=2))
    ctxs = [ctx_of(rt, runtime_env, key) for key in ("a", "b")]
    errors: list[Exception] = []

    def work(i: int) -> None:
        try:
            for n in range(10):
                rt.store.append(ctxs[(i + n) % 2], f"conv-bounded-{i}", "user", f"message {n}")
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        stats = rt.store.gateway.stats()
        assert gateway_connections(runtime_env) - others <= 2
        assert stats["pool_size"] <= 2 and stats["requests_num"] >= 120
    finally:
        rt.close()


def end_backend(env, pid: int) -> None:
    """As admin: end one backend (as a restart or an idle timeout would) and wait until it is gone."""
    with env.admin() as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        wait_for(f"backend {pid} gone", lambda: not admin.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone())


def test_an_idle_pool_connection_the_server_closed_is_replaced_before_the_next_request(runtime_env, platform):
    """A pool of one whose idle connection the server ended: the next request
    is served on a new backend (the checkout's check), not failed."""
    rt = TenantRuntime(jwt_settings(), runtime_env.registry_table, **settings(runtime_env, platform, max_size=1))
    try:
        ctx = ctx_of(rt, runtime_env, "a")
        rt.store.append(ctx, "conv-pool-terminated", "user", "before")
        with rt.store.gateway.pool().connection() as conn:
            idle = conn.info.backend_pid
        end_backend(runtime_env, idle)
        rt.store.append(ctx, "conv-pool-terminated", "user", "after")
        with rt.store._transaction(ctx) as conn:  # the pool's connection
            assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] != idle
        assert [m.content for m in rt.store.history(ctx, "conv-pool-terminated").messages] == ["after", "before"]
    finally:
        rt.close()


def test_a_statement_timeout_is_a_store_timeout(runtime_env, platform):
    rt = TenantRuntime(jwt_settings(), runtime_env.registry_table, statement_timeout=0.2,
                       **settings(runtime_env, platform, max_size=1))
    try:
        ctx = ctx_of(rt, runtime_env, "a")
        with pytest.raises(StoreTimeout) as err, rt.store._transaction(ctx) as conn:  # the pool's connection
            conn.execute("SELECT pg_sleep(2)")
        assert err.value.status_code == 503 and err.value.code == "store_timeout"
        rt.store.append(ctx, "conv-after-timeout", "user", "the connection still works")
    finally:
        rt.close()


# -- the async API ---------------------------------------------------------------------

@pytest.fixture
def anyio_backend():
    return "asyncio"


async def _cancel_mid_query_then_serve_b(art, runtime_env, key_a: str, key_b: str) -> tuple[int, int]:
    ctx_a, ctx_b = await art.resolve(runtime_env.token(runtime_env.ids[key_a]), runtime_env.ids[key_a]), \
        await art.resolve(runtime_env.token(runtime_env.ids[key_b]), runtime_env.ids[key_b])
    await art.store.append(ctx_b, "conv-cancel", "user", "b after a's cancelled query")
    started = asyncio.Event()
    pids = []

    async def slow_for_a() -> None:
        async with art.store._transaction(ctx_a) as conn:  # the pool's connection
            pids.append((await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0])
            started.set()
            await conn.execute("SELECT pg_sleep(30)")

    task = asyncio.create_task(slow_for_a())
    await asyncio.wait_for(started.wait(), 120)

    def sleeping() -> bool:
        with runtime_env.admin() as admin:
            return bool(admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event = 'PgSleep'",
                                      (pids[0],)).fetchone())

    # Cancelled once the query runs on the server (a cancel before it was sent would prove nothing of it).
    await asyncio.to_thread(wait_for, "a's query running on the server", sleeping)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 25)  # cancelled on the server too: not 30 s
    async with art.store._transaction(ctx_b) as conn:
        pid, user, tenant = await (await conn.execute(
            "SELECT pg_backend_pid(), current_user, current_setting('app.tenant_id')")).fetchone()
        assert (user, tenant) == (ctx_b.resources.store.role, ctx_b.tenant_id)
    page = await art.store.history(ctx_b, "conv-cancel")
    assert {m.content for m in page.messages} == {"b after a's cancelled query"}
    return pids[0], pid


@pytest.mark.anyio
async def test_an_async_append_begins_and_scopes_in_one_round_trip(runtime_env, platform):
    """The async driver: three round trips per append on a tenant's own login
    (the dedicated tenant), four through the shared pool (its checkout's check
    first), BEGIN and the scope in one query on both."""
    async with AsyncTenantRuntime(jwt_settings(), runtime_env.registry_table,
                                  **settings(runtime_env, platform, max_size=1)) as art:
        for key, checked in (("d", []), ("a", [""])):
            ctx = await art.resolve(runtime_env.token(runtime_env.ids[key]), runtime_env.ids[key])
            await art.store.append(ctx, "conv-async-trips", "user", "warm")
            if checked:
                async with (await art.store.gateway.pool()).connection() as conn:
                    pass  # the pool's only connection
                role = ctx.resources.store.role
                scope = f"BEGIN; SET LOCAL role = '{role}'; SET LOCAL app.tenant_id = '{ctx.key}'"
            else:
                conn = art.store.logins.pools[ctx.tenant_id].idle[-1]
                scope = f"BEGIN; SET LOCAL app.tenant_id = '{ctx.key}'"
            with round_trips(conn) as trips:
                await art.store.append(ctx, "conv-async-trips", "user", "counted")
            assert len(trips) == 3 + len(checked) and trips[:len(checked)] == checked, trips
            begin, _, commit = trips[len(checked):]
            assert begin.startswith(scope) and commit == "COMMIT", trips
            assert [m.content for m in (await art.store.history(ctx, "conv-async-trips")).messages] == [
                "counted", "warm"]


@pytest.mark.anyio
async def test_async_cancellation_mid_query_then_the_next_tenant_on_the_same_connection(runtime_env, platform):
    async with AsyncTenantRuntime(jwt_settings(), runtime_env.registry_table,
                                  **settings(runtime_env, platform, max_size=1)) as art:
        before, after = await _cancel_mid_query_then_serve_b(art, runtime_env, "a", "b")
        assert before == after  # one connection: the cancelled query left it clean, role and tenant gone


@pytest.mark.anyio
async def test_async_round_trip_with_per_tenant_logins_and_timeouts(runtime_env):
    async with AsyncTenantRuntime(jwt_settings(), runtime_env.registry_table, statement_timeout=0.2,
                                  endpoint_url=runtime_env.sandbox.aws_endpoint_url,
                                  region=runtime_env.sandbox.region) as art:
        for key in ("a", "d"):  # pooled and dedicated, each as its own role
            ctx = await art.resolve(runtime_env.token(runtime_env.ids[key]), runtime_env.ids[key])
            for i in range(3):
                await art.store.append(ctx, "conv-async", "user", f"async {i}")
            page = await art.store.history(ctx, "conv-async", limit=2)
            assert [m.content for m in page.messages] == ["async 2", "async 1"]
            rest = await art.store.history(ctx, "conv-async", cursor=page.next_cursor)
            assert [m.content for m in rest.messages][-1] == "async 0"
            assert "conv-async" in {c.conversation_id for c in (await art.store.list_conversations(ctx)).conversations}
            with pytest.raises(StoreTimeout):
                async with art.store.transaction(ctx) as conn:
                    await conn.execute("SELECT pg_sleep(2)")
            assert await art.store.delete_conversation(ctx, "conv-async") is True
            upload = await art.objects.presign_upload(ctx, "notes.txt", 5, "text/plain")
            assert upload.key.startswith(ctx.resources.prefix)
        # Served from caches after the first request: nothing handed to the pool.
        offloaded = art.offload.offloaded
        ctx = await art.resolve(runtime_env.token(runtime_env.ids["a"]), runtime_env.ids["a"])
        await art.store.append(ctx, "conv-async-2", "user", "cached")
        assert art.offload.offloaded == offloaded


@pytest.mark.anyio
async def test_async_an_idle_connection_the_server_closed_is_replaced_by_a_fresh_login(runtime_env):
    """As the sync store (test_runtime_store): the tenant's idle async
    connection terminated by the server, the next append runs once more on a
    fresh login: no error, the message stored once."""
    async with AsyncTenantRuntime(jwt_settings(), runtime_env.registry_table,
                                  endpoint_url=runtime_env.sandbox.aws_endpoint_url,
                                  region=runtime_env.sandbox.region) as art:
        ctx = await art.resolve(runtime_env.token(runtime_env.ids["a"]), runtime_env.ids["a"])
        await art.store.append(ctx, "conv-async-terminated", "user", "before")
        [idle] = art.store.logins.pools[ctx.tenant_id].idle
        assert await asyncio.to_thread(runtime_env.terminate_logins, ctx.tenant_id) >= 1
        await art.store.append(ctx, "conv-async-terminated", "user", "after")
        page = await art.store.history(ctx, "conv-async-terminated")
        assert [m.content for m in page.messages] == ["after", "before"] and idle.closed


@pytest.mark.anyio
async def test_async_an_idle_pool_connection_the_server_closed_is_replaced_before_the_next_request(
        runtime_env, platform):
    async with AsyncTenantRuntime(jwt_settings(), runtime_env.registry_table,
                                  **settings(runtime_env, platform, max_size=1)) as art:
        ctx = await art.resolve(runtime_env.token(runtime_env.ids["a"]), runtime_env.ids["a"])
        await art.store.append(ctx, "conv-async-pool-terminated", "user", "before")
        async with (await art.store.gateway.pool()).connection() as conn:
            idle = conn.info.backend_pid
        await asyncio.to_thread(end_backend, runtime_env, idle)
        await art.store.append(ctx, "conv-async-pool-terminated", "user", "after")
        page = await art.store.history(ctx, "conv-async-pool-terminated")
        assert [m.content for m in page.messages] == ["after", "before"]


def test_a_role_the_gateway_may_not_become_is_store_moved_for_reads_and_writes(
        shared, runtime_env, platform, gateway_secret):
    """The scope's ``SET LOCAL role`` refused (the gateway no longer a member of
    the tenant's role: a stale record of a tenant moved off the shared database
    or deprovisioned, a grant undone): StoreMoved (503) for a read as for a
    write, in both APIs, and the connection goes back clean. Before: a read
    raised psycopg's InsufficientPrivilege (a 500 outside the problem shape)."""
    from tenant_runtime import StoreMoved

    ctx = ctx_of(shared, runtime_env, "a")
    conversation = f"conv-unscoped-{time.time_ns()}"
    shared.store.append(ctx, conversation, "user", "before")
    grant = sql.SQL("{} {} {} {}")
    role, gateway = sql.Identifier(ctx.resources.store.role), sql.Identifier(gateway_secret["username"])
    with runtime_env.admin(ctx.resources.store.database) as admin:
        admin.execute(grant.format(sql.SQL("REVOKE"), role, sql.SQL("FROM"), gateway))
    try:
        for call in (lambda: shared.store.history(ctx, conversation), lambda: shared.store.search(ctx, "before"),
                     lambda: shared.store.append(ctx, conversation, "user", "refused")):
            with pytest.raises(StoreMoved, match="permission denied to set role"):
                call()

        async def through_async():
            async with AsyncTenantRuntime(jwt_settings(), runtime_env.registry_table,
                                          **settings(runtime_env, platform, max_size=1)) as art:
                actx = await art.resolve(runtime_env.token(ctx.tenant_id), ctx.tenant_id)
                with pytest.raises(StoreMoved, match="permission denied to set role"):
                    await art.store.history(actx, conversation)

        asyncio.run(through_async())
    finally:
        with runtime_env.admin(ctx.resources.store.database) as admin:
            admin.execute(grant.format(sql.SQL("GRANT"), role, sql.SQL("TO"), gateway))
    assert [m.content for m in shared.store.history(ctx, conversation).messages] == ["before"]


def _leave_session_state(store, own, other) -> int:
    """Blocks of ``own`` whose statements change the session, not the transaction: each
    would outlive its block's COMMIT on a pooled connection (a cursor WITH HOLD keeps the
    rows it read then). Returns the connection's backend pid."""
    with store.transaction(own) as conn:
        conn.execute(sql.SQL("DECLARE leak CURSOR WITH HOLD FOR SELECT tenant_id, conversation_id FROM {}").format(
            sql.Identifier(own.resources.store.schema_name, "messages")))
        conn.execute("PREPARE leak_p AS SELECT 1")
        conn.execute("LISTEN leak_channel")
        conn.execute("SELECT pg_try_advisory_lock(4242)")  # never waits on another test's
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    with store.transaction(own) as conn:
        conn.execute("SET statement_timeout = '17s'")
        conn.execute("SET search_path = pg_catalog")
        conn.execute(sql.SQL("SET app.tenant_id = {}").format(sql.Literal(other.key)))
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (other.key,))
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    return pid


_SESSION_STATE = ("SELECT pg_backend_pid(), current_user, current_setting('app.tenant_id'), "
                  "(SELECT array_agg(name::text) FROM pg_cursors), (SELECT array_agg(name::text) "
                  "FROM pg_prepared_statements WHERE name !~ '^_pg3_'), "
                  "(SELECT array_agg(c) FROM pg_listening_channels() c), "
                  "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()), "
                  "(SELECT bool_and(setting = reset_val) FROM pg_settings "
                  "WHERE name IN ('statement_timeout', 'search_path'))")


def _seen_by(store, ctx):
    """What ``ctx``'s next block sees of its session, and any rows a leftover cursor holds."""
    with store.transaction(ctx) as conn:
        state = conn.execute(_SESSION_STATE).fetchone()
        rows = conn.execute("FETCH ALL FROM leak").fetchall() if state[3] else []
    return state, rows


@pytest.mark.parametrize("pool", ["shared", "per-tenant"])
def test_session_state_a_block_leaves_does_not_reach_the_next_use_of_its_connection(
        pool, shared, runtime, runtime_env):
    """A caller's block may change its session (a cursor WITH HOLD over its rows, a
    prepared statement, LISTEN, a session advisory lock, session SETs of settings and
    of app.tenant_id): the tenant's next block on that login (its own, also with a
    shared pool configured) starts from a clean session, its scope its own; the login
    keeps its prepared statements (its append's, and the caller's: the same tenant's).
    B never sees A's login."""
    rt, conversation = (shared if pool == "shared" else runtime), f"conv-session-leak-{pool}"
    ctx_a, ctx_b = ctx_of(rt, runtime_env, "a"), ctx_of(rt, runtime_env, "b")
    rt.store.append(ctx_a, conversation, "user", "a's")
    rt.store.append(ctx_b, conversation, "user", "b's")
    pid = _leave_session_state(rt.store, ctx_a, ctx_b)
    state, rows = _seen_by(rt.store, ctx_b)
    assert state[0] != pid and (state[3], rows) == (None, []), state
    state, rows = _seen_by(rt.store, ctx_a)
    assert (state, rows) == ((pid, ctx_a.resources.store.role, ctx_a.key, None, ["leak_p"], None, 0, True), []), (
        state, rows)
    for ctx in (ctx_a, ctx_b):
        assert [m.content for m in rt.store.history(ctx, conversation).messages] == [f"{ctx.tenant_id[-1]}'s"]


@pytest.mark.anyio
@pytest.mark.parametrize("pool", ["shared", "per-tenant"])
async def test_async_a_cursor_with_hold_a_block_leaves_is_gone_at_the_next_use_of_its_connection(
        pool, runtime_env, platform):
    """The async driver: A's block declares a cursor WITH HOLD over its messages and
    LISTENs; A's next block on that login (its own, also with a shared pool
    configured) finds neither."""
    options = settings(runtime_env, platform, max_size=1) if pool == "shared" else {
        "endpoint_url": runtime_env.sandbox.aws_endpoint_url, "region": runtime_env.sandbox.region}
    async with AsyncTenantRuntime(jwt_settings(), runtime_env.registry_table, **options) as art:
        ctx_a = await art.resolve(runtime_env.token(runtime_env.ids["a"]), runtime_env.ids["a"])
        await art.store.append(ctx_a, "conv-async-leak", "user", "a's")
        async with art.store.transaction(ctx_a) as conn:
            await conn.execute(sql.SQL("DECLARE leak CURSOR WITH HOLD FOR SELECT conversation_id FROM {}").format(
                sql.Identifier(ctx_a.resources.store.schema_name, "messages")))
            await conn.execute("LISTEN leak_channel")
            pid = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0]
        async with art.store.transaction(ctx_a) as conn:
            seen = await (await conn.execute(
                "SELECT pg_backend_pid(), (SELECT count(*) FROM pg_cursors), "
                "(SELECT count(*) FROM pg_listening_channels())")).fetchone()
        assert seen == (pid, 0, 0)


# -- closing ---------------------------------------------------------------------------


def backends_of(env, app: str) -> set[int]:
    with env.admin() as admin:
        return {pid for (pid,) in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)).fetchall()}


def test_a_closed_runtime_opens_no_connection_again(runtime_env, platform):
    """After close(), a store call through the shared pool or a tenant's own
    login is StoreUnavailable naming the close, and no backend is left behind
    (before, each call opened a new pool or login that nothing would close)."""
    rt = TenantRuntime(jwt_settings(), runtime_env.registry_table, **settings(runtime_env, platform, max_size=1))
    ctx = ctx_of(rt, runtime_env, "a")
    before = backends_of(runtime_env, "tenant_runtime") | backends_of(runtime_env, "tenant_runtime_gateway")
    rt.store.append(ctx, "conv-closed", "user", "before close")
    rt.close()
    with pytest.raises(StoreUnavailable, match="runtime was closed"):
        rt.store.append(ctx, "conv-closed", "user", "after close")  # the shared pool
    with pytest.raises(StoreUnavailable, match="runtime was closed"), rt.store.transaction(ctx):  # its own login
        pass
    left = backends_of(runtime_env, "tenant_runtime") | backends_of(runtime_env, "tenant_runtime_gateway")
    assert left <= before


@pytest.mark.anyio
async def test_async_a_closed_runtime_opens_no_connection_again(runtime_env, platform):
    art = AsyncTenantRuntime(jwt_settings(), runtime_env.registry_table, **settings(runtime_env, platform, max_size=1))
    ctx = await art.resolve(runtime_env.token(runtime_env.ids["a"]), runtime_env.ids["a"])
    before = backends_of(runtime_env, "tenant_runtime") | backends_of(runtime_env, "tenant_runtime_gateway")
    await art.store.append(ctx, "conv-closed-async", "user", "before close")
    await art.aclose()
    with pytest.raises(StoreUnavailable, match="runtime was closed"):
        await art.store.append(ctx, "conv-closed-async", "user", "after close")
    with pytest.raises(StoreUnavailable, match="runtime was closed"):
        async with art.store.transaction(ctx):
            pass
    with pytest.raises(StoreUnavailable, match="runtime was closed"):  # a registry read: the I/O pool is shut
        await art.context(runtime_env.ids["b"])
    left = backends_of(runtime_env, "tenant_runtime") | backends_of(runtime_env, "tenant_runtime_gateway")
    assert left <= before
