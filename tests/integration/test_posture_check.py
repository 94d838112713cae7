"""`tenantctl check` on the sandbox: a freshly provisioned tenant passes every
check; each tampering with a live resource (done behind tenantctl's back, as an
operator or an attacker would) makes the check fail, exit 8 and name the check;
and provision runs the same check at its end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
import psycopg
import pytest
from psycopg import sql

from tenantctl.checks import check_tenant
from tenantctl.checks.aws_posture import NAMES as AWS_CHECKS
from tenantctl.checks.db_posture import NAMES as DB_CHECKS
from tenantctl.checks.gateway_posture import NAMES as GATEWAY_CHECKS
from tenantctl.errors import PolicyViolation
from tenantctl.models import TenantSpec
from tenantctl.naming import GATEWAY_ROLE
from tenantctl.operations.provision import provision

CLEAN = "ck-posture"


def aws(sandbox, service: str):
    return boto3.client(service, endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)


def admin(sandbox, record) -> psycopg.Connection:
    return psycopg.connect(sandbox.pg_dsn(record.resources.store.database), autocommit=True)


@pytest.fixture(scope="module")
def clean(provision_tenant):
    return provision_tenant(CLEAN)


def outcomes(report) -> dict[str, str]:
    return {c.name: c.outcome.value for c in report.checks}


def test_a_fresh_tenant_passes_every_check(clean, workspace, tenantctl_cli):
    assert clean.last_error is None  # provision ran the same check at its end
    report = check_tenant(workspace, CLEAN)
    assert outcomes(report) == {name: "pass" for name in DB_CHECKS + GATEWAY_CHECKS + AWS_CHECKS}, report.summary()
    run = tenantctl_cli("check", CLEAN, "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["ok"] is True and out["failed"] == [] and out["exit_code"] == 0
    assert {c["name"] for c in out["checks"]} == set(DB_CHECKS + GATEWAY_CHECKS + AWS_CHECKS)
    fail_closed = next(c for c in out["checks"] if c["name"] == "fail-closed")
    assert "insert refused" in fail_closed["detail"] and "canaries visible" in fail_closed["detail"]


def test_check_leaves_no_canary_behind(clean, sandbox):
    with admin(sandbox, clean) as conn:
        schema = clean.resources.store.schema_name
        for table in ("conversations", "messages", "context_items"):
            count = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table))).fetchone()[0]
            assert count == 0, table


def test_human_output_is_a_table(clean, tenantctl_cli):
    run = tenantctl_cli("check", CLEAN)
    assert run.returncode == 0, run.stderr
    assert "rls-forced" in run.stdout and "kms-rotation" in run.stdout and "all 26 checks pass" in run.stdout
    unknown = tenantctl_cli("check", "ck-nobody")
    assert unknown.returncode == 6 and "not in the registry" in unknown.stderr


@contextmanager
def tampered_sql(sandbox, record, do: str, undo: str) -> Iterator[None]:
    names = {"schema": sql.Identifier(record.resources.store.schema_name),
             "role": sql.Identifier(record.resources.store.role), "gateway": sql.Identifier(GATEWAY_ROLE)}
    with admin(sandbox, record) as conn:
        conn.execute(sql.SQL(do).format(**names))
        try:
            yield
        finally:
            conn.execute(sql.SQL(undo).format(**names))


DB_TAMPERING = [
    pytest.param("ALTER TABLE {schema}.messages NO FORCE ROW LEVEL SECURITY",
                 "ALTER TABLE {schema}.messages FORCE ROW LEVEL SECURITY", {"rls-forced"}, id="no-force-rls"),
    pytest.param("ALTER TABLE {schema}.context_items DISABLE ROW LEVEL SECURITY",
                 "ALTER TABLE {schema}.context_items ENABLE ROW LEVEL SECURITY", {"rls-enabled", "fail-closed"},
                 id="rls-disabled"),
    pytest.param("ALTER ROLE {role} BYPASSRLS", "ALTER ROLE {role} NOBYPASSRLS", {"role-no-bypassrls", "fail-closed"},
                 id="bypassrls"),
    # (a superuser may use every schema: a neighbour's schema makes that visible whatever ran before)
    pytest.param("ALTER ROLE {role} SUPERUSER; CREATE SCHEMA tenant_ck_neighbour",
                 "ALTER ROLE {role} NOSUPERUSER; DROP SCHEMA tenant_ck_neighbour",
                 {"role-not-superuser", "fail-closed", "no-foreign-schema-access"}, id="superuser"),
    pytest.param("ALTER ROLE {role} CREATEROLE", "ALTER ROLE {role} NOCREATEROLE", {"role-no-admin-attributes"},
                 id="createrole"),
    pytest.param("ALTER TABLE {schema}.conversations OWNER TO {role}",
                 # (the owner change folded the role's grants into ownership: give them back)
                 "ALTER TABLE {schema}.conversations OWNER TO CURRENT_USER; "
                 "GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.conversations TO {role}",
                 {"role-owns-nothing"}, id="owner"),
    pytest.param("CREATE UNIQUE INDEX ck_by_item ON {schema}.context_items (item_id)",
                 "DROP INDEX {schema}.ck_by_item", {"unique-keys-include-tenant"}, id="unique-without-tenant"),
    pytest.param("CREATE POLICY ck_open ON {schema}.conversations USING (true)",
                 "DROP POLICY ck_open ON {schema}.conversations", {"rls-policy", "fail-closed"}, id="open-policy"),
    pytest.param("CREATE SCHEMA tenant_ck_other; GRANT USAGE ON SCHEMA tenant_ck_other TO {role}",
                 "DROP SCHEMA tenant_ck_other", {"no-foreign-schema-access"}, id="foreign-schema"),
    # The shared pool's gateway role.
    # (PostgreSQL 16+ fixes a membership's INHERIT when granted: the role attribute governs later grants)
    pytest.param("ALTER ROLE {gateway} INHERIT", "ALTER ROLE {gateway} NOINHERIT", {"gateway-attributes"},
                 id="gateway-inherits"),
    pytest.param("GRANT USAGE ON SCHEMA {schema} TO {gateway}; GRANT SELECT ON {schema}.messages TO {gateway}",
                 "REVOKE SELECT ON {schema}.messages FROM {gateway}; REVOKE USAGE ON SCHEMA {schema} FROM {gateway}",
                 {"gateway-no-privileges", "gateway-reads-nothing"}, id="gateway-granted-a-table"),
    pytest.param("GRANT pg_read_all_data TO {gateway}", "REVOKE pg_read_all_data FROM {gateway}",
                 {"gateway-memberships"}, id="gateway-member-of-another-role"),
    pytest.param("REVOKE {role} FROM {gateway}", "GRANT {role} TO {gateway}", {"gateway-memberships"},
                 id="gateway-not-a-member"),
]


@pytest.mark.parametrize("do, undo, expected", DB_TAMPERING)
def test_database_tampering_fails_the_named_check(clean, workspace, sandbox, do, undo, expected):
    with tampered_sql(sandbox, clean, do, undo):
        report = check_tenant(workspace, CLEAN)
        assert {c.name for c in report.failed} == expected, report.summary()
        assert report.exit_code() == 8 and report.errors == []
    after = check_tenant(workspace, CLEAN)
    assert after.ok, after.summary()  # undone: clean again


def test_cli_exits_8_and_names_the_check(clean, sandbox, tenantctl_cli):
    with tampered_sql(sandbox, clean, "ALTER TABLE {schema}.messages NO FORCE ROW LEVEL SECURITY",
                      "ALTER TABLE {schema}.messages FORCE ROW LEVEL SECURITY"):
        run = tenantctl_cli("check", CLEAN, "--json")
        human = tenantctl_cli("check", CLEAN)
    assert run.returncode == 8, run.stderr
    out = json.loads(run.stdout)
    assert out["ok"] is False and out["failed"] == ["rls-forced"] and out["exit_code"] == 8
    forced = next(c for c in out["checks"] if c["name"] == "rls-forced")
    assert forced["outcome"] == "fail" and "messages" in forced["detail"]
    assert human.returncode == 8 and "1 check(s) failed: rls-forced" in human.stdout


def _tamper_aws(sandbox, record, what: str):
    """Break one AWS setting behind tenantctl's back; returns the undo."""
    kms, sqs, s3, iam = (aws(sandbox, s) for s in ("kms", "sqs", "s3", "iam"))
    res = record.resources
    key_id = res.kms_key_arn.rsplit("/", 1)[-1]  # moto's key-state calls want the bare id
    if what == "key-disabled":
        kms.disable_key(KeyId=key_id)
        return lambda: kms.enable_key(KeyId=key_id)
    if what == "key-pending-deletion":
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
        return lambda: (kms.cancel_key_deletion(KeyId=key_id), kms.enable_key(KeyId=key_id))
    if what == "rotation":
        kms.disable_key_rotation(KeyId=res.kms_key_arn)
        return lambda: kms.enable_key_rotation(KeyId=res.kms_key_arn)
    if what == "key-policy":
        old = kms.get_key_policy(KeyId=res.kms_key_arn, PolicyName="default")["Policy"]
        doc = json.loads(old)
        doc["Statement"].append({"Sid": "Everyone", "Effect": "Allow", "Principal": {"AWS": "*"},
                                 "Action": "kms:Decrypt", "Resource": "*"})
        kms.put_key_policy(KeyId=res.kms_key_arn, PolicyName="default", Policy=json.dumps(doc))
        return lambda: kms.put_key_policy(KeyId=res.kms_key_arn, PolicyName="default", Policy=old)
    if what == "dlq-sse":
        attrs = sqs.get_queue_attributes(QueueUrl=res.dlq_url, AttributeNames=["KmsMasterKeyId"])["Attributes"]
        key = attrs["KmsMasterKeyId"]
        sqs.set_queue_attributes(QueueUrl=res.dlq_url, Attributes={"KmsMasterKeyId": ""})
        return lambda: sqs.set_queue_attributes(QueueUrl=res.dlq_url, Attributes={"KmsMasterKeyId": key})
    if what == "public-access":
        block = s3.get_public_access_block(Bucket=res.bucket)["PublicAccessBlockConfiguration"]
        s3.put_public_access_block(Bucket=res.bucket,
                                   PublicAccessBlockConfiguration={**block, "RestrictPublicBuckets": False})
        return lambda: s3.put_public_access_block(Bucket=res.bucket, PublicAccessBlockConfiguration=block)
    if what == "tag":
        kms.untag_resource(KeyId=res.kms_key_arn, TagKeys=["tenant"])
        tag = [{"TagKey": "tenant", "TagValue": record.tenant_id}]
        return lambda: kms.tag_resource(KeyId=res.kms_key_arn, Tags=tag)
    if what == "trust":
        role = res.role_arn.rsplit("/", 1)[-1]
        old = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
        loose = json.loads(json.dumps(old))
        loose["Statement"][0].pop("Condition")
        iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(loose))
        return lambda: iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(old))
    if what == "trust-root":  # the account root instead of the runtime role: anyone with sts:AssumeRole
        role = res.role_arn.rsplit("/", 1)[-1]
        old = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
        rooted = json.loads(json.dumps(old))
        rooted["Statement"][0]["Principal"] = {"AWS": f"arn:aws:iam::{res.role_arn.split(':')[4]}:root"}
        iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(rooted))
        return lambda: iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(old))
    if what == "policy-prefix":
        role = res.role_arn.rsplit("/", 1)[-1]
        name = iam.list_role_policies(RoleName=role)["PolicyNames"][0]
        old = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        wide = json.loads(json.dumps(old))
        objects = wide["Statement"][0]
        objects["Resource"] = objects["Resource"].replace(f"/{record.tenant_id}/*", f"/{record.tenant_id}*")
        iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(wide))
        return lambda: iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(old))
    raise AssertionError(what)


@pytest.mark.parametrize("what, expected", [
    ("key-disabled", {"kms-key-state"}),
    ("key-pending-deletion", {"kms-key-state"}),
    ("rotation", {"kms-rotation"}),
    ("key-policy", {"kms-key-policy"}),
    ("dlq-sse", {"dlq-encryption"}),
    ("public-access", {"bucket-public-access"}),
    ("tag", {"tags"}),
    ("trust", {"role-trust"}),
    ("trust-root", {"role-trust"}),
    ("policy-prefix", {"role-policy-scope"}),  # tenants/ck-posture* would reach tenants/ck-posture-x/
])
def test_aws_tampering_fails_the_named_check(clean, workspace, sandbox, what, expected):
    undo = _tamper_aws(sandbox, clean, what)
    try:
        report = check_tenant(workspace, CLEAN)
        assert {c.name for c in report.failed} == expected, report.summary()
        assert report.exit_code() == 8
    finally:
        undo()
    after = check_tenant(workspace, CLEAN)
    assert after.ok, after.summary()


@pytest.mark.parametrize("what, state", [("key-disabled", "is Disabled"),
                                         ("key-pending-deletion", "is PendingDeletion (deleted on ")])
def test_an_unusable_key_fails_the_check_naming_its_state(clean, sandbox, tenantctl_cli, what, state):
    undo = _tamper_aws(sandbox, clean, what)
    try:
        run = tenantctl_cli("check", CLEAN, "--json")
    finally:
        undo()
    assert run.returncode == 8, run.stderr
    out = json.loads(run.stdout)
    assert out["failed"] == ["kms-key-state"]
    detail = next(c["detail"] for c in out["checks"] if c["name"] == "kms-key-state")
    assert f"{clean.resources.kms_key_arn} {state}" in detail


def test_a_trust_naming_the_account_root_fails_the_check(clean, workspace, sandbox):
    undo = _tamper_aws(sandbox, clean, "trust-root")
    try:
        [trust] = [c for c in check_tenant(workspace, CLEAN).failed if c.name == "role-trust"]
    finally:
        undo()
    assert "trusts the account root arn:aws:iam::" in trust.detail
    assert "assume with another principal of the account is allowed" in trust.detail


def test_provision_runs_the_check_and_records_a_violation(workspace, provision_tenant, sandbox):
    """A re-run that changes nothing still verifies: rotation switched off behind
    tenantctl's back is caught by a run that trusts its state (no refresh), the
    record keeps the error, exit 8; a plain provision repairs it instead."""
    tenant = "ck-post-check"
    record = provision_tenant(tenant)
    undo = _tamper_aws(sandbox, record, "rotation")
    try:
        with pytest.raises(PolicyViolation) as err:
            provision(workspace, TenantSpec(id=tenant), refresh=False)
        assert err.value.exit_code == 8 and "fail aws/kms-rotation" in str(err.value)
        stored = workspace.registry.require(tenant)
        assert stored.status.value == "active" and stored.lock is None
        assert "kms-rotation" in stored.last_error
        again, result = provision(workspace, TenantSpec(id=tenant))  # refreshes: the rotation is turned back on
    finally:
        undo()
    assert again.last_error is None and [c.name for c in result.drift] == [f"{tenant}-key"]
