"""PrivateNetwork: a VPC with private subnets only, reaching AWS through VPC
endpoints (S3 gateway; KMS, SQS, Secrets Manager interface) instead of a NAT.
The platform's shared VPC and each dedicated tenant's VPC are both this.

Nothing in it is left at AWS's defaults: every endpoint has a policy (the S3
gateway reaches the platform's buckets in this account only, so the VPC is no
path to write into anyone else's bucket; interface endpoints serve this
account's principals on this account's resources), the VPC's default security
group is taken over with no rules, its default network ACL admits traffic
from inside the VPC plus the return traffic of HTTPS through the S3 gateway
(whose addresses are S3's public ranges), and flow logs of all traffic go to
an encrypted log group.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.components.platform_monitoring import log_group
from infra.components.tenant_role import S3_OBJECT_ACTIONS
from tenantctl import naming

INTERFACE_SERVICES = ("kms", "sqs", "secretsmanager")
S3_ENDPOINT_ACTIONS = [*S3_OBJECT_ACTIONS, "s3:ListBucket", "s3:GetBucketLocation"]
FLOW_LOG_AGGREGATION_SECONDS = 60
EPHEMERAL_PORTS = (1024, 65535)


RDP_PORT = 3389  # inside the ephemeral range: refused from outside the VPC before the replies are admitted


def network_acl_rules(cidr: str) -> tuple[list[dict], list[dict]]:
    """(ingress, egress) of the default network ACL: anything within the VPC;
    HTTPS out to S3 through the gateway endpoint and its replies back in. No
    rule admits port 22, 3389 or every port from anywhere."""
    inside = {"protocol": "-1", "rule_no": 100, "action": "allow", "cidr_block": cidr, "from_port": 0, "to_port": 0}
    ingress = [inside,
               {"protocol": "6", "rule_no": 105, "action": "deny", "cidr_block": "0.0.0.0/0",
                "from_port": RDP_PORT, "to_port": RDP_PORT},
               {"protocol": "6", "rule_no": 110, "action": "allow", "cidr_block": "0.0.0.0/0",
                "from_port": EPHEMERAL_PORTS[0], "to_port": EPHEMERAL_PORTS[1]}]
    egress = [inside, {"protocol": "6", "rule_no": 110, "action": "allow", "cidr_block": "0.0.0.0/0",
                       "from_port": 443, "to_port": 443}]
    return ingress, egress


@dataclass
class PrivateNetworkArgs:
    cidr: str
    region: str
    az_names: Sequence[str]
    tags: dict[str, str]
    account_id: pulumi.Input[str]
    # The buckets workloads in the VPC may reach through the S3 gateway endpoint.
    bucket_arns: Sequence[pulumi.Input[str]]
    kms_key_arn: pulumi.Input[str]  # the flow-log group's key
    flow_logs_role_arn: pulumi.Input[str]
    log_scope: str  # the stack the log group is named after (naming.log_group_prefix)
    interface_services: Sequence[str] = field(default=INTERFACE_SERVICES)


def subnet_cidrs(cidr: str, count: int) -> list[str]:
    net = ipaddress.ip_network(cidr)
    new_prefix = min(net.prefixlen + 4, 28)
    return [str(s) for s, _ in zip(net.subnets(new_prefix=new_prefix), range(count), strict=False)]


def s3_endpoint_document(bucket_arns: Sequence[str], account: str) -> dict:
    """The S3 gateway endpoint: object and listing actions on the platform's
    buckets, owned by this account, and nothing else."""
    resources = [r for arn in bucket_arns for r in (arn, f"{arn}/*")]
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "PlatformBucketsOnly", "Effect": "Allow", "Principal": "*", "Action": S3_ENDPOINT_ACTIONS,
        "Resource": resources, "Condition": {"StringEquals": {"aws:ResourceAccount": account}}}]}


def interface_endpoint_document(service: str, account: str) -> dict:
    """An interface endpoint: this account's principals, on this account's resources."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "ThisAccountOnly", "Effect": "Allow", "Principal": "*", "Action": f"{service}:*", "Resource": "*",
        "Condition": {"StringEquals": {"aws:PrincipalAccount": account, "aws:ResourceAccount": account}}}]}


def flow_log_group_name(scope: str) -> str:
    return f"{naming.log_group_prefix(scope)}vpc-flow-logs"


class PrivateNetwork(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    subnet_ids: pulumi.Output[list[str]]

    def __init__(self, name: str, args: PrivateNetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:network:PrivateNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.cidr = args.cidr
        account = pulumi.Output.from_input(args.account_id)
        vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=args.cidr, enable_dns_support=True,
                          enable_dns_hostnames=True, tags=args.tags, opts=child)
        # Adopted and emptied: nothing may use the default group to reach anything.
        aws.ec2.DefaultSecurityGroup(f"{name}-default-sg", vpc_id=vpc.id, ingress=[], egress=[], tags=args.tags,
                                     opts=child)
        nacl_in, nacl_out = network_acl_rules(args.cidr)
        aws.ec2.DefaultNetworkAcl(f"{name}-default-nacl", default_network_acl_id=vpc.default_network_acl_id,
                                  ingress=nacl_in, egress=nacl_out, tags=args.tags, opts=child)
        flow_group = log_group(f"{name}-flow-logs", flow_log_group_name(args.log_scope), args.kms_key_arn,
                               args.tags, child)
        aws.ec2.FlowLog(f"{name}-flow-log", vpc_id=vpc.id, traffic_type="ALL", log_destination_type="cloud-watch-logs",
                        log_destination=flow_group.arn, iam_role_arn=args.flow_logs_role_arn,
                        max_aggregation_interval=FLOW_LOG_AGGREGATION_SECONDS, tags=args.tags, opts=child)
        route_table = aws.ec2.RouteTable(f"{name}-private", vpc_id=vpc.id, tags=args.tags, opts=child)
        subnets = []
        cidrs = subnet_cidrs(args.cidr, len(args.az_names))
        for i, (az, cidr) in enumerate(zip(args.az_names, cidrs, strict=True)):
            subnet = aws.ec2.Subnet(f"{name}-private-{i}", vpc_id=vpc.id, cidr_block=cidr, availability_zone=az,
                                    map_public_ip_on_launch=False, tags=args.tags, opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-private-{i}", subnet_id=subnet.id,
                                          route_table_id=route_table.id, opts=child)
            subnets.append(subnet)
        endpoint_sg = aws.ec2.SecurityGroup(
            f"{name}-endpoints", vpc_id=vpc.id, description="HTTPS to AWS interface endpoints from inside the VPC",
            ingress=[{"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": [args.cidr]}],
            egress=[], tags=args.tags, opts=child)
        s3_policy = pulumi.Output.all(account, *args.bucket_arns).apply(
            lambda v: json.dumps(s3_endpoint_document(list(v[1:]), v[0])))
        aws.ec2.VpcEndpoint(f"{name}-s3", vpc_id=vpc.id, service_name=f"com.amazonaws.{args.region}.s3",
                            vpc_endpoint_type="Gateway", route_table_ids=[route_table.id], policy=s3_policy,
                            tags=args.tags, opts=child)
        for service in args.interface_services:
            aws.ec2.VpcEndpoint(f"{name}-{service}", vpc_id=vpc.id,
                                service_name=f"com.amazonaws.{args.region}.{service}",
                                vpc_endpoint_type="Interface", private_dns_enabled=True,
                                subnet_ids=[s.id for s in subnets], security_group_ids=[endpoint_sg.id],
                                policy=account.apply(lambda a, svc=service: json.dumps(
                                    interface_endpoint_document(svc, a))),
                                tags=args.tags, opts=child)
        self.vpc_id = vpc.id
        self.subnet_ids = pulumi.Output.all(*[s.id for s in subnets])
        self.register_outputs({"vpc_id": self.vpc_id, "subnet_ids": self.subnet_ids})
