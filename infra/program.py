"""The Pulumi program: the `platform` stack, or one tenant's stack.

Config (namespace `tenantctl`): `platform` (PlatformSpec) for the stack named
`platform`; `tenant` (TenantSpec) and `platformStack` (default "platform", the
StackReference a tenant reads shared outputs from) for tenant stacks.
``build`` returns the stack outputs; ``main`` exports them. A tenant stack's
outputs are exactly tenant_runtime.models.TenantResources.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws
from pydantic import ValidationError

from infra.components.kms_key import TenantKey, TenantKeyArgs
from infra.components.platform_bucket import SharedBucket, SharedBucketArgs
from infra.components.platform_registry import RegistryTable, RegistryTableArgs
from infra.components.postgres_instance import PostgresInstance, PostgresInstanceArgs
from infra.components.private_network import PrivateNetwork, PrivateNetworkArgs
from infra.components.tenant_alarms import TenantAlarms, TenantAlarmsArgs
from infra.components.tenant_database import SharedDatabaseRef, TenantDatabase, TenantDatabaseArgs
from infra.components.tenant_queue import TenantQueue, TenantQueueArgs
from infra.components.tenant_role import (
    TenantGrants,
    TenantRole,
    TenantRoleAccess,
    TenantRoleAccessArgs,
    TenantRoleArgs,
)
from infra.components.tenant_secret import TenantSecret, TenantSecretArgs
from infra.components.tenant_storage import TenantStorage, TenantStorageArgs
from tenantctl import naming
from tenantctl.models import PlatformSpec, TenantSpec, Tier, describe_validation_error
from tenantctl.naming import PLATFORM_STACK, resource_name

PLATFORM_DB_NAME = "tenantctl"
PLATFORM_BACKUP_DAYS = 14
REGISTRY_TABLE = "tenantctl-registry"


def _account_root() -> tuple[str, str]:
    account = aws.get_caller_identity().account_id
    return account, f"arn:aws:iam::{account}:root"


def _check_region(region: str) -> None:
    configured = pulumi.Config("aws").get("region")
    if configured and configured != region:
        raise ValueError(f"aws:region {configured!r} differs from the spec's region {region!r}")


def build_platform(spec: PlatformSpec) -> dict[str, Any]:
    _check_region(spec.region)
    account, root = _account_root()
    tags = spec.tags()
    azs = aws.get_availability_zones(state="available").names[: spec.az_count]
    key = TenantKey("platform", TenantKeyArgs(
        alias=naming.kms_alias(PLATFORM_STACK), admin_arn=root, tags=tags,
        description="tenantctl platform: shared bucket default, shared database, registry"))
    net = PrivateNetwork("shared", PrivateNetworkArgs(cidr=spec.vpc_cidr, region=spec.region, az_names=azs, tags=tags))
    db = PostgresInstance("shared", PostgresInstanceArgs(
        identifier=naming.rds_identifier(PLATFORM_STACK), db_name=PLATFORM_DB_NAME, vpc_id=net.vpc_id,
        subnet_ids=net.subnet_ids, client_cidrs=[spec.vpc_cidr], kms_key_arn=key.arn,
        instance_class=spec.db_instance_class, storage_gb=spec.db_storage_gb,
        backup_retention_days=PLATFORM_BACKUP_DAYS,
        final_snapshot_identifier=resource_name(PLATFORM_STACK, "final"), tags=tags))
    bucket = SharedBucket("shared", SharedBucketArgs(
        bucket_name=naming.shared_bucket_name(account, spec.region), kms_key_arn=key.arn, tags=tags))
    registry = RegistryTable("registry", RegistryTableArgs(table_name=REGISTRY_TABLE, kms_key_arn=key.arn, tags=tags))
    return {
        "region": spec.region,
        "account_id": account,
        "vpc_id": net.vpc_id,
        "vpc_cidr": spec.vpc_cidr,
        "private_subnet_ids": net.subnet_ids,
        "db_endpoint": db.address,
        "db_port": db.port,
        "db_name": PLATFORM_DB_NAME,
        "db_admin_secret_arn": db.admin_secret_arn,
        "db_security_group_id": db.security_group_id,
        "bucket": bucket.bucket,
        "bucket_arn": bucket.arn,
        "platform_key_arn": key.arn,
        "registry_table": registry.name,
        # Beyond the shared-resource keys: the principals tenant stacks name in
        # their key and trust policies, with the account-root default resolved.
        "admin_role_arn": spec.admin_role_arn or root,
        "runtime_principal_arn": spec.runtime_principal_arn or root,
    }


def build_tenant(spec: TenantSpec, platform_stack: str = PLATFORM_STACK) -> dict[str, Any]:
    _check_region(spec.region)
    platform = pulumi.StackReference(platform_stack)
    shared = platform.require_output
    tid, tags = spec.id, spec.tags()

    role = TenantRole(tid, TenantRoleArgs(tenant_id=tid, runtime_principal_arn=shared("runtime_principal_arn"),
                                          tags=tags, suspended=spec.suspended))
    key = TenantKey(tid, TenantKeyArgs(alias=naming.kms_alias(tid), admin_arn=shared("admin_role_arn"),
                                       user_arns=[role.arn], tags=tags, description=f"tenantctl tenant {tid}"))
    secret = TenantSecret(tid, TenantSecretArgs(tenant_id=tid, kms_key_arn=key.arn, tags=tags))
    queue = TenantQueue(tid, TenantQueueArgs(tenant_id=tid, kms_key_arn=key.arn, spec=spec.queue, tags=tags))
    storage = TenantStorage(tid, TenantStorageArgs(tenant_id=tid, region=spec.region, bucket=shared("bucket"),
                                                   lifecycle=spec.lifecycle))
    azs = aws.get_availability_zones(state="available").names if spec.tier is Tier.dedicated else []
    db = TenantDatabase(tid, TenantDatabaseArgs(
        spec=spec, kms_key_arn=key.arn, secret_arn=secret.arn, az_names=azs,
        shared=SharedDatabaseRef(vpc_id=shared("vpc_id"), vpc_cidr=shared("vpc_cidr"),
                                 security_group_id=shared("db_security_group_id"), endpoint=shared("db_endpoint"),
                                 port=shared("db_port"), database=shared("db_name"),
                                 admin_secret_arn=shared("db_admin_secret_arn"))))
    TenantRoleAccess(tid, TenantRoleAccessArgs(tenant_id=tid, role=role, grants=TenantGrants(
        bucket_arn=shared("bucket_arn"), queue_arns=[queue.arn, queue.dlq_arn], kms_key_arn=key.arn,
        secret_arn=secret.arn)))
    TenantAlarms(tid, TenantAlarmsArgs(
        tenant_id=tid, queue_name=queue.queue_name, dlq_name=queue.dlq_name, delay_seconds=spec.queue.delay_seconds,
        tags=tags, db_identifier=db.db_identifier,
        db_storage_gb=spec.dedicated.storage_gb if spec.dedicated else 0))

    store = pulumi.Output.all(endpoint=db.endpoint, port=db.port, database=db.database, secret_arn=secret.arn).apply(
        lambda v: {"engine": "postgres", "endpoint": v["endpoint"], "port": int(v["port"]),
                   "database": v["database"], "schema_name": naming.schema_name(tid),
                   "role": naming.db_role_name(tid), "secret_arn": v["secret_arn"]})
    return {
        "tenant_id": tid,
        "tier": spec.tier.value,
        "region": spec.region,
        "store": store,
        "kms_key_arn": key.arn,
        "kms_alias": key.alias,
        "bucket": storage.bucket,
        "prefix": storage.prefix,
        "queue_url": queue.url,
        "dlq_url": queue.dlq_url,
        "role_arn": role.arn,
    }


def build(stack_name: str) -> dict[str, Any]:
    """Declare the stack's resources from config; returns its outputs."""
    config = pulumi.Config("tenantctl")
    try:
        if stack_name == PLATFORM_STACK:
            return build_platform(PlatformSpec.model_validate(config.get_object("platform") or {}))
        spec = TenantSpec.model_validate(config.require_object("tenant"))
    except ValidationError as exc:
        raise ValueError(f"stack {stack_name}: {describe_validation_error(exc)}") from None
    if naming.stack_name(spec.id) != stack_name:
        raise ValueError(f"stack {stack_name!r} holds tenant {spec.id!r}: the stack must be named after the tenant")
    return build_tenant(spec, config.get("platformStack") or PLATFORM_STACK)


def main() -> None:
    for key, value in build(pulumi.get_stack()).items():
        pulumi.export(key, value)
