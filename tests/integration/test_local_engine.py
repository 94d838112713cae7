"""LocalEngine on the real sandbox (moto server + PostgreSQL, from the `sandbox`
fixture), running the real infra/ program: platform, a pooled and a dedicated
tenant; idempotent re-up; update in place; destroy; unsupported types refused
before anything exists; crash after N resource writes, then convergence."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from fault_tools import listed
from faults import FAULT_AFTER_ENV, FAULT_EXIT_CODE, FAULT_POINT_ENV, IMPORT_ROOT

from tenantctl import naming
from tenantctl.engines.base import Op
from tenantctl.engines.local import LocalEngine
from tenantctl.engines.local.state import StateFile
from tenantctl.errors import ApplyFailed
from tenantctl.models import CellSpec, DedicatedSpec, QueueSpec, TenantSpec
from tenantctl.stackconfig import write_cell, write_tenant

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WRITE_PREFIXES = ("Create", "Put", "Update", "Delete", "Modify", "Set", "Tag", "Untag", "Associate",
                  "Disassociate", "Authorize", "Revoke", "Enable", "Disable", "Schedule", "Restore")


def _tenant_id(kind: str) -> str:
    return f"le{kind}{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project dir of our own: the repo's Pulumi.yaml and a private stacks/."""
    root = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "Pulumi.yaml", root / "Pulumi.yaml")
    write_cell(root / "stacks", CellSpec())
    return root


@pytest.fixture(scope="module")
def engine(project: Path, sandbox) -> LocalEngine:
    # The sandbox's own state dir, as `tenantctl` uses it: one platform per sandbox.
    eng = LocalEngine(project, sandbox)
    eng.up("platform")
    return eng


def aws(sandbox, service: str):
    return boto3.client(service, endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def pg(sandbox, database: str | None = None) -> psycopg.Connection:
    return psycopg.connect(sandbox.pg_dsn(database), autocommit=True)


def schema_exists(sandbox, database: str, schema: str) -> bool:
    with pg(sandbox, database) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is not None


def database_exists(sandbox, database: str) -> bool:
    with pg(sandbox) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is not None


@pytest.fixture
def api_calls(monkeypatch) -> list[str]:
    """Every AWS operation any boto3 client makes (observed, not faked)."""
    calls: list[str] = []
    real = BaseClient._make_api_call

    def record(self, operation: str, params: dict[str, Any]):
        calls.append(operation)
        return real(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    return calls


def assert_tenant_exists(sandbox, out: dict[str, Any]) -> None:
    tid = out["tenant_id"]
    kms, sqs, iam, sm = (aws(sandbox, s) for s in ("kms", "sqs", "iam", "secretsmanager"))
    key = kms.describe_key(KeyId=out["kms_key_arn"])["KeyMetadata"]
    assert key["KeyState"] == "Enabled"
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"] is True
    aliases = kms.list_aliases(KeyId=key["KeyId"])["Aliases"]
    assert [a["AliasName"] for a in aliases] == [naming.kms_alias(tid)]
    for url in (out["queue_url"], out["dlq_url"]):
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attrs["KmsMasterKeyId"] == out["kms_key_arn"]
    assert iam.get_role(RoleName=naming.iam_role_name(tid))["Role"]["Arn"] == out["role_arn"]
    assert iam.list_role_policies(RoleName=naming.iam_role_name(tid))["PolicyNames"]
    secret = json.loads(sm.get_secret_value(SecretId=out["store"]["secret_arn"])["SecretString"])
    assert secret["username"] == naming.db_role_name(tid)
    assert schema_exists(sandbox, out["store"]["database"], out["store"]["schema_name"])
    # No rule of its own: the bucket's rules for the retention classes it picks (by object tag).
    rules = {r["ID"] for r in aws(sandbox, "s3").get_bucket_lifecycle_configuration(Bucket=out["bucket"])["Rules"]}
    assert {f"tenantctl-class-{c}" for c in out["lifecycle_classes"].values()} <= rules
    assert not any(r.startswith(f"tenantctl-{tid}-") for r in rules)


def test_platform_pooled_and_dedicated_tenants_exist_on_the_sandbox(engine: LocalEngine, project: Path, sandbox):
    platform = engine.outputs("platform")
    assert aws(sandbox, "dynamodb").describe_table(TableName=platform["registry_table"])["Table"]["TableStatus"]
    assert aws(sandbox, "s3").get_bucket_versioning(Bucket=platform["bucket"])["Status"] == "Enabled"
    assert database_exists(sandbox, platform["db_name"])

    pooled, dedicated = TenantSpec(id=_tenant_id("p")), TenantSpec(id=_tenant_id("d"), tier="dedicated")
    for spec in (pooled, dedicated):
        write_tenant(project / "stacks", spec)
        result = engine.up(spec.id)
        assert result.changes.count(Op.create) == len(result.changes.changes) > 0
        assert_tenant_exists(sandbox, result.outputs)
        assert result.outputs == engine.outputs(spec.id)

    ded = engine.outputs(dedicated.id)
    assert ded["store"]["database"] == naming.database_name(dedicated.id)
    assert database_exists(sandbox, ded["store"]["database"])
    instance = aws(sandbox, "rds").describe_db_instances(DBInstanceIdentifier=naming.rds_identifier(dedicated.id))
    assert instance["DBInstances"][0]["DeletionProtection"] is True
    vpcs = aws(sandbox, "ec2").describe_vpcs(Filters=[{"Name": "tag:tenant", "Values": [dedicated.id]}])["Vpcs"]
    assert len(vpcs) == 1

    # Deprovision's order: lift the deletion protection in one update, then destroy.
    write_tenant(project / "stacks", dedicated.model_copy(
        update={"dedicated": DedicatedSpec(deletion_protection=False)}))
    lifted = engine.up(dedicated.id)
    assert [c.name for c in lifted.changes.changes if c.op is Op.update] == [f"{dedicated.id}-pg-db"]
    gone = engine.destroy(dedicated.id)
    assert gone.count(Op.delete) == len(result.changes.changes)
    assert not database_exists(sandbox, ded["store"]["database"])
    assert not aws(sandbox, "rds").describe_db_instances(
        Filters=[{"Name": "db-instance-id", "Values": [naming.rds_identifier(dedicated.id)]}])["DBInstances"]
    assert not aws(sandbox, "ec2").describe_vpcs(Filters=[{"Name": "tag:tenant", "Values": [dedicated.id]}])["Vpcs"]


def test_re_up_is_a_no_op_and_a_changed_option_updates_in_place(engine: LocalEngine, project: Path, sandbox,
                                                                api_calls: list[str]):
    spec = TenantSpec(id=_tenant_id("u"))
    write_tenant(project / "stacks", spec)
    first = engine.up(spec.id).outputs

    api_calls.clear()
    again = engine.up(spec.id)
    assert not again.changes.has_changes and again.changes.count(Op.same) > 0
    assert [c for c in api_calls if c.startswith(WRITE_PREFIXES)] == []
    assert again.outputs == first

    write_tenant(project / "stacks", spec.model_copy(update={"queue": QueueSpec(delay_seconds=45)}))
    preview = engine.preview(spec.id)
    changed = engine.up(spec.id)
    updated = {(c.op, c.name) for c in changed.changes.changes if c.op is not Op.same}
    assert {(c.op, c.name) for c in preview.changes if c.op is not Op.same} == updated
    assert (Op.update, f"{spec.id}-queue") in updated and not changed.changes.count(Op.create)
    assert changed.outputs["queue_url"] == first["queue_url"]
    attrs = aws(sandbox, "sqs").get_queue_attributes(QueueUrl=first["queue_url"], AttributeNames=["DelaySeconds"])
    assert attrs["Attributes"]["DelaySeconds"] == "45"

    engine.destroy(spec.id)
    kms, sqs = aws(sandbox, "kms"), aws(sandbox, "sqs")
    assert kms.describe_key(KeyId=first["kms_key_arn"])["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert not sqs.list_queues(QueueNamePrefix=f"tenantctl-{spec.id}-").get("QueueUrls")
    assert not schema_exists(sandbox, first["store"]["database"], first["store"]["schema_name"])
    with pytest.raises(aws(sandbox, "iam").exceptions.NoSuchEntityException):
        aws(sandbox, "iam").get_role(RoleName=naming.iam_role_name(spec.id))


def test_an_unsupported_resource_type_fails_before_anything_is_created(project: Path, sandbox, tmp_path: Path):
    import pulumi_aws as aws_sdk

    marker = f"le-unsupported-{secrets.token_hex(3)}"

    def program(stack: str) -> dict[str, Any]:
        key = aws_sdk.kms.Key("key", description=marker, enable_key_rotation=True)
        aws_sdk.ec2.Instance("vm", ami="ami-12345678", instance_type="t3.micro", tags={"k": key.key_id})
        return {"key": key.arn}

    (project / "stacks" / "Pulumi.odd.yaml").write_text("config:\n  aws:region: us-east-1\n")
    engine = LocalEngine(project, sandbox, state_dir=tmp_path, program=program)
    with pytest.raises(ApplyFailed, match=r"aws:ec2/instance:Instance is not supported"):
        engine.up("odd")
    kms = aws(sandbox, "kms")
    descriptions = [kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"].get("Description")
                    for k in listed(kms, "list_keys", "Keys")]
    assert marker not in descriptions
    assert not (tmp_path / "local-engine" / "odd.json").exists()


def test_an_imported_resource_is_adopted_never_made_and_a_retained_one_outlives_its_stack(
        project: Path, sandbox, tmp_path: Path):
    """Pulumi's ``import_`` and ``retain_on_delete`` as the LocalEngine honours them: an
    import of what does not exist fails and makes nothing; an import adopts the resource
    and brings it to the program's inputs; a retained resource the program drops, or
    whose stack is destroyed, only leaves the state."""
    import pulumi
    import pulumi_aws as aws_sdk

    name, declared = f"le-imported-{secrets.token_hex(3)}", {"group": True}

    def program(stack: str) -> dict[str, Any]:
        if declared["group"]:
            aws_sdk.cloudwatch.LogGroup("group", name=name, retention_in_days=7, tags={"made-by": "program"},
                                        opts=pulumi.ResourceOptions(import_=name, retain_on_delete=True))
        return {}

    (project / "stacks" / "Pulumi.imp.yaml").write_text("config:\n  aws:region: us-east-1\n")
    engine = LocalEngine(project, sandbox, state_dir=tmp_path, program=program)
    logs = aws(sandbox, "logs")

    def group() -> dict | None:
        return next((g for g in logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
                     if g["logGroupName"] == name), None)

    with pytest.raises(ApplyFailed, match="no such resource to import"):
        engine.up("imp")
    assert group() is None
    logs.create_log_group(logGroupName=name, tags={"made-by": "hand"})
    logs.put_retention_policy(logGroupName=name, retentionInDays=1)
    made = group()["creationTime"]
    engine.up("imp")
    assert group()["retentionInDays"] == 7 and logs.list_tags_log_group(logGroupName=name)["tags"] == {
        "made-by": "program"}
    [entry] = StateFile(tmp_path / "local-engine", "imp").load().resources
    assert entry.retain and entry.id == name
    assert engine.up("imp").changes.summary() == {"same": 1}
    declared["group"] = False  # the program drops it: the state forgets it, the group stays
    assert engine.up("imp").changes.summary() == {"delete": 1}
    assert group()["creationTime"] == made and StateFile(tmp_path / "local-engine", "imp").load().resources == []
    declared["group"] = True
    engine.up("imp")
    assert [c.retained for c in engine.preview_destroy("imp").changes] == [True]
    engine.destroy("imp")  # the stack goes, the group stays
    assert group()["creationTime"] == made
    logs.delete_log_group(logGroupName=name)


CRASH_SCRIPT = """
import sys
from pathlib import Path
import faults
faults.arm()
from tenantctl.engines.local import LocalEngine
from tenantctl.engines.local.state import StateFile
from tenantctl.sandbox.endpoints import SandboxEndpoints
endpoints = SandboxEndpoints.model_validate_json(Path(sys.argv[1]).read_text())
engine = LocalEngine(Path(sys.argv[2]), endpoints)
getattr(engine, sys.argv[3])(sys.argv[4])
"""
POOLED_WRITES = 13  # resources of a pooled tenant stack: one write each


def run_crashing(sandbox, project: Path, tmp_path: Path, action: str, stack: str, after: int, point: str):
    """``engine.<action>(stack)`` in a subprocess, armed by tests/faults, that dies at its ``after``-th
    resource write."""
    endpoints_file = tmp_path / "endpoints.json"
    endpoints_file.write_text(sandbox.model_dump_json())
    path = os.pathsep.join(p for p in (str(IMPORT_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, FAULT_AFTER_ENV: str(after), FAULT_POINT_ENV: point}
    done = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(endpoints_file), str(project), action, stack],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == FAULT_EXIT_CODE, done.stderr[-2000:]


def tenant_inventory(sandbox, tid: str) -> dict[str, int]:
    """How many of each uniquely-meant resource the sandbox holds for tenant ``tid``."""
    kms, sqs, iam = aws(sandbox, "kms"), aws(sandbox, "sqs"), aws(sandbox, "iam")
    keys = 0
    for k in listed(kms, "list_keys", "Keys"):
        meta = kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"]
        tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=k["KeyId"]).get("Tags", [])}
        keys += meta["KeyState"] != "PendingDeletion" and tags.get("tenant") == tid
    roles = [r for r in listed(iam, "list_roles", "Roles") if r["RoleName"] == naming.iam_role_name(tid)]
    return {"keys": keys, "queues": len(sqs.list_queues(QueueNamePrefix=f"tenantctl-{tid}-").get("QueueUrls", [])),
            "roles": len(roles)}


NOTHING = {"keys": 0, "queues": 0, "roles": 0}
ONE_EACH = {"keys": 1, "queues": 2, "roles": 1}  # a pooled tenant has no security group: its cell's group admits it


# Every step for a crash between the sandbox call and the state write (the
# resource exists, the state only has the intent); a few for a crash after it.
@pytest.mark.parametrize(("point", "after"), [("unrecorded", n) for n in range(1, POOLED_WRITES + 1)]
                         + [("recorded", n) for n in (1, 7, POOLED_WRITES - 1)])
def test_a_crash_during_up_converges_on_re_run_without_duplicates(engine: LocalEngine, project: Path, sandbox,
                                                                  tmp_path: Path, after: int, point: str):
    spec = TenantSpec(id=_tenant_id("c"))
    write_tenant(project / "stacks", spec)
    run_crashing(sandbox, project, tmp_path, "up", spec.id, after, point)

    result = engine.up(spec.id)
    assert len(result.changes.changes) == POOLED_WRITES
    assert tenant_inventory(sandbox, spec.id) == ONE_EACH
    assert_tenant_exists(sandbox, result.outputs)
    assert not engine.up(spec.id).changes.has_changes
    engine.destroy(spec.id)
    assert tenant_inventory(sandbox, spec.id) == NOTHING


def test_a_destroy_deletes_what_creates_cut_short_made(engine: LocalEngine, sandbox):
    """A run killed while a create was in flight leaves that resource's intent
    (status ``creating``, no id) beside the resource itself: with independent
    resources made together, any write's kill can. A destroy (a move's
    rollback, say) finds each by its name and deletes it: the topic, the
    alarms and the secret's rotation keep no id of their own to look up."""
    spec = TenantSpec(id=_tenant_id("i"))
    write_tenant(engine.project_dir / "stacks", spec)
    engine.up(spec.id)
    file = StateFile(engine.state_root, spec.id)
    state = file.load()
    cut = {"aws:sns/topic:Topic", "aws:cloudwatch/metricAlarm:MetricAlarm",
           "aws:secretsmanager/secretRotation:SecretRotation"}
    entries = [r for r in state.resources if r.type in cut]
    assert len(entries) == 4
    for entry in entries:
        state.put(entry.model_copy(update={"status": "creating", "id": None, "outputs": {}}))
    file.save(state)
    [topic] = [r.id for r in entries if r.type == "aws:sns/topic:Topic"]
    alarms = [r.id for r in entries if r.type == "aws:cloudwatch/metricAlarm:MetricAlarm"]
    rotated = [r.id for r in entries if r.type == "aws:secretsmanager/secretRotation:SecretRotation"]
    sm = aws(sandbox, "secretsmanager")
    assert aws(sandbox, "cloudwatch").describe_alarms(AlarmNames=alarms)["MetricAlarms"]
    assert all(sm.describe_secret(SecretId=secret)["RotationEnabled"] for secret in rotated)

    engine.destroy(spec.id)

    with pytest.raises(ClientError, match="NotFound"):
        aws(sandbox, "sns").get_topic_attributes(TopicArn=topic)
    assert aws(sandbox, "cloudwatch").describe_alarms(AlarmNames=alarms)["MetricAlarms"] == []
    assert not any(sm.describe_secret(SecretId=secret).get("RotationEnabled") for secret in rotated)
    assert tenant_inventory(sandbox, spec.id) == NOTHING


@pytest.mark.parametrize(("point", "after"), [("unrecorded", 1), ("unrecorded", 6), ("recorded", 12)])
def test_a_crash_during_destroy_converges_on_re_run(engine: LocalEngine, project: Path, sandbox, tmp_path: Path,
                                                    after: int, point: str):
    spec = TenantSpec(id=_tenant_id("x"))
    write_tenant(project / "stacks", spec)
    out = engine.up(spec.id).outputs
    run_crashing(sandbox, project, tmp_path, "destroy", spec.id, after, point)

    engine.destroy(spec.id)
    assert tenant_inventory(sandbox, spec.id) == NOTHING
    assert not schema_exists(sandbox, out["store"]["database"], out["store"]["schema_name"])
    assert engine.outputs(spec.id) == {}
