"""Database posture of one tenant, checked as the tenant's own role.

The checks log in exactly as the runtime does (the role and password from the
tenant's Secrets Manager secret, the endpoint from the registry record), read
the catalogs, and probe row-level security with canary rows inside a
transaction that is always rolled back (nothing is ever committed):

- ``role-not-superuser``, ``role-no-bypassrls``, ``role-no-admin-attributes``
  (CREATEROLE, CREATEDB, REPLICATION), ``role-owns-nothing`` (no schema, table,
  sequence or function in the database is owned by the role: RLS does not bind
  owners unless forced, and owners can switch it off), ``role-no-memberships``
  (no role to inherit ownership or BYPASSRLS from);
- ``rls-enabled`` and ``rls-forced`` on every table of the tenant schema,
  ``rls-policy`` (each table has a policy keyed on ``app.tenant_id``, for
  reads and writes);
- ``unique-keys-include-tenant``: every unique index / primary key includes
  ``tenant_id``;
- ``no-foreign-schema-access``: no USAGE on another tenant's schema;
- ``db-public-privileges``: PUBLIC has neither CONNECT nor TEMPORARY on the
  tenant's database or the ``postgres`` maintenance database, the role cannot
  connect to ``postgres`` nor create temporary tables;
- ``rls-lints``: Supabase splinter's generic lints, adapted to the tenant
  schema (``rls_lints``), find nothing;
- ``fail-closed``: without ``app.tenant_id`` the role sees zero rows of every
  table (or gets an error) and cannot insert, while the canaries are visible
  once the setting names the tenant (so "zero rows" is not vacuous).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from tenantctl.checks.results import CheckResult, run_connected

AREA = "database"
TENANT_COLUMN = "tenant_id"
SETTING = "app.tenant_id"
NAMES = ("role-not-superuser", "role-no-bypassrls", "role-no-admin-attributes", "role-owns-nothing",
         "role-no-memberships", "rls-enabled", "rls-forced", "rls-policy", "unique-keys-include-tenant",
         "no-foreign-schema-access", "db-public-privileges", "rls-lints", "fail-closed")

# Canary rows for the tables templates/tenant_schema.sql.j2 creates ({id}: a fresh uuid).
CANARIES: dict[str, tuple[str, tuple]] = {
    "conversations": ("(conversation_id) VALUES (%s)", ("{id}",)),
    "messages": ("(conversation_id, role, content) VALUES (%s, 'system', '\\x00'::bytea)", ("{id}",)),
    "context_items": ("(item_id, kind, content) VALUES (%s, 'tenantctl-check', '\\x00'::bytea)", ("{id}",)),
    "documents": ("(doc_id, content, key_version) VALUES (%s, '\\x00'::bytea, 1)", ("{id}",)),
    # A version no real key has (versions start at 1): the check never shadows one.
    "search_keys": ("(version, sealed) VALUES (2147483647, '\\x00'::bytea)", ()),
    "search_vocab": ("(key_version, gram, term) VALUES (1, decode(md5(%s), 'hex'), decode(md5(%s), 'hex'))",
                     ("{id}", "{id}")),
    # A kind no item has (a uuid): the check never shadows a count.
    "search_stats": ("(kind, key_version, term, items) VALUES (%s, 2147483647, 0, 0)", ("{id}",)),
    # Planted by name order: after the conversation canary they belong to.
    "summaries": ("(conversation_id, content, key_version) VALUES (%s, '\\x00'::bytea, 1)", ("{id}",)),
}


def _secret(record: Any, clients: Callable[..., Any]) -> dict[str, Any]:
    value = clients("secretsmanager", region=record.region).get_secret_value(
        SecretId=record.resources.store.secret_arn)["SecretString"]
    return json.loads(value)


def connect_as_tenant(record: Any, clients: Callable[..., Any]) -> Any:
    """A connection as the tenant's own login (``clients``: the target's AWS clients)."""
    import psycopg

    store, secret = record.resources.store, _secret(record, clients)
    return psycopg.connect(host=store.endpoint, port=store.port, dbname=store.database,
                           user=secret["username"], password=secret["password"], connect_timeout=10,
                           autocommit=True)


class _DbChecks:
    def __init__(self, conn: Any, record: Any, row_key: str | None = None) -> None:
        self.conn = conn
        self.tenant_id = row_key or record.tenant_id  # a workspace's rows carry its key
        self.schema = record.resources.store.schema_name
        self.role = record.resources.store.role

    def one(self, query: str, *params: Any) -> Any:
        return self.conn.execute(query, params).fetchone()

    def all(self, query: str, *params: Any) -> list:
        return self.conn.execute(query, params).fetchall()

    def _attrs(self) -> tuple:
        row = self.one("SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolreplication "
                       "FROM pg_roles WHERE rolname = %s", self.role)
        if row is None:
            raise LookupError(f"role {self.role!r} does not exist")
        return row

    def tables(self) -> list[tuple[int, str, bool, bool]]:
        return self.all("SELECT c.oid, c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname", self.schema)

    # -- role ----------------------------------------------------------------------------
    def role_not_superuser(self) -> tuple[bool, str]:
        superuser = self._attrs()[0]
        return not superuser, f"{self.role} is SUPERUSER" if superuser else f"{self.role}: NOSUPERUSER"

    def role_no_bypassrls(self) -> tuple[bool, str]:
        bypass = self._attrs()[1]
        return not bypass, f"{self.role} has BYPASSRLS" if bypass else f"{self.role}: NOBYPASSRLS"

    def role_no_admin_attributes(self) -> tuple[bool, str]:
        _, _, createrole, createdb, replication = self._attrs()
        found = [n for n, v in (("CREATEROLE", createrole), ("CREATEDB", createdb), ("REPLICATION", replication)) if v]
        return not found, f"{self.role} has {', '.join(found)}" if found else "no CREATEROLE/CREATEDB/REPLICATION"

    def role_owns_nothing(self) -> tuple[bool, str]:
        owned = [f"schema {r[0]}" for r in self.all(
            "SELECT nspname FROM pg_namespace WHERE nspowner = (SELECT oid FROM pg_roles WHERE rolname = %s)",
            self.role)]
        owned += [f"{r[0]}.{r[1]}" for r in self.all(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = %s) ORDER BY 1, 2", self.role)]
        owned += [f"function {r[0]}" for r in self.all(
            "SELECT proname FROM pg_proc WHERE proowner = (SELECT oid FROM pg_roles WHERE rolname = %s)", self.role)]
        return not owned, f"{self.role} owns {', '.join(owned)}" if owned else f"{self.role} owns no object"

    def role_no_memberships(self) -> tuple[bool, str]:
        granted = [r[0] for r in self.all(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s ORDER BY 1", self.role)]
        return not granted, f"{self.role} is a member of {', '.join(granted)}" if granted else "no role memberships"

    # -- tables ---------------------------------------------------------------------------
    def _per_table(self, index: int, what: str) -> tuple[bool, str]:
        tables = self.tables()
        if not tables:
            return False, f"no tables in schema {self.schema}"
        missing = [t[1] for t in tables if not t[index]]
        if missing:
            return False, f"{what} off on {', '.join(missing)}"
        return True, f"{what} on {len(tables)} tables"

    def rls_enabled(self) -> tuple[bool, str]:
        return self._per_table(2, "ROW LEVEL SECURITY")

    def rls_forced(self) -> tuple[bool, str]:
        return self._per_table(3, "FORCE ROW LEVEL SECURITY")

    def rls_policy(self) -> tuple[bool, str]:
        problems = []
        for oid, name, _, _ in self.tables():
            policies = self.all("SELECT polname, polcmd, polpermissive, pg_get_expr(polqual, polrelid), "
                                "pg_get_expr(polwithcheck, polrelid) FROM pg_policy WHERE polrelid = %s", oid)
            keyed = [p for p in policies if p[1] == "*" and SETTING in (p[3] or "")
                     and (p[4] is None or SETTING in p[4])]
            if not keyed:
                problems.append(f"{name}: no policy on {SETTING} for all commands")
            for p in policies:
                if p[2] and SETTING not in (p[3] or "") and p[1] in ("*", "r"):
                    problems.append(f"{name}: permissive policy {p[0]} not keyed on {SETTING}")
        return not problems, "; ".join(problems) or f"every table filtered on {SETTING}"

    def unique_keys_include_tenant(self) -> tuple[bool, str]:
        problems = [f"{t[1]} has no {TENANT_COLUMN} column" for t in self.tables() if self.one(
            "SELECT 1 FROM pg_attribute WHERE attrelid = %s AND attname = %s AND NOT attisdropped",
            t[0], TENANT_COLUMN) is None]
        rows = self.all(
            "SELECT c.relname, i.relname, ix.indkey::int2[], a.attnum FROM pg_index ix "
            "JOIN pg_class c ON c.oid = ix.indrelid JOIN pg_class i ON i.oid = ix.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = %s AND NOT a.attisdropped "
            "WHERE n.nspname = %s AND ix.indisunique ORDER BY 1, 2", TENANT_COLUMN, self.schema)
        problems += [f"unique index {index} on {table} lacks {TENANT_COLUMN}"
                     for table, index, keys, attnum in rows if attnum is not None and attnum not in list(keys)]
        return not problems, "; ".join(problems) or f"{len(rows)} unique keys, all include {TENANT_COLUMN}"

    def no_foreign_schema_access(self) -> tuple[bool, str]:
        others = [r[0] for r in self.all(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\\_%%' AND nspname <> %s "
            "AND has_schema_privilege(%s, oid, 'USAGE') ORDER BY 1", self.schema, self.role)]
        return not others, f"USAGE on {', '.join(others)}" if others else "no access to other tenant schemas"

    def db_public_privileges(self) -> tuple[bool, str]:
        from tenantctl.tenant_schema_sql import MAINTENANCE_DATABASE

        rows = self.all(
            "SELECT datname, has_database_privilege('public', oid, 'CONNECT'), "
            "has_database_privilege('public', oid, 'TEMPORARY'), has_database_privilege(%s, oid, 'CONNECT'), "
            "has_database_privilege(%s, oid, 'TEMPORARY') FROM pg_database "
            "WHERE datname IN (current_database(), %s) ORDER BY datname", self.role, self.role, MAINTENANCE_DATABASE)
        problems = []
        for name, public_connect, public_temp, connect, temp in rows:
            problems += [f"PUBLIC has {p} on {name}" for p, v in (("CONNECT", public_connect),
                                                                   ("TEMPORARY", public_temp)) if v]
            if temp:
                problems.append(f"{self.role} may create temporary tables in {name}")
            if connect and name == MAINTENANCE_DATABASE and self.one("SELECT current_database()")[0] != name:
                problems.append(f"{self.role} may connect to {name}")
        return not problems, "; ".join(problems) or (
            f"PUBLIC has no CONNECT/TEMPORARY on {', '.join(r[0] for r in rows)}; {self.role}: CONNECT here only")

    def rls_lints(self) -> tuple[bool, str]:
        from tenantctl.checks.rls_lints import LINTS, lint_schema

        found = lint_schema(self.conn, self.schema)
        return not found, "; ".join(map(str, found)) or f"{len(LINTS)} lints, nothing found in {self.schema}"

    # -- behaviour ---------------------------------------------------------------------------
    def fail_closed(self) -> tuple[bool, str]:
        from psycopg import sql

        canary = f"tenantctl-check-{uuid.uuid4().hex[:12]}"
        tables = [t[1] for t in self.tables()]
        if not tables:
            return False, f"no tables in schema {self.schema}"
        problems: list[str] = []
        self.conn.autocommit = False
        try:
            with self.conn.transaction(force_rollback=True):
                self.conn.execute("SELECT set_config(%s, %s, true)", (SETTING, self.tenant_id))
                planted = []
                for table in tables:
                    if table in CANARIES:
                        columns, params = CANARIES[table]
                        self.conn.execute(sql.SQL("INSERT INTO {}.{} ").format(
                            sql.Identifier(self.schema), sql.Identifier(table)) + sql.SQL(columns),
                            tuple(p.format(id=canary) for p in params))
                        planted.append(table)
                self.conn.execute(f"RESET {SETTING}")  # as in a session that never set it
                for table in tables:
                    try:
                        with self.conn.transaction():
                            seen = self.conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
                                sql.Identifier(self.schema), sql.Identifier(table))).fetchone()[0]
                    except Exception:  # noqa: BLE001 - an error is closed too
                        continue
                    if seen:
                        problems.append(f"{table}: {seen} rows visible without {SETTING}")
                try:
                    with self.conn.transaction():
                        self.conn.execute(sql.SQL("INSERT INTO {}.conversations (tenant_id, conversation_id) "
                                                  "VALUES (%s, %s)").format(sql.Identifier(self.schema)),
                                          (self.tenant_id, canary + "-unset"))
                    if "conversations" in tables:
                        problems.append(f"insert accepted without {SETTING}")
                except Exception:  # noqa: BLE001 - refused: closed
                    pass
                self.conn.execute("SELECT set_config(%s, %s, true)", (SETTING, self.tenant_id))
                for table in planted:
                    seen = self.conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
                        sql.Identifier(self.schema), sql.Identifier(table))).fetchone()[0]
                    if not seen:
                        problems.append(f"{table}: canary invisible with {SETTING} set (probe inconclusive)")
        finally:
            self.conn.autocommit = True
        detail = (f"without {SETTING}: 0 rows in {len(tables)} tables, insert refused; "
                  f"canaries visible to {self.tenant_id}; rolled back")
        return not problems, "; ".join(problems) or detail


def database_checks(record: Any, clients: Callable[..., Any], row_key: str | None = None,
                    area: str = AREA) -> Iterator[CheckResult]:
    """``row_key`` and ``area``: a workspace's (``record`` its view), else the tenant's."""
    who = "the tenant role" if row_key is None else "the workspace role"
    yield from run_connected(area, NAMES, lambda: connect_as_tenant(record, clients),
                             lambda conn: _DbChecks(conn, record, row_key), who)
