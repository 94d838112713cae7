"""The main job as a user runs it: `tenantctl provision` -> `status --json` ->
`deprovision --yes`, as subprocesses in a project directory of their own, on the
session's sandbox. Every resource the tenant should have is looked up on the
sandbox itself (moto and PostgreSQL), not taken from tenantctl's output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import psycopg
import pytest

from tenantctl import naming

REPO = Path(__file__).resolve().parents[2]
TENANT = "cli-acme"


@pytest.fixture(scope="module")
def cli(sandbox, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-project")
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    env = {**os.environ, "TENANTCTL_SANDBOX_DIR": str(sandbox.state_dir), "PYTHONWARNINGS": "ignore"}
    env.pop("TENANTCTL_TARGET", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tenantctl", *args], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)

    run.root, run.env = root, env
    return run


def aws(sandbox, service: str):
    return boto3.client(service, endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)


def lifecycle_rule_ids(sandbox, bucket: str) -> set[str]:
    s3 = aws(sandbox, "s3")
    try:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except s3.exceptions.ClientError as exc:  # the last tenant's rules went with the configuration
        assert exc.response["Error"]["Code"] == "NoSuchLifecycleConfiguration"
        return set()
    return {r["ID"] for r in rules}


def schema_exists(sandbox, database: str, schema: str) -> bool:
    with psycopg.connect(sandbox.pg_dsn(database)) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is not None


def test_provision_status_deprovision(cli, sandbox):
    provisioned = cli("provision", TENANT, "--json")
    assert provisioned.returncode == 0, provisioned.stderr
    assert (cli.root / "stacks" / f"Pulumi.{TENANT}.yaml").exists()

    status = cli("status", TENANT, "--json")
    assert status.returncode == 0, status.stderr
    record = json.loads(status.stdout)
    assert record["status"] == "active" and record["lock"] is None
    res = record["resources"]

    key = aws(sandbox, "kms").describe_key(KeyId=naming.kms_alias(TENANT))["KeyMetadata"]
    assert key["Arn"] == res["kms_key_arn"] and key["KeyState"] == "Enabled"
    sqs = aws(sandbox, "sqs")
    queue = sqs.get_queue_attributes(QueueUrl=res["queue_url"], AttributeNames=["All"])["Attributes"]
    dlq = sqs.get_queue_attributes(QueueUrl=res["dlq_url"], AttributeNames=["QueueArn"])["Attributes"]
    assert json.loads(queue["RedrivePolicy"])["deadLetterTargetArn"] == dlq["QueueArn"]
    assert res["queue_url"].endswith(naming.queue_name(TENANT))
    # Its retention classes are rules of the shared bucket (one per class, for every tenant): none of its own.
    rule_ids = lifecycle_rule_ids(sandbox, res["bucket"])
    assert {f"tenantctl-class-{c}" for c in res["lifecycle_classes"].values()} <= rule_ids
    assert not {rid for rid in rule_ids if rid.startswith(f"tenantctl-{TENANT}-")}
    assert aws(sandbox, "iam").get_role(RoleName=naming.iam_role_name(TENANT))["Role"]["Arn"] == res["role_arn"]
    secret = aws(sandbox, "secretsmanager").describe_secret(SecretId=res["store"]["secret_arn"])
    assert secret["Name"] == naming.secret_name(TENANT)
    assert schema_exists(sandbox, res["store"]["database"], res["store"]["schema_name"])

    again = cli("provision", TENANT, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changes"] == {"same": json.loads(provisioned.stdout)["changes"]["create"]}

    refused = cli("deprovision", TENANT)  # no --yes and no terminal to confirm on
    assert refused.returncode != 0
    assert cli("status", TENANT, "--json").returncode == 0

    gone = cli("deprovision", TENANT, "--yes", "--json")
    assert gone.returncode == 0, gone.stderr
    tombstone = json.loads(cli("status", TENANT, "--json").stdout)
    assert tombstone["status"] == "deprovisioned" and tombstone["retain_until"]

    # The key waits out its deletion window; everything else is gone.
    assert aws(sandbox, "kms").describe_key(KeyId=res["kms_key_arn"])["KeyMetadata"]["KeyState"] == "PendingDeletion"
    queues = sqs.list_queues(QueueNamePrefix=naming.queue_name(TENANT)).get("QueueUrls", [])
    assert queues == []
    with pytest.raises(aws(sandbox, "iam").exceptions.NoSuchEntityException):
        aws(sandbox, "iam").get_role(RoleName=naming.iam_role_name(TENANT))
    assert lifecycle_rule_ids(sandbox, res["bucket"]) == rule_ids  # the bucket's rules are untouched by tenants
    assert not schema_exists(sandbox, res["store"]["database"], res["store"]["schema_name"])
    assert not (cli.root / "stacks" / f"Pulumi.{TENANT}.yaml").exists()

    reused = cli("provision", TENANT)
    assert reused.returncode == 5 and "tombstoned" in reused.stderr


def test_bad_input_is_one_line_and_creates_nothing(cli):
    bad = cli("provision", "Pg_Bad--id")
    assert bad.returncode == 3
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (cli.root / "stacks" / "Pulumi.Pg_Bad--id.yaml").exists()

    unknown = cli("status", "never-made", "--json")
    assert unknown.returncode == 6


def test_list_paginates(cli):
    for tenant in ("cli-p1", "cli-p2", "cli-p3"):
        assert cli("provision", tenant).returncode == 0
    seen: list[str] = []
    cursor: str | None = None
    while True:
        args = ["list", "--json", "--limit", "2"] + (["--cursor", cursor] if cursor else [])
        page = json.loads(cli(*args).stdout)
        seen += [t["tenant_id"] for t in page["tenants"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert {"cli-p1", "cli-p2", "cli-p3"} <= set(seen)
    assert len(seen) == len(set(seen))


PROBE = """
import json, sys
from tenantctl.cli.app import main
sys.argv = ["tenantctl", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
sys.stderr.write(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {"pulumi", "pulumi_aws"})))
"""


@pytest.mark.parametrize("args", [["--help"], ["provision", "--help"], ["list", "--json"],
                                  ["status", "cli-p1", "--json"], ["sandbox", "status"]])
def test_read_only_commands_do_not_import_pulumi(cli, args):
    if not cli("list", "--json").stdout.count('"cli-p1"'):  # the platform and a tenant exist: these only read
        assert cli("provision", "cli-p1").returncode == 0
    probe = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cli.root, capture_output=True, text=True,
                           env={**os.environ, "TENANTCTL_SANDBOX_DIR": cli.env["TENANTCTL_SANDBOX_DIR"]},
                           timeout=120)
    loaded = json.loads(probe.stderr.strip().splitlines()[-1])
    assert loaded == [], f"`tenantctl {' '.join(args)}` imported {loaded}"
