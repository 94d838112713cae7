"""The routed context store on the sandbox: round trips for pooled and dedicated
tenants, pagination under concurrent inserts, pooled connections that carry
nothing from one tenant to the next, and the store's own refusals."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg import sql

from runtime_tenants import runtime, runtime_env  # noqa: F401  (fixtures)


def ctx_of(runtime, env, key):
    tid = env.ids[key]
    return runtime.resolve(env.token(tid), tid)


@pytest.mark.parametrize("key", ["a", "d"])  # pooled, dedicated
def test_append_history_delete_round_trip(runtime, runtime_env, key):
    ctx = ctx_of(runtime, runtime_env, key)
    for i in range(5):
        runtime.store.append(ctx, "conv-rt", "user" if i % 2 == 0 else "assistant", f"message {i} ✓", {"i": i})
    page = runtime.store.history(ctx, "conv-rt", limit=3)
    assert [m.content for m in page.messages] == ["message 4 ✓", "message 3 ✓", "message 2 ✓"]
    rest = runtime.store.history(ctx, "conv-rt", limit=3, cursor=page.next_cursor)
    assert [m.metadata["i"] for m in rest.messages] == [1, 0] and rest.next_cursor is None
    # Stored content is ciphertext, not the message.
    store = ctx.resources.store
    with runtime_env.admin(store.database) as conn:
        blobs = conn.execute(sql.SQL("SELECT content FROM {} WHERE conversation_id = 'conv-rt'").format(
            sql.Identifier(store.schema_name, "messages"))).fetchall()
    assert len(blobs) == 5 and not any("message".encode() in bytes(b) for (b,) in blobs)
    assert runtime.store.delete_conversation(ctx, "conv-rt") is True
    assert runtime.store.history(ctx, "conv-rt").messages == []
    assert runtime.store.delete_conversation(ctx, "conv-rt") is False


def test_pages_are_complete_and_disjoint_while_inserts_run(runtime, runtime_env):
    ctx = ctx_of(runtime, runtime_env, "a")
    before = {runtime.store.append(ctx, "conv-busy", "user", f"old {i}").seq for i in range(60)}
    stop, written, errors = threading.Event(), [], []

    def writer():
        try:
            while not stop.is_set() and len(written) < 200:
                written.append(runtime.store.append(ctx, "conv-busy", "assistant", "new").seq)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        first = runtime.store.history(ctx, "conv-busy", limit=7)
        seen, cursor, pages = [m.seq for m in first.messages], first.next_cursor, 1
        while cursor:
            page = runtime.store.history(ctx, "conv-busy", limit=7, cursor=cursor)
            seen += [m.seq for m in page.messages]
            cursor, pages = page.next_cursor, pages + 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert pages > 5 and len(written) > 0
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen))  # no overlap, newest first
    assert before <= set(seen)  # everything committed before the walk began
    # The head cursor then returns exactly what arrived since the first page.
    newer, cursor = [], first.head_cursor
    page = runtime.store.history(ctx, "conv-busy", limit=50, cursor=cursor)
    newer += [m.seq for m in page.messages]
    while page.next_cursor:
        page = runtime.store.history(ctx, "conv-busy", limit=50, cursor=page.next_cursor)
        newer += [m.seq for m in page.messages]
    assert len(newer) == len(set(newer)) and not set(newer) & set(seen[len(first.messages):])
    assert set(newer) | set(seen) == before | set(written)


def test_pooled_connection_carries_no_tenant_after_a_request(runtime, runtime_env):
    ctx = ctx_of(runtime, runtime_env, "a")
    runtime.store.append(ctx, "conv-pool", "user", "hello")
    pool = runtime.store._pools[ctx.tenant_id]
    conn = pool.idle[-1]  # the very connection the request used, back in the pool
    # Outside a tenant transaction the setting is gone: RLS shows nothing (fail closed).
    assert conn.execute("SELECT current_setting('app.tenant_id', true)").fetchone()[0] in (None, "")
    table = sql.Identifier(ctx.resources.store.schema_name, "messages")
    assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0] == 0
    conn.rollback()


def test_gateway_connection_reused_across_tenants_leaks_nothing(runtime, runtime_env):
    """One physical connection (a gateway login that may SET ROLE to both tenant
    roles) serves A, then B, then A again through tenant_transaction."""
    from tenant_runtime.store import tenant_transaction

    a, b = (runtime_env.tenants[runtime_env.ids[k]] for k in ("a", "b"))
    ctx_a, ctx_b = ctx_of(runtime, runtime_env, "a"), ctx_of(runtime, runtime_env, "b")
    runtime.store.append(ctx_a, "conv-gw", "user", "from a")
    runtime.store.append(ctx_b, "conv-gw", "user", "from b")
    gateway, password = f"gateway_{runtime_env.run}", "gw-password"
    with runtime_env.admin() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOINHERIT PASSWORD {}").format(sql.Identifier(gateway), sql.Literal(password)))
        admin.execute(sql.SQL("GRANT {}, {} TO {}").format(sql.Identifier(a.resources.store.role),
                                                           sql.Identifier(b.resources.store.role), sql.Identifier(gateway)))
    try:
        with psycopg.connect(host=runtime_env.sandbox.pg_host, port=runtime_env.sandbox.pg_port,
                             dbname=runtime_env.sandbox.pg_database, user=gateway, password=password) as conn:
            def visible(record, schema_of=None):
                target = (schema_of or record).resources.store.schema_name
                with tenant_transaction(conn, record.tenant_id, record.resources.store.role):
                    return conn.execute(sql.SQL("SELECT tenant_id, conversation_id FROM {}").format(
                        sql.Identifier(target, "conversations"))).fetchall()

            for _ in range(2):
                for record in (a, b):  # only its own rows, its own conversation among them
                    rows = visible(record)
                    assert {t for t, _ in rows} == {record.tenant_id} and (record.tenant_id, "conv-gw") in rows
                with pytest.raises(psycopg.errors.InsufficientPrivilege):  # B's role on A's schema
                    visible(b, schema_of=a)
            assert conn.execute("SELECT current_user, current_setting('app.tenant_id', true)").fetchone() in (
                (gateway, None), (gateway, ""))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):  # no role between transactions
                conn.execute(sql.SQL("SELECT 1 FROM {}").format(sql.Identifier(a.resources.store.schema_name, "messages")))
    finally:
        with runtime_env.admin() as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(gateway)))


def test_store_itself_refuses_a_role_crossing_tenants(runtime, runtime_env):
    """The runtime check bypassed: a raw connection as A's role."""
    a, b = (runtime_env.tenants[runtime_env.ids[k]] for k in ("a", "b"))
    runtime.store.append(ctx_of(runtime, runtime_env, "b"), "conv-secret", "user", "b's secret")
    b_messages = sql.Identifier(b.resources.store.schema_name, "messages")
    a_messages = sql.Identifier(a.resources.store.schema_name, "messages")
    with runtime_env.connect_as(a.tenant_id) as conn:
        # Even claiming to be B, A's role cannot enter B's schema...
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (b.tenant_id,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("SELECT * FROM {}").format(b_messages))
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("INSERT INTO {} (conversation_id, role, content) VALUES ('x', 'user', 'x')")
                         .format(b_messages))
        conn.rollback()
        # ...nor write rows for B into its own tables, nor see any row while claiming B.
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (b.tenant_id,))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(sql.SQL("INSERT INTO {} (conversation_id) VALUES ('x')").format(
                sql.Identifier(a.resources.store.schema_name, "conversations")))
        conn.rollback()
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (b.tenant_id,))
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(a_messages)).fetchone()[0] == 0
        # No tenant set at all: zero rows, and writes are rejected (fail closed).
        conn.execute("RESET app.tenant_id")
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(a_messages)).fetchone()[0] == 0
        with pytest.raises(psycopg.Error):
            conn.execute(sql.SQL("INSERT INTO {} (conversation_id) VALUES ('x')").format(
                sql.Identifier(a.resources.store.schema_name, "conversations")))
        conn.rollback()
        # And it cannot switch off RLS: it owns nothing.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(a_messages))
