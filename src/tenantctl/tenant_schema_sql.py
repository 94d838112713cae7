"""The SQL of a tenant's context store, in one place: templates/tenant_schema.sql.j2
rendered for a connection (provisioning in infra/providers/tenant_schema.py and
a drill restore, which re-applies roles, grants and policies, both run it), the
removal of the tenant's role, and what PUBLIC loses on every database of an
instance (infra/providers/database_acl.py). All change a database ACL, under one lock."""

from __future__ import annotations

from typing import Any

from tenantctl.templates import render

TEMPLATE = "tenant_schema.sql.j2"
# Advisory lock key serialising changes to a database's ACL: every pooled
# tenant's GRANT CONNECT rewrites the same pg_database row, and PostgreSQL fails
# concurrent writers of one catalog row with "tuple concurrently updated".
DATABASE_ACL_LOCK = 0x74656E616E74  # "tenant"


def schema_script(conn: Any, *, tenant_id: str, role: str, schema: str) -> str:
    """The idempotent script for `conn` (identifiers and literals quoted by psycopg).
    Run it with no parameters: simple protocol, one implicit transaction, so the
    ACL lock it takes is held until the script ends."""
    from psycopg import sql

    return render(
        TEMPLATE,
        role=sql.Identifier(role).as_string(conn),
        role_literal=sql.Literal(role).as_string(conn),
        schema=sql.Identifier(schema).as_string(conn),
        tenant_literal=sql.Literal(tenant_id).as_string(conn),
        acl_lock=DATABASE_ACL_LOCK,
    )


def drop_role(conn: Any, *, database: str, role: str) -> None:
    """Revoke the script's GRANT CONNECT (the one thing left depending on the role
    once its schema is gone) and drop the role, under the ACL lock."""
    from psycopg import sql

    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (DATABASE_ACL_LOCK,))
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(
            sql.Identifier(database), sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# The maintenance database every RDS PostgreSQL instance has besides its own.
MAINTENANCE_DATABASE = "postgres"


def revoke_public(conn: Any, databases: list[str]) -> list[str]:
    """PUBLIC loses CONNECT and TEMPORARY on ``databases`` (those that exist; they
    are returned): a tenant role connects only where it was granted CONNECT
    explicitly, and creates no temporary tables anywhere."""
    from psycopg import sql

    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (DATABASE_ACL_LOCK,))
        present = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s) ORDER BY 1",
                                              (databases,))]
        for name in present:
            conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
    return present
