"""Database posture of one tenant, checked as the tenant's own role.

The checks log in exactly as the runtime does (the role and password from the
tenant's Secrets Manager secret, the endpoint from the registry record), read
the catalogs, and probe row-level security with canary rows inside a
transaction that is always rolled back (nothing is ever committed). A
suspended tenant's role cannot log in: its checks run as the role through
another login become it (``SET ROLE``), so the same probes run as the same
role: a pooled tenant's through the shared pool's gateway, as the runtime's
shared pool does; a dedicated tenant's through its server's admin (no gateway
there; the schema script makes the admin a member of the role, SET only):

- ``role-not-superuser``, ``role-no-bypassrls``, ``role-no-admin-attributes``
  (CREATEROLE, CREATEDB, REPLICATION), ``role-owns-nothing`` (no schema, table,
  sequence, function or large object in the database is owned by the role: RLS
  does not bind owners unless forced, and owners can switch it off; a large
  object is data outside the schema, its RLS and its backups, and keeps the
  role from being dropped), ``role-no-memberships``
  (no role to inherit ownership or BYPASSRLS from);
- ``role-connection-limit``: the role's CONNECTION LIMIT is the one its spec
  and cell give it (a pooled tenant's is never unlimited: it would take every
  connection slot of the shared server);
- ``role-login``: LOGIN while it serves; a suspended tenant's role is NOLOGIN
  with no session left open;
- ``role-settings``: the role's defaults (``pg_db_role_setting``) are only the
  ``search_path`` the schema script sets (a role may set its own, e.g. a
  ``statement_timeout`` every login as it, tenantctl's included, inherits);
- ``rls-enabled`` and ``rls-forced`` on every table of the tenant schema,
  ``rls-policy`` (each table has a policy keyed on ``app.tenant_id``, for
  reads and writes);
- ``unique-keys-include-tenant``: every unique index / primary key includes
  ``tenant_id``;
- ``no-foreign-schema-access``: no USAGE on another tenant's schema, no grant
  to the role on an object outside its own (``tenant_schema_sql.grant_drift``);
- ``no-outside-grants``: the tenant's schema, tables, sequences and routines are
  granted to no role outside the tenant (PUBLIC included; the same query), nor
  is its role (no member but the gateway and an admin), nor owned by a role
  outside the tenant but an admin, nor would a table made there later be (no
  default privilege for a role outside the tenant in its schema, by any role, nor
  set by its role anywhere: in another schema or database-wide, no IN SCHEMA);
- ``db-public-privileges``: PUBLIC has neither CONNECT nor TEMPORARY on the
  tenant's database or the ``postgres`` maintenance database, the role cannot
  connect to ``postgres`` nor create temporary tables;
- ``rls-lints``: Supabase splinter's generic lints, adapted to the tenant
  schema (``rls_lints``), find nothing;
- ``fail-closed``: without ``app.tenant_id`` the role sees zero rows of every
  table (or gets an error) and cannot insert, while the canaries are visible
  once the setting names the tenant (so "zero rows" is not vacuous);
- ``search-analyzer``: the store's search index was built by tenantctl's
  analyzer, else a warning naming the fix (``search_index``; never a failure).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import Any, NamedTuple

from psycopg import sql

from tenantctl.checks.results import CheckResult, Outcome, run_connected
from tenantctl.tenant_schema_sql import LoginFacts, login_facts

AREA = "database"
TENANT_COLUMN = "tenant_id"
SETTING = "app.tenant_id"
NAMES = ("role-not-superuser", "role-no-bypassrls", "role-no-admin-attributes", "role-owns-nothing",
         "role-no-memberships", "role-connection-limit", "role-login", "role-settings", "rls-enabled",
         "rls-forced", "rls-policy", "unique-keys-include-tenant", "no-foreign-schema-access",
         "no-outside-grants", "db-public-privileges", "rls-lints", "fail-closed", "search-analyzer")

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
    # A version no real key has: the check never shadows a key's analyzer.
    "search_analyzers": ("(key_version, analyzer) VALUES (2147483647, %s)", ("{id}",)),
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


def closed_login(record: Any) -> bool:
    """A suspended tenant: its logins are NOLOGIN (operations.suspend)."""
    return record.status.value == "suspended"


AdminConnect = Callable[[Any], Any]  # a record -> a connection to its store as its server's admin


def connect_as_role(record: Any, clients: Callable[..., Any], platform: dict[str, Any] | None,
                    admin: AdminConnect | None = None) -> Any:
    """A session as the tenant's role: its own login, or, while that is closed,
    another login become the role: a pooled tenant's through the gateway (a
    member of every pooled tenant role and workspace role, NOINHERIT), a
    dedicated one's through its server's admin (``admin``)."""
    if not closed_login(record):
        return connect_as_tenant(record, clients)
    if record.tier.value == "pooled":
        from tenantctl.checks.gateway_posture import connect_as_gateway

        if not (platform or {}).get("gateway_secret_arn"):
            raise LookupError("the tenant is suspended (its login is NOLOGIN) and its cell has no gateway login "
                              "to become its role through")
        conn = connect_as_gateway(platform, clients)
    else:
        if admin is None:
            raise LookupError("the tenant is suspended (its login is NOLOGIN) and no admin login of its server "
                              "is known here to become its role through")
        conn = admin(record)
        conn.autocommit = True
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(record.resources.store.role)))
    return conn


class _Table(NamedTuple):
    oid: int
    name: str
    rls: bool
    forced: bool
    has_tenant_column: bool


class _DbChecks:
    """Each catalog is read once per concern, every row the checks of that
    concern need in one round trip, and judged here: the checks run back to
    back on one connection, so a read is shared by the checks that use it."""

    def __init__(self, conn: Any, record: Any, workspace: str | None = None,
                 connection_limit: int | None = None) -> None:
        from tenantctl.naming import workspace_key

        self.conn = conn
        # a workspace's rows carry its key
        self.tenant_id = record.tenant_id if workspace is None else workspace_key(record.tenant_id, workspace)
        self.owner, self.workspace = record.tenant_id, workspace
        self.schema = record.resources.store.schema_name
        self.role = record.resources.store.role
        self.pooled, self.closed = record.tier.value == "pooled", closed_login(record)
        self.repair = f"`tenantctl provision {record.tenant_id}`"  # resets what the schema script sets
        self.connection_limit = connection_limit  # what its applied spec and cell say; None: not known here

    def one(self, query: str, *params: Any) -> Any:
        return self.conn.execute(query, params).fetchone()

    def all(self, query: str, *params: Any) -> list:
        return self.conn.execute(query, params).fetchall()

    @cached_property
    def _role_facts(self) -> tuple:
        """(superuser, bypassrls, createrole, createdb, replication, [what it owns], [roles it is a member of])."""
        row = self.one(
            "SELECT r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb, r.rolreplication, "
            "ARRAY(SELECT 'schema ' || nspname FROM pg_namespace WHERE nspowner = r.oid ORDER BY 1) "
            "|| ARRAY(SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.relowner = r.oid ORDER BY n.nspname, c.relname) "
            "|| ARRAY(SELECT 'function ' || proname FROM pg_proc WHERE proowner = r.oid ORDER BY 1) "
            # Any role may create large objects: database-wide, outside its schema, RLS and backups.
            "|| ARRAY(SELECT 'large object ' || oid FROM pg_largeobject_metadata WHERE lomowner = r.oid "
            "ORDER BY oid), "
            "ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "WHERE m.member = r.oid ORDER BY 1) "
            "FROM pg_roles r WHERE r.rolname = %s", self.role)
        if row is None:
            raise LookupError(f"role {self.role!r} does not exist")
        return row

    def _attrs(self) -> tuple:
        return self._role_facts[:5]

    @cached_property
    def _tables(self) -> list[_Table]:
        return [_Table(*row) for row in self.all(
            "SELECT c.oid, c.relname, c.relrowsecurity, c.relforcerowsecurity, EXISTS (SELECT 1 FROM pg_attribute a "
            "WHERE a.attrelid = c.oid AND a.attname = %s AND NOT a.attisdropped) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname", TENANT_COLUMN, self.schema)]

    def tables(self) -> list[_Table]:
        return self._tables

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
        owned = self._role_facts[5]
        return not owned, f"{self.role} owns {', '.join(owned)}" if owned else f"{self.role} owns no object"

    def role_no_memberships(self) -> tuple[bool, str]:
        granted = self._role_facts[6]
        return not granted, f"{self.role} is a member of {', '.join(granted)}" if granted else "no role memberships"

    @cached_property
    def _login_facts(self) -> LoginFacts:
        facts = login_facts(self.conn, self.role)
        if facts is None:
            raise LookupError(f"no role {self.role}")
        return facts

    def role_connection_limit(self) -> tuple[bool, str]:
        from tenantctl.models import NO_CONNECTION_LIMIT

        live = self._login_facts.connection_limit
        shown = "none" if live == NO_CONNECTION_LIMIT else str(live)
        if self.connection_limit is not None and live != self.connection_limit:
            wanted = "none" if self.connection_limit == NO_CONNECTION_LIMIT else self.connection_limit
            return False, (f"{self.role}: CONNECTION LIMIT {shown}, its spec and cell say {wanted} "
                           f"({self.repair} resets it)")
        if self.pooled and live == NO_CONNECTION_LIMIT:
            return False, (f"{self.role} has no CONNECTION LIMIT: its login may take every connection slot of "
                           "the shared server")
        return True, f"{self.role}: CONNECTION LIMIT {shown}" + ("" if self.pooled else " (its own server)")

    def role_login(self) -> tuple[bool, str]:
        can_login, sessions = self._login_facts.can_login, self._login_facts.sessions
        if not self.closed:
            return can_login, f"{self.role}: LOGIN" if can_login else f"{self.role} is NOLOGIN while it serves"
        problems = ([f"{self.role} may log in while suspended"] if can_login else []) + (
            [f"{len(sessions)} session(s) still logged in as {self.role} (pid {', '.join(map(str, sessions))})"]
            if sessions else [])
        return not problems, "; ".join(problems) or f"suspended: {self.role} is NOLOGIN, no session open"

    def role_settings(self) -> tuple[bool, str]:
        from tenantctl.tenant_schema_sql import role_settings, script_settings

        extra = [s for s in role_settings(self.conn, self.role, self.schema) if s not in script_settings(self.schema)]
        return not extra, (f"{self.role} has role defaults it was not given: {', '.join(extra)} "
                           f"({self.repair} resets them)" if extra else f"{self.role}: search_path only")

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
        tables = self.tables()
        policies: dict[int, list[tuple]] = {t.oid: [] for t in tables}
        for relid, *policy in self.all(
                "SELECT polrelid, polname, polcmd, polpermissive, pg_get_expr(polqual, polrelid), "
                "pg_get_expr(polwithcheck, polrelid) FROM pg_policy WHERE polrelid = ANY(%s)", [t.oid for t in tables]):
            policies[relid].append(policy)
        problems = []
        for table in tables:
            keyed = [p for p in policies[table.oid] if p[1] == "*" and SETTING in (p[3] or "")
                     and (p[4] is None or SETTING in p[4])]
            if not keyed:
                problems.append(f"{table.name}: no policy on {SETTING} for all commands")
            for p in policies[table.oid]:
                if p[2] and SETTING not in (p[3] or "") and p[1] in ("*", "r"):
                    problems.append(f"{table.name}: permissive policy {p[0]} not keyed on {SETTING}")
        return not problems, "; ".join(problems) or f"every table filtered on {SETTING}"

    def unique_keys_include_tenant(self) -> tuple[bool, str]:
        problems = [f"{t.name} has no {TENANT_COLUMN} column" for t in self.tables() if not t.has_tenant_column]
        rows = self.all(
            "SELECT c.relname, i.relname, ix.indkey::int2[], a.attnum FROM pg_index ix "
            "JOIN pg_class c ON c.oid = ix.indrelid JOIN pg_class i ON i.oid = ix.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = %s AND NOT a.attisdropped "
            "WHERE n.nspname = %s AND ix.indisunique ORDER BY 1, 2", TENANT_COLUMN, self.schema)
        problems += [f"unique index {index} on {table} lacks {TENANT_COLUMN}"
                     for table, index, keys, attnum in rows if attnum is not None and attnum not in list(keys)]
        return not problems, "; ".join(problems) or f"{len(rows)} unique keys, all include {TENANT_COLUMN}"

    @cached_property
    def _grants(self) -> dict[str, list[str]]:
        from tenantctl.tenant_schema_sql import grant_drift

        # The query the TenantSchema read reports as drift, so `refresh` names what these find.
        return grant_drift(self.conn, self.role, self.schema)

    def no_foreign_schema_access(self) -> tuple[bool, str]:
        found = self._grants["foreign_access"]
        return not found, "; ".join(found) or "no access to other tenant schemas"

    def no_outside_grants(self) -> tuple[bool, str]:
        found = self._grants["outside_grants"]
        return not found, "; ".join(found) + f" ({self.repair} revokes them)" if found else (
            f"schema {self.schema} and its objects granted to no role outside the tenant")

    def db_public_privileges(self) -> tuple[bool, str]:
        from tenantctl.tenant_schema_sql import MAINTENANCE_DATABASE

        rows = self.all(
            "SELECT datname, has_database_privilege('public', oid, 'CONNECT'), "
            "has_database_privilege('public', oid, 'TEMPORARY'), has_database_privilege(%s, oid, 'CONNECT'), "
            "has_database_privilege(%s, oid, 'TEMPORARY'), current_database() FROM pg_database "
            "WHERE datname IN (current_database(), %s) ORDER BY datname", self.role, self.role, MAINTENANCE_DATABASE)
        problems = []
        for name, public_connect, public_temp, connect, temp, here in rows:
            problems += [f"PUBLIC has {p} on {name}" for p, v in (("CONNECT", public_connect),
                                                                   ("TEMPORARY", public_temp)) if v]
            if temp:
                problems.append(f"{self.role} may create temporary tables in {name}")
            if connect and name == MAINTENANCE_DATABASE and here != name:
                problems.append(f"{self.role} may connect to {name}")
        return not problems, "; ".join(problems) or (
            f"PUBLIC has no CONNECT/TEMPORARY on {', '.join(r[0] for r in rows)}; {self.role}: CONNECT here only")

    def rls_lints(self) -> tuple[bool, str]:
        from tenantctl.checks.rls_lints import LINTS, lint_schema

        found = lint_schema(self.conn, self.schema)
        return not found, "; ".join(map(str, found)) or f"{len(LINTS)} lints, nothing found in {self.schema}"

    def search_analyzer(self) -> tuple[bool | Outcome, str]:
        from tenant_runtime.tables import SEARCH_ANALYZERS
        from tenantctl.checks.search_index import analyzer_outcome, index_analyzers

        recorded = any(t.name == SEARCH_ANALYZERS for t in self.tables())  # a schema from before it: none
        found = index_analyzers(self.conn, self.schema, self.tenant_id, SETTING, recorded)
        return analyzer_outcome(found, self.owner, self.workspace)

    # -- behaviour ---------------------------------------------------------------------------
    def fail_closed(self) -> tuple[bool, str]:
        canary = f"tenantctl-check-{uuid.uuid4().hex[:12]}"
        tables = [t.name for t in self.tables()]
        if not tables:
            return False, f"no tables in schema {self.schema}"
        problems: list[str] = []
        self.conn.autocommit = False
        try:
            with self.conn.transaction(force_rollback=True):
                self.conn.execute("SELECT set_config(%s, %s, true)", (SETTING, self.tenant_id))
                planted = self._plant(canary, [t for t in tables if t in CANARIES])
                self.conn.execute(f"RESET {SETTING}")  # as in a session that never set it
                for table, seen in self._unset_counts(tables).items():
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
                for table, seen in zip(planted, self._counts(planted), strict=True):
                    if not seen:
                        problems.append(f"{table}: canary invisible with {SETTING} set (probe inconclusive)")
        finally:
            self.conn.autocommit = True
        detail = (f"without {SETTING}: 0 rows in {len(tables)} tables, insert refused; "
                  f"canaries visible to {self.tenant_id}; rolled back")
        return not problems, "; ".join(problems) or detail

    def _plant(self, canary: str, tables: list[str]) -> list[str]:
        """A canary row in each of ``tables``, in one statement (data-modifying CTEs;
        the foreign keys are checked at its end, so a summary may name the
        conversation planted beside it). Returns the tables planted."""
        if not tables:
            return []
        inserts, params = [], []
        for i, table in enumerate(tables):
            columns, values = CANARIES[table]
            inserts.append(sql.SQL("{} AS (INSERT INTO {}.{} ").format(
                sql.Identifier(f"c{i}"), sql.Identifier(self.schema), sql.Identifier(table)) + sql.SQL(columns + ")"))
            params += [p.format(id=canary) for p in values]
        self.conn.execute(sql.SQL("WITH ") + sql.SQL(", ").join(inserts) + sql.SQL(" SELECT 1"), params)
        return tables

    def _counts(self, tables: list[str]) -> list[int]:
        """The rows the role sees in each table, in one statement."""
        if not tables:
            return []
        counts = sql.SQL(", ").join(sql.SQL("(SELECT count(*) FROM {})").format(sql.Identifier(self.schema, t))
                                    for t in tables)
        return list(self.conn.execute(sql.SQL("SELECT ") + counts).fetchone())

    def _unset_counts(self, tables: list[str]) -> dict[str, int]:
        """The rows visible in each table without the setting; a table whose read
        errors is closed (0). All in one statement; when that errors, table by
        table, so one table's error hides no other's rows."""
        try:
            with self.conn.transaction():
                return dict(zip(tables, self._counts(tables), strict=True))
        except Exception:  # noqa: BLE001 - some table refused the read: find which
            pass
        seen = {}
        for table in tables:
            try:
                with self.conn.transaction():
                    seen[table] = self._counts([table])[0]
            except Exception:  # noqa: BLE001 - an error is closed too
                seen[table] = 0
        return seen


def database_checks(record: Any, clients: Callable[..., Any], workspace: str | None = None,
                    area: str = AREA, platform: dict[str, Any] | None = None,
                    connection_limit: int | None = None, admin: AdminConnect | None = None) -> Iterator[CheckResult]:
    """``workspace`` and ``area``: a workspace's (``record`` its view), else the tenant's.
    ``platform``: its cell's outputs (the gateway a suspended pooled tenant's
    checks go through); ``admin``: a suspended dedicated tenant's (its server's
    admin login). ``connection_limit``: the role's, as its applied spec and cell give it."""
    who = "the tenant role" if workspace is None else "the workspace role"
    if closed_login(record):
        who += " (suspended: through the " + ("gateway)" if record.tier.value == "pooled" else "admin's login)")
    yield from run_connected(area, NAMES, lambda: connect_as_role(record, clients, platform, admin),
                             lambda conn: _DbChecks(conn, record, workspace, connection_limit), who)
