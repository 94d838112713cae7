"""GatewayRole: the shared pool's login role inside the shared database.

Like TenantSchema, it connects as the database admin and owns the role's
password: generated here, set on the role, written only to the gateway's
secret. The SQL is tenantctl.tenant_schema_sql's (one owner of the database's
ACL writes): the role may log in and become pooled tenant roles, nothing more.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, fields
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

from infra.providers._diff import diff_inputs
from infra.providers._postgres import admin_connect as _admin_connect
from infra.providers._postgres import retry_catalog_race
from infra.providers._postgres import secret_json as _secret_json
from infra.providers._postgres import secrets_client as _secrets_client

KIND = "gateway-role"


def _ensure(props: dict[str, Any], password: str) -> dict[str, Any]:
    from tenantctl.tenant_schema_sql import ensure_gateway_role

    def run() -> None:
        with _admin_connect(props) as conn:
            ensure_gateway_role(conn, role=props["role"], password=password)

    retry_catalog_race(run)
    _secrets_client(props["region"], props.get("account_role_arn")).put_secret_value(
        SecretId=props["gateway_secret_arn"],
        # "engine": the rotation function refuses a secret that does not say postgres.
        SecretString=json.dumps({"engine": "postgres", "username": props["role"], "password": password,
                                 "host": props["host"], "port": int(props["port"]), "dbname": props["database"],
                                 "schema": ""}))
    return {k: v for k, v in props.items() if not k.startswith("__")}


class GatewayRoleProvider(ResourceProvider):
    REPLACE_ON = ("host", "port", "database", "role")

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = _ensure(props, secrets.token_urlsafe(32))
        return CreateResult(f"{props['database']}/{props['role']}", outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_inputs(olds, news, self.REPLACE_ON)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        try:
            password = _secret_json(news["region"], news["gateway_secret_arn"],
                                    news.get("account_role_arn")).get("password")
        except Exception:  # noqa: BLE001 - no value yet
            password = None
        return UpdateResult(_ensure(news, password or secrets.token_urlsafe(32)))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        from tenantctl.tenant_schema_sql import drop_role

        def run() -> None:
            with _admin_connect(props) as conn:
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (props["role"],)).fetchone():
                    drop_role(conn, database=props["database"], role=props["role"])

        retry_catalog_race(run)


@dataclass
class GatewayRoleArgs:
    region: str
    host: pulumi.Input[str]
    port: pulumi.Input[int]
    database: pulumi.Input[str]
    role: str
    admin_secret_arn: pulumi.Input[str]
    gateway_secret_arn: pulumi.Input[str]
    account_role_arn: str | None = None  # the cell's account, where both secrets live


class GatewayRole(pulumi.dynamic.Resource):
    role: pulumi.Output[str]

    def __init__(self, name: str, args: GatewayRoleArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(GatewayRoleProvider(), name,
                         {"kind": KIND, **{f.name: getattr(args, f.name) for f in fields(args)}}, opts)
