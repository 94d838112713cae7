"""TenantDatabase: where the tenant's context store lives.

pooled: the tenant's schema in its cell's shared database; its password is
rotated by the cell's rotation function. No network resource of its own: its
workloads run in the cell's pooled-clients group, the one group the shared
database admits for every pooled tenant (a rule per tenant would stop a cell
at the 60 rules of a security group). Pooled tenants share a server, so what
keeps them apart is the database role and row-level security, not the network.
dedicated: its own PrivateNetwork, rotation function and PostgresInstance
(encrypted with the tenant key, admitting the tenant's app group and the
rotation function only), and the same schema inside its own database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi

from infra.components.credential_rotation import CredentialRotation, CredentialRotationArgs
from infra.components.postgres_instance import (
    PostgresInstance,
    PostgresInstanceArgs,
    client_security_group,
)
from infra.components.private_network import PrivateNetwork, PrivateNetworkArgs
from infra.providers.tenant_schema import TenantSchema, TenantSchemaArgs
from tenantctl import naming
from tenantctl.models import TenantSpec, Tier
from tenantctl.naming import resource_name

DEDICATED_AZ_COUNT = 2
APP_GROUP_DESCRIPTION = "tenant workload: PostgreSQL and AWS endpoints only"


@dataclass
class SharedDatabaseRef:
    """The platform's network, database and shared roles, from its stack outputs."""

    account_id: pulumi.Input[str]
    endpoint: pulumi.Input[str]
    port: pulumi.Input[int]
    database: pulumi.Input[str]
    admin_secret_arn: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    flow_logs_role_arn: pulumi.Input[str]
    monitoring_role_arn: pulumi.Input[str]
    rotation_function_arn: pulumi.Input[str]
    rotation_role_arn: pulumi.Input[str]
    gateway_role: pulumi.Input[str] | None = None  # the shared pool's login (None: a platform without one)
    # Its pooled tenants' logins' CONNECTION LIMIT (None: a cell applied before it had one).
    connection_limit: pulumi.Input[int] | None = None


@dataclass
class TenantDatabaseArgs:
    spec: TenantSpec
    kms_key_arn: pulumi.Input[str]
    secret_arn: pulumi.Input[str]
    shared: SharedDatabaseRef
    az_names: Sequence[str] = ()
    account_role_arn: str | None = None  # the cell's account, for the schema provider's own AWS calls
    # False for the stores of an open move (the new one until the move ends,
    # the retiring one): the tenant's secret keeps naming the store the
    # registry routes to; the move rewrites it at the switch.
    owns_secret: bool = True
    # The tenant's logins (its role and its workspaces'): CONNECTION LIMIT
    # (TenantSpec.connection_limit) and whether they may log in (not while the
    # tenant is suspended).
    connection_limit: pulumi.Input[int] | None = None
    login: bool = True


def store_component_name(tenant_id: str, generation: int) -> str:
    """The TenantDatabase of the tenant's store ``generation`` (0: the store it
    was provisioned with; each move adds one, so the two stores of a move differ)."""
    return tenant_id if generation == 0 else f"{tenant_id}-s{generation}"


class TenantDatabase(pulumi.ComponentResource):
    endpoint: pulumi.Output[str]
    port: pulumi.Output[int]
    rotation_function_arn: pulumi.Output[str]
    rotation_role_arn: pulumi.Output[str]

    def __init__(self, name: str, args: TenantDatabaseArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:database:TenantDatabase", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        spec, tags, shared = args.spec, args.spec.tags(), args.shared
        self.db_identifier: str | None = None
        if spec.tier is Tier.dedicated:
            ded = spec.dedicated
            net = PrivateNetwork(f"{name}-net", PrivateNetworkArgs(
                cidr=ded.vpc_cidr, region=spec.region, az_names=list(args.az_names)[:DEDICATED_AZ_COUNT],
                tags=tags, account_id=shared.account_id, bucket_arns=[shared.bucket_arn],
                kms_key_arn=args.kms_key_arn, flow_logs_role_arn=shared.flow_logs_role_arn, log_scope=spec.id),
                opts=child)
            app = client_security_group(f"{name}-app", net.vpc_id, ded.vpc_cidr, {"cidr_blocks": [ded.vpc_cidr]},
                                        APP_GROUP_DESCRIPTION, tags, child)
            rotation = CredentialRotation(f"{name}-rotation", CredentialRotationArgs(
                function_name=naming.rotation_function_name(spec.id), region=spec.region, vpc_id=net.vpc_id,
                vpc_cidr=ded.vpc_cidr, subnet_ids=net.subnet_ids, kms_key_arn=args.kms_key_arn, tags=tags),
                opts=child)
            db = PostgresInstance(f"{name}-pg", PostgresInstanceArgs(
                identifier=naming.rds_identifier(spec.id), db_name=naming.database_name(spec.id), region=spec.region,
                vpc_id=net.vpc_id, subnet_ids=net.subnet_ids, kms_key_arn=args.kms_key_arn,
                monitoring_role_arn=shared.monitoring_role_arn,
                client_security_group_ids=[app.id, rotation.security_group_id],
                instance_class=ded.instance_class, storage_gb=ded.storage_gb,
                backup_retention_days=spec.backup.retention_days,
                final_snapshot_identifier=resource_name(spec.id, "final") + (
                    f"-{ded.final_snapshot_suffix}" if ded.final_snapshot_suffix else ""), tags=tags,
                multi_az=ded.multi_az, deletion_protection=ded.deletion_protection,
                account_role_arn=args.account_role_arn), opts=child)
            self.db_identifier = db.identifier
            self.endpoint, self.port = db.address, db.port
            self.database = pulumi.Output.from_input(naming.database_name(spec.id))
            self.rotation_function_arn, self.rotation_role_arn = rotation.function_arn, rotation.role_arn
            admin_secret_arn, gateway_role = db.admin_secret_arn, None  # dedicated: per-tenant logins
        else:
            self.endpoint = pulumi.Output.from_input(shared.endpoint)
            self.port = pulumi.Output.from_input(shared.port)
            self.database = pulumi.Output.from_input(shared.database)
            self.rotation_function_arn = pulumi.Output.from_input(shared.rotation_function_arn)
            self.rotation_role_arn = pulumi.Output.from_input(shared.rotation_role_arn)
            admin_secret_arn, gateway_role = shared.admin_secret_arn, shared.gateway_role
        # What the tenant's workspaces (TenantWorkspace) need to put their schemas beside the tenant's.
        self.admin_secret_arn, self.gateway_role = admin_secret_arn, gateway_role
        self.connection_limit, self.login = args.connection_limit, args.login
        self.schema = TenantSchema(f"{name}-schema", TenantSchemaArgs(
            tenant_id=spec.id, region=spec.region, host=self.endpoint, port=self.port, database=self.database,
            schema=naming.schema_name(spec.id), role=naming.db_role_name(spec.id),
            admin_secret_arn=admin_secret_arn, tenant_secret_arn=args.secret_arn, gateway_role=gateway_role,
            account_role_arn=args.account_role_arn, owns_secret=args.owns_secret,
            connection_limit=args.connection_limit, login=args.login), opts=child)
        self.register_outputs({"endpoint": self.endpoint, "port": self.port, "database": self.database})
