"""TenantRole: the IAM role a tenant's workload runs as.

Two phases, because the key policy names the role and the role's policy names
the key: the role exists first (its ARN goes into TenantKey), then ``allow``
attaches the inline policy once key, queues and secret exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from tenantctl import naming

S3_OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                     "s3:ListMultipartUploadParts"]
SQS_ACTIONS = ["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
               "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
KMS_ACTIONS = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext",
               "kms:DescribeKey"]
SECRET_ACTIONS = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]


@dataclass
class TenantRoleArgs:
    tenant_id: str
    runtime_principal_arn: pulumi.Input[str]
    tags: dict[str, str]


@dataclass
class TenantGrants:
    bucket_arn: pulumi.Input[str]
    queue_arns: list[pulumi.Input[str]]
    kms_key_arn: pulumi.Input[str]
    secret_arn: pulumi.Input[str]


def trust_policy(tenant_id: str, principal: pulumi.Input[str]) -> pulumi.Output[str]:
    # The session must carry tenant=<id>: a caller cannot assume acme's role
    # while tagged as another tenant.
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "RuntimeAssumesWithTenantTag", "Effect": "Allow", "Principal": {"AWS": principal},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
        "Condition": {"StringEquals": {"aws:RequestTag/tenant": tenant_id}},
    }]})


def access_policy(tenant_id: str, grants: TenantGrants) -> pulumi.Output[str]:
    prefix = naming.s3_prefix(tenant_id)  # trailing "/": acme never matches acme-corp
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "TenantObjects", "Effect": "Allow", "Action": S3_OBJECT_ACTIONS,
         "Resource": pulumi.Output.concat(grants.bucket_arn, "/", prefix, "*")},
        {"Sid": "ListTenantPrefix", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": grants.bucket_arn,
         "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}}},
        {"Sid": "TenantQueues", "Effect": "Allow", "Action": SQS_ACTIONS, "Resource": grants.queue_arns},
        {"Sid": "TenantKey", "Effect": "Allow", "Action": KMS_ACTIONS, "Resource": grants.kms_key_arn},
        {"Sid": "TenantDbSecret", "Effect": "Allow", "Action": SECRET_ACTIONS, "Resource": grants.secret_arn},
    ]})


class TenantRole(pulumi.ComponentResource):
    arn: pulumi.Output[str]

    def __init__(self, name: str, args: TenantRoleArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:iam:TenantRole", name, None, opts)
        self._name, self._tenant_id = name, args.tenant_id
        self.role = aws.iam.Role(f"{name}-role", name=naming.iam_role_name(args.tenant_id),
                                 assume_role_policy=trust_policy(args.tenant_id, args.runtime_principal_arn),
                                 max_session_duration=3600, tags=args.tags, opts=pulumi.ResourceOptions(parent=self))
        self.arn = self.role.arn

    def allow(self, grants: TenantGrants) -> None:
        aws.iam.RolePolicy(f"{self._name}-access", role=self.role.id,
                           policy=access_policy(self._tenant_id, grants), opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({"arn": self.arn})
