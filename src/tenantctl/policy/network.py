"""The network: no ingress open to the world, PostgreSQL admitted from security
groups only, VPC endpoint policies confined to the account, flow logs of all
traffic, the default security group taken over."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from tenantctl import naming
from tenantctl.policy.plan import POSTGRES_PORT, UNKNOWN, Plan, PlannedResource, as_doc, as_list, known, rule

_OPEN = ("0.0.0.0/0", "::/0")


@rule("no-open-ingress")
def _no_open_ingress(plan: Plan):
    def opened(r: PlannedResource, rule_inputs: dict, *keys: str) -> Iterator[tuple[str, str]]:
        cidrs = [c for key in keys for c in as_list(rule_inputs.get(key))]
        if not all(map(known, cidrs)):
            plan.unknown(r, "ingress CIDR")
        for cidr in cidrs:
            if cidr in _OPEN:
                yield r.name, f"ingress open to {cidr} on port {rule_inputs.get('fromPort')}"

    for r in plan.of("aws:ec2/securityGroup:SecurityGroup"):
        ingress = r.inputs.get("ingress") or []
        if not known(ingress):
            plan.unknown(r, "ingress")
            continue
        for ing in ingress:
            yield from opened(r, ing, "cidrBlocks", "ipv6CidrBlocks")
    # The same rule written as separate rule resources.
    for r in plan.of("aws:ec2/securityGroupRule:SecurityGroupRule"):
        if r.inputs.get("type") == "ingress":
            yield from opened(r, r.inputs, "cidrBlocks", "ipv6CidrBlocks")
    for r in plan.of("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        yield from opened(r, r.inputs, "cidrIpv4", "cidrIpv6")


# (in whichever partition the endpoint is)
_EVERY_BUCKET = ("arn:aws:s3:::*", "arn:aws:s3:::*/*")


def endpoint_policy_problems(doc: dict, service_name: str) -> list[str]:
    """What is wrong with a VPC endpoint's policy (``doc``; {} when there is none):
    missing (AWS's default is every action on every resource of every account),
    an Allow of every action, or resources of any account: the S3 gateway must
    name buckets and ``aws:ResourceAccount``, an interface endpoint must confine
    principals or resources to an account."""
    statements = as_list(doc.get("Statement"))
    if not statements:
        return ["no endpoint policy: AWS's default allows every action on every resource of every account"]
    s3 = service_name.endswith(".s3")
    problems = []
    for stmt in statements:
        if stmt.get("Effect") != "Allow":
            continue
        sid = stmt.get("Sid", "?")
        actions = [str(a) for a in as_list(stmt.get("Action"))]
        resources = [str(r) for r in as_list(stmt.get("Resource"))]
        keys = {k.lower() for op in (stmt.get("Condition") or {}).values() if isinstance(op, dict) for k in op}
        if "*" in actions or "NotAction" in stmt or "NotResource" in stmt:
            problems.append(f"statement {sid} allows every action")
        if s3:
            if any(r == "*" or any(naming.in_any_partition(r, every) for every in _EVERY_BUCKET) for r in resources):
                problems.append(f"statement {sid} reaches every bucket")
            if "aws:resourceaccount" not in keys:
                problems.append(f"statement {sid} has no aws:ResourceAccount condition")
        elif not keys & {"aws:resourceaccount", "aws:principalaccount", "aws:resourceorgid", "aws:principalorgid"} \
                and "*" in resources:
            problems.append(f"statement {sid} is confined to no account")
    return problems


@rule("vpc-endpoint-policy")
def _vpc_endpoint_policy(plan: Plan):
    for r in plan.of("aws:ec2/vpcEndpoint:VpcEndpoint"):
        policy = r.inputs.get("policy")
        if policy == UNKNOWN:
            plan.unknown(r, "policy")
            continue
        for problem in endpoint_policy_problems(as_doc(policy), str(r.inputs.get("serviceName", ""))):
            yield r.name, problem


def _per_vpc(plan: Plan, typ: str, ok: Callable[[PlannedResource], bool], missing: str) -> Iterator[tuple[str, str]]:
    """Each VPC of the plan needs one ``typ`` resource passing ``ok`` (a VPC's id
    is not an input, so they are matched by count). Judged on a whole plan only:
    the resource comes after its VPC in an up."""
    if not plan.complete:
        return
    vpcs = list(plan.of("aws:ec2/vpc:Vpc"))
    good = [r for r in plan.of(typ) if known(r.inputs.get("vpcId")) or r.inputs.get("vpcId") == UNKNOWN]
    good = [r for r in good if ok(r)]
    for vpc in vpcs[len(good):]:
        yield vpc.name, missing


@rule("vpc-flow-logs")
def _vpc_flow_logs(plan: Plan):
    def complete(r: PlannedResource) -> bool:
        return r.inputs.get("trafficType") == "ALL" and bool(r.inputs.get("logDestination")
                                                               or r.inputs.get("logGroupName"))
    yield from _per_vpc(plan, "aws:ec2/flowLog:FlowLog", complete, "no flow log of ALL traffic")


@rule("default-security-group")
def _default_security_group(plan: Plan):
    groups = list(plan.of("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"))
    for g in groups:
        if g.inputs.get("ingress") or g.inputs.get("egress"):
            yield g.name, "the default security group keeps rules (it must have none)"
    yield from _per_vpc(plan, "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup", lambda g: True,
                        "default security group not taken over (AWS's allows all egress and traffic within the group)")


def _covers_postgres(protocol: Any, from_port: Any, to_port: Any) -> bool:
    if str(protocol) in ("-1", "all"):
        return True
    try:
        return int(float(from_port)) <= POSTGRES_PORT <= int(float(to_port))
    except (TypeError, ValueError):
        return False


@rule("db-ingress-from-groups")
def _db_ingress_from_groups(plan: Plan):
    """PostgreSQL is admitted from security groups (the tenants' app groups, the
    rotation function), never from an address range such as the whole VPC."""
    for r in plan.of("aws:ec2/securityGroup:SecurityGroup"):
        for ing in r.inputs.get("ingress") or []:
            ranges = as_list(ing.get("cidrBlocks")) + as_list(ing.get("ipv6CidrBlocks")) \
                + as_list(ing.get("prefixListIds"))
            if not all(map(known, ranges)):
                plan.unknown(r, "ingress source")
            if ranges and _covers_postgres(ing.get("protocol"), ing.get("fromPort"), ing.get("toPort")):
                yield r.name, f"PostgreSQL ingress from {', '.join(map(str, ranges))}, not from a security group"
    for r in plan.of("aws:ec2/securityGroupRule:SecurityGroupRule"):
        i = r.inputs
        ranges = as_list(i.get("cidrBlocks")) + as_list(i.get("ipv6CidrBlocks")) + as_list(i.get("prefixListIds"))
        if i.get("type") == "ingress" and ranges and _covers_postgres(i.get("protocol"), i.get("fromPort"),
                                                                      i.get("toPort")):
            yield r.name, f"PostgreSQL ingress from {', '.join(map(str, ranges))}, not from a security group"
    for r in plan.of("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        i = r.inputs
        ranges = [v for v in (i.get("cidrIpv4"), i.get("cidrIpv6"), i.get("prefixListId")) if v]
        if ranges and _covers_postgres(i.get("ipProtocol"), i.get("fromPort"), i.get("toPort")):
            yield r.name, f"PostgreSQL ingress from {', '.join(map(str, ranges))}, not from a security group"
