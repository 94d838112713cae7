"""Scoped credentials (issue 7 item 1) on the sandbox.

What moto 5.x enforces once IAM auth is switched on in the running server
(POST /moto-api/reset-auth, moto's INITIAL_NO_AUTH_ACTION_COUNT at run time):
the signature of every request and the Action + Resource of the caller's
identity policies (inline and attached, for IAM users and assumed roles) on
S3 object and bucket requests and on SQS (moto resolves the queue ARN), and
the Principal of a role's trust policy on sts:AssumeRole, compared verbatim.

What it does not: condition keys other than sts:ExternalId (so neither the
ListBucket ``s3:prefix`` condition nor the trust policy's
``aws:RequestTag/tenant_id``), resource policies (key policies, bucket
policies), an account-root principal delegating to the account's IAM
principals, and resources of KMS calls (moto authorizes them against "*", so a
key-scoped grant never matches). Those are judged on the live policy documents
with tenantctl.checks.iam_eval instead.

Tenants: ``ck-acme`` and its prefix twin ``ck-acme-corp``, and ``ck-other``.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.exceptions import ClientError

from infra.components.tenant_role import trust_document
from tenant_runtime.context import from_registry
from tenant_runtime.credentials import SESSION_TAG, ClientFactory
from tenant_runtime.registry import RegistryReader
from tenantctl.checks import iam_eval

A, TWIN, OTHER = "ck-acme", "ck-acme-corp", "ck-other"


def aws(sandbox, service: str, **kw):
    return boto3.client(service, endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region, **kw)


@pytest.fixture(scope="module")
def tenants(provision_tenant):
    return {t: provision_tenant(t) for t in (A, TWIN, OTHER)}


@pytest.fixture(scope="module")
def resolve(tenants, workspace, sandbox):
    """tenant id -> its TenantContext, resolved from the registry as the runtime does."""
    reader = RegistryReader(workspace.ensure_platform()["registry_table"], client=aws(sandbox, "dynamodb"))
    return lambda tenant_id: from_registry(reader, tenant_id)


def role_documents(sandbox, record) -> tuple[dict, list[dict]]:
    iam = aws(sandbox, "iam")
    name = record.resources.role_arn.rsplit("/", 1)[-1]
    trust = iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
    inline = [iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"]
              for p in iam.list_role_policies(RoleName=name)["PolicyNames"]]
    assert iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"] == []
    return trust, inline


def allowed(docs: list[dict], request: iam_eval.Request) -> bool:
    return iam_eval.evaluate(docs, request).allowed


@contextmanager
def moto_enforces_iam(sandbox) -> Iterator[None]:
    """IAM authentication and authorization on, for every request to the
    sandbox's moto server, for the duration of the block."""
    def reset(value: bytes) -> str:
        # text/plain: a form content type would make the server parse the body away
        req = urllib.request.Request(f"{sandbox.aws_endpoint_url}/moto-api/reset-auth", data=value, method="POST",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]

    previous = reset(b"0")
    try:
        yield
    finally:
        reset(str(previous).encode())


def denied(call) -> str:
    """The error code of a refused call (moto's SQS and KMS answer a bare "403")."""
    with pytest.raises(ClientError) as err:
        call()
    code = err.value.response["Error"]["Code"]
    status = err.value.response["ResponseMetadata"]["HTTPStatusCode"]
    return "AccessDenied" if code == "403" and status == 403 else code


# -- the generated documents, as deployed ------------------------------------------------------

def test_access_policies_use_the_prefix_with_its_slash(tenants, sandbox):
    record = tenants[A]
    _, [doc] = role_documents(sandbox, record)
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    bucket_arn = f"arn:aws:s3:::{record.resources.bucket}"
    assert by_sid["TenantObjects"]["Resource"] == f"{bucket_arn}/tenants/{A}/*"
    assert by_sid["ListTenantPrefix"]["Resource"] == bucket_arn
    assert by_sid["ListTenantPrefix"]["Condition"] == {"StringLike": {"s3:prefix": [f"tenants/{A}/*"]}}
    assert not any(s.get("NotResource") or s.get("NotAction") for s in doc["Statement"])
    # The only Denies keep the operator's backups from the tenant, on its own prefix and key.
    denies = {s["Sid"]: s for s in doc["Statement"] if s["Effect"] == "Deny"}
    assert sorted(denies) == ["OperatorBackupKeys", "OperatorBackupObjects"]
    assert denies["OperatorBackupObjects"]["Resource"] == f"{bucket_arn}/tenants/{A}/backups/*"
    assert denies["OperatorBackupKeys"]["Resource"] == record.resources.kms_key_arn


@pytest.mark.parametrize("me, them", [(A, TWIN), (TWIN, A), (A, OTHER)])
def test_a_tenant_policy_never_reaches_its_prefix_twin(tenants, sandbox, me, them):
    mine, theirs = tenants[me].resources, tenants[them].resources
    _, docs = role_documents(sandbox, tenants[me])
    bucket = mine.bucket
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert allowed(docs, iam_eval.s3_object(action, bucket, f"tenants/{me}/uploads/x.pdf"))
        assert not allowed(docs, iam_eval.s3_object(action, bucket, f"tenants/{them}/uploads/x.pdf"))
    assert allowed(docs, iam_eval.s3_list(bucket, f"tenants/{me}/"))
    assert allowed(docs, iam_eval.s3_list(bucket, f"tenants/{me}/uploads/"))
    for prefix in (f"tenants/{them}/", f"tenants/{me}", "tenants/", ""):
        assert not allowed(docs, iam_eval.s3_list(bucket, prefix)), prefix
    # and none of the twin's queue, key or secret
    assert allowed(docs, iam_eval.Request("sqs:SendMessage", _queue_arn(sandbox, mine.queue_url)))
    assert not allowed(docs, iam_eval.Request("sqs:SendMessage", _queue_arn(sandbox, theirs.queue_url)))
    assert not allowed(docs, iam_eval.Request("sqs:ReceiveMessage", _queue_arn(sandbox, theirs.dlq_url)))
    assert allowed(docs, iam_eval.Request("kms:Decrypt", mine.kms_key_arn))
    assert not allowed(docs, iam_eval.Request("kms:Decrypt", theirs.kms_key_arn))
    assert not allowed(docs, iam_eval.Request("secretsmanager:GetSecretValue", theirs.store.secret_arn))


def _queue_arn(sandbox, url: str) -> str:
    return aws(sandbox, "sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def test_trust_policy_pins_the_caller_and_the_tenant_tag(tenants, workspace, sandbox):
    runtime = workspace.ensure_platform()["runtime_principal_arn"]
    trust, _ = role_documents(sandbox, tenants[A])
    [stmt] = trust["Statement"]
    assert stmt["Principal"] == {"AWS": runtime}
    assert stmt["Condition"] == {"StringEquals": {f"aws:RequestTag/{SESSION_TAG}": A},
                                 "ForAllValues:StringEquals": {"aws:TagKeys": [SESSION_TAG]}}
    role = tenants[A].resources.role_arn
    assert iam_eval.allows_all([trust], iam_eval.assume_role(role, runtime, {SESSION_TAG: A}))
    for tags in ({SESSION_TAG: TWIN}, {SESSION_TAG: "ck-acm"}, {}, {SESSION_TAG: A, "tenant": TWIN}, {"tenant": A}):
        assert not iam_eval.allows_all([trust], iam_eval.assume_role(role, runtime, tags)), tags
    elsewhere = iam_eval.assume_role(role, "arn:aws:iam::000000000000:root", {SESSION_TAG: A})
    assert not iam_eval.allows_all([trust], elsewhere)


def runtime_factory(sandbox, workspace) -> ClientFactory:
    """The runtime in assume_role mode, running as the platform's runtime role
    (on the sandbox it assumes that role first)."""
    return ClientFactory("assume_role", region=sandbox.region, endpoint_url=sandbox.aws_endpoint_url,
                         runtime_role_arn=workspace.ensure_platform()["runtime_principal_arn"])


def test_tenant_roles_trust_the_platforms_runtime_role_only(tenants, sandbox, workspace, resolve):
    """Not the account root: a role of the runtime's own, which only its runners
    may become and which may only assume tenant roles and read the registry;
    the runtime's tenant credentials come through it."""
    from infra.components.runtime_role import runtime_access_document, runtime_trust_document

    iam = aws(sandbox, "iam")
    runtime = workspace.ensure_platform()["runtime_principal_arn"]
    account = aws(sandbox, "sts").get_caller_identity()["Account"]
    assert runtime == f"arn:aws:iam::{account}:role/tenantctl-runtime"
    role = iam.get_role(RoleName="tenantctl-runtime")["Role"]
    assert role["AssumeRolePolicyDocument"] == runtime_trust_document(["ecs-tasks.amazonaws.com"])
    [name] = iam.list_role_policies(RoleName="tenantctl-runtime")["PolicyNames"]
    access = iam.get_role_policy(RoleName="tenantctl-runtime", PolicyName=name)["PolicyDocument"]
    platform = workspace.ensure_platform()
    dynamodb = aws(sandbox, "dynamodb")
    tables = [dynamodb.describe_table(TableName=platform[t])["Table"]["TableArn"]
              for t in ("registry_table", "revocation_table")]
    assert access == runtime_access_document(*tables, platform["gateway_secret_arn"], platform["platform_key_arn"],
                                             sandbox.region, account)
    # Waking a hibernated tenant: its own instance's state and start, no other instance's.
    instances = f"arn:aws:rds:{sandbox.region}:{account}:db:"
    assert all(allowed([access], iam_eval.Request(action, instances + f"tenantctl-{A}"))
               for action in ("rds:DescribeDBInstances", "rds:StartDBInstance"))
    assert not allowed([access], iam_eval.Request("rds:StartDBInstance", instances + "billing"))
    assert not any(allowed([access], iam_eval.Request(action, instances + shared))  # the cells' own
                   for action in ("rds:DescribeDBInstances", "rds:StartDBInstance")
                   for shared in ("tenantctl-platform", "tenantctl-cell-eu1"))
    assert not allowed([access], iam_eval.Request("rds:StopDBInstance", instances + f"tenantctl-{A}"))
    assert allowed([access], iam_eval.Request("sts:AssumeRole", tenants[A].resources.role_arn))
    assert not allowed([access], iam_eval.Request("sts:AssumeRole", f"arn:aws:iam::{account}:role/admin"))
    assert not allowed([access], iam_eval.s3_object("s3:GetObject", tenants[A].resources.bucket, f"tenants/{A}/x"))

    factory = runtime_factory(sandbox, workspace)
    as_runtime = factory.runtime_sts(sandbox.region).get_caller_identity()["Arn"]
    assert as_runtime.startswith(f"arn:aws:sts::{account}:assumed-role/tenantctl-runtime/")
    tenant_sts = factory.client(resolve(A), "sts")
    assert tenant_sts.get_caller_identity()["Arn"] == \
        f"arn:aws:sts::{account}:assumed-role/tenantctl-{A}-app/tenant-{A}"
    trust, _ = role_documents(sandbox, tenants[A])
    tag = {SESSION_TAG: A}
    assert iam_eval.allows_all([trust], iam_eval.assume_role(tenants[A].resources.role_arn, as_runtime, tag))
    for other in (f"arn:aws:iam::{account}:root", f"arn:aws:iam::{account}:user/intruder",
                  f"arn:aws:sts::{account}:assumed-role/tenantctl-{TWIN}-app/tenant-{TWIN}"):
        assert not iam_eval.allows_all([trust], iam_eval.assume_role(tenants[A].resources.role_arn, other, tag)), other


def test_the_runtimes_assume_role_request_satisfies_the_trust_policy(tenants, sandbox, workspace, resolve):
    """The AssumeRole parameters the runtime really sends, judged against the live
    trust policy: its own tenant's role yes, the twin's role no."""
    factory = runtime_factory(sandbox, workspace)
    sent: list[dict] = []
    sts = factory.runtime_sts(sandbox.region)
    sts.meta.events.register("provide-client-params.sts.AssumeRole", lambda params, **_: sent.append(dict(params)))
    ctx = resolve(A)
    factory.client(ctx, "s3")
    [params] = sent
    assert params["RoleArn"] == tenants[A].resources.role_arn
    tags = {t["Key"]: t["Value"] for t in params["Tags"]}
    assert tags == {SESSION_TAG: A} and params["TransitiveTagKeys"] == [SESSION_TAG]
    caller = sts.get_caller_identity()["Arn"]  # a session of the platform's runtime role
    trust_a, _ = role_documents(sandbox, tenants[A])
    trust_twin, _ = role_documents(sandbox, tenants[TWIN])
    assert iam_eval.allows_all([trust_a], iam_eval.assume_role(params["RoleArn"], caller, tags))
    assert not iam_eval.allows_all([trust_twin], iam_eval.assume_role(tenants[TWIN].resources.role_arn, caller, tags))


# -- enforced by moto itself -----------------------------------------------------------------------

def test_moto_denies_a_tenant_credential_on_other_prefixes(tenants, sandbox, resolve):
    bucket = tenants[A].resources.bucket
    admin_s3 = aws(sandbox, "s3")
    for t in (A, TWIN, OTHER):
        admin_s3.put_object(Bucket=bucket, Key=f"tenants/{t}/probe.txt", Body=t.encode())
    factory = ClientFactory("assume_role", region=sandbox.region, endpoint_url=sandbox.aws_endpoint_url)
    ctx = resolve(A)
    s3, sqs = factory.client(ctx, "s3"), factory.client(ctx, "sqs")  # AssumeRole happens here, auth still off
    with moto_enforces_iam(sandbox):
        assert denied(lambda: admin_s3.list_buckets()) == "InvalidAccessKeyId"  # auth really is on
        assert s3.get_object(Bucket=bucket, Key=f"tenants/{A}/probe.txt")["Body"].read() == A.encode()
        s3.put_object(Bucket=bucket, Key=f"tenants/{A}/uploads/new.txt", Body=b"mine")
        for other in (TWIN, OTHER):
            probe, new = f"tenants/{other}/probe.txt", f"tenants/{other}/x.txt"
            assert denied(lambda k=probe: s3.get_object(Bucket=bucket, Key=k)) == "AccessDenied"
            assert denied(lambda k=new: s3.put_object(Bucket=bucket, Key=k, Body=b"x")) == "AccessDenied"
            assert denied(lambda k=probe: s3.delete_object(Bucket=bucket, Key=k)) == "AccessDenied"
        assert denied(lambda: s3.get_object(Bucket=bucket, Key=f"tenants/{A}x/probe.txt")) == "AccessDenied"
        # SQS: moto resolves the queue ARN, so the queue grant is enforced too.
        sqs.send_message(QueueUrl=tenants[A].resources.queue_url, MessageBody="mine")
        assert denied(lambda: sqs.send_message(QueueUrl=tenants[TWIN].resources.queue_url, MessageBody="x")) \
            == "AccessDenied"
    assert admin_s3.get_object(Bucket=bucket, Key=f"tenants/{TWIN}/probe.txt")["Body"].read() == TWIN.encode()


def listed_keys(s3, bucket: str, prefix: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])}


def test_what_moto_does_not_enforce(tenants, sandbox, resolve):
    """Pinned so a moto upgrade that starts enforcing these shows up here (then
    the README's table should move them to "enforced on the sandbox")."""
    bucket = tenants[A].resources.bucket
    _, docs = role_documents(sandbox, tenants[A])
    factory = ClientFactory("assume_role", region=sandbox.region, endpoint_url=sandbox.aws_endpoint_url)
    ctx = resolve(A)
    s3, kms = factory.client(ctx, "s3"), factory.client(ctx, "kms")
    admin_s3 = aws(sandbox, "s3")
    for t in (A, TWIN):
        admin_s3.put_object(Bucket=bucket, Key=f"tenants/{t}/listed.txt", Body=t.encode())
    with moto_enforces_iam(sandbox):
        # s3:prefix on ListBucket: moto lists the tenant's own prefix and the twin's alike; the document
        # denies the twin's.
        for t in (A, TWIN):
            assert f"tenants/{t}/listed.txt" in listed_keys(s3, bucket, f"tenants/{t}/")
        # KMS: moto authorizes against resource "*", so even the tenant's own key is refused.
        assert denied(lambda: kms.describe_key(KeyId=tenants[A].resources.kms_key_arn)) == "AccessDenied"
    assert not allowed(docs, iam_eval.s3_list(bucket, f"tenants/{TWIN}/"))
    assert allowed(docs, iam_eval.Request("kms:DescribeKey", tenants[A].resources.kms_key_arn))


def test_moto_enforces_the_pinned_caller_but_not_the_tag(tenants, sandbox):
    """A role whose trust policy is the generated document for a pinned runtime
    principal (an IAM user here: moto compares principals verbatim and does not
    let an account-root principal delegate, unlike AWS)."""
    iam = aws(sandbox, "iam")
    keys = {}
    for user in ("ck-runtime", "ck-intruder"):
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="assume", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["sts:AssumeRole", "sts:TagSession"],
                                                    "Resource": "*"}]}))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user] = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
    runtime_arn = iam.get_user(UserName="ck-runtime")["User"]["Arn"]
    role = iam.create_role(RoleName="ck-pinned-app",
                           AssumeRolePolicyDocument=json.dumps(trust_document(A, runtime_arn)))["Role"]["Arn"]
    try:
        with moto_enforces_iam(sandbox):
            runtime, intruder = (aws(sandbox, "sts", **keys[u]) for u in ("ck-runtime", "ck-intruder"))
            tag = [{"Key": SESSION_TAG, "Value": A}]
            assert runtime.assume_role(RoleArn=role, RoleSessionName=f"tenant-{A}", Tags=tag)["Credentials"]
            assert denied(lambda: intruder.assume_role(RoleArn=role, RoleSessionName="x-intruder", Tags=tag)) \
                == "AccessDenied"
            # Not enforced by moto: the tag condition (iam_eval denies it, see the trust test above).
            assert runtime.assume_role(RoleArn=role, RoleSessionName="tenant-twin",
                                       Tags=[{"Key": SESSION_TAG, "Value": TWIN}])["Credentials"]
    finally:
        iam.delete_role(RoleName="ck-pinned-app")
        for user in keys:
            iam.delete_access_key(UserName=user, AccessKeyId=keys[user]["aws_access_key_id"])
            iam.delete_user_policy(UserName=user, PolicyName="assume")
            iam.delete_user(UserName=user)
    assert not iam_eval.allows_all([trust_document(A, runtime_arn)],
                                   iam_eval.assume_role(role, runtime_arn, {SESSION_TAG: TWIN}))


# -- the cache --------------------------------------------------------------------------------------

def test_credentials_are_cached_until_shortly_before_expiry(tenants, sandbox, resolve):
    now = [datetime.now(UTC)]
    factory = ClientFactory("assume_role", region=sandbox.region, endpoint_url=sandbox.aws_endpoint_url,
                            duration_seconds=900, refresh_margin=120, clock=lambda: now[0])
    ctx_a, ctx_twin = resolve(A), resolve(TWIN)
    first = factory.client(ctx_a, "s3")
    expiry = factory._scoped[A][0]
    assert timedelta(seconds=800) < expiry - now[0] <= timedelta(seconds=905)  # DurationSeconds=900
    access_key = first._request_signer._credentials.access_key

    now[0] = expiry - timedelta(seconds=121)  # still outside the refresh margin
    assert factory.client(ctx_a, "s3") is first and factory.client(ctx_a, "sqs") is not None
    assert factory.assume_role_calls == 1

    factory.client(ctx_twin, "s3")  # another tenant: its own credentials
    assert factory.assume_role_calls == 2

    now[0] = expiry - timedelta(seconds=119)  # inside the margin: refreshed before they expire
    fresh = factory.client(ctx_a, "s3")
    assert factory.assume_role_calls == 3 and fresh is not first
    assert fresh._request_signer._credentials.access_key != access_key
    now[0] = factory._scoped[A][0] - timedelta(seconds=600)  # the clock of the fresh credentials' lifetime
    assert factory.client(ctx_a, "s3") is fresh and factory.assume_role_calls == 3  # cached again


def test_each_tenant_gets_its_own_credentials_but_the_models_are_parsed_once(tenants, sandbox, resolve,
                                                                              monkeypatch):
    """A session per tenant role (its credentials alone), one botocore data
    loader for all of them: a second tenant's clients parse no service model
    again (each tenant's session parsed its own copy before: ~14 MiB and ~150 ms
    per tenant for four services)."""
    from botocore import loaders

    from tenant_runtime import boto_sessions

    monkeypatch.setattr(boto_sessions, "_loader", None)
    parsed: list[str] = []
    load = loaders.JSONFileLoader.load_file
    monkeypatch.setattr(loaders.JSONFileLoader, "load_file", lambda self, path: parsed.append(path) or load(self, path))
    factory = ClientFactory("assume_role", region=sandbox.region, endpoint_url=sandbox.aws_endpoint_url)
    first = factory.client(resolve(A), "kms")
    assert any("/kms/" in p for p in parsed)
    parsed.clear()

    second = factory.client(resolve(TWIN), "kms")

    assert parsed == []
    assert (first._request_signer._credentials.access_key != second._request_signer._credentials.access_key)
    assert factory._scoped[A][2] is not factory._scoped[TWIN][2]  # a session each: credentials never shared
