"""RuntimeRole: the IAM role the tenant runtime runs as (tenant_runtime's
``assume_role`` mode), the one principal every tenant role's trust policy names;
DatabaseWakerRole: what that runtime assumes in a cell of another account to
wake a hibernated tenant's database there.

Its trust policy names only who runs the runtime (by default ECS tasks; set
``PlatformSpec.runtime_trusted``), never the account root, so no other
principal of the account can become it, and through it any tenant. It may
assume the tenant roles (``tenantctl-*-app``, any account, for cells
elsewhere; each tenant role's own trust policy is the gate) with a session tag,
read what the runtime reads as itself: the registry, the token revocation
list, and the shared-pool gateway's secret (decrypted through Secrets Manager
with the platform key), and wake a hibernated tenant's database (describe and
start the account's tenant instances, ``tenantctl-*``; in another account's
cell it assumes that cell's waker role, which may do exactly that there). The
documents are plain functions so tests and checks judge exactly what is
deployed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from tenantctl import naming

ASSUME_ACTIONS = ["sts:AssumeRole", "sts:TagSession"]
WAKE_ACTIONS = ["rds:DescribeDBInstances", "rds:StartDBInstance"]


@dataclass
class RuntimeReads:
    """What the runtime reads as itself (not as a tenant)."""

    registry_table_arn: pulumi.Input[str]
    revocation_table_arn: pulumi.Input[str]
    gateway_secret_arn: pulumi.Input[str]
    platform_key_arn: pulumi.Input[str]
    region: str
    account_id: str  # the account whose tenant database instances it may wake


@dataclass
class RuntimeRoleArgs:
    trusted: Sequence[str]  # service principals (ecs-tasks.amazonaws.com) and role/user ARNs that run the runtime
    reads: RuntimeReads
    tags: dict[str, str]


def runtime_trust_document(trusted: Sequence[str]) -> dict:
    """Who may run as the runtime role: exactly ``trusted``."""
    services = sorted(p for p in trusted if p.endswith(".amazonaws.com"))
    principals = sorted(p for p in trusted if not p.endswith(".amazonaws.com"))
    principal: dict[str, list[str]] = {}
    if services:
        principal["Service"] = services
    if principals:
        principal["AWS"] = principals
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "RunsTheTenantRuntime", "Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}]}


def _instances(region: str, account_id: str, identifier: str) -> str:
    return naming.arn(region, "rds", account_id, f"db:{identifier}", any_region=True)


def tenant_instances(region: str, account_id: str) -> str:
    """Every tenant database instance of the account, in any region of ``region``'s partition
    (cells of one account may be in several)."""
    return _instances(region, account_id, naming.rds_identifier("*"))


def shared_instances(region: str, account_id: str) -> list[str]:
    """The cells' shared database instances of the account, which ``tenant_instances`` also matches
    (``tenantctl-platform``, ``tenantctl-cell-*``; no tenant id is either: naming's reserved ids)."""
    return [_instances(region, account_id, naming.cell_rds_identifier(naming.DEFAULT_CELL)),
            _instances(region, account_id, naming.rds_identifier(naming.CELL_STACK_PREFIX + "*"))]


def wake_statements(region: str, account_id: str) -> list[dict]:
    """Describe and start tenant database instances of the account, never a cell's shared one
    (starting a running instance fails anyway, but its description is no tenant's business)."""
    return [{"Sid": "WakeTenantDatabases", "Effect": "Allow", "Action": WAKE_ACTIONS,
             "Resource": tenant_instances(region, account_id)},
            {"Sid": "NeverSharedDatabases", "Effect": "Deny", "Action": WAKE_ACTIONS,
             "Resource": shared_instances(region, account_id)}]


def runtime_access_document(registry_table_arn: str, revocation_table_arn: str, gateway_secret_arn: str,
                            platform_key_arn: str, region: str, account_id: str) -> dict:
    """What the runtime role may do: assume tenant roles (with the session tag
    their trust policies require), read the registry, the revocation list
    and the gateway's secret, and wake a hibernated tenant's database
    (tenant_runtime.hibernation: the instance's state, and starting it)."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "AssumeTenantRoles", "Effect": "Allow", "Action": ASSUME_ACTIONS,
         "Resource": naming.tenant_roles(region)},
        {"Sid": "AssumeDatabaseWakers", "Effect": "Allow", "Action": "sts:AssumeRole",
         "Resource": naming.waker_roles(region)},
        {"Sid": "ReadRegistry", "Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": registry_table_arn},
        {"Sid": "ReadRevocations", "Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:Scan"],
         "Resource": revocation_table_arn},
        {"Sid": "ReadGatewaySecret", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
         "Resource": gateway_secret_arn},
        {"Sid": "OpenGatewaySecret", "Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": platform_key_arn,
         "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}}},
        *wake_statements(region, account_id),
    ]}


class RuntimeRole(pulumi.ComponentResource):
    arn: pulumi.Output[str]

    def __init__(self, name: str, args: RuntimeRoleArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:iam:RuntimeRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(f"{name}-role", name=naming.RUNTIME_ROLE, max_session_duration=3600,
                            assume_role_policy=json.dumps(runtime_trust_document(args.trusted)),
                            tags=args.tags, opts=child)
        reads = args.reads
        policy = pulumi.Output.all(reads.registry_table_arn, reads.revocation_table_arn, reads.gateway_secret_arn,
                                   reads.platform_key_arn).apply(
            lambda v: json.dumps(runtime_access_document(*v, region=reads.region, account_id=reads.account_id)))
        aws.iam.RolePolicy(f"{name}-access", role=role.name, policy=policy, opts=child)
        self.arn = role.arn
        self.register_outputs({"arn": self.arn})


@dataclass
class DatabaseWakerRoleArgs:
    cell: str
    region: str
    account_id: str
    runtime_principal_arn: str  # the home cell's runtime role: the only principal that may assume it
    tags: dict[str, str]


def waker_trust_document(runtime_principal_arn: str) -> dict:
    """Who may become a cell's waker role: the home cell's runtime principal, nobody else."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "RuntimeWakesTenants", "Effect": "Allow", "Principal": {"AWS": runtime_principal_arn},
        "Action": "sts:AssumeRole"}]}


def waker_access_document(region: str, account_id: str) -> dict:
    """What a waker role may do: what the runtime role may do to wake a tenant, in its own account."""
    return {"Version": "2012-10-17", "Statement": wake_statements(region, account_id)}


class DatabaseWakerRole(pulumi.ComponentResource):
    """A cell of another account's waker role (``naming.cell_waker_role``)."""

    arn: pulumi.Output[str]

    def __init__(self, name: str, args: DatabaseWakerRoleArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:iam:DatabaseWakerRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(f"{name}-role", name=naming.cell_waker_role(args.cell), max_session_duration=3600,
                            assume_role_policy=json.dumps(waker_trust_document(args.runtime_principal_arn)),
                            tags=args.tags, opts=child)
        aws.iam.RolePolicy(f"{name}-access", role=role.name, policy=json.dumps(
            waker_access_document(args.region, args.account_id)), opts=child)
        self.arn = role.arn
        self.register_outputs({"arn": self.arn})
