"""parliament and cloudsplaining on every policy document the program
generates, for a pooled and a dedicated tenant, the platform and a cell of
another account (its waker role): nothing
beyond the documented exceptions (tests/policy_scanners.py). The same scan of
the documents read back from the sandbox is in
tests/integration/test_posture_check.py."""

from __future__ import annotations

import json

import pytest
from infra_mocks import ACCOUNT, RecordingMocks, platform_config, run_program, tenant_config
from policy_scanners import Document, endpoint_kind, findings

STACKS = {"pooled": ("acme", {"id": "acme"}), "dedicated": ("globex", {"id": "globex", "tier": "dedicated"}),
          "platform": ("platform", None), "cell": ("cell-eu1", None)}
# The cell is in another account: the runtime wakes its tenants through the cell's waker role.
CELL = {"name": "eu1", "region": "eu-west-1", "runtime_principal_arn": f"arn:aws:iam::{ACCOUNT}:role/tenantctl-runtime",
        "account_role_arn": "arn:aws:iam::222222222222:role/tenantctl-cell"}


def documents(resources) -> list[Document]:
    docs = []
    for r in resources:
        i = r.inputs
        if r.type == "aws:iam/role:Role":
            docs.append(Document("trust", r.name, json.loads(i["assumeRolePolicy"]),
                                 f"arn:aws:iam::{ACCOUNT}:role/{i['name']}"))
        elif r.type == "aws:iam/rolePolicy:RolePolicy":
            docs.append(Document("identity", r.name, json.loads(i["policy"])))
        elif r.type == "aws:kms/key:Key":
            docs.append(Document("key", r.name, json.loads(i["policy"])))
        elif r.type == "aws:s3/bucketPolicy:BucketPolicy":
            docs.append(Document("bucket", r.name, json.loads(i["policy"])))
        elif r.type == "aws:ec2/vpcEndpoint:VpcEndpoint":
            docs.append(Document(endpoint_kind(i["serviceName"]), r.name, json.loads(i["policy"])))
    return docs


@pytest.fixture(scope="module")
def generated() -> dict[str, list[Document]]:
    out = {}
    for stack, (name, spec) in STACKS.items():
        if stack == "cell":
            mocks = RecordingMocks(region=CELL["region"])
            run_program(name, platform_config(CELL, region=CELL["region"]), mocks)
        else:
            mocks = RecordingMocks()
            run_program(name, tenant_config(spec) if spec else platform_config(), mocks)
        out[stack] = documents(mocks.resources)
    return out


@pytest.mark.parametrize("stack", list(STACKS))
def test_every_generated_policy_passes_parliament_and_cloudsplaining(generated, stack):
    docs = generated[stack]
    kinds = {d.kind for d in docs}
    expected = {"trust", "identity", "key"} | ({"bucket"} if stack in ("platform", "cell") else set()) | (
        {"gateway-endpoint", "interface-endpoint"} if stack != "pooled" else set())
    assert kinds == expected  # every kind of document is in the scan
    assert [f for d in docs for f in findings(d)] == []
    if stack == "cell":
        assert any(d.name == "waker-access" for d in docs)  # the waker role's documents are among them


def _one(generated, stack, kind) -> Document:
    return next(d for d in generated[stack] if d.kind == kind)


def test_a_wildcard_identity_policy_is_caught_by_both_scanners(generated):
    doc = _one(generated, "pooled", "identity")
    wide = Document("identity", doc.name, {"Version": "2012-10-17", "Statement": doc.policy["Statement"] + [
        {"Effect": "Allow", "Action": ["s3:*", "iam:PassRole"], "Resource": "*"}]})
    found = findings(wide)
    assert any("parliament RESOURCE_STAR" in f for f in found)
    assert any("cloudsplaining permissions_management_without_constraints" in f and "iam:PassRole" in f
               for f in found)
    assert any("cloudsplaining allows_data_exfiltration_actions" in f for f in found)


def test_the_admin_exception_covers_the_administer_statement_only(generated):
    doc = _one(generated, "pooled", "key")
    statements = doc.policy["Statement"] + [{"Sid": "Extra", "Effect": "Allow", "Principal": {"AWS": "*"},
                                             "Action": "kms:*", "Resource": "*"}]
    found = findings(Document("key", doc.name, {**doc.policy, "Statement": statements}))
    assert any("PERMISSIONS_MANAGEMENT_ACTIONS" in f for f in found), found


def test_an_unscoped_gateway_endpoint_policy_is_caught():
    # (AWS's default is "Action": "*": parliament takes half a minute expanding it)
    every_bucket = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:*",
                                                           "Resource": "*"}]}
    assert any("RESOURCE_STAR" in f for f in findings(Document("gateway-endpoint", "s3", every_bucket)))
