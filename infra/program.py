"""The Pulumi program: a cell's platform stack, or one tenant's stack.

Config (namespace `tenantctl`): `platform` (CellSpec) for a cell's stack
(`platform` for the default cell, `cell-<name>` for the others); `tenant`
(TenantSpec) and `platformStack` (default "platform": the StackReference to the
tenant's cell, whose shared outputs it reads) for tenant stacks. A stack in
another account than the target's runs with pulumi-aws's `aws:assumeRoles`
(laid over its stack file by the engines, from its cell's spec); the dynamic
providers, which call AWS themselves, get that role as an input.
``build`` returns the stack outputs; ``main`` exports them. A tenant stack's
outputs are exactly tenant_runtime.models.TenantResources.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws
from pydantic import ValidationError

from infra.components.credential_rotation import (
    CredentialRotation,
    CredentialRotationArgs,
    SecretRotationSchedule,
    SecretRotationScheduleArgs,
)
from infra.components.kms_key import TenantKey, TenantKeyArgs, alarms_statement, logs_statement
from infra.components.platform_bucket import SharedBucket, SharedBucketArgs
from infra.components.platform_gateway import GatewayLogin, GatewayLoginArgs
from infra.components.platform_monitoring import RDS_OS_METRICS, PlatformMonitoring, PlatformMonitoringArgs
from infra.components.platform_registry import RegistryTable, RegistryTableArgs
from infra.components.platform_revocations import RevocationTable, RevocationTableArgs
from infra.components.postgres_instance import PostgresInstance, PostgresInstanceArgs, client_security_group
from infra.components.private_network import PrivateNetwork, PrivateNetworkArgs
from infra.components.runtime_role import (
    DatabaseWakerRole,
    DatabaseWakerRoleArgs,
    RuntimeReads,
    RuntimeRole,
    RuntimeRoleArgs,
)
from infra.components.stack_reference import StackReference
from infra.components.tenant_alarms import TenantAlarms, TenantAlarmsArgs
from infra.components.tenant_database import (
    SharedDatabaseRef,
    TenantDatabase,
    TenantDatabaseArgs,
    store_component_name,
)
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
from infra.components.tenant_workspace import TenantWorkspace, TenantWorkspaceArgs, component_name
from tenantctl import naming
from tenantctl.bucket_lifecycle import cell_rules, tenant_classes
from tenantctl.models import AlarmSubscription, CellSpec, TenantSpec, Tier, describe_validation_error
from tenantctl.naming import PLATFORM_STACK, cell_of_stack, resource_name

PLATFORM_BACKUP_DAYS = 14
REGISTRY_TABLE = naming.REGISTRY_TABLE


def _account_root(region: str) -> tuple[str, str]:
    account = aws.get_caller_identity().account_id
    return account, naming.arn(region, "iam", account, "root")


def _check_region(region: str) -> None:
    configured = pulumi.Config("aws").get("region")
    if configured and configured != region:
        raise ValueError(f"aws:region {configured!r} differs from the spec's region {region!r}")


def assumed_role() -> str | None:
    """The role the AWS provider assumes for this stack (its cell's account), for
    the dynamic providers, which make their own AWS clients."""
    roles = pulumi.Config("aws").get_object("assumeRoles") or []
    return roles[0].get("roleArn") if roles else None


def build_platform(spec: CellSpec) -> dict[str, Any]:
    """A cell's shared resources: the default cell keeps the names (and URNs)
    the single platform always had, and is the only one with the registry,
    the revocation table and the runtime role (cells elsewhere name its runtime)."""
    _check_region(spec.region)
    account, root = _account_root(spec.region)
    region, tags, stack = spec.region, spec.tags(), spec.stack
    azs = aws.get_availability_zones(state="available").names[: spec.az_count]
    key = TenantKey("platform", TenantKeyArgs(
        alias=naming.cell_key_alias(spec.name), admin_arn=root, tags=tags,
        description=f"tenantctl cell {spec.name}: shared bucket default, shared database, platform logs"
                    + (", registry" if spec.home else ""),
        service_statements=[logs_statement(region, account, naming.own_log_groups(stack) + [RDS_OS_METRICS])]))
    monitoring = PlatformMonitoring("platform", PlatformMonitoringArgs(
        region=region, account_id=account, kms_key_arn=key.arn, tags=tags,
        scope=None if spec.home else spec.name,
        os_metrics_group=spec.os_metrics_group, os_metrics_adopted=spec.os_metrics_adopted))
    bucket_name = naming.cell_bucket_name(account, region, spec.name)
    net = PrivateNetwork("shared", PrivateNetworkArgs(
        cidr=spec.vpc_cidr, region=region, az_names=azs, tags=tags, account_id=account,
        bucket_arns=[naming.arn(region, "s3", "", bucket_name)], kms_key_arn=key.arn,
        flow_logs_role_arn=monitoring.flow_logs_role_arn, log_scope=stack))
    rotation = CredentialRotation("shared", CredentialRotationArgs(
        function_name=naming.rotation_function_name(stack), region=region, vpc_id=net.vpc_id,
        vpc_cidr=spec.vpc_cidr, subnet_ids=net.subnet_ids, kms_key_arn=key.arn, tags=tags))
    # Every pooled tenant's workloads run in this one group, admitted by one rule
    # (a rule per tenant would stop the cell at a security group's 60 rules).
    pooled_clients = client_security_group(
        "pooled-clients", net.vpc_id, spec.vpc_cidr, {"cidr_blocks": [spec.vpc_cidr]},
        f"pooled tenants of cell {spec.name}: PostgreSQL and AWS endpoints only", tags, pulumi.ResourceOptions())
    db_name, role_arn = naming.cell_database(spec.name), assumed_role()
    db = PostgresInstance("shared", PostgresInstanceArgs(
        identifier=naming.cell_rds_identifier(spec.name), db_name=db_name, region=region,
        vpc_id=net.vpc_id, subnet_ids=net.subnet_ids, kms_key_arn=key.arn,
        monitoring_role_arn=monitoring.monitoring_role_arn,
        client_security_group_ids=[rotation.security_group_id, pooled_clients.id],
        instance_class=spec.db_instance_class, storage_gb=spec.db_storage_gb,
        backup_retention_days=PLATFORM_BACKUP_DAYS, multi_az=spec.db_multi_az,
        final_snapshot_identifier=resource_name(stack, "final"), tags=tags, account_role_arn=role_arn,
        deletion_protection=not spec.retiring))
    bucket = SharedBucket("shared", SharedBucketArgs(
        bucket_name=bucket_name, logs_bucket_name=naming.cell_logs_bucket_name(account, region, spec.name),
        account_id=account, kms_key_arn=key.arn, tags=tags,
        lifecycle_rules=cell_rules(spec.retention, spec.abort_multipart_days), force_destroy=spec.retiring))
    # Each cell's PostgreSQL has its own shared-pool login (one server on the sandbox: own names).
    gateway = GatewayLogin("gateway", GatewayLoginArgs(
        role=naming.cell_gateway_role(spec.name), secret_name=naming.cell_gateway_secret(spec.name), region=region,
        host=db.address, port=db.port, database=db_name, admin_secret_arn=db.admin_secret_arn,
        kms_key_arn=key.arn, tags=tags, account_role_arn=role_arn))
    # The gateway's password rotates like every tenant's, by the same function.
    SecretRotationSchedule("gateway", SecretRotationScheduleArgs(
        secret_arn=gateway.secret_arn, kms_key_arn=key.arn, function_arn=rotation.function_arn,
        function_role_arn=rotation.role_arn, after=[gateway.login]))
    outputs: dict[str, Any] = {"gateway_role": gateway.role, "gateway_secret_arn": gateway.secret_arn}
    if spec.home:
        registry = RegistryTable("registry", RegistryTableArgs(table_name=REGISTRY_TABLE, kms_key_arn=key.arn,
                                                               tags=tags))
        revocations = RevocationTable("revocations", RevocationTableArgs(
            table_name=naming.REVOCATION_TABLE, kms_key_arn=key.arn, tags=tags))
        outputs.update(registry_table=registry.name, revocation_table=revocations.name)
        # The one principal tenant roles trust: a role of the runtime's own, never the account root.
        runtime = spec.runtime_principal_arn or RuntimeRole("runtime", RuntimeRoleArgs(
            trusted=spec.runtime_trusted, tags=tags, reads=RuntimeReads(
                registry_table_arn=registry.arn, revocation_table_arn=revocations.arn,
                gateway_secret_arn=gateway.secret_arn, platform_key_arn=key.arn, region=region,
                account_id=account))).arn
    elif spec.runtime_principal_arn:
        runtime = spec.runtime_principal_arn  # the home cell's runtime (`cell add` writes it into the spec)
        if spec.account_role_arn:  # the runtime role's own grant wakes tenants of the home account only
            outputs["waker_role_arn"] = DatabaseWakerRole("waker", DatabaseWakerRoleArgs(
                cell=spec.name, region=region, account_id=account, runtime_principal_arn=runtime, tags=tags)).arn
    else:
        raise ValueError(f"cell {spec.name}: runtime_principal_arn is required outside the home cell "
                         "(`tenantctl cell add` fills it in from the home cell)")
    return {
        "cell": spec.name,
        "region": spec.region,
        "account_id": account,
        "vpc_id": net.vpc_id,
        "vpc_cidr": spec.vpc_cidr,
        "private_subnet_ids": net.subnet_ids,
        "db_endpoint": db.address,
        "db_port": db.port,
        "db_name": naming.cell_database(spec.name),
        "db_admin_secret_arn": db.admin_secret_arn,
        "db_security_group_id": db.security_group_id,
        "pooled_clients_security_group_id": pooled_clients.id,
        "bucket": bucket.bucket,
        "bucket_arn": bucket.arn,
        "logs_bucket": bucket.logs_bucket,
        "platform_key_arn": key.arn,
        **outputs,
        # Beyond the shared-resource keys: the principals tenant stacks name in
        # their key and trust policies (cells elsewhere carry this runtime's).
        "admin_role_arn": spec.admin_role_arn or root,
        "runtime_principal_arn": runtime,
        # What tenant stacks reuse: the service roles of the cell, and the
        # function rotating pooled tenants' passwords.
        "flow_logs_role_arn": monitoring.flow_logs_role_arn,
        "db_monitoring_role_arn": monitoring.monitoring_role_arn,
        "rotation_function_arn": rotation.function_arn,
        "rotation_role_arn": rotation.role_arn,
        # Its pooled tenants' logins' CONNECTION LIMIT, unless a tenant sets its own.
        "db_connection_limit": spec.db_connection_limit,
    }


def _shared_database(platform: StackReference) -> SharedDatabaseRef:
    """What a tenant store uses of the cell whose platform stack ``platform`` references."""
    shared = platform.require_output
    return SharedDatabaseRef(account_id=shared("account_id"), endpoint=shared("db_endpoint"),
                             port=shared("db_port"), database=shared("db_name"),
                             admin_secret_arn=shared("db_admin_secret_arn"), bucket_arn=shared("bucket_arn"),
                             flow_logs_role_arn=shared("flow_logs_role_arn"),
                             monitoring_role_arn=shared("db_monitoring_role_arn"),
                             rotation_function_arn=shared("rotation_function_arn"),
                             rotation_role_arn=shared("rotation_role_arn"),
                             gateway_role=platform.get_output("gateway_role"),
                             connection_limit=platform.get_output("db_connection_limit"))


def sibling_stack(platform_stack: str, cell: str) -> str:
    """Cell ``cell``'s platform stack, qualified like ``platform_stack`` (the
    tenant's own cell's reference: org/project/stack on a Pulumi backend)."""
    scope = platform_stack.rpartition("/")[0]
    return f"{scope}/{naming.cell_stack(cell)}" if scope else naming.cell_stack(cell)


def build_tenant(spec: TenantSpec, platform_stack: str = PLATFORM_STACK, key_generation: int = 0,
                 alarm_subscriptions: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """``alarm_subscriptions``: its cell's (``CellSpec.alarm_subscriptions``), laid over its
    config by the engines: known to a preview, unlike a StackReference's output."""
    _check_region(spec.region)
    subscriptions = alarm_subscriptions or []
    platform = StackReference(platform_stack)
    shared = platform.require_output
    tid, tags = spec.id, spec.tags()
    account, dedicated = shared("account_id"), spec.tier is Tier.dedicated
    old = spec.retiring
    retiring_dedicated = old is not None and old.tier is Tier.dedicated
    # A move between cells (same account and region): the retiring store and
    # the old prefix are in the old cell, read from its own platform stack.
    old_platform = (StackReference(sibling_stack(platform_stack, old.cell))
                    if old is not None and old.cell is not None else None)

    role = TenantRole(tid, TenantRoleArgs(tenant_id=tid, runtime_principal_arn=shared("runtime_principal_arn"),
                                          tags=tags, suspended=spec.suspended, key_generation=key_generation))
    # AWS services using the key for the tenant: CloudWatch for its alarm topic;
    # CloudWatch Logs for a dedicated tenant's own log groups.
    services = [alarms_statement(spec.region, account, naming.alarm_names(tid, dedicated))]
    if dedicated or retiring_dedicated:
        services.insert(0, logs_statement(spec.region, account, naming.own_log_groups(tid)))
    key = TenantKey(tid, TenantKeyArgs(alias=naming.kms_alias(tid), admin_arn=shared("admin_role_arn"),
                                       user_arns=[role.arn], tags=tags, description=f"tenantctl tenant {tid}",
                                       service_statements=services))
    secret = TenantSecret(tid, TenantSecretArgs(tenant_id=tid, kms_key_arn=key.arn, tags=tags))
    queue = TenantQueue(tid, TenantQueueArgs(tenant_id=tid, kms_key_arn=key.arn, spec=spec.queue, tags=tags))
    storage = TenantStorage(tid, TenantStorageArgs(tenant_id=tid, bucket=shared("bucket")))
    role_arn = assumed_role()
    moving = old is not None
    azs = aws.get_availability_zones(state="available").names if dedicated or moving else []
    shared_db = _shared_database(platform)
    retiring_shared = _shared_database(old_platform) if old_platform is not None else shared_db
    # One bound for every store of the tenant: the pooled one's cell's (tenant roles are one per server).
    pooled_cell = shared_db if spec.tier is Tier.pooled or old is None else retiring_shared
    connection_limit = pulumi.Output.from_input(pooled_cell.connection_limit).apply(spec.connection_limit)
    # A suspended tenant's logins are closed, on every store of it (the admin's login is not the tenant's).
    login = not spec.suspended
    db = TenantDatabase(store_component_name(tid, spec.store_generation), TenantDatabaseArgs(
        spec=spec, kms_key_arn=key.arn, secret_arn=secret.arn, az_names=azs, shared=shared_db, owns_secret=not moving,
        account_role_arn=role_arn, connection_limit=connection_limit, login=login))
    retiring_db = None
    if old is not None:
        # A move is open: the store being retired stays declared, unchanged, beside the new one.
        retiring_db = TenantDatabase(store_component_name(tid, old.generation), TenantDatabaseArgs(
            spec=spec.model_copy(update={"tier": old.tier, "dedicated": old.dedicated, "cell": old.cell or spec.cell,
                                         "store_generation": old.generation, "retiring": None}),
            kms_key_arn=key.arn, secret_arn=secret.arn, az_names=azs, shared=retiring_shared, owns_secret=False,
            account_role_arn=role_arn, connection_limit=connection_limit, login=login))
    SecretRotationSchedule(tid, SecretRotationScheduleArgs(
        secret_arn=secret.arn, kms_key_arn=key.arn, function_arn=db.rotation_function_arn,
        function_role_arn=db.rotation_role_arn, after=[db.schema]))
    # While a move between cells is open the role reaches its prefix in both
    # cells' buckets: runtimes still holding the old record read the old one.
    moving_bucket_arn = old_platform.require_output("bucket_arn") if old_platform is not None else None
    TenantRoleAccess(tid, TenantRoleAccessArgs(tenant_id=tid, role=role, grants=TenantGrants(
        bucket_arn=shared("bucket_arn"), queue_arns=[queue.arn, queue.dlq_arn], kms_key_arn=key.arn,
        secret_arn=secret.arn, moving_bucket_arn=moving_bucket_arn, queue_sends=not spec.retired)))
    TenantAlarms(tid, TenantAlarmsArgs(
        tenant_id=tid, kms_key_arn=key.arn, queue_name=queue.queue_name, dlq_name=queue.dlq_name,
        delay_seconds=spec.queue.delay_seconds, tags=tags, db_identifier=db.db_identifier,
        db_storage_gb=spec.dedicated.storage_gb if spec.dedicated else 0, subscriptions=subscriptions))

    # The tenant's workspaces, each with its own key, role, queues, secret and schema in the tenant's store.
    workspaces = {w.name: TenantWorkspace(component_name(tid, w.name), TenantWorkspaceArgs(
        spec=spec, workspace=w, database=db, runtime_principal_arn=shared("runtime_principal_arn"),
        admin_arn=shared("admin_role_arn"), account_id=account, bucket_arn=shared("bucket_arn"),
        account_role_arn=role_arn, retiring=retiring_db, generation=spec.store_generation,
        retiring_generation=old.generation if old is not None else 0, moving_bucket_arn=moving_bucket_arn,
        key_generation=key_generation, alarm_subscriptions=subscriptions)).outputs
        for w in spec.workspaces}

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
        # The object tags of the cell's retention rules this tenant's spec picks.
        "lifecycle_classes": tenant_classes(spec.lifecycle.temp_upload_days, spec.lifecycle.archive_transition_days,
                                            spec.lifecycle.archive_expiry_days),
        # Only when there are some: the outputs of a tenant without stay as they were.
        **({"workspaces": workspaces} if workspaces else {}),
    }


def build(stack_name: str) -> dict[str, Any]:
    """Declare the stack's resources from config; returns its outputs."""
    config = pulumi.Config("tenantctl")
    try:
        cell = cell_of_stack(stack_name)
        if cell is not None:
            spec = CellSpec.model_validate({"name": cell, **(config.get_object("platform") or {})})
            if spec.name != cell:
                raise ValueError(f"stack {stack_name!r} holds cell {spec.name!r}: the stack must be named after it")
            return build_platform(spec)
        spec = TenantSpec.model_validate(config.require_object("tenant"))
        subscriptions = [AlarmSubscription.model_validate(s).model_dump()
                         for s in config.get_object("alarmSubscriptions") or []]
    except ValidationError as exc:
        raise ValueError(f"stack {stack_name}: {describe_validation_error(exc)}") from None
    tenant_id, key_generation = naming.stack_tenant(stack_name) or ("", 0)
    if tenant_id != spec.id:
        raise ValueError(f"stack {stack_name!r} holds tenant {spec.id!r}: the stack must be named after the tenant "
                         f"(`<id>`, or `<id>.k<N>` for its key generation N)")
    return build_tenant(spec, config.get("platformStack") or PLATFORM_STACK, key_generation, subscriptions)


def main() -> None:
    for key, value in build(pulumi.get_stack()).items():
        pulumi.export(key, value)
