"""The provision preflight's arithmetic against moto (in-process): what a tenant
needs, what it already has, where each limit comes from. The refusals through
the CLI, with nothing created, are in tests/integration/test_walls.py."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from tenantctl import naming, preflight
from tenantctl.bucket_lifecycle import tenant_rules
from tenantctl.errors import QuotaExceeded
from tenantctl.models import TenantSpec

BUCKET = "shared"


@pytest.fixture
def account(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield


def clients(service, region=None):
    return boto3.client(service, region_name=region)


def by_name(checks):
    return {c.name: c for c in checks}


def test_a_dedicated_tenant_needs_a_vpc_an_instance_and_a_role(account):
    done = by_name(preflight.checks(TenantSpec(id="acme", tier="dedicated"), {"bucket": BUCKET}, clients))
    assert set(done) == {"lifecycle_rules", "vpcs", "db_instances", "iam_roles"}
    # iam_roles: the tenant role and its rotation function's execution role
    assert (done["vpcs"].needed, done["db_instances"].needed, done["iam_roles"].needed) == (1, 1, 2)
    assert done["vpcs"].limit == 5 and done["vpcs"].source == "Service Quotas vpc/L-F678F1CE"
    assert done["iam_roles"].limit == 1000
    # moto answers neither rds:DescribeAccountAttributes nor the RDS quota: AWS's default, said so.
    assert done["db_instances"].limit == 40 and done["db_instances"].source.startswith("AWS's default")
    assert done["lifecycle_rules"].needed == 3 and done["lifecycle_rules"].used == 0
    pooled = by_name(preflight.checks(TenantSpec(id="acme"), {"bucket": BUCKET}, clients))
    assert set(pooled) == {"lifecycle_rules", "iam_roles"}


def test_what_the_tenant_already_has_needs_nothing_more(account):
    boto3.client("iam").create_role(RoleName=naming.iam_role_name("acme"), AssumeRolePolicyDocument="{}")
    boto3.client("ec2").create_vpc(CidrBlock="10.42.0.0/16", TagSpecifications=[
        {"ResourceType": "vpc", "Tags": [{"Key": "tenant", "Value": "acme"}]}])
    prefix = naming.s3_prefix("acme")
    boto3.client("s3").put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={
        "Rules": tenant_rules("acme", prefix, 7, 1, 30, 365)})
    done = by_name(preflight.checks(TenantSpec(id="acme", tier="dedicated"), {"bucket": BUCKET}, clients))
    assert (done["vpcs"].needed, done["iam_roles"].needed, done["db_instances"].needed) == (0, 1, 1)
    assert done["lifecycle_rules"].used == 0  # its own rules are replaced, not added
    # ...while the prefix twin's rules are someone else's.
    twin = by_name(preflight.checks(TenantSpec(id="acme-corp"), {"bucket": BUCKET}, clients))
    assert twin["lifecycle_rules"].used == 3


def test_an_override_only_lowers_a_limit_and_a_refusal_names_every_quota(account, monkeypatch):
    monkeypatch.setenv("TENANTCTL_QUOTA_IAM_ROLES", "5000")  # above the account's: ignored
    assert by_name(preflight.checks(TenantSpec(id="acme"), {}, clients))["iam_roles"].limit == 1000
    monkeypatch.setenv("TENANTCTL_QUOTA_IAM_ROLES", "0")
    monkeypatch.setenv("TENANTCTL_QUOTA_VPCS", "0")
    with pytest.raises(QuotaExceeded) as refused:
        preflight.check(TenantSpec(id="acme", tier="dedicated"), {"bucket": BUCKET}, clients)
    message = str(refused.value)
    assert refused.value.exit_code == 11
    assert "VPCs in us-east-1: " in message and "IAM roles in the account: " in message
    assert "TENANTCTL_QUOTA_VPCS=0 (the account allows 5" in message
    assert "RDS DB instances" not in message  # within its limit


def test_a_pooled_tenant_needs_one_rule_in_the_shared_database_group(account, monkeypatch):
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    db = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
    platform = {"bucket": BUCKET, "db_security_group_id": db}

    def admit(tenant_id: str) -> None:
        app = ec2.create_security_group(GroupName=f"{tenant_id}-app", Description="app", VpcId=vpc, TagSpecifications=[
            {"ResourceType": "security-group", "Tags": [{"Key": "tenant", "Value": tenant_id}]}])["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=db, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": app}]}])

    for other in ("globex", "initech"):
        admit(other)
    rule = by_name(preflight.checks(TenantSpec(id="acme"), platform, clients))["db_ingress_rules"]
    assert (rule.used, rule.needed, rule.limit) == (2, 1, 60)  # moto has no such quota: AWS's default
    monkeypatch.setenv("TENANTCTL_QUOTA_DB_INGRESS_RULES", "2")
    with pytest.raises(QuotaExceeded, match="ingress rules of the shared database's security group"):
        preflight.check(TenantSpec(id="acme"), platform, clients)
    admit("acme")
    again = by_name(preflight.checks(TenantSpec(id="acme"), platform, clients))["db_ingress_rules"]
    assert again.needed == 0  # a re-run: its rule exists
