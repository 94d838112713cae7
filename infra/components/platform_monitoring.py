"""PlatformMonitoring: what AWS services need to deliver the cell's telemetry,
shared by the platform and every dedicated tenant of the cell: the role VPC
flow logs deliver with, the RDS enhanced-monitoring role, and the
``RDSOSMetrics`` log group that monitoring writes to, created here so it is
encrypted and retained like every other group (RDS would create it plain).

The documents are plain functions so the scanners (parliament, cloudsplaining)
and the tests read exactly what is deployed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from tenantctl import naming
from tenantctl.naming import RDS_OS_METRICS_GROUP

LOG_RETENTION_DAYS = 365
RDS_OS_METRICS = RDS_OS_METRICS_GROUP  # the group name RDS enhanced monitoring writes to
ENHANCED_MONITORING_SECONDS = 60


def service_trust_document(service: str, account: str, source_arn: str | None = None) -> dict:
    """``service`` may assume the role for this account's resources only (the
    confused-deputy conditions AWS recommends)."""
    condition: dict = {"StringEquals": {"aws:SourceAccount": account}}
    if source_arn:
        condition["ArnLike"] = {"aws:SourceArn": source_arn}
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "ServiceAssumes", "Effect": "Allow", "Principal": {"Service": service},
        "Action": "sts:AssumeRole", "Condition": condition}]}


def flow_logs_document(region: str, account: str) -> dict:
    """Write flow-log streams into tenantctl's log groups (created beforehand, so
    no CreateLogGroup)."""
    groups = naming.arn(region, "logs", account, "log-group:/tenantctl/*")
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "DeliverFlowLogs", "Effect": "Allow",
         "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
         "Resource": [groups, f"{groups}:log-stream:*"]},
    ]}


def monitoring_document(region: str, account: str) -> dict:
    """AWS's AmazonRDSEnhancedMonitoringRole, confined to this account, region
    and the one group it writes."""
    group = naming.arn(region, "logs", account, f"log-group:{RDS_OS_METRICS}")
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ManageOsMetricsGroup", "Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:PutRetentionPolicy"],
         "Resource": group},
        {"Sid": "WriteOsMetrics", "Effect": "Allow",
         "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams", "logs:GetLogEvents"],
         "Resource": f"{group}:log-stream:*"},
    ]}


@dataclass
class PlatformMonitoringArgs:
    region: str
    account_id: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    tags: dict[str, str]
    # Another cell in the same account and region: its own role names. None: the names the platform always had.
    scope: str | None = None
    # RDSOSMetrics is one group per account and region (a name RDS fixes): managed by one cell only.
    os_metrics_group: bool = True
    # It existed before this cell managed it (another cell's, handed over when that cell was removed).
    os_metrics_adopted: bool = False


def _scoped(what: str, scope: str | None, region: str) -> str:
    # Within IAM's 64 characters for a 20-character cell name and the longest region.
    return f"tenantctl-{what}-{region}" if scope is None else f"tenantctl-{scope}-{what[:7]}-{region}"


def _role(name: str, role_name: str, trust: pulumi.Output[str], policy: pulumi.Output[str], description: str,
          tags: dict[str, str], opts: pulumi.ResourceOptions) -> aws.iam.Role:
    role = aws.iam.Role(name, name=role_name, assume_role_policy=trust, description=description,
                        max_session_duration=3600, tags=tags, opts=opts)
    aws.iam.RolePolicy(name, role=role.name, policy=policy, opts=opts)
    return role


class PlatformMonitoring(pulumi.ComponentResource):
    flow_logs_role_arn: pulumi.Output[str]
    monitoring_role_arn: pulumi.Output[str]

    def __init__(self, name: str, args: PlatformMonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:monitoring:PlatformMonitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        region, account = args.region, pulumi.Output.from_input(args.account_id)
        flow_logs = _role(
            f"{name}-flow-logs", _scoped("flow-logs", args.scope, region),
            account.apply(lambda a: json.dumps(service_trust_document(
                naming.service_principal("vpc-flow-logs", region), a, naming.arn(region, "ec2", a, "vpc-flow-log/*")))),
            account.apply(lambda a: json.dumps(flow_logs_document(region, a))),
            "VPC flow logs delivery into tenantctl's log groups", args.tags, child)
        monitoring = _role(
            f"{name}-rds-monitoring", _scoped("rds-monitoring", args.scope, region), account.apply(
                lambda a: json.dumps(service_trust_document(naming.service_principal("monitoring.rds", region), a))),
            account.apply(lambda a: json.dumps(monitoring_document(region, a))),
            "RDS enhanced monitoring of tenantctl's instances", args.tags, child)
        if args.os_metrics_group:
            # Account-wide: every RDS instance of the account and region with enhanced monitoring writes
            # there, so no cell's destroy deletes it (Pulumi drops it from the state only), and a cell
            # that takes it over imports it (an imported resource keeps the option harmlessly after).
            log_group(f"{name}-os-metrics", RDS_OS_METRICS, args.kms_key_arn, args.tags, pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(retain_on_delete=True,
                                              import_=RDS_OS_METRICS if args.os_metrics_adopted else None)))
        self.flow_logs_role_arn = flow_logs.arn
        self.monitoring_role_arn = monitoring.arn
        self.register_outputs({"flow_logs_role_arn": self.flow_logs_role_arn,
                               "monitoring_role_arn": self.monitoring_role_arn})


def log_group(name: str, group_name: pulumi.Input[str], kms_key_arn: pulumi.Input[str], tags: dict[str, str],
              opts: pulumi.ResourceOptions) -> aws.cloudwatch.LogGroup:
    """A log group as every tenantctl group is: KMS-encrypted, retained a year."""
    return aws.cloudwatch.LogGroup(name, name=group_name, retention_in_days=LOG_RETENTION_DAYS,
                                   kms_key_id=kms_key_arn, tags=tags, opts=opts)

