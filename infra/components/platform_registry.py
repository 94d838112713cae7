"""RegistryTable: one DynamoDB item per tenant (TenantRecord), keyed by tenant_id."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from tenant_runtime.registry import HASH_KEY


@dataclass
class RegistryTableArgs:
    table_name: str
    kms_key_arn: pulumi.Input[str]
    tags: dict[str, str]


class RegistryTable(pulumi.ComponentResource):
    name: pulumi.Output[str]
    arn: pulumi.Output[str]

    def __init__(self, name: str, args: RegistryTableArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:dynamodb:RegistryTable", name, None, opts)
        table = aws.dynamodb.Table(
            f"{name}-table", name=args.table_name, hash_key=HASH_KEY,
            attributes=[{"name": HASH_KEY, "type": "S"}], billing_mode="PAY_PER_REQUEST",
            point_in_time_recovery={"enabled": True},
            server_side_encryption={"enabled": True, "kms_key_arn": args.kms_key_arn},
            deletion_protection_enabled=True, tags=args.tags, opts=pulumi.ResourceOptions(parent=self))
        self.name, self.arn = table.name, table.arn
        self.register_outputs({"name": self.name, "arn": self.arn})
