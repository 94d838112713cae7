"""The TenantSchema provider against the sandbox's real PostgreSQL, many
tenants at once: every pooled tenant's GRANT CONNECT rewrites the one
pg_database row, which PostgreSQL refuses to update from two transactions at
once ("tuple concurrently updated") unless the provider serialises them."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import psycopg
import pytest

from infra.providers.tenant_schema import TenantSchemaProvider

WORKERS = 8


@pytest.fixture()
def scratch_database(sandbox):
    name = f"acl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _props(sandbox, database: str, n: int) -> list[dict]:
    secrets = boto3.client("secretsmanager", region_name=sandbox.region)
    admin = secrets.create_secret(
        Name=f"{database}-admin",
        SecretString=json.dumps({"username": sandbox.pg_user, "password": sandbox.pg_password}))["ARN"]
    props = []
    for i in range(n):
        tenant = f"acl-t{i}"
        props.append({
            "kind": "tenant-schema", "tenant_id": tenant, "region": sandbox.region,
            "host": sandbox.pg_host, "port": sandbox.pg_port, "database": database,
            "schema": f"tenant_acl_t{i}", "role": f"{database}_t{i}_app",
            "admin_secret_arn": admin,
            "tenant_secret_arn": secrets.create_secret(Name=f"{database}-{tenant}")["ARN"],
        })
    return props


def _all_at_once(fn, items):
    start = threading.Barrier(len(items))

    def run(item):
        start.wait()
        return fn(item)

    with ThreadPoolExecutor(len(items)) as pool:
        return list(pool.map(run, items))


def test_tenants_created_and_deleted_concurrently_all_get_and_lose_connect(sandbox, scratch_database):
    provider = TenantSchemaProvider()
    props = _props(sandbox, scratch_database, WORKERS)

    _all_at_once(provider.create, props)

    roles = [p["role"] for p in props]
    with psycopg.connect(sandbox.pg_dsn(scratch_database)) as conn:
        granted = {role for role in roles if conn.execute(
            "SELECT has_database_privilege(%s, current_database(), 'CONNECT')", (role,)).fetchone()[0]}
        acl = conn.execute("SELECT datacl::text FROM pg_database WHERE datname = current_database()").fetchone()[0]
    assert granted == set(roles)
    assert all(role in acl for role in roles)  # explicit grants, not PUBLIC's default

    _all_at_once(lambda p: provider.delete(f"{p['database']}/{p['schema']}", p), props)

    with psycopg.connect(sandbox.pg_dsn(scratch_database)) as conn:
        left = conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", (roles,)).fetchone()[0]
    assert left == 0


def test_one_role_changed_from_two_databases_at_once_is_retried_not_failed(sandbox, scratch_database):
    """A move between two cells of one server runs the tenant's script in both
    stores: the role is the server's, so both write its catalog row, and the
    database's advisory lock does not serialise them (PostgreSQL fails one with
    "tuple concurrently updated" unless the provider runs it again)."""
    provider = TenantSchemaProvider()
    other = f"{scratch_database}_b"
    with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{other}"')
    try:
        [here] = _props(sandbox, scratch_database, 1)
        there = {**here, "database": other, "owns_secret": False}
        provider.create(here)
        provider.create(there)
        for _ in range(12):  # the two stores' updates of a move, released together
            _all_at_once(lambda p: provider.update("", p, p), [here, there])
        for database in (scratch_database, other):
            with psycopg.connect(sandbox.pg_dsn(database)) as conn:
                assert conn.execute("SELECT has_database_privilege(%s, current_database(), 'CONNECT')",
                                    (here["role"],)).fetchone()[0]
    finally:
        with psycopg.connect(sandbox.pg_dsn(other), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{here["schema"]}" CASCADE')
        with psycopg.connect(sandbox.pg_dsn(scratch_database), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{here["schema"]}" CASCADE')
            conn.execute(f'REVOKE ALL ON DATABASE "{scratch_database}" FROM "{here["role"]}"')
        with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{here["role"]}"')


def test_a_delete_refused_for_a_catalog_race_is_run_again(sandbox, scratch_database, monkeypatch):
    """A delete writes the database's ACL and the role's catalog row, which another store's script on the
    same server may be writing at that moment: PostgreSQL refuses one of the two ("tuple concurrently
    updated"). The delete runs again (each step is idempotent) instead of failing a destroy or a move's
    rollback halfway."""
    from psycopg.errors import InternalError_

    from tenantctl import tenant_schema_sql

    provider = TenantSchemaProvider()
    [props] = _props(sandbox, scratch_database, 1)
    provider.create(props)
    drop_role, refused = tenant_schema_sql.drop_role, []

    def racing(conn, **kwargs):
        if not refused:
            refused.append(kwargs["role"])
            raise InternalError_("tuple concurrently updated")
        return drop_role(conn, **kwargs)

    monkeypatch.setattr(tenant_schema_sql, "drop_role", racing)
    provider.delete(f"{props['database']}/{props['schema']}", props)

    assert refused == [props["role"]]
    with psycopg.connect(sandbox.pg_dsn(scratch_database)) as conn:
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (props["role"],)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                            (props["schema"],)).fetchone()[0] == 0


def test_an_update_chosen_as_a_deadlocks_victim_by_a_live_writer_is_run_again(sandbox, scratch_database):
    """A store's script re-run while the tenant serves (a move re-applies its
    current store) locks the tables in their order; an append locks
    `messages` before `conversations`. PostgreSQL ends one of the two: when it
    is the script (which waited first), it runs again once the writer is done
    instead of failing the apply (and the move) with `deadlock detected`."""
    provider = TenantSchemaProvider()
    [props] = _props(sandbox, scratch_database, 1)
    provider.create(props)
    tables = [f'"{props["schema"]}".{t}' for t in ("messages", "conversations")]
    updated: list[BaseException | None] = []

    def update() -> None:
        try:
            provider.update("", props, props)
            updated.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test's verdict
            updated.append(exc)

    with psycopg.connect(sandbox.pg_dsn(scratch_database), autocommit=True) as writer, \
            psycopg.connect(sandbox.pg_dsn(scratch_database), autocommit=True) as watch:
        writer.execute("BEGIN")
        writer.execute(f"LOCK TABLE {tables[0]} IN ROW EXCLUSIVE MODE")  # an append's first lock
        script = threading.Thread(target=update)
        script.start()
        waiting = ("SELECT count(*) FROM pg_locks WHERE NOT granted AND mode = 'AccessExclusiveLock' "
                   "AND relation = %s::regclass")
        for _ in range(500):
            if watch.execute(waiting, (tables[0],)).fetchone()[0]:
                break
            threading.Event().wait(0.02)
        else:
            raise AssertionError("the script never waited for the writer's table")
        writer.execute(f"LOCK TABLE {tables[1]} IN ROW EXCLUSIVE MODE")  # its second: the deadlock
        writer.execute("COMMIT")
        script.join(60)
    assert updated == [None], updated
