"""Preflight of a provision against the account walls of a cell: placement
(``tenantctl.placement``) runs it for each candidate cell, with that cell's
clients (its account, the tenant's region), and skips a cell whose account
would go over a quota; when no cell is left the provision is refused before
anything is created (no registry record, no stack file, no resource).

- **Account quotas** a tenant needs: VPCs per region (Service Quotas
  ``vpc/L-F678F1CE``), RDS DB instances (``rds:DescribeAccountAttributes``,
  else Service Quotas ``rds/L-7B6409FD``) for a dedicated tenant; IAM roles
  (``iam:GetAccountSummary``) for every tenant (a dedicated one needs a second,
  its rotation function's; each workspace one more). What the tenant already
  has (a re-run, an update) needs nothing more.
  When the account cannot say (an API the target lacks), AWS's default quota is
  assumed and reported as such. ``TENANTCTL_QUOTA_<NAME>`` (VPCS, DB_INSTANCES,
  IAM_ROLES) lowers a limit, e.g. to keep headroom for other workloads in the
  account.

Lifecycle rules and security-group rules are no wall: a cell's bucket holds one
rule per retention class (``CellSpec`` refuses a menu over S3's 1,000 rules),
and its database admits every pooled tenant through one pooled-clients group.
What bounds a cell's pooled tenants is ``max_pooled_tenants``. Each check is
one or a few calls, whatever the fleet size.

Two provisions racing for the last unit of a quota can both pass (the check
is a read); the later one then fails in the engine and converges on re-run or
deprovision like any failed apply.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenantctl import naming
from tenantctl.errors import QuotaExceeded
from tenantctl.models import TenantSpec, Tier

# AWS's default quotas, used only when the account cannot be asked.
DEFAULT_LIMITS = {"vpcs": 5, "db_instances": 40, "iam_roles": 1000}
VPC_QUOTA = ("vpc", "L-F678F1CE")
RDS_QUOTA = ("rds", "L-7B6409FD")


@dataclass(frozen=True)
class QuotaCheck:
    name: str  # vpcs | db_instances | iam_roles
    what: str  # what a person reads
    limit: int
    used: int
    needed: int
    source: str  # where the limit came from

    @property
    def ok(self) -> bool:
        return self.used + self.needed <= self.limit

    def explain(self) -> str:
        return (f"{self.what}: {self.used} of {self.limit} in use, the tenant needs {self.needed} more "
                f"(limit from {self.source})")


def _override(name: str, limit: int, source: str) -> tuple[int, str]:
    env = f"TENANTCTL_QUOTA_{name.upper()}"
    raw = os.environ.get(env)
    if raw:
        value = int(raw)
        if value < limit:
            return value, f"{env}={value} (the account allows {limit}, from {source})"
    return limit, source


def _limit(name: str, ask: Callable[[], tuple[float, str]]) -> tuple[int, str]:
    try:
        value, source = ask()
    except Exception as exc:  # noqa: BLE001 - an API the target lacks: AWS's default, said so
        value, source = DEFAULT_LIMITS[name], f"AWS's default ({type(exc).__name__} asking the account)"
    return _override(name, int(value), source)


def _count(pages: Any, key: str) -> int:
    return sum(len(page.get(key, [])) for page in pages)


def _exists(call: Callable[[], Any]) -> bool:
    from botocore.exceptions import ClientError

    try:
        call()
        return True
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if "NotFound" in code or "NoSuch" in code:
            return False
        raise


def vpc_check(spec: TenantSpec, client: Callable[[str], Any]) -> QuotaCheck:
    ec2 = client("ec2")

    def ask() -> tuple[float, str]:
        quota = client("service-quotas").get_service_quota(ServiceCode=VPC_QUOTA[0], QuotaCode=VPC_QUOTA[1])
        return quota["Quota"]["Value"], f"Service Quotas {VPC_QUOTA[0]}/{VPC_QUOTA[1]}"

    limit, source = _limit("vpcs", ask)
    used = _count(ec2.get_paginator("describe_vpcs").paginate(), "Vpcs")
    mine = ec2.describe_vpcs(Filters=[{"Name": "tag:tenant", "Values": [spec.id]}])["Vpcs"]
    return QuotaCheck("vpcs", f"VPCs in {spec.region}", limit, used, 0 if mine else 1, source)


def db_instance_check(spec: TenantSpec, client: Callable[[str], Any]) -> QuotaCheck:
    rds = client("rds")

    def ask() -> tuple[float, str]:
        try:
            quotas = rds.describe_account_attributes()["AccountQuotas"]
            return next(q["Max"] for q in quotas if q["AccountQuotaName"] == "DBInstances"), \
                "rds:DescribeAccountAttributes DBInstances"
        except Exception:  # noqa: BLE001 - then Service Quotas
            quota = client("service-quotas").get_service_quota(ServiceCode=RDS_QUOTA[0], QuotaCode=RDS_QUOTA[1])
            return quota["Quota"]["Value"], f"Service Quotas {RDS_QUOTA[0]}/{RDS_QUOTA[1]}"

    limit, source = _limit("db_instances", ask)
    used = _count(rds.get_paginator("describe_db_instances").paginate(), "DBInstances")
    ident = naming.rds_identifier(spec.id)
    mine = _exists(lambda: rds.describe_db_instances(DBInstanceIdentifier=ident))
    return QuotaCheck("db_instances", f"RDS DB instances in {spec.region}", limit, used, 0 if mine else 1, source)


def iam_role_check(spec: TenantSpec, client: Callable[[str], Any]) -> QuotaCheck:
    iam = client("iam")
    summary = iam.get_account_summary()["SummaryMap"]
    limit, source = _limit("iam_roles", lambda: (summary["RolesQuota"], "iam:GetAccountSummary RolesQuota"))
    used = int(summary["Roles"])
    # The tenant's role and one per workspace. Which exist already matters only at
    # the wall: below it, they all fit anyway (counted, not looked up).
    roles = [naming.iam_role_name(spec.id)] + [naming.ws_iam_role_name(spec.id, w.name) for w in spec.workspaces]
    needed = len(roles)
    if used + needed > limit:
        needed = sum(not _exists(lambda r=r: iam.get_role(RoleName=r)) for r in roles)
    if spec.tier is Tier.dedicated:  # its rotation function's execution role (named by AWS's application)
        function = naming.rotation_function_name(spec.id)
        needed += 0 if _exists(lambda: client("lambda").get_function(FunctionName=function)) else 1
    return QuotaCheck("iam_roles", "IAM roles in the account", limit, used, needed, source)


def checks(spec: TenantSpec, platform: dict[str, Any], clients: Callable[..., Any]) -> list[QuotaCheck]:
    """Every quota the tenant touches, read from the cell's account (no writes).
    ``platform``: the cell's outputs; ``clients(service, region=)``: the cell's
    clients (``Workspace.cell_clients``)."""

    def client(service: str) -> Any:
        return clients(service, region=spec.region)

    out = []
    if spec.tier is Tier.dedicated:
        out += [vpc_check(spec, client), db_instance_check(spec, client)]
    out.append(iam_role_check(spec, client))
    return out


def over(spec: TenantSpec, platform: dict[str, Any], clients: Callable[..., Any]) -> list[QuotaCheck]:
    """The quotas ``spec`` would exceed in the cell of ``platform`` and ``clients``."""
    return [c for c in checks(spec, platform, clients) if not c.ok]


def check(spec: TenantSpec, platform: dict[str, Any], clients: Callable[..., Any]) -> list[QuotaCheck]:
    """Raise QuotaExceeded (exit 11) naming every quota the tenant would exceed."""
    done = checks(spec, platform, clients)
    exceeded = [c for c in done if not c.ok]
    if exceeded:
        raise QuotaExceeded(
            f"tenant {spec.id!r} refused before anything was created: "
            + "; ".join(c.explain() for c in exceeded)
            + ". Free capacity (deprovision tenants, raise the quota) and re-run.")
    return done
