"""The routed context store on the sandbox, with tenants provisioned by the real
operation: round trips for pooled and dedicated tenants, pagination under
concurrent inserts, connections that carry nothing from one tenant to the next,
and the store's own refusals with the runtime bypassed."""

from __future__ import annotations

import base64
import json
import threading
import uuid

import psycopg
import pytest
from protocol_trace import round_trips
from psycopg import sql
from runtime_tenants import runtime, runtime_env  # noqa: F401  (fixtures)

from tenant_runtime import RegistryReader, TenantMismatch
from tenant_runtime.context import from_registry
from tenant_runtime.errors import StoreUnavailable
from tenant_runtime.registry import record_to_item
from tenant_runtime.store import ContextStore


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
    assert len(blobs) == 5 and not any(b"message" in bytes(b) for (b,) in blobs)
    assert runtime.store.delete_conversation(ctx, "conv-rt") is True
    assert runtime.store.history(ctx, "conv-rt").messages == []
    assert runtime.store.delete_conversation(ctx, "conv-rt") is False


def test_dedicated_store_is_its_own_database(runtime_env):
    pooled, dedicated = runtime_env.record("a").resources.store, runtime_env.record("d").resources.store
    assert dedicated.database != pooled.database
    assert runtime_env.secret(runtime_env.ids["d"])["dbname"] == dedicated.database
    with runtime_env.admin(pooled.database) as conn:  # the tenant schema is not in the shared database
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                            (dedicated.schema_name,)).fetchone()[0] == 0


def test_credentials_come_from_the_secret_not_the_record(runtime, runtime_env):
    a, b = runtime_env.ids["a"], runtime_env.ids["b"]
    password = runtime_env.secret(a)["password"]
    item = runtime_env.client("dynamodb").get_item(TableName=runtime_env.registry_table,
                                                  Key={"tenant_id": {"S": a}})["Item"]
    assert password not in str(item) and "password" not in item["record"]["S"]
    # A registry record (for A) pointing at B's secret, as an operator's slip would leave it: refused, not followed.
    ctx_a = ctx_of(runtime, runtime_env, "a")
    res = ctx_a.resources
    wrong = res.model_copy(update={"store": res.store.model_copy(
        update={"secret_arn": runtime_env.tenants[b].resources.store.secret_arn})})
    dynamodb = runtime_env.client("dynamodb")
    dynamodb.put_item(TableName=runtime_env.registry_table,
                      Item=record_to_item(ctx_a.record.model_copy(update={"resources": wrong})))
    store = ContextStore(runtime.envelope, lambda ctx: runtime.clients.client(ctx, "secretsmanager"))
    try:
        reader = RegistryReader(runtime_env.registry_table, client=dynamodb)
        with pytest.raises(TenantMismatch, match="store secret"):
            store.history(from_registry(reader, a), "conv-any")
    finally:
        store.close()
        dynamodb.put_item(TableName=runtime_env.registry_table, Item=record_to_item(ctx_a.record))


def test_conversation_list_pages_are_complete_while_conversations_are_added(runtime, runtime_env):
    ctx = ctx_of(runtime, runtime_env, "b")
    existing = {c.conversation_id for c in runtime.store.list_conversations(ctx, limit=500).conversations}
    ids = [f"list-{i:03d}" for i in range(0, 40, 2)]
    for cid in ids:
        runtime.store.append(ctx, cid, "user", "hi")
    seen, cursor, added = [], None, []
    while True:
        page = runtime.store.list_conversations(ctx, limit=3, cursor=cursor)
        seen += [c.conversation_id for c in page.conversations]
        # Meanwhile, new conversations arrive on both sides of the walk.
        added.append(f"list-{2 * len(added) + 1:03d}")
        runtime.store.append(ctx, added[-1], "user", "late")
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert seen == sorted(seen) and len(seen) == len(set(seen))  # ordered, no overlap
    assert set(ids) | existing <= set(seen)  # everything there before the walk
    assert set(seen) <= set(ids) | existing | set(added)


def test_a_cursor_pages_only_the_listing_it_came_from(runtime, runtime_env):
    """A cursor names what it pages: a list_documents() cursor given to
    list_conversations() (or any other pairing of the store's listings) is an
    InvalidRequest (400) before any read, not a page of the other listing read
    from the cursor's position; each is still accepted by its own listing.
    Before: the documents' and conversations' cursors were the same object."""
    from tenant_runtime import InvalidRequest

    store, ctx = runtime.store, ctx_of(runtime, runtime_env, "b")
    tag = uuid.uuid4().hex[:8]
    for i in range(2):
        store.append(ctx, f"ct-conv-{tag}-{i}", "user", f"message {i}")
        store.put_document(ctx, f"ct-doc-{tag}-{i}", "cursor contract", "a cursor contract document")
    listings = {
        "list_documents": lambda cursor: store.list_documents(ctx, limit=1, cursor=cursor),
        "list_conversations": lambda cursor: store.list_conversations(ctx, limit=1, cursor=cursor),
        "history": lambda cursor: store.history(ctx, f"ct-conv-{tag}-0", limit=1, cursor=cursor),
        "search": lambda cursor: store.search(ctx, "contract", limit=1, cursor=cursor),
    }
    store.append(ctx, f"ct-conv-{tag}-0", "user", "a second message")  # history has a next page
    cursors = {name: listing(None).next_cursor for name, listing in listings.items()}
    assert all(cursors.values()), cursors
    for name, listing in listings.items():
        listing(cursors[name])  # its own listing pages on
        for other, cursor in cursors.items():
            if other != name:
                with pytest.raises(InvalidRequest, match="invalid cursor"):
                    listing(cursor)


def _tampered(cursor: str, **fields) -> str:
    data = {**json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))), **fields}
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_a_tampered_cursor_is_a_bad_request_in_every_listing(runtime, runtime_env):
    """A client edits a cursor's fields, still of its tenant and listing: a
    position out of the column's range (a seq past bigint, a score NaN, infinite
    or past numeric), a lone surrogate or a NUL in a key is an InvalidRequest
    (400), and the listing serves the next call. Before: psycopg's
    NumericValueOutOfRange / FeatureNotSupported or a UnicodeEncodeError, a 500."""
    from tenant_runtime import InvalidRequest

    store, ctx = runtime.store, ctx_of(runtime, runtime_env, "b")
    tag = uuid.uuid4().hex[:8]
    for i in range(2):
        store.append(ctx, f"tc-conv-{tag}-{i}", "user", f"message {i}")
        store.put_document(ctx, f"tc-doc-{tag}-{i}", "tampered cursor", "a tampered cursor document")
    conv = f"tc-conv-{tag}-0"
    store.append(ctx, conv, "user", "a second message")
    listings = {
        "history": (lambda c: store.history(ctx, conv, limit=1, cursor=c), [
            {"b": 2**63}, {"a": 2**63, "b": None}, {"c": "\ud800"}]),
        "list_conversations": (lambda c: store.list_conversations(ctx, limit=1, cursor=c), [
            {"l": "\ud800"}, {"l": "x\x00"}]),
        "list_documents": (lambda c: store.list_documents(ctx, limit=1, cursor=c), [
            {"l": "\ud800"}, {"l": "x\x00"}]),
        "search": (lambda c: store.search(ctx, "tampered", limit=1, cursor=c), [
            {"s": "NaN"}, {"s": "Infinity"}, {"s": "-Infinity"}, {"s": "1e1000000"}, {"s": "1e30"},
            {"d": "\ud800"}, {"k": "x\x00"}]),
    }
    for name, (listing, edits) in listings.items():
        cursor = listing(None).next_cursor
        for edit in edits:
            with pytest.raises(InvalidRequest, match="invalid cursor"):
                listing(_tampered(cursor, **edit))
        assert listing(cursor) is not None, name


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
    pool = runtime.store.logins.pools[ctx.tenant_id]
    conn = pool.idle[-1]  # the very connection the request used, back in the pool
    # Outside a tenant transaction the setting is gone: RLS shows nothing (fail closed).
    assert conn.execute("SELECT current_setting('app.tenant_id', true)").fetchone()[0] in (None, "")
    table = sql.Identifier(ctx.resources.store.schema_name, "messages")
    assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0] == 0
    conn.rollback()


def test_a_failed_statement_is_rolled_back_and_its_connection_reused_clean(runtime, runtime_env):
    """A store statement that fails (the driver runs each in its own transaction,
    driven by hand) raises its own error, nothing of it is committed, and the
    connection goes back to the pool out of any transaction, tenant-less."""
    from tenant_runtime.store import Statement

    ctx = ctx_of(runtime, runtime_env, "a")
    conversation = f"conv-failed-{uuid.uuid4().hex[:8]}"
    runtime.store.append(ctx, conversation, "user", "kept")
    pool = runtime.store.logins.pools[ctx.tenant_id]
    conn = pool.idle[-1]
    insert = runtime.store._append_statement(ctx, conversation, "user", b"never stored", "{}")
    failing = Statement(insert.query.replace(b"RETURNING seq, created_at", b"RETURNING seq / 0, created_at"),
                        insert.params, "one")
    with pytest.raises(psycopg.errors.DivisionByZero):
        runtime.store._statement(ctx, failing)
    assert pool.idle[-1] is conn and conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert conn.execute("SELECT current_setting('app.tenant_id', true)").fetchone()[0] in (None, "")
    conn.rollback()
    assert [m.content for m in runtime.store.history(ctx, conversation).messages] == ["kept"]


def test_an_append_is_three_round_trips_begin_and_the_scope_in_one(runtime, runtime_env):
    """BEGIN and the tenant's scope go to the server as one query, then the
    statement, then COMMIT: three round trips per append (four before: BEGIN
    alone first), read from libpq's protocol trace of the connection that
    served it. ``store.transaction(ctx)`` has the same shape, and its first
    round trip is the merged one whatever the caller does next; one more after
    it clears the session the caller's statements may have changed."""
    ctx = ctx_of(runtime, runtime_env, "a")
    conversation = f"conv-trips-{uuid.uuid4().hex[:8]}"
    # A login in the tenant's idle pool whose INSERT is prepared (its first run on a login prepares
    # it: one more round trip, once), so every append below runs the same way.
    for _ in range(6):
        runtime.store.append(ctx, conversation, "user", "warm")
    pool = runtime.store.logins.pools[ctx.tenant_id]
    conn = pool.idle[-1]  # the next request takes it (the newest idle connection)
    scope = f"BEGIN; SET LOCAL app.tenant_id = '{ctx.key}'"
    for _ in range(3):
        with round_trips(conn) as trips:
            message = runtime.store.append(ctx, conversation, "user", "counted")
        assert pool.idle[-1] is conn and message.content == "counted"
        assert trips[1:] == ["<prepared>", "COMMIT"] and trips[0].startswith(scope), trips
    with round_trips(conn) as trips, runtime.store.transaction(ctx) as same:
        assert same is conn
        assert same.execute("SELECT current_setting('app.tenant_id')").fetchone() == (ctx.key,)
    # A caller's block, then the reset of what it may have left in the session (its prepared INSERT kept).
    assert len(trips) == 4 and trips[0].startswith(scope) and trips[2] == "COMMIT", trips
    assert trips[3].startswith("CLOSE ALL;") and "DEALLOCATE" not in trips[3], trips
    with round_trips(conn) as trips:
        runtime.store.append(ctx, conversation, "user", "counted")
    assert trips[1:] == ["<prepared>", "COMMIT"], trips
    assert conn.execute("SELECT current_setting('app.tenant_id', true)").fetchone()[0] in (None, "")
    assert [m.content for m in runtime.store.history(ctx, conversation).messages] == ["counted"] * 4 + ["warm"] * 6


def test_a_fresh_login_prepares_the_append_at_its_first_run(runtime, runtime_env):
    """The append's INSERT is prepared on a login the first time it runs there
    (one Parse round trip, once), not after psycopg's threshold of five runs
    parsed and planned it each time: from a fresh login's second append on,
    the INSERT is the prepared statement's."""
    ctx = ctx_of(runtime, runtime_env, "a")
    conversation = f"conv-prepared-{uuid.uuid4().hex[:8]}"
    runtime.store.forget(ctx)  # no idle login left: the next transaction logs in afresh
    with runtime.store.transaction(ctx) as conn:
        pass
    scope = f"BEGIN; SET LOCAL app.tenant_id = '{ctx.key}'"
    with round_trips(conn) as first:
        runtime.store.append(ctx, conversation, "user", "first")
    assert first[0].startswith(scope) and "INSERT INTO" in first[1] and first[2:] == ["<prepared>", "COMMIT"], first
    for _ in range(2):
        with round_trips(conn) as trips:
            runtime.store.append(ctx, conversation, "user", "again")
        assert trips[1:] == ["<prepared>", "COMMIT"] and trips[0].startswith(scope), trips
    assert runtime.store.logins.pools[ctx.tenant_id].idle[-1] is conn


def test_a_block_that_ends_the_tenant_transaction_itself_is_refused(runtime, runtime_env):
    """The runtime's connections are in autocommit mode (it sends BEGIN itself):
    a caller's ``conn.commit()`` inside ``store.transaction(ctx)`` ends the
    tenant's scope, so the block is refused at its next statement (which ran
    with no tenant: FORCE RLS saw nothing), or at its end, and the connection
    goes back clean; a ``psycopg.Rollback`` rolls back quietly, as in psycopg's
    own transaction block."""
    ctx = ctx_of(runtime, runtime_env, "a")
    table = sql.Identifier(ctx.resources.store.schema_name, "conversations")
    conversation = f"conv-ended-{uuid.uuid4().hex[:8]}"
    with pytest.raises(psycopg.ProgrammingError, match="ended inside its block"), \
            runtime.store.transaction(ctx) as conn:
        conn.commit()
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone() == (0,)  # no tenant
    with runtime.store.transaction(ctx) as conn:
        conn.execute(sql.SQL("INSERT INTO {} (tenant_id, conversation_id) VALUES (%s, %s)").format(table),
                     (ctx.key, conversation))
        raise psycopg.Rollback()
    assert conversation not in {c.conversation_id for c in runtime.store.list_conversations(ctx, 500).conversations}
    for conn in runtime.store.logins.pools[ctx.tenant_id].idle:
        assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE


ESCAPES = ["ROLLBACK; BEGIN", "COMMIT; BEGIN", "END; START TRANSACTION", "ROLLBACK", "COMMIT"]


@pytest.mark.parametrize("escape", ESCAPES)
def test_a_statement_that_ends_or_restarts_the_tenant_transaction_is_refused_at_once(runtime, runtime_env, escape):
    """Transaction control sent as SQL through the block's connection (a
    ``ROLLBACK; BEGIN`` leaves a transaction open, so the block's end cannot
    tell it from the tenant's) is refused by the statement itself, sync and
    async: what the block wrote before is rolled back (unless the caller's own
    COMMIT ran), and the connection goes back clean. Savepoints stay allowed."""
    import asyncio

    from runtime_tenants import jwt_settings

    from tenant_runtime import AsyncTenantRuntime

    ctx = ctx_of(runtime, runtime_env, "a")
    table = sql.Identifier(ctx.resources.store.schema_name, "conversations")
    insert = sql.SQL("INSERT INTO {} (tenant_id, conversation_id) VALUES (%s, %s)").format(table)
    conversation = f"conv-escape-{uuid.uuid4().hex[:8]}"
    with pytest.raises(psycopg.ProgrammingError, match="transaction control"), \
            runtime.store.transaction(ctx) as conn:
        conn.execute(insert, (ctx.key, conversation))
        conn.execute(escape)
        pytest.fail("the escape was let through")
    listed = {c.conversation_id for c in runtime.store.list_conversations(ctx, 500).conversations}
    assert (conversation in listed) == escape.startswith(("COMMIT", "END"))  # the caller's own commit ran
    for conn in runtime.store.logins.pools[ctx.tenant_id].idle:
        assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.cursor_factory is psycopg.Cursor  # the guard lasts as long as the block
    with runtime.store.transaction(ctx) as conn:  # savepoints, psycopg's nested blocks included
        conn.execute("SAVEPOINT s; ROLLBACK TO SAVEPOINT s; RELEASE SAVEPOINT s")
        with conn.transaction():
            conn.execute(insert, (ctx.key, conversation + "-kept"))
    assert runtime.store.list_conversations(ctx, 500).conversations

    async def through_async() -> None:
        async with AsyncTenantRuntime(jwt_settings(), runtime_env.registry_table,
                                      endpoint_url=runtime_env.sandbox.aws_endpoint_url,
                                      region=runtime_env.sandbox.region) as art:
            actx = await art.resolve(runtime_env.token(ctx.tenant_id), ctx.tenant_id)
            with pytest.raises(psycopg.ProgrammingError, match="transaction control"):
                async with art.store.transaction(actx) as aconn:
                    await aconn.execute(escape)
                    pytest.fail("the escape was let through")
            async with art.store.transaction(actx) as aconn:
                await aconn.execute("SAVEPOINT s; ROLLBACK TO SAVEPOINT s")
                assert aconn.cursor_factory is not psycopg.AsyncCursor
            assert aconn.cursor_factory is psycopg.AsyncCursor

    asyncio.run(through_async())


def test_gateway_connection_reused_across_tenants_leaks_nothing(runtime, runtime_env):
    """One physical connection (a gateway login that may SET ROLE to both tenant
    roles) serves A, then B, then A again through tenant_transaction."""
    from tenant_runtime.transaction import tenant_transaction

    a, b = (runtime_env.tenants[runtime_env.ids[k]] for k in ("a", "b"))
    ctx_a, ctx_b = ctx_of(runtime, runtime_env, "a"), ctx_of(runtime, runtime_env, "b")
    runtime.store.append(ctx_a, "conv-gw", "user", "from a")
    runtime.store.append(ctx_b, "conv-gw", "user", "from b")
    gateway, password = f"gateway_{uuid.uuid4().hex[:8]}", "gw-password"
    with runtime_env.admin() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOINHERIT PASSWORD {}").format(
            sql.Identifier(gateway), sql.Literal(password)))
        admin.execute(sql.SQL("GRANT {}, {} TO {}").format(
            sql.Identifier(a.resources.store.role), sql.Identifier(b.resources.store.role), sql.Identifier(gateway)))
        # PUBLIC has no CONNECT on the shared database: the login is granted it, as the real gateway is
        admin.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
            sql.Identifier(a.resources.store.database), sql.Identifier(gateway)))
    try:
        with psycopg.connect(host=runtime_env.sandbox.pg_host, port=runtime_env.sandbox.pg_port,
                             dbname=a.resources.store.database, user=gateway, password=password) as conn:
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
                conn.execute(sql.SQL("SELECT 1 FROM {}").format(
                    sql.Identifier(a.resources.store.schema_name, "messages")))
    finally:
        with runtime_env.admin() as admin:
            admin.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
                sql.Identifier(a.resources.store.database), sql.Identifier(gateway)))
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


def test_a_role_cannot_read_the_dedicated_tenants_database(runtime, runtime_env):
    """On the sandbox the dedicated database shares the server (a real one is
    its own instance in its own VPC): A's role cannot even connect to it, and
    granted CONNECT by mistake it still cannot read the tables."""
    d = runtime_env.record("d").resources.store
    runtime.store.append(ctx_of(runtime, runtime_env, "d"), "conv-ded", "user", "dedicated")
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        runtime_env.connect_as(runtime_env.ids["a"], database=d.database).close()
    a_role = runtime_env.secret(runtime_env.ids["a"])["username"]
    grant = sql.SQL("{} CONNECT ON DATABASE {} {} {}")
    with runtime_env.admin() as admin:
        admin.execute(grant.format(sql.SQL("GRANT"), sql.Identifier(d.database), sql.SQL("TO"), sql.Identifier(a_role)))
    try:
        with runtime_env.connect_as(runtime_env.ids["a"], database=d.database) as conn:
            conn.execute("SELECT set_config('app.tenant_id', %s, false)", (runtime_env.ids["d"],))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(d.schema_name, "messages")))
    finally:
        with runtime_env.admin() as admin:
            admin.execute(grant.format(sql.SQL("REVOKE"), sql.Identifier(d.database), sql.SQL("FROM"),
                                       sql.Identifier(a_role)))


def test_row_level_security_holds_even_if_a_schema_were_mis_granted(runtime, runtime_env):
    """The second wall: grant A's role B's tables (an operator mistake, rolled
    back), then act as A's role with A's tenant set: B's rows stay invisible and
    rows can neither be written for A nor for B into B's tables."""
    a, b = runtime_env.record("a"), runtime_env.record("b")
    runtime.store.append(ctx_of(runtime, runtime_env, "b"), "conv-rls", "user", "b's row")
    schema, role = b.resources.store.schema_name, a.resources.store.role
    conv, msgs = sql.Identifier(schema, "conversations"), sql.Identifier(schema, "messages")
    with runtime_env.admin(b.resources.store.database) as conn:
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(msgs)).fetchone()[0] > 0  # admin sees them
        with pytest.raises(RuntimeError, match="rolled back"), conn.transaction():
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {}, {} TO {}").format(
                conv, msgs, sql.Identifier(role)))
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (a.tenant_id,))
            assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(msgs)).fetchone()[0] == 0
            assert conn.execute(sql.SQL("UPDATE {} SET role = 'tool'").format(msgs)).rowcount == 0
            assert conn.execute(sql.SQL("DELETE FROM {}").format(conv)).rowcount == 0
            with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():  # A's rows in B's table
                conn.execute(sql.SQL("INSERT INTO {} (conversation_id) VALUES ('x')").format(conv))
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"), conn.transaction():
                conn.execute(sql.SQL("INSERT INTO {} (tenant_id, conversation_id) VALUES (%s, 'x')").format(conv),
                             (b.tenant_id,))
            raise RuntimeError("rolled back")
        assert conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE conversation_id = 'conv-rls'").format(msgs)
                            ).fetchone()[0] == 1
        assert not conn.execute("SELECT has_schema_privilege(%s, %s, 'USAGE')", (role, schema)).fetchone()[0]


@pytest.mark.parametrize("key", ["b", "d"])  # pooled (the platform's function), dedicated (its own)
def test_the_store_survives_a_password_rotation_mid_traffic(runtime, runtime_env, key):
    """A real single-user rotation of the tenant's secret (Secrets Manager's four
    steps on moto, ALTER ROLE on the sandbox PostgreSQL) while a writer appends
    without pause, every append on a fresh login: not one request fails, also
    inside the window where the role already has the AWSPENDING password and
    AWSCURRENT still holds the old one; afterwards the old password is refused."""
    from tenantctl.sandbox import rotation

    tid = runtime_env.ids[key]
    ctx = ctx_of(runtime, runtime_env, key)
    arn = ctx.resources.store.secret_arn
    sm = runtime_env.client("secretsmanager")
    old = runtime_env.secret(tid)
    store = ContextStore(runtime.envelope, lambda c: runtime.clients.client(c, "secretsmanager"),
                         max_idle_per_tenant=0)  # no pooling: every append logs in
    conversation = f"conv-rotation-{uuid.uuid4().hex[:8]}"
    done, errors, stop = [], [], threading.Event()

    def writer() -> None:
        while not stop.is_set():
            try:
                done.append(store.append(ctx, conversation, "user", f"m{len(done)}").seq)
            except Exception as exc:  # noqa: BLE001 - every failure is the test's finding
                errors.append(repr(exc))

    def appends_go_on(at_least: int = 3) -> None:
        target = len(done) + at_least
        for _ in range(600):
            if len(done) >= target or errors:
                return
            stop.wait(0.05)
        raise AssertionError("the writer stalled")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        appends_go_on()
        token = rotation.rotate(sm, arn, steps=("createSecret", "setSecret"))
        appends_go_on()  # the window: the role has the new password, AWSCURRENT the old one
        assert runtime_env.secret(tid)["password"] == old["password"]
        rotation.rotate(sm, arn, steps=("testSecret", "finishSecret"), token=token)
        appends_go_on()
    finally:
        stop.set()
        thread.join(30)
        store.close()
    assert errors == []
    new = runtime_env.secret(tid)
    assert new["password"] != old["password"] and new["username"] == old["username"]
    assert "AWSPENDING" not in str(sm.describe_secret(SecretId=arn)["VersionIdsToStages"])
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host=old["host"], port=old["port"], dbname=old["dbname"], user=old["username"],
                        password=old["password"]).close()
    assert len(runtime.store.history(ctx, conversation, limit=500).messages) == len(done)


def test_an_idle_connection_the_server_closed_is_replaced_by_a_fresh_login(runtime, runtime_env):
    """The tenant's idle connections terminated by the server: the next append
    fails on its first round trip, before anything of its own was sent, so it
    runs once more on a fresh login: no error, the message stored once."""
    ctx = ctx_of(runtime, runtime_env, "a")
    conversation = f"conv-terminated-{uuid.uuid4().hex[:8]}"
    runtime.store.append(ctx, conversation, "user", "before")
    idle = list(runtime.store.logins.pools[ctx.tenant_id].idle)
    assert idle and runtime_env.terminate_logins(ctx.tenant_id) >= len(idle)
    runtime.store.append(ctx, conversation, "user", "after")
    assert [m.content for m in runtime.store.history(ctx, conversation).messages] == ["after", "before"]
    assert any(conn.closed for conn in idle)  # the one the append took was dropped


def test_a_connection_lost_after_the_callers_statement_is_not_retried(runtime, runtime_env):
    """Once the caller's statement went out the transaction is not run again
    (a write whose COMMIT is unknown must not be replayed): StoreUnavailable."""
    ctx = ctx_of(runtime, runtime_env, "a")
    with pytest.raises(StoreUnavailable, match="terminating connection"), runtime.store.transaction(ctx) as conn:
        conn.execute("SELECT 1")
        runtime_env.terminate_logins(ctx.tenant_id)
        conn.execute("SELECT 1")


def test_the_sync_append_and_the_append_operation_store_the_same_row_and_refuse_the_same(runtime, runtime_env):
    """The sync ``append`` runs the append's steps directly; the async driver
    runs them as the operation ``_append``. Driven here by the sync driver, the
    operation and the direct path store the same row (sealed under the same data
    key), give the same Message, and refuse the same forged contexts and bad
    input with the same error, storing nothing."""
    from types import SimpleNamespace

    from tenant_runtime.crypto import blob_edk

    store = runtime.store
    a = runtime_env.ids["a"]
    ctx, ctx_b = ctx_of(runtime, runtime_env, "a"), ctx_of(runtime, runtime_env, "b")
    paths = {"direct": store.append,
             "operation": lambda c, *args: store._write(c, lambda v: store._append(v, *args))}
    conversation = f"conv-paths-{uuid.uuid4().hex[:8]}"
    made = [append(ctx, conversation, "tool", "same ✓", {"k": [1]}) for append in paths.values()]
    assert made[0].seq < made[1].seq
    assert made[0].model_dump(exclude={"seq", "created_at"}) == made[1].model_dump(exclude={"seq", "created_at"}) == {
        "conversation_id": conversation, "role": "tool", "content": "same ✓", "metadata": {"k": [1]}}
    schema = ctx.resources.store

    def stored() -> list[tuple]:
        with runtime_env.admin(schema.database) as conn:
            return conn.execute(sql.SQL(
                "SELECT seq, tenant_id, conversation_id, role, metadata, content FROM {} "
                "WHERE conversation_id = %s ORDER BY seq").format(sql.Identifier(schema.schema_name, "messages")),
                (conversation,)).fetchall()

    rows = stored()
    assert [row[0] for row in rows] == [m.seq for m in made]
    assert rows[0][1:5] == rows[1][1:5] == (a, conversation, "tool", {"k": [1]})
    blobs = [bytes(row[5]) for row in rows]
    assert blobs[0] != blobs[1] and blob_edk(blobs[0]) == blob_edk(blobs[1])  # own nonce, same data key
    assert runtime.envelope.decrypt_many(ctx, conversation, blobs) == ["same ✓".encode()] * 2

    slipped = runtime.context(a)  # issued, then given B's record under A's id
    object.__setattr__(slipped, "record", ctx_b.record.model_copy(update={"tenant_id": a}))
    duck = SimpleNamespace(tenant_id=a, key=a, record=ctx_b.record, resources=ctx_b.resources, subject="x",
                           claims={}, workspace=None)
    refusals = [(slipped, "user", {}), (duck, "user", {}), (ctx, "admin", {}), (ctx, "user", {"x": object()}),
                # metadata that is no object: stored, it made every page of the conversation fail
                (ctx, "user", [1, 2])]
    for forged, role, meta in refusals:
        errors = []
        for append in paths.values():
            with pytest.raises(Exception) as err:
                append(forged, conversation, role, "never stored", meta)
            errors.append((type(err.value), str(err.value)))
        assert errors[0] == errors[1], errors
    assert len(stored()) == 2
    with runtime_env.admin(ctx_b.resources.store.database) as conn:
        assert conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE conversation_id = %s").format(
            sql.Identifier(ctx_b.resources.store.schema_name, "messages")), (conversation,)).fetchone()[0] == 0


def test_input_the_store_cannot_hold_is_a_bad_request_and_the_next_call_is_served(runtime, runtime_env):
    """A NUL character in an id, metadata, a filter or a forged cursor is
    refused by PostgreSQL (text and jsonb cannot hold it): an InvalidRequest
    (400) naming why, in both APIs, nothing stored, and the connection goes
    back clean for the next call. Before: raw psycopg errors (500)."""
    import asyncio

    from runtime_tenants import jwt_settings

    from tenant_runtime import AsyncTenantRuntime, InvalidRequest
    from tenant_runtime.cursor import encode

    store, tid = runtime.store, runtime_env.ids["a"]
    ctx = ctx_of(runtime, runtime_env, "a")
    conversation = f"conv-nul-{uuid.uuid4().hex[:8]}"
    calls = [lambda: store.append(ctx, conversation + "\x00", "user", "x"),
             lambda: store.append(ctx, conversation, "user", "x", {"k": "a\x00b"}),
             lambda: store.append(ctx, conversation, "user", "x", {"k\x00": 1}),
             lambda: store.history(ctx, "c\x00"),
             lambda: store.put_document(ctx, "doc\x00", "t", "b"),
             lambda: store.put_document(ctx, "doc-nul", "t", "b", {"k": "\x00"}),
             lambda: store.search(ctx, "anything", filters={"k": "a\x00"})]
    for call in calls:
        with pytest.raises(InvalidRequest, match="NUL"):
            call()
    with pytest.raises(InvalidRequest, match="invalid cursor"):  # no cursor the store writes holds one
        store.list_conversations(ctx, cursor=encode("conversations", {"t": tid, "l": "a\x00"}))
    assert store.history(ctx, conversation).messages == [] and store.get_document(ctx, "doc-nul") is None
    assert store.append(ctx, conversation, "user", "served").content == "served"

    async def through_async():
        async with AsyncTenantRuntime(jwt_settings(), runtime_env.registry_table,
                                      endpoint_url=runtime_env.sandbox.aws_endpoint_url,
                                      region=runtime_env.sandbox.region) as art:
            actx = await art.resolve(runtime_env.token(tid), tid)
            with pytest.raises(InvalidRequest, match="NUL"):
                await art.store.append(actx, conversation, "user", "x", {"k": "a\x00b"})
            return [m.content for m in (await art.store.history(actx, conversation)).messages]

    assert asyncio.run(through_async()) == ["served"]


def test_a_store_whose_schema_is_gone_is_store_moved_not_a_500(runtime, runtime_env):
    """A context resolved before its tenant was deprovisioned (or moved and its
    old store dropped) reaches a login whose schema is gone: the store's own
    reads and writes, sync and async, are StoreMoved (503; a write is retried
    once on the record read again, which refuses a deprovisioned tenant),
    as the shared pool answers a role that is gone. Before: psycopg's
    UndefinedTable, a 500. The schema is renamed away and back as admin."""
    import asyncio

    from runtime_tenants import jwt_settings

    from tenant_runtime import AsyncTenantRuntime, StoreMoved

    ctx = ctx_of(runtime, runtime_env, "b")
    runtime.store.append(ctx, "conv-gone", "user", "before")
    schema = ctx.resources.store.schema_name

    async def through_async():
        async with AsyncTenantRuntime(jwt_settings(), runtime_env.registry_table,
                                      endpoint_url=runtime_env.sandbox.aws_endpoint_url,
                                      region=runtime_env.sandbox.region) as art:
            actx = await art.resolve(runtime_env.token(ctx.tenant_id), ctx.tenant_id)
            with pytest.raises(StoreMoved):
                await art.store.history(actx, "conv-gone")
            with pytest.raises(StoreMoved):
                await art.store.append(actx, "conv-gone", "user", "during")

    with runtime_env.admin(ctx.resources.store.database) as admin:
        admin.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
            sql.Identifier(schema), sql.Identifier(schema + "_gone")))
        try:
            for call in (lambda: runtime.store.history(ctx, "conv-gone"),
                         lambda: runtime.store.append(ctx, "conv-gone", "user", "during"),
                         lambda: runtime.store.get_document(ctx, "doc-gone")):
                with pytest.raises(StoreMoved) as err:
                    call()
                assert err.value.status_code == 503
            asyncio.run(through_async())
        finally:
            admin.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                sql.Identifier(schema + "_gone"), sql.Identifier(schema)))
    assert [m.content for m in runtime.store.history(ctx, "conv-gone").messages] == ["before"]


def test_the_sync_runtime_is_a_context_manager_closing_its_connections(runtime_env):
    """``with TenantRuntime(...) as runtime:`` like the async API's ``async with``:
    leaving the block closes every login it holds."""
    from runtime_tenants import jwt_settings

    from tenant_runtime import TenantRuntime

    tid = runtime_env.ids["a"]
    with TenantRuntime(jwt_settings(), runtime_env.registry_table, endpoint_url=runtime_env.sandbox.aws_endpoint_url,
                       region=runtime_env.sandbox.region) as rt:
        ctx = rt.resolve(runtime_env.token(tid), tid)
        rt.store.append(ctx, f"conv-with-{uuid.uuid4().hex[:8]}", "user", "x")
        held = list(rt.store.logins.pools[tid].idle)
        assert held and not any(conn.closed for conn in held)
    assert all(conn.closed for conn in held) and not rt.store.logins.pools.get(tid, None)


def test_a_page_size_or_prefix_of_the_wrong_type_is_a_bad_request_in_both_apis(runtime, runtime_env):
    """``limit`` of ``history`` and ``list_conversations`` is an integer (not a
    bool, a float or a query-string "5"), as for documents and search; a
    ``suggest`` prefix is a string, as a search query is: an InvalidRequest (400)
    before any I/O. Before: TypeError (a 500) from the comparison or the slice,
    ``True`` served as a page of one, and a number prefix answered [] silently."""
    import asyncio

    from runtime_tenants import jwt_settings

    from tenant_runtime import AsyncTenantRuntime, InvalidRequest

    store, tid = runtime.store, runtime_env.ids["a"]
    ctx = ctx_of(runtime, runtime_env, "a")
    conversation = f"conv-limit-{uuid.uuid4().hex[:8]}"
    store.append(ctx, conversation, "user", "x")
    bad = ("5", 2.0, True, None)
    for limit in bad:
        with pytest.raises(InvalidRequest, match="limit must be"):
            store.history(ctx, conversation, limit=limit)
        with pytest.raises(InvalidRequest, match="limit must be"):
            store.list_conversations(ctx, limit=limit)
    for prefix in (5, None, b"me"):
        with pytest.raises(InvalidRequest, match="prefix must be a string"):
            store.suggest(ctx, prefix)
    assert store.suggest(ctx, "m") == [] and len(store.history(ctx, conversation, limit=1).messages) == 1

    async def through_async():
        async with AsyncTenantRuntime(jwt_settings(), runtime_env.registry_table,
                                      endpoint_url=runtime_env.sandbox.aws_endpoint_url,
                                      region=runtime_env.sandbox.region) as art:
            actx = await art.resolve(runtime_env.token(tid), tid)
            for limit in bad:
                with pytest.raises(InvalidRequest, match="limit must be"):
                    await art.store.history(actx, conversation, limit=limit)
                with pytest.raises(InvalidRequest, match="limit must be"):
                    await art.store.list_conversations(actx, limit=limit)
            with pytest.raises(InvalidRequest, match="prefix must be a string"):
                await art.store.suggest(actx, 5)

    asyncio.run(through_async())
