"""TenantKey: a KMS key with rotation on and a key policy naming exactly who
may use it, plus its alias. Tenants get one each (users: the tenant role); the
platform's key is the same component with no users beyond the account admin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

USE_ACTIONS = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]


@dataclass
class TenantKeyArgs:
    alias: str
    admin_arn: pulumi.Input[str]
    tags: dict[str, str]
    description: str
    user_arns: Sequence[pulumi.Input[str]] = field(default_factory=list)


def key_policy(admin_arn: pulumi.Input[str], user_arns: Sequence[pulumi.Input[str]]) -> pulumi.Output[str]:
    # In a key policy "Resource": "*" means this key only.
    statements = [{"Sid": "Administer", "Effect": "Allow", "Principal": {"AWS": admin_arn},
                   "Action": "kms:*", "Resource": "*"}]
    if user_arns:
        statements.append({"Sid": "TenantUse", "Effect": "Allow", "Principal": {"AWS": list(user_arns)},
                           "Action": USE_ACTIONS, "Resource": "*"})
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": statements})


class TenantKey(pulumi.ComponentResource):
    arn: pulumi.Output[str]

    def __init__(self, name: str, args: TenantKeyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:kms:TenantKey", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key = aws.kms.Key(f"{name}-key", description=args.description, enable_key_rotation=True,
                          deletion_window_in_days=30, policy=key_policy(args.admin_arn, args.user_arns),
                          tags=args.tags, opts=child)
        alias = aws.kms.Alias(f"{name}-alias", name=args.alias, target_key_id=key.arn, opts=child)
        # The key's ARN as the alias reports it: whatever is encrypted with the key
        # then registers after the alias, so a policy judging each resource as it is
        # registered (CrossGuard during `up`) has seen which key is the tenant's.
        self.arn = alias.target_key_arn
        self.alias = args.alias
        self.register_outputs({"arn": self.arn, "alias": args.alias})
