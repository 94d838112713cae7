"""Drift you can see and repair, on the sandbox, through the real CLI.

Each kind of resource is changed out of band (a queue attribute and its
encryption, key rotation, the role's policy, a table's forced RLS, a deleted
queue, an extra queue tagged as the tenant's): `refresh` names each one
(resource, property, expected -> live), `apply --refresh` repairs each, and a
second `refresh` exits 0. (A tenant has no lifecycle rule of its own any more:
its cell's bucket holds the retention classes.) Then: `provision` of
an existing tenant repairs and says so; a one-field spec change previews
exactly its properties in the table, --json and markdown; previews refuse what
the run would refuse; `audit` finds what the registry and the cloud disagree
on; deprovision lists what it would delete before asking. Last, orphans that
are not: another tenant's queue and key tagged as a tenant's are reported as
mis-tagged and never removed; an orphan key is scheduled for deletion, and a
removal that fails fails the repair (apply and provision).

The tests run in file order and share their tenants (provisioning is the slow
part); they run in a project directory of their own (`df-*` tenants).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta

import psycopg
import pytest
import yaml
from fault_tools import POOLED, Cli, aws, inventory, listed, platform_outputs, registry_record
from faults import FAULT_THROTTLE_ENV, FAULT_THROTTLE_FILE_ENV
from psycopg import sql

from tenant_runtime.models import TenantLock, utcnow
from tenant_runtime.registry import item_key, record_to_item
from tenantctl import naming
from tenantctl.errors import CHANGES_PENDING, NotConfirmed
from tenantctl.models import StoreConnection, TenantRecord, TenantResources, TenantStatus, Tier, WorkspaceResources
from tenantctl.registry import new_lock

TENANT, GONE = "df-acme", "df-gone"
MATCH = ("--match", "df-*")
EXTRA_QUEUE = f"tenantctl-{TENANT}-extra"


@pytest.fixture(scope="module")
def cli(sandbox, tmp_path_factory) -> Cli:
    return Cli.create(sandbox, tmp_path_factory.mktemp("drift-project"))


@pytest.fixture(scope="module")
def acme(cli) -> TenantRecord:
    run = cli("provision", TENANT, "--json")
    assert run.returncode == 0, run
    return TenantRecord.model_validate(run.json()["record"])


def pg(sandbox, record: TenantRecord) -> psycopg.Connection:
    return psycopg.connect(sandbox.pg_dsn(record.resources.store.database), autocommit=True)


def row_security(sandbox, record: TenantRecord, table: str) -> tuple[bool, bool]:
    with pg(sandbox, record) as conn:
        return conn.execute("SELECT relrowsecurity, relforcerowsecurity FROM pg_class c JOIN pg_namespace n "
                            "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                            (record.resources.store.schema_name, table)).fetchone()


def access_policy(sandbox) -> tuple[str, dict]:
    iam, role = aws(sandbox, "iam"), naming.iam_role_name(TENANT)
    name = iam.list_role_policies(RoleName=role)["PolicyNames"][0]
    return name, iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]


def queue_attributes(sandbox, url: str) -> dict[str, str]:
    return aws(sandbox, "sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


def queue_names(sandbox) -> set[str]:
    urls = aws(sandbox, "sqs").list_queues(QueueNamePrefix=f"tenantctl-{TENANT}-").get("QueueUrls", [])
    return {u.rsplit("/", 1)[1] for u in urls}


def by_name(changes: list[dict]) -> dict[str, dict]:
    return {c["name"]: c for c in changes}


def diffs(change: dict) -> dict[str, tuple]:
    return {d["path"]: (d["old"], d["new"]) for d in change["diffs"]}


# -- every kind of drift, named, repaired -----------------------------------------------

def test_refresh_names_each_out_of_band_change(acme, cli, sandbox):
    res = acme.resources
    sqs, kms, iam = (aws(sandbox, s) for s in ("sqs", "kms", "iam"))
    assert cli("refresh", TENANT).returncode == 0  # freshly provisioned: no drift, no orphan

    # The queue: a longer delay, and its encryption removed.
    sqs.set_queue_attributes(QueueUrl=res.queue_url, Attributes={"DelaySeconds": "600", "KmsMasterKeyId": ""})
    kms.disable_key_rotation(KeyId=res.kms_key_arn)
    name, doc = access_policy(sandbox)
    doc["Statement"][0]["Resource"] = doc["Statement"][0]["Resource"].replace(f"/{TENANT}/*", f"/{TENANT}*")
    iam.put_role_policy(RoleName=naming.iam_role_name(TENANT), PolicyName=name, PolicyDocument=json.dumps(doc))
    with pg(sandbox, acme) as conn:
        conn.execute(sql.SQL("ALTER TABLE {}.messages NO FORCE ROW LEVEL SECURITY").format(
            sql.Identifier(res.store.schema_name)))
    sqs.delete_queue(QueueUrl=res.dlq_url)
    sqs.create_queue(QueueName=EXTRA_QUEUE, tags={"tenant": TENANT, "managed-by": "tenantctl"})

    md = cli.root / "drift.md"
    run = cli("refresh", TENANT, "--json", "--markdown", str(md))
    assert run.returncode == CHANGES_PENDING, run
    out = run.json()
    assert out["exit_code"] == CHANGES_PENDING and out["counts"]["drifted"] == 1
    [tenant] = out["tenants"]
    changed = by_name(tenant["resources"])
    assert set(changed) == {f"{TENANT}-{n}" for n in ("queue", "key", "access", "schema", "dlq")}
    assert diffs(changed[f"{TENANT}-key"]) == {"enableKeyRotation": (True, False)}
    queue = diffs(changed[f"{TENANT}-queue"])
    assert queue["delaySeconds"] == (0, 600) and queue["kmsMasterKeyId"] == (res.kms_key_arn, None)
    assert diffs(changed[f"{TENANT}-access"]) == {"policy.Statement[0].Resource": (
        f"{platform_outputs(sandbox)['bucket_arn']}/tenants/{TENANT}/*",
        f"{platform_outputs(sandbox)['bucket_arn']}/tenants/{TENANT}*")}
    assert diffs(changed[f"{TENANT}-schema"]) == {"row_security.messages": ("forced", "not forced")}
    assert changed[f"{TENANT}-dlq"]["op"] == "delete"
    assert [o["name"] for o in tenant["orphans"]] == [EXTRA_QUEUE]

    text = md.read_text()
    assert "`row_security.messages`: `forced` → `not forced`" in text
    assert "`enableKeyRotation`: `true` → `false`" in text
    assert f"| delete | `{TENANT}-dlq` |" in text and f"`sqs` `{EXTRA_QUEUE}`" in text
    human = cli("refresh", TENANT)
    assert human.returncode == CHANGES_PENDING, human
    assert "delaySeconds: 0 → 600" in human.stdout and EXTRA_QUEUE in human.stdout


def test_apply_refresh_repairs_each_and_a_second_refresh_is_clean(acme, cli, sandbox):
    res = acme.resources
    kms = aws(sandbox, "kms")
    preview = cli("apply", "--preview", "--refresh", "--json", *MATCH)
    assert preview.returncode == CHANGES_PENDING, preview
    planned = {r["tenant_id"]: r for r in preview.json()["results"]}[TENANT]
    assert planned["action"] == "repair" and planned["reason"].startswith("drift: 4 changed, 1 deleted")
    assert diffs(by_name(planned["resources"])[f"{TENANT}-queue"])["delaySeconds"] == (600, 0)
    assert by_name(planned["resources"])[f"{TENANT}-dlq"]["op"] == "create"
    assert kms.get_key_rotation_status(KeyId=res.kms_key_arn)["KeyRotationEnabled"] is False  # a preview

    run = cli("apply", "--refresh", "--yes", "--json", *MATCH)  # --yes: removing the orphan deletes it
    assert run.returncode == 0, run
    done = {r["tenant_id"]: r for r in run.json()["results"]}[TENANT]
    assert done["action"] == "repair" and done["ok"]
    assert [(o["name"], o["removed"]) for o in done["orphans"]] == [(EXTRA_QUEUE, "deleted")]
    assert {c["name"] for c in done["drift"]} >= {f"{TENANT}-key", f"{TENANT}-dlq"}

    # Repaired, as the sandbox itself says.
    assert kms.get_key_rotation_status(KeyId=res.kms_key_arn)["KeyRotationEnabled"] is True
    attrs = queue_attributes(sandbox, res.queue_url)
    assert attrs["DelaySeconds"] == "0" and attrs["KmsMasterKeyId"] == res.kms_key_arn
    assert access_policy(sandbox)[1]["Statement"][0]["Resource"].endswith(f"/tenants/{TENANT}/*")
    assert row_security(sandbox, acme, "messages") == (True, True)
    assert queue_names(sandbox) == {naming.queue_name(TENANT), naming.dlq_name(TENANT)}
    assert queue_attributes(sandbox, res.dlq_url)["KmsMasterKeyId"] == res.kms_key_arn
    assert inventory(sandbox, TENANT) == POOLED

    again = cli("refresh", TENANT, "--json")
    assert again.returncode == 0, again
    assert again.json()["tenants"][0]["resources"] == [] and again.json()["tenants"][0]["orphans"] == []


def test_a_refresh_preview_counts_what_the_repair_does(acme, cli, sandbox):
    """A DLQ deleted out of band is made again under its name, so with the ARN it
    had: the preview plans its dependents (the queue's redrive policy, the role's
    access) with that ARN, not as updates of unknowns the run finds unchanged."""
    aws(sandbox, "sqs").delete_queue(QueueUrl=acme.resources.dlq_url)
    preview = cli("apply", "--preview", "--refresh", "--json", *MATCH)
    run = cli("apply", "--refresh", "--yes", "--json", *MATCH)
    assert preview.returncode == CHANGES_PENDING and run.returncode == 0, (preview, run)
    [planned], [done] = preview.json()["results"], run.json()["results"]
    assert [c["name"] for c in planned["resources"]] == [f"{TENANT}-dlq"], planned["resources"]
    assert planned["changes"] == done["changes"], (planned["resources"], done["resources"])


@pytest.mark.parametrize("deleted", ["kms alias", "role"])
def test_a_refresh_preview_counts_the_repair_of_a_resource_whose_arn_its_name_decides(deleted, acme, cli, sandbox):
    """A key alias or the tenant's role deleted out of band is made again under
    its name, so with the ARN it had: the preview plans what uses that ARN (the
    key's ARN, read from the alias, by the queues, secret and policies; the
    role's by the key policy and grants) as the run finds it, unchanged."""
    res = acme.resources
    if deleted == "kms alias":
        aws(sandbox, "kms").delete_alias(AliasName=res.kms_alias)
    else:
        iam, role = aws(sandbox, "iam"), res.role_arn.rsplit("/", 1)[-1]
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
            iam.delete_role_policy(RoleName=role, PolicyName=name)
        for attached in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
            iam.detach_role_policy(RoleName=role, PolicyArn=attached["PolicyArn"])
        iam.delete_role(RoleName=role)
    preview = cli("apply", "--preview", "--refresh", "--json", *MATCH)
    run = cli("apply", "--refresh", "--yes", "--json", *MATCH)
    assert preview.returncode == CHANGES_PENDING and run.returncode == 0, (preview, run)
    [planned], [done] = preview.json()["results"], run.json()["results"]
    assert planned["changes"] == done["changes"], (planned["resources"], done["resources"])


def test_a_refresh_preview_reads_each_drifted_resource_once(acme, cli, sandbox, monkeypatch):
    """`apply --refresh --preview` previews a drifted tenant's repair from the drift check's
    live read: its preview makes none of the AWS and SQL reads that check made, and
    plans exactly what it planned reading everything again (in-process, to count them)."""
    from collections import Counter

    import botocore.client

    from tenantctl.operations import apply as apply_mod
    from tenantctl.workspace import Workspace

    aws(sandbox, "sqs").set_queue_attributes(QueueUrl=acme.resources.queue_url, Attributes={"DelaySeconds": "60"})
    phase, calls = ["plan"], {"plan": Counter(), "check": Counter(), "preview": Counter()}
    made = botocore.client.BaseClient._make_api_call
    executed = psycopg.Cursor.execute

    def aws_call(client, operation, params):
        calls[phase[0]][f"{client.meta.service_model.service_name}.{operation}"] += 1
        return made(client, operation, params)

    def sql_call(cursor, *args, **kwargs):
        calls[phase[0]]["sql"] += 1
        return executed(cursor, *args, **kwargs)

    def in_phase(name, fn):
        def run(*args, **kwargs):
            phase[0] = name
            try:
                return fn(*args, **kwargs)
            finally:
                phase[0] = "plan"
        return run

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", aws_call)
    monkeypatch.setattr(psycopg.Cursor, "execute", sql_call)
    monkeypatch.setattr(apply_mod, "refresh_many", in_phase("check", apply_mod.refresh_many))
    monkeypatch.setattr(apply_mod, "_apply_one", in_phase("preview", apply_mod._apply_one))
    ws = Workspace(project_dir=cli.root, cwd=cli.root)

    def preview() -> tuple[dict, Counter, Counter]:
        for counted in calls.values():
            counted.clear()
        [result] = [r for r in apply_mod.apply(ws, preview=True, refresh=True, match=[TENANT], parallel=1).results]
        assert result.action.value == "repair" and result.ok, result
        return result.model_dump(mode="json", exclude={"seconds"}), Counter(calls["check"]), Counter(calls["preview"])

    once, checked, previewed = preview()
    assert checked["sqs.GetQueueAttributes"] and checked["sql"], checked  # the check read the tenant live
    assert not set(previewed) & set(checked), previewed  # its preview read none of it again
    real_check = apply_mod._drift_check
    monkeypatch.setattr(apply_mod, "_drift_check", lambda *args: (real_check(*args)[0], {}))  # as it was: no reuse
    twice, _, reread = preview()
    assert twice == once  # the same drift, the same plan
    assert reread["sqs.GetQueueAttributes"] and reread["sql"], reread
    assert cli("apply", "--refresh", "--yes", *MATCH).returncode == 0  # repaired for the tests after it


def test_provision_of_an_existing_tenant_repairs_and_says_so(acme, cli, sandbox):
    res = acme.resources
    aws(sandbox, "kms").disable_key_rotation(KeyId=res.kms_key_arn)
    aws(sandbox, "cloudwatch").delete_alarms(AlarmNames=[naming.resource_name(TENANT, "queue-age")])

    run = cli("provision", TENANT, "--json")
    assert run.returncode == 0, run  # not 8: the posture check runs on the repaired tenant
    out = run.json()
    repaired = by_name(out["repaired"])
    assert diffs(repaired[f"{TENANT}-key"]) == {"enableKeyRotation": (True, False)}
    assert repaired[f"{TENANT}-queue-age"]["op"] == "delete"
    steps = by_name(out["resources"])
    assert steps[f"{TENANT}-queue-age"]["op"] == "create" and steps[f"{TENANT}-key"]["op"] == "update"
    assert out["record"]["last_error"] is None
    assert aws(sandbox, "kms").get_key_rotation_status(KeyId=res.kms_key_arn)["KeyRotationEnabled"] is True
    assert cli("refresh", TENANT).returncode == 0


def test_a_repair_that_fails_part_way_stays_pending_until_one_succeeds(acme, cli, sandbox, tmp_path):
    """The up's refresh records the live (drifted) values before its writes; one that fails after
    that must not leave `refresh` comparing live with those and saying "no drift"."""
    res = acme.resources
    aws(sandbox, "sqs").set_queue_attributes(QueueUrl=res.queue_url, Attributes={"DelaySeconds": "600"})
    name, doc = access_policy(sandbox)
    doc["Statement"][0]["Resource"] = doc["Statement"][0]["Resource"].replace(f"/{TENANT}/*", f"/{TENANT}*")
    aws(sandbox, "iam").put_role_policy(RoleName=naming.iam_role_name(TENANT), PolicyName=name,
                                        PolicyDocument=json.dumps(doc))
    # The role policy's write throttled with no retry left: the repair fails part-way (exit 4).
    throttle = tmp_path / "throttle.json"
    throttle.write_text(json.dumps({"iam.PutRolePolicy": {"tokens": 0, "stamp": time.time(), "allowed": 0,
                                                          "throttled": 0}}))
    failed = cli("provision", TENANT, "--json", env={
        FAULT_THROTTLE_ENV: "iam.PutRolePolicy=0.0001", FAULT_THROTTLE_FILE_ENV: str(throttle),
        "TENANTCTL_AWS_THROTTLE_ATTEMPTS": "1"})
    assert failed.returncode == 4, failed
    assert queue_attributes(sandbox, res.queue_url)["DelaySeconds"] == "0"  # repaired before the failure
    assert access_policy(sandbox)[1]["Statement"][0]["Resource"].endswith(f"/tenants/{TENANT}*")  # still drifted
    assert cli("check", TENANT).returncode == 8

    run = cli("refresh", TENANT, "--json")
    assert run.returncode == CHANGES_PENDING, run
    [tenant] = run.json()["tenants"]
    assert tenant["pending"].startswith("last repair failed at ") and "Throttling" in tenant["pending"]
    assert f"tenantctl provision {TENANT}" in tenant["pending"]
    human = cli("refresh", TENANT)
    assert human.returncode == CHANGES_PENDING and "repair pending" in human.stdout, human

    preview = cli("apply", "--preview", "--refresh", "--json", *MATCH)
    assert {r["tenant_id"]: r for r in preview.json()["results"]}[TENANT]["action"] in ("update", "repair")
    assert cli("apply", "--refresh", "--yes", *MATCH).returncode == 0
    assert access_policy(sandbox)[1]["Statement"][0]["Resource"].endswith(f"/tenants/{TENANT}/*")
    assert queue_attributes(sandbox, res.queue_url)["DelaySeconds"] == "0"
    again = cli("refresh", TENANT, "--json")
    assert again.returncode == 0 and again.json()["tenants"][0]["pending"] is None, again


def test_a_tables_policies_and_the_roles_attributes_are_drift_that_provision_repairs(acme, cli, sandbox):
    schema, role = acme.resources.store.schema_name, naming.db_role_name(TENANT)
    with pg(sandbox, acme) as conn:  # RLS stays forced: only the policies and the role change
        conn.execute(sql.SQL("DROP POLICY tenant_isolation ON {}.messages").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE POLICY open ON {}.documents USING (true)").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("ALTER ROLE {} CREATEDB BYPASSRLS").format(sql.Identifier(role)))

    run = cli("refresh", TENANT, "--json")
    assert run.returncode == CHANGES_PENDING, run
    assert diffs(by_name(run.json()["tenants"][0]["resources"])[f"{TENANT}-schema"]) == {
        "row_security.messages": ("forced", "no tenant_isolation policy"),
        "row_security.documents": ("forced", "other policy open"),
        "role_attributes[0]": (None, "BYPASSRLS"), "role_attributes[1]": (None, "CREATEDB")}

    assert cli("provision", TENANT).returncode == 0  # repaired before its posture check
    with pg(sandbox, acme) as conn:
        assert conn.execute("SELECT tablename, policyname FROM pg_policies WHERE schemaname = %s AND "
                            "tablename IN ('messages', 'documents') ORDER BY 1", (schema,)).fetchall() == [
            ("documents", "tenant_isolation"), ("messages", "tenant_isolation")]
        assert conn.execute("SELECT rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = %s",
                            (role,)).fetchone() == (False, False)
    assert cli("refresh", TENANT).returncode == 0


def test_a_grant_on_another_tenants_schema_is_drift_that_provision_revokes(acme, rivals, cli, sandbox):
    other, role = rivals[GLOBEX].resources.store.schema_name, naming.db_role_name(TENANT)
    with pg(sandbox, acme) as conn:  # as the cell database's admin
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {0} TO {1}; GRANT SELECT ON {0}.messages TO {1}").format(
            sql.Identifier(other), sql.Identifier(role)))

    run = cli("refresh", TENANT, "--json")
    assert run.returncode == CHANGES_PENDING, run
    assert diffs(by_name(run.json()["tenants"][0]["resources"])[f"{TENANT}-schema"]) == {
        "foreign_access[0]": (None, f"SELECT on table {other}.messages"),
        "foreign_access[1]": (None, f"USAGE on schema {other}")}

    assert cli("provision", TENANT).returncode == 0  # revoked before its posture check
    with pg(sandbox, acme) as conn:
        assert conn.execute("SELECT has_schema_privilege(%s, %s, 'USAGE'), has_table_privilege(%s, %s, 'SELECT')",
                            (role, other, role, f"{other}.messages")).fetchone() == (False, False)
    assert cli("refresh", TENANT).returncode == 0


def test_a_grant_of_the_tenants_own_objects_to_public_is_drift_that_provision_revokes(acme, cli, sandbox):
    schema = acme.resources.store.schema_name
    with pg(sandbox, acme) as conn:  # as the cell database's admin; a routine has EXECUTE to PUBLIC by default
        admin = conn.execute("SELECT current_user").fetchone()[0]
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {0} TO PUBLIC; GRANT SELECT ON {0}.messages TO PUBLIC; "
                             "CREATE FUNCTION {0}.dr_f() RETURNS int LANGUAGE sql SET search_path = pg_catalog "
                             "AS 'SELECT 1'; CREATE ROLE dr_member LOGIN; GRANT {1} TO dr_member; "
                             "CREATE ROLE dr_owner; ALTER TABLE {0}.summaries OWNER TO dr_owner; "
                             "ALTER DEFAULT PRIVILEGES IN SCHEMA {0} GRANT SELECT ON TABLES TO PUBLIC; "
                             "ALTER DEFAULT PRIVILEGES FOR ROLE {1} GRANT SELECT ON TABLES TO PUBLIC").format(
            sql.Identifier(schema), sql.Identifier(acme.resources.store.role)))
    try:
        run = cli("refresh", TENANT, "--json")
        assert run.returncode == CHANGES_PENDING, run
        assert diffs(by_name(run.json()["tenants"][0]["resources"])[f"{TENANT}-schema"]) == {
            "outside_grants[0]": (None, f"EXECUTE on routine {schema}.dr_f() to PUBLIC"),
            "outside_grants[1]": (None, f"SELECT on table {schema}.messages to PUBLIC"),
            "outside_grants[2]": (None, f"USAGE on schema {schema} to PUBLIC"),
            # each table made there later would be PUBLIC's
            "outside_grants[3]": (None, f"default SELECT on tables in schema {schema} to PUBLIC by {admin}"),
            # the role's own, in every schema (no IN SCHEMA): what it may create anywhere later
            "outside_grants[4]": (None, f"default SELECT on tables to PUBLIC by {acme.resources.store.role}"),
            # a member of the role reads what the role reads
            "outside_grants[5]": (None, f"membership in role {acme.resources.store.role} to dr_member"),
            # an owner may switch its table's RLS off
            "outside_grants[6]": (None, f"table {schema}.summaries owned by dr_owner")}

        assert cli("provision", TENANT).returncode == 0  # revoked before its posture check
        with pg(sandbox, acme) as conn:
            assert conn.execute(
                "SELECT has_schema_privilege('public', %s, 'USAGE'), has_table_privilege('public', %s, 'SELECT'), "
                "has_function_privilege('public', %s, 'EXECUTE'), pg_has_role('dr_member', %s, 'MEMBER'), "
                "(SELECT pg_get_userbyid(relowner) <> 'dr_owner' FROM pg_class WHERE oid = %s::regclass)",
                (schema, f"{schema}.messages", f"{schema}.dr_f()", acme.resources.store.role, f"{schema}.summaries")
            ).fetchone() == (False, False, False, False, True)
            assert conn.execute("SELECT count(*) FROM pg_default_acl WHERE defaclnamespace = %s::regnamespace "
                                "OR defaclrole = %s::regrole", (schema, acme.resources.store.role)).fetchone() == (0,)
        assert cli("refresh", TENANT).returncode == 0
    finally:
        with pg(sandbox, acme) as conn:
            conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {0}.dr_f(); DROP ROLE IF EXISTS dr_member; "
                                 "ALTER TABLE {0}.summaries OWNER TO CURRENT_USER; DROP ROLE IF EXISTS dr_owner; "
                                 "ALTER DEFAULT PRIVILEGES IN SCHEMA {0} REVOKE ALL ON TABLES FROM PUBLIC; "
                                 "ALTER DEFAULT PRIVILEGES FOR ROLE {1} REVOKE ALL ON TABLES FROM PUBLIC"
                                 ).format(sql.Identifier(schema), sql.Identifier(acme.resources.store.role)))


# -- readable previews ------------------------------------------------------------------------

ONE_FIELD = {f"{TENANT}-queue": {"delaySeconds": (0, 30)}, f"{TENANT}-queue-age": {"threshold": (1800, 1830)}}


def test_a_one_field_change_previews_exactly_its_properties_in_all_three_formats(acme, cli):
    path = cli.stack_file(TENANT)
    committed = path.read_text()
    doc = yaml.safe_load(committed)
    doc["config"]["tenantctl:tenant"]["queue"]["delay_seconds"] = 30  # the pull request's one edit
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        md = cli.root / "preview.md"
        run = cli("apply", "--preview", "--json", "--markdown", str(md), *MATCH)
        assert run.returncode == CHANGES_PENDING, run
        result = {r["tenant_id"]: r for r in run.json()["results"]}[TENANT]
        # two updates, nothing created, replaced or deleted; the rest unchanged (however many the program has)
        assert result["action"] == "update" and result["changes"]["update"] == 2
        assert set(result["changes"]) == {"update", "same"} and result["changes"]["same"] > 0
        assert {c["name"]: diffs(c) for c in result["resources"]} == ONE_FIELD
        assert all(c["op"] == "update" for c in result["resources"])

        text = md.read_text()
        assert f"| update | `{TENANT}-queue` | `aws:sqs/queue:Queue` | `delaySeconds`: `0` → `30` |" in text
        assert f"| update | `{TENANT}-queue-age` | `aws:cloudwatch/metricAlarm:MetricAlarm` | " \
               "`threshold`: `1800` → `1830` |" in text
        assert f"<details open><summary><code>{TENANT}</code> · update: update 2</summary>" in text

        table = cli("apply", "--preview", *MATCH)
        assert table.returncode == CHANGES_PENDING and "delaySeconds: 0 → 30" in table.stdout
        assert "threshold: 1800 → 1830" in table.stdout

        edited = path.read_text()
        single = cli("provision", TENANT, "--preview", "--json")
        assert single.returncode == CHANGES_PENDING, single
        assert {c["name"]: diffs(c) for c in single.json()["resources"]} == ONE_FIELD
        assert path.read_text() == edited  # a preview writes nothing
    finally:
        path.write_text(committed)
    assert cli("provision", TENANT, "--preview").returncode == 0


def test_previews_refuse_what_the_run_would_refuse(acme, cli):
    made = cli("provision", GONE, "--json")
    assert made.returncode == 0, made
    committed = cli.stack_file(GONE).read_text()
    gone = cli("deprovision", GONE, "--yes", "--no-final-backup", "--json")
    assert gone.returncode == 0, gone
    cli.stack_file(GONE).write_text(committed)  # re-committed by a pull request

    run = cli("apply", "--preview", "--json", *MATCH)
    assert run.returncode == 1, run  # not a green "update" that then fails on main
    refused = {r["tenant_id"]: r for r in run.json()["results"]}[GONE]
    assert refused["action"] == "invalid" and not refused["ok"] and "tombstoned" in refused["error"]
    assert cli("provision", GONE, "--preview").returncode == 5
    unsafe = cli("provision", TENANT, "--backup-retention-days", "3", "--preview")
    assert unsafe.returncode == 8 and "backup-retention" in unsafe.stderr
    # An existing tenant named into another cell or region: refused as the run refuses it (exit 3), before
    # any read of the wrong region; an unknown region for a new tenant too.
    for option in (("--cell", "nosuch"), ("--region", "us-west-2")):
        moved = cli("provision", TENANT, *option, "--preview", "--json")
        assert moved.returncode == 3 and "in place" in moved.json()["error"]["message"], moved
    typo = cli("provision", f"{TENANT}-typo", "--region", "zz-nowhere-1", "--preview")
    assert typo.returncode == 3 and "'zz-nowhere-1': no AWS partition has it" in typo.stderr, typo
    # The preview names the tenant's cell.
    named = cli("provision", TENANT, "--preview", "--json")
    assert named.returncode == 0 and named.json()["cell"] == "default", named


# -- audit, and deprovision's confirmation ---------------------------------------------------------

def _put_record(sandbox, record: TenantRecord) -> None:
    table = platform_outputs(sandbox)["registry_table"]
    aws(sandbox, "dynamodb").put_item(TableName=table, Item=record_to_item(record))


def test_audit_finds_what_the_registry_and_the_cloud_disagree_on(acme, cli, sandbox):
    table = platform_outputs(sandbox)["registry_table"]
    ghost = aws(sandbox, "sqs").create_queue(QueueName="tenantctl-df-ghost-jobs",
                                             tags={"tenant": "df-ghost", "managed-by": "tenantctl"})["QueueUrl"]
    bad = TenantRecord(tenant_id="Dr_Bad", tier=Tier.pooled, status=TenantStatus.active, region="us-east-1")
    phantom_arn = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    # A live workspace of the phantom: its key, queues, role and secret are gone as well.
    legal = WorkspaceResources(
        name="legal", kms_key_arn=phantom_arn[:-1] + "1", kms_alias=naming.OwnerNames("df-phantom", "legal").kms_alias,
        prefix=naming.OwnerNames("df-phantom", "legal").s3_prefix,
        queue_url=acme.resources.queue_url.replace(TENANT, "df-phantom--legal"),
        dlq_url=acme.resources.dlq_url.replace(TENANT, "df-phantom--legal"),
        role_arn=acme.resources.role_arn.replace(TENANT, "df-phantom--legal"),
        store=StoreConnection(endpoint="localhost", database="tenantctl", schema_name="ws", role="ws_app",
                              secret_arn=acme.resources.store.secret_arn + "y"))
    phantom = TenantRecord(
        tenant_id="df-phantom", tier=Tier.pooled, status=TenantStatus.active, region="us-east-1",
        resources=TenantResources(
            tenant_id="df-phantom", tier=Tier.pooled, region="us-east-1", kms_key_arn=phantom_arn,
            kms_alias=naming.kms_alias("df-phantom"), bucket=acme.resources.bucket, prefix="tenants/df-phantom/",
            queue_url=acme.resources.queue_url.replace(TENANT, "df-phantom"),
            dlq_url=acme.resources.dlq_url.replace(TENANT, "df-phantom"),
            role_arn=acme.resources.role_arn.replace(TENANT, "df-phantom"),
            store=StoreConnection(endpoint="localhost", database="tenantctl", schema_name="tenant_df_phantom",
                                  role="tenant_df_phantom_app", secret_arn=acme.resources.store.secret_arn + "x"),
            workspaces={"legal": legal}))
    # A provision killed outright on this host: its lock names a pid that no longer exists.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stalled = TenantRecord(tenant_id="df-stalled", tier=Tier.pooled, status=TenantStatus.provisioning,
                           region="us-east-1", lock=new_lock("provision").model_copy(update={"pid": dead.pid}))
    # Provisions on a lost CI runner: one stopped renewing its lock (lapsed), one still renews it.
    def on_lost_runner(tenant_id: str, lapses_in: float) -> TenantRecord:
        lock = TenantLock(operation="provision", owner="ci", host="lost-runner-3", pid=77,
                          lapses_at=utcnow() + timedelta(seconds=lapses_in))
        return stalled.model_copy(update={"tenant_id": tenant_id, "lock": lock})

    lapsed, renewed = on_lost_runner("df-lapsed", -1), on_lost_runner("df-renewed", 90)
    for record in (bad, phantom, stalled, lapsed, renewed):
        _put_record(sandbox, record)
    try:
        md = cli.root / "audit.md"
        run = cli("audit", "--json", "--markdown", str(md))
        assert run.returncode == CHANGES_PENDING, run
        found = {(f["kind"], f["tenant_id"]) for f in run.json()["findings"]}
        assert {("tombstoned-stack-file", GONE), ("unclaimed", "df-ghost"), ("bad-name", "Dr_Bad"),
                ("resources-gone", "df-phantom"), ("stalled-run", "df-stalled"), ("stalled-run", "df-lapsed")} <= found
        assert ("stalled-run", "df-renewed") not in found
        assert not {f for f in found if f[1] in (TENANT, GONE) and f[0] != "tombstoned-stack-file"}
        detail = {f["tenant_id"]: f["detail"] for f in run.json()["findings"] if f["kind"] == "resources-gone"}
        assert "kms key, queue, dead-letter queue, role, db secret, workspace legal's kms key, workspace legal's " \
               "queue, workspace legal's dead-letter queue, workspace legal's role, workspace legal's db secret " \
               "are gone" in detail["df-phantom"]
        assert "| tombstoned-stack-file | `df-gone` | `Pulumi.df-gone.yaml` |" in md.read_text()
    finally:
        aws(sandbox, "sqs").delete_queue(QueueUrl=ghost)
        for record in (bad, phantom, stalled, lapsed, renewed):
            aws(sandbox, "dynamodb").delete_item(TableName=table, Key=item_key(record.tenant_id))
        cli.stack_file(GONE).unlink()


def test_audit_reads_the_secrets_states_in_one_listing_not_a_call_per_tenant(acme, cli):
    """A secret in its recovery window is gone for the record naming it, as read from ListSecrets' pages
    (100 secrets each) rather than a DescribeSecret per live tenant and workspace: 5,000 tenants, 50 calls."""
    from collections import Counter

    from tenantctl.operations.audit import audit
    from tenantctl.workspace import Workspace

    ws = Workspace(project_dir=cli.root, cwd=cli.root)
    secrets = ws.client.in_account(None)("secretsmanager", acme.region)
    calls: Counter[str] = Counter()
    secrets.meta.events.register("before-call.secretsmanager", lambda model, **kw: calls.update([model.name]))
    secrets.delete_secret(SecretId=acme.resources.store.secret_arn, RecoveryWindowInDays=7)
    try:
        calls.clear()
        gone = {f.tenant_id: f.detail for f in audit(ws).findings if f.kind == "resources-gone"}
        assert "db secret is gone" in gone[TENANT]
        assert calls["DescribeSecret"] == 0 and calls["ListSecrets"] >= 1, calls
    finally:
        secrets.restore_secret(SecretId=acme.resources.store.secret_arn)
    assert TENANT not in {f.tenant_id for f in audit(ws).findings if f.kind == "resources-gone"}


def test_deprovision_lists_what_it_deletes_before_asking(acme, cli, sandbox):
    run = cli("deprovision", TENANT)  # no terminal to answer: refused, naming --yes
    assert run.returncode == NotConfirmed.exit_code and "pass --yes" in run.stderr, run
    assert f"deprovision tenant {TENANT}" in run.stderr
    assert f"{TENANT}-key" in run.stderr and "deleted with its data" in run.stderr and f"{TENANT}-queue" in run.stderr
    assert inventory(sandbox, TENANT) == POOLED  # nothing was removed


# -- orphans: another tenant's resource is never one; a removal that fails fails the repair -----------------

GLOBEX, HOOLI = "df-globex", "df-hooli"
RIVALS = ("--match", GLOBEX, "--match", HOOLI)


@pytest.fixture(scope="module")
def rivals(cli) -> dict[str, TenantRecord]:
    made = {}
    for tenant in (GLOBEX, HOOLI):
        run = cli("provision", tenant, "--json")
        assert run.returncode == 0, run
        made[tenant] = TenantRecord.model_validate(run.json()["record"])
    return made


def key_state(sandbox, key: str) -> str:
    return aws(sandbox, "kms").describe_key(KeyId=key)["KeyMetadata"]["KeyState"]


def test_another_tenants_resources_tagged_as_a_tenants_are_reported_and_never_removed(rivals, cli, sandbox):
    hooli = rivals[HOOLI].resources
    dlq, key = naming.dlq_name(HOOLI), hooli.kms_key_arn.rsplit("/", 1)[1]
    # By hand, behind tenantctl's back: hooli's dead-letter queue and key tagged as globex's.
    aws(sandbox, "sqs").tag_queue(QueueUrl=hooli.dlq_url, Tags={"tenant": GLOBEX})
    aws(sandbox, "kms").tag_resource(KeyId=hooli.kms_key_arn, Tags=[{"TagKey": "tenant", "TagValue": GLOBEX}])

    run = cli("refresh", GLOBEX, "--json")
    assert run.returncode == CHANGES_PENDING, run
    found = {o["name"]: o for o in run.json()["tenants"][0]["orphans"]}
    assert {n: (o["conflict"], o["removable"]) for n, o in found.items()} == {
        dlq: (f"its name belongs to tenant {HOOLI}", False),  # the queue: its name
        key: (f"its tenantctl:urn tag names stack {HOOLI}", False)}  # the key (named by its id): its urn tag
    human = cli("refresh", GLOBEX)
    assert f"{GLOBEX} · mis-tagged resource sqs {dlq}: not this tenant's" in human.stdout, human
    assert "left for a person, never removed" in human.stdout and "would be removed" not in human.stdout

    # Neither path that removes orphans touches them, --yes or not.
    provisioned = cli("provision", GLOBEX, "--yes", "--json")
    assert provisioned.returncode == 0, provisioned
    assert {o["name"]: o["removed"] for o in provisioned.json()["orphans"]} == {dlq: None, key: None}
    repaired = cli("apply", "--refresh", "--yes", "--json", *RIVALS)
    assert repaired.returncode == 0, repaired
    results = {r["tenant_id"]: r for r in repaired.json()["results"]}
    assert results[GLOBEX]["ok"] and all(o["removed"] is None for o in results[GLOBEX]["orphans"])
    assert results[HOOLI]["action"] == "repair" and results[HOOLI]["ok"]  # its own repair puts its tags back

    assert dlq in {u.rsplit("/", 1)[1] for u in aws(sandbox, "sqs").list_queues(
        QueueNamePrefix=f"tenantctl-{HOOLI}-").get("QueueUrls", [])}
    assert key_state(sandbox, key) == "Enabled"
    assert inventory(sandbox, HOOLI) == POOLED
    again = cli("refresh", GLOBEX, HOOLI)
    assert again.returncode == 0, again


def test_an_orphan_key_is_scheduled_for_deletion_and_a_removal_that_fails_fails_the_repair(rivals, cli, sandbox):
    kms, iam = aws(sandbox, "kms"), aws(sandbox, "iam")
    tags = {"managed-by": "tenantctl", "tenant": GLOBEX}
    key = kms.create_key(Tags=[{"TagKey": k, "TagValue": v} for k, v in tags.items()])["KeyMetadata"]["KeyId"]
    role = f"tenantctl-{GLOBEX}-spare"
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
                    Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    iam.create_instance_profile(InstanceProfileName=role)
    iam.add_role_to_instance_profile(InstanceProfileName=role, RoleName=role)  # IAM refuses to delete it so
    try:
        unconfirmed = cli("apply", "--refresh", *RIVALS)  # no --yes and no terminal: left, and said once
        assert unconfirmed.returncode == 0, unconfirmed
        assert f"{GLOBEX} · orphan resource kms:key {key}: not removed: stack {GLOBEX}: " in unconfirmed.stdout
        assert "pass --yes" in unconfirmed.stdout and "not removed: not removed" not in unconfirmed.stdout
        assert key_state(sandbox, key) == "Enabled"

        run = cli("apply", "--refresh", "--yes", "--json", *RIVALS)
        assert run.returncode == 1, run
        result = {r["tenant_id"]: r for r in run.json()["results"]}[GLOBEX]
        assert not result["ok"] and f"1 orphan resource(s) could not be removed: iam:role {role}" in result["error"]
        fates = {o["name"]: (o["removed"], o["error"]) for o in result["orphans"]}
        assert fates[key] == ("scheduled for deletion in 30 days", None) and "DeleteConflict" in fates[role][1]
        assert key_state(sandbox, key) == "PendingDeletion"
        assert iam.get_role(RoleName=role)["Role"]["RoleName"] == role

        failed = cli("provision", GLOBEX, "--yes")
        assert failed.returncode == 1, failed
        assert f"tenant '{GLOBEX}' is active, but 1 orphan resource(s) could not be removed: iam:role {role}" \
            in failed.stderr
        assert f"{GLOBEX} · orphan resource iam:role {role}: removal failed: " in failed.stdout
        record = registry_record(sandbox, GLOBEX)
        assert record["status"] == "active" and record.get("lock") is None

        iam.remove_role_from_instance_profile(InstanceProfileName=role, RoleName=role)
        fixed = cli("provision", GLOBEX, "--yes", "--json")
        assert fixed.returncode == 0, fixed
        assert [(o["name"], o["removed"]) for o in fixed.json()["orphans"]] == [(role, "deleted")]
        assert cli("refresh", GLOBEX).returncode == 0
    finally:
        for profile in iam.list_instance_profiles()["InstanceProfiles"]:
            if profile["InstanceProfileName"] == role:
                for held in profile["Roles"]:
                    iam.remove_role_from_instance_profile(InstanceProfileName=role, RoleName=held["RoleName"])
                iam.delete_instance_profile(InstanceProfileName=role)


# -- a dedicated tenant's database opened out of band ----------------------------------------

def test_an_ingress_rule_added_to_a_dedicated_database_is_drift_and_repair_revokes_it(cli, sandbox):
    """The database's group declares no inline rules (its clients' rules are
    resources of their own), so neither engine compares its live rules: a rule
    opened out of band is reported beside the orphans and revoked on repair."""
    tenant = "drift-sg"  # ids are the whole session's: test_drill's dedicated tenant is dr-ded
    made = cli("provision", tenant, "--tier", "dedicated", "--json")
    assert made.returncode == 0, made
    ec2 = aws(sandbox, "ec2")
    db = aws(sandbox, "rds").describe_db_instances(DBInstanceIdentifier=naming.rds_identifier(tenant))["DBInstances"][0]
    group = db["VpcSecurityGroups"][0]["VpcSecurityGroupId"]

    def ingress() -> dict[str, str]:
        rules = ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [group]}])["SecurityGroupRules"]
        return {r["SecurityGroupRuleId"]: r.get("CidrIpv4") or r["ReferencedGroupInfo"]["GroupId"]
                for r in rules if not r["IsEgress"]}

    declared = ingress()
    assert declared and "0.0.0.0/0" not in declared.values()
    try:
        opened = ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        rule = opened["SecurityGroupRules"][0]["SecurityGroupRuleId"]

        found = cli("refresh", tenant, "--json")
        assert found.returncode == CHANGES_PENDING, found
        [drift] = found.json()["tenants"]
        assert drift["resources"] == []  # no resource's declared properties changed
        assert [(o["kind"], o["name"], o["removable"]) for o in drift["orphans"]] == [
            ("ec2:security-group-rule", f"{rule} (tcp 5432 from 0.0.0.0/0 into {group})", True)]
        text = cli("refresh", tenant)
        assert f"{tenant} · unmanaged ingress rule ec2:security-group-rule {rule} " in text.stdout, text

        repaired = cli("provision", tenant, "--yes", "--json")
        assert repaired.returncode == 0, repaired
        assert [(o["name"].split()[0], o["removed"]) for o in repaired.json()["orphans"]] == [(rule, "revoked")]
        assert ingress() == declared  # the stack's own rules stay
        assert cli("refresh", tenant).returncode == 0
    finally:
        gone = cli("deprovision", tenant, "--yes", "--no-final-backup")
        assert gone.returncode == 0, gone


# -- a role granted more out of band ---------------------------------------------------------

def test_a_policy_put_on_or_attached_to_the_tenants_role_is_drift_that_provision_removes(acme, cli, sandbox):
    """A role's live policies are none of its compared properties, so neither engine saw an
    inline policy or an attached managed policy added out of band: `refresh` said no drift and
    `provision` failed its own posture check with no repair. Both are reported beside the
    orphans and removed on repair; the stack's own policy stays."""
    iam, role = aws(sandbox, "iam"), naming.iam_role_name(TENANT)
    wide = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
    declared = iam.list_role_policies(RoleName=role)["PolicyNames"]
    iam.put_role_policy(RoleName=role, PolicyName="df-extra", PolicyDocument=wide)
    managed = iam.create_policy(PolicyName="df-wide", PolicyDocument=wide)["Policy"]["Arn"]
    iam.attach_role_policy(RoleName=role, PolicyArn=managed)
    try:
        found = cli("refresh", TENANT, "--json")
        assert found.returncode == CHANGES_PENDING, found
        [drift] = found.json()["tenants"]
        assert drift["resources"] == []
        assert sorted((o["kind"], o["name"], o["removable"]) for o in drift["orphans"]) == [
            ("iam:role-policy", f"df-extra (on role {role})", True),
            ("iam:role-policy-attachment", f"{managed} (on role {role})", True)]
        assert f"{TENANT} · unmanaged role policy iam:role-policy df-extra " in cli("refresh", TENANT).stdout

        repaired = cli("provision", TENANT, "--yes", "--json")
        assert repaired.returncode == 0, repaired
        assert sorted(o["removed"] for o in repaired.json()["orphans"]) == ["deleted", "detached"]
        assert iam.list_role_policies(RoleName=role)["PolicyNames"] == declared
        assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
        assert cli("refresh", TENANT).returncode == 0
    finally:  # the module's tenant is shared: never leave it granted more
        if "df-extra" in iam.list_role_policies(RoleName=role)["PolicyNames"]:
            iam.delete_role_policy(RoleName=role, PolicyName="df-extra")
        if iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
            iam.detach_role_policy(RoleName=role, PolicyArn=managed)
        iam.delete_policy(PolicyArn=managed)


def test_a_grant_on_the_key_and_a_queue_or_secret_policy_added_out_of_band_are_drift_that_provision_removes(
        acme, cli, sandbox):
    """A key grant, a queue policy and a secret resource policy are no property either engine
    compares: each handed the tenant's data or password to another account while `refresh` said
    no drift and `check` passed. Each is named, removed on repair (the stack's own rotation grant
    kept), and the tenant refreshes and checks clean after."""
    res = acme.resources
    kms, sqs, secrets = (aws(sandbox, s) for s in ("kms", "sqs", "secretsmanager"))
    foreign = "arn:aws:iam::999999999999:root"
    own_grants = {g["GrantId"] for g in kms.list_grants(KeyId=res.kms_key_arn)["Grants"]}
    grant = kms.create_grant(KeyId=res.kms_key_arn, GranteePrincipal=foreign, Operations=["Decrypt"])["GrantId"]
    everyone = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sqs:*",
                                                        "Resource": "*"}]}
    sqs.set_queue_attributes(QueueUrl=res.dlq_url, Attributes={"Policy": json.dumps(everyone)})
    secrets.put_resource_policy(SecretId=res.store.secret_arn, ResourcePolicy=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": foreign},
                                                "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]}))
    try:
        checked = cli("check", TENANT, "--json")
        assert checked.returncode == 8, checked
        failed = {c["name"] for c in checked.json()["checks"] if c["outcome"] == "fail"}
        assert failed == {"kms-grants", "queue-policy", "secret-policy"}, checked.json()

        found = cli("refresh", TENANT, "--json")
        assert found.returncode == CHANGES_PENDING, found
        [drift] = found.json()["tenants"]
        assert drift["resources"] == []
        assert sorted((o["kind"], o["removable"]) for o in drift["orphans"]) == [
            ("kms:grant", True), ("secretsmanager:resource-policy", True), ("sqs:queue-policy", True)]
        assert any(grant in o["name"] and foreign in o["name"] for o in drift["orphans"])
        text = cli("refresh", TENANT).stdout
        assert "unmanaged key grant" in text and "unmanaged queue policy" in text and "unmanaged secret policy" in text

        repaired = cli("provision", TENANT, "--yes", "--json")
        assert repaired.returncode == 0, repaired
        assert sorted(o["removed"] for o in repaired.json()["orphans"]) == ["removed", "removed", "revoked"]
        assert {g["GrantId"] for g in kms.list_grants(KeyId=res.kms_key_arn)["Grants"]} == own_grants
        assert "Policy" not in queue_attributes(sandbox, res.dlq_url)
        assert "ResourcePolicy" not in secrets.get_resource_policy(SecretId=res.store.secret_arn)
        assert cli("refresh", TENANT).returncode == 0 and cli("check", TENANT).returncode == 0
    finally:  # the module's tenant is shared: never leave it open to another account
        if grant in {g["GrantId"] for g in kms.list_grants(KeyId=res.kms_key_arn)["Grants"]}:
            kms.revoke_grant(KeyId=res.kms_key_arn, GrantId=grant)
        sqs.set_queue_attributes(QueueUrl=res.dlq_url, Attributes={"Policy": ""})
        secrets.delete_resource_policy(SecretId=res.store.secret_arn)


def test_a_subscription_and_a_policy_added_to_the_alarm_topic_are_drift_that_provision_removes(acme, cli, sandbox):
    """The alarm topic's subscriptions and policy are no property either engine compares: an email
    endpoint subscribed, and the policy opened to another account, went unseen. Each is named,
    removed on repair (unsubscribed; the policy AWS's default again), and the tenant checks clean."""
    sns = aws(sandbox, "sns")
    topic = next(t["TopicArn"] for t in listed(sns, "list_topics", "Topics")
                 if t["TopicArn"].endswith(f":{naming.resource_name(TENANT, 'alarms')}"))
    default = sns.get_topic_attributes(TopicArn=topic)["Attributes"]["Policy"]
    sub = sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="someone@example.org",
                        ReturnSubscriptionArn=True)["SubscriptionArn"]
    opened = json.loads(default)
    opened["Statement"].append({"Effect": "Allow", "Principal": "*", "Action": "SNS:Subscribe", "Resource": topic})
    sns.set_topic_attributes(TopicArn=topic, AttributeName="Policy", AttributeValue=json.dumps(opened))
    try:
        checked = cli("check", TENANT, "--json")
        assert checked.returncode == 8, checked
        assert {c["name"] for c in checked.json()["checks"] if c["outcome"] == "fail"} == {"topic-access"}

        found = cli("refresh", TENANT, "--json")
        assert found.returncode == CHANGES_PENDING, found
        [drift] = found.json()["tenants"]
        assert drift["resources"] == []
        assert sorted((o["kind"], o["removable"]) for o in drift["orphans"]) == [
            ("sns:subscription", True), ("sns:topic-policy", True)]
        assert any("someone@example.org" in o["name"] for o in drift["orphans"])
        text = cli("refresh", TENANT).stdout
        assert "unmanaged topic subscription" in text and "unmanaged topic policy" in text

        repaired = cli("provision", TENANT, "--yes", "--json")
        assert repaired.returncode == 0, repaired
        assert sorted(o["removed"] for o in repaired.json()["orphans"]) == ["reset", "unsubscribed"]
        assert sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"] == []
        assert json.loads(sns.get_topic_attributes(TopicArn=topic)["Attributes"]["Policy"]) == json.loads(default)
        assert cli("refresh", TENANT).returncode == 0 and cli("check", TENANT).returncode == 0
    finally:  # the module's tenant is shared: never leave its alarms open to another account
        if sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]:
            sns.unsubscribe(SubscriptionArn=sub)
        sns.set_topic_attributes(TopicArn=topic, AttributeName="Policy", AttributeValue=default)
