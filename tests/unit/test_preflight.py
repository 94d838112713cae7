"""The provision preflight's arithmetic against moto (in-process): what a tenant
needs in its cell's account, what it already has, where each limit comes from.
The refusals through the CLI, with nothing created, are in
tests/integration/test_walls.py."""

from __future__ import annotations

import boto3
import pytest

from tenantctl import naming, preflight
from tenantctl.errors import QuotaExceeded
from tenantctl.models import TenantSpec

BUCKET = "shared"


@pytest.fixture
def account(moto_account):
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)


def clients(service, region=None):
    return boto3.client(service, region_name=region)


def by_name(checks):
    return {c.name: c for c in checks}


def test_a_dedicated_tenant_needs_a_vpc_an_instance_and_a_role(account):
    done = by_name(preflight.checks(TenantSpec(id="acme", tier="dedicated"), {}, clients))
    assert set(done) == {"vpcs", "db_instances", "iam_roles"}  # lifecycle rules are no wall: one per class
    # iam_roles: the tenant role and its rotation function's execution role
    assert (done["vpcs"].needed, done["db_instances"].needed, done["iam_roles"].needed) == (1, 1, 2)
    assert done["vpcs"].limit == 5 and done["vpcs"].source == "Service Quotas vpc/L-F678F1CE"
    assert done["iam_roles"].limit == 1000
    # moto answers neither rds:DescribeAccountAttributes nor the RDS quota: AWS's default, said so.
    assert done["db_instances"].limit == 40 and done["db_instances"].source.startswith("AWS's default")
    pooled = by_name(preflight.checks(TenantSpec(id="acme"), {}, clients))
    assert set(pooled) == {"iam_roles"}


def test_what_the_tenant_already_has_needs_nothing_more(account, monkeypatch):
    boto3.client("iam").create_role(RoleName=naming.iam_role_name("acme"), AssumeRolePolicyDocument="{}")
    boto3.client("ec2").create_vpc(CidrBlock="10.42.0.0/16", TagSpecifications=[
        {"ResourceType": "vpc", "Tags": [{"Key": "tenant", "Value": "acme"}]}])
    # Below the wall one more role fits whether or not the tenant has its own: counted, not looked up.
    assert by_name(preflight.checks(TenantSpec(id="acme"), {}, clients))["iam_roles"].ok
    roles = len(boto3.client("iam").list_roles()["Roles"])
    monkeypatch.setenv("TENANTCTL_QUOTA_IAM_ROLES", str(roles))  # at the wall: what it has matters
    done = by_name(preflight.checks(TenantSpec(id="acme", tier="dedicated"), {}, clients))
    assert (done["vpcs"].needed, done["iam_roles"].needed, done["db_instances"].needed) == (0, 1, 1)
    # ...while the prefix twin's role is someone else's.
    twin = by_name(preflight.checks(TenantSpec(id="acme-corp"), {}, clients))
    assert twin["iam_roles"].needed == 1 and not twin["iam_roles"].ok


def test_each_workspace_needs_a_role_of_its_own(account, monkeypatch):
    spec = TenantSpec(id="acme", workspaces=[{"name": "legal"}, {"name": "finance"}])
    assert by_name(preflight.checks(spec, {}, clients))["iam_roles"].needed == 3
    iam = boto3.client("iam")
    for name in (naming.iam_role_name("acme"), naming.ws_iam_role_name("acme", "legal")):
        iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")
    monkeypatch.setenv("TENANTCTL_QUOTA_IAM_ROLES", str(len(iam.list_roles()["Roles"])))  # at the wall
    done = by_name(preflight.checks(spec, {}, clients))["iam_roles"]
    assert done.needed == 1 and not done.ok  # finance's role is missing: `workspace add` refused, exit 11


def test_an_override_only_lowers_a_limit_and_a_refusal_names_every_quota(account, monkeypatch):
    monkeypatch.setenv("TENANTCTL_QUOTA_IAM_ROLES", "5000")  # above the account's: ignored
    assert by_name(preflight.checks(TenantSpec(id="acme"), {}, clients))["iam_roles"].limit == 1000
    monkeypatch.setenv("TENANTCTL_QUOTA_IAM_ROLES", "0")
    monkeypatch.setenv("TENANTCTL_QUOTA_VPCS", "0")
    with pytest.raises(QuotaExceeded) as refused:
        preflight.check(TenantSpec(id="acme", tier="dedicated"), {}, clients)
    message = str(refused.value)
    assert refused.value.exit_code == 11
    assert "VPCs in us-east-1: " in message and "IAM roles in the account: " in message
    assert "TENANTCTL_QUOTA_VPCS=0 (the account allows 5" in message
    assert "RDS DB instances" not in message  # within its limit
