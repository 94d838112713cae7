"""Network and database-instance posture of one tenant, read from the live
resources of the network and instance its store lives in (the platform's for a
pooled tenant, its own for a dedicated one):

- ``vpc-endpoint-policy``: every VPC endpoint has a policy of its own: the S3
  gateway names buckets and ``aws:ResourceAccount``, interface endpoints
  confine principals or resources to an account (``policy.endpoint_policy_problems``);
- ``vpc-flow-logs``: an active flow log of ALL traffic on the VPC;
- ``default-security-group``: the VPC's default security group has no rules;
- ``db-ingress``: the database's security groups admit PostgreSQL from
  security groups only (no address range), among them the tenant's own
  (dedicated) or its cell's pooled-clients group (pooled);
- ``rds-hardening``: IAM database authentication, the ``postgresql`` log
  exported, enhanced monitoring, a parameter group of its own pinning
  ``rds.force_ssl=1``; the shared instance in two AZs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import Any

from tenantctl import naming
from tenantctl.checks.results import CheckResult, run_each
from tenantctl.policy import (
    POSTGRES_PORT,
    REQUIRED_DB_LOG_EXPORTS,
    REQUIRED_DB_PARAMETERS,
    endpoint_policy_problems,
)

AREA = "network"
NAMES = ("vpc-endpoint-policy", "vpc-flow-logs", "default-security-group", "db-ingress", "rds-hardening")


def _admits_postgres(perm: dict[str, Any]) -> bool:
    if str(perm.get("IpProtocol")) == "-1":
        return True
    return int(perm.get("FromPort", -1)) <= POSTGRES_PORT <= int(perm.get("ToPort", -1))


class _NetworkChecks:
    def __init__(self, record: Any, platform: dict[str, Any], clients: Callable[..., Any]) -> None:
        self.record, self.tid, self.platform = record, record.tenant_id, platform
        self.pooled = record.tier.value == "pooled"
        self._client = lambda service: clients(service, region=record.region)

    @cached_property
    def instance(self) -> dict[str, Any]:
        # A pooled tenant's store is its cell's shared instance.
        ident = naming.cell_rds_identifier(self.record.cell) if self.pooled else naming.rds_identifier(self.tid)
        return self._client("rds").describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]

    @cached_property
    def vpc_id(self) -> str:
        return self.instance["DBSubnetGroup"]["VpcId"]

    def vpc_endpoint_policy(self) -> tuple[bool, str]:
        endpoints = self._client("ec2").describe_vpc_endpoints(
            Filters=[{"Name": "vpc-id", "Values": [self.vpc_id]}])["VpcEndpoints"]
        if not endpoints:
            return False, f"VPC {self.vpc_id} has no endpoints"
        problems = [f"{e['ServiceName']}: {p}" for e in endpoints
                    for p in endpoint_policy_problems(json.loads(e.get("PolicyDocument") or "{}"), e["ServiceName"])]
        return not problems, "; ".join(problems) or f"{len(endpoints)} endpoints of {self.vpc_id}, each scoped"

    def vpc_flow_logs(self) -> tuple[bool, str]:
        logs = self._client("ec2").describe_flow_logs(
            Filters=[{"Name": "resource-id", "Values": [self.vpc_id]}])["FlowLogs"]
        good = [f for f in logs if f.get("TrafficType") == "ALL" and f.get("FlowLogStatus") == "ACTIVE"
                and f.get("DeliverLogsStatus") != "FAILED"]
        if not good:
            return False, f"VPC {self.vpc_id} has no active flow log of ALL traffic"
        return True, f"VPC {self.vpc_id}: ALL traffic to {good[0].get('LogGroupName') or good[0].get('LogDestination')}"

    def default_security_group(self) -> tuple[bool, str]:
        groups = self._client("ec2").describe_security_groups(Filters=[
            {"Name": "vpc-id", "Values": [self.vpc_id]}, {"Name": "group-name", "Values": ["default"]},
        ])["SecurityGroups"]
        loose = [f"{g['GroupId']} keeps {len(g.get('IpPermissions', []))} ingress and "
                 f"{len(g.get('IpPermissionsEgress', []))} egress rule(s)"
                 for g in groups if g.get("IpPermissions") or g.get("IpPermissionsEgress")]
        return not loose, "; ".join(loose) or f"VPC {self.vpc_id}: default group without rules"

    def db_ingress(self) -> tuple[bool, str]:
        ec2 = self._client("ec2")
        ids = [g["VpcSecurityGroupId"] for g in self.instance.get("VpcSecurityGroups", [])]
        groups = ec2.describe_security_groups(GroupIds=ids)["SecurityGroups"] if ids else []
        problems, sources = [], set()
        for g in groups:
            for perm in g.get("IpPermissions", []):
                if not _admits_postgres(perm):
                    continue
                ranges = ([r["CidrIp"] for r in perm.get("IpRanges", [])] + [r["CidrIpv6"] for r in perm.get(
                    "Ipv6Ranges", [])] + [p["PrefixListId"] for p in perm.get("PrefixListIds", [])])
                if ranges:
                    problems.append(f"{g['GroupId']} admits PostgreSQL from {', '.join(ranges)}")
                sources |= {p["GroupId"] for p in perm.get("UserIdGroupPairs", [])}
        if self.pooled:
            group = self.platform.get("pooled_clients_security_group_id")
            admitted, missing = group if group in sources else None, f"the cell's pooled-clients group {group} is not"
        else:
            own = ec2.describe_security_groups(Filters=[
                {"Name": "group-id", "Values": sorted(sources)},
                {"Name": "tag:tenant", "Values": [self.tid]}])["SecurityGroups"] if sources else []
            admitted, missing = own[0]["GroupId"] if own else None, f"no security group of tenant {self.tid} is"
        if admitted is None:
            problems.append(f"{missing} admitted")
        return not problems, "; ".join(problems) or (
            f"PostgreSQL from {len(sources)} security group(s) only, {admitted} among them")

    def rds_hardening(self) -> tuple[bool, str]:
        db, problems = self.instance, []
        if not db.get("IAMDatabaseAuthenticationEnabled"):
            problems.append("IAM database authentication off")
        missing = set(REQUIRED_DB_LOG_EXPORTS) - set(db.get("EnabledCloudwatchLogsExports") or [])
        if missing:
            problems.append(f"{', '.join(sorted(missing))} log not exported")
        if not db.get("MonitoringInterval"):
            problems.append("enhanced monitoring off")
        groups = [g["DBParameterGroupName"] for g in db.get("DBParameterGroups", [])]
        if not groups or groups[0].startswith("default."):
            problems.append(f"default parameter group {', '.join(groups)}")
        else:
            params = self._client("rds").describe_db_parameters(DBParameterGroupName=groups[0])["Parameters"]
            pinned = {p["ParameterName"]: str(p.get("ParameterValue")) for p in params}
            problems += [f"{groups[0]} does not pin {k}={v}" for k, v in REQUIRED_DB_PARAMETERS.items()
                         if pinned.get(k) != v]
        if self.pooled and not db.get("MultiAZ"):
            problems.append("the shared instance is single-AZ")
        ident = db["DBInstanceIdentifier"]
        return not problems, "; ".join(f"{ident}: {p}" for p in problems) or (
            f"{ident}: IAM auth, logs exported, monitored, {groups[0]} forces TLS"
            + (", Multi-AZ" if db.get("MultiAZ") else ""))


def network_checks(record: Any, platform: dict[str, Any], clients: Callable[..., Any]) -> Iterator[CheckResult]:
    """``clients(service, region=)``: the target's AWS clients (``Workspace.client``)."""
    checks = _NetworkChecks(record, platform, clients)
    yield from run_each(AREA, [(name, getattr(checks, name.replace("-", "_"))) for name in NAMES])
