"""TenantSecret: where the tenant's DB credentials live, encrypted with the
tenant key. The value is written by the TenantSchema provider, which owns the
password, so it never passes through Pulumi state."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from tenantctl import naming


@dataclass
class TenantSecretArgs:
    tenant_id: str
    kms_key_arn: pulumi.Input[str]
    tags: dict[str, str]
    workspace: str | None = None  # a workspace's DB credentials, else the tenant's


class TenantSecret(pulumi.ComponentResource):
    arn: pulumi.Output[str]

    def __init__(self, name: str, args: TenantSecretArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:secretsmanager:TenantSecret", name, None, opts)
        names = naming.OwnerNames(args.tenant_id, args.workspace)
        owner = f"tenant {args.tenant_id}" + (f" workspace {args.workspace}" if args.workspace else "")
        secret = aws.secretsmanager.Secret(
            f"{name}-secret", name=names.secret, kms_key_id=args.kms_key_arn,
            description=f"PostgreSQL credentials of {owner} (role {names.db_role})",
            recovery_window_in_days=7, tags=args.tags, opts=pulumi.ResourceOptions(parent=self))
        self.arn = secret.arn
        self.register_outputs({"arn": self.arn})
