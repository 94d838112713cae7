"""A cell in aws-cn or aws-us-gov: every ARN tenantctl builds or matches is of
its region's partition; for aws regions nothing changes."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from infra_mocks import RecordingMocks, platform_config, run_program, tenant_config
from runtime_fixtures import record

from infra.components.platform_monitoring import flow_logs_document, monitoring_document
from infra.components.runtime_role import runtime_access_document
from infra.components.tenant_role import trust_document
from tenantctl import naming
from tenantctl.checks import iam_eval
from tenantctl.checks.aws_posture import _AwsChecks
from tenantctl.engines.local.handlers.base import Context
from tenantctl.errors import InvalidInput
from tenantctl.policy import check, endpoint_policy_problems, judge, planned_resource
from tenantctl.policy.plan import as_list

ACCOUNT = "123456789012"
PARTITIONS = [("us-east-1", "aws"), ("cn-north-1", "aws-cn"), ("cn-northwest-1", "aws-cn"),
              ("us-gov-west-1", "aws-us-gov"), ("us-gov-east-1", "aws-us-gov")]


@pytest.mark.parametrize(("region", "partition"), PARTITIONS)
def test_an_arn_is_of_its_regions_partition(region, partition):
    assert naming.arn(region, "sqs", ACCOUNT, "q") == f"arn:{partition}:sqs:{region}:{ACCOUNT}:q"
    # Global services name no region, but their partition is still the region's.
    assert naming.arn(region, "s3", "", "b/k") == f"arn:{partition}:s3:::b/k"
    assert naming.arn(region, "iam", ACCOUNT, "root") == f"arn:{partition}:iam::{ACCOUNT}:root"
    assert naming.arn(region, "rds", ACCOUNT, "db:x", any_region=True) == f"arn:{partition}:rds:*:{ACCOUNT}:db:x"


def _tenant(region: str):
    rec = record("acme")
    return rec.model_copy(update={"region": region, "resources": rec.resources.model_copy(update={
        "region": region, "role_arn": naming.arn(region, "iam", ACCOUNT, "role/tenantctl-acme-app")})})


def _role_policy(partition: str) -> dict:
    """The tenant role's S3 statements as the program writes them (bucket ARNs come from AWS)."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "Objects", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": f"arn:{partition}:s3:::shared/tenants/acme/*"},
        {"Sid": "List", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:{partition}:s3:::shared",
         "Condition": {"StringLike": {"s3:prefix": ["tenants/acme/", "tenants/acme/*"]}}}]}


def _checks(region: str, doc: dict, runtime: str | None = None) -> _AwsChecks:
    reads = SimpleNamespace(attached_policies=lambda: [], role_policy_names=lambda: ["access"],
                            role_policy=lambda name: doc, trust_policy=lambda: trust_document("acme", runtime))
    platform = {"account_id": ACCOUNT, "runtime_principal_arn": runtime}
    return _AwsChecks(_tenant(region), platform, lambda *a, **k: None, reads)


@pytest.mark.parametrize(("region", "partition"), PARTITIONS)
@pytest.mark.parametrize("home", ["us-east-1", "same"])
def test_the_role_trust_check_assumes_as_a_session_of_the_runtime_in_its_own_partition(region, partition, home):
    """The probes' caller is a session of the runtime role in the runtime's partition (its home cell's):
    the tenant's region's own when the home is there too, whatever it is otherwise."""
    runtime = naming.arn(region if home == "same" else home, "iam", ACCOUNT, f"role/{naming.RUNTIME_ROLE}")
    ok, detail = _checks(region, {}, runtime).role_trust()
    assert ok, detail


@pytest.mark.parametrize(("region", "partition"), PARTITIONS)
def test_the_role_policy_check_probes_the_buckets_own_partition(region, partition):
    ok, detail = _checks(region, _role_policy(partition)).role_policy_scope()
    assert ok, detail
    # A policy naming the bucket in another partition reaches nothing of it.
    other = "aws-cn" if partition == "aws" else "aws"
    ok, detail = _checks(region, _role_policy(other)).role_policy_scope()
    assert not ok and f"arn:{partition}:s3:::shared/tenants/acme/probe" in detail


@pytest.mark.parametrize(("region", "partition"), PARTITIONS)
def test_the_key_and_topic_checks_expect_the_tenants_partition(region, partition):
    checks = _checks(region, {})
    assert checks._topic_arn == f"arn:{partition}:sns:{region}:{ACCOUNT}:tenantctl-acme-alarms"
    scope = checks._service_scope()
    alarms = scope["cloudwatch.amazonaws.com"]
    assert alarms and all(a.startswith(f"arn:{partition}:cloudwatch:{region}:{ACCOUNT}:alarm:") for a in alarms)


@pytest.mark.parametrize(("region", "partition"), PARTITIONS)
def test_s3_requests_are_of_the_buckets_partition(region, partition):
    doc = _role_policy(partition)
    assert iam_eval.evaluate([doc], iam_eval.s3_object("s3:GetObject", "shared", "tenants/acme/f",
                                                       region=region)).allowed
    assert iam_eval.evaluate([doc], iam_eval.s3_list("shared", "tenants/acme/", region=region)).allowed
    if partition != "aws":  # requests default to the aws partition: a cn bucket's policy does not match them
        assert not iam_eval.evaluate([doc], iam_eval.s3_object("s3:GetObject", "shared", "tenants/acme/f")).allowed


def _runtime_policy(region: str) -> list:
    arn = lambda service, resource: naming.arn(region, service, ACCOUNT, resource)  # noqa: E731
    doc = runtime_access_document(arn("dynamodb", "table/tenantctl-registry"), arn("dynamodb", "table/revocations"),
                                  arn("secretsmanager", "secret:tenantctl/gateway"), arn("kms", "key/k"),
                                  region, ACCOUNT)
    return [planned_resource("aws:iam/rolePolicy:RolePolicy", "runtime-access",
                             {"role": naming.RUNTIME_ROLE, "policy": json.dumps(doc)})], doc


@pytest.mark.parametrize(("region", "partition"), PARTITIONS)
def test_the_gate_accepts_the_runtime_role_of_a_cell_in_any_partition(region, partition):
    resources, doc = _runtime_policy(region)
    resources_of = {r for s in doc["Statement"] for r in as_list(s["Resource"])}
    assert all(r.startswith(f"arn:{partition}:") for r in resources_of), resources_of
    assert judge(resources, "platform", platform=True, rules=["iam-scope"]).violations == []


def test_the_gate_still_refuses_what_is_no_tenant_resource_in_any_partition():
    for partition in ("aws", "aws-cn", "aws-us-gov"):
        doc = {"Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": f"arn:{partition}:iam::*:role/admin"},
            {"Effect": "Allow", "Action": "rds:StartDBInstance", "Resource": f"arn:{partition}:rds:*:1:db:other"},
            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": f"arn:{partition}:s3:::b/key/x"},
            # a tenant instance, but in no partition
            {"Effect": "Allow", "Action": "rds:StartDBInstance",
             "Resource": f"arn:x{partition}:rds:*:1:db:tenantctl-*"},
        ]}
        r = planned_resource("aws:iam/rolePolicy:RolePolicy", "runtime-access",
                             {"role": naming.RUNTIME_ROLE, "policy": json.dumps(doc)})
        assert len(judge([r], "platform", platform=True, rules=["iam-scope"]).violations) == 4, partition


@pytest.mark.parametrize("partition", ["aws", "aws-cn", "aws-us-gov"])
def test_an_s3_endpoint_policy_reaching_every_bucket_is_refused_in_any_partition(partition):
    doc = {"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:{partition}:s3:::*",
                          "Condition": {"StringEquals": {"aws:ResourceAccount": ACCOUNT}}}]}
    assert endpoint_policy_problems(doc, f"com.amazonaws.{partition}.s3") == ["statement ? reaches every bucket"]


@pytest.mark.parametrize(("region", "partition"), PARTITIONS)
def test_the_platform_programs_documents_are_of_the_cells_partition(region, partition):
    docs = [flow_logs_document(region, ACCOUNT), monitoring_document(region, ACCOUNT), _runtime_policy(region)[1]]
    found = {r for d in docs for s in d["Statement"] for r in as_list(s["Resource"])}
    assert found and all(r.startswith(f"arn:{partition}:") for r in found), found


@pytest.mark.parametrize(("region", "partition"), PARTITIONS)
def test_local_engine_handlers_make_arns_of_the_sandbox_regions_partition(region, partition):
    ctx = Context(region=region, client=None, pg_connect=None, pg_endpoint=("", 0, "", "", ""),
                  stack_outputs=None, identity=lambda: {"Account": ACCOUNT})
    assert ctx.arn("sqs", "q") == f"arn:{partition}:sqs:{region}:{ACCOUNT}:q"
    assert ctx.arn("iam", "role/r") == f"arn:{partition}:iam::{ACCOUNT}:role/r"
    assert ctx.arn("s3", "b", account="") == f"arn:{partition}:s3:::b"


def _arns(value) -> set[str]:
    if isinstance(value, str):
        found = set(re.findall(r'arn:[a-z-]+:[^"\s]*', value))
        return found or ({value} if value.startswith("arn:") else set())
    if isinstance(value, dict):
        return set().union(*map(_arns, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(_arns, value)) if value else set()
    return set()


@pytest.mark.parametrize("region", ["cn-north-1", "us-gov-west-1"])
def test_a_cell_and_its_tenants_declare_only_arns_of_their_partition(region):
    """The program under mocks that answer as AWS does there: every ARN any resource declares
    (policies, key statements, flow logs) is of the cell's partition, and the gate passes it."""
    partition, suffix = naming.partition_of(region), naming.dns_suffix(region)
    acme, globex = {"id": "acme", "owner": "a"}, {"id": "globex", "tier": "dedicated", "owner": "g"}
    for stack, config, spec in [("platform", platform_config({"owner": "ops", "region": region}, region), None),
                                ("acme", tenant_config({**acme, "region": region}, region), "acme"),
                                ("globex", tenant_config({**globex, "region": region}, region), "globex")]:
        mocks = RecordingMocks(region=region)
        run_program(stack, config, mocks)
        found = set().union(*(_arns(r.inputs) for r in mocks.resources))
        assert found and {a for a in found if not a.startswith(f"arn:{partition}:")} == set(), stack
        # the rotation application itself too, and the endpoint its function calls
        for app in mocks.of_type("aws:serverlessrepository/cloudFormationStack:CloudFormationStack"):
            assert app.inputs["applicationId"] == naming.rotation_application(region), stack
            assert app.inputs["parameters"]["endpoint"] == f"https://secretsmanager.{region}.{suffix}", stack
        for key in mocks.of_type("aws:kms/key:Key"):
            services = {s["Principal"]["Service"] for s in json.loads(key.inputs["policy"])["Statement"]
                        if "Service" in s["Principal"]}
            assert services <= {"cloudwatch.amazonaws.com", naming.service_principal("logs", region)}, stack
        assert check(mocks.resources, spec or "platform", platform=spec is None) == [], stack


# The Serverless Application Repository publisher of the rotation applications in each partition
# (aws-cdk's SecretRotationApplication.applicationArnForPartition).
ROTATION_APPS = {
    "aws": "arn:aws:serverlessrepo:us-east-1:297356227824:applications/",
    "aws-cn": "arn:aws-cn:serverlessrepo:cn-north-1:193023089310:applications/",
    "aws-us-gov": "arn:aws-us-gov:serverlessrepo:us-gov-west-1:023102451235:applications/",
}


@pytest.mark.parametrize(("region", "partition"), PARTITIONS)
def test_the_rotation_application_is_its_partitions_own(region, partition):
    assert naming.rotation_application(region) == (ROTATION_APPS[partition]
                                                   + "SecretsManagerRDSPostgreSQLRotationSingleUser")


@pytest.mark.parametrize(("region", "partition"), [("us-iso-east-1", "aws-iso"), ("us-isob-east-1", "aws-iso-b"),
                                                   ("us-isof-south-1", "aws-iso-f"), ("eu-isoe-west-1", "aws-iso-e"),
                                                   ("eusc-de-east-1", "aws-eusc")])
def test_a_region_of_a_partition_with_no_known_rotation_application_is_refused(region, partition):
    """Not an ARN of the aws partition (which would be refused there only mid-deploy): exit 3 first."""
    assert naming.partition_of(region) == partition
    with pytest.raises(InvalidInput, match=f"{partition}.*rotation") as refused:
        naming.require_deployable(region)
    assert refused.value.rule == "partition"
    for known, _ in PARTITIONS:
        naming.require_deployable(known)


@pytest.mark.parametrize(("region", "principal"), [
    ("us-east-1", "logs.us-east-1.amazonaws.com"), ("us-gov-west-1", "logs.us-gov-west-1.amazonaws.com"),
    ("cn-north-1", "logs.cn-north-1.amazonaws.com.cn"), ("cn-northwest-1", "logs.cn-northwest-1.amazonaws.com.cn")])
def test_the_logs_service_principal_is_regional_and_of_its_partitions_domain(region, principal):
    assert naming.service_principal("logs", region) == principal
    # the others tenantctl names are one name in every partition
    for service in ("cloudwatch", "vpc-flow-logs", "monitoring.rds", "logging.s3", "lambda", "ecs-tasks"):
        assert naming.service_principal(service, region) == f"{service}.amazonaws.com"


@pytest.mark.parametrize(("region", "partition"), PARTITIONS)
def test_the_key_policy_check_accepts_the_logs_statement_of_its_partition(region, partition):
    from infra.components.kms_key import logs_statement

    checks = _checks(region, {})
    checks.sides = [("dedicated", None)]
    stmt = logs_statement(region, ACCOUNT, naming.own_log_groups("acme"))
    assert stmt["Principal"] == {"Service": f"logs.{region}.amazonaws.com{'.cn' if partition == 'aws-cn' else ''}"}
    stmt = {**stmt, "Condition": {"StringLike": {"kms:EncryptionContext:aws:logs:arn": [
        naming.arn(region, "logs", ACCOUNT, f"log-group:{g}") for g in naming.own_log_groups("acme")]}}}
    assert checks._service_statement_ok(stmt)


def test_the_bench_scripts_build_no_arn_by_hand():
    """They run against a sandbox of any region: its ARNs come from naming, as the program's do."""
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "bench"
    by_hand = [f"{p.name}:{n}" for p in sorted(bench.glob("*.py"))
               for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"arn:aws[:-]", line)]
    assert by_hand == []


@pytest.mark.parametrize("region", ["us-iso-east-1", "eusc-de-east-1"])
def test_cell_add_refuses_a_partition_with_no_known_rotation_application_naming_it(tmp_path, region):
    from tenantctl.operations.cell import cell_spec
    from tenantctl.workspace import Workspace

    (tmp_path / "stacks").mkdir()
    with pytest.raises(InvalidInput, match="rotation application") as refused:
        cell_spec(Workspace(project_dir=tmp_path, cwd=tmp_path), "iso1", {"region": region})
    assert refused.value.rule == "partition" and not list((tmp_path / "stacks").iterdir())
