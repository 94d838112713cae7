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

    def run(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tenantctl", *args], cwd=root, env={**env, **(extra or {})},
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

    shown = cli("status", TENANT).stdout.splitlines()  # what the tombstone names, and what became of each
    for field, fate in (("kms key ", "(scheduled for deletion)"), ("queue ", "(deleted)"), ("role ", "(deleted)"),
                        ("db secret ", "(deleted)"), ("store ", "(deleted)")):
        [line] = [line for line in shown if line.startswith(field)]
        assert line.endswith(fate), line

    reused = cli("provision", TENANT)
    assert reused.returncode == 5 and "tombstoned" in reused.stderr
    assert f"`tenantctl drill restore {TENANT} --target in-place --yes` brings it back" in reused.stderr


def as_role(sandbox, secret_arn: str) -> psycopg.Connection:
    """A connection as the login whose credentials the secret holds."""
    creds = json.loads(aws(sandbox, "secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"])
    return psycopg.connect(host=creds["host"], port=creds["port"], dbname=creds["dbname"], user=creds["username"],
                           password=creds["password"], autocommit=True)


def workspace_gone(sandbox, ws: dict) -> None:
    """Nothing of the workspace is left but its key, waiting out its deletion window."""
    assert aws(sandbox, "kms").describe_key(KeyId=ws["kms_key_arn"])["KeyMetadata"]["KeyState"] == "PendingDeletion"
    for url in (ws["queue_url"], ws["dlq_url"]):
        with pytest.raises(aws(sandbox, "sqs").exceptions.ClientError):
            aws(sandbox, "sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    with pytest.raises(aws(sandbox, "iam").exceptions.NoSuchEntityException):
        aws(sandbox, "iam").get_role(RoleName=ws["role_arn"].rsplit("/", 1)[1])
    store = ws["store"]
    assert not schema_exists(sandbox, store["database"], store["schema_name"])
    with psycopg.connect(sandbox.pg_dsn(store["database"])) as conn:
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (store["role"],)).fetchone() is None


def write_as_workspace(sandbox, ws: dict, row_key: str, bucket: str) -> list[tuple]:
    """Two conversations written as the workspace's own role, and an object under its prefix and key."""
    with as_role(sandbox, ws["store"]["secret_arn"]) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (row_key,))
        for c in ("c1", "c2"):
            conn.execute("INSERT INTO conversations (conversation_id) VALUES (%s)", (c,))
    aws(sandbox, "s3").put_object(Bucket=bucket, Key=f"{ws['prefix']}uploads/a.txt", Body=b"legal memo",
                                  ServerSideEncryption="aws:kms", SSEKMSKeyId=ws["kms_key_arn"])
    return read_as_workspace(sandbox, ws, row_key)


def read_as_workspace(sandbox, ws: dict, row_key: str) -> list[tuple]:
    with as_role(sandbox, ws["store"]["secret_arn"]) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (row_key,))
        return conn.execute("SELECT tenant_id, conversation_id FROM conversations ORDER BY 2").fetchall()


def s3_key_of(sandbox, bucket: str, key: str) -> str:
    return aws(sandbox, "s3").head_object(Bucket=bucket, Key=key)["SSEKMSKeyId"]


def test_a_workspace_is_added_isolated_removed_and_goes_with_its_tenant(cli, sandbox):
    tenant = "cli-ws"
    assert cli("provision", tenant).returncode == 0
    stack = cli.root / "stacks" / f"Pulumi.{tenant}.yaml"
    committed = stack.read_text()
    for args, code in ((("workspace", "add", tenant, "Legal"), 3), (("workspace", "add", tenant, "le--gal"), 3),
                       (("workspace", "add", "never-made", "legal"), 6),
                       (("workspace", "remove", tenant, "legal", "--yes", "--no-final-backup"), 6)):
        refused = cli(*args)
        assert refused.returncode == code, (args, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert stack.read_text() == committed  # refusals wrote nothing

    added = cli("workspace", "add", tenant, "legal", "--json")
    assert added.returncode == 0, added.stderr
    record = json.loads(added.stdout)["record"]
    tenant_res, ws = record["resources"], record["resources"]["workspaces"]["legal"]
    names = naming.OwnerNames(tenant, "legal")
    assert "legal" in stack.read_text()

    # Its own key, role, queues and secret, looked up on moto.
    key = aws(sandbox, "kms").describe_key(KeyId=names.kms_alias)["KeyMetadata"]
    assert key["Arn"] == ws["kms_key_arn"] != tenant_res["kms_key_arn"] and key["KeyState"] == "Enabled"
    for url in (ws["queue_url"], ws["dlq_url"]):
        attrs = aws(sandbox, "sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attrs["KmsMasterKeyId"] == ws["kms_key_arn"]
    assert ws["queue_url"].endswith(names.queue)
    iam = aws(sandbox, "iam")
    assert iam.get_role(RoleName=names.iam_role)["Role"]["Arn"] == ws["role_arn"]
    [policy_name] = iam.list_role_policies(RoleName=names.iam_role)["PolicyNames"]
    doc = iam.get_role_policy(RoleName=names.iam_role, PolicyName=policy_name)["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    objects = next(st for st in doc["Statement"] if st["Sid"] == "TenantObjects")
    assert objects["Resource"].endswith(f"/{names.s3_prefix}*")
    assert aws(sandbox, "secretsmanager").describe_secret(SecretId=ws["store"]["secret_arn"])["Name"] == names.secret

    # Its schema: RLS forced on every table, keyed on `<tenant>/<workspace>`; its role sees nothing of the tenant's.
    store = ws["store"]
    assert (store["schema_name"], store["role"]) == (names.schema, names.db_role)
    with psycopg.connect(sandbox.pg_dsn(store["database"])) as conn:
        from tenantctl.tenant_schema_sql import FORCED, row_security

        assert set(row_security(conn, names.schema).values()) == {FORCED}
    with as_role(sandbox, store["secret_arn"]) as conn:
        assert conn.execute("SELECT count(*) FROM conversations").fetchone() == (0,)  # its own schema, fail closed
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT * FROM {tenant_res['store']['schema_name']}.conversations")
    with as_role(sandbox, tenant_res["store"]["secret_arn"]) as conn, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"SELECT * FROM {names.schema}.conversations")

    again = cli("workspace", "add", tenant, "legal", "--json")  # idempotent: nothing changes
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False
    listed = json.loads(cli("workspace", "list", tenant, "--json").stdout)
    assert [(v["name"], v["desired"], v["applied"]) for v in listed] == [("legal", True, True)]
    # A workspace the tenant never had is unknown to the drills too, and nothing is written under its name.
    assert cli("drill", "history", tenant, "--limit", "0").returncode == 2  # a usage error, not every drill
    for verb in ("backup", "run", "restore", "history"):
        unknown = cli("drill", verb, tenant, "--workspace", "never", "--json")
        assert unknown.returncode == 6, unknown
        assert "has no workspace 'never'" in json.loads(unknown.stdout)["error"]["message"]
    never = naming.OwnerNames(tenant, "never").s3_prefix
    assert aws(sandbox, "s3").list_objects_v2(Bucket=tenant_res["bucket"], Prefix=never)["KeyCount"] == 0

    written = write_as_workspace(sandbox, ws, names.key, tenant_res["bucket"])
    backed = cli("drill", "backup", tenant, "--workspace", "legal", "--json")
    assert backed.returncode == 0, backed.stderr
    manifest = json.loads(backed.stdout)
    assert (manifest["workspace"], manifest["key_arn"], manifest["schema_name"]) == \
        ("legal", ws["kms_key_arn"], names.schema)
    assert manifest["tables"]["conversations"]["rows"] == 2 and manifest["dump"]["key"].startswith(names.s3_prefix)
    ran = cli("drill", "run", tenant, "--workspace", "legal", "--json")  # what `drill run --all` does per workspace
    assert ran.returncode == 0, ran.stderr
    assert (json.loads(ran.stdout)["workspace"], json.loads(ran.stdout)["verdict"]) == ("legal", "pass")
    # `usage`'s table: the workspace on a row of its own, its rows apart from the tenant's.
    shown = cli("usage", tenant, extra={"COLUMNS": "250"})  # no column wrapped
    assert shown.returncode == 0, shown.stderr
    [mine] = [line.split() for line in shown.stdout.splitlines() if f"{tenant}/legal" in line]
    assert mine[:2] == [f"{tenant}/legal", "workspace"] and any(c.startswith("2/0/") for c in mine), shown.stdout
    [header] = [line for line in shown.stdout.splitlines() if "rows: " in line]  # a label for every count
    labels = header.split("rows: ")[1].split()[0].split("/")
    assert len(labels) == len(next(c for c in mine if c.startswith("2/0/")).split("/")), (labels, mine)

    assert cli("workspace", "remove", tenant, "legal").returncode == 13  # not confirmed
    removed = cli("workspace", "remove", tenant, "legal", "--yes", "--json")
    assert removed.returncode == 0, removed.stderr
    final = json.loads(removed.stdout)["final_backup"]
    assert json.loads(removed.stdout)["record"]["resources"].get("workspaces", {}) == {}
    assert "legal" not in stack.read_text()
    workspace_gone(sandbox, ws)
    assert schema_exists(sandbox, tenant_res["store"]["database"], tenant_res["store"]["schema_name"])
    history = json.loads(cli("drill", "history", tenant, "--workspace", "legal", "--json").stdout)
    assert [(b["backup_id"], b["reason"]) for b in history["backups"]][0] == (final, "final")  # newest first
    # Removed, it is refused for what it is (exit 3, no failed drill recorded): its backups open with its
    # old key, which only a restore in place brings back, and nothing of it is live to back up.
    for args in (("restore",), ("run", "--backup", final), ("run",)):
        refused = cli("drill", args[0], tenant, "--workspace", "legal", *args[1:], "--json")
        assert refused.returncode == 3, refused
        assert "was removed" in json.loads(refused.stdout)["error"]["message"], refused.stdout
    after = json.loads(cli("drill", "history", tenant, "--workspace", "legal", "--json").stdout)["drills"]
    assert len(after) == len(history["drills"])

    # Within its key's window the removed workspace comes back from its final backup, under a new key.
    back = cli("drill", "restore", tenant, "--workspace", "legal", "--backup", final, "--target", "in-place",
               "--yes", "--json")
    assert back.returncode == 0, back.stdout + back.stderr
    revived = json.loads(cli("workspace", "show", tenant, "legal", "--json").stdout)["resources"]
    assert revived["kms_key_arn"] != ws["kms_key_arn"]
    kms = aws(sandbox, "kms")
    assert kms.describe_key(KeyId=ws["kms_key_arn"])["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert read_as_workspace(sandbox, revived, names.key) == written
    assert s3_key_of(sandbox, tenant_res["bucket"], f"{names.s3_prefix}uploads/a.txt") == revived["kms_key_arn"]
    removed = cli("workspace", "remove", tenant, "legal", "--yes", "--no-final-backup")
    assert removed.returncode == 0, removed.stderr
    workspace_gone(sandbox, revived)

    # Deprovisioning the tenant takes its workspaces with it, each after a final backup of its own,
    # as the confirmation says.
    finance = json.loads(cli("workspace", "add", tenant, "finance", "--json").stdout)["workspace"]
    unconfirmed = cli("deprovision", tenant, "--json")  # no terminal to ask on
    assert unconfirmed.returncode == 13, unconfirmed
    [said] = [d for d in json.loads(unconfirmed.stdout)["error"]["details"] if d.startswith("workspace finance:")]
    assert f"schema {finance['store']['schema_name']}: its data is deleted; a final backup is taken first " \
           "(the workspace's own, under its key)" in said and "NO final backup" not in said, said
    assert cli("deprovision", tenant, "--yes").returncode == 0
    workspace_gone(sandbox, finance)
    finals = json.loads(cli("drill", "history", tenant, "--workspace", "finance", "--json").stdout)["backups"]
    assert [b["reason"] for b in finals] == ["final"]
    # The tombstone's workspaces are refused for what they are, not for a missing stack file; so are a resume
    # and a drill (nothing live to back up: refused, not a failed drill in its history).
    for args in (("workspace", "add", tenant, "legal"), ("workspace", "list", tenant), ("resume", tenant),
                 ("drill", "run", tenant)):
        refused = cli(*args, "--json")
        assert refused.returncode == 3 and "is deprovisioned" in json.loads(refused.stdout)["error"]["message"], \
            refused
    assert json.loads(cli("drill", "history", tenant, "--json").stdout)["drills"] == []


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
    # About four pages whatever else the session's registry holds (a page is a process: two records a page
    # over every earlier test file's tenants took a minute).
    every = json.loads(cli("list", "--all", "--json").stdout)["tenants"]
    limit = str(max(2, len(every) // 4))
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        pages += 1
        args = ["list", "--json", "--limit", limit] + (["--cursor", cursor] if cursor else [])
        page = json.loads(cli(*args).stdout)
        seen += [t["tenant_id"] for t in page["tenants"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert {"cli-p1", "cli-p2", "cli-p3"} <= set(seen) and pages > 1
    assert len(seen) == len(set(seen)) and sorted(seen) == sorted(t["tenant_id"] for t in every)


def test_purge_data_deletes_the_prefixes_of_workspaces_removed_before(cli, sandbox):
    tenant = "cli-p3"  # made by test_list_paginates, used by no test after it
    if not cli("list", "--json").stdout.count(f'"{tenant}"'):
        assert cli("provision", tenant).returncode == 0
    hr = json.loads(cli("workspace", "add", tenant, "hr", "--json").stdout)["workspace"]
    bucket = json.loads(cli("status", tenant, "--json").stdout)["resources"]["bucket"]
    write_as_workspace(sandbox, hr, naming.OwnerNames(tenant, "hr").key, bucket)
    removed = cli("workspace", "remove", tenant, "hr", "--yes", "--json")  # its final backup stays under its prefix
    assert removed.returncode == 0 and json.loads(removed.stdout)["final_backup"], removed.stderr

    purged = cli("deprovision", tenant, "--yes", "--purge-data", "--json")
    assert purged.returncode == 0, purged.stderr
    s3 = aws(sandbox, "s3")
    for prefix in (naming.s3_prefix(tenant), hr["prefix"]):
        left = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
        assert not left.get("Versions") and not left.get("DeleteMarkers"), (prefix, left.get("Versions"))
    assert json.loads(purged.stdout)["purged_objects"] >= 4  # the upload and the backup's dump, manifest, index
    drilled = cli("drill", "run", tenant)  # refused, and not promising backups the purge deleted
    assert drilled.returncode == 3 and "no backup of it is left to restore" in drilled.stderr, drilled.stderr


PROBE = """
import json, sys
from tenantctl.cli.app import main
heavy = set(sys.argv[1].split(","))
sys.argv = ["tenantctl", *sys.argv[2:]]
try:
    main()
except SystemExit:
    pass
sys.stderr.write(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & heavy)))
"""
# What a read-only command (or an apply with nothing to do) has no use for: the deploy engine, the store's
# driver, token and crypto libraries.
HEAVY = ("pulumi", "pulumi_aws", "psycopg", "jwt", "cryptography", "jinja2")
# Off a terminal a table is plain text: no rich. A status reads no YAML (a portable Pulumi.yaml needs no parse;
# a list parses it for its stacks directory).
PLAIN = ("rich",)


@pytest.mark.parametrize(("args", "also"), [
    (["--help"], ()), (["provision", "--help"], ()), (["list", "--json"], PLAIN), (["list"], PLAIN),
    (["list", "--region", "us-east-1", "--account", "123456789012", "--json"], PLAIN),
    (["status", "cli-p1", "--json"], (*PLAIN, "yaml")), (["status", "cli-p1"], (*PLAIN, "yaml")),
    (["sandbox", "status"], ()),
    (["apply", "--match", "cli-p1", "--json"], PLAIN),  # nothing changed: nothing to run
])
def test_read_only_commands_import_nothing_heavy(cli, args, also):
    if not cli("list", "--json").stdout.count('"cli-p1"'):  # the platform and a tenant exist: these only read
        assert cli("provision", "cli-p1").returncode == 0
    probe = subprocess.run([sys.executable, "-c", PROBE, ",".join(HEAVY + also), *args], cwd=cli.root,
                           capture_output=True, text=True,
                           env={**os.environ, "TENANTCTL_SANDBOX_DIR": cli.env["TENANTCTL_SANDBOX_DIR"]},
                           timeout=120)
    loaded = json.loads(probe.stderr.strip().splitlines()[-1])
    assert loaded == [], f"`tenantctl {' '.join(args)}` imported {loaded}"


# -- ids are checked by every operation, and what an invalid id left is removable ---------------

@pytest.mark.parametrize("args", [["status", ""], ["drill", "backup", ""], ["check", ""], ["usage", ""],
                                  ["deprovision", "", "--yes"], ["unlock", "", "--force"], ["status", "ACME"]])
def test_an_empty_or_malformed_id_is_refused_naming_the_rule(cli, args):
    refused = cli(*args)
    assert refused.returncode == 3, refused
    assert "breaks the charset rule" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_every_operation_refuses_an_id_that_skipped_validation(workspace, provision_tenant, sandbox):
    from tenantctl.checks import check_tenant
    from tenantctl.drills.backup import backup
    from tenantctl.drills.context import context_from_workspace
    from tenantctl.drills.run import drill
    from tenantctl.errors import InvalidInput
    from tenantctl.models import TenantSpec
    from tenantctl.operations.deprovision import deprovision
    from tenantctl.operations.provision import provision
    from tenantctl.operations.revive import revive
    from tenantctl.operations.usage import measure_tenants
    from tenantctl.stackconfig import stack_file

    table = workspace.ensure_platform()["registry_table"]
    dynamodb = aws(sandbox, "dynamodb")
    with pytest.raises(InvalidInput, match="'ACME' breaks the charset rule"):
        provision(workspace, TenantSpec.model_construct(id="ACME"))
    assert "Item" not in dynamodb.get_item(TableName=table, Key={"tenant_id": {"S": "ACME"}})
    assert not stack_file(workspace.stacks_dir, "ACME").exists()

    real = provision_tenant("iv-real")
    forged = real.model_copy(update={"tenant_id": "IV-Real"})  # a real tenant's resources under a bad id
    ctx = context_from_workspace(workspace)
    for call in (lambda: deprovision(workspace, "ACME"), lambda: check_tenant(workspace, ""),
                 lambda: measure_tenants(workspace, "", False), lambda: backup(ctx, forged),
                 lambda: drill(ctx, forged), lambda: revive(workspace, ctx, forged, None, yes=True)):
        with pytest.raises(InvalidInput, match="breaks the charset rule"):
            call()
    prefix = f"{real.resources.prefix}backups/"
    assert aws(sandbox, "s3").list_objects_v2(Bucket=real.resources.bucket, Prefix=prefix)["KeyCount"] == 0


def test_what_an_invalid_id_left_is_listed_and_forgotten(cli, sandbox):
    from tenant_runtime.registry import record_to_item
    from tenantctl.models import TenantRecord, TenantStatus, Tier

    assert cli("provision", "cli-p1").returncode in (0,)  # the platform and a valid tenant exist
    table = json.loads(cli("platform", "outputs", "--json").stdout)["registry_table"]
    dynamodb = aws(sandbox, "dynamodb")
    for bad in ("ACME", "Has-Resources"):  # as an older tenantctl left them
        record = TenantRecord(tenant_id=bad, tier=Tier.pooled, status=TenantStatus.provisioning, region="us-east-1",
                              version=1, last_error="the engine refused the stack")
        dynamodb.put_item(TableName=table, Item=record_to_item(record))
    good = json.loads(cli("status", "cli-p1", "--json").stdout)
    with_resources = TenantRecord.model_validate({**good, "tenant_id": "Has-Resources"})
    dynamodb.put_item(TableName=table, Item=record_to_item(with_resources))
    stack = cli.root / "stacks" / "Pulumi.ACME.yaml"
    stack.write_text("config:\n  tenantctl:tenant:\n    id: ACME\n")

    listed = json.loads(cli("list", "--json", "--limit", "1000").stdout)
    invalid = {e["tenant_id"]: e for e in listed["invalid_ids"]}
    assert invalid["ACME"] == {"tenant_id": "ACME", "rule": "charset", "record": True, "stack_file": str(stack)}
    assert invalid["Has-Resources"]["record"] and "cli-p1" not in invalid
    people = " ".join(cli("list", "--limit", "1000").stdout.split())
    assert "invalid tenant id 'ACME'" in people and "tenantctl forget ACME --yes" in people

    preview = json.loads(cli("apply", "--preview", "--json", "--match", "ACME", "--match", "Has-*",
                             "--match", "cli-p1").stdout)
    refused = {r["tenant_id"]: r for r in preview["results"] if not r["ok"]}
    assert set(refused) == {"ACME", "Has-Resources"}, refused
    assert [r["ok"] for r in preview["results"] if r["tenant_id"] == "cli-p1"] == [True]  # valid ones as usual
    assert all(r["action"] == "invalid" and "tenantctl forget" in r["error"] for r in refused.values())

    kept = cli("deprovision", "ACME", "--yes")
    assert kept.returncode == 3 and "tenantctl forget ACME --yes" in kept.stderr
    assert cli("forget", "cli-p1", "--yes").returncode == 3  # valid ids are deprovisioned, not forgotten
    for yes in (("--yes",), ()):  # refused for what it is before anyone is asked (not 13 without --yes)
        orphaning = cli("forget", "Has-Resources", *yes)
        assert orphaning.returncode == 5 and "would orphan them" in orphaning.stderr, orphaning
    nothing = cli("forget", "Never-Made")
    assert nothing.returncode == 6 and "nothing to forget" in nothing.stderr, nothing
    asked = json.loads(cli("forget", "ACME", "--json").stdout)["error"]  # no terminal: what it would remove
    assert asked["code"] == 13 and asked["details"] == ["the registry record of 'ACME'", f"the stack file {stack}"]

    forgotten = cli("forget", "ACME", "--yes", "--json")
    assert forgotten.returncode == 0, forgotten
    assert json.loads(forgotten.stdout) == {"tenant_id": "ACME", "rule": "charset", "record": True,
                                            "stack_file": str(stack)}
    assert not stack.exists() and "Item" not in dynamodb.get_item(TableName=table, Key={"tenant_id": {"S": "ACME"}})
    assert cli("forget", "ACME", "--yes").returncode == 6
    dynamodb.delete_item(TableName=table, Key={"tenant_id": {"S": "Has-Resources"}})


def test_a_never_provisioned_record_deprovisions_saying_there_was_no_key(cli, sandbox, workspace):
    """A record whose provision never got to create anything (no resources, no key): its deprovision
    tombstones it and says so, not that a key was scheduled for deletion. The record holds its cell's
    slot, as a provision's reservation does, and gives it back: the counter still agrees with a recount
    (tests after this one share the cell)."""
    from tenantctl.models import TenantRecord, TenantStatus, Tier

    assert cli("provision", "cli-p1").returncode == 0  # the platform exists (idempotent)
    table = json.loads(cli("platform", "outputs", "--json").stdout)["registry_table"]
    registry = workspace.registry
    assert registry.table == table

    def off_by() -> dict[str, int]:
        counted = registry.cell_counts(["default"])["default"][0]
        return {tier: counted.get(tier, 0) - n for tier, n in registry.recount("default").items()}

    before = off_by()
    for tenant in ("cli-never", "cli-never-js"):
        record = TenantRecord(tenant_id=tenant, tier=Tier.pooled, status=TenantStatus.provisioning,
                              region="us-east-1", cell="default", version=1,
                              last_error="failed before creating anything")
        # Written as a provision's reservation is (``acquire_new``): with its slot, in one transaction.
        assert registry.put_taking_slot(record, None, "default", Tier.pooled, None, conflict="exists")
    said = cli("deprovision", "cli-never", "--yes", "--no-final-backup")
    assert said.returncode == 0, said
    assert "key scheduled for deletion" not in said.stdout and "no KMS key" in said.stdout, said.stdout
    assert "never provisioned" in said.stdout and "nothing to remove" in said.stdout, said.stdout
    out = cli("deprovision", "cli-never-js", "--yes", "--no-final-backup", "--json")
    assert out.returncode == 0, out
    body = json.loads(out.stdout)
    assert body["record"]["status"] == "deprovisioned" and body["keys_scheduled_for_deletion"] == []
    assert body["never_provisioned"] is True
    assert off_by() == before
