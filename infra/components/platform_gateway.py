"""GatewayLogin: the shared pool's login on the shared database (tenant_runtime.gateway).

A secret (platform key) holding the login, and the role itself, made by the
GatewayRole provider: LOGIN, NOINHERIT, no attribute beyond it, CONNECT on the
shared database and nothing else of its own. Tenant provisioning then grants
it membership in each pooled tenant's role (templates/tenant_schema.sql.j2).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.providers.gateway_role import GatewayRole, GatewayRoleArgs


@dataclass
class GatewayLoginArgs:
    role: str
    secret_name: str
    region: str
    host: pulumi.Input[str]
    port: pulumi.Input[int]
    database: pulumi.Input[str]
    admin_secret_arn: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    tags: dict[str, str]
    account_role_arn: str | None = None  # the cell's account, for the provider's own AWS calls


class GatewayLogin(pulumi.ComponentResource):
    secret_arn: pulumi.Output[str]
    role: pulumi.Output[str]

    def __init__(self, name: str, args: GatewayLoginArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:database:GatewayLogin", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        secret = aws.secretsmanager.Secret(
            f"{name}-secret", name=args.secret_name, kms_key_id=args.kms_key_arn, recovery_window_in_days=7,
            description=f"PostgreSQL login of the shared pool's gateway role {args.role}", tags=args.tags,
            opts=child)
        role = GatewayRole(f"{name}-role", GatewayRoleArgs(
            region=args.region, host=args.host, port=args.port, database=args.database, role=args.role,
            admin_secret_arn=args.admin_secret_arn, gateway_secret_arn=secret.arn,
            account_role_arn=args.account_role_arn), opts=child)
        self.secret_arn, self.role = secret.arn, role.role
        self.login = role  # what writes the secret's value (a rotation schedule comes after it)
        self.register_outputs({"secret_arn": self.secret_arn, "role": self.role})
