"""What a pooled tenant's own database login (the credentials its secret holds,
which its workload reads) can do beside its schema, and what the platform
makes of it: the sandbox's PostgreSQL, the CLI."""

from __future__ import annotations

import json

import boto3
import psycopg
import pytest

from tenantctl.tenant_schema_sql import DATABASE_ACL_LOCK, take_acl_lock

pytestmark = pytest.mark.integration

HOARDER = "qx-lo"


def login(sandbox, secret_arn: str) -> psycopg.Connection:
    """A connection as the login the secret holds, as the tenant's workload can open one."""
    secrets = boto3.client("secretsmanager", endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)
    creds = json.loads(secrets.get_secret_value(SecretId=secret_arn)["SecretString"])
    return psycopg.connect(host=creds["host"], port=creds["port"], dbname=creds["dbname"], user=creds["username"],
                           password=creds["password"], autocommit=True)


def large_objects_of(sandbox, database: str, role: str) -> list[int]:
    with psycopg.connect(sandbox.pg_dsn(database)) as conn:
        return [r[0] for r in conn.execute(
            "SELECT m.oid::bigint FROM pg_largeobject_metadata m JOIN pg_roles r ON r.oid = m.lomowner "
            "WHERE r.rolname = %s", (role,))]


def test_large_objects_of_a_tenant_and_its_workspace_fail_the_check_and_go_with_the_tenant(
        sandbox, tenantctl_cli):
    assert tenantctl_cli("provision", HOARDER).returncode == 0
    ws = json.loads(tenantctl_cli("workspace", "add", HOARDER, "hr", "--json").stdout)["workspace"]
    store = json.loads(tenantctl_cli("status", HOARDER, "--json").stdout)["resources"]["store"]
    for owner in (store, ws["store"]):
        with login(sandbox, owner["secret_arn"]) as conn:  # no privilege governs lo_create
            conn.execute("SELECT lo_from_bytea(0, 'kept outside the schema, its RLS and its backups')")
        assert len(large_objects_of(sandbox, owner["database"], owner["role"])) == 1

    checked = tenantctl_cli("check", HOARDER, "--json")
    assert checked.returncode == 8, checked.stdout + checked.stderr
    failed = {(c["area"], c["name"]): c["detail"] for c in json.loads(checked.stdout)["checks"]
              if c["outcome"] == "fail"}
    assert set(failed) == {("database", "role-owns-nothing"), ("workspace hr/database", "role-owns-nothing")}, failed
    assert all("owns large object " in detail for detail in failed.values()), failed

    gone = tenantctl_cli("deprovision", HOARDER, "--yes", "--json")
    assert gone.returncode == 0, gone.stderr
    for owner in (store, ws["store"]):
        assert large_objects_of(sandbox, owner["database"], owner["role"]) == []
        with psycopg.connect(sandbox.pg_dsn(owner["database"])) as conn:
            assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner["role"],)).fetchone() is None


def test_a_tenant_login_holding_the_acl_lock_stalls_neither_helpers_nor_provisions(sandbox, tenantctl_cli):
    """Any role may take any advisory lock, and the ACL lock's key is in the
    source: a tenant's login holding it used to stall every schema script and
    ACL change of its database, its neighbours' provisions included."""
    assert tenantctl_cli("provision", "qx-lock").returncode == 0
    store = json.loads(tenantctl_cli("status", "qx-lock", "--json").stdout)["resources"]["store"]
    holder = login(sandbox, store["secret_arn"])
    holder.execute("SELECT pg_advisory_lock(%s)", (DATABASE_ACL_LOCK,))
    with psycopg.connect(sandbox.pg_dsn(store["database"])) as admin:
        admin.execute("SET statement_timeout = '60s'")  # the bound on a hang, not a timing
        with admin.transaction():
            take_acl_lock(admin)
            held = admin.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = "
                                 "pg_backend_pid() AND granted").fetchone()[0]
    assert held == 1
    with pytest.raises(psycopg.OperationalError):  # its session was ended
        holder.execute("SELECT 1")

    holder = login(sandbox, store["secret_arn"])  # again, then a neighbour's provision (the template's script)
    holder.execute("SELECT pg_advisory_lock(%s)", (DATABASE_ACL_LOCK,))
    provisioned = tenantctl_cli("provision", "qx-lock2")
    assert provisioned.returncode == 0, provisioned.stderr
    assert _ended(holder)


def _ended(conn: psycopg.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False
