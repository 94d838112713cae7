"""The SQL of a tenant's context store, in one place: templates/tenant_schema.sql.j2
rendered for a connection (provisioning in infra/providers/tenant_schema.py and
a drill restore, which re-applies roles, grants and policies, both run it), the
removal of the tenant's role, the shared pool's gateway role
(infra/providers/gateway_role.py), and what PUBLIC loses on every database of an
instance (infra/providers/database_acl.py). All change a database ACL, under one lock."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from tenant_runtime.tables import (
    RETIRED_TABLES,
    TABLES,  # the store's tables: each gets row-level security, forced
)
from tenantctl.templates import render

TEMPLATE = "tenant_schema.sql.j2"
# Advisory lock key serialising changes to a database's ACL: every pooled
# tenant's GRANT CONNECT rewrites the same pg_database row, and PostgreSQL fails
# concurrent writers of one catalog row with "tuple concurrently updated".
DATABASE_ACL_LOCK = 0x74656E616E74  # "tenant"
# How tenantctl's admin takes that lock (``take_acl_lock``; the template's
# ``acl_lock``): any role may take any advisory lock, and the key is no secret
# (pg_locks shows it to every role while it is held), so a tenant's login
# holding it would stall every schema script and ACL change of the database,
# its neighbours' provisions included. Only the admin ever takes it, so a
# session of any other role holding or awaiting it is ended, and the admin's
# own (another run's) is waited for. A DO block: a plain statement, so the
# template's single-transaction script can hold the lock to its end.
# pg_stat_activity is read from a snapshot kept for the whole transaction: a
# run that started the loop while another admin session was still logging in
# saw no user for it, and would end it once it held the lock. So the snapshot
# is dropped before each look, and a session with no known user is never ended.
# Each session ended is said (a WARNING starting with ENDED_SESSION): an
# operator investigating a tenant's dropped connection finds its pid and role.
ENDED_SESSION = "tenantctl: ended session"
ACL_LOCK_SQL = f"""DO $acl$
DECLARE
  ended record;
BEGIN
  WHILE NOT pg_try_advisory_xact_lock({DATABASE_ACL_LOCK}) LOOP
    PERFORM pg_stat_clear_snapshot();
    FOR ended IN SELECT l.pid, a.usename FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.objsubid = 1
        AND l.classid = {DATABASE_ACL_LOCK >> 32} AND l.objid = {DATABASE_ACL_LOCK & 0xFFFFFFFF}
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND a.usename IS NOT NULL AND a.usename <> current_user
    LOOP
      IF pg_terminate_backend(ended.pid) THEN
        -- A WARNING reaches the client (``report_ended_sessions``) and the server's log.
        RAISE WARNING '{ENDED_SESSION} % of role % in database %, which held or awaited the database ACL lock',
          ended.pid, ended.usename, current_database();
      END IF;
    END LOOP;
    PERFORM pg_sleep(0.05);
  END LOOP;
END
$acl$"""


def take_acl_lock(conn: Any) -> None:
    """Take the database ACL lock for ``conn``'s transaction (``ACL_LOCK_SQL``)."""
    conn.execute(ACL_LOCK_SQL)


def report_ended_sessions(conn: Any, say: Callable[[str], None] | None = None) -> None:
    """Pass each session ``conn``'s statements end (``ENDED_SESSION`` warnings) to
    ``say``, by default a ``note:`` line on stderr (where progress goes: the
    LocalEngine runs the providers in the CLI's process; on AWS a dynamic
    provider's output is Pulumi's, and the server's log keeps the warning)."""
    def handler(diag: Any) -> None:
        message = diag.message_primary or ""
        if message.startswith(ENDED_SESSION):
            (say or _note)(message.removeprefix("tenantctl: "))

    conn.add_notice_handler(handler)


def _note(line: str) -> None:
    print(f"note: {line}", file=sys.stderr, flush=True)


def end_sessions(conn: Any, role: str) -> list[int]:
    """End every session logged in as ``role`` (a suspended tenant's, once its
    NOLOGIN is committed: no new one can start); the pids ended."""
    # In the target list, never in WHERE: PostgreSQL may evaluate a qualifier before the others,
    # and would end sessions the filter was to spare.
    return [pid for pid, ended in conn.execute(
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
        (role,)).fetchall() if ended]


class LoginFacts(NamedTuple):
    connection_limit: int  # rolconnlimit, -1: none
    can_login: bool
    sessions: list[int]  # pids of the sessions logged in as the role, this one aside


def login_facts(conn: Any, role: str) -> LoginFacts | None:
    """The role's live login facts; None if there is no such role."""
    row = conn.execute(
        "SELECT r.rolconnlimit, r.rolcanlogin, ARRAY(SELECT a.pid FROM pg_stat_activity a "
        "WHERE a.usename = r.rolname AND a.pid <> pg_backend_pid() ORDER BY 1) "
        "FROM pg_roles r WHERE r.rolname = %s", (role,)).fetchone()
    return None if row is None else LoginFacts(*row)


def login_posture(conn: Any, role: str) -> dict[str, Any]:
    """The role's live ``connection_limit`` and ``login``: LOGIN, or NOLOGIN
    with a session still open (it was suspended and a session outlived it), so
    the update that follows ends it."""
    facts = login_facts(conn, role)
    return {} if facts is None else {"connection_limit": facts.connection_limit,
                                     "login": facts.can_login or bool(facts.sessions)}


def script_settings(schema: str) -> list[str]:
    """The role defaults the script leaves (``pg_db_role_setting``), as ``role_settings`` reads them."""
    return [f"search_path={schema}"]


def role_settings(conn: Any, role: str, schema: str) -> list[str]:
    """The role's defaults in ``pg_db_role_setting``: ``name=value`` for the
    role-wide ones, `` (in database D)`` added to one database's, sorted; its
    schema in ``search_path`` read unquoted (the way ``script_settings`` says it)."""
    rows = conn.execute(
        "SELECT coalesce(d.datname, ''), s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
        "LEFT JOIN pg_database d ON d.oid = s.setdatabase WHERE r.rolname = %s", (role,)).fetchall()
    quoted = f'search_path="{schema}"'
    return sorted((f"search_path={schema}" if setting == quoted else setting)
                  + (f" (in database {database})" if database else "")
                  for database, config in rows for setting in config or [])


FORCED = "forced"  # a table's row_security when the script left it as it should be
POLICY = "tenant_isolation"  # the one policy the script gives each table
# Attributes the script takes from the tenant role (ALTER ROLE ... NO...): any of them live is drift.
ROLE_ATTRIBUTES = {"SUPERUSER": "rolsuper", "CREATEDB": "rolcreatedb", "CREATEROLE": "rolcreaterole",
                   "REPLICATION": "rolreplication", "BYPASSRLS": "rolbypassrls", "INHERIT": "rolinherit"}


def row_security(conn: Any, schema: str) -> dict[str, str]:
    """Each store table's live row-level security: ``forced`` (enabled and
    forced, with the script's ``tenant_isolation`` policy and no other, as the
    script leaves it), ``not forced``, ``disabled``, ``missing``, or, forced,
    ``no tenant_isolation policy`` / ``other policy NAME`` (a permissive one
    widens what the role sees, and RLS forced without the policy shuts the
    tenant out); and a table of an earlier layout still there
    (``RETIRED_TABLES``): declared by no stack, it reads as drift, and the
    update that follows (the script) upgrades the store."""
    rows = conn.execute(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
        "ARRAY(SELECT p.polname FROM pg_policy p WHERE p.polrelid = c.oid ORDER BY 1) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
        (schema,)).fetchall()

    def state(enabled: bool, forced: bool, policies: list[str]) -> str:
        if not enabled:
            return "disabled"
        if not forced:
            return "not forced"
        others = [p for p in policies if p != POLICY]
        return f"other policy {', '.join(others)}" if others else (FORCED if policies else f"no {POLICY} policy")

    live = {name: state(*facts) for name, *facts in rows}
    return {table: live.get(table, "missing") for table in TABLES} | {
        table: live[table] for table in RETIRED_TABLES if table in live}


def role_attributes(conn: Any, role: str) -> list[str]:
    """The ``ROLE_ATTRIBUTES`` the role has live, sorted (the script leaves none)."""
    row = conn.execute(f"SELECT {', '.join(ROLE_ATTRIBUTES.values())} FROM pg_roles WHERE rolname = %s",
                       (role,)).fetchone()
    return [] if row is None else sorted(name for name, has in zip(ROLE_ATTRIBUTES, row, strict=True) if has)


# What the tenant's grants should not be, one row each: (the TenantSchema property
# naming it, what, the statement revoking it).
# ``foreign_access``: what the role may reach that is not its own: USAGE on another
# tenant's schema, however it came (granted to the role or to PUBLIC), and any
# privilege granted to the role itself on a table, sequence, routine or non-tenant
# schema outside its own (`check`'s no-foreign-schema-access).
# ``outside_grants``: its own schema, tables, sequences and routines granted to a
# role outside the tenant: PUBLIC or any other role but the object's owner (the
# admin), the tenant's role and its workspaces' (and the tenant's, seen from a
# workspace), and the shared pool's gateway (``gateway-no-privileges`` judges
# that one's). A routine's unset ACL is PUBLIC's EXECUTE (the template makes
# none; one made out of band is callable by every role); a trigger function's is
# left alone: it cannot be called, and a move's capture function is one
# (`check`'s no-outside-grants). So is a membership in the tenant's role held by any
# role but the gateway and an admin (SUPERUSER or CREATEROLE: the role's creator, which
# PostgreSQL 16+ makes a member, and a dedicated server's SET-only member, RDS's admin
# among them): a member reads what the role reads. And an object of its schema (the
# schema too) owned by a role outside the tenant but an admin: an owner may switch its
# table's RLS off (the tenant's and the gateway's ownership are role-owns-nothing's and
# gateway-owns-nothing's); the repair gives it back to the admin running the script.
# And a default privilege for a role outside the tenant, in its schema (ALTER DEFAULT
# PRIVILEGES ... IN SCHEMA, by any role) or set by its role in any schema or in every one
# (no IN SCHEMA: defaclnamespace 0, a database-wide default, which any role may set for
# itself): each object made there later would be granted at birth (the stack sets none;
# the repair revokes it for the role that set it, where it was set).
# Literals only (no parameters): the schema script runs it inside a DO block.


def _gateway(name: str) -> str:
    """SQL: the role named ``name`` is the shared pool's gateway (a cell's own carries a suffix)."""
    return f"{name} = {{gateway}} OR starts_with({name}, {{gateway}} || '_')"


def _tenant_or_gateway(name: str) -> str:
    """SQL: the role named ``name`` is the tenant's, a workspace's of it, or the gateway."""
    return (f"{name} = {{role}} OR {name} = {{tenant}} || '_app' OR starts_with({name}, {{tenant}} || '__ws_') "
            f"OR {_gateway(name)}")


_GRANTS = """SELECT 'foreign_access' AS property, 'USAGE on schema ' || n.nspname AS what,
  format('REVOKE ALL ON SCHEMA %I FROM PUBLIC, %I', n.nspname, {role}) AS repair
FROM pg_namespace n WHERE n.nspname LIKE 'tenant\\_%' AND n.nspname <> {schema}
  AND has_schema_privilege({role}, n.oid, 'USAGE')
UNION ALL
SELECT CASE WHEN o.own THEN 'outside_grants' ELSE 'foreign_access' END,
  string_agg(a.privilege_type, ', ' ORDER BY a.privilege_type) || ' on ' || lower(o.kind) || ' ' || o.name
    || CASE WHEN o.own THEN ' to ' || coalesce(g.rolname, 'PUBLIC') ELSE '' END,
  format('REVOKE ALL ON %s %s FROM %s', o.kind, o.name, coalesce(quote_ident(g.rolname), 'PUBLIC'))
FROM (SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, format('%I.%I', n.nspname, c.relname),
             c.relacl, n.nspname = {schema}, c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relacl IS NOT NULL
      UNION ALL
      SELECT 'ROUTINE', format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
             CASE WHEN n.nspname = {schema} THEN coalesce(p.proacl, acldefault('f', p.proowner)) ELSE p.proacl END,
             n.nspname = {schema}, p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE (p.proacl IS NOT NULL OR n.nspname = {schema}) AND p.prorettype <> 'trigger'::regtype
      UNION ALL
      SELECT 'SCHEMA', format('%I', n.nspname), n.nspacl, n.nspname = {schema}, n.nspowner FROM pg_namespace n
      WHERE (n.nspname = {schema} OR n.nspname NOT LIKE 'tenant\\_%') AND n.nspacl IS NOT NULL
     ) AS o(kind, name, acl, own, owner)
  CROSS JOIN LATERAL aclexplode(o.acl) a LEFT JOIN pg_roles g ON g.oid = a.grantee
WHERE CASE WHEN o.own THEN a.grantee <> o.owner AND NOT coalesce(""" + _tenant_or_gateway("g.rolname") + """, false)
      ELSE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = {role}) END
GROUP BY o.own, o.kind, o.name, g.rolname
UNION ALL
SELECT 'outside_grants', 'membership in role ' || {role} || ' to ' || m.rolname,
  format('REVOKE %I FROM %I GRANTED BY %I', {role}, m.rolname, grantor.rolname)
FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member JOIN pg_roles grantor ON grantor.oid = a.grantor
WHERE a.roleid = (SELECT oid FROM pg_roles WHERE rolname = {role})
  AND NOT (m.rolsuper OR m.rolcreaterole OR """ + _gateway("m.rolname") + """)
UNION ALL
SELECT 'outside_grants', lower(o.kind) || ' ' || o.name || ' owned by ' || r.rolname,
  format('ALTER %s %s OWNER TO CURRENT_USER', o.kind, o.name)
FROM (SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                            WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
             format('%I.%I', n.nspname, c.relname), c.relowner
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = {schema} AND c.relkind IN ('r', 'p', 'S', 'v', 'm', 'f')
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                        AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))  -- its table's
      UNION ALL
      SELECT 'ROUTINE', format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
             p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = {schema}
      UNION ALL
      SELECT 'SCHEMA', format('%I', n.nspname), n.nspowner FROM pg_namespace n WHERE n.nspname = {schema}
     ) AS o(kind, name, owner) JOIN pg_roles r ON r.oid = o.owner
WHERE NOT (r.rolsuper OR r.rolcreaterole OR """ + _tenant_or_gateway("r.rolname") + """)
UNION ALL
SELECT 'outside_grants', 'default ' || string_agg(a.privilege_type, ', ' ORDER BY a.privilege_type) || ' on '
    || lower(o.kind) || coalesce(' in schema ' || n.nspname, '') || ' to ' || coalesce(g.rolname, 'PUBLIC')
    || ' by ' || r.rolname,
  format('ALTER DEFAULT PRIVILEGES FOR ROLE %I %s REVOKE ALL ON %s FROM %s', r.rolname,
         coalesce('IN SCHEMA ' || quote_ident(n.nspname), ''), o.kind, coalesce(quote_ident(g.rolname), 'PUBLIC'))
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace JOIN pg_roles r ON r.oid = d.defaclrole
  JOIN (VALUES ('r', 'TABLES'), ('S', 'SEQUENCES'), ('f', 'FUNCTIONS'), ('T', 'TYPES'), ('n', 'SCHEMAS'),
               ('L', 'LARGE OBJECTS')) AS o(objtype, kind) ON o.objtype = d.defaclobjtype
  CROSS JOIN LATERAL aclexplode(d.defaclacl) a LEFT JOIN pg_roles g ON g.oid = a.grantee
WHERE (n.nspname = {schema} OR r.rolname = {role}) AND a.grantee <> d.defaclrole
  AND NOT coalesce(""" + _tenant_or_gateway("g.rolname") + """, false)
GROUP BY o.kind, n.nspname, g.rolname, r.rolname
ORDER BY 1, 2"""


def grants_query(conn: Any, role: str, schema: str) -> str:
    """``_GRANTS`` for ``role`` of ``schema``, its literals quoted for ``conn``."""
    from psycopg import sql

    from tenantctl.naming import GATEWAY_ROLE

    tenant = schema.split("__ws_")[0]  # a workspace's tenant's schema (naming.ws_schema_name)
    return sql.SQL(_GRANTS).format(role=sql.Literal(role), schema=sql.Literal(schema), tenant=sql.Literal(tenant),
                                   gateway=sql.Literal(GATEWAY_ROLE)).as_string(conn)


GRANT_PROPERTIES = ("foreign_access", "outside_grants")  # what ``grant_drift`` reports, each declared none


def grant_drift(conn: Any, role: str, schema: str) -> dict[str, list[str]]:
    """``_GRANTS`` for ``role`` of ``schema``, each ``GRANT_PROPERTIES`` a sorted list: `check`'s
    no-foreign-schema-access and no-outside-grants findings, and the TenantSchema read's drift."""
    found: dict[str, list[str]] = {name: [] for name in GRANT_PROPERTIES}
    for prop, what, _ in conn.execute(grants_query(conn, role, schema)).fetchall():
        found[prop].append(what)
    return found


def schema_script(conn: Any, *, tenant_id: str, role: str, schema: str, gateway_role: str | None = None,
                  connection_limit: int | None = None, login: bool | None = None, admin_member: bool = False) -> str:
    """The idempotent script for `conn` (identifiers and literals quoted by psycopg).
    Run it with no parameters: simple protocol, one implicit transaction, so the
    ACL lock it takes is held until the script ends. ``gateway_role`` (pooled
    tenants): the shared pool's login, granted membership in the tenant role
    when it exists. ``admin_member`` (no gateway: a dedicated tenant's server):
    the connection's user, the admin, made a member of the role (SET, no
    INHERIT), to check a suspended tenant as its role. ``connection_limit``
    (-1: none) and ``login`` (False: NOLOGIN): left as they are when None (a
    restore re-applying the script)."""
    from psycopg import sql

    return render(
        TEMPLATE,
        role=sql.Identifier(role).as_string(conn),
        role_literal=sql.Literal(role).as_string(conn),
        schema=sql.Identifier(schema).as_string(conn),
        schema_literal=sql.Literal(schema).as_string(conn),
        tenant_literal=sql.Literal(tenant_id).as_string(conn),
        gateway_literal=sql.Literal(gateway_role).as_string(conn) if gateway_role else None,
        acl_lock=ACL_LOCK_SQL,
        grants=grants_query(conn, role, schema),
        tables=TABLES,
        connection_limit=None if connection_limit is None else int(connection_limit),
        login=login,
        admin_member=admin_member,
    )


# Attributes the gateway role has, and may never lose or gain.
GATEWAY_ATTRIBUTES = "LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


def ensure_gateway_role(conn: Any, *, role: str, password: str) -> list[str]:
    """Create (or repair) the gateway role in ``conn``'s database: it may log in
    and become the tenant roles of the pooled tenants already there, nothing
    else. Returns those tenant roles. Idempotent."""
    from psycopg import sql

    ident = sql.Identifier(role)
    with conn.transaction():
        take_acl_lock(conn)
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} " + GATEWAY_ATTRIBUTES).format(ident))
        conn.execute(sql.SQL("ALTER ROLE {} " + GATEWAY_ATTRIBUTES + " PASSWORD {}").format(
            ident, sql.Literal(password)))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
            sql.Identifier(conn.info.dbname), ident))
        # Pooled tenants provisioned before the gateway existed: each tenant
        # schema here has its role (the template grants later ones itself).
        tenant_roles = [r[0] for r in conn.execute(
            "SELECT r.rolname FROM pg_namespace n JOIN pg_roles r ON r.rolname = n.nspname || '_app' "
            "WHERE n.nspname LIKE 'tenant\\_%' ORDER BY 1").fetchall()]
        for tenant_role in tenant_roles:
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(tenant_role), ident))
    return tenant_roles


def unlink_large_objects(conn: Any, role: str) -> int:
    """Remove the large objects ``role`` owns in ``conn``'s database; how many.
    Any role may create them (no privilege governs ``lo_create``), outside every
    schema: left behind, they hold data past the tenant and keep its role from
    being dropped."""
    return len(conn.execute(
        "SELECT lo_unlink(m.oid) FROM pg_largeobject_metadata m JOIN pg_roles r ON r.oid = m.lomowner "
        "WHERE r.rolname = %s", (role,)).fetchall())


def drop_role(conn: Any, *, database: str, role: str) -> None:
    """Revoke the script's GRANT CONNECT and remove the role's large objects
    (what is left depending on the role once its schema is gone) and drop the
    role, under the ACL lock."""
    from psycopg import sql

    with conn.transaction():
        take_acl_lock(conn)
        unlink_large_objects(conn, role)
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(
            sql.Identifier(database), sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def revoke_role(conn: Any, *, database: str, role: str, gateway: str | None) -> None:
    """Take ``role``'s grants on ``database`` back (and the gateway's membership
    in it) without dropping it, under the ACL lock: a move's other store on the
    same server still uses the role. Its large objects in this database go with
    the store."""
    from psycopg import sql

    with conn.transaction():
        take_acl_lock(conn)
        unlink_large_objects(conn, role)
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(
            sql.Identifier(database), sql.Identifier(role)))
        if gateway and conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (gateway,)).fetchone():
            conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(role), sql.Identifier(gateway)))


# The maintenance database every RDS PostgreSQL instance has besides its own.
MAINTENANCE_DATABASE = "postgres"


def revoke_public(conn: Any, databases: list[str]) -> list[str]:
    """PUBLIC loses CONNECT and TEMPORARY on ``databases`` (those that exist; they
    are returned): a tenant role connects only where it was granted CONNECT
    explicitly, and creates no temporary tables anywhere."""
    from psycopg import sql

    with conn.transaction():
        take_acl_lock(conn)
        present = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s) ORDER BY 1",
                                              (databases,))]
        for name in present:
            conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
    return present
