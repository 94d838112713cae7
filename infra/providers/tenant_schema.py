"""TenantSchema: the tenant's schema, role, tables and RLS inside PostgreSQL.

RDS cannot create schemas or roles, so this provider connects as the database
admin (credentials from the RDS-managed admin secret) and runs the script
from tenantctl.tenant_schema_sql. It owns the tenant role's password: generated
here, set on the role, and written only to the tenant's secret (never to
Pulumi state or the registry).

``row_security`` declares what the script leaves on every store table (RLS
enabled and forced); ``read`` reports it live, so a refresh shows a table whose
RLS was switched off as drift, and the update that follows re-runs the script.
So are the role's ``connection_limit`` (pg_roles.rolconnlimit), ``login``
(LOGIN, or a session still open as a NOLOGIN role), ``role_settings`` (its
defaults: a role may set its own, which the script resets) and
``role_attributes`` (CREATEDB, BYPASSRLS, ... granted out of band: none declared,
the script takes them away) and ``foreign_access`` (USAGE on another tenant's
schema, or a grant on an object outside its own) and ``outside_grants`` (its
schema or objects granted to PUBLIC or a role outside the tenant): none
declared, the script revokes them; a workspace's schema resource reads its own
role's and schema's.
A schema or role dropped out of band reads as gone: the create that follows is
the same idempotent script (existing rows are kept).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, fields
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from infra.providers._diff import diff_inputs, public
from infra.providers._postgres import admin_connect as _admin_connect
from infra.providers._postgres import retry_catalog_race
from infra.providers._postgres import secret_json as _secret_json
from infra.providers._postgres import secrets_client as _secrets_client
from tenant_runtime.tables import TABLES
from tenantctl.tenant_schema_sql import FORCED

KIND = "tenant-schema"


def _current_password(props: dict[str, Any]) -> str | None:
    """The password already in the tenant secret (kept across updates)."""
    try:
        return _secret_json(props["region"], props["tenant_secret_arn"], props.get("account_role_arn")).get("password")
    except Exception:  # noqa: BLE001 - no value yet (first create, or a failed one)
        return None


def _run_script(props: dict[str, Any], password: str) -> None:
    from psycopg import sql

    from tenantctl.tenant_schema_sql import end_sessions, schema_script

    role, schema = props["role"], props["schema"]
    with _admin_connect(props) as conn:
        script = schema_script(conn, tenant_id=props["tenant_id"], role=role, schema=schema,
                               gateway_role=props.get("gateway_role") or None,
                               connection_limit=props.get("connection_limit"), login=props.get("login"),
                               admin_member=not props.get("gateway_role"))
        conn.execute(script)  # no parameters: simple protocol, several statements
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        if props.get("login") is False:
            # NOLOGIN is committed: no new session starts, so ending the open ones closes the login.
            # Killed before this, the run left its state unrecorded (or `read` sees a session
            # outliving NOLOGIN as a login): the next run ends them.
            end_sessions(conn, role)


def _ensure(props: dict[str, Any], password: str) -> dict[str, Any]:
    retry_catalog_race(lambda: _run_script(props, password))
    if not props.get("owns_secret", True):
        return public(props)  # a move's other store: the secret names the store the tenant is served from
    _secrets_client(props["region"], props.get("account_role_arn")).put_secret_value(
        SecretId=props["tenant_secret_arn"],
        # "engine": the rotation function refuses a secret that does not say postgres.
        SecretString=json.dumps({"engine": "postgres", "username": props["role"], "password": password,
                                 "host": props["host"], "port": int(props["port"]), "dbname": props["database"],
                                 "schema": props["schema"]}),
    )
    return public(props)


def _drop(props: dict[str, Any]) -> None:
    from psycopg import sql

    from tenantctl.tenant_schema_sql import drop_role, revoke_role

    with _admin_connect(props) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(props["schema"])))
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (props["role"],)).fetchone():
            if _connects_elsewhere(conn, props["database"], props["role"]):
                # A move's other store on the same server still uses the role (the sandbox).
                revoke_role(conn, database=props["database"], role=props["role"],
                            gateway=props.get("gateway_role") or None)
            else:
                drop_role(conn, database=props["database"], role=props["role"])


def _connects_elsewhere(conn: Any, database: str, role: str) -> bool:
    """Whether ``role`` was granted CONNECT on another database of this server."""
    return conn.execute(
        "SELECT 1 FROM pg_database d, aclexplode(d.datacl) a JOIN pg_roles r ON r.oid = a.grantee "
        "WHERE r.rolname = %s AND d.datname <> %s AND a.privilege_type = 'CONNECT'", (role, database)).fetchone() \
        is not None


class TenantSchemaProvider(ResourceProvider):
    # Replacing means a new database or role: drop the old one only after the
    # new one exists is impossible for the same names, hence delete first.
    REPLACE_ON = ("host", "port", "database", "schema", "role", "tenant_id")

    def create(self, props: dict[str, Any]) -> CreateResult:
        # A move's new store takes the role's current password: one secret serves both stores.
        fresh = _current_password(props) if not props.get("owns_secret", True) else None
        outs = _ensure(props, fresh or secrets.token_urlsafe(32))
        return CreateResult(f"{props['database']}/{props['schema']}", outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_inputs(olds, news, self.REPLACE_ON)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # Re-running the idempotent SQL repairs drift; the password is kept.
        return UpdateResult(_ensure(news, _current_password(news) or secrets.token_urlsafe(32)))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        from tenantctl.tenant_schema_sql import (
            grant_drift,
            login_posture,
            role_attributes,
            role_settings,
            row_security,
        )

        with _admin_connect(props) as conn:
            schema = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (props["schema"],)).fetchone()
            posture = login_posture(conn, props["role"])
            if schema is None or not posture:
                return ReadResult(None, {})
            live = row_security(conn, props["schema"])
            posture["role_settings"] = role_settings(conn, props["role"], props["schema"])
            posture["role_attributes"] = role_attributes(conn, props["role"])
            posture |= grant_drift(conn, props["role"], props["schema"])
        # Only what the state declares: a resource applied before these inputs existed shows no drift on them.
        declared = {k: v for k, v in posture.items() if props.get(k) is not None}
        return ReadResult(id_ or f"{props['database']}/{props['schema']}",
                          {**public(props), "row_security": live, **declared})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        retry_catalog_race(lambda: _drop(props))  # each step is idempotent: a retry redoes what is left


@dataclass
class TenantSchemaArgs:
    tenant_id: str
    region: str
    host: pulumi.Input[str]
    port: pulumi.Input[int]
    database: pulumi.Input[str]
    schema: str
    role: str
    admin_secret_arn: pulumi.Input[str]
    tenant_secret_arn: pulumi.Input[str]
    row_security: dict[str, str] = field(default_factory=lambda: dict.fromkeys(TABLES, FORCED))
    gateway_role: pulumi.Input[str] | None = None  # pooled: the shared pool's login, granted this role
    account_role_arn: str | None = None
    owns_secret: bool = True  # False: a move's other store (keeps the role's password, leaves the secret)
    connection_limit: pulumi.Input[int] | None = None  # the role's CONNECTION LIMIT (-1: none)
    login: bool | None = None  # False: NOLOGIN, its sessions ended (a suspended tenant)
    # The role's defaults as the script leaves them (its own ALTER ROLE ... SET reads as drift); set from schema.
    role_settings: list[str] | None = None
    role_attributes: list[str] | None = None  # the admin attributes it has: none; set from schema
    foreign_access: list[str] | None = None  # what it may reach outside its schema: nothing; set from schema
    outside_grants: list[str] | None = None  # its schema's objects granted outside the tenant: none; set from schema


class TenantSchema(pulumi.dynamic.Resource):
    schema: pulumi.Output[str]
    role: pulumi.Output[str]
    database: pulumi.Output[str]

    def __init__(self, name: str, args: TenantSchemaArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        # A None input is left out: stacks applied before cells keep the inputs they had.
        from tenantctl.tenant_schema_sql import script_settings

        args.role_settings = script_settings(args.schema)
        args.role_attributes = []
        args.foreign_access = []
        args.outside_grants = []
        props = {f.name: getattr(args, f.name) for f in fields(args) if getattr(args, f.name) is not None}
        super().__init__(TenantSchemaProvider(), name, {"kind": KIND, **props}, opts)
