"""PostgresInstance: an encrypted, private RDS PostgreSQL with its security
group and subnet group. The platform's shared database and each dedicated
tenant's database are both this; the admin password is RDS-managed (a
Secrets Manager secret encrypted with the given key), never in Pulumi state.

Hardened beyond RDS's defaults: a parameter group of its own pinning
``rds.force_ssl=1`` (and connection logging), IAM database authentication on,
the PostgreSQL and upgrade logs exported to log groups created here
(encrypted, retained), enhanced monitoring, and PUBLIC stripped of CONNECT
and TEMPORARY on its databases (``DatabaseAcl``). The security group takes
PostgreSQL only from the client groups named (the tenants' app groups, the
rotation function); pooled tenants add their own rule to the shared group
from their stacks, so its ingress is never declared inline here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.components.platform_monitoring import ENHANCED_MONITORING_SECONDS, log_group
from infra.providers.database_acl import DatabaseAcl, DatabaseAclArgs
from tenantctl import naming

POSTGRES_PORT = 5432
ADMIN_USER = "tenantctl_admin"
EXPORTED_LOGS = ("postgresql", "upgrade")
# The parameters tenantctl pins (everything else keeps the engine default).
PARAMETERS = {"rds.force_ssl": "1", "log_connections": "1", "log_disconnections": "1"}


@dataclass
class PostgresInstanceArgs:
    identifier: str
    db_name: str
    region: str
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]
    kms_key_arn: pulumi.Input[str]
    monitoring_role_arn: pulumi.Input[str]
    instance_class: str
    storage_gb: int
    backup_retention_days: int
    final_snapshot_identifier: str
    tags: dict[str, str]
    # Security groups allowed to open PostgreSQL connections (ingress rules of their own).
    client_security_group_ids: Sequence[pulumi.Input[str]] = field(default_factory=list)
    multi_az: bool = False
    deletion_protection: bool = True
    engine_version: str = "16"
    account_role_arn: str | None = None  # the cell's account, for the ACL provider's own AWS calls


def client_security_group(name: str, vpc_id: pulumi.Input[str], vpc_cidr: pulumi.Input[str], db_egress: dict,
                          description: str, tags: dict[str, str],
                          opts: pulumi.ResourceOptions) -> aws.ec2.SecurityGroup:
    """A database client's group (a tenant workload, the rotation function): no
    ingress; out only to PostgreSQL (``db_egress``: the database's group or
    CIDR) and to the VPC endpoints."""
    return aws.ec2.SecurityGroup(
        name, vpc_id=vpc_id, description=description, ingress=[],
        egress=[{"protocol": "tcp", "from_port": POSTGRES_PORT, "to_port": POSTGRES_PORT, **db_egress},
                {"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": [vpc_cidr]}],
        tags=tags, opts=opts)


def db_ingress_rule(name: str, db_security_group_id: pulumi.Input[str], client_security_group_id: pulumi.Input[str],
                    description: str, tags: dict[str, str],
                    opts: pulumi.ResourceOptions) -> aws.vpc.SecurityGroupIngressRule:
    """PostgreSQL into the database's group from one client group (never a CIDR)."""
    return aws.vpc.SecurityGroupIngressRule(
        name, security_group_id=db_security_group_id, referenced_security_group_id=client_security_group_id,
        ip_protocol="tcp", from_port=POSTGRES_PORT, to_port=POSTGRES_PORT, description=description, tags=tags,
        opts=opts)


class PostgresInstance(pulumi.ComponentResource):
    address: pulumi.Output[str]
    port: pulumi.Output[int]
    admin_secret_arn: pulumi.Output[str]
    security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: PostgresInstanceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:database:PostgresInstance", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Ingress is not declared inline: the rules are resources of their own
        # (here, and in pooled tenants' stacks), which inline rules would revoke.
        sg = aws.ec2.SecurityGroup(
            f"{name}-db", vpc_id=args.vpc_id,
            description=f"PostgreSQL {args.identifier}: 5432 from its client groups only",
            egress=[], tags=args.tags, opts=child)
        for i, client in enumerate(args.client_security_group_ids):
            db_ingress_rule(f"{name}-db-client-{i}", sg.id, client, f"PostgreSQL client of {args.identifier}",
                            args.tags, child)
        subnet_group = aws.rds.SubnetGroup(f"{name}-subnets", name=args.identifier, subnet_ids=args.subnet_ids,
                                           tags=args.tags, opts=child)
        major = args.engine_version.split(".")[0]
        params = aws.rds.ParameterGroup(
            f"{name}-params", name=args.identifier, family=f"postgres{major}",
            description=f"tenantctl {args.identifier}: TLS only, connections logged",
            # rds.force_ssl is static: it takes effect at the next reboot.
            parameters=[{"name": k, "value": v,
                         "apply_method": "pending-reboot" if k == "rds.force_ssl" else "immediate"}
                        for k, v in PARAMETERS.items()],
            tags=args.tags, opts=child)
        # RDS would create the export groups itself, unencrypted and kept forever.
        groups = [log_group(f"{name}-log-{log}", naming.rds_log_group(args.identifier, log), args.kms_key_arn,
                            args.tags, child) for log in EXPORTED_LOGS]
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
            parameter_group_name=params.name,
            iam_database_authentication_enabled=True,
            enabled_cloudwatch_logs_exports=list(EXPORTED_LOGS),
            monitoring_interval=ENHANCED_MONITORING_SECONDS,
            monitoring_role_arn=args.monitoring_role_arn,
            auto_minor_version_upgrade=True,
            db_subnet_group_name=subnet_group.name,
            vpc_security_group_ids=[sg.id],
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=groups),
        )
        self.identifier = args.identifier
        self.address = self.instance.address
        self.port = self.instance.port
        self.admin_secret_arn = self.instance.master_user_secrets.apply(lambda s: s[0].secret_arn)
        self.security_group_id = sg.id
        DatabaseAcl(f"{name}-acl", DatabaseAclArgs(region=args.region, host=self.address, port=self.port,
                                                   database=args.db_name, admin_secret_arn=self.admin_secret_arn,
                                                   account_role_arn=args.account_role_arn),
                    opts=child)
        self.register_outputs({"address": self.address, "port": self.port,
                               "admin_secret_arn": self.admin_secret_arn, "security_group_id": sg.id})
