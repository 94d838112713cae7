"""The small IAM evaluator, on the documents infra/components/tenant_role.py generates
(the same functions the deployed policies are rendered from) and on the
evaluation rules it claims to follow."""

from __future__ import annotations

import pytest

from infra.components.tenant_role import access_document, trust_document
from tenant_runtime.credentials import SESSION_TAG
from tenantctl.checks.iam_eval import (
    Decision,
    Request,
    Unsupported,
    allows_all,
    assume_role,
    evaluate,
    s3_list,
    s3_object,
)

BUCKET = "tenantctl-shared-123456789012-us-east-1"
ACCOUNT = "123456789012"
RUNTIME = f"arn:aws:iam::{ACCOUNT}:role/tenantctl-runtime"


def grants(tenant: str) -> dict:
    return access_document(
        tenant, f"arn:aws:s3:::{BUCKET}",
        [f"arn:aws:sqs:us-east-1:{ACCOUNT}:tenantctl-{tenant}-jobs",
         f"arn:aws:sqs:us-east-1:{ACCOUNT}:tenantctl-{tenant}-jobs-dlq"],
        f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{tenant}-key",
        f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:tenantctl/{tenant}/db-AbCdEf")


@pytest.mark.parametrize("me, twin", [("acme", "acme-corp"), ("acme-corp", "acme"), ("a", "ab"), ("a", "a-b")])
def test_prefix_twins_cannot_reach_each_other(me, twin):
    doc = [grants(me)]
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"):
        assert evaluate(doc, s3_object(action, BUCKET, f"tenants/{me}/f")) is Decision.allow
        assert evaluate(doc, s3_object(action, BUCKET, f"tenants/{twin}/f")) is Decision.implicit_deny
    assert evaluate(doc, s3_list(BUCKET, f"tenants/{me}/")).allowed
    for prefix in (f"tenants/{twin}/", f"tenants/{me}", "tenants/", ""):
        assert not evaluate(doc, s3_list(BUCKET, prefix)).allowed, prefix
    assert not evaluate(doc, Request("s3:ListBucket", f"arn:aws:s3:::{BUCKET}")).allowed  # no prefix at all
    assert not evaluate(doc, s3_object("s3:GetObject", "another-bucket", f"tenants/{me}/f")).allowed


def test_a_prefix_without_its_slash_would_leak_to_the_twin():
    """Why the trailing slash matters: the same document with `tenants/acme*`."""
    doc = grants("acme")
    doc["Statement"][0]["Resource"] = f"arn:aws:s3:::{BUCKET}/tenants/acme*"
    doc["Statement"][1]["Condition"]["StringLike"]["s3:prefix"] = ["tenants/acme*"]
    assert evaluate([doc], s3_object("s3:GetObject", BUCKET, "tenants/acme-corp/f")).allowed
    assert evaluate([doc], s3_list(BUCKET, "tenants/acme-corp/")).allowed


def test_queues_keys_and_secrets_are_the_tenants_own():
    doc = [grants("acme")]
    own_q, twin_q = (f"arn:aws:sqs:us-east-1:{ACCOUNT}:tenantctl-{t}-jobs" for t in ("acme", "acme-corp"))
    assert evaluate(doc, Request("sqs:SendMessage", own_q)).allowed
    assert not evaluate(doc, Request("sqs:SendMessage", twin_q)).allowed
    assert not evaluate(doc, Request("sqs:DeleteQueue", own_q)).allowed
    assert evaluate(doc, Request("kms:Decrypt", f"arn:aws:kms:us-east-1:{ACCOUNT}:key/acme-key")).allowed
    schedule = Request("kms:ScheduleKeyDeletion", f"arn:aws:kms:us-east-1:{ACCOUNT}:key/acme-key")
    assert not evaluate(doc, schedule).allowed
    assert not evaluate(doc, Request("kms:Decrypt", f"arn:aws:kms:us-east-1:{ACCOUNT}:key/acme-corp-key")).allowed
    assert not evaluate(doc, Request("secretsmanager:GetSecretValue",
                                     f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:tenantctl/acme-corp/db-X")).allowed


def test_trust_policy_pins_caller_and_tag():
    role = f"arn:aws:iam::{ACCOUNT}:role/tenantctl-acme-app"
    doc = [trust_document("acme", RUNTIME)]
    assert allows_all(doc, assume_role(role, RUNTIME, {"tenant_id": "acme"}))
    assert not allows_all(doc, assume_role(role, RUNTIME, {"tenant_id": "acme-corp"}))
    assert not allows_all(doc, assume_role(role, RUNTIME))  # untagged
    assert not allows_all(doc, assume_role(role, RUNTIME, {"tenant_id": "acme", "extra": "x"}))
    assert not allows_all(doc, assume_role(role, f"arn:aws:iam::{ACCOUNT}:role/other", {"tenant_id": "acme"}))


def test_account_root_principal_delegates_to_the_account():
    doc = [trust_document("acme", f"arn:aws:iam::{ACCOUNT}:root")]
    role = f"arn:aws:iam::{ACCOUNT}:role/tenantctl-acme-app"
    assert allows_all(doc, assume_role(role, f"arn:aws:iam::{ACCOUNT}:role/anything", {"tenant_id": "acme"}))
    assert not allows_all(doc, assume_role(role, "arn:aws:iam::999999999999:role/x", {"tenant_id": "acme"}))


def test_explicit_deny_wins_and_not_elements():
    allow = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    deny = {"Effect": "Deny", "NotAction": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}
    docs = [{"Statement": [allow]}, {"Statement": [deny]}]
    assert evaluate(docs, s3_object("s3:GetObject", "b", "k")) is Decision.allow
    assert evaluate(docs, s3_object("s3:PutObject", "b", "k")) is Decision.explicit_deny
    assert evaluate(docs, s3_object("s3:PutObject", "c", "k")) is Decision.allow
    not_res = {"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "NotResource": "arn:aws:s3:::b/secret/*"}]}
    assert not evaluate([not_res], s3_object("s3:GetObject", "b", "secret/x")).allowed
    assert evaluate([not_res], s3_object("s3:GetObject", "b", "public/x")).allowed


@pytest.mark.parametrize("condition, context, expected", [
    ({"StringEquals": {"k": "v"}}, {"k": "v"}, True),
    ({"StringEquals": {"k": "v"}}, {}, False),  # missing key: a positive operator fails
    ({"StringNotEquals": {"k": "v"}}, {}, True),  # ... and a negated one holds
    ({"StringEqualsIfExists": {"k": "v"}}, {}, True),
    ({"StringLike": {"k": "a/*"}}, {"K": "a/b"}, True),  # keys are case-insensitive
    ({"StringLike": {"k": "a/?"}}, {"k": "a/bc"}, False),
    ({"StringEquals": {"k": ["x", "y"]}}, {"k": "y"}, True),
    ({"ForAllValues:StringEquals": {"k": ["x"]}}, {"k": ["x", "y"]}, False),
    ({"ForAllValues:StringEquals": {"k": ["x"]}}, {}, True),
    ({"ForAnyValue:StringEquals": {"k": ["x"]}}, {"k": ["y", "x"]}, True),
    ({"ForAnyValue:StringEquals": {"k": ["x"]}}, {}, False),
    ({"Bool": {"aws:SecureTransport": "false"}}, {"aws:SecureTransport": "false"}, True),
    ({"Null": {"k": "true"}}, {}, True),
    ({"ArnLike": {"aws:SourceArn": "arn:aws:sqs:*:1:q"}}, {"aws:SourceArn": "arn:aws:sqs:eu-west-1:1:q"}, True),
])
def test_condition_operators(condition, context, expected):
    doc = {"Statement": [{"Effect": "Allow", "Action": "x:Y", "Resource": "*", "Condition": condition}]}
    assert evaluate([doc], Request("x:Y", "r", context=context)).allowed is expected


@pytest.mark.parametrize("statement", [
    {"Effect": "Allow", "Action": "x:Y", "Resource": "*", "Condition": {"NumericLessThan": {"k": "1"}}},
    {"Effect": "Allow", "Action": "x:Y", "Resource": "arn:aws:s3:::b/${aws:username}/*"},
    {"Effect": "Allow", "Resource": "*"},
])
def test_what_it_does_not_model_is_refused(statement):
    with pytest.raises(Unsupported):
        evaluate([{"Statement": [statement]}], Request("x:Y", "arn:aws:s3:::b/u/k", context={"k": "0"}))


def test_actions_are_case_insensitive_resources_are_not():
    doc = {"Statement": [{"Effect": "Allow", "Action": "S3:getobject", "Resource": "arn:aws:s3:::b/A*"}]}
    assert evaluate([doc], s3_object("s3:GetObject", "b", "Ab")).allowed
    assert not evaluate([doc], s3_object("s3:GetObject", "b", "ab")).allowed


def test_a_role_principal_matches_its_sessions_only():
    runtime = f"arn:aws:iam::{ACCOUNT}:role/ops/tenantctl-runtime"
    doc = [trust_document("acme", runtime)]
    role = f"arn:aws:iam::{ACCOUNT}:role/tenantctl-acme-app"
    session = f"arn:aws:sts::{ACCOUNT}:assumed-role/tenantctl-runtime/tenant-acme"
    assert allows_all(doc, assume_role(role, session, {SESSION_TAG: "acme"}))
    for caller in (f"arn:aws:sts::{ACCOUNT}:assumed-role/tenantctl-runtime-x/s",  # another role's session
                   "arn:aws:sts::000000000000:assumed-role/tenantctl-runtime/s",  # the same name elsewhere
                   f"arn:aws:iam::{ACCOUNT}:user/intruder"):  # another principal of the account
        assert not allows_all(doc, assume_role(role, caller, {SESSION_TAG: "acme"})), caller


def workspace_grants(tenant: str, workspace: str) -> dict:
    stem = f"{tenant}--{workspace}"
    return access_document(
        tenant, f"arn:aws:s3:::{BUCKET}",
        [f"arn:aws:sqs:us-east-1:{ACCOUNT}:tenantctl-{stem}-jobs",
         f"arn:aws:sqs:us-east-1:{ACCOUNT}:tenantctl-{stem}-jobs-dlq"],
        f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{stem}-key",
        f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:tenantctl/{tenant}/ws/{workspace}/db-AbCdEf",
        workspace=workspace)


def test_the_tenant_role_never_reaches_its_workspaces_prefixes():
    # A workspace's prefix is beside the tenant's (`tenants/acme--legal/`), not under it.
    doc = [grants("acme")]
    assert evaluate(doc, s3_object("s3:GetObject", BUCKET, "tenants/acme/uploads/f")).allowed
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert evaluate(doc, s3_object(action, BUCKET, "tenants/acme--legal/f")) is Decision.implicit_deny
    assert not evaluate(doc, s3_list(BUCKET, "tenants/acme--legal/")).allowed


@pytest.mark.parametrize("tenant, ws, others", [
    ("acme", "legal", ["tenants/acme/f", "tenants/acme--legal-x/f", "tenants/acme--finance/f",
                       "tenants/acme-legal/f", "tenants/acme--legalx/f"]),
    ("acme", "legal-x", ["tenants/acme--legal/f", "tenants/acme-legal--x/f"]),
])
def test_a_workspace_role_reaches_its_own_prefix_only(tenant, ws, others):
    doc = [workspace_grants(tenant, ws)]
    assert evaluate(doc, s3_object("s3:PutObject", BUCKET, f"tenants/{tenant}--{ws}/f")).allowed
    assert evaluate(doc, s3_list(BUCKET, f"tenants/{tenant}--{ws}/")).allowed
    for key in others:
        assert not evaluate(doc, s3_object("s3:GetObject", BUCKET, key)).allowed, key
    assert not evaluate(doc, s3_list(BUCKET, f"tenants/{tenant}/")).allowed
    tenant_q = f"arn:aws:sqs:us-east-1:{ACCOUNT}:tenantctl-{tenant}-jobs"
    assert not evaluate(doc, Request("sqs:SendMessage", tenant_q)).allowed
    assert not evaluate(doc, Request("kms:Decrypt", f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{tenant}-key")).allowed


@pytest.mark.parametrize("doc, prefix, key", [
    (grants("acme"), "tenants/acme/", f"arn:aws:kms:us-east-1:{ACCOUNT}:key/acme-key"),
    (workspace_grants("acme", "legal"), "tenants/acme--legal/", f"arn:aws:kms:us-east-1:{ACCOUNT}:key/acme--legal-key"),
    (access_document("acme", f"arn:aws:s3:::{BUCKET}", [], f"arn:aws:kms:us-east-1:{ACCOUNT}:key/acme-key",
                     "arn:aws:secretsmanager:x", moving_bucket_arn="arn:aws:s3:::old-cell-bucket"),
     "tenants/acme/", f"arn:aws:kms:us-east-1:{ACCOUNT}:key/acme-key"),
])
def test_the_role_can_neither_write_nor_seal_a_backup(doc, prefix, key):
    """A restore runs a backup's dump as the database admin: a backup the
    tenant's own workload could plant (its prefix, its key) would run the
    tenant's SQL as the admin. The role keeps every other use of both."""
    buckets = [BUCKET] + (["old-cell-bucket"] if "old-cell-bucket" in str(doc) else [])
    for bucket in buckets:
        for action in ("s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject"):
            for where in ("backups/20261206T050000000Z-abcdef/index.json", "backups/x/manifest.enc", "backups/"):
                decision = evaluate([doc], s3_object(action, bucket, prefix + where))
                assert decision is Decision.explicit_deny, (action, bucket, where)
            assert evaluate([doc], s3_object(action, bucket, prefix + "uploads/u/f.pdf")).allowed
        assert evaluate([doc], s3_object("s3:GetObject", bucket, prefix + "backups/x/index.json")).allowed
    backup = {"kms:EncryptionContext:purpose": "backup", "kms:EncryptionContext:tenant_id": "acme",
              "kms:EncryptionContext:backup_id": "99991231T235959999Z-f0f0f0"}
    runtime = {"kms:EncryptionContext:purpose": "tenant_runtime/context-store",
               "kms:EncryptionContext:tenant_id": "acme"}
    for action in ("kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:Encrypt", "kms:Decrypt"):
        assert evaluate([doc], Request(action, key, context=backup)) is Decision.explicit_deny, action
        assert evaluate([doc], Request(action, key, context=runtime)).allowed, action
        # S3's and SQS's SSE-KMS contexts hold no `purpose`.
        assert evaluate([doc], Request(action, key, context={"kms:EncryptionContext:aws:s3:arn": "x"})).allowed
    assert evaluate([doc], Request("kms:DescribeKey", key)).allowed
