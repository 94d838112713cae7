"""`tenantctl cell remove` retires a cell only when nothing of any tenant is left
in it: a tenant placed there, a deprovisioned one whose backups are still in
their retention window, or a slot its counter holds without a record each keep
it (exit 5, named, the draining flag as it was); a removal without --yes and
no terminal is refused (exit 13) with nothing changed; a confirmed one
destroys the cell's stack (its database's final snapshot kept, its buckets
deleted with what they hold) and deletes its stack file and counter. A cell
file deleted from stacks/ is reported by apply, and the same name added again
later is refused removal while the first one's final snapshot is in the way.
The first cell of an account and region, which manages its RDSOSMetrics log
group, is removed while another cell remains: the group stays, the other cell
takes it over (a run killed after the handover converges when run again), and
the last cell's removal gives it back to the account.

A project of its own on the session's sandbox, one cell ``rmv`` in
ca-central-1 of account 777777777777, which no other test uses (cell names,
accounts and regions are shared by every project on the sandbox). What
happened is read on the sandbox itself: buckets, the RDS instance and its
snapshot, the key, the counter item.
"""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError
from fault_tools import Cli, aws, platform_outputs, registry_record, write_record

from tenant_runtime.registry import DRAINING, LEASE_UNTIL, counter_key
from tenantctl import naming
from tenantctl.models import CellSpec
from tenantctl.registry import RegistryWriter
from tenantctl.stackconfig import read_cell, stack_file, write_cell

pytestmark = pytest.mark.integration

CELL, REGION, ACCOUNT = "rmv", "ca-central-1", "777777777777"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/tenantctl-cell"


@pytest.fixture(scope="module")
def cli(sandbox, tmp_path_factory) -> Cli:
    cli = Cli.create(sandbox, tmp_path_factory.mktemp("cell-remove"))
    write_cell(cli.root / "stacks", CellSpec())
    return cli


def counter(sandbox) -> dict | None:
    table = platform_outputs(sandbox)["registry_table"]
    return aws(sandbox, "dynamodb").get_item(TableName=table, Key=counter_key(CELL), ConsistentRead=True).get("Item")


def draining(sandbox) -> bool:
    return counter(sandbox)[DRAINING]["BOOL"]


def bucket_exists(sandbox, bucket: str) -> bool:
    try:
        aws(sandbox, "s3", region=REGION, account=ACCOUNT).head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchBucket"):
            return False
        raise
    return True


def refused(run, code: int) -> dict:
    """The --json error of a refused run."""
    assert run.returncode == code, run
    return run.json()["error"]


def test_a_cell_is_removed_only_once_nothing_of_any_tenant_is_left_in_it(cli, sandbox):
    run = cli("cell", "add", CELL, "--region", REGION, "--account-role", ROLE, "--json")
    assert run.returncode == 0, run.stderr
    cell = run.json()["cell"]
    bucket, database = cell["bucket"], cell["database"]
    logs_bucket = naming.cell_logs_bucket_name(ACCOUNT, REGION, CELL)
    assert bucket_exists(sandbox, bucket) and bucket_exists(sandbox, logs_bucket)
    # A cell file deleted from stacks/ is no way to retire it: apply reports it, `cell remove` needs the file.
    path = stack_file(cli.root / "stacks", naming.cell_stack(CELL))
    committed = path.read_text()
    path.unlink()
    try:
        comment = cli.root / "apply.md"
        run = cli("apply", "--preview", "--json", "--markdown", str(comment))
        orphan = {c["cell"]: c for c in run.json()["cells"]}[CELL]
        assert orphan["action"] == "orphan" and f"`tenantctl cell remove {CELL}`" in orphan["reason"]
        assert "Cells in the registry, not in stacks/" in comment.read_text() and f"`{CELL}`" in comment.read_text()
        assert "its stack is still up" in refused(cli("cell", "remove", CELL, "--yes", "--json"), 3)["message"]
    finally:
        path.write_text(committed)
    assert bucket_exists(sandbox, bucket) and counter(sandbox) is not None
    for tenant in ("rmv-live", "rmv-gone"):
        run = cli("provision", tenant, "--region", REGION, "--cell", CELL, "--json")
        assert run.returncode == 0, run.stderr
    # Deprovisioned with its final backup: kept in the cell's bucket for its retention window.
    run = cli("deprovision", "rmv-gone", "--yes", "--json")
    assert run.returncode == 0, run.stderr

    # A twin of the live record: tenants held for one reason are one line naming them, not a line each.
    write_record(sandbox, {**registry_record(sandbox, "rmv-live"), "tenant_id": "rmv-twin"})
    try:
        error = refused(cli("cell", "remove", CELL, "--dry-run", "--json"), 5)
        said = cli("cell", "remove", CELL, "--yes")
    finally:
        aws(sandbox, "dynamodb").delete_item(TableName=platform_outputs(sandbox)["registry_table"],
                                             Key={"tenant_id": {"S": "rmv-twin"}})
    assert "still holds 3 tenant(s)" in error["message"]
    placed, retained = error["details"]
    assert placed == "pooled tenant here, active: rmv-live, rmv-twin", error["details"]
    assert retained.startswith("deprovisioned, retained until") and retained.endswith(": rmv-gone"), retained
    assert "tenants/rmv-gone/" in retained
    assert said.returncode == 5 and said.stderr.count("pooled tenant here, active") == 1, said.stderr
    error = refused(cli("cell", "remove", CELL, "--yes", "--json"), 5)
    assert len(error["details"]) == 2
    assert draining(sandbox) is False  # the refusal put the flag back: the cell still takes tenants
    assert stack_file(cli.root / "stacks", naming.cell_stack(CELL)).exists()

    # The live one goes with its data; the other's window ends (its record says so, as time would).
    run = cli("deprovision", "rmv-live", "--yes", "--purge-data", "--json")
    assert run.returncode == 0, run.stderr
    registry = RegistryWriter(platform_outputs(sandbox)["registry_table"], aws(sandbox, "dynamodb"))
    tomb = registry.require("rmv-gone")
    registry.save(tomb, retain_until=tomb.retain_until.replace(year=2000))

    # A slot the counter holds that no record does: a restore under way, or a stale count.
    table = platform_outputs(sandbox)["registry_table"]
    aws(sandbox, "dynamodb").update_item(TableName=table, Key=counter_key(CELL), UpdateExpression="ADD pooled :one",
                                         ExpressionAttributeValues={":one": {"N": "1"}})
    error = refused(cli("cell", "remove", CELL, "--yes", "--json"), 5)
    assert len(error["details"]) == 1 and "--recount" in error["details"][0]
    assert "holds no tenant, but its counter holds 1 slot(s), its records 0" in error["message"]
    recounted = cli("cell", "show", CELL, "--recount", "--json").json()
    assert recounted["pooled"] == 0 and recounted["recounted"] == {"pooled": [1, 0]}

    plan = cli("cell", "remove", CELL, "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    assert plan.json()["removed"] is False
    goes = "\n".join(plan.json()["goes"])
    assert f"s3://{bucket}: deleted with every object version" in goes and "final snapshot" in goes
    # Each bucket's line says which one holds the access logs: the logs bucket is not "the second bucket" of itself.
    assert f"its access logs are in s3://{logs_bucket})" in goes and "second bucket" not in goes
    assert f"s3://{logs_bucket}: deleted with every object version in it" in goes
    assert f"the access logs of s3://{bucket})" in goes
    table = cli("cell", "remove", CELL, "--dry-run")
    assert table.returncode == 0 and f"`cell remove {CELL} --yes` deletes" in table.stdout, table
    # A dry run removed nothing, and its progress does not say it did.
    assert "removing cell" not in table.stderr and f"cell remove {CELL} --dry-run: done" in table.stderr, table
    # Not confirmed (no terminal, no --yes): nothing changed.
    error = refused(cli("cell", "remove", CELL, "--json"), 13)
    assert any(bucket in line for line in error["details"])
    assert bucket_exists(sandbox, bucket) and draining(sandbox) is False

    run = cli("cell", "remove", CELL, "--yes", "--json")
    assert run.returncode == 0, run.stderr
    done = run.json()
    assert done["removed"] is True and done["changes"]["delete"] >= 40
    # The buckets went with what they held (the tombstone's backups, access logs).
    assert not bucket_exists(sandbox, bucket) and not bucket_exists(sandbox, logs_bucket)
    rds = aws(sandbox, "rds", region=REGION, account=ACCOUNT)
    identifier = naming.cell_rds_identifier(CELL)
    assert identifier not in {i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]}
    snapshots = {s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots()["DBSnapshots"]}
    assert done["final_snapshot"] in snapshots
    kms = aws(sandbox, "kms", region=REGION, account=ACCOUNT)
    key = done["goes"]
    key_arn = next(line.split()[2].rstrip(":") for line in key if line.startswith("KMS key "))
    assert kms.describe_key(KeyId=key_arn)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert not stack_file(cli.root / "stacks", naming.cell_stack(CELL)).exists()
    assert counter(sandbox) is None
    assert CELL not in {c["name"] for c in cli("cell", "list", "--json").json()["cells"]}
    assert database not in _databases(sandbox)

    assert refused(cli("cell", "remove", CELL, "--json"), 6)
    assert refused(cli("provision", "rmv-late", "--region", REGION, "--cell", CELL, "--json"), 3)
    # Tombstones keep naming the cell they lived in, for audit.
    assert registry.require("rmv-gone").cell == CELL

    # The name again, later: its first life's final snapshot would stop the destroy halfway, so it is named first.
    run = cli("cell", "add", CELL, "--region", REGION, "--account-role", ROLE, "--json")
    assert run.returncode == 0, run.stderr
    # ... and said when the name is added again, not only when its removal is refused.
    assert f"warning: cell '{CELL}': an earlier cell of this name left" in run.stderr
    assert done["final_snapshot"] in run.stderr and done["final_snapshot"] in run.json()["cell"]["warnings"][0]
    again = cli("cell", "add", CELL, "--json")  # the cell exists now: no warning on a re-run
    assert again.returncode == 0 and "warning" not in again.stderr and again.json()["cell"]["warnings"] == []
    error = refused(cli("cell", "remove", CELL, "--yes", "--json"), 5)
    assert done["final_snapshot"] in error["message"] and draining(sandbox) is False
    rds.delete_db_snapshot(DBSnapshotIdentifier=done["final_snapshot"])
    run = cli("cell", "remove", CELL, "--yes", "--json")
    assert run.returncode == 0 and run.json()["removed"], run.stderr


@pytest.mark.parametrize("name", ["platform", "cell"])
def test_a_new_cell_is_never_named_like_the_home_stack_or_the_cell_prefix(cli, name):
    # `platform` is the home cell's stack (Pulumi.platform.yaml): `--cell platform` would read as the home.
    run = cli("cell", "add", name, "--region", REGION)
    assert run.returncode == 3 and run.stderr.count("\n") == 1 and "is reserved" in run.stderr, run
    error = refused(cli("cell", "add", name, "--region", REGION, "--json"), 3)
    assert error["rule"] == "cell-name" and "`--cell default`" in error["message"]
    assert not stack_file(cli.root / "stacks", naming.cell_stack(name)).exists()


def test_the_home_cell_is_never_removed(cli):
    error = refused(cli("cell", "remove", "default", "--yes", "--json"), 3)
    assert "home of the registry" in error["message"]


def test_the_final_snapshot_a_removal_keeps_is_no_audit_finding(cli, sandbox):
    """`cell remove` keeps the cell's database's final snapshot by design (and
    `cell add` of the name later names it): audit does not report it as an
    unclaimed leftover, as it does not report a deprovisioned tenant's kept
    snapshots. Two cells in the home account: audit reads an account's region
    while a cell is there, so the one kept makes it read the other's snapshot."""
    gone, kept = "q7-rmh", "q7-rmk"
    for name in (gone, kept):
        assert cli("cell", "add", name, "--region", REGION, "--json").returncode == 0
    rds = aws(sandbox, "rds", region=REGION)
    snapshots = []
    try:
        run = cli("cell", "remove", gone, "--yes", "--json")
        assert run.returncode == 0 and run.json()["removed"], run.stderr
        snapshots.append(run.json()["final_snapshot"])
        assert snapshots[0] in {s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots()["DBSnapshots"]}
        audit = cli("audit", "--json")
        assert audit.returncode in (0, 12), audit  # the session's other projects may leave findings of their own
        assert [f for f in audit.json()["findings"] if f["tenant_id"] == naming.cell_stack(gone)] == []
    finally:
        run = cli("cell", "remove", kept, "--yes", "--json")
        assert run.returncode == 0, run.stderr
        for snapshot in (*snapshots, run.json()["final_snapshot"]):
            rds.delete_db_snapshot(DBSnapshotIdentifier=snapshot)


HO_ACCOUNT, HO_REGION = "787878787878", "eu-north-1"
HO_ROLE = f"arn:aws:iam::{HO_ACCOUNT}:role/tenantctl-cell"
GROUP = "RDSOSMetrics"


def os_metrics_group(sandbox, region: str = HO_REGION) -> dict | None:
    """The account-and-region's RDSOSMetrics group as CloudWatch Logs describes it."""
    logs = aws(sandbox, "logs", region=region, account=HO_ACCOUNT)
    return next((g for g in logs.describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"]
                 if g["logGroupName"] == GROUP), None)


def group_tags(sandbox) -> dict[str, str]:
    logs = aws(sandbox, "logs", region=HO_REGION, account=HO_ACCOUNT)
    return logs.list_tags_log_group(logGroupName=GROUP)["tags"]


def engine_state(sandbox, name: str) -> dict | None:
    """The LocalEngine's state of the cell's stack (None: none, its stack destroyed)."""
    from pathlib import Path

    path = Path(sandbox.state_dir) / "local-engine" / f"{naming.cell_stack(name)}.json"
    return json.loads(path.read_text()) if path.exists() else None


def lapse_lease(sandbox, cell: str) -> None:
    """A killed run's lease lapses (as 120 s would make it): the next run takes it."""
    table = platform_outputs(sandbox)["registry_table"]
    aws(sandbox, "dynamodb").update_item(TableName=table, Key=counter_key(cell), UpdateExpression="SET #u = :past",
                                         ExpressionAttributeNames={"#u": LEASE_UNTIL},
                                         ExpressionAttributeValues={":past": {"N": "0"}})


def manages_group(sandbox, name: str) -> bool:
    state = engine_state(sandbox, name) or {"resources": []}
    return any(r["type"] == "aws:cloudwatch/logGroup:LogGroup" and r["id"] == GROUP for r in state["resources"])


def test_the_first_cell_of_an_account_and_region_hands_its_metrics_group_over(cli, sandbox):
    first, second, stacks = "ho-first", "ho-second", cli.root / "stacks"
    for name in (first, second):
        run = cli("cell", "add", name, "--region", HO_REGION, "--account-role", HO_ROLE, "--json")
        assert run.returncode == 0, run.stderr
    assert read_cell(stacks, first).os_metrics_group and not read_cell(stacks, second).os_metrics_group
    keys = {n: engine_state(sandbox, n)["outputs"]["platform_key_arn"] for n in (first, second)}
    made = os_metrics_group(sandbox)
    assert made["kmsKeyId"] == keys[first] and manages_group(sandbox, first)

    # The handover applies the heir: one with changes not applied yet is refused, before anything changes.
    heir_file = stack_file(stacks, naming.cell_stack(second))
    committed = heir_file.read_text()
    write_cell(stacks, read_cell(stacks, second).model_copy(update={"max_pooled_tenants": 400}))
    error = refused(cli("cell", "remove", first, "--yes", "--json"), 5)
    assert f"cell '{second}', which takes the {GROUP} log group over" in error["message"]
    assert f"`tenantctl cell add {second}`" in error["message"] and read_cell(stacks, first).os_metrics_group
    heir_file.write_text(committed)

    # The oldest cell is the one to retire, though another cell of its account and region remains.
    plan = cli("cell", "remove", first, "--dry-run", "--json")
    assert plan.returncode == 0, plan
    assert plan.json()["os_metrics_group"] == GROUP and plan.json()["os_metrics_heir"] == second
    goes = plan.json()["goes"]
    assert any(f"{GROUP} log group of {HO_REGION}: kept" in line and f"handed over to cell {second}" in line
               for line in goes), goes
    assert not any(line.startswith("delete aws:cloudwatch/logGroup:LogGroup platform-os-metrics") for line in goes)

    # Killed once the other cell took the group over, before its own file gave it up.
    killed = cli("cell", "remove", first, "--yes", "--json", env={"TENANTCTL_FAULT_AFTER": "cell-remove:os-metrics"})
    assert killed.returncode == 86, killed
    heir = read_cell(stacks, second)
    assert heir.os_metrics_group and heir.os_metrics_adopted and read_cell(stacks, first).os_metrics_group
    taken = os_metrics_group(sandbox)
    assert taken["creationTime"] == made["creationTime"]  # the same group: never deleted and made again
    assert taken["kmsKeyId"] == keys[second] and group_tags(sandbox)["tenant"] == naming.cell_stack(second)
    assert manages_group(sandbox, second)
    lapse_lease(sandbox, first)

    run = cli("cell", "remove", first, "--yes", "--json")
    assert run.returncode == 0, run
    assert run.json()["removed"] is True
    assert engine_state(sandbox, first) is None and not stack_file(stacks, naming.cell_stack(first)).exists()
    kept = os_metrics_group(sandbox)
    assert kept is not None and kept["creationTime"] == made["creationTime"] and kept["kmsKeyId"] == keys[second]
    assert manages_group(sandbox, second)

    # The heir's stack is as applied: apply leaves it alone, its live resources match its state,
    # and an up of it (cell add again) changes nothing, the group included.
    applied = cli("apply", "--json")
    assert applied.returncode == 0, applied
    assert {c["cell"]: c["action"] for c in applied.json()["cells"]}[second] == "unchanged"
    drift = cli("refresh", "--cell", second, "--json")
    assert drift.returncode == 0, drift
    again = cli("cell", "add", second, "--json")
    assert again.returncode == 0, again
    assert os_metrics_group(sandbox)["creationTime"] == made["creationTime"]
    state = {r["id"]: r for r in engine_state(sandbox, second)["resources"]}
    assert state[GROUP]["retain"] is True

    # The last cell there: the group goes back to the account, neither deleted nor under a key about to go.
    run = cli("cell", "remove", second, "--yes", "--json")
    assert run.returncode == 0, run
    assert run.json()["os_metrics_heir"] is None
    released = os_metrics_group(sandbox)
    assert released["creationTime"] == made["creationTime"] and not released.get("kmsKeyId")
    assert "managed-by" not in group_tags(sandbox)
    # A new cell there takes it over (an import: made once, never twice).
    run = cli("cell", "add", first, "--region", HO_REGION, "--account-role", HO_ROLE, "--json")
    assert run.returncode == 0, run
    assert read_cell(stacks, first).os_metrics_adopted and manages_group(sandbox, first)
    assert os_metrics_group(sandbox)["creationTime"] == made["creationTime"]


def test_a_removal_killed_once_its_file_gave_the_group_up_converges(cli, sandbox):
    """Killed after its own file stopped naming the group, before its destroy: the
    run again drops the group from its state without deleting it, then destroys."""
    region, first, second, stacks = "eu-west-3", "ho-third", "ho-fourth", cli.root / "stacks"
    for name in (first, second):
        run = cli("cell", "add", name, "--region", region, "--account-role", HO_ROLE, "--json")
        assert run.returncode == 0, run.stderr
    made = os_metrics_group(sandbox, region)
    killed = cli("cell", "remove", first, "--yes", "--json",
                 env={"TENANTCTL_FAULT_AFTER": "cell-remove:os-metrics-file"})
    assert killed.returncode == 86, killed
    assert not read_cell(stacks, first).os_metrics_group and read_cell(stacks, second).os_metrics_group
    assert manages_group(sandbox, first) and manages_group(sandbox, second)  # its state still holds it, retained
    lapse_lease(sandbox, first)
    run = cli("cell", "remove", first, "--yes", "--json")
    assert run.returncode == 0, run
    assert run.json()["os_metrics_heir"] is None  # handed over already: its file no longer names the group
    assert engine_state(sandbox, first) is None and manages_group(sandbox, second)
    kept = os_metrics_group(sandbox, region)
    assert kept["creationTime"] == made["creationTime"]
    assert kept["kmsKeyId"] == engine_state(sandbox, second)["outputs"]["platform_key_arn"]


def _databases(sandbox) -> set[str]:
    import psycopg

    with psycopg.connect(sandbox.pg_dsn()) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
