"""TenantKey: a KMS key with rotation on and a key policy naming exactly who
may use it, plus its alias. Tenants get one each (users: the tenant role); the
platform's key is the same component with no users beyond the account admin.

Within one account a key policy alone grants access, so the tenant role's use
statement lists exactly the actions of its IAM policy (``TENANT_KEY_ACTIONS``):
the role holds one set of permissions, not the union of two. AWS services that
encrypt on the stack's behalf (CloudWatch Logs for its log groups, CloudWatch
for its alarm topic) are named by service principal, each confined by a
condition to this stack's own log groups or alarms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from tenantctl import naming

# The KMS actions of the tenant role's IAM policy (infra.components.tenant_role
# imports them from here): what the runtime's envelope encryption and the
# store's secret need, nothing else.
TENANT_KEY_ACTIONS = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext",
                      "kms:DescribeKey"]
# What CloudWatch Logs needs to encrypt a log group: AWS's documented set spelt
# out, less kms:Describe*, which carries no encryption context, so the
# statement's condition could never match it.
LOGS_ACTIONS = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKey",
                "kms:GenerateDataKeyWithoutPlaintext"]
# What CloudWatch needs to publish an alarm to an SNS topic encrypted with the key.
ALARM_ACTIONS = ["kms:Decrypt", "kms:GenerateDataKey"]
# Sids the posture check and the gate recognise.
ADMIN_SID, TENANT_SID, LOGS_SID, ALARMS_SID = "Administer", "TenantUse", "CloudWatchLogs", "CloudWatchAlarms"


def _arn(region: str, service: str) -> str:
    """An ARN of ``service`` in ``region`` up to its account (which the stack knows only as an output)."""
    return naming.arn(region, service, "", "").removesuffix(":")


def logs_statement(region: str, account: pulumi.Input[str], log_groups: Sequence[str]) -> dict[str, Any]:
    """CloudWatch Logs may use the key for ``log_groups`` only (names; a trailing
    "*" for every group under a prefix)."""
    arns = [pulumi.Output.concat(_arn(region, "logs"), account, ":log-group:", g) for g in log_groups]
    # StringLike: the encryption context is a string (its value an ARN).
    return {"Sid": LOGS_SID, "Effect": "Allow", "Principal": {"Service": naming.service_principal("logs", region)},
            "Action": LOGS_ACTIONS, "Resource": "*",
            "Condition": {"StringLike": {"kms:EncryptionContext:aws:logs:arn": arns}}}


def alarms_statement(region: str, account: pulumi.Input[str], alarm_names: Sequence[str]) -> dict[str, Any]:
    """CloudWatch may use the key to publish ``alarm_names`` (exact names: no
    prefix, so `acme` never covers `acme-corp`'s alarms) to their topic."""
    arns = [pulumi.Output.concat(_arn(region, "cloudwatch"), account, ":alarm:", n) for n in alarm_names]
    return {"Sid": ALARMS_SID, "Effect": "Allow",
            "Principal": {"Service": naming.service_principal("cloudwatch", region)},
            "Action": ALARM_ACTIONS, "Resource": "*",
            "Condition": {"StringEquals": {"aws:SourceAccount": account}, "ArnLike": {"aws:SourceArn": arns}}}


@dataclass
class TenantKeyArgs:
    alias: str
    admin_arn: pulumi.Input[str]
    tags: dict[str, str]
    description: str
    user_arns: Sequence[pulumi.Input[str]] = field(default_factory=list)
    # logs_statement / alarms_statement: AWS services encrypting on the stack's behalf.
    service_statements: Sequence[dict[str, Any]] = field(default_factory=list)


def key_policy(admin_arn: pulumi.Input[str], user_arns: Sequence[pulumi.Input[str]],
               service_statements: Sequence[dict[str, Any]] = ()) -> pulumi.Output[str]:
    # In a key policy "Resource": "*" means this key only.
    statements = [{"Sid": ADMIN_SID, "Effect": "Allow", "Principal": {"AWS": admin_arn},
                   "Action": "kms:*", "Resource": "*"}]
    if user_arns:
        statements.append({"Sid": TENANT_SID, "Effect": "Allow", "Principal": {"AWS": list(user_arns)},
                           "Action": TENANT_KEY_ACTIONS, "Resource": "*"})
    statements += list(service_statements)
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": statements})


class TenantKey(pulumi.ComponentResource):
    arn: pulumi.Output[str]

    def __init__(self, name: str, args: TenantKeyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:kms:TenantKey", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key = aws.kms.Key(f"{name}-key", description=args.description, enable_key_rotation=True,
                          deletion_window_in_days=30,
                          policy=key_policy(args.admin_arn, args.user_arns, args.service_statements),
                          tags=args.tags, opts=child)
        alias = aws.kms.Alias(f"{name}-alias", name=args.alias, target_key_id=key.arn, opts=child)
        # The key's ARN as the alias reports it: whatever is encrypted with the key
        # then registers after the alias, so a policy judging each resource as it is
        # registered (CrossGuard during `up`) has seen which key is the tenant's.
        self.arn = alias.target_key_arn
        self.alias = args.alias
        self.register_outputs({"arn": self.arn, "alias": args.alias})
