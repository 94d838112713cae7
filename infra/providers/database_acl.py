"""DatabaseAcl: PUBLIC stripped of CONNECT and TEMPORARY on an instance's
databases (its own and the ``postgres`` maintenance database).

PostgreSQL grants both to PUBLIC on every new database, so without this any
login (every pooled tenant's role) could connect to ``postgres`` and create
temporary tables in the shared database. Tenant roles keep the explicit
CONNECT their schema script grants them. Runs as the admin (the RDS-managed
secret), like the TenantSchema provider; nothing is undone on delete (the
instance goes with it).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

from infra.providers._diff import diff_inputs
from infra.providers._postgres import admin_connect, retry_catalog_race

KIND = "database-acl"


def _revoke(props: dict[str, Any]) -> dict[str, Any]:
    from tenantctl.tenant_schema_sql import MAINTENANCE_DATABASE, revoke_public

    def run() -> None:
        with admin_connect(props) as conn:
            revoke_public(conn, [props["database"], MAINTENANCE_DATABASE])

    retry_catalog_race(run)
    return {k: v for k, v in props.items() if not k.startswith("__")}


class DatabaseAclProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(f"{props['host']}/{props['database']}", _revoke(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_inputs(olds, news, ("host", "port", "database"))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(_revoke(news))  # idempotent: re-running repairs a grant given back by hand

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        return None


@dataclass
class DatabaseAclArgs:
    region: str
    host: pulumi.Input[str]
    port: pulumi.Input[int]
    database: str
    admin_secret_arn: pulumi.Input[str]
    account_role_arn: str | None = None  # the cell's account, where the admin secret lives


class DatabaseAcl(pulumi.dynamic.Resource):
    def __init__(self, name: str, args: DatabaseAclArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(DatabaseAclProvider(), name,
                         {"kind": KIND, **{f.name: getattr(args, f.name) for f in fields(args)}}, opts)
