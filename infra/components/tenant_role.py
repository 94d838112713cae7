"""TenantRole: the IAM role a tenant's workload runs as.

The documents are plain functions (``trust_document``, ``access_document``) so
tests and `tenantctl check` judge exactly what is deployed.

Two components, because the key policy names the role and the role's policy
names the key: ``TenantRole`` exists first (its ARN goes into the key policy),
then ``TenantRoleAccess`` attaches the inline policy once key, queues and
secret exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.components.kms_key import TENANT_KEY_ACTIONS
from tenant_runtime.credentials import SESSION_TAG
from tenantctl import naming
from tenantctl.drills.layout import BACKUP_PURPOSE, BACKUPS

# PutObjectTagging: S3 requires it for a PutObject carrying tags (the
# retention class of uploads/tmp/ and archive/ objects).
S3_OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject",
                     "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
SQS_ACTIONS = ["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
               "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
# The same list the key policy grants the role (one set of key permissions, not two).
KMS_ACTIONS = TENANT_KEY_ACTIONS
SECRET_ACTIONS = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
# What the role may never do to its owner's backups (tenantctl.drills.layout):
# write, tag or delete under `<prefix>backups/`, or use its key under the
# backups' encryption context. A restore runs a backup's dump as the database
# admin, so a backup the tenant's workload could write or seal would run its
# SQL as the admin, in every tenant's database.
BACKUP_WRITE_ACTIONS = ["s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject"]
BACKUP_KEY_ACTIONS = [a for a in KMS_ACTIONS if a != "kms:DescribeKey"]  # those that carry a context


@dataclass
class TenantRoleArgs:
    tenant_id: str
    runtime_principal_arn: pulumi.Input[str]
    tags: dict[str, str]
    suspended: bool = False
    workspace: str | None = None  # a workspace's role (its own name and session tag), else the tenant's
    # The tenant's stack of key generation N >= 1 (a move to another account or
    # region) names its role `tenantctl-<id>.k<N>-app` (a workspace's
    # `tenantctl-<id>--<ws>.k<N>-app`): IAM names are per account.
    key_generation: int = 0


@dataclass
class TenantGrants:
    bucket_arn: pulumi.Input[str]
    queue_arns: list[pulumi.Input[str]]
    kms_key_arn: pulumi.Input[str]
    secret_arn: pulumi.Input[str]
    # The old cell's bucket while a move between cells is open (the same prefix there).
    moving_bucket_arn: pulumi.Input[str] | None = None
    # False: the stack a move leaves, retired at finalize (``access_document``'s ``sends``).
    queue_sends: bool = True


# SESSION_TAG: the session tag tenant_runtime.credentials passes on AssumeRole
# (its ``assume_role`` mode); the trust policy requires it to equal the tenant id.


def trust_document(tenant_id: str, principal: str, suspended: bool = False) -> dict:
    """Who may assume the tenant role: only ``principal`` (the runtime; the
    platform's ``runtime_principal_arn``), and only for a session tagged
    ``tenant_id=<id>`` and nothing else, so a caller cannot assume acme's role
    while acting for another tenant. A workspace's role passes its key
    (``<id>/<ws>``, tenant_runtime.models.workspace_key) as ``tenant_id``. ``suspended``: nobody
    (an explicit Deny wins over the Allow), so the runtime cannot renew a role session."""
    statements = [{
        "Sid": "RuntimeAssumesWithTenantTag", "Effect": "Allow", "Principal": {"AWS": principal},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
        "Condition": {"StringEquals": {f"aws:RequestTag/{SESSION_TAG}": tenant_id},
                      "ForAllValues:StringEquals": {"aws:TagKeys": [SESSION_TAG]}},
    }]
    if suspended:
        statements.append({"Sid": "TenantSuspended", "Effect": "Deny", "Principal": {"AWS": "*"},
                           "Action": ["sts:AssumeRole", "sts:TagSession"]})
    return {"Version": "2012-10-17", "Statement": statements}


def access_document(tenant_id: str, bucket_arn: str, queue_arns: list[str], kms_key_arn: str,
                    secret_arn: str, moving_bucket_arn: str | None = None, workspace: str | None = None,
                    sends: bool = True) -> dict:
    """What the tenant role may do: objects under ``tenants/<id>/`` only (the
    trailing "/" keeps ``acme`` out of ``acme-corp``), listing only with an
    ``s3:prefix`` under it, its two queues, its key, its DB secret. With
    ``moving_bucket_arn`` (a move between cells): the same prefix in both buckets.
    A ``workspace``'s role gets the same grants on its own prefix
    (``tenants/<id>--<ws>/``, which the tenant's ``tenants/<id>/*`` does not
    cover), queues, key and secret. ``sends=False`` (a retired stack): its
    queues are read and emptied but never sent to, by an explicit Deny (a
    grant anywhere else, e.g. a queue policy, cannot lift it). Backups are the
    operator's: explicit Denies keep the role from writing under
    ``<prefix>backups/`` and from using its key for a backup's data key
    (``BACKUP_WRITE_ACTIONS``, ``BACKUP_KEY_ACTIONS``)."""
    prefix = naming.OwnerNames(tenant_id, workspace).s3_prefix
    buckets = [bucket_arn] + ([moving_bucket_arn] if moving_bucket_arn else [])
    objects = [f"{b}/{prefix}*" for b in buckets]
    backups = [f"{b}/{prefix}{BACKUPS}*" for b in buckets]
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "TenantObjects", "Effect": "Allow", "Action": S3_OBJECT_ACTIONS,
         "Resource": objects[0] if len(objects) == 1 else objects},
        {"Sid": "ListTenantPrefix", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": bucket_arn if len(buckets) == 1 else buckets,
         "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}}},
        {"Sid": "TenantQueues", "Effect": "Allow",
         "Action": SQS_ACTIONS if sends else [a for a in SQS_ACTIONS if a != "sqs:SendMessage"],
         "Resource": list(queue_arns)},
        {"Sid": "TenantKey", "Effect": "Allow", "Action": KMS_ACTIONS, "Resource": kms_key_arn},
        {"Sid": "TenantDbSecret", "Effect": "Allow", "Action": SECRET_ACTIONS, "Resource": secret_arn},
        {"Sid": "OperatorBackupObjects", "Effect": "Deny", "Action": BACKUP_WRITE_ACTIONS,
         "Resource": backups[0] if len(backups) == 1 else backups},
        {"Sid": "OperatorBackupKeys", "Effect": "Deny", "Action": BACKUP_KEY_ACTIONS, "Resource": kms_key_arn,
         "Condition": {"StringEquals": {"kms:EncryptionContext:purpose": BACKUP_PURPOSE}}},
    ] + ([] if sends else [
        {"Sid": "RetiredQueues", "Effect": "Deny", "Action": "sqs:SendMessage", "Resource": list(queue_arns)}])}


def trust_policy(tenant_id: str, principal: pulumi.Input[str], suspended: bool = False) -> pulumi.Output[str]:
    return pulumi.Output.from_input(principal).apply(lambda p: json.dumps(trust_document(tenant_id, p, suspended)))


def access_policy(tenant_id: str, grants: TenantGrants, workspace: str | None = None) -> pulumi.Output[str]:
    return pulumi.Output.all(grants.bucket_arn, grants.kms_key_arn, grants.secret_arn, grants.moving_bucket_arn,
                             *grants.queue_arns).apply(
        lambda v: json.dumps(access_document(tenant_id, v[0], list(v[4:]), v[1], v[2], v[3], workspace,
                                             grants.queue_sends)))


class TenantRole(pulumi.ComponentResource):
    arn: pulumi.Output[str]
    role_name: pulumi.Output[str]

    def __init__(self, name: str, args: TenantRoleArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:iam:TenantRole", name, None, opts)
        names = naming.OwnerNames(args.tenant_id, args.workspace)
        role_name = (naming.ws_iam_role_name(args.tenant_id, args.workspace, args.key_generation)
                     if args.workspace is not None else naming.iam_role_name(args.tenant_id, args.key_generation))
        role = aws.iam.Role(f"{name}-role", name=role_name,
                            assume_role_policy=trust_policy(names.key, args.runtime_principal_arn,
                                                            args.suspended),
                            max_session_duration=3600, tags=args.tags, opts=pulumi.ResourceOptions(parent=self))
        self.arn, self.role_name = role.arn, role.name
        self.register_outputs({"arn": self.arn, "role_name": self.role_name})


@dataclass
class TenantRoleAccessArgs:
    tenant_id: str
    role: TenantRole
    grants: TenantGrants
    workspace: str | None = None


class TenantRoleAccess(pulumi.ComponentResource):
    """The tenant role's inline policy (``access_document``)."""

    def __init__(self, name: str, args: TenantRoleAccessArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:iam:TenantRoleAccess", name, None, opts)
        # The policy used to be a child of TenantRole: the alias keeps its URN, so
        # stacks deployed before do not replace it (a moment with no access).
        policy = aws.iam.RolePolicy(f"{name}-access", role=args.role.role_name,
                                    policy=access_policy(args.tenant_id, args.grants, args.workspace),
                                    opts=pulumi.ResourceOptions(parent=self, aliases=[pulumi.Alias(parent=args.role)]))
        self.register_outputs({"policy_name": policy.name})
