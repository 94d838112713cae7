"""`tenantctl check` on the sandbox: a freshly provisioned tenant passes every
check; each tampering with a live resource (done behind tenantctl's back, as an
operator or an attacker would) makes the check fail, exit 8 and name the check;
and provision runs the same check at its end."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
import psycopg
import pytest
from fault_tools import listed
from psycopg import sql

from tenant_runtime.models import MovePhase, TenantMove, Tier
from tenant_runtime.tables import TABLES as STORE_TABLES
from tenantctl.checks import check_tenant
from tenantctl.checks.aws_posture import NAMES as AWS_CHECKS
from tenantctl.checks.db_posture import NAMES as DB_CHECKS
from tenantctl.checks.gateway_posture import NAMES as GATEWAY_CHECKS
from tenantctl.checks.network_posture import NAMES as NETWORK_CHECKS
from tenantctl.checks.placement import NAMES as PLACEMENT_CHECKS
from tenantctl.errors import PolicyViolation
from tenantctl.models import TenantSpec
from tenantctl.naming import DEFAULT_CELL, GATEWAY_ROLE, database_name, rotation_function_name
from tenantctl.operations.provision import provision

CLEAN = "ck-posture"
ALL_CHECKS = DB_CHECKS + GATEWAY_CHECKS + AWS_CHECKS + NETWORK_CHECKS + PLACEMENT_CHECKS


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
    assert outcomes(report) == {name: "pass" for name in ALL_CHECKS}, report.summary()
    run = tenantctl_cli("check", CLEAN, "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["ok"] is True and out["failed"] == [] and out["exit_code"] == 0
    assert {c["name"] for c in out["checks"]} == set(ALL_CHECKS)
    fail_closed = next(c for c in out["checks"] if c["name"] == "fail-closed")
    assert "insert refused" in fail_closed["detail"] and "canaries visible" in fail_closed["detail"]


def test_check_leaves_no_canary_behind(clean, sandbox):
    with admin(sandbox, clean) as conn:
        schema = clean.resources.store.schema_name
        for table in STORE_TABLES:
            count = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table))).fetchone()[0]
            assert count == 0, table


def test_human_output_is_a_table(clean, tenantctl_cli):
    run = tenantctl_cli("check", CLEAN)
    assert run.returncode == 0, run.stderr
    assert "rls-forced" in run.stdout and "kms-rotation" in run.stdout
    assert f"all {len(ALL_CHECKS)} checks pass" in run.stdout
    unknown = tenantctl_cli("check", "ck-nobody")
    assert unknown.returncode == 6 and "not in the registry" in unknown.stderr


@contextmanager
def tampered_sql(sandbox, record, do: str, undo: str) -> Iterator[None]:
    store = record.resources.store
    names = {"schema": sql.Identifier(store.schema_name), "role": sql.Identifier(store.role),
             "database": sql.Identifier(store.database), "gateway": sql.Identifier(GATEWAY_ROLE)}
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
                 "ALTER TABLE {schema}.context_items ENABLE ROW LEVEL SECURITY",
                 {"rls-enabled", "fail-closed", "rls-lints"}, id="rls-disabled"),
    pytest.param("ALTER ROLE {role} BYPASSRLS", "ALTER ROLE {role} NOBYPASSRLS", {"role-no-bypassrls", "fail-closed"},
                 id="bypassrls"),
    # (a superuser may use every schema: a neighbour's schema makes that visible whatever ran before)
    pytest.param("ALTER ROLE {role} SUPERUSER; CREATE SCHEMA tenant_ck_neighbour",
                 "ALTER ROLE {role} NOSUPERUSER; DROP SCHEMA tenant_ck_neighbour",
                 {"role-not-superuser", "fail-closed", "no-foreign-schema-access", "db-public-privileges"},
                 id="superuser"),
    pytest.param("ALTER ROLE {role} CREATEROLE", "ALTER ROLE {role} NOCREATEROLE", {"role-no-admin-attributes"},
                 id="createrole"),
    pytest.param("ALTER TABLE {schema}.conversations OWNER TO {role}",
                 # (the owner change folded the role's grants into ownership: give them back)
                 "ALTER TABLE {schema}.conversations OWNER TO CURRENT_USER; "
                 "GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.conversations TO {role}",
                 {"role-owns-nothing"}, id="owner"),
    # Any role may create one (lo_create needs no privilege): data outside its schema and backups.
    pytest.param("SELECT lo_from_bytea(424242, 'kept outside the schema'); ALTER LARGE OBJECT 424242 OWNER TO {role}",
                 "SELECT lo_unlink(424242)", {"role-owns-nothing"}, id="large-object"),
    pytest.param("SELECT lo_from_bytea(424243, 'x'); ALTER LARGE OBJECT 424243 OWNER TO {gateway}",
                 "SELECT lo_unlink(424243)", {"gateway-owns-nothing"}, id="gateway-large-object"),
    # No bound on the role's logins (every connection slot of the shared server), or another bound than its spec's.
    pytest.param("ALTER ROLE {role} CONNECTION LIMIT -1", "ALTER ROLE {role} CONNECTION LIMIT 10",
                 {"role-connection-limit"}, id="no-connection-limit"),
    pytest.param("ALTER ROLE {role} CONNECTION LIMIT 500", "ALTER ROLE {role} CONNECTION LIMIT 10",
                 {"role-connection-limit"}, id="another-connection-limit"),
    # Defaults the role set for itself (any role may): every login as it inherits them.
    pytest.param("ALTER ROLE {role} SET work_mem = '64kB'", "ALTER ROLE {role} RESET work_mem",
                 {"role-settings"}, id="role-default"),
    pytest.param("ALTER ROLE {role} IN DATABASE {database} SET lock_timeout = '5s'",
                 "ALTER ROLE {role} IN DATABASE {database} RESET lock_timeout", {"role-settings"},
                 id="role-default-in-database"),
    pytest.param("CREATE UNIQUE INDEX ck_by_item ON {schema}.context_items (item_id)",
                 "DROP INDEX {schema}.ck_by_item", {"unique-keys-include-tenant"}, id="unique-without-tenant"),
    pytest.param("CREATE POLICY ck_open ON {schema}.conversations USING (true)",
                 "DROP POLICY ck_open ON {schema}.conversations", {"rls-policy", "fail-closed", "rls-lints"},
                 id="open-policy"),
    # A table whose read errors without the setting (closed) hides no other table's rows: an
    # open read policy on conversations is still found.
    pytest.param("CREATE POLICY ck_err ON {schema}.messages FOR SELECT "
                 "USING (1 / length(coalesce(current_setting('app.tenant_id', true), '')) < 0); "
                 "CREATE POLICY ck_open ON {schema}.conversations FOR SELECT USING (true)",
                 "DROP POLICY ck_err ON {schema}.messages; DROP POLICY ck_open ON {schema}.conversations",
                 {"rls-policy", "fail-closed", "rls-lints"}, id="erroring-table-beside-open-policy"),
    pytest.param("CREATE SCHEMA tenant_ck_other; GRANT USAGE ON SCHEMA tenant_ck_other TO {role}",
                 "DROP SCHEMA tenant_ck_other", {"no-foreign-schema-access"}, id="foreign-schema"),
    # The tenant's own objects granted outside the tenant: to PUBLIC, to another role.
    pytest.param("GRANT USAGE ON SCHEMA {schema} TO PUBLIC; GRANT SELECT ON {schema}.messages TO PUBLIC",
                 "REVOKE SELECT ON {schema}.messages FROM PUBLIC; REVOKE USAGE ON SCHEMA {schema} FROM PUBLIC",
                 # (the gateway, as itself, is PUBLIC too)
                 {"no-outside-grants", "gateway-no-privileges", "gateway-reads-nothing"}, id="granted-to-public"),
    pytest.param("CREATE ROLE ck_reader; GRANT SELECT ON {schema}.documents TO ck_reader",
                 "REVOKE SELECT ON {schema}.documents FROM ck_reader; DROP ROLE ck_reader",
                 {"no-outside-grants"}, id="granted-to-another-role"),
    # A member of the tenant's role reads what it reads (an admin, SUPERUSER or CREATEROLE, may be one).
    pytest.param("CREATE ROLE ck_member LOGIN; GRANT {role} TO ck_member; CREATE ROLE ck_admin CREATEROLE; "
                 "GRANT {role} TO ck_admin",
                 "DROP ROLE ck_member; DROP ROLE ck_admin", {"no-outside-grants"}, id="role-granted-to-another"),
    # An owner may switch its table's RLS off.
    pytest.param("CREATE ROLE ck_owner; ALTER TABLE {schema}.summaries OWNER TO ck_owner",
                 "ALTER TABLE {schema}.summaries OWNER TO CURRENT_USER; DROP ROLE ck_owner", {"no-outside-grants"},
                 id="table-owned-by-another"),
    # A default privilege in its schema grants each table made there later (by the admin, by the role itself).
    pytest.param("ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO PUBLIC",
                 "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE SELECT ON TABLES FROM PUBLIC",
                 {"no-outside-grants"}, id="default-privilege-to-public"),
    pytest.param("CREATE ROLE ck_later; ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA {schema} "
                 "GRANT SELECT ON TABLES TO ck_later",
                 "ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA {schema} REVOKE SELECT ON TABLES FROM ck_later; "
                 "DROP ROLE ck_later", {"no-outside-grants"}, id="default-privilege-of-the-role-to-another"),
    # The role's own defaults in every schema (no IN SCHEMA), or in another one: whatever it may create later.
    pytest.param("ALTER DEFAULT PRIVILEGES FOR ROLE {role} GRANT SELECT ON TABLES TO PUBLIC; "
                 "ALTER DEFAULT PRIVILEGES FOR ROLE {role} GRANT USAGE ON SCHEMAS TO PUBLIC",
                 "ALTER DEFAULT PRIVILEGES FOR ROLE {role} REVOKE SELECT ON TABLES FROM PUBLIC; "
                 "ALTER DEFAULT PRIVILEGES FOR ROLE {role} REVOKE USAGE ON SCHEMAS FROM PUBLIC",
                 {"no-outside-grants"}, id="default-privilege-of-the-role-everywhere"),
    pytest.param("ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO PUBLIC; "
                 "ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA public GRANT USAGE ON TYPES TO PUBLIC",
                 "ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA public REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC; "
                 "ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA public REVOKE USAGE ON TYPES FROM PUBLIC",
                 {"no-outside-grants"}, id="default-privilege-of-the-role-in-another-schema"),
    # PUBLIC's defaults given back on the maintenance database; TEMP to the role on its own.
    pytest.param("GRANT CONNECT, TEMPORARY ON DATABASE postgres TO PUBLIC",
                 "REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC", {"db-public-privileges"},
                 id="public-connect"),
    pytest.param("GRANT TEMPORARY ON DATABASE {database} TO {role}",
                 "REVOKE TEMPORARY ON DATABASE {database} FROM {role}", {"db-public-privileges"}, id="temp-tables"),
    # splinter's lints: a view with its owner's rights (0010), an index duplicating the key (0009).
    pytest.param("CREATE VIEW {schema}.ck_all AS SELECT * FROM {schema}.messages", "DROP VIEW {schema}.ck_all",
                 {"rls-lints"}, id="security-definer-view"),
    pytest.param("CREATE INDEX ck_dup ON {schema}.messages (tenant_id, conversation_id, seq)",
                 "DROP INDEX {schema}.ck_dup", {"rls-lints"}, id="duplicate-index"),
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


def test_a_grant_to_public_is_named_with_its_object_and_grantee(clean, workspace, sandbox):
    with tampered_sql(sandbox, clean, "GRANT SELECT, UPDATE ON {schema}.messages TO PUBLIC",
                      "REVOKE ALL ON {schema}.messages FROM PUBLIC"):
        report = check_tenant(workspace, CLEAN)
    found = next(c for c in report.failed if c.name == "no-outside-grants")
    assert found.detail.startswith(
        f"SELECT, UPDATE on table {clean.resources.store.schema_name}.messages to PUBLIC"), found.detail


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
    assert human.returncode == 8 and "1 check(s) failed: database/rls-forced" in human.stdout


def _bucket_policy_or_none(s3, bucket: str) -> dict:
    try:
        return s3.get_bucket_policy(Bucket=bucket)
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] != "NoSuchBucketPolicy":
            raise
        return {}


def _tamper_aws(sandbox, record, what: str, workspace=None):
    """Break one AWS setting behind tenantctl's back; returns the undo (``workspace``: for an undo
    that repairs through the engine)."""
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
    if what == "alias-repointed":  # whatever encrypts by the alias would use another key
        other = kms.create_key(Description="ck-other")["KeyMetadata"]["KeyId"]
        kms.update_alias(AliasName=res.kms_alias, TargetKeyId=other)
        return lambda: kms.update_alias(AliasName=res.kms_alias, TargetKeyId=key_id)
    if what in ("foreign-grant", "grant-other-secret"):
        context = {"SecretARN": res.store.secret_arn.replace(f"/{record.tenant_id}/", "/ck-other/")}
        grant = kms.create_grant(
            KeyId=res.kms_key_arn, Operations=["Decrypt"], **(
                {"GranteePrincipal": "arn:aws:iam::999999999999:root"} if what == "foreign-grant" else
                {"GranteePrincipal": f"arn:aws:iam::{res.role_arn.split(':')[4]}:role/rotator",
                 "Constraints": {"EncryptionContextSubset": context}}))["GrantId"]
        return lambda: kms.revoke_grant(KeyId=res.kms_key_arn, GrantId=grant)
    if what == "queue-policy":
        sqs.set_queue_attributes(QueueUrl=res.queue_url, Attributes={"Policy": json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sqs:*",
                                                    "Resource": "*"}]})})
        return lambda: sqs.set_queue_attributes(QueueUrl=res.queue_url, Attributes={"Policy": ""})
    if what == "secret-policy":
        secrets = aws(sandbox, "secretsmanager")
        secrets.put_resource_policy(SecretId=res.store.secret_arn, ResourcePolicy=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                                                    "Principal": {"AWS": "arn:aws:iam::999999999999:root"},
                                                    "Resource": "*"}]}))
        return lambda: secrets.delete_resource_policy(SecretId=res.store.secret_arn)
    if what == "dlq-sse":
        attrs = sqs.get_queue_attributes(QueueUrl=res.dlq_url, AttributeNames=["KmsMasterKeyId"])["Attributes"]
        key = attrs["KmsMasterKeyId"]
        sqs.set_queue_attributes(QueueUrl=res.dlq_url, Attributes={"KmsMasterKeyId": ""})
        return lambda: sqs.set_queue_attributes(QueueUrl=res.dlq_url, Attributes={"KmsMasterKeyId": key})
    if what == "bucket-policy-allows":  # another account let read the tenant's objects
        # (the sandbox leaves out the TLS-only Deny moto cannot evaluate: often no policy at all)
        old = _bucket_policy_or_none(s3, res.bucket).get("Policy")
        doc = json.loads(old) if old else {"Version": "2012-10-17", "Statement": []}
        doc["Statement"].append({"Sid": "Partner", "Effect": "Allow", "Action": "s3:GetObject",
                                 "Principal": {"AWS": "arn:aws:iam::999999999999:root"},
                                 "Resource": f"arn:aws:s3:::{res.bucket}/{res.prefix}*",
                                 "Condition": {"StringEquals": {"aws:PrincipalAccount": "999999999999"}}})
        s3.put_bucket_policy(Bucket=res.bucket, Policy=json.dumps(doc))
        return lambda: (s3.put_bucket_policy(Bucket=res.bucket, Policy=old) if old
                        else s3.delete_bucket_policy(Bucket=res.bucket))
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
    if what in ("key-policy-actions", "key-policy-service"):
        old = kms.get_key_policy(KeyId=res.kms_key_arn, PolicyName="default")["Policy"]
        doc = json.loads(old)
        if what == "key-policy-actions":  # the role's grant widened in the key policy only
            use = next(s for s in doc["Statement"] if s.get("Sid") == "TenantUse")
            use["Action"] = [*use["Action"], "kms:ReEncrypt*"]
        else:  # a service principal without the condition confining it
            doc["Statement"].append({"Sid": "Logs", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*",
                                     "Principal": {"Service": f"logs.{sandbox.region}.amazonaws.com"}})
        kms.put_key_policy(KeyId=res.kms_key_arn, PolicyName="default", Policy=json.dumps(doc))
        return lambda: kms.put_key_policy(KeyId=res.kms_key_arn, PolicyName="default", Policy=old)
    if what in ("rotation-off", "rotation-other"):
        sm = aws(sandbox, "secretsmanager")
        before = sm.describe_secret(SecretId=res.store.secret_arn)
        if what == "rotation-off":
            sm.cancel_rotate_secret(SecretId=res.store.secret_arn)
        else:  # another tenant's function (a dedicated one's)
            other = _function(sandbox, rotation_function_name("ck-other"), res.role_arn)
            sm.rotate_secret(SecretId=res.store.secret_arn, RotationLambdaARN=other,
                             RotationRules=before["RotationRules"], RotateImmediately=False)

        def undo() -> None:
            sm.rotate_secret(SecretId=res.store.secret_arn, RotationLambdaARN=before["RotationLambdaARN"],
                             RotationRules=before["RotationRules"], RotateImmediately=False)
            for version, stages in sm.describe_secret(SecretId=res.store.secret_arn)["VersionIdsToStages"].items():
                if stages == ["AWSPENDING"]:
                    sm.update_secret_version_stage(SecretId=res.store.secret_arn, VersionStage="AWSPENDING",
                                                   RemoveFromVersionId=version)
        return undo
    if what == "topic-unencrypted":
        sns = aws(sandbox, "sns")
        topic = next(t["TopicArn"] for t in listed(sns, "list_topics", "Topics")
                     if t["TopicArn"].endswith(f":tenantctl-{record.tenant_id}-alarms"))
        key = sns.get_topic_attributes(TopicArn=topic)["Attributes"]["KmsMasterKeyId"]
        sns.set_topic_attributes(TopicArn=topic, AttributeName="KmsMasterKeyId", AttributeValue="")
        return lambda: sns.set_topic_attributes(TopicArn=topic, AttributeName="KmsMasterKeyId", AttributeValue=key)
    if what in ("topic-policy", "topic-subscription"):
        sns = aws(sandbox, "sns")
        topic = next(t["TopicArn"] for t in listed(sns, "list_topics", "Topics")
                     if t["TopicArn"].endswith(f":tenantctl-{record.tenant_id}-alarms"))
        if what == "topic-subscription":  # the alarms (and what they name) mailed out of the account
            sub = sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="someone@example.org",
                                ReturnSubscriptionArn=True)["SubscriptionArn"]
            return lambda: sns.unsubscribe(SubscriptionArn=sub)
        policy = sns.get_topic_attributes(TopicArn=topic)["Attributes"]["Policy"]
        doc = json.loads(policy)
        doc["Statement"].append({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::999999999999:root"},
                                 "Action": ["SNS:Subscribe", "SNS:Publish"], "Resource": topic})
        sns.set_topic_attributes(TopicArn=topic, AttributeName="Policy", AttributeValue=json.dumps(doc))
        return lambda: sns.set_topic_attributes(TopicArn=topic, AttributeName="Policy", AttributeValue=policy)
    if what == "bucket-logging-off":
        status = s3.get_bucket_logging(Bucket=res.bucket)
        s3.put_bucket_logging(Bucket=res.bucket, BucketLoggingStatus={})
        return lambda: s3.put_bucket_logging(Bucket=res.bucket,
                                             BucketLoggingStatus={"LoggingEnabled": status["LoggingEnabled"]})
    return _tamper_network(sandbox, what, workspace)


def _function(sandbox, name: str, role_arn: str) -> str:
    """A Lambda function named ``name`` (kept: later runs find it), its ARN."""
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("index.py", "def handler(event, context):\n    return None\n")
    lam = aws(sandbox, "lambda")
    try:
        return lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    except lam.exceptions.ResourceNotFoundException:
        return lam.create_function(FunctionName=name, Runtime="python3.12", Role=role_arn, Handler="index.handler",
                                   Code={"ZipFile": code.getvalue()})["FunctionArn"]


def _tamper_network(sandbox, what: str, workspace=None):
    """Break one setting of the platform's network or shared instance (a pooled
    tenant's); returns the undo."""
    ec2, rds = aws(sandbox, "ec2"), aws(sandbox, "rds")
    db = rds.describe_db_instances(DBInstanceIdentifier="tenantctl-platform")["DBInstances"][0]
    vpc = db["DBSubnetGroup"]["VpcId"]
    if what == "endpoint-policy":
        endpoint = ec2.describe_vpc_endpoints(Filters=[
            {"Name": "vpc-id", "Values": [vpc]}, {"Name": "service-name", "Values": ["com.amazonaws.us-east-1.s3"]},
        ])["VpcEndpoints"][0]
        full = json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]})
        ec2.modify_vpc_endpoint(VpcEndpointId=endpoint["VpcEndpointId"], PolicyDocument=full)
        return lambda: ec2.modify_vpc_endpoint(VpcEndpointId=endpoint["VpcEndpointId"],
                                               PolicyDocument=endpoint["PolicyDocument"])
    if what == "flow-log-deleted":
        [log] = ec2.describe_flow_logs(Filters=[{"Name": "resource-id", "Values": [vpc]}])["FlowLogs"]
        ec2.delete_flow_logs(FlowLogIds=[log["FlowLogId"]])
        # Put back by a repair of the platform, as an operator would: one made by hand is unknown to its
        # stack's state, whose next up (another module's `apply --refresh`) would make it again and be
        # refused (FlowLogAlreadyExists).
        return lambda: workspace.up_cell(DEFAULT_CELL, refresh=True)
    if what in ("default-sg-egress", "db-ingress-cidr"):
        if what == "default-sg-egress":
            group = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                          {"Name": "group-name", "Values": ["default"]}])
            group_id = group["SecurityGroups"][0]["GroupId"]
            perm, authorize, revoke = ({"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
                                       ec2.authorize_security_group_egress, ec2.revoke_security_group_egress)
        else:
            group_id = db["VpcSecurityGroups"][0]["VpcSecurityGroupId"]
            perm, authorize, revoke = ({"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
                                        "IpRanges": [{"CidrIp": "10.0.0.0/16"}]},
                                       ec2.authorize_security_group_ingress, ec2.revoke_security_group_ingress)
        authorize(GroupId=group_id, IpPermissions=[perm])
        return lambda: revoke(GroupId=group_id, IpPermissions=[perm])
    if what == "iam-auth-off":
        rds.modify_db_instance(DBInstanceIdentifier="tenantctl-platform", EnableIAMDatabaseAuthentication=False,
                               ApplyImmediately=True)
        return lambda: rds.modify_db_instance(DBInstanceIdentifier="tenantctl-platform", ApplyImmediately=True,
                                              EnableIAMDatabaseAuthentication=True)
    if what == "force-ssl-off":
        group = db["DBParameterGroups"][0]["DBParameterGroupName"]

        def force_ssl(value: str) -> None:
            rds.modify_db_parameter_group(DBParameterGroupName=group, Parameters=[
                {"ParameterName": "rds.force_ssl", "ParameterValue": value, "ApplyMethod": "pending-reboot"}])
        force_ssl("0")
        return lambda: force_ssl("1")
    raise AssertionError(what)


@pytest.mark.parametrize("what, expected", [
    ("key-disabled", {"kms-key-state"}),
    ("key-pending-deletion", {"kms-key-state"}),
    ("rotation", {"kms-rotation"}),
    ("key-policy", {"kms-key-policy"}),
    ("alias-repointed", {"kms-alias"}),
    ("foreign-grant", {"kms-grants"}),  # a grant is as good as a key-policy statement
    ("grant-other-secret", {"kms-grants"}),  # in the account, but for another tenant's secret
    ("queue-policy", {"queue-policy"}),
    ("secret-policy", {"secret-policy"}),
    ("dlq-sse", {"dlq-encryption"}),
    ("public-access", {"bucket-public-access"}),
    ("bucket-policy-allows", {"bucket-policy"}),
    ("tag", {"tags"}),
    ("trust", {"role-trust"}),
    ("trust-root", {"role-trust"}),
    ("policy-prefix", {"role-policy-scope"}),  # tenants/ck-posture* would reach tenants/ck-posture-x/
    ("key-policy-actions", {"kms-key-policy-matches-role"}),
    ("key-policy-service", {"kms-key-policy"}),
    ("rotation-off", {"secret-rotation"}),
    ("topic-unencrypted", {"alarm-topic-encryption"}),
    ("topic-policy", {"topic-access"}),  # another account may subscribe to the alarms
    ("topic-subscription", {"topic-access"}),
    ("bucket-logging-off", {"bucket-access-logging"}),
    ("endpoint-policy", {"vpc-endpoint-policy"}),
    ("flow-log-deleted", {"vpc-flow-logs"}),
    ("default-sg-egress", {"default-security-group"}),
    ("db-ingress-cidr", {"db-ingress"}),
    ("iam-auth-off", {"rds-hardening"}),
    ("force-ssl-off", {"rds-hardening"}),
])
def test_aws_tampering_fails_the_named_check(clean, workspace, sandbox, what, expected):
    undo = _tamper_aws(sandbox, clean, what, workspace)
    try:
        report = check_tenant(workspace, CLEAN)
        assert {c.name for c in report.failed} == expected, report.summary()
        assert report.exit_code() == 8
    finally:
        undo()
    after = check_tenant(workspace, CLEAN)
    assert after.ok, after.summary()


def test_a_policy_on_the_cells_gateway_secret_fails_gateway_secret_policy(clean, workspace, sandbox):
    """The gateway's password opens every pooled tenant's role of the cell: a resource policy
    handing it to another account fails each pooled tenant's check, not only `refresh --cell`."""
    arn = workspace.cell_outputs(clean.cell)["gateway_secret_arn"]
    secrets = aws(sandbox, "secretsmanager")
    secrets.put_resource_policy(SecretId=arn, ResourcePolicy=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                                                "Principal": {"AWS": "arn:aws:iam::999999999999:root"},
                                                "Resource": "*"}]}))
    try:
        report = check_tenant(workspace, CLEAN)
        assert {c.name for c in report.failed} == {"gateway-secret-policy"}, report.summary()
        assert "999999999999" in report.failed[0].detail
    finally:
        secrets.delete_resource_policy(SecretId=arn)
    after = check_tenant(workspace, CLEAN)
    assert after.ok, after.summary()


def test_an_open_move_admits_either_sides_rotation_function_and_tier_and_no_other(clean, workspace, sandbox):
    """Mid-move the stack is applied for the move's target before the record
    follows it: the target's rotation function, tier tag and key statements pass;
    another function still fails."""
    moving = clean.model_copy(update={"move": TenantMove(
        from_tier=Tier.pooled, to_tier=Tier.dedicated, from_cell=clean.cell, to_cell=clean.cell,
        phase=MovePhase.copying, old_store=clean.resources.store)})
    assert check_tenant(workspace, CLEAN, moving).ok
    undo = _tamper_aws(sandbox, clean, "rotation-other")
    try:
        [failed] = check_tenant(workspace, CLEAN, moving).failed
    finally:
        undo()
    rotated_by, expected = failed.detail.split(", not ")
    assert failed.name == "secret-rotation" and rotated_by.endswith(rotation_function_name("ck-other"))
    assert expected.endswith(f" or :function:{rotation_function_name(CLEAN)}"), failed.detail  # both sides'


@pytest.mark.parametrize(("forge", "expected"), [
    (lambda r: {"region": "eu-west-1"}, {"cell", "bucket"}),
    (lambda r: {"resources": r.resources.model_copy(update={
        "kms_key_arn": r.resources.kms_key_arn.replace(":123456789012:", ":222222222222:")})}, {"account-region"}),
    (lambda r: {"resources": r.resources.model_copy(update={"bucket": "tenantctl-cell-x-222222222222-us-east-1"})},
     {"bucket"}),
])
def test_a_record_out_of_its_cells_account_or_region_fails_placement(clean, workspace, forge, expected):
    """The placement checks read where the resources live: a record (or resource)
    claiming another region, account or bucket than its cell's is caught."""
    forged = clean.model_copy(update=forge(clean))
    report = check_tenant(workspace, clean.tenant_id, forged)
    failed = {c.name for c in report.failed if c.area == "placement"}
    assert expected <= failed, report.summary()


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


def test_a_resource_deleted_out_of_band_fails_its_checks_as_gone(workspace, provision_tenant, sandbox):
    """Not "could not run" (exit 7, the target unavailable): the tenant's posture is broken (exit 8),
    and a provision creates the resource again."""
    tenant = "ck-gone"
    record = provision_tenant(tenant)
    aws(sandbox, "sqs").delete_queue(QueueUrl=record.resources.dlq_url)
    report = check_tenant(workspace, tenant)
    assert report.exit_code() == 8 and not report.errors, report.summary()
    gone = [c for c in report.failed if c.detail.startswith("gone: ")]
    assert "dlq-encryption" in {c.name for c in gone} and all("tenantctl provision ID" in c.detail for c in gone)
    provision(workspace, TenantSpec(id=tenant))
    assert check_tenant(workspace, tenant).ok


def test_deployed_policy_documents_pass_parliament_and_cloudsplaining(clean, sandbox):
    """The documents as the sandbox holds them (trust, inline, key, endpoint and
    bucket policies of the tenant and the platform), through the same scanners
    and exceptions as the generated ones (tests/policy_scanners.py)."""
    from urllib.parse import unquote

    from policy_scanners import Document, endpoint_kind, findings

    iam, kms, ec2, s3 = (aws(sandbox, s) for s in ("iam", "kms", "ec2", "s3"))

    def doc(value) -> dict:
        return value if isinstance(value, dict) else json.loads(unquote(value))

    docs = []
    for role in listed(iam, "list_roles", "Roles"):
        if not role["RoleName"].startswith("tenantctl-") or role["RoleName"].endswith("-rot-role"):
            continue  # the rotation function's role is AWS's application's (a stand-in here)
        docs.append(Document("trust", role["RoleName"], doc(role["AssumeRolePolicyDocument"]), role["Arn"]))
        docs += [Document("identity", f"{role['RoleName']}/{name}", doc(iam.get_role_policy(
            RoleName=role["RoleName"], PolicyName=name)["PolicyDocument"]))
            for name in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]]
    for key in (clean.resources.kms_key_arn, kms.describe_key(KeyId="alias/tenantctl/platform")["KeyMetadata"]["Arn"]):
        docs.append(Document("key", key, doc(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])))
    docs += [Document(endpoint_kind(e["ServiceName"]), e["ServiceName"], doc(e["PolicyDocument"]))
             for e in ec2.describe_vpc_endpoints()["VpcEndpoints"]]
    for bucket in (b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith("tenantctl-")):
        try:  # the shared bucket's only statement (TLS only) is not given to moto: see handlers/s3.py
            docs.append(Document("bucket", bucket, doc(s3.get_bucket_policy(Bucket=bucket)["Policy"])))
        except s3.exceptions.ClientError:
            continue
    assert {d.kind for d in docs} == {"trust", "identity", "key", "gateway-endpoint", "interface-endpoint", "bucket"}
    assert f"tenantctl-{CLEAN}-app" in {d.name for d in docs}
    assert [f for d in docs for f in findings(d)] == []


def test_rls_lints_find_nothing_in_any_tenant_schema(clean, sandbox):
    """splinter's generic lints, adapted, on every tenant schema of every
    database on the sandbox (pooled ones in the shared database, dedicated
    ones in their own) provisioned so far in this session."""
    from tenantctl.checks.rls_lints import lint_schema

    with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as conn:
        databases = [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres'")]
    linted, found = [], []
    for database in databases:
        with psycopg.connect(sandbox.pg_dsn(database), autocommit=True) as conn:
            for (schema,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\\_%' "
                                          "AND nspname NOT LIKE 'tenant\\_ck\\_%other' ORDER BY 1").fetchall():
                linted.append(f"{database}/{schema}")
                found += [f"{database}/{schema}: {f}" for f in lint_schema(conn, schema)]
    assert f"tenantctl/{clean.resources.store.schema_name}" in linted
    assert found == []


def test_a_pooled_provision_makes_at_most_24_aws_calls(clean, workspace, monkeypatch, aws_calls):
    """The apply's creates, the registry's writes, the preflight and a post-provision check that reuses what
    the apply wrote (the cell's shared resources were read by the check of `clean`: still fresh here however
    long the tests before took on a loaded machine; its admin secret by the schema provider, read once per process)."""
    from tenantctl.checks import reads

    monkeypatch.setattr(reads, "CELL_READ_TTL", 24 * 3600.0)
    calls = aws_calls
    record, _ = provision(workspace, TenantSpec(id="ck-calls"))
    assert record.last_error is None
    assert len(calls) <= 24, sorted(calls)
    # Nothing the apply just wrote is read back.
    assert not {"iam.GetRole", "kms.DescribeKey", "sqs.ListQueueTags", "secretsmanager.DescribeSecret",
                "sns.GetTopicAttributes", "sns.ListSubscriptionsByTopic",
                # the cell's gateway secret's policy: read by the check of `clean` (the cell's reads)
                "secretsmanager.GetResourcePolicy"} & set(calls)


def test_what_the_apply_established_is_still_judged(clean, workspace):
    """The post-provision check takes a setting from the apply instead of reading it, and judges it as it
    would the live one: a key policy granting everyone, no rotation, no tags, as if the apply had written them."""
    from tenantctl.engines.base import AppliedResource

    res = clean.resources
    wide = {"Version": "2012-10-17", "Statement": [{"Sid": "Everyone", "Effect": "Allow", "Principal": "*",
                                                    "Action": "kms:*", "Resource": "*"}]}
    applied = [AppliedResource(type="aws:kms/key:Key", name="key", outputs={"arn": res.kms_key_arn},
                               inputs={"policy": json.dumps(wide), "enableKeyRotation": False})]
    report = check_tenant(workspace, CLEAN, applied=applied)
    assert {c.name for c in report.failed} == {"kms-key-policy", "kms-key-policy-matches-role", "kms-rotation", "tags"}
    assert outcomes(check_tenant(workspace, CLEAN))["kms-key-policy"] == "pass"  # live: the real policy


def test_each_workspace_is_checked_and_a_tampered_one_fails_by_name(workspace, provision_tenant, sandbox,
                                                                     tenantctl_cli):
    from tenantctl.checks.aws_posture import WORKSPACE_NAMES

    provision_tenant("ck-ws", workspaces=[{"name": "legal"}])  # provision ran the check, the workspace's included
    report = check_tenant(workspace, "ck-ws")
    mine = {(c.area, c.name): c.outcome.value for c in report.checks if c.area.startswith("workspace legal/")}
    assert mine == ({("workspace legal/database", n): "pass" for n in DB_CHECKS}
                    | {("workspace legal/aws", n): "pass" for n in WORKSPACE_NAMES}), report.summary()
    key = workspace.registry.require("ck-ws").workspaces["legal"].kms_key_arn
    kms = aws(sandbox, "kms")
    kms.disable_key_rotation(KeyId=key)
    try:
        run = tenantctl_cli("check", "ck-ws", "--json")
        assert run.returncode == 8, run.stderr
        failed = [(c["area"], c["name"]) for c in json.loads(run.stdout)["checks"] if c["outcome"] == "fail"]
        assert failed == [("workspace legal/aws", "kms-rotation")]
    finally:
        kms.enable_key_rotation(KeyId=key)
    # A workspace's own alarm topic subscribed to out of band fails its topic-access, by name.
    sns = aws(sandbox, "sns")
    topic = next(t["TopicArn"] for t in listed(sns, "list_topics", "Topics")
                 if t["TopicArn"].endswith(":tenantctl-ck-ws--legal-alarms"))
    sub = sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="someone@example.org",
                        ReturnSubscriptionArn=True)["SubscriptionArn"]
    try:
        assert [(c.area, c.name) for c in check_tenant(workspace, "ck-ws").failed] == [
            ("workspace legal/aws", "topic-access")]
    finally:
        sns.unsubscribe(SubscriptionArn=sub)
    # A workspace's queue tagged as its sibling's (or as the tenant's own) fails its tags check, by name.
    sqs, queue = aws(sandbox, "sqs"), workspace.registry.require("ck-ws").workspaces["legal"].queue_url
    for tampered in ({"workspace": "finance"}, None):
        if tampered:
            sqs.tag_queue(QueueUrl=queue, Tags=tampered)
        else:
            sqs.untag_queue(QueueUrl=queue, TagKeys=["workspace"])
        try:
            [tags] = [c for c in check_tenant(workspace, "ck-ws").failed]
            assert (tags.area, tags.name) == ("workspace legal/aws", "tags")
            assert f"queue: tagged workspace={tampered and 'finance'}" in tags.detail, tags
        finally:
            sqs.tag_queue(QueueUrl=queue, Tags={"workspace": "legal"})
    assert check_tenant(workspace, "ck-ws").failed == []


def test_a_dedicated_tenants_workspace_is_checked_on_its_own_database(workspace, sandbox):
    """Its schema is in the tenant's own instance, its secret rotated by the
    tenant's function: every check of the workspace passes there, tags included."""
    from tenantctl.checks.aws_posture import WORKSPACE_NAMES
    from tenantctl.operations.deprovision import deprovision

    spec = TenantSpec.model_validate({"id": "ck-ws-ded", "tier": "dedicated", "workspaces": [{"name": "legal"}]})
    record, _ = provision(workspace, spec)  # refused (PolicyViolation) if a check failed
    try:
        assert record.workspaces["legal"].store.database == record.resources.store.database == database_name(spec.id)
        mine = {(c.area, c.name): c.outcome.value for c in check_tenant(workspace, spec.id).checks
                if c.area.startswith("workspace legal/")}
        assert mine == ({("workspace legal/database", n): "pass" for n in DB_CHECKS}
                        | {("workspace legal/aws", n): "pass" for n in WORKSPACE_NAMES})
    finally:
        deprovision(workspace, spec.id, final_backup=False)


def test_several_tenants_are_checked_in_one_run_the_worst_exit_wins(clean, workspace, provision_tenant, sandbox,
                                                                     tenantctl_cli, tmp_path):
    other = provision_tenant("ck-fleet")
    # A provision that failed before creating anything: nothing to check, skipped with why.
    empty = workspace.registry.acquire(TenantSpec(id="ck-empty"), "provision")
    workspace.registry.release(empty, error="failed before creating anything", provision_failed=True)
    both = tenantctl_cli("check", CLEAN, "ck-fleet", "ck-empty", "--json")
    assert both.returncode == 0, both.stderr
    out = json.loads(both.stdout)
    assert [t["tenant_id"] for t in out["tenants"]] == ["ck-fleet", CLEAN]
    assert all(t["ok"] and {c["name"] for c in t["checks"]} == set(ALL_CHECKS) for t in out["tenants"])
    assert out["skipped"] == [{"tenant_id": "ck-empty", "reason": "no resources recorded (status provisioning): "
                                                                  "nothing to check"}]
    assert out["counts"] == {"tenants": 2, "passed": 2, "failed": 0, "unverified": 0, "warnings": 0, "skipped": 1}
    assert "plan: 2 tenant(s); checking 2 tenant(s)" in both.stderr and "[2/2]" in both.stderr

    summary = tmp_path / "posture.md"
    with tampered_sql(sandbox, other, "ALTER TABLE {schema}.messages NO FORCE ROW LEVEL SECURITY",
                      "ALTER TABLE {schema}.messages FORCE ROW LEVEL SECURITY"):
        human = tenantctl_cli("check", CLEAN, "ck-fleet", "--parallel", "1", "--markdown", str(summary))
        js = tenantctl_cli("check", "ck-fleet", CLEAN, "--json")
    assert human.returncode == 8 and js.returncode == 8, human.stderr
    by_id = {t["tenant_id"]: t for t in json.loads(js.stdout)["tenants"]}
    assert by_id["ck-fleet"]["failed"] == ["rls-forced"] and by_id[CLEAN]["ok"]
    assert "ck-fleet: fail database/rls-forced" in human.stderr  # its progress line
    assert "database/rls-forced: " in human.stdout and "1 of 2 tenant(s) pass every check; 1 failed" in human.stdout
    text = summary.read_text()
    assert "**1 tenant(s) failed a posture check**" in text
    assert "| `ck-fleet` | fail database/rls-forced |" in text and f"`{CLEAN}`" not in text

    # One of ids, --all or --cell: none, or two of them, is a usage error; an unknown cell is exit 6.
    assert tenantctl_cli("check").returncode == 2
    assert tenantctl_cli("check", CLEAN, "--all").returncode == 2
    unknown = tenantctl_cli("check", "--cell", "ck-nowhere")
    assert unknown.returncode == 6 and "no cell 'ck-nowhere'" in unknown.stderr
    assert tenantctl_cli("deprovision", "ck-empty", "--yes").returncode == 0


def test_a_store_indexed_by_another_analyzer_is_a_warning_that_keeps_exit_0(workspace, provision_tenant, sandbox,
                                                                             runtime, tenantctl_cli, tmp_path):
    """Right after an upgrade every store is `v1`: `check` names the store, the analyzer found and the fix,
    as a warning (not a failure: the fleet's exit code stays 0); a reindex clears it."""
    from tenant_runtime import analyzer

    record = provision_tenant("ck-ws", workspaces=[{"name": "legal"}])
    runtime.store.put_document(runtime.context("ck-ws"), "d1", "Key rotation", "keys rotate", {})
    runtime.store.put_document(runtime.context("ck-ws", "legal"), "d1", "Contract", "terms", {})
    store = record.resources.store
    with admin(sandbox, record) as conn:  # as a store from before identities: its key reads as v1
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(store.schema_name, "search_analyzers")))

    report = check_tenant(workspace, "ck-ws")
    [warned] = report.warnings
    assert (warned.area, warned.name, warned.outcome.value) == ("database", "search-analyzer", "warn")
    assert warned.detail == (f"the tenant's search index was built by analyzer v1, not tenantctl's "
                             f"{analyzer.identity()}: `tenantctl search reindex ck-ws` rebuilds it")
    assert report.ok and report.exit_code() == 0 and report.failed == report.errors == []
    mine = {(c.area, c.name): c.outcome.value for c in report.checks}
    assert mine[("workspace legal/database", "search-analyzer")] == "pass"

    one = tenantctl_cli("check", "ck-ws", "--json")
    assert one.returncode == 0, one.stderr
    out = json.loads(one.stdout)
    assert (out["ok"], out["warnings"], out["exit_code"]) == (True, ["search-analyzer"], 0)
    human = tenantctl_cli("check", "ck-ws")
    assert human.returncode == 0 and "1 check(s) warn: database/search-analyzer" in human.stdout, human.stdout

    summary = tmp_path / "posture.md"
    fleet = tenantctl_cli("check", "ck-ws", CLEAN, "--json")
    text = tenantctl_cli("check", "ck-ws", CLEAN, "--markdown", str(summary))
    assert fleet.returncode == text.returncode == 0, fleet.stderr
    counts = json.loads(fleet.stdout)["counts"]
    assert (counts["passed"], counts["warnings"]) == (2, 1)
    assert "`tenantctl search reindex ck-ws` rebuilds it" in text.stdout and "1 with warnings" in text.stdout
    assert "| `ck-ws` | warn database/search-analyzer: the tenant's search index" in summary.read_text()

    assert tenantctl_cli("search", "reindex", "ck-ws").returncode == 0
    assert check_tenant(workspace, "ck-ws").warnings == []
