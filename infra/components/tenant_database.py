"""TenantDatabase: where the tenant's context store lives.

pooled: a security group in the shared VPC (PostgreSQL only towards the shared
database's group) and the tenant's schema in the shared database.
dedicated: its own PrivateNetwork and PostgresInstance (encrypted with the
tenant key), and the same schema inside its own database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.components.postgres_instance import POSTGRES_PORT, PostgresInstance, PostgresInstanceArgs
from infra.components.private_network import PrivateNetwork, PrivateNetworkArgs
from infra.providers.tenant_schema import TenantSchema, TenantSchemaArgs
from tenantctl import naming
from tenantctl.models import TenantSpec, Tier
from tenantctl.naming import resource_name

DEDICATED_AZ_COUNT = 2


@dataclass
class SharedDatabaseRef:
    """The platform's network and database, from its stack outputs."""

    vpc_id: pulumi.Input[str]
    vpc_cidr: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    endpoint: pulumi.Input[str]
    port: pulumi.Input[int]
    database: pulumi.Input[str]
    admin_secret_arn: pulumi.Input[str]
    gateway_role: pulumi.Input[str] | None = None  # the shared pool's login (None: a platform without one)


@dataclass
class TenantDatabaseArgs:
    spec: TenantSpec
    kms_key_arn: pulumi.Input[str]
    secret_arn: pulumi.Input[str]
    shared: SharedDatabaseRef
    az_names: Sequence[str] = ()


def app_security_group(name: str, vpc_id: pulumi.Input[str], vpc_cidr: pulumi.Input[str], db_egress: dict,
                       tags: dict[str, str], opts: pulumi.ResourceOptions) -> aws.ec2.SecurityGroup:
    """The tenant workload's group: no ingress; out only to PostgreSQL and the VPC endpoints."""
    return aws.ec2.SecurityGroup(
        name, vpc_id=vpc_id, description="tenant workload: PostgreSQL and AWS endpoints only", ingress=[],
        egress=[{"protocol": "tcp", "from_port": POSTGRES_PORT, "to_port": POSTGRES_PORT, **db_egress},
                {"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": [vpc_cidr]}],
        tags=tags, opts=opts)


class TenantDatabase(pulumi.ComponentResource):
    endpoint: pulumi.Output[str]
    port: pulumi.Output[int]

    def __init__(self, name: str, args: TenantDatabaseArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:database:TenantDatabase", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        spec, tags = args.spec, args.spec.tags()
        self.db_identifier: str | None = None
        if spec.tier is Tier.dedicated:
            ded = spec.dedicated
            net = PrivateNetwork(f"{name}-net", PrivateNetworkArgs(
                cidr=ded.vpc_cidr, region=spec.region, az_names=list(args.az_names)[:DEDICATED_AZ_COUNT],
                tags=tags), opts=child)
            app_security_group(f"{name}-app", net.vpc_id, ded.vpc_cidr, {"cidr_blocks": [ded.vpc_cidr]}, tags, child)
            db = PostgresInstance(f"{name}-pg", PostgresInstanceArgs(
                identifier=naming.rds_identifier(spec.id), db_name=naming.database_name(spec.id),
                vpc_id=net.vpc_id, subnet_ids=net.subnet_ids, client_cidrs=[ded.vpc_cidr],
                kms_key_arn=args.kms_key_arn, instance_class=ded.instance_class, storage_gb=ded.storage_gb,
                backup_retention_days=spec.backup.retention_days,
                final_snapshot_identifier=resource_name(spec.id, "final"), tags=tags,
                multi_az=ded.multi_az, deletion_protection=ded.deletion_protection), opts=child)
            self.db_identifier = db.identifier
            self.endpoint, self.port = db.address, db.port
            self.database = pulumi.Output.from_input(naming.database_name(spec.id))
            admin_secret_arn, gateway_role = db.admin_secret_arn, None  # dedicated: per-tenant logins
        else:
            shared = args.shared
            app_security_group(f"{name}-app", shared.vpc_id, shared.vpc_cidr,
                               {"security_groups": [shared.security_group_id]}, tags, child)
            self.endpoint = pulumi.Output.from_input(shared.endpoint)
            self.port = pulumi.Output.from_input(shared.port)
            self.database = pulumi.Output.from_input(shared.database)
            admin_secret_arn, gateway_role = shared.admin_secret_arn, shared.gateway_role
        TenantSchema(f"{name}-schema", TenantSchemaArgs(
            tenant_id=spec.id, region=spec.region, host=self.endpoint, port=self.port, database=self.database,
            schema=naming.schema_name(spec.id), role=naming.db_role_name(spec.id),
            admin_secret_arn=admin_secret_arn, tenant_secret_arn=args.secret_arn, gateway_role=gateway_role),
            opts=child)
        self.register_outputs({"endpoint": self.endpoint, "port": self.port, "database": self.database})
