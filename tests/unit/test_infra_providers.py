"""PrefixLifecycleRules merges tenants' rules into the bucket's one lifecycle
configuration (moto's S3 backend, in-process)."""

import boto3
import pytest
from moto import mock_aws

from infra.providers import PROVIDERS
from tenantctl import naming
from tenantctl.bucket_lifecycle import tenant_rules

BUCKET = "shared"


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def props(tenant_id):
    prefix = naming.s3_prefix(tenant_id)
    # floats, as Pulumi hands numbers to providers
    return {"kind": "prefix-lifecycle", "tenant_id": tenant_id, "region": "us-east-1", "bucket": BUCKET,
            "prefix": prefix, "rules": tenant_rules(tenant_id, prefix, 7.0, 1.0, 30.0, 365.0)}


def rule_ids(s3):
    try:
        return sorted(r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"])
    except s3.exceptions.ClientError:
        return []


def test_tenants_rules_are_merged_and_removed_alone(s3):
    provider = PROVIDERS["prefix-lifecycle"]()
    provider.create(props("acme"))
    provider.create(props("acme-corp"))
    assert len(rule_ids(s3)) == 6
    provider.delete("x", props("acme"))
    assert rule_ids(s3) == sorted(r["ID"] for r in props("acme-corp")["rules"])
    provider.delete("x", props("acme-corp"))
    assert rule_ids(s3) == []


def test_update_replaces_only_own_rules(s3):
    provider = PROVIDERS["prefix-lifecycle"]()
    provider.create(props("acme"))
    provider.create(props("globex"))
    new = props("acme")
    new["rules"] = tenant_rules("acme", new["prefix"], 3, 1, 30, 365)
    provider.update("x", props("acme"), new)
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]}
    assert rules["tenantctl-acme-tmp-expiry"]["Expiration"]["Days"] == 3
    assert len(rules) == 6
