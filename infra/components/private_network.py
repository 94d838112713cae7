"""PrivateNetwork: a VPC with private subnets only, reaching AWS through VPC
endpoints (S3 gateway; KMS, SQS, Secrets Manager interface) instead of a NAT.
The platform's shared VPC and each dedicated tenant's VPC are both this."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

INTERFACE_SERVICES = ("kms", "sqs", "secretsmanager")


@dataclass
class PrivateNetworkArgs:
    cidr: str
    region: str
    az_names: Sequence[str]
    tags: dict[str, str]
    interface_services: Sequence[str] = field(default=INTERFACE_SERVICES)


def subnet_cidrs(cidr: str, count: int) -> list[str]:
    net = ipaddress.ip_network(cidr)
    new_prefix = min(net.prefixlen + 4, 28)
    return [str(s) for s, _ in zip(net.subnets(new_prefix=new_prefix), range(count), strict=False)]


class PrivateNetwork(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    subnet_ids: pulumi.Output[list[str]]

    def __init__(self, name: str, args: PrivateNetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:network:PrivateNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.cidr = args.cidr
        vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=args.cidr, enable_dns_support=True,
                          enable_dns_hostnames=True, tags=args.tags, opts=child)
        route_table = aws.ec2.RouteTable(f"{name}-private", vpc_id=vpc.id, tags=args.tags, opts=child)
        subnets = []
        for i, (az, cidr) in enumerate(zip(args.az_names, subnet_cidrs(args.cidr, len(args.az_names)), strict=True)):
            subnet = aws.ec2.Subnet(f"{name}-private-{i}", vpc_id=vpc.id, cidr_block=cidr, availability_zone=az,
                                    map_public_ip_on_launch=False, tags=args.tags, opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-private-{i}", subnet_id=subnet.id,
                                          route_table_id=route_table.id, opts=child)
            subnets.append(subnet)
        endpoint_sg = aws.ec2.SecurityGroup(
            f"{name}-endpoints", vpc_id=vpc.id, description="HTTPS to AWS interface endpoints from inside the VPC",
            ingress=[{"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": [args.cidr]}],
            egress=[], tags=args.tags, opts=child)
        aws.ec2.VpcEndpoint(f"{name}-s3", vpc_id=vpc.id, service_name=f"com.amazonaws.{args.region}.s3",
                            vpc_endpoint_type="Gateway", route_table_ids=[route_table.id], tags=args.tags, opts=child)
        for service in args.interface_services:
            aws.ec2.VpcEndpoint(f"{name}-{service}", vpc_id=vpc.id,
                                service_name=f"com.amazonaws.{args.region}.{service}",
                                vpc_endpoint_type="Interface", private_dns_enabled=True,
                                subnet_ids=[s.id for s in subnets], security_group_ids=[endpoint_sg.id],
                                tags=args.tags, opts=child)
        self.vpc_id = vpc.id
        self.subnet_ids = pulumi.Output.all(*[s.id for s in subnets])
        self.register_outputs({"vpc_id": self.vpc_id, "subnet_ids": self.subnet_ids})
