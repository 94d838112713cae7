"""EC2 networking: VPCs, subnets, route tables (+ associations), security
groups with inline rules, ingress rules as resources of their own, a VPC's
default security group, flow logs, VPC endpoints (with their policies). None
of them has a unique name, so a crashed create is found again by the
``tenantctl:urn`` tag it was created with (a default group by its VPC, an
ingress rule by what it admits)."""

from __future__ import annotations

import json
from typing import Any

from tenantctl.engines.local.handlers.base import (
    URN_TAG,
    Context,
    Desired,
    Handler,
    as_int,
    ignore_missing,
    managed_tags,
    read_or_none,
)


class TaggedEc2Handler(Handler):
    """find() by tag; subclasses say what to describe and how to create."""

    find_when_recovering = True
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
        acls = ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [rid]},
                                                  {"Name": "default", "Values": ["true"]}])
        return {"arn": ctx.arn("ec2", f"vpc/{rid}"),
                "defaultSecurityGroupId": next((g["GroupId"] for g in groups["SecurityGroups"]), ""),
                "mainRouteTableId": next((t["RouteTableId"] for t in tables["RouteTables"]), ""),
                "defaultNetworkAclId": next((a["NetworkAclId"] for a in acls["NetworkAcls"]), ""),
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
        return {"arn": ctx.arn("ec2", f"subnet/{rid}"),
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
        return {"arn": ctx.arn("ec2", f"route-table/{rid}"), "tagsAll": d.tags()}

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


def sync_rules(ec2: Any, rid: str, d: Desired) -> dict[str, Any]:
    """Make the group's rules those declared, per direction declared: rules not
    declared are revoked (including the allow-all egress EC2 adds to every new
    group). A direction the program leaves out is not managed here: its rules
    are resources of their own (SecurityGroupIngressRule). Returns the group."""
    group = ec2.describe_security_groups(GroupIds=[rid])["SecurityGroups"][0]
    for direction, current_key, revoke, authorize in (
            ("ingress", "IpPermissions", ec2.revoke_security_group_ingress, ec2.authorize_security_group_ingress),
            ("egress", "IpPermissionsEgress", ec2.revoke_security_group_egress, ec2.authorize_security_group_egress)):
        if direction not in d.inputs:
            continue
        current, wanted = _strip(group.get(current_key, [])), ip_permissions(d.get(direction, []))
        stale = [p for p in current if p not in wanted]
        missing = [p for p in wanted if p not in current]
        if stale:
            revoke(GroupId=rid, IpPermissions=stale)
        if missing:
            authorize(GroupId=rid, IpPermissions=missing)
    return group


class SecurityGroupHandler(TaggedEc2Handler):
    """Inline ingress/egress are authoritative (``sync_rules``)."""

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
        group = sync_rules(ctx.client("ec2"), rid, d)
        if olds is not None:
            self.retag(ctx, rid, d)
        return {"arn": ctx.arn("ec2", f"security-group/{rid}"),
                "name": group["GroupName"], "ownerId": group.get("OwnerId", ctx.account_id), "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("ec2").delete_security_group(GroupId=rid), "InvalidGroup.NotFound")


class DefaultSecurityGroupHandler(SecurityGroupHandler):
    """The group EC2 gives every VPC, adopted (never created) and held to the
    declared rules; deleting the resource leaves the group to its VPC, as
    Pulumi does. Read (refresh) like any security group."""

    type = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
    replace_on = ("vpcId",)
    find_when_recovering = False

    def find(self, ctx: Context, d: Desired) -> str | None:
        groups = ctx.client("ec2").describe_security_groups(Filters=[
            {"Name": "vpc-id", "Values": [d.get("vpcId")]}, {"Name": "group-name", "Values": ["default"]}])
        return next((g["GroupId"] for g in groups["SecurityGroups"]), None)

    def make(self, ctx: Context, d: Desired) -> str:
        rid = self.find(ctx, d)
        if rid is None:
            raise LookupError(f"VPC {d.get('vpcId')} has no default security group")
        return rid

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        group = sync_rules(ctx.client("ec2"), rid, d)
        self.retag(ctx, rid, d)
        return {"arn": ctx.arn("ec2", f"security-group/{rid}"), "name": "default",
                "ownerId": group.get("OwnerId", ctx.account_id), "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        return None


class SecurityGroupIngressRuleHandler(Handler):
    """One ingress rule (id: its ``sgr-`` id), found again by what it admits."""

    type = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
    replace_on = ("securityGroupId", "referencedSecurityGroupId", "cidrIpv4", "cidrIpv6", "prefixListId",
                  "ipProtocol", "fromPort", "toPort")

    @staticmethod
    def _permission(d: Desired) -> dict[str, Any]:
        perm: dict[str, Any] = {"IpProtocol": str(d.get("ipProtocol"))}
        if perm["IpProtocol"] != "-1":
            perm["FromPort"], perm["ToPort"] = as_int(d.get("fromPort")), as_int(d.get("toPort"))
        extra = {"Description": d.get("description")} if d.get("description") else {}
        if d.get("referencedSecurityGroupId"):
            perm["UserIdGroupPairs"] = [{"GroupId": d.get("referencedSecurityGroupId"), **extra}]
        if d.get("cidrIpv4"):
            perm["IpRanges"] = [{"CidrIp": d.get("cidrIpv4"), **extra}]
        if d.get("cidrIpv6"):
            perm["Ipv6Ranges"] = [{"CidrIpv6": d.get("cidrIpv6"), **extra}]
        if d.get("prefixListId"):
            perm["PrefixListIds"] = [{"PrefixListId": d.get("prefixListId"), **extra}]
        return perm

    def find(self, ctx: Context, d: Desired) -> str | None:
        rules = ctx.client("ec2").describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [d.get("securityGroupId")]}])["SecurityGroupRules"]
        for rule in rules:
            if rule.get("IsEgress") or str(rule.get("IpProtocol")) != str(d.get("ipProtocol")):
                continue
            if str(d.get("ipProtocol")) != "-1" and (rule.get("FromPort"), rule.get("ToPort")) != (
                    as_int(d.get("fromPort")), as_int(d.get("toPort"))):
                continue
            source = ((rule.get("ReferencedGroupInfo") or {}).get("GroupId"), rule.get("CidrIpv4"),
                      rule.get("CidrIpv6"), rule.get("PrefixListId"))
            if source == (d.get("referencedSecurityGroupId"), d.get("cidrIpv4"), d.get("cidrIpv6"),
                          d.get("prefixListId")):
                return rule["SecurityGroupRuleId"]
        return None

    def make(self, ctx: Context, d: Desired) -> str:
        response = ctx.client("ec2").authorize_security_group_ingress(
            GroupId=d.get("securityGroupId"), IpPermissions=[self._permission(d)],
            TagSpecifications=[{"ResourceType": "security-group-rule", "Tags": d.tag_list()}])
        return response["SecurityGroupRules"][0]["SecurityGroupRuleId"]

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        if olds is not None and d.tags():
            ctx.client("ec2").create_tags(Resources=[rid], Tags=d.tag_list())
        return {"arn": ctx.arn("ec2", f"security-group-rule/{rid}"),
                "securityGroupRuleId": rid, "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("ec2").revoke_security_group_ingress(
            GroupId=d.get("securityGroupId"), SecurityGroupRuleIds=[rid]),
            "InvalidGroup.NotFound", "InvalidPermission.NotFound", "InvalidSecurityGroupRuleId.NotFound")


DEFAULT_RULE = 32767  # the catch-all deny AWS keeps last in every network ACL


class DefaultNetworkAclHandler(Handler):
    """A VPC's default network ACL (id: the ACL's), adopted and held to the
    declared entries; deleting the resource leaves it to its VPC."""

    type = "aws:ec2/defaultNetworkAcl:DefaultNetworkAcl"
    replace_on = ("defaultNetworkAclId",)

    def find(self, ctx: Context, d: Desired) -> str | None:
        return d.get("defaultNetworkAclId")

    make = find

    @staticmethod
    def _entry(rule: dict[str, Any], egress: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"RuleNumber": as_int(rule["ruleNo"]), "Protocol": str(rule["protocol"]),
                                 "RuleAction": rule["action"], "Egress": egress,
                                 "CidrBlock": rule.get("cidrBlock") or "0.0.0.0/0"}
        if entry["Protocol"] != "-1":
            entry["PortRange"] = {"From": as_int(rule.get("fromPort", 0)), "To": as_int(rule.get("toPort", 0))}
        return entry

    @staticmethod
    def _rule(entry: dict[str, Any]) -> dict[str, Any]:
        """An EC2 entry as pulumi_aws declares it (the inverse of ``_entry``)."""
        ports = entry.get("PortRange") or {"From": 0, "To": 0}
        return {"ruleNo": entry["RuleNumber"], "protocol": entry["Protocol"], "action": entry["RuleAction"],
                "cidrBlock": entry.get("CidrBlock"), "fromPort": ports["From"], "toPort": ports["To"]}

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        """Its entries (every VPC's subnets fall back on it, so a rule added out of
        band opens the whole network) and tags; order is not drift."""
        acl = read_or_none(lambda: ctx.client("ec2").describe_network_acls(NetworkAclIds=[rid or self.find(ctx, d)]))
        if not acl or not acl["NetworkAcls"]:
            return None
        acl = acl["NetworkAcls"][0]
        live: dict[str, Any] = {}
        for key, egress in (("ingress", False), ("egress", True)):
            current = [e for e in acl.get("Entries", []) if e["Egress"] is egress and e["RuleNumber"] != DEFAULT_RULE]
            declared = [self._entry(rule, egress) for rule in d.get(key, [])]
            same = _canonical([self._rule(e) for e in current]) == _canonical([self._rule(e) for e in declared])
            live[key] = d.get(key, []) if same else [self._rule(e) for e in current]
        live["tags"] = managed_tags(d, {t["Key"]: t["Value"] for t in acl.get("Tags", [])})
        return live

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        ec2 = ctx.client("ec2")
        acl = ec2.describe_network_acls(NetworkAclIds=[rid])["NetworkAcls"][0]
        for e in acl.get("Entries", []):
            if e["RuleNumber"] != DEFAULT_RULE:
                ec2.delete_network_acl_entry(NetworkAclId=rid, RuleNumber=e["RuleNumber"], Egress=e["Egress"])
        for key, egress in (("ingress", False), ("egress", True)):
            for rule in d.get(key, []):
                ec2.create_network_acl_entry(NetworkAclId=rid, **self._entry(rule, egress))
        if d.tags():
            ec2.create_tags(Resources=[rid], Tags=d.tag_list())
        return {"arn": ctx.arn("ec2", f"network-acl/{rid}"), "vpcId": acl["VpcId"],
                "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        return None


class FlowLogHandler(TaggedEc2Handler):
    """A flow log of one VPC into a CloudWatch Logs group (or S3); immutable, so
    any change replaces it."""

    type = "aws:ec2/flowLog:FlowLog"
    replace_on = ("vpcId", "subnetId", "eniId", "trafficType", "logDestination", "logDestinationType",
                  "logGroupName", "iamRoleArn", "maxAggregationInterval", "logFormat")
    resource_type, describe, result_key, id_key = "vpc-flow-log", "describe_flow_logs", "FlowLogs", "FlowLogId"

    def make(self, ctx: Context, d: Desired) -> str:
        kind = d.get("logDestinationType", "cloud-watch-logs")
        args: dict[str, Any] = {"ResourceIds": [d.get("vpcId")], "ResourceType": "VPC",
                                "TrafficType": d.get("trafficType"), "LogDestinationType": kind,
                                "TagSpecifications": self.tag_specs(d)}
        if kind == "cloud-watch-logs":  # by name: what moto checks the group's existence with
            args["LogGroupName"] = d.get("logGroupName") or str(d.get("logDestination")).split(":log-group:", 1)[
                -1].removesuffix(":*")
        else:
            args["LogDestination"] = d.get("logDestination")
        if d.get("iamRoleArn"):
            args["DeliverLogsPermissionArn"] = d.get("iamRoleArn")
        if d.get("maxAggregationInterval"):
            args["MaxAggregationInterval"] = as_int(d.get("maxAggregationInterval"))
        response = ctx.client("ec2").create_flow_logs(**args)
        if response.get("Unsuccessful"):
            raise RuntimeError(f"flow log refused: {response['Unsuccessful']}")
        return response["FlowLogIds"][0]

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        if olds is not None:
            self.retag(ctx, rid, d)
        return {"arn": ctx.arn("ec2", f"vpc-flow-log/{rid}"), "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("ec2").delete_flow_logs(FlowLogIds=[rid]))


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
        if d.get("policy"):
            args["PolicyDocument"] = d.get("policy")
        return ctx.client("ec2").create_vpc_endpoint(**args)["VpcEndpoint"]["VpcEndpointId"]

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        if olds is not None:
            ec2 = ctx.client("ec2")
            if d.get("policy"):
                ec2.modify_vpc_endpoint(VpcEndpointId=rid, PolicyDocument=d.get("policy"))
            elif olds.get("policy"):  # dropped: back to AWS's default full access, as AWS does
                ec2.modify_vpc_endpoint(VpcEndpointId=rid, ResetPolicy=True)
            self.retag(ctx, rid, d)
        return {"arn": ctx.arn("ec2", f"vpc-endpoint/{rid}"), "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("ec2").delete_vpc_endpoints(VpcEndpointIds=[rid]))


HANDLERS = (VpcHandler(), SubnetHandler(), RouteTableHandler(), RouteTableAssociationHandler(),
            SecurityGroupHandler(), DefaultSecurityGroupHandler(), SecurityGroupIngressRuleHandler(),
            DefaultNetworkAclHandler(), FlowLogHandler(), VpcEndpointHandler())
