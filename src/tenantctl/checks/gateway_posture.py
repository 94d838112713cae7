"""Posture of the shared pool's gateway role (tenant_runtime.gateway), for a
pooled tenant: checked logged in as the gateway itself, with the credentials
from the platform's gateway secret, as the runtime logs in.

- ``gateway-attributes``: LOGIN, NOINHERIT (a member that inherits would hold
  every tenant's privileges at once), not SUPERUSER, no BYPASSRLS, CREATEROLE,
  CREATEDB, REPLICATION;
- ``gateway-owns-nothing``: no schema, table, sequence, function or large object;
- ``gateway-memberships``: member of this tenant's role, and of tenant roles
  only (a membership in any other role is a privilege it could SET ROLE to),
  without INHERIT on any of them;
- ``gateway-no-privileges``: no USAGE on any tenant schema and no privilege on
  any table of this tenant's schema, as itself;
- ``gateway-reads-nothing``: as itself, with the tenant setting set, reading
  and writing each table of the tenant's schema is refused by PostgreSQL;
- ``gateway-secret-policy``: the cell's gateway secret has no resource policy
  (the cell's stack declares none; one could hand the password that becomes
  every pooled tenant's role to any principal). A cell's, checked with each of
  its pooled tenants: a provision's check takes it from the cell's reads
  (``checks.reads.cell_reads_memoized``), so a provision pays no call for it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from tenantctl.checks.results import CheckResult, run_connected, run_each

AREA = "gateway"
CONNECTED = ("gateway-attributes", "gateway-owns-nothing", "gateway-memberships", "gateway-no-privileges",
             "gateway-reads-nothing")  # logged in as the gateway
NAMES = (*CONNECTED, "gateway-secret-policy")


def connect_as_gateway(platform: dict[str, Any], clients: Callable[..., Any]) -> Any:
    import psycopg

    secret = json.loads(clients("secretsmanager", region=platform.get("region")).get_secret_value(
        SecretId=platform["gateway_secret_arn"])["SecretString"])
    return psycopg.connect(host=secret["host"], port=secret["port"], dbname=secret["dbname"],
                           user=secret["username"], password=secret["password"], connect_timeout=10,
                           autocommit=True)


class _GatewayChecks:
    def __init__(self, conn: Any, record: Any, gateway: str) -> None:
        self.conn, self.gateway = conn, gateway
        self.tenant_id = record.tenant_id
        self.schema, self.role = record.resources.store.schema_name, record.resources.store.role

    def all(self, query: str, *params: Any) -> list:
        return self.conn.execute(query, params).fetchall()

    def gateway_attributes(self) -> tuple[bool, str]:
        [(login, inherit, superuser, bypass, createrole, createdb, replication)] = self.all(
            "SELECT rolcanlogin, rolinherit, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolreplication "
            "FROM pg_roles WHERE rolname = %s", self.gateway)
        wrong = [name for name, bad in (("NOLOGIN", not login), ("INHERIT", inherit), ("SUPERUSER", superuser),
                                        ("BYPASSRLS", bypass), ("CREATEROLE", createrole), ("CREATEDB", createdb),
                                        ("REPLICATION", replication)) if bad]
        return not wrong, f"{self.gateway} has {', '.join(wrong)}" if wrong else f"{self.gateway}: LOGIN NOINHERIT only"

    def gateway_owns_nothing(self) -> tuple[bool, str]:
        owned = [r[0] for r in self.all(
            "WITH g AS (SELECT oid FROM pg_roles WHERE rolname = %s) "
            "SELECT 'schema ' || nspname FROM pg_namespace, g WHERE nspowner = g.oid "
            "UNION ALL SELECT relname FROM pg_class, g WHERE relowner = g.oid "
            "UNION ALL SELECT 'function ' || proname FROM pg_proc, g WHERE proowner = g.oid "
            "UNION ALL SELECT 'large object ' || m.oid FROM pg_largeobject_metadata m, g WHERE lomowner = g.oid",
            self.gateway)]
        return not owned, f"{self.gateway} owns {', '.join(owned)}" if owned else f"{self.gateway} owns no object"

    def gateway_memberships(self) -> tuple[bool, str]:
        # inherit_option exists from PostgreSQL 16; before, the role's NOINHERIT governs alone.
        has_option = bool(self.all("SELECT 1 FROM pg_attribute WHERE attrelid = 'pg_auth_members'::regclass "
                                   "AND attname = 'inherit_option'"))
        inherit = "m.inherit_option" if has_option else "false"
        rows = self.all(f"SELECT g.rolname, {inherit}, EXISTS (SELECT 1 FROM pg_namespace n "
                        "WHERE n.nspname || '_app' = g.rolname AND n.nspname LIKE 'tenant\\_%%') "
                        "FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                        "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s ORDER BY 1", self.gateway)
        problems = [f"member of {name}, not a tenant role" for name, _, tenant in rows if not tenant]
        problems += [f"inherits {name}" for name, inherits, _ in rows if inherits]
        if self.role not in {name for name, _, _ in rows}:
            problems.append(f"not a member of {self.role}: the shared pool cannot serve {self.tenant_id}")
        return not problems, "; ".join(problems) or f"member of {len(rows)} tenant roles, none inherited"

    def gateway_no_privileges(self) -> tuple[bool, str]:
        schemas = [r[0] for r in self.all(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\\_%%' "
            "AND has_schema_privilege(%s, oid, 'USAGE') ORDER BY 1", self.gateway)]
        tables = [r[0] for r in self.all(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND has_table_privilege(%s, c.oid, "
            "'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') ORDER BY 1", self.schema, self.gateway)]
        problems = [f"USAGE on {s}" for s in schemas] + [f"privileges on {self.schema}.{t}" for t in tables]
        return not problems, "; ".join(problems) or "no privilege on any tenant schema or table as itself"

    def gateway_reads_nothing(self) -> tuple[bool, str]:
        from psycopg import sql

        tables = [r[0] for r in self.all(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1", self.schema)]
        if not tables:
            return False, f"no tables in schema {self.schema} (probe inconclusive)"
        # Every probe in one round trip: a block runs each read and write as the gateway (a DO
        # block has its caller's rights) in a subtransaction of its own, so a refusal ends only
        # that probe; any error but a refusal fails the block (the check errors). What went
        # through is passed back in a transaction-local setting; the whole is rolled back.
        probes = [(f"{verb} {table}", sql.SQL(f"{statement} {{}}").format(sql.Identifier(self.schema, table)))
                  for table in tables for verb, statement in (("read", "SELECT count(*) FROM"),
                                                              ("delete from", "DELETE FROM"))]
        body = sql.SQL(" ").join(
            sql.SQL("BEGIN EXECUTE {}; allowed := array_append(allowed, {}::text); "
                    "EXCEPTION WHEN insufficient_privilege THEN NULL; END;").format(
                sql.Literal(statement.as_string(self.conn)), sql.Literal(what))
            for what, statement in probes)
        tag = sql.SQL(f"$probe{uuid.uuid4().hex}$")  # no name inside can close the block early
        block = sql.SQL("DO {} DECLARE allowed text[] := '{{}}'; BEGIN "
                        "PERFORM set_config('app.tenant_id', {}, true); {} "
                        "PERFORM set_config('tenantctl.allowed', array_to_string(allowed, ','), true); "
                        "END {}").format(tag, sql.Literal(self.tenant_id), body, tag)
        with self.conn.transaction(force_rollback=True):
            self.conn.execute(block)
            allowed = [a for a in self.conn.execute("SELECT current_setting('tenantctl.allowed')").fetchone()[0]
                       .split(",") if a]
        return not allowed, (f"as itself the gateway could {', '.join(allowed)}" if allowed else
                             f"as itself the gateway is refused every read and write of {len(tables)} tables")


def gateway_secret_policy(platform: dict[str, Any], clients: Callable[..., Any]) -> tuple[bool, str]:
    from tenantctl.checks.aws_posture import policy_principals

    arn = platform["gateway_secret_arn"]
    policy = clients("secretsmanager", region=platform.get("region")).get_resource_policy(
        SecretId=arn).get("ResourcePolicy")
    return (False, f"{arn}: resource policy naming {policy_principals(policy)}") if policy else (
        True, f"{arn}: no resource policy")


def gateway_checks(record: Any, platform: dict[str, Any], clients: Callable[..., Any]) -> Iterator[CheckResult]:
    yield from run_connected(AREA, CONNECTED, lambda: connect_as_gateway(platform, clients),
                             lambda conn: _GatewayChecks(conn, record, platform["gateway_role"]), "the gateway role")
    yield from run_each(AREA, [("gateway-secret-policy", lambda: gateway_secret_policy(platform, clients))])
