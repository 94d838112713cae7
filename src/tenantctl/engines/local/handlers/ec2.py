"""EC2 networking: VPCs, subnets, route tables (+ associations), security
groups with inline rules, VPC endpoints. None of them has a unique name, so a
crashed create is found again by the ``tenantctl:urn`` tag it was created with."""

from __future__ import annotations

import json
from typing import Any

from tenantctl.engines.local.handlers.base import (
    URN_TAG,
    Context,
    Desired,
    Handler,
    ignore_missing,
    managed_tags,
    read_or_none,
)


class TaggedEc2Handler(Handler):
    """find() by tag; subclasses say what to describe and how to create."""

    find_by_tag = True
    resource_type: str  # TagSpecifications ResourceType
    describe: str  # describe_* operation
    result_key: str  # list key in its response
    id_key: str

    def described(self, ctx: Context, rid: str | None) -> dict[str, Any] | None:
        """The resource as its describe call shows it, None when it is gone."""
        if not rid:
            return None
        got = read_or_none(lambda: getattr(ctx.client("ec2"), self.describe)(**{f"{self.id_key}s": [rid]}))
        items = [i for i in (got or {}).get(self.result_key, []) if i.get("State") not in ("deleted", "deleting")]
        return items[0] if items else None

    def live(self, item: dict[str, Any], d: Desired) -> dict[str, Any]:
        """What configure manages beyond the tags (subclasses add theirs)."""
        return {}

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        item = self.described(ctx, rid)
        if item is None:
            return None
        tags = {t["Key"]: t["Value"] for t in item.get("Tags", [])}
        return {**self.live(item, d), "tags": managed_tags(d, tags)}

    def find(self, ctx: Context, d: Desired) -> str | None:
        response = getattr(ctx.client("ec2"), self.describe)(
            Filters=[{"Name": f"tag:{URN_TAG}", "Values": [d.urn_tag]}])
        for item in response[self.result_key]:
            if item.get("State") not in ("deleted", "deleting"):
                return item[self.id_key]
        return None

    def tag_specs(self, d: Desired) -> list[dict[str, Any]]:
        return [{"ResourceType": self.resource_type, "Tags": d.tag_list(with_urn=True)}]

    def retag(self, ctx: Context, rid: str, d: Desired) -> None:
        ctx.client("ec2").create_tags(Resources=[rid], Tags=d.tag_list(with_urn=True))


class VpcHandler(TaggedEc2Handler):
    type = "aws:ec2/vpc:Vpc"
    replace_on = ("cidrBlock", "instanceTenancy")
    resource_type, describe, result_key, id_key = "vpc", "describe_vpcs", "Vpcs", "VpcId"

    def make(self, ctx: Context, d: Desired) -> str:
        return ctx.client("ec2").create_vpc(CidrBlock=d.get("cidrBlock"),
                                            TagSpecifications=self.tag_specs(d))["Vpc"]["VpcId"]

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        ec2 = ctx.client("ec2")
        ec2.modify_vpc_attribute(VpcId=rid, EnableDnsSupport={"Value": bool(d.get("enableDnsSupport", True))})
        ec2.modify_vpc_attribute(VpcId=rid, EnableDnsHostnames={"Value": bool(d.get("enableDnsHostnames", False))})
        if olds is not None:
            self.retag(ctx, rid, d)
        groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [rid]},
                                                       {"Name": "group-name", "Values": ["default"]}])
        tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [rid]},
                                                    {"Name": "association.main", "Values": ["true"]}])
        return {"arn": f"arn:aws:ec2:{ctx.region}:{ctx.account_id}:vpc/{rid}",
                "defaultSecurityGroupId": next((g["GroupId"] for g in groups["SecurityGroups"]), ""),
                "mainRouteTableId": next((t["RouteTableId"] for t in tables["RouteTables"]), ""),
                "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("ec2").delete_vpc(VpcId=rid))


class SubnetHandler(TaggedEc2Handler):
    type = "aws:ec2/subnet:Subnet"
    replace_on = ("vpcId", "cidrBlock", "availabilityZone")
    resource_type, describe, result_key, id_key = "subnet", "describe_subnets", "Subnets", "SubnetId"
    read_defaults = {"mapPublicIpOnLaunch": False}

    def live(self, item: dict[str, Any], d: Desired) -> dict[str, Any]:
        return {"mapPublicIpOnLaunch": item.get("MapPublicIpOnLaunch", False)}

    def make(self, ctx: Context, d: Desired) -> str:
        args = {"VpcId": d.get("vpcId"), "CidrBlock": d.get("cidrBlock"), "TagSpecifications": self.tag_specs(d)}
        if d.get("availabilityZone"):
            args["AvailabilityZone"] = d.get("availabilityZone")
        return ctx.client("ec2").create_subnet(**args)["Subnet"]["SubnetId"]

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        ec2 = ctx.client("ec2")
        ec2.modify_subnet_attribute(SubnetId=rid,
                                    MapPublicIpOnLaunch={"Value": bool(d.get("mapPublicIpOnLaunch", False))})
        if olds is not None:
            self.retag(ctx, rid, d)
        subnet = ec2.describe_subnets(SubnetIds=[rid])["Subnets"][0]
        return {"arn": f"arn:aws:ec2:{ctx.region}:{ctx.account_id}:subnet/{rid}",
                "availabilityZone": subnet["AvailabilityZone"], "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("ec2").delete_subnet(SubnetId=rid))


class RouteTableHandler(TaggedEc2Handler):
    type = "aws:ec2/routeTable:RouteTable"
    replace_on = ("vpcId",)
    resource_type, describe, result_key, id_key = "route-table", "describe_route_tables", "RouteTables", "RouteTableId"

    def make(self, ctx: Context, d: Desired) -> str:
        return ctx.client("ec2").create_route_table(VpcId=d.get("vpcId"), TagSpecifications=self.tag_specs(d))[
            "RouteTable"]["RouteTableId"]

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        if olds is not None:
            self.retag(ctx, rid, d)
        return {"arn": f"arn:aws:ec2:{ctx.region}:{ctx.account_id}:route-table/{rid}", "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("ec2").delete_route_table(RouteTableId=rid))


class RouteTableAssociationHandler(Handler):
    """Found by the (route table, subnet) pair it joins."""

    type = "aws:ec2/routeTableAssociation:RouteTableAssociation"
    replace_on = ("subnetId", "gatewayId", "routeTableId")

    def find(self, ctx: Context, d: Desired) -> str | None:
        tables = ctx.client("ec2").describe_route_tables(RouteTableIds=[d.get("routeTableId")])["RouteTables"]
        for table in tables:
            for assoc in table.get("Associations", []):
                if assoc.get("SubnetId") == d.get("subnetId"):
                    return assoc["RouteTableAssociationId"]
        return None

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        return None if self.find(ctx, d) is None else {}

    def make(self, ctx: Context, d: Desired) -> str:
        return ctx.client("ec2").associate_route_table(RouteTableId=d.get("routeTableId"),
                                                       SubnetId=d.get("subnetId"))["AssociationId"]

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("ec2").disassociate_route_table(AssociationId=rid),
                       "InvalidAssociationID.NotFound")


def ip_permissions(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pulumi_aws inline rules -> EC2 IpPermissions."""
    perms = []
    for rule in rules or []:
        perm: dict[str, Any] = {"IpProtocol": str(rule.get("protocol", "-1"))}
        if perm["IpProtocol"] != "-1":
            perm["FromPort"], perm["ToPort"] = int(rule.get("fromPort", 0)), int(rule.get("toPort", 0))
        if rule.get("cidrBlocks"):
            perm["IpRanges"] = [{"CidrIp": c} for c in rule["cidrBlocks"]]
        if rule.get("ipv6CidrBlocks"):
            perm["Ipv6Ranges"] = [{"CidrIpv6": c} for c in rule["ipv6CidrBlocks"]]
        if rule.get("securityGroups"):
            perm["UserIdGroupPairs"] = [{"GroupId": g} for g in rule["securityGroups"]]
        perms.append(perm)
    return perms


def _canonical(perms: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(p, sort_keys=True) for p in perms)


def rules_of(perms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """EC2 IpPermissions -> pulumi_aws inline rules (the inverse of ``ip_permissions``)."""
    rules = []
    for perm in perms:
        rule: dict[str, Any] = {"protocol": perm.get("IpProtocol", "-1")}
        if "FromPort" in perm:
            rule["fromPort"], rule["toPort"] = perm["FromPort"], perm.get("ToPort")
        for key, field, inner in (("cidrBlocks", "IpRanges", "CidrIp"), ("ipv6CidrBlocks", "Ipv6Ranges", "CidrIpv6"),
                                  ("securityGroups", "UserIdGroupPairs", "GroupId")):
            if perm.get(field):
                rule[key] = [r[inner] for r in perm[field]]
        rules.append(rule)
    return rules


def _strip(perms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Described rules in the shape they are authorized with."""
    keep = ("IpProtocol", "FromPort", "ToPort", "IpRanges", "Ipv6Ranges", "UserIdGroupPairs")
    out = []
    for perm in perms:
        p = {k: v for k, v in perm.items() if k in keep and v not in ([], None)}
        if "UserIdGroupPairs" in p:
            p["UserIdGroupPairs"] = [{"GroupId": g["GroupId"]} for g in p["UserIdGroupPairs"]]
        if "IpRanges" in p:
            p["IpRanges"] = [{"CidrIp": r["CidrIp"]} for r in p["IpRanges"]]
        out.append(p)
    return out


class SecurityGroupHandler(TaggedEc2Handler):
    """Inline ingress/egress are authoritative: rules not declared are revoked
    (including the allow-all egress EC2 adds to every new group)."""

    type = "aws:ec2/securityGroup:SecurityGroup"
    replace_on = ("vpcId", "name", "namePrefix", "description")
    resource_type, describe, result_key, id_key = ("security-group", "describe_security_groups",
                                                   "SecurityGroups", "GroupId")

    def live(self, item: dict[str, Any], d: Desired) -> dict[str, Any]:
        live = {}
        for direction, key in (("ingress", "IpPermissions"), ("egress", "IpPermissionsEgress")):
            current = _strip(item.get(key, []))
            same = _canonical(current) == _canonical(ip_permissions(d.get(direction, [])))
            live[direction] = d.get(direction, []) if same else rules_of(current)  # order is not drift
        return live

    def make(self, ctx: Context, d: Desired) -> str:
        return ctx.client("ec2").create_security_group(
            GroupName=d.physical_name(), Description=d.get("description", "Managed by Pulumi"),
            VpcId=d.get("vpcId"), TagSpecifications=self.tag_specs(d))["GroupId"]

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        ec2 = ctx.client("ec2")
        group = ec2.describe_security_groups(GroupIds=[rid])["SecurityGroups"][0]
        for direction, current_key, revoke, authorize in (
                ("ingress", "IpPermissions", ec2.revoke_security_group_ingress, ec2.authorize_security_group_ingress),
                ("egress", "IpPermissionsEgress", ec2.revoke_security_group_egress,
                 ec2.authorize_security_group_egress)):
            current, wanted = _strip(group.get(current_key, [])), ip_permissions(d.get(direction, []))
            stale = [p for p in current if p not in wanted]
            missing = [p for p in wanted if p not in current]
            if stale:
                revoke(GroupId=rid, IpPermissions=stale)
            if missing:
                authorize(GroupId=rid, IpPermissions=missing)
        if olds is not None:
            self.retag(ctx, rid, d)
        return {"arn": f"arn:aws:ec2:{ctx.region}:{ctx.account_id}:security-group/{rid}",
                "name": group["GroupName"], "ownerId": group.get("OwnerId", ctx.account_id), "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("ec2").delete_security_group(GroupId=rid), "InvalidGroup.NotFound")


class VpcEndpointHandler(TaggedEc2Handler):
    type = "aws:ec2/vpcEndpoint:VpcEndpoint"
    replace_on = ("vpcId", "serviceName", "vpcEndpointType", "subnetIds", "routeTableIds", "securityGroupIds",
                  "privateDnsEnabled")
    resource_type, describe, result_key, id_key = ("vpc-endpoint", "describe_vpc_endpoints", "VpcEndpoints",
                                                   "VpcEndpointId")

    def make(self, ctx: Context, d: Desired) -> str:
        args: dict[str, Any] = {"VpcId": d.get("vpcId"), "ServiceName": d.get("serviceName"),
                                "VpcEndpointType": d.get("vpcEndpointType", "Gateway"),
                                "TagSpecifications": self.tag_specs(d)}
        for key, arg in (("routeTableIds", "RouteTableIds"), ("subnetIds", "SubnetIds"),
                         ("securityGroupIds", "SecurityGroupIds")):
            if d.get(key):
                args[arg] = list(d.get(key))
        if d.get("privateDnsEnabled") is not None:
            args["PrivateDnsEnabled"] = bool(d.get("privateDnsEnabled"))
        return ctx.client("ec2").create_vpc_endpoint(**args)["VpcEndpoint"]["VpcEndpointId"]

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        if olds is not None:
            self.retag(ctx, rid, d)
        return {"arn": f"arn:aws:ec2:{ctx.region}:{ctx.account_id}:vpc-endpoint/{rid}", "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("ec2").delete_vpc_endpoints(VpcEndpointIds=[rid]))


HANDLERS = (VpcHandler(), SubnetHandler(), RouteTableHandler(), RouteTableAssociationHandler(),
            SecurityGroupHandler(), VpcEndpointHandler())
