"""The policy gate on the sandbox: each unsafe setting is refused (exit 8, the
message names the rule) before anything exists, checked on the sandbox itself
(moto and PostgreSQL inventories unchanged, no LocalEngine state).

How each setting can be expressed at all:
- backup retention < 7 days: `--backup-retention-days` / `backup.retention_days`
  (the spec allows 1..35; the gate refuses < 7);
- deletion protection off on a dedicated DB: `dedicated.deletion_protection:
  false` in a hand-edited stack file (no CLI flag);
- key rotation off, a queue without SSE, 0.0.0.0/0 ingress, a public database
  or a public bucket: no spec field or flag expresses them (TenantSpec forbids
  unknown keys), only a change to the program in infra/. Those are driven here
  by the real program with a Pulumi stack transformation (or an extra
  resource) laid over it, i.e. an edited infra component.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pulumi
import pulumi_aws as aws_sdk
import pytest
import yaml
from fault_tools import listed

from tenantctl.engines.local import LocalEngine
from tenantctl.engines.local.state import StateFile
from tenantctl.errors import PolicyViolation
from tenantctl.models import TenantSpec
from tenantctl.operations.deprovision import deprovision
from tenantctl.operations.provision import provision
from tenantctl.policy import PolicyGate, PolicyRefused
from tenantctl.stackconfig import stack_file
from tenantctl.workspace import Workspace


def aws(sandbox, service: str):
    return boto3.client(service, endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)


def inventory(sandbox) -> dict[str, Any]:
    """Everything a tenant could leave behind, read from moto and PostgreSQL."""
    kms, iam, sqs, sm, ec2, rds, s3 = (aws(sandbox, s) for s in ("kms", "iam", "sqs", "secretsmanager", "ec2",
                                                                  "rds", "s3"))
    with psycopg.connect(sandbox.pg_dsn(sandbox.pg_database)) as conn:
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")}
        roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
        databases = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    return {
        "kms keys": {k["KeyId"] for k in listed(kms, "list_keys", "Keys")},
        "kms aliases": {a["AliasName"] for a in listed(kms, "list_aliases", "Aliases")},
        "iam roles": {r["RoleName"] for r in listed(iam, "list_roles", "Roles")},
        "queues": set(sqs.list_queues().get("QueueUrls", [])),
        "secrets": {s["Name"] for s in listed(sm, "list_secrets", "SecretList")},
        "security groups": {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]},
        "vpcs": {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]},
        "db instances": {d["DBInstanceIdentifier"] for d in rds.describe_db_instances()["DBInstances"]},
        "buckets": {b["Name"] for b in s3.list_buckets()["Buckets"]},
        "bucket lifecycle": json.dumps(_lifecycle(s3), sort_keys=True),
        "pg schemas": schemas, "pg roles": roles, "pg databases": databases,
    }


def _lifecycle(s3) -> list:
    rules = []
    for b in s3.list_buckets()["Buckets"]:
        try:
            rules += [r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=b["Name"])["Rules"]]
        except s3.exceptions.ClientError:
            pass
    return sorted(rules)


@pytest.fixture(scope="module")
def ready(workspace) -> Workspace:
    workspace.ensure_platform()  # the platform exists before any snapshot
    return workspace


def assert_nothing_created(sandbox, before: dict[str, Any], tenant_id: str) -> None:
    after = inventory(sandbox)
    assert {k: v for k, v in after.items() if v != before[k]} == {}
    assert not StateFile(sandbox.state_dir / "local-engine", tenant_id).exists()


# -- expressible in the spec: refused before the registry, stacks/ or the sandbox are touched ----

@pytest.fixture(scope="module")
def cli(sandbox, tmp_path_factory):
    root = tmp_path_factory.mktemp("gate-cli-project")
    (root / "Pulumi.yaml").write_text((Path(__file__).parents[2] / "Pulumi.yaml").read_text())
    env = {**os.environ, "TENANTCTL_SANDBOX_DIR": str(sandbox.state_dir), "PYTHONWARNINGS": "ignore"}
    env.pop("TENANTCTL_TARGET", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tenantctl", *args], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)

    run.root = root
    run("sandbox", "status")
    return run


def test_cli_refuses_short_backup_retention(ready, cli, sandbox):
    tenant = "ck-gate-backup"
    before = inventory(sandbox)
    run = cli("provision", tenant, "--backup-retention-days", "3", "--json")
    assert run.returncode == 8, run.stderr
    assert "rule backup-retention" in run.stderr and "backup.retention_days 3 < 7 days" in run.stderr
    # --json: the refusal as an object on stdout (scripts read the code and the rule, not the text)
    error = json.loads(run.stdout)["error"]
    assert error["code"] == 8 and error["rule"] == "backup-retention" and "< 7 days" in error["message"]
    assert_nothing_created(sandbox, before, tenant)
    assert not stack_file(cli.root / "stacks", tenant).exists()
    assert ready.registry.get(tenant) is None  # refused before the reservation


def test_cli_refuses_a_hand_edited_stack_without_deletion_protection(ready, cli, sandbox):
    tenant = "ck-gate-dp"
    path = stack_file(cli.root / "stacks", tenant)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"config": {"aws:region": sandbox.region, "tenantctl:platformStack": "platform",
                                               "tenantctl:tenant": {"id": tenant, "tier": "dedicated",
                                                                    "dedicated": {"deletion_protection": False}}}}))
    before = inventory(sandbox)
    run = cli("provision", tenant)
    assert run.returncode == 8, run.stderr
    assert "rule deletion-protection" in run.stderr and "dedicated.deletion_protection is false" in run.stderr
    assert_nothing_created(sandbox, before, tenant)
    assert ready.registry.get(tenant) is None

    # The pull request's `apply --preview` already names the rule (exit 1: an error, not "changes pending").
    preview = cli("apply", "--preview", "--match", tenant, "--json")
    assert preview.returncode == 1, preview.stderr
    [result] = json.loads(preview.stdout)["results"]
    assert result["tenant_id"] == tenant and result["ok"] is False
    assert "rule deletion-protection" in result["error"], result
    assert_nothing_created(sandbox, before, tenant)


def test_engine_gate_alone_refuses_the_hand_edited_stack(ready, project, sandbox):
    """The same file applied straight through the engine (as `apply` or a direct
    `up` would): the gate judges the planned RDS instance and the spec."""
    tenant = "ck-gate-dp-engine"
    path = stack_file(project / "stacks", tenant)
    path.write_text(yaml.safe_dump({"config": {"aws:region": sandbox.region, "tenantctl:platformStack": "platform",
                                               "tenantctl:tenant": {"id": tenant, "tier": "dedicated",
                                                                    "dedicated": {"deletion_protection": False},
                                                                    "backup": {"retention_days": 2}}}}))
    before = inventory(sandbox)
    try:
        with pytest.raises(PolicyRefused) as err:
            ready.engine.up(tenant)
    finally:
        path.unlink()
    found = {(v.rule, v.resource) for v in err.value.violations}
    assert ("deletion-protection", f"stacks/Pulumi.{tenant}.yaml") in found
    assert ("backup-retention", f"stacks/Pulumi.{tenant}.yaml") in found
    instance = f"{tenant}-pg-db"
    assert {("deletion-protection", instance), ("backup-retention", instance)} <= found, found
    assert err.value.exit_code == 8
    assert_nothing_created(sandbox, before, tenant)


def test_cli_refuses_a_single_az_shared_database(ready, cli, sandbox):
    """The platform spec's one unsafe option: `platform preview` (and so `up`)
    exits 8 naming the rule, before the engine changes anything."""
    path = stack_file(cli.root / "stacks", "platform")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"config": {"aws:region": sandbox.region,
                                               "tenantctl:platform": {"db_multi_az": False}}}))
    before = inventory(sandbox)
    try:
        run = cli("platform", "preview", "--json")
    finally:
        path.unlink()
    assert run.returncode == 8, run.stderr
    assert "rule shared-db-multi-az" in run.stderr and "cell default: db_multi_az is false" in run.stderr
    assert inventory(sandbox) == before


# -- only expressible by editing infra/: the program with one setting flipped ------------------

def transformed(type_: str, **props: Any) -> Callable[[str], dict[str, Any]]:
    def program(stack: str) -> dict[str, Any]:
        from infra.program import build

        def flip(args: pulumi.ResourceTransformationArgs):
            if args.type_ == type_:
                return pulumi.ResourceTransformationResult({**args.props, **props}, args.opts)
            return None

        pulumi.runtime.register_stack_transformation(flip)
        return build(stack)
    return program


def with_public_bucket(stack: str) -> dict[str, Any]:
    """A tenant bucket added to the program without the public access block."""
    from infra.program import build

    outputs = build(stack)
    spec = TenantSpec(id=stack)
    bucket = aws_sdk.s3.Bucket(f"{stack}-files", bucket=f"tenantctl-{stack}-files", tags=spec.tags())
    aws_sdk.s3.BucketPublicAccessBlock(f"{stack}-files-access", bucket=bucket.bucket, block_public_acls=False,
                                       block_public_policy=False, ignore_public_acls=False,
                                       restrict_public_buckets=False)
    aws_sdk.s3.BucketPolicy(f"{stack}-files-policy", bucket=bucket.bucket, policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                "Resource": f"arn:aws:s3:::tenantctl-{stack}-files/*"}]}))
    return outputs


def with_queues_on_another_key(stack: str) -> dict[str, Any]:
    """The tenant's queues encrypted with a second key the program makes: an ARN
    unknown at preview (the key does not exist yet), known during the up."""
    from infra.program import build

    other = aws_sdk.kms.Key(f"{stack}-other-key", enable_key_rotation=True, tags=TenantSpec(id=stack).tags())

    def use_other_key(args: pulumi.ResourceTransformationArgs):
        if args.type_ == "aws:sqs/queue:Queue":
            return pulumi.ResourceTransformationResult({**args.props, "kms_master_key_id": other.arn}, args.opts)
        return None

    pulumi.runtime.register_stack_transformation(use_other_key)
    return build(stack)


OPEN_INGRESS = [{"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["0.0.0.0/0"]}]

PROGRAM_CASES = [
    pytest.param("ck-gate-rotation", "pooled", transformed("aws:kms/key:Key", enable_key_rotation=False),
                 "kms-rotation", "key rotation is off", id="rotation-off"),
    pytest.param("ck-gate-sse", "pooled", transformed("aws:sqs/queue:Queue", kms_master_key_id=None),
                 "queue-encryption", "queue has no SSE-KMS key", id="queue-without-sse"),
    pytest.param("ck-gate-ingress", "dedicated",
                 transformed("aws:ec2/securityGroup:SecurityGroup", ingress=OPEN_INGRESS),
                 "no-open-ingress", "ingress open to 0.0.0.0/0 on port 443", id="open-ingress"),
    pytest.param("ck-gate-public-db", "dedicated", transformed("aws:rds/instance:Instance", publicly_accessible=True),
                 "public-database", "publicly accessible", id="public-db"),
    pytest.param("ck-gate-pub-bucket", "pooled", with_public_bucket,
                 "bucket-public-access", "public access not fully blocked", id="public-bucket"),
    # The security scanners' findings, each put back into the program.
    pytest.param("ck-gate-endpoint", "dedicated", transformed("aws:ec2/vpcEndpoint:VpcEndpoint", policy=None),
                 "vpc-endpoint-policy", "no endpoint policy", id="endpoint-without-policy"),
    pytest.param("ck-gate-rotation-days", "pooled",
                 transformed("aws:secretsmanager/secretRotation:SecretRotation",
                             rotation_rules={"automatically_after_days": 365}),
                 "secret-rotation", "rotated every 365 days", id="secret-rotated-yearly"),
    pytest.param("ck-gate-flow-log", "dedicated", transformed("aws:ec2/flowLog:FlowLog", traffic_type="REJECT"),
                 "vpc-flow-logs", "no flow log of ALL traffic", id="flow-log-rejects-only"),
    pytest.param("ck-gate-rds-iam", "dedicated",
                 transformed("aws:rds/instance:Instance", iam_database_authentication_enabled=False),
                 "rds-hardening", "IAM database authentication is off", id="rds-without-iam-auth"),
    pytest.param("ck-gate-topic", "pooled", transformed("aws:sns/topic:Topic", kms_master_key_id=None),
                 "alarm-topic-encryption", "topic not encrypted", id="plain-alarm-topic"),
    pytest.param("ck-gate-default-sg", "dedicated",
                 transformed("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
                             egress=[{"protocol": "-1", "from_port": 0, "to_port": 0, "cidr_blocks": ["0.0.0.0/0"]}]),
                 "default-security-group", "the default security group keeps rules", id="default-sg-egress"),
    # the rule admitting the dedicated tenant's app group into its database's group
    pytest.param("ck-gate-db-cidr", "dedicated",
                 transformed("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
                             referenced_security_group_id=None, cidr_ipv4="10.0.0.0/16"),
                 "db-ingress-from-groups", "PostgreSQL ingress from 10.0.0.0/16", id="db-ingress-from-vpc-range"),
]


@pytest.mark.parametrize("tenant, tier, program, rule, message", PROGRAM_CASES)
def test_gate_refuses_an_unsafe_program_before_anything_exists(ready, project, sandbox, tenant, tier, program,
                                                               rule, message):
    ws = Workspace(project_dir=project, cwd=project)
    ws.__dict__["engine"] = LocalEngine(project, sandbox, state_dir=sandbox.state_dir, gate=PolicyGate(project),
                                        program=program)
    before = inventory(sandbox)
    with pytest.raises(PolicyViolation) as err:
        provision(ws, TenantSpec.model_validate({"id": tenant, "tier": tier}))
    assert err.value.exit_code == 8
    assert rule in {v.rule for v in err.value.violations}
    assert f"rule {rule}" in str(err.value) and message in str(err.value)
    assert_nothing_created(sandbox, before, tenant)
    # The fresh reservation is withdrawn and the stack file this run wrote removed:
    # the id is as free as before.
    assert ws.registry.get(tenant) is None
    assert not stack_file(ws.stacks_dir, tenant).exists()


def test_a_refused_update_keeps_the_tenant_and_its_committed_file(ready, project, sandbox, provision_tenant):
    """An existing tenant whose update the gate refuses: record kept (active,
    unlocked, the refusal in last_error), the committed stack file put back."""
    tenant = "ck-gate-update"
    provision_tenant(tenant)
    ws = Workspace(project_dir=project, cwd=project)
    committed = stack_file(ws.stacks_dir, tenant).read_text()
    ws.__dict__["engine"] = LocalEngine(project, sandbox, state_dir=sandbox.state_dir, gate=PolicyGate(project),
                                        program=transformed("aws:kms/key:Key", enable_key_rotation=False))
    with pytest.raises(PolicyViolation):
        provision(ws, TenantSpec.model_validate({"id": tenant, "owner": "someone-else"}))
    assert stack_file(ws.stacks_dir, tenant).read_text() == committed
    record = ws.registry.require(tenant)
    assert record.status.value == "active" and record.lock is None and record.owner != "someone-else"
    assert "kms-rotation" in record.last_error


def test_a_value_unknown_at_preview_is_judged_before_the_up_uses_it(ready, project, sandbox):
    """The preview cannot see which key the queues use (it does not exist yet):
    the gate leaves that to the apply pass, which judges each resource with
    resolved values and refuses the first queue before creating it (exit 8)."""
    tenant = "ck-gate-late-key"
    ws = Workspace(project_dir=project, cwd=project)
    ws.__dict__["engine"] = LocalEngine(project, sandbox, state_dir=sandbox.state_dir, gate=PolicyGate(project),
                                        program=with_queues_on_another_key)
    with pytest.raises(PolicyViolation) as err:
        provision(ws, TenantSpec(id=tenant))
    assert err.value.exit_code == 8 and "during its up" in str(err.value)
    assert [(v.rule, v.resource) for v in err.value.violations] == [("queue-encryption", f"{tenant}-dlq")]
    assert aws(sandbox, "sqs").list_queues(QueueNamePrefix=f"tenantctl-{tenant}").get("QueueUrls", []) == []
    record = ws.registry.require(tenant)  # resources exist: the record stays for a re-run or a deprovision
    assert record.lock is None and "queue-encryption" in record.last_error


def test_the_unmodified_program_passes_the_gate_on_the_sandbox(ready, provision_tenant):
    """The real program, pooled and dedicated, goes through the same gate (every
    provision here does); a dedicated tenant's deprovision lifts deletion
    protection under the gate's one waiver."""
    pooled = provision_tenant("ck-gate-clean")
    assert pooled.status.value == "active" and pooled.last_error is None
    dedicated, _ = provision(ready, TenantSpec.model_validate({"id": "ck-gate-ded", "tier": "dedicated"}))
    assert dedicated.status.value == "active" and dedicated.last_error is None, dedicated.last_error
    record, changes, _ = deprovision(ready, "ck-gate-ded", final_backup=False)
    assert record.status.value == "deprovisioned" and changes.count(changes.changes[0].op) > 0
    from tenantctl.checks import check_tenant
    from tenantctl.errors import InvalidInput

    with pytest.raises(InvalidInput, match="deprovisioned: its resources are gone"):
        check_tenant(ready, "ck-gate-ded")
