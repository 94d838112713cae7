"""PostgresInstance: an encrypted, private RDS PostgreSQL with its security
group and subnet group. The platform's shared database and each dedicated
tenant's database are both this; the admin password is RDS-managed (a
Secrets Manager secret encrypted with the given key), never in Pulumi state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

POSTGRES_PORT = 5432
ADMIN_USER = "tenantctl_admin"


@dataclass
class PostgresInstanceArgs:
    identifier: str
    db_name: str
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]
    client_cidrs: Sequence[str]
    kms_key_arn: pulumi.Input[str]
    instance_class: str
    storage_gb: int
    backup_retention_days: int
    final_snapshot_identifier: str
    tags: dict[str, str]
    multi_az: bool = False
    deletion_protection: bool = True
    engine_version: str = "16"


class PostgresInstance(pulumi.ComponentResource):
    address: pulumi.Output[str]
    port: pulumi.Output[int]
    admin_secret_arn: pulumi.Output[str]
    security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: PostgresInstanceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:database:PostgresInstance", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        sg = aws.ec2.SecurityGroup(
            f"{name}-db", vpc_id=args.vpc_id, description=f"PostgreSQL {args.identifier}: 5432 from inside the VPC",
            ingress=[{"protocol": "tcp", "from_port": POSTGRES_PORT, "to_port": POSTGRES_PORT,
                      "cidr_blocks": list(args.client_cidrs)}],
            egress=[], tags=args.tags, opts=child)
        subnet_group = aws.rds.SubnetGroup(f"{name}-subnets", name=args.identifier, subnet_ids=args.subnet_ids,
                                           tags=args.tags, opts=child)
        self.instance = aws.rds.Instance(
            f"{name}-db",
            identifier=args.identifier,
            engine="postgres",
            engine_version=args.engine_version,
            instance_class=args.instance_class,
            allocated_storage=args.storage_gb,
            storage_type="gp3",
            db_name=args.db_name,
            username=ADMIN_USER,
            manage_master_user_password=True,
            master_user_secret_kms_key_id=args.kms_key_arn,
            kms_key_id=args.kms_key_arn,
            storage_encrypted=True,
            publicly_accessible=False,
            deletion_protection=args.deletion_protection,
            skip_final_snapshot=False,
            final_snapshot_identifier=args.final_snapshot_identifier,
            backup_retention_period=args.backup_retention_days,
            copy_tags_to_snapshot=True,
            multi_az=args.multi_az,
            db_subnet_group_name=subnet_group.name,
            vpc_security_group_ids=[sg.id],
            tags=args.tags,
            opts=child,
        )
        self.identifier = args.identifier
        self.address = self.instance.address
        self.port = self.instance.port
        self.admin_secret_arn = self.instance.master_user_secrets.apply(lambda s: s[0].secret_arn)
        self.security_group_id = sg.id
        self.register_outputs({"address": self.address, "port": self.port,
                               "admin_secret_arn": self.admin_secret_arn, "security_group_id": sg.id})
