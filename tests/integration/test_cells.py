"""Cells across accounts and regions, on the session's sandbox: several
accounts live on the one moto server (it serves requests made with an assumed
role's credentials in that role's account), several regions too.

A project of its own holds three cells: the default one (home account,
us-east-1: the registry's home), ``eua`` (account 222222222222, eu-west-1, two
pooled tenants at most) and ``eub`` (account 444444444444, eu-west-1, one).
Everything is looked up on the sandbox itself, in the account and region it
should be in (and looked for in the others), never taken from tenantctl's word.

The tests run in order and share the fleet they build: placement fills the
region's cells least loaded first and then refuses the region; a drained cell
gets nothing; every resource ARN is in its cell's account and region; backups
stay in the tenant's region; the runtime reaches each tenant in its own
account and cells stay apart; a tenant moves to a fourth cell, ``euc``
(account A, eu-west-1, added late so placement above never sees it), with its
data and objects while a writer appends; deprovision leaves nothing in any
account.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import httpx
import psycopg
import pytest
from botocore.exceptions import ClientError
from fault_tools import POOLED, Cli, aws, cell_count, inventory, registry_record, write_record
from move_tools import writing
from psycopg import sql
from runtime_tenants import jwt_settings, token

from tenant_runtime import TenantRuntime
from tenant_runtime.crypto import blob_edk, kms_context
from tenant_runtime.errors import TenantMismatch
from tenant_runtime.models import MovePhase, workspace_key
from tenant_runtime.registry import item_key, record_to_item
from tenantctl import inventory as inv
from tenantctl import naming
from tenantctl.checks import check_tenant
from tenantctl.checks.iam_eval import Decision, Request, evaluate
from tenantctl.drills.backup import backup
from tenantctl.drills.context import context_from_workspace
from tenantctl.drills.run import drill
from tenantctl.drills.scope import scoped_context
from tenantctl.drills.store import load_manifest
from tenantctl.engines.local.state import StateFile
from tenantctl.errors import CHANGES_PENDING, InvalidInput, QuotaExceeded
from tenantctl.models import TenantRecord, TenantSpec, Tier
from tenantctl.operations import cell as cells
from tenantctl.operations import move as move_operation
from tenantctl.operations.apply import Action, plan
from tenantctl.operations.deprovision import deprovision
from tenantctl.operations.move import move
from tenantctl.operations.provision import provision
from tenantctl.operations.refresh import refresh_many, refresh_tenant
from tenantctl.transfer import prefix_sync, store_sync
from tenantctl.workspace import Workspace

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HOME, ACCOUNT_A, ACCOUNT_B = "123456789012", "222222222222", "444444444444"
US, EU = "us-east-1", "eu-west-1"
# cell -> (account, region, database)
WHERE = {"default": (HOME, US, "tenantctl"), "eua": (ACCOUNT_A, EU, "tenantctl_cell_eua"),
         "eub": (ACCOUNT_B, EU, "tenantctl_cell_eub")}
# The move's target: eua's account and region, a database and bucket of its own.
EUC_DB, MOVER = "tenantctl_cell_euc", "cl-e1"


@dataclass
class Fleet:
    ws: Workspace
    root: Path
    tenants: dict[str, TenantRecord] = field(default_factory=dict)

    def provision(self, tenant_id: str, **fields) -> TenantRecord:
        record, _ = provision(self.ws, TenantSpec(id=tenant_id, **fields))
        self.tenants[tenant_id] = record
        return record


@pytest.fixture(scope="module")
def fleet(sandbox, tmp_path_factory) -> Fleet:
    root = tmp_path_factory.mktemp("cells-project")
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    (root / "stacks").mkdir()
    ws = Workspace(project_dir=root, cwd=root)
    cells.add(ws, "eua", {"region": EU, "account_role_arn": f"arn:aws:iam::{ACCOUNT_A}:role/tenantctl-cell",
                          "max_pooled_tenants": 2})
    cells.add(ws, "eub", {"region": EU, "account_role_arn": f"arn:aws:iam::{ACCOUNT_B}:role/tenantctl-cell",
                          "max_pooled_tenants": 1})
    return Fleet(ws, root)


def everywhere(sandbox, tenant_id: str) -> dict[str, dict[str, int]]:
    """The tenant's live resources in each cell's account, region and database
    (only non-empty ones). PostgreSQL roles belong to the sandbox's one server,
    not to a database: they are counted once, as ``server``."""
    found: dict[str, dict[str, int]] = {}
    for cell, (account, region, database) in WHERE.items():
        kinds = inventory(sandbox, tenant_id, region, None if account == HOME else account, database)
        roles = kinds.pop("pg:role", 0)
        found |= {cell: kinds} if kinds else {}
        found |= {"server": {"pg:role": roles}} if roles else {}
    return found


def pooled_in(cell: str) -> dict[str, dict[str, int]]:
    return {cell: {k: v for k, v in POOLED.items() if k != "pg:role"}, "server": {"pg:role": 1}}


def test_placement_fills_the_least_loaded_cell_of_the_region_then_refuses_it(fleet: Fleet, sandbox):
    assert [fleet.provision(t, region=EU).cell for t in ("cl-e1", "cl-e2", "cl-e3")] == ["eua", "eub", "eua"]
    assert (cell_count(sandbox, "eua"), cell_count(sandbox, "eub")) == (2, 1)

    with pytest.raises(QuotaExceeded) as refused:
        fleet.provision("cl-e4", region=EU)
    message = str(refused.value)
    assert refused.value.exit_code == 11
    assert "cell eua: 2 of 2 pooled tenants placed" in message and "cell eub: 1 of 1 pooled tenants" in message
    assert f"`tenantctl cell add NAME --region {EU}`" in message
    # Refused before anything existed, and no slot was kept.
    assert registry_record(sandbox, "cl-e4") is None and not (fleet.root / "stacks" / "Pulumi.cl-e4.yaml").exists()
    assert everywhere(sandbox, "cl-e4") == {}
    assert (cell_count(sandbox, "eua"), cell_count(sandbox, "eub")) == (2, 1)
    # Residency: a region without a cell is refused, never placed in another.
    with pytest.raises(QuotaExceeded, match="ap-south-1 has no cell; add a cell"):
        fleet.provision("cl-ap", region="ap-south-1")
    with pytest.raises(InvalidInput, match="it is in eu-west-1, the tenant's data must stay in us-east-1"):
        fleet.provision("cl-forced", cell="eua")


def test_a_drained_cell_gets_nothing(fleet: Fleet, sandbox):
    deprovision(fleet.ws, "cl-e3", final_backup=False)
    assert cell_count(sandbox, "eua") == 1  # the tombstone gave its slot back
    cells.drain(fleet.ws, "eua")
    with pytest.raises(QuotaExceeded, match="cell eua: draining"):
        fleet.provision("cl-e4", region=EU)
    with pytest.raises(QuotaExceeded, match="draining"):
        fleet.provision("cl-e4", region=EU, cell="eua")
    assert registry_record(sandbox, "cl-e4") is None and cell_count(sandbox, "eua") == 1
    # Its tenants stay and keep being updated.
    assert fleet.provision("cl-e1", region=EU, owner="team-eu").owner == "team-eu"
    cells.drain(fleet.ws, "eua", draining=False)
    assert fleet.provision("cl-e4", region=EU).cell == "eua"

    listed = subprocess.run([sys.executable, "-m", "tenantctl", "cell", "list", "--json"], cwd=fleet.root,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"}, capture_output=True, text=True,
                            timeout=300)
    assert listed.returncode == 0, listed.stderr
    counts = {c["name"]: (c["pooled"], c["max_pooled_tenants"], c["draining"], c["account_id"], c["region"])
              for c in json.loads(listed.stdout)["cells"]}
    assert counts["eua"] == (2, 2, False, ACCOUNT_A, EU) and counts["eub"] == (1, 1, False, ACCOUNT_B, EU)


def test_two_accounts_two_regions_every_arn_where_it_belongs(fleet: Fleet, sandbox):
    fleet.provision("cl-h1")  # the default cell: home account, us-east-1
    for tenant_id, cell in (("cl-h1", "default"), ("cl-e1", "eua"), ("cl-e2", "eub")):
        account, region, database = WHERE[cell]
        # What each account holds, read there: everything once, and nothing in the other accounts.
        assert everywhere(sandbox, tenant_id) == pooled_in(cell), tenant_id
        kms = aws(sandbox, "kms", region, None if account == HOME else account)
        key_arn = kms.describe_key(KeyId=naming.kms_alias(tenant_id))["KeyMetadata"]["Arn"]
        sqs = aws(sandbox, "sqs", region, None if account == HOME else account)
        url = sqs.get_queue_url(QueueName=naming.queue_name(tenant_id))["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        secret_arn = aws(sandbox, "secretsmanager", region, None if account == HOME else account).describe_secret(
            SecretId=naming.secret_name(tenant_id))["ARN"]
        for arn in (key_arn, queue_arn, secret_arn):
            assert naming.account_of_arn(arn) == account and naming.region_of_arn(arn) == region, arn
        role_arn = aws(sandbox, "iam", region, None if account == HOME else account).get_role(
            RoleName=naming.iam_role_name(tenant_id))["Role"]["Arn"]
        assert naming.account_of_arn(role_arn) == account
        record = fleet.tenants[tenant_id]
        assert (record.cell, record.region, record.resources.store.database) == (cell, region, database)
        assert record.resources.kms_key_arn == key_arn and record.resources.role_arn == role_arn
        # `tenantctl check` verifies the same from its side: cell, account and region of every ARN.
        report = check_tenant(fleet.ws, tenant_id)
        assert report.ok, report.summary()
        assert {c.name for c in report.checks if c.area == "placement"} == {"cell", "account-region", "bucket",
                                                                             "store"}


def test_list_filters_by_region_and_account_beside_the_other_filters(fleet: Fleet, sandbox):
    """By each record's own region and account (a record naming no account is in the
    registry's, the home cell's), in --json and a page at a time; the tombstone cl-e3 too."""
    cli = Cli.create(sandbox, fleet.root)

    def ids(*args: str) -> list[str]:
        listed = cli("list", "--all", *args, "--json")
        assert listed.returncode == 0, listed
        return sorted(t["tenant_id"] for t in listed.json()["tenants"] if t["tenant_id"].startswith("cl-"))

    assert ids("--region", EU) == ["cl-e1", "cl-e2", "cl-e3", "cl-e4"]
    assert ids("--region", US) == ["cl-h1"]
    assert ids("--account", ACCOUNT_A) == ["cl-e1", "cl-e3", "cl-e4"]
    assert ids("--account", HOME) == ["cl-h1"]
    assert ids("--region", EU, "--account", ACCOUNT_B) == ["cl-e2"]
    assert ids("--region", US, "--account", ACCOUNT_A) == []
    assert ids("--account", ACCOUNT_A, "--status", "active") == ["cl-e1", "cl-e4"]
    assert ids("--region", EU, "--cell", "eub") == ["cl-e2"]
    # A page holds --limit matches: the cursors walk the matches only, each once.
    seen, cursor = [], None
    while True:
        page = cli("list", "--account", ACCOUNT_A, "--limit", "1", *(("--cursor", cursor) if cursor else ()),
                   "--json").json()
        assert len(page["tenants"]) == 1, page
        seen += [t["tenant_id"] for t in page["tenants"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == ["cl-e1", "cl-e3", "cl-e4"]
    table = cli("list", "--account", ACCOUNT_B)
    assert table.returncode == 0 and "cl-e2" in table.stdout and "cl-e1" not in table.stdout, table
    # A tenant moved from account A to B holds its old stack in A for its rollback window, and one being
    # moved the other way holds its new stack in B: listing either account shows it, saying so.
    e1, e2 = registry_record(sandbox, "cl-e1"), registry_record(sandbox, "cl-e2")
    ends = "2031-01-02T03:04:00Z"
    moving = {"from_tier": "pooled", "to_tier": "pooled", "old_store": e1["resources"]["store"],
              "new_store": e2["resources"]["store"]}
    write_record(sandbox, {**e2, "tenant_id": "cl-out", "move": {
        **moving, "from_cell": "eua", "to_cell": "eub", "phase": "switched", "window_ends_at": ends}})
    write_record(sandbox, {**e1, "tenant_id": "cl-in", "move": {
        **moving, "from_cell": "eua", "to_cell": "eub", "phase": "copying"}})
    try:
        in_a = cli("list", "--all", "--account", ACCOUNT_A, "--json")
        in_b = cli("list", "--all", "--account", ACCOUNT_B, "--json")
        table_a = cli("list", "--account", ACCOUNT_A)
        in_eu = ids("--region", EU)
        in_cells = {cell: cli("list", "--all", "--cell", cell, "--json") for cell in ("eua", "eub")}
        table_eua = cli("list", "--cell", "eua")
    finally:
        for tid in ("cl-out", "cl-in"):
            aws(sandbox, "dynamodb").delete_item(TableName=fleet.ws.platform_outputs()["registry_table"],
                                                 Key=item_key(tid))
    listed_a = {t["tenant_id"]: t for t in in_a.json()["tenants"] if t["tenant_id"].startswith("cl-")}
    listed_b = {t["tenant_id"]: t for t in in_b.json()["tenants"] if t["tenant_id"].startswith("cl-")}
    assert sorted(listed_a) == ["cl-e1", "cl-e3", "cl-e4", "cl-in", "cl-out"], listed_a
    assert sorted(listed_b) == ["cl-e2", "cl-in", "cl-out"], listed_b
    assert listed_a["cl-out"]["via_move"] == "moving out: old stack kept for the rollback window until " \
                                             "2031-01-02 03:04Z", listed_a["cl-out"]
    assert listed_b["cl-in"]["via_move"] == "moving in: new stack being built (copying)", listed_b["cl-in"]
    assert listed_a["cl-e1"]["via_move"] is listed_a["cl-in"]["via_move"] is listed_b["cl-out"]["via_move"] is None
    out_row = next(line for line in table_a.stdout.splitlines() if "cl-out" in line)
    assert "moving out: old stack kept for the rollback window until 2031-01-02 03:04Z" in out_row, table_a.stdout
    assert in_eu == ["cl-e1", "cl-e2", "cl-e3", "cl-e4", "cl-in", "cl-out"]  # one region: both sides there
    # A cell the same way: cl-out switched to eub keeps its old stack in eua, cl-in builds its new one in eub.
    listed_cells = {c: {t["tenant_id"]: t["via_move"] for t in run.json()["tenants"]
                        if t["tenant_id"].startswith("cl-")} for c, run in in_cells.items()}
    assert listed_cells["eua"]["cl-out"] == listed_a["cl-out"]["via_move"], listed_cells
    assert listed_cells["eub"]["cl-in"] == listed_b["cl-in"]["via_move"], listed_cells
    assert listed_cells["eua"]["cl-in"] is listed_cells["eub"]["cl-out"] is listed_cells["eua"]["cl-e1"] is None
    assert "cl-e1" not in listed_cells["eub"] and "cl-e2" not in listed_cells["eua"], listed_cells
    assert "moving out: old stack kept" in next(line for line in table_eua.stdout.splitlines() if "cl-out" in line)
    # What no account id or region can be is refused, not an empty list.
    bad = cli("list", "--account", "2222", "--json")
    assert bad.returncode == 2 and "--account" in bad.json()["error"]["message"], bad
    assert cli("list", "--region", "eu-nowhere-9", "--json").returncode == 3


def test_the_report_prices_each_tenant_in_its_own_cell_as_cost_does(fleet: Fleet, sandbox):
    """`tenantctl report` and `tenantctl cost --all` give every tenant the same monthly figure: each
    pooled tenant's share of its own cell's shared database (eua has two, eub one, the default cell
    its own), not of the default cell's split over the whole fleet."""
    from tenantctl.operations.usage import estimate_costs, report_data, selected_records
    from tenantctl.usage.cost import load_prices

    prices = load_prices()
    data = report_data(fleet.ws, prices, selected_records(fleet.ws, None))
    reported = {row.label: row.cost.total for row in data.rows}
    priced = {t.label(): t.estimate.total for t in estimate_costs(fleet.ws, prices, all_=True).tenants}
    assert {"cl-h1", "cl-e1", "cl-e2", "cl-e4"} <= set(reported)
    assert reported == priced
    assert reported["cl-e2"] != reported["cl-e1"]  # eub's database is split over one tenant, eua's over two


def test_backups_stay_in_the_tenants_region(fleet: Fleet, sandbox):

    record = fleet.tenants["cl-e1"]
    report = drill(context_from_workspace(fleet.ws, record), record)  # backup, scratch restore, verify
    assert report.passed, report.reasons
    bucket, prefix = record.resources.bucket, record.resources.prefix
    s3 = aws(sandbox, "s3", EU, ACCOUNT_A)
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] == EU
    kept = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}backups/").get("Contents", [])]
    assert any(k.endswith(f"{report.backup_id}/db.dump.enc") for k in kept), kept
    # Nothing of the tenant in any bucket outside its cell (the home account's included).
    for other in aws(sandbox, "s3").list_buckets()["Buckets"]:
        if other["Name"] != bucket:
            assert not aws(sandbox, "s3").list_objects_v2(Bucket=other["Name"], Prefix=prefix).get("Contents")


def test_the_runtime_reaches_each_tenant_in_its_own_account_and_cells_stay_apart(fleet: Fleet, sandbox):
    home, eu = fleet.tenants["cl-h1"], fleet.tenants["cl-e1"]
    runtime = TenantRuntime(jwt_settings(), fleet.ws.platform_outputs()["registry_table"], mode="assume_role",
                            endpoint_url=sandbox.aws_endpoint_url, region=US)
    try:
        ctx = {t: runtime.resolve(token(t), addressed_tenant=t) for t in ("cl-h1", "cl-e1")}
        for tenant_id, c in ctx.items():  # the store: its cell's database, its account's key and secret
            runtime.store.append(c, "conv-1", "user", f"hello from {tenant_id}")
            assert [m.content for m in runtime.store.history(c, "conv-1").messages] == [f"hello from {tenant_id}"]
        assert runtime.clients.assume_role_calls == 2  # one tenant role each, in its own account

        # An upload with a retention class lands in the EU tenant's bucket (account A), tagged with the
        # class a rule of that cell's bucket matches.
        up = runtime.objects.presign_upload(ctx["cl-e1"], "note.txt", 5, "text/plain", retention="tmp")
        assert httpx.put(up.url, content=b"hello", headers=up.headers).status_code == 200
        s3 = aws(sandbox, "s3", EU, ACCOUNT_A)
        tags = s3.get_object_tagging(Bucket=eu.resources.bucket, Key=up.key)["TagSet"]
        assert tags == [{"Key": "tenantctl-class", "Value": "tmp-7d"}]
        rules = s3.get_bucket_lifecycle_configuration(Bucket=eu.resources.bucket)["Rules"]
        [rule] = [r for r in rules if r["Filter"].get("And", {}).get("Tags") == tags]
        assert rule["Expiration"]["Days"] == 7 and up.key.startswith(f"{eu.resources.prefix}uploads/tmp/")

        # Apart: the runtime refuses the other cell's tenant's objects...
        with pytest.raises(TenantMismatch):
            runtime.objects.presign_download(ctx["cl-h1"], up.key)
        # ...its credentials (account A) do not even see the home tenant's key, queue or secret...
        eu_kms, eu_sqs = runtime.clients.client(ctx["cl-e1"], "kms"), runtime.clients.client(ctx["cl-e1"], "sqs")
        with pytest.raises(eu_kms.exceptions.NotFoundException):
            eu_kms.describe_key(KeyId=home.resources.kms_key_arn)
        with pytest.raises(eu_sqs.exceptions.QueueDoesNotExist):
            eu_sqs.get_queue_attributes(QueueUrl=home.resources.queue_url, AttributeNames=["QueueArn"])
    finally:
        runtime.close()
    # ...and PostgreSQL keeps each cell's tenants out of the other's database: each
    # cell's DatabaseAcl strips PUBLIC's CONNECT, so neither login even connects.
    secret = {t: json.loads(aws(sandbox, "secretsmanager", *(r.region, None if r.cell == "default" else
                                                            WHERE[r.cell][0])).get_secret_value(
        SecretId=r.resources.store.secret_arn)["SecretString"]) for t, r in (("cl-h1", home), ("cl-e1", eu))}
    login = {t: {"host": s["host"], "port": s["port"], "user": s["username"], "password": s["password"]}
             for t, s in secret.items()}
    for tenant_id, other in (("cl-h1", eu), ("cl-e1", home)):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(dbname=other.resources.store.database, **login[tenant_id])
    for tenant_id, own in (("cl-h1", home), ("cl-e1", eu)):  # while each still reaches its own
        with psycopg.connect(dbname=own.resources.store.database, **login[tenant_id]) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == own.resources.store.database


def test_refresh_of_a_cell_reads_its_own_account(fleet: Fleet, sandbox):
    """Drift and orphans of another account's cell are read in that account:
    an orphan queue tagged as cl-e1's in account A is found, and no tenant of
    another cell is read."""
    from tenantctl.operations.refresh import refresh

    sqs = aws(sandbox, "sqs", EU, ACCOUNT_A)
    url = sqs.create_queue(QueueName="tenantctl-cl-e1-stray", tags={
        "managed-by": "tenantctl", "tenant": "cl-e1"})["QueueUrl"]
    try:
        summary = refresh(fleet.ws, cell="eua")
    finally:
        sqs.delete_queue(QueueUrl=url)
    drift = {t.tenant_id: t for t in summary.tenants}
    assert "cl-e1" in drift and not summary.failed
    assert {fleet.tenants[t].cell for t in drift} == {"eua"}  # cl-h1 (default) and cl-e2 (eub) not read
    assert [(o.kind, o.name) for o in drift["cl-e1"].orphans] == [("sqs", "tenantctl-cl-e1-stray")]
    assert not drift["cl-e1"].resources and all(not d.drifted for t, d in drift.items() if t != "cl-e1")
    with pytest.raises(InvalidInput, match="not both"):
        refresh(fleet.ws, ["cl-e1"], cell="eua")


def test_audit_reads_each_tenant_in_its_cells_account(fleet: Fleet, sandbox):
    """Each tenant's resources are looked for in its own cell's account (none of the EU
    tenants' is reported gone, as it was when only the target's account was read), a
    leftover is found in the account that holds it (a queue tagged for a tenant no record
    names, in account B), the cells' own resources are claimed by their stacks, and a
    record of a cell stacks/ does not define is reported by audit and skipped, saying
    why, by a fleet-wide refresh, which still reads the others."""
    from tenantctl.operations.audit import audit

    sqs = aws(sandbox, "sqs", EU, ACCOUNT_B)
    url = sqs.create_queue(QueueName="tenantctl-cl-ghost-jobs", tags={
        "managed-by": "tenantctl", "tenant": "cl-ghost"})["QueueUrl"]
    gone_cell = sqs.create_queue(QueueName="tenantctl-cell-gone-x", tags={
        "managed-by": "tenantctl", "tenant": "cell-gone"})["QueueUrl"]
    stray = fleet.tenants["cl-e1"].model_copy(update={"tenant_id": "cl-stray", "cell": "nowhere"})
    table = fleet.ws.platform_outputs()["registry_table"]
    aws(sandbox, "dynamodb").put_item(TableName=table, Item=record_to_item(stray))
    try:
        report = audit(fleet.ws)
    finally:
        sqs.delete_queue(QueueUrl=url)
        sqs.delete_queue(QueueUrl=gone_cell)
        aws(sandbox, "dynamodb").delete_item(TableName=table, Key=item_key("cl-stray"))
    ours = {(f.kind, f.tenant_id): f for f in report.findings if f.tenant_id.startswith("cl-")}
    # The cells' own shared resources (tagged with their stack) are claimed, in every account; a leftover of a
    # cell stacks/ does not define is not.
    by_cell = {(f.tenant_id, f.detail.split(": ", 1)[1]) for f in report.findings if f.tenant_id.startswith("cell-")}
    assert by_cell == {("cell-gone", "tagged for cell stack 'cell-gone', which stacks/ does not define")}
    assert set(ours) == {("unclaimed", "cl-ghost"), ("unknown-cell", "cl-stray")}, report.findings
    ghost = ours["unclaimed", "cl-ghost"].subject
    assert (naming.account_of_arn(ghost), naming.region_of_arn(ghost)) == (ACCOUNT_B, EU)
    assert "'nowhere'" in ours["unknown-cell", "cl-stray"].detail
    assert report.accounts == 3 and report.exit_code() == CHANGES_PENDING
    # Live tenants of all three accounts were read, and none is reported.
    assert all(registry_record(sandbox, t)["status"] == "active" for t in ("cl-h1", "cl-e1", "cl-e2"))
    # A fleet-wide refresh skips the tenant of the undefined cell, saying why, and reads the others.
    drifts = {d.tenant_id: d for d in refresh_many(fleet.ws, [stray, fleet.tenants["cl-e2"]])}
    assert drifts["cl-stray"].skipped and "'nowhere'" in drifts["cl-stray"].note and not drifts["cl-stray"].checked
    assert drifts["cl-e2"].ok and drifts["cl-e2"].checked and not drifts["cl-e2"].drifted


def _bucket(cell: str) -> str:
    return naming.cell_bucket_name(WHERE["eua"][0], EU, cell)


def _versions(sandbox, cell: str, prefix: str) -> list[str]:
    """Every version and delete marker under ``prefix`` in the cell's bucket (the buckets are versioned)."""
    page = aws(sandbox, "s3", EU, ACCOUNT_A).list_object_versions(Bucket=_bucket(cell), Prefix=prefix)
    return [v["Key"] for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]


def _schema_in(sandbox, database: str, tenant_id: str) -> bool:
    with psycopg.connect(sandbox.pg_dsn(database), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                            (naming.schema_name(tenant_id),)).fetchone() is not None


def _rows(sandbox, store) -> list[tuple[int, str]]:
    with psycopg.connect(sandbox.pg_dsn(store.database), autocommit=True) as conn:
        return conn.execute(f'SELECT seq, conversation_id FROM "{store.schema_name}".messages ORDER BY seq').fetchall()


@pytest.fixture(scope="module")
def eu_runtime(fleet: Fleet, sandbox):
    # Role sessions in account A, as a service of that cell would run; a short registry TTL sees the freeze.
    rt = TenantRuntime(jwt_settings(), fleet.ws.platform_outputs()["registry_table"], mode="assume_role",
                       endpoint_url=sandbox.aws_endpoint_url, region=US, registry_ttl=0.2)
    yield rt
    rt.close()


def test_a_move_to_a_cell_it_cannot_go_to_is_refused_with_nothing_created(fleet: Fleet, sandbox):
    cells.add(fleet.ws, "euc", {"region": EU, "account_role_arn": f"arn:aws:iam::{ACCOUNT_A}:role/tenantctl-cell",
                                "max_pooled_tenants": 2})
    before = fleet.ws.registry.require(MOVER)
    spec_file = (fleet.root / "stacks" / f"Pulumi.{MOVER}.yaml").read_text()
    counts = {c: cell_count(sandbox, c) for c in ("eua", "eub", "euc", "default")}
    refusals = [
        (InvalidInput, "--cell nowhere: no such cell", {"cell": "nowhere"}),
        (InvalidInput, f"it is in {US}, the tenant's data must stay in {EU} \\(residency\\)", {"cell": "default"}),
    ]
    for error, message, args in refusals:
        with pytest.raises(error, match=message) as refused:
            move(fleet.ws, MOVER, **args)
        assert refused.value.exit_code == 3
    with pytest.raises(QuotaExceeded, match="1 of 1 pooled tenants placed") as refused:  # eub is full
        move(fleet.ws, MOVER, cell="eub")
    assert refused.value.exit_code == 11
    cells.drain(fleet.ws, "euc")
    try:
        with pytest.raises(QuotaExceeded, match="cell 'euc' has no pooled slot \\(draining\\)"):
            move(fleet.ws, MOVER, cell="euc")
    finally:
        cells.drain(fleet.ws, "euc", draining=False)
    fleet.ws.registry.set_counts("euc", {"pooled": 2})
    try:
        with pytest.raises(QuotaExceeded, match="2 of 2 pooled tenants placed"):
            move(fleet.ws, MOVER, cell="euc", tier=Tier.pooled)
    finally:
        fleet.ws.registry.set_counts("euc", {"pooled": 0})
    assert move(fleet.ws, MOVER, cell="eua").outcome == "unchanged"
    after = fleet.ws.registry.require(MOVER)
    assert (after.version, after.move, after.lock, after.cell) == (before.version, None, None, "eua")
    assert (fleet.root / "stacks" / f"Pulumi.{MOVER}.yaml").read_text() == spec_file
    assert {c: cell_count(sandbox, c) for c in counts} == counts
    assert not _schema_in(sandbox, EUC_DB, MOVER) and _versions(sandbox, "euc", naming.s3_prefix(MOVER)) == []


def test_a_tenant_moves_to_another_cell_of_its_region_with_its_data_and_objects_then_rolls_back(
        fleet: Fleet, sandbox, eu_runtime, monkeypatch):
    rt, before = eu_runtime, fleet.ws.registry.require(MOVER)
    prefix, old = before.resources.prefix, before.resources.store
    ctx = rt.context(MOVER)
    for i in range(100):
        rt.store.append(ctx, f"c{i % 5}", "user", f"before {i}")
    kept, gone = rt.objects.put_body(ctx, b"kept body"), rt.objects.put_body(ctx, b"deleted while copying")
    up = rt.objects.presign_upload(ctx, "note.txt", 5, "text/plain", retention="tmp")
    assert httpx.put(up.url, content=b"hello", headers=up.headers).status_code == 200
    s3 = aws(sandbox, "s3", EU, ACCOUNT_A)
    copy = move_operation.Mover.copy

    def changing_while_copied(mover):  # objects written and deleted between the first pass and the freeze
        copy(mover)
        s3.put_object(Bucket=_bucket("eua"), Key=f"{prefix}documents/late", Body=b"late",
                      ServerSideEncryption="aws:kms", SSEKMSKeyId=before.resources.kms_key_arn)
        s3.delete_object(Bucket=_bucket("eua"), Key=prefix + gone)

    monkeypatch.setattr(move_operation.Mover, "copy", changing_while_copied)
    slots = (cell_count(sandbox, "eua"), cell_count(sandbox, "euc"))
    earlier = backup(context_from_workspace(fleet.ws, before), before).backup_id  # restored in the window below
    with writing(rt, MOVER) as writer:
        writer.wait_for_acks(10)
        result = move(fleet.ws, MOVER, cell="euc")
        writer.wait_for_acks(11)  # writes after the switch, on the new cell's store: with the 10 before, over 20
    monkeypatch.undo()

    record = fleet.ws.registry.require(MOVER)
    assert (result.outcome, result.from_cell, result.to_cell, result.to_tier) == ("switched", "eua", "euc",
                                                                                   Tier.pooled)
    assert (record.cell, record.account_id, record.tier, record.move.phase) == ("euc", ACCOUNT_A, Tier.pooled,
                                                                               MovePhase.switched)
    new = record.resources.store
    assert (new.database, record.resources.bucket, record.resources.prefix) == (EUC_DB, _bucket("euc"), prefix)
    assert result.rows["messages"] >= 100  # verified (counts + checksums) as of the freeze
    # Every acknowledged write is in the new cell's store, in order; the old one refuses the tenant role's writes.
    assert len(writer.acked) > 20 and {seq for seq, _ in writer.acked} <= {seq for seq, _ in _rows(sandbox, new)}
    page = rt.store.history(rt.context(MOVER), "live", limit=500)
    assert [m.content for m in reversed(page.messages)] == [c for _, c in writer.acked][-500:]
    with psycopg.connect(sandbox.pg_dsn(old.database), autocommit=True) as conn:
        assert not store_sync.writable(conn, old)
    # The objects: the new prefix holds what the old one held at the freeze, tags and tenant key kept.
    moved = prefix_sync.listing(s3, prefix_sync.Place(_bucket("euc"), prefix))
    assert set(moved) == set(prefix_sync.listing(s3, prefix_sync.Place(_bucket("eua"), prefix)))
    assert {prefix + kept, f"{prefix}documents/late", up.key} <= set(moved) and prefix + gone not in moved
    ctx = rt.context(MOVER)
    assert ctx.resources.bucket == _bucket("euc") and rt.objects.read_body(ctx, kept, 100) == b"kept body"
    assert s3.get_object_tagging(Bucket=_bucket("euc"), Key=up.key)["TagSet"] == [
        {"Key": "tenantctl-class", "Value": "tmp-7d"}]
    # A slot in each cell while both stores exist; `check` passes on the new cell.
    assert (cell_count(sandbox, "eua"), cell_count(sandbox, "euc")) == (slots[0], slots[1] + 1)
    report = check_tenant(fleet.ws, MOVER)
    assert report.ok, report.summary()
    # A restore in place would replace the new store's tables under the link back to the old one: refused.
    restored = Cli.create(sandbox, fleet.root)("drill", "restore", MOVER, "--backup", earlier, "--target",
                                               "in-place", "--overwrite", "--yes")
    assert restored.returncode == 5 and f"tenant '{MOVER}' is being moved (switched)" in restored.stderr, restored

    # Rollback: back to eua with the writes and objects made since the switch; nothing left in euc.
    after_switch = rt.objects.put_body(ctx, b"written in euc")
    stale = f"{prefix}uploads/stale"  # by a runtime still holding the record before the switch: kept
    s3.put_object(Bucket=_bucket("eua"), Key=stale, Body=b"stale", ServerSideEncryption="aws:kms",
                  SSEKMSKeyId=before.resources.kms_key_arn)
    with writing(rt, MOVER) as writer:
        writer.wait_for_acks(10)
        assert move(fleet.ws, MOVER, rollback=True).outcome == "rolled_back"
    record = fleet.ws.registry.require(MOVER)
    assert (record.cell, record.move, record.resources) == ("eua", None, before.resources)
    assert {seq for seq, _ in writer.acked} <= {seq for seq, _ in _rows(sandbox, old)}
    assert rt.objects.read_body(rt.context(MOVER), after_switch, 100) == b"written in euc"
    assert s3.get_object(Bucket=_bucket("eua"), Key=stale)["Body"].read() == b"stale"
    assert _versions(sandbox, "euc", prefix) == [] and not _schema_in(sandbox, EUC_DB, MOVER)
    assert (cell_count(sandbox, "eua"), cell_count(sandbox, "euc")) == slots
    rt.store.append(rt.context(MOVER), "live", "user", "writable again in eua")


def test_a_finalized_move_between_cells_leaves_nothing_in_the_old_cell(fleet: Fleet, sandbox, eu_runtime):
    before = fleet.ws.registry.require(MOVER)
    prefix, slots = before.resources.prefix, (cell_count(sandbox, "eua"), cell_count(sandbox, "euc"))
    assert move(fleet.ws, MOVER, cell="euc").outcome == "switched"
    # A runtime still holding the old record (or an upload URL signed before the switch) writes to the old prefix.
    s3 = aws(sandbox, "s3", EU, ACCOUNT_A)
    s3.put_object(Bucket=_bucket("eua"), Key=f"{prefix}uploads/late", Body=b"late", ServerSideEncryption="aws:kms",
                  SSEKMSKeyId=before.resources.kms_key_arn)
    done = move(fleet.ws, MOVER, finalize=True)  # final backup, old store and old prefix removed, `check` passes
    record = fleet.ws.registry.require(MOVER)
    assert (done.outcome, record.cell, record.move, record.resources.bucket) == ("finalized", "euc", None,
                                                                                 _bucket("euc"))
    assert (cell_count(sandbox, "eua"), cell_count(sandbox, "euc")) == (slots[0] - 1, slots[1] + 1)
    # Nothing of it in eua: no schema, no object version; everything else once, in account A, with the schema in euc.
    assert not _schema_in(sandbox, WHERE["eua"][2], MOVER) and _versions(sandbox, "eua", prefix) == []
    assert inventory(sandbox, MOVER, EU, ACCOUNT_A, EUC_DB) == POOLED
    assert any(k.startswith(f"{prefix}backups/") for k in _versions(sandbox, "euc", prefix))  # the final backup
    assert s3.get_object(Bucket=_bucket("euc"), Key=f"{prefix}uploads/late")["Body"].read() == b"late"
    iam, role = aws(sandbox, "iam", EU, ACCOUNT_A), naming.iam_role_name(MOVER)
    policies = json.dumps([iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
                           for name in iam.list_role_policies(RoleName=role)["PolicyNames"]])
    assert _bucket("euc") in policies and _bucket("eua") not in policies  # the role reaches the new bucket only
    history = eu_runtime.store.history(eu_runtime.context(MOVER), "live", limit=1).messages
    assert history[0].content == "writable again in eua"
    fleet.tenants[MOVER] = record


def test_a_killed_move_between_cells_rolls_back_or_resumes_leaving_one_cell(fleet: Fleet, sandbox):
    """Real CLI processes killed (os._exit) right after the move recorded
    `freezing` (then rolled back) and `copying` (then resumed and finalized)."""
    cli, tid = Cli.create(sandbox, fleet.root), "cl-e4"
    prefix = naming.s3_prefix(tid)
    aws(sandbox, "s3", EU, ACCOUNT_A).put_object(Bucket=_bucket("eua"), Key=f"{prefix}uploads/a", Body=b"a")
    slots = (cell_count(sandbox, "eua"), cell_count(sandbox, "euc"))

    killed = cli("move", tid, "--cell", "euc", env={"TENANTCTL_FAULT_AFTER": "move:freezing"})
    assert killed.returncode == 86, killed
    assert registry_record(sandbox, tid)["move"]["phase"] == "freezing"
    assert _versions(sandbox, "euc", prefix) == [f"{prefix}uploads/a"]  # the first pass was done
    rolled = cli("move", tid, "--rollback", "--json")  # the dead run's lock is cleared by this run
    assert rolled.returncode == 0 and rolled.json()["outcome"] == "rolled_back", rolled
    record = registry_record(sandbox, tid)
    assert (record["cell"], record["move"], record["lock"]) == ("eua", None, None)
    assert not _schema_in(sandbox, EUC_DB, tid) and _versions(sandbox, "euc", prefix) == []
    assert (cell_count(sandbox, "eua"), cell_count(sandbox, "euc")) == slots

    killed = cli("move", tid, "--cell", "euc", env={"TENANTCTL_FAULT_AFTER": "move:copying"})
    assert killed.returncode == 86, killed
    checked = cli("check", tid)  # its secret rotated by euc's function, as the move set it
    assert checked.returncode == 0, checked
    resumed = cli("move", tid, "--json")
    assert resumed.returncode == 0, resumed
    assert (resumed.json()["outcome"], resumed.json()["from_cell"], resumed.json()["to_cell"]) == (
        "switched", "eua", "euc")
    status = cli("status", tid)
    assert status.returncode == 0 and "pooled -> pooled, cell eua -> euc: switched" in status.stdout, status
    assert cli("move", tid, "--finalize").returncode == 0
    record = registry_record(sandbox, tid)
    assert (record["cell"], record["move"], record["resources"]["bucket"]) == ("euc", None, _bucket("euc"))
    assert not _schema_in(sandbox, WHERE["eua"][2], tid) and _versions(sandbox, "eua", prefix) == []
    assert f"{prefix}uploads/a" in _versions(sandbox, "euc", prefix)
    assert (cell_count(sandbox, "eua"), cell_count(sandbox, "euc")) == (slots[0] - 1, slots[1] + 1)
    with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as admin:
        assert admin.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0] == 0


def test_tier_and_cell_change_in_one_move_and_roll_back_together(fleet: Fleet, sandbox):
    """cl-e4 (pooled, euc by now) to a dedicated store declared with eua's shared roles, then back."""
    tid, rds = "cl-e4", aws(sandbox, "rds", EU, ACCOUNT_A)
    before = fleet.ws.registry.require(tid)
    result = move(fleet.ws, tid, cell="eua", tier=Tier.dedicated)
    record = fleet.ws.registry.require(tid)
    assert (result.outcome, record.cell, record.tier, record.resources.bucket) == (
        "switched", "eua", Tier.dedicated, _bucket("eua"))
    [instance] = rds.describe_db_instances(DBInstanceIdentifier=naming.rds_identifier(tid))["DBInstances"]
    assert instance["MonitoringRoleArn"] == fleet.ws.cell_outputs("eua")["db_monitoring_role_arn"]
    assert move(fleet.ws, tid, rollback=True).outcome == "rolled_back"
    record = fleet.ws.registry.require(tid)
    assert (record.cell, record.tier, record.resources) == ("euc", Tier.pooled, before.resources)
    assert not [i for i in rds.describe_db_instances()["DBInstances"]
                if i["DBInstanceIdentifier"] == naming.rds_identifier(tid)]
    assert _versions(sandbox, "eua", naming.s3_prefix(tid)) == []


def test_deprovision_leaves_nothing_in_either_account(fleet: Fleet, sandbox):
    for tenant_id in ("cl-h1", "cl-e1", "cl-e2", "cl-e4"):
        record, _, _ = deprovision(fleet.ws, tenant_id, final_backup=tenant_id == "cl-e2", purge_data=False)
        assert record.status.value == "deprovisioned"
    # cl-e4's dedicated store (removed by a rollback) left its final snapshot, as every deleted instance does.
    kept = {"cl-e4": {"eua": {"rds:snapshot": 1}}}
    for tenant_id in ("cl-h1", "cl-e1", "cl-e2", "cl-e3", "cl-e4"):
        assert everywhere(sandbox, tenant_id) == kept.get(tenant_id, {}), tenant_id
    for moved in (MOVER, "cl-e4"):  # moved to euc before
        assert inventory(sandbox, moved, EU, ACCOUNT_A, EUC_DB) == kept.get(moved, {}).get("eua", {}), moved
    assert (cell_count(sandbox, "eua"), cell_count(sandbox, "eub"), cell_count(sandbox, "euc")) == (0, 0, 0)


def test_a_tenants_workspaces_move_between_cells_with_their_objects_and_leave_nothing_behind(
        fleet: Fleet, sandbox, eu_runtime):
    """A workspace's schema and prefix follow its tenant to euc: rows by the
    same link, objects copied under the workspace's key, its role reaching both
    buckets until the move ends; the rollback and then the finalized move leave
    nothing of it in the cell it left."""
    tid, rt = "cl-w1", eu_runtime
    record = fleet.provision(tid, region=EU, cell="eua", workspaces=[{"name": "legal"}])
    legal = record.workspaces["legal"]
    ctx = rt.context(tid, "legal")
    rt.store.append(ctx, "c", "user", "legal's")
    kept = rt.objects.put_body(ctx, b"legal's object")  # through the workspace's role, under its key
    s3 = aws(sandbox, "s3", EU, ACCOUNT_A)

    assert move(fleet.ws, tid, cell="euc").outcome == "switched"
    moved = fleet.ws.registry.require(tid)
    assert moved.workspaces["legal"].store.database == EUC_DB and moved.resources.bucket == _bucket("euc")
    copied = s3.head_object(Bucket=_bucket("euc"), Key=legal.prefix + kept)
    assert copied["SSEKMSKeyId"] == legal.kms_key_arn  # the workspace's key, not the tenant's
    ctx = rt.context(tid, "legal")
    assert rt.objects.read_body(ctx, kept, 100) == b"legal's object"
    assert [m.content for m in rt.store.history(ctx, "c").messages] == ["legal's"]
    after_switch = rt.objects.put_body(ctx, b"written in euc")

    assert move(fleet.ws, tid, rollback=True).outcome == "rolled_back"
    back = fleet.ws.registry.require(tid)
    assert back.resources == record.resources and _versions(sandbox, "euc", legal.prefix) == []
    assert rt.objects.read_body(rt.context(tid, "legal"), after_switch, 100) == b"written in euc"

    assert move(fleet.ws, tid, cell="euc").outcome == "switched"
    assert move(fleet.ws, tid, finalize=True).outcome == "finalized"
    done = fleet.ws.registry.require(tid)
    assert _versions(sandbox, "eua", legal.prefix) == [] and _versions(sandbox, "eua", done.resources.prefix) == []
    with psycopg.connect(sandbox.pg_dsn(WHERE["eua"][2]), autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (legal.store.schema_name,)
                            ).fetchone() is None
    iam = aws(sandbox, "iam", EU, ACCOUNT_A)
    names = naming.OwnerNames(tid, "legal")
    policies = json.dumps([iam.get_role_policy(RoleName=names.iam_role, PolicyName=name)["PolicyDocument"]
                           for name in iam.list_role_policies(RoleName=names.iam_role)["PolicyNames"]])
    assert _bucket("euc") in policies and _bucket("eua") not in policies
    ctx = rt.context(tid, "legal")
    assert rt.objects.read_body(ctx, kept, 100) == b"legal's object"
    assert check_tenant(fleet.ws, tid).ok
    deprovision(fleet.ws, tid, final_backup=False, purge_data=True)
    assert everywhere(sandbox, tid) == {} and inventory(sandbox, tid, EU, ACCOUNT_A, EUC_DB) == {}


DE, KEYED, EUD_DB = "eu-central-1", "cl-k1", "tenantctl_cell_eud"


def _eud(fleet: Fleet) -> None:
    """Cell eud (account A, eu-central-1), added by the first test that needs it."""
    if "eud" not in fleet.ws.cells():
        cells.add(fleet.ws, "eud", {"region": DE, "account_role_arn": f"arn:aws:iam::{ACCOUNT_A}:role/tenantctl-cell",
                                    "max_pooled_tenants": 1})


def _opened_under_the_new_key_only(sandbox, scope: str, new, old) -> None:
    """Every sealed blob of ``new``'s store (the tenant's or a workspace's
    resources in eud) names a data key KMS opens under ``new``'s key, with the
    context ``scope`` (`<id>` or `<id>/<ws>`), and not under ``old``'s."""
    with psycopg.connect(sandbox.pg_dsn(new.store.database), autocommit=True) as conn:
        edks = {blob_edk(bytes(b)) for (b,) in conn.execute(
            f'SELECT content FROM "{new.store.schema_name}".messages')}
    assert edks
    context = kms_context(scope)
    new_kms, old_kms = aws(sandbox, "kms", DE, ACCOUNT_A), aws(sandbox, "kms", EU, ACCOUNT_A)
    for edk in edks:
        assert new_kms.decrypt(CiphertextBlob=edk, EncryptionContext=context)["KeyId"] == new.kms_key_arn
        with pytest.raises(ClientError):
            old_kms.decrypt(CiphertextBlob=edk, EncryptionContext=context, KeyId=old.kms_key_arn)


def _previewed_elsewhere(fleet: Fleet, sandbox, tenant_id: str, cell: str) -> None:
    """`move --preview` of ``tenant_id`` to applied ``cell`` of another account or
    region (no move): a second stack `<id>.k1`, its plan creating the tenant's
    resources again, and `--finalize` naming the old stack's; the registry item,
    every stack file and the second stack's state as they were."""
    from tenantctl.operations.move_preview import CROSS_ACCOUNT, preview

    stacks = fleet.root / "stacks"

    def state() -> tuple:
        return (registry_record(sandbox, tenant_id), {p.name: p.read_text() for p in sorted(stacks.glob("*.yaml"))},
                StateFile(sandbox.state_dir / "local-engine", naming.stack_name(tenant_id, 1)).load().resources)

    before = state()
    found = preview(fleet.ws, tenant_id, cell=cell)
    assert (found.outcome, found.kind, found.stack) == ("would_start", CROSS_ACCOUNT, naming.stack_name(tenant_id, 1))
    assert (found.target.cell, found.cell_created_first) == (cell, False)
    assert found.changes is not None and found.changes.stack == found.stack
    created = {c.type for c in found.changes.changes if c.op.value == "create"}
    assert {"aws:kms/key:Key", "aws:iam/role:Role", "aws:sqs/queue:Queue"} <= created, created
    destroyed = {what.split(" ")[0] for what in found.finalize_destroys}  # the old stack's, by type
    assert {"aws:kms/key:Key", "aws:iam/role:Role", "aws:sqs/queue:Queue"} <= destroyed, destroyed
    assert state() == before


def test_a_pooled_tenant_moves_to_another_region_under_a_new_key_while_written_then_finalizes(
        fleet: Fleet, sandbox, eu_runtime):
    """cl-k1 from eua (account A, eu-west-1) to eud (account A, eu-central-1,
    added here): the tenant built again as stack cl-k1.k1 there, its rows
    re-wrapped under the new key while a writer appends through the runtime,
    its objects copied under the new key, one registry write switching
    region, key, role, queues, secret, store, bucket, cell and stack; then
    finalized (a CLI run killed inside it, then run again), leaving nothing
    in eu-west-1."""
    _eud(fleet)
    rt, before = eu_runtime, fleet.provision(KEYED, region=EU, cell="eua", residency=[EU, DE])
    old = before.resources
    ctx = rt.context(KEYED)
    for i in range(50):
        rt.store.append(ctx, f"c{i % 5}", "user", f"before {i}")
    kept = rt.objects.put_body(ctx, b"kept body")
    rt.store.put_document(ctx, "runbook", "Rotating the database password", "Rotate the secret, then restart.",
                          {"lang": "en"})
    searched = [(h.doc_id, h.score) for h in rt.store.search(ctx, "rotate password", fuzzy=True).hits]
    aws(sandbox, "sqs", EU, ACCOUNT_A).send_message(QueueUrl=old.queue_url, MessageBody="left in the old queue")
    eu_s3 = aws(sandbox, "s3", EU, ACCOUNT_A)
    for name, body in (("changed", b"as backed up"), ("gone", b"deleted after the backup")):
        eu_s3.put_object(Bucket=old.bucket, Key=f"{old.prefix}documents/{name}", Body=body,
                         ServerSideEncryption="aws:kms", SSEKMSKeyId=old.kms_key_arn)
    earlier = backup(context_from_workspace(fleet.ws, before), before).backup_id  # under the old key
    eu_s3.put_object(Bucket=old.bucket, Key=f"{old.prefix}documents/changed", Body=b"changed since",
                     ServerSideEncryption="aws:kms", SSEKMSKeyId=old.kms_key_arn)
    eu_s3.delete_object(Bucket=old.bucket, Key=f"{old.prefix}documents/gone")
    _previewed_elsewhere(fleet, sandbox, KEYED, "eud")
    with writing(rt, KEYED) as writer:
        writer.wait_for_acks(10)
        result = move(fleet.ws, KEYED, cell="eud")
        writer.wait_for_acks(11)  # writes after the switch, on the new store under the new key: over 20 in all

    record = fleet.ws.registry.require(KEYED)
    assert (result.outcome, result.from_cell, result.to_cell) == ("switched", "eua", "eud")
    assert (record.cell, record.region, record.account_id, record.stack, record.move.phase) == (
        "eud", DE, ACCOUNT_A, f"{KEYED}.k1", MovePhase.switched)
    new = record.resources
    assert new.store.database == EUD_DB and new.bucket == naming.cell_bucket_name(ACCOUNT_A, DE, "eud")
    for arn in (new.kms_key_arn, new.store.secret_arn):
        assert naming.region_of_arn(arn) == DE, arn
    assert new.role_arn.endswith(naming.iam_role_name(KEYED, 1)) and new.kms_key_arn != old.kms_key_arn
    queue_arn = aws(sandbox, "sqs", DE, ACCOUNT_A).get_queue_attributes(
        QueueUrl=new.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert naming.region_of_arn(queue_arn) == DE and result.rows["messages"] >= 50  # digests agreed at the freeze
    # Every acknowledged write is read back through the runtime, from the new store...
    assert len(writer.acked) > 20 and not writer.errors
    assert {seq for seq, _ in writer.acked} <= {seq for seq, _ in _rows(sandbox, new.store)}
    page = rt.store.history(rt.context(KEYED), "live", limit=500)
    assert [m.content for m in reversed(page.messages)] == [c for _, c in writer.acked][-500:]
    # ...where every sealed blob names a data key KMS opens under the new key only.
    _opened_under_the_new_key_only(sandbox, KEYED, new, old)
    new_kms, old_kms = aws(sandbox, "kms", DE, ACCOUNT_A), aws(sandbox, "kms", EU, ACCOUNT_A)
    # The old store refuses the old role's writes; the object moved under the new key.
    with psycopg.connect(sandbox.pg_dsn(WHERE["eua"][2]), autocommit=True) as conn:
        assert not store_sync.writable(conn, old.store)
    assert rt.objects.read_body(rt.context(KEYED), kept, 100) == b"kept body"
    # The blind index came along: its search key re-wrapped under the new key, the same answers.
    assert searched and [(h.doc_id, h.score) for h in rt.store.search(
        rt.context(KEYED), "rotate password", fuzzy=True).hits] == searched
    de_s3 = aws(sandbox, "s3", DE, ACCOUNT_A)
    assert de_s3.head_object(Bucket=new.bucket, Key=new.prefix + kept)["SSEKMSKeyId"] == new.kms_key_arn
    report = check_tenant(fleet.ws, KEYED)
    assert report.ok, report.summary()
    # In the rollback window the record lists both stacks, and drift reads both: with the tag scan over
    # both regions, nothing of either stack is an orphan (the old one's key, role, queues, secret included).
    assert record.stacks == [f"{KEYED}.k1", KEYED]
    tagged = inv.scan(fleet.ws.client.in_account(fleet.ws.cell("eud").account_role_arn), [EU, DE], tenant=KEYED)
    drift = refresh_tenant(fleet.ws, record, tagged)
    both = sum(len(StateFile(sandbox.state_dir / "local-engine", s).load().resources) for s in record.stacks)
    assert (drift.ok, drift.checked, drift.orphans, drift.resources) == (True, both, [], []), drift

    # CLI runs killed inside --finalize (the final backup taken, the old queues forwarded, the old prefix
    # removed): half-way through destroying the old stack, then at its last delete (its state gone, the
    # record not yet cleared). The move stays switched each time; the next --finalize finishes it.
    # The final backup is taken once: its id recorded by the first run, skipped by the next ones.
    cli, old_state = Cli.create(sandbox, fleet.root), StateFile(sandbox.state_dir / "local-engine", KEYED)
    final_ids = {_killed_retiring(sandbox, cli, old)}
    for half in (True, False):
        deletes = len(old_state.load().resources)
        at = deletes // 2 if half else deletes
        killed = cli("move", KEYED, "--finalize", env={"TENANTCTL_FAULT_AFTER": str(at)})
        left = registry_record(sandbox, KEYED)["move"]
        assert killed.returncode == 86 and left["phase"] == "switched", killed
        assert old_state.exists() is half and (fleet.root / "stacks" / f"Pulumi.{KEYED}.yaml").exists()
        final_ids.add(left["final_backup_id"])
    assert len(final_ids) == 1
    done = move(fleet.ws, KEYED, finalize=True)
    record = fleet.ws.registry.require(KEYED)
    assert (done.outcome, record.move, record.stack, record.cell) == ("finalized", None, f"{KEYED}.k1", "eud")
    assert not (fleet.root / "stacks" / f"Pulumi.{KEYED}.yaml").exists()
    # Nothing of it in eu-west-1 (the database role lives on the sandbox's one server, serving eud's store).
    assert everywhere(sandbox, KEYED) == {"server": {"pg:role": 1}}
    assert old_kms.describe_key(KeyId=old.kms_key_arn)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert inventory(sandbox, KEYED, DE, ACCOUNT_A, EUD_DB) == {k: v for k, v in POOLED.items() if k != "iam:role"}
    aws(sandbox, "iam", DE, ACCOUNT_A).get_role(RoleName=naming.iam_role_name(KEYED, 1))
    left = aws(sandbox, "sqs", DE, ACCOUNT_A).receive_message(QueueUrl=new.queue_url, WaitTimeSeconds=0,
                                                             MaxNumberOfMessages=10)
    assert sorted(m["Body"] for m in left.get("Messages", [])) == ["left in the old queue", "sent after retiring"]
    backups = de_s3.list_objects_v2(Bucket=new.bucket, Prefix=f"{new.prefix}backups/").get("Contents", [])
    taken = {o["Key"][len(f"{new.prefix}backups/"):].split("/")[0] for o in backups}
    assert taken == {earlier, *final_ids}  # the carried one and one final backup, of the new store under the new key
    rt.store.append(rt.context(KEYED), "live", "user", "after finalize")
    assert check_tenant(fleet.ws, KEYED).ok
    report = drill(context_from_workspace(fleet.ws, record), record)  # backup, scratch restore, verify
    assert report.passed, report.reasons
    # The backup taken before the move restores under the new key (the old one pending deletion), with the
    # object versions it pinned, while the tenant's current objects stay as they were.
    report = drill(context_from_workspace(fleet.ws, record), record, backup_id=earlier)
    assert report.passed, report.reasons
    assert de_s3.get_object(Bucket=new.bucket, Key=f"{new.prefix}documents/changed")["Body"].read() == b"changed since"
    with pytest.raises(ClientError):
        de_s3.head_object(Bucket=new.bucket, Key=f"{new.prefix}documents/gone")
    restored = {}
    for entry in load_manifest(de_s3, new_kms, record, earlier).objects:
        restored[entry.key] = de_s3.get_object(Bucket=new.bucket, Key=new.prefix + entry.key,
                                               VersionId=entry.version_id)["Body"].read()
    assert (restored["documents/changed"], restored["documents/gone"]) == (b"as backed up",
                                                                           b"deleted after the backup")
    deprovision(fleet.ws, KEYED, final_backup=False, purge_data=True)  # the stack the record names: <id>.k1
    assert not (fleet.root / "stacks" / f"Pulumi.{KEYED}.k1.yaml").exists()
    assert everywhere(sandbox, KEYED) == {} and inventory(sandbox, KEYED, DE, ACCOUNT_A, EUD_DB) == {}


def _killed_retiring(sandbox, cli: Cli, old) -> str:
    """A --finalize killed at its first resource write, the retirement of the
    stack it leaves: the old role's policy denies sends to the old queues (moto
    enforces no IAM: the document is judged), which still hold their message,
    so the forward comes after the deny; a message a stale worker sends now is
    forwarded by the re-run. The final backup's id is recorded; a rollback is
    refused from here. Returns that id."""
    killed = cli("move", KEYED, "--finalize", env={"TENANTCTL_FAULT_AFTER": "1"})
    left = registry_record(sandbox, KEYED)["move"]
    assert killed.returncode == 86 and left["final_backup_id"] and not left["old_stack_retired"], killed
    iam, sqs = aws(sandbox, "iam", EU, ACCOUNT_A), aws(sandbox, "sqs", EU, ACCOUNT_A)
    role = naming.OwnerNames(KEYED).iam_role
    [name] = iam.list_role_policies(RoleName=role)["PolicyNames"]
    doc = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    doc = doc if isinstance(doc, dict) else json.loads(unquote(doc))
    for url in (old.queue_url, old.dlq_url):
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        assert evaluate([doc], Request("sqs:SendMessage", arn)) is Decision.explicit_deny
        assert evaluate([doc], Request("sqs:ReceiveMessage", arn)).allowed
    assert sqs.get_queue_attributes(QueueUrl=old.queue_url, AttributeNames=["ApproximateNumberOfMessages"])[
        "Attributes"]["ApproximateNumberOfMessages"] == "1"
    sqs.send_message(QueueUrl=old.queue_url, MessageBody="sent after retiring")
    refused = cli("move", KEYED, "--rollback")
    assert refused.returncode == 3 and "finalize has begun" in " ".join(refused.stderr.split()), refused
    assert registry_record(sandbox, KEYED)["move"]["phase"] == "switched"
    return left["final_backup_id"]


def test_a_move_to_another_account_killed_rolls_back_or_resumes_and_rolls_back_after_the_switch(
        fleet: Fleet, sandbox, eu_runtime):
    """cl-k2 from eua (account A) to eub (account B, same region): real CLI
    processes killed right after the move recorded `preparing` (nothing
    built), half-way through the target stack's apply and right after it
    recorded `copying` (each then rolled back: the target stack gone) and `freezing` (then resumed to the switch:
    the tenant served from account B under its key there); a writer appends
    through the runtime while the switched move is rolled back (a CLI run
    killed right after recording `rolling_back`, then finished): its writes
    made under account B's key are back in the old store under the old key,
    and nothing of the tenant is left in account B."""
    cli, tid, rt = Cli.create(sandbox, fleet.root), "cl-k2", eu_runtime
    before = fleet.provision(tid, region=EU, cell="eua").resources
    rt.store.append(rt.context(tid), "c", "user", "before the move")
    kept = rt.objects.put_body(rt.context(tid), b"kept body")
    slots = (cell_count(sandbox, "eua"), cell_count(sandbox, "eub"))
    iam = aws(sandbox, "iam", EU, ACCOUNT_B)

    def in_eub() -> dict[str, int]:  # without IAM: the generation-0 role is looked for there
        return {k: v for k, v in inventory(sandbox, tid, EU, ACCOUNT_B, WHERE["eub"][2]).items() if k != "iam:role"}

    def nothing_in_eub() -> None:
        assert in_eub() == {"pg:role": 1}  # the database role: the sandbox's one server's
        with pytest.raises(iam.exceptions.NoSuchEntityException):
            iam.get_role(RoleName=naming.iam_role_name(tid, 1))
        assert not (fleet.root / "stacks" / f"Pulumi.{tid}.k1.yaml").exists()
        with psycopg.connect(sandbox.pg_dsn(WHERE["eua"][2]), autocommit=True) as conn:
            assert store_sync.writable(conn, before.store)
            assert conn.execute("SELECT to_regclass(%s)", (f'tenantctl_move."{before.store.schema_name}"',)
                                ).fetchone()[0] is None  # the capture is gone
        assert (cell_count(sandbox, "eua"), cell_count(sandbox, "eub")) == slots

    # Killed right after recording the move (nothing built yet), at the 5th resource write of the target
    # stack (half built) and right after recording `copying` (the target stack built): each rolled back.
    built = {k: v for k, v in POOLED.items() if k != "iam:role"}
    for fault in ("move:preparing", "5", "move:copying"):
        killed = cli("move", tid, "--cell", "eub", env={"TENANTCTL_FAULT_AFTER": fault})
        assert killed.returncode == 86, killed
        assert registry_record(sandbox, tid)["move"]["to_stack"] == f"{tid}.k1"
        found, expected = in_eub(), {"move:preparing": {"pg:role": 1}, "move:copying": built}.get(fault)
        assert found == expected if expected else found not in ({"pg:role": 1}, built), (fault, found)
        if fault == "move:copying":  # its rollback killed at the target stack's last delete, then run again
            iam.get_role(RoleName=naming.iam_role_name(tid, 1))
            target_state = StateFile(sandbox.state_dir / "local-engine", f"{tid}.k1")
            killed = cli("move", tid, "--rollback", env={"TENANTCTL_FAULT_AFTER": str(len(
                target_state.load().resources))})
            assert killed.returncode == 86 and not target_state.exists(), killed
            assert registry_record(sandbox, tid)["move"]["phase"] == "copying"
        rolled = cli("move", tid, "--rollback", "--json")
        assert rolled.returncode == 0 and rolled.json()["outcome"] == "rolled_back", (fault, rolled)
        record = fleet.ws.registry.require(tid)
        assert (record.cell, record.move, record.stack, record.lock, record.resources) == (
            "eua", None, None, None, before), fault
        nothing_in_eub()

    killed = cli("move", tid, "--cell", "eub", env={"TENANTCTL_FAULT_AFTER": "move:freezing"})
    assert killed.returncode == 86, killed
    # Resumed, and killed again right after recording the switch, before comparing the stores: the next run
    # compares them (the new store frozen a moment, its changes relayed back re-wrapped, both pinned).
    killed = cli("move", tid, env={"TENANTCTL_FAULT_AFTER": "move:switched"})
    assert killed.returncode == 86, killed
    resumed = cli("move", tid, "--json")
    assert resumed.returncode == 0 and resumed.json()["outcome"] == "switched", resumed
    assert resumed.json()["verified"] and resumed.json()["rows"]["messages"] == 1, resumed
    assert not registry_record(sandbox, tid)["move"]["reverifying"]
    switched = fleet.ws.registry.require(tid)
    assert (switched.cell, switched.account_id, switched.stack) == ("eub", ACCOUNT_B, f"{tid}.k1")
    assert naming.account_of_arn(switched.resources.kms_key_arn) == ACCOUNT_B
    assert naming.account_of_arn(switched.resources.role_arn) == ACCOUNT_B
    # The object, read by account A's role and written by account B's (no cross-account grant), under B's key.
    b_s3 = aws(sandbox, "s3", EU, ACCOUNT_B)
    head = b_s3.head_object(Bucket=switched.resources.bucket, Key=switched.resources.prefix + kept)
    assert head["SSEKMSKeyId"] == switched.resources.kms_key_arn
    assert rt.objects.read_body(rt.context(tid), kept, 100) == b"kept body"
    rt.store.append(rt.context(tid), "c", "user", "after the switch")
    assert check_tenant(fleet.ws, tid).ok
    aws(sandbox, "sqs", EU, ACCOUNT_B).send_message(QueueUrl=switched.resources.queue_url,
                                                    MessageBody="enqueued after the switch")
    with writing(rt, tid) as writer:
        writer.wait_for_acks(5)
        killed = cli("move", tid, "--rollback", env={"TENANTCTL_FAULT_AFTER": "move:rolling_back"})
        assert killed.returncode == 86 and registry_record(sandbox, tid)["move"]["phase"] == "rolling_back", killed
        assert move(fleet.ws, tid, rollback=True).outcome == "rolled_back"  # finishes the killed one
        writer.wait_for_acks(6)  # writes after the switch back, on the old store again: over 10 in all
    record = fleet.ws.registry.require(tid)
    assert (record.cell, record.account_id, record.move, record.stack, record.resources) == (
        "eua", ACCOUNT_A, None, None, before)
    assert len(writer.acked) > 10 and not writer.errors
    assert {seq for seq, _ in writer.acked} <= {seq for seq, _ in _rows(sandbox, before.store)}
    ctx = rt.context(tid)
    assert [m.content for m in rt.store.history(ctx, "c").messages][::-1] == ["before the move", "after the switch"]
    assert [m.content for m in reversed(rt.store.history(ctx, "live", limit=500).messages)] == [
        c for _, c in writer.acked][-500:]
    nothing_in_eub()
    back = aws(sandbox, "sqs", EU, ACCOUNT_A).receive_message(QueueUrl=before.queue_url, MaxNumberOfMessages=10)
    assert [m["Body"] for m in back.get("Messages", [])] == ["enqueued after the switch"]  # forwarded back
    assert rt.objects.read_body(ctx, kept, 100) == b"kept body"
    assert b_s3.list_object_versions(Bucket=switched.resources.bucket, Prefix=before.prefix).get("Versions") is None
    assert check_tenant(fleet.ws, tid).ok
    deprovision(fleet.ws, tid, final_backup=False, purge_data=True)
    assert everywhere(sandbox, tid) == {}


def test_a_move_to_another_account_interrupted_in_its_freeze_ends_the_freeze(fleet: Fleet, sandbox):
    """A move to another account (its own freeze: the row relay's) interrupted
    (Ctrl-C; SIGTERM alike) while its freeze waits out a write under way: the
    old store's role writes again and the move is back in `copying`, the lock
    released, rather than the tenant refusing every write until someone runs
    the move again; then it rolls back."""
    import _thread
    import signal
    import threading

    tid = "cl-kt"
    store = fleet.provision(tid, region=EU, cell="eua").resources.store
    insert = (f"{store.schema_name}.messages", "INSERT")
    frozen = "SELECT NOT has_table_privilege(%s, %s, %s)"
    with psycopg.connect(sandbox.pg_dsn(store.database), autocommit=True) as writer, \
            psycopg.connect(sandbox.pg_dsn(store.database), autocommit=True) as admin:

        returned = threading.Event()

        def interrupt_once_frozen() -> None:
            deadline, held = time.monotonic() + 300, False
            while not admin.execute(frozen, (store.role, *insert)).fetchone()[0]:
                if returned.is_set() or time.monotonic() > deadline:
                    return
                if not held and (registry_record(sandbox, tid)["move"] or {}).get("phase") in ("copying", "freezing"):
                    # The capture trigger is in (it needs a lock this one blocks): a write under way that
                    # does not end, which the freeze waits for; the copy only reads.
                    writer.execute("BEGIN")
                    writer.execute(sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(
                        sql.Identifier(store.schema_name, "messages")))
                    held = True
                time.sleep(0.02)
            _thread.interrupt_main()

        # Python's own Ctrl-C handler, as a CLI process in a terminal has: a test run started in the
        # background (`cmd &` in a script) inherits SIGINT ignored, and interrupt_main then does nothing.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        watcher = threading.Thread(target=interrupt_once_frozen, daemon=True)
        watcher.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                try:
                    move(fleet.ws, tid, cell="eub")
                finally:
                    returned.set()
        finally:
            watcher.join(10)
            signal.signal(signal.SIGINT, previous)
            writer.execute("ROLLBACK")
        assert not admin.execute(frozen, (store.role, *insert)).fetchone()[0]  # writable again
    record = fleet.ws.registry.require(tid)
    assert (record.move.phase, record.lock, record.cell) == (MovePhase.copying, None, "eua"), record
    assert move(fleet.ws, tid, rollback=True).outcome == "rolled_back"
    deprovision(fleet.ws, tid, final_backup=False, purge_data=True)
    assert everywhere(sandbox, tid) == {}


def _moved_while_written(fleet: Fleet, sandbox, rt, tid: str, **target) -> TenantRecord:
    """``move`` to ``target`` while a writer appends through the runtime: the
    switched record, every acknowledged write in its new store, `check` passing."""
    with writing(rt, tid) as writer:
        writer.wait_for_acks(5)
        result = move(fleet.ws, tid, **target)
        writer.wait_for_acks(6)  # writes after the switch, on the new store under the new key: over 10 in all
    record = fleet.ws.registry.require(tid)
    assert (result.outcome, record.move.phase, record.tier) == ("switched", MovePhase.switched, target["tier"])
    assert len(writer.acked) > 10 and not writer.errors
    assert {seq for seq, _ in writer.acked} <= {seq for seq, _ in _rows(sandbox, record.resources.store)}
    report = check_tenant(fleet.ws, tid)
    assert report.ok, report.summary()
    return record


def test_a_pooled_tenant_moves_to_dedicated_in_another_region_and_back_to_pooled_while_written(
        fleet: Fleet, sandbox, eu_runtime):
    """cl-k3 from eua (pooled, account A, eu-west-1) to a dedicated store in
    eud (eu-central-1) as stack cl-k3.k1, with a writer, then finalized:
    nothing left in eu-west-1. A dedicated -> dedicated move back is refused
    on the sandbox (one PostgreSQL server: the database named after the
    tenant cannot be there twice), nothing created. Then back to pooled in eua
    (cl-k3.k2) with a writer and finalized: the dedicated store and its
    network gone from eu-central-1 (its deletion protection lifted)."""
    _eud(fleet)
    tid, rt = "cl-k3", eu_runtime
    fleet.provision(tid, region=EU, cell="eua", residency=[EU, DE])
    rt.store.append(rt.context(tid), "c", "user", "before the move")
    kept = rt.objects.put_body(rt.context(tid), b"kept body")
    slots = {(c, t): cell_count(sandbox, c, t) for c in ("eua", "eud") for t in ("pooled", "dedicated")}
    de_rds = aws(sandbox, "rds", DE, ACCOUNT_A)

    record = _moved_while_written(fleet, sandbox, rt, tid, cell="eud", tier=Tier.dedicated)
    new = record.resources
    assert (record.cell, record.region, record.stack, new.tier) == ("eud", DE, f"{tid}.k1", Tier.dedicated)
    assert new.store.database == naming.database_name(tid) and naming.region_of_arn(new.kms_key_arn) == DE
    [instance] = de_rds.describe_db_instances(DBInstanceIdentifier=naming.rds_identifier(tid))["DBInstances"]
    assert instance["DeletionProtection"] and instance["DBInstanceArn"].split(":")[3] == DE
    # Both stores hold a slot while the move is open: the target's is a dedicated one.
    assert cell_count(sandbox, "eud", "dedicated") == slots["eud", "dedicated"] + 1
    assert move(fleet.ws, tid, finalize=True).outcome == "finalized"  # its `activate` ran the checks again
    assert everywhere(sandbox, tid) == {"server": {"pg:role": 1}}  # nothing in eu-west-1
    assert cell_count(sandbox, "eua", "pooled") == slots["eua", "pooled"] - 1
    ctx = rt.context(tid)
    assert rt.objects.read_body(ctx, kept, 100) == b"kept body"
    assert [m.content for m in rt.store.history(ctx, "c").messages] == ["before the move"]

    dedicated = fleet.ws.registry.require(tid)
    with pytest.raises(InvalidInput, match="both cells' databases are on one PostgreSQL server") as refused:
        move(fleet.ws, tid, cell="eua", tier=Tier.dedicated)
    assert refused.value.exit_code == 3
    assert fleet.ws.registry.require(tid).version == dedicated.version
    assert not (fleet.root / "stacks" / f"Pulumi.{tid}.k2.yaml").exists()

    record = _moved_while_written(fleet, sandbox, rt, tid, cell="eua", tier=Tier.pooled)
    assert (record.cell, record.region, record.stack) == ("eua", EU, f"{tid}.k2")
    assert record.resources.store.database == WHERE["eua"][2]
    # Rolled back to dedicated: the login role both stores share on the sandbox's one server gets the
    # dedicated stack's CONNECTION LIMIT back (before: the pooled target's, `check` failing until a provision).
    assert move(fleet.ws, tid, rollback=True).outcome == "rolled_back"
    report = check_tenant(fleet.ws, tid)
    assert report.ok, report.summary()
    assert move(fleet.ws, tid, cell="eua", tier=Tier.pooled).outcome == "switched"
    # A finalize killed in the old dedicated stack's destroy, its database dropped already, is finished by the
    # next (before: every re-run failed connecting to that database to remove the capture, exit 1).
    killed = Cli.create(sandbox, fleet.root)("move", tid, "--finalize", env={"TENANTCTL_FAULT_AFTER": "12"})
    assert killed.returncode == 86 and "destroying stack" in killed.stderr, killed
    # As a tenantctl before `old_stack_destroying` left it: the re-run goes through every step again, the
    # capture's removal from a database dropped already included (before: `database ... does not exist`, exit 1).
    stuck = fleet.ws.registry.require(tid)
    fleet.ws.registry.save(stuck, move=stuck.move.model_copy(update={"old_stack_destroying": False}))
    assert move(fleet.ws, tid, finalize=True).outcome == "finalized"
    # Left in eu-central-1: the dedicated store's snapshots (the final backup's, taken at the first finalize,
    # and the instance's final one), under its key, now pending deletion; and the server's database role.
    assert inventory(sandbox, tid, DE, ACCOUNT_A, EUD_DB) == {"pg:role": 1, "rds:snapshot": 2}
    snapshots = [s for s in de_rds.describe_db_snapshots()["DBSnapshots"]
                 if s["DBInstanceIdentifier"] == naming.rds_identifier(tid)]
    assert {s.get("KmsKeyId") for s in snapshots} == {new.kms_key_arn}, snapshots
    assert any(s["DBSnapshotIdentifier"].startswith(naming.resource_name(tid, "final")) for s in snapshots)
    assert aws(sandbox, "kms", DE, ACCOUNT_A).describe_key(KeyId=new.kms_key_arn)["KeyMetadata"]["KeyState"] == (
        "PendingDeletion")
    assert not [i for i in de_rds.describe_db_instances()["DBInstances"]
                if i["DBInstanceIdentifier"] == naming.rds_identifier(tid)]
    with psycopg.connect(sandbox.pg_dsn(WHERE["eua"][2]), autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (naming.database_name(tid),)).fetchone() is None
    assert {k: cell_count(sandbox, *k) for k in slots} == {**slots, ("eua", "pooled"): slots["eua", "pooled"]}
    ctx = rt.context(tid)
    assert rt.objects.read_body(ctx, kept, 100) == b"kept body"
    assert [m.content for m in rt.store.history(ctx, "c").messages] == ["before the move"]
    deprovision(fleet.ws, tid, final_backup=False, purge_data=True)
    assert everywhere(sandbox, tid) == {}


def test_a_tenants_workspace_moves_to_another_region_under_its_own_new_key_rolls_back_and_finalizes(
        fleet: Fleet, sandbox, eu_runtime):
    """cl-k4 and its workspace legal from eua to eud (account A, eu-west-1 ->
    eu-central-1) while a writer appends in the workspace: the workspace's
    rows re-wrapped under its own new key (context `<id>/<ws>`), its objects
    copied under it, its role of key generation 1 beside the old one; rolled
    back after the switch with the writes made since, moved again and
    finalized, leaving nothing of the tenant or its workspace in eu-west-1."""
    _eud(fleet)
    tid, rt, scope = "cl-k4", eu_runtime, workspace_key("cl-k4", "legal")
    record = fleet.provision(tid, region=EU, cell="eua", residency=[EU, DE], workspaces=[{"name": "legal"}])
    before, old = record.resources, record.resources.workspaces["legal"]
    rt.store.append(rt.context(tid), "c", "user", "the tenant's")
    for i in range(20):
        rt.store.append(rt.context(tid, "legal"), f"c{i % 3}", "user", f"legal's {i}")
    kept = rt.objects.put_body(rt.context(tid, "legal"), b"legal's object")
    earlier = backup(*scoped_context(context_from_workspace(fleet.ws, record), record, "legal")).backup_id
    with writing(rt, tid, workspace="legal") as writer:
        writer.wait_for_acks(5)
        result = move(fleet.ws, tid, cell="eud")
        writer.wait_for_acks(6)  # writes after the switch, in the workspace's new schema under its new key

    moved = fleet.ws.registry.require(tid).resources
    new = moved.workspaces["legal"]
    assert result.outcome == "switched" and result.rows["legal/messages"] >= 20 and result.rows["messages"] == 1
    assert new.store.database == EUD_DB and naming.region_of_arn(new.kms_key_arn) == DE
    assert new.role_arn.endswith(f":role/{naming.ws_iam_role_name(tid, 'legal', 1)}")
    assert len(writer.acked) > 10 and not writer.errors
    assert {seq for seq, _ in writer.acked} <= {seq for seq, _ in _rows(sandbox, new.store)}
    legal = rt.context(tid, "legal")
    assert [m.content for m in reversed(rt.store.history(legal, "live", limit=500).messages)] == [
        c for _, c in writer.acked][-500:]
    assert [m.content for m in rt.store.history(rt.context(tid), "c").messages] == ["the tenant's"]
    _opened_under_the_new_key_only(sandbox, scope, new, old)
    _opened_under_the_new_key_only(sandbox, tid, moved, before)
    de_s3 = aws(sandbox, "s3", DE, ACCOUNT_A)
    assert de_s3.head_object(Bucket=moved.bucket, Key=new.prefix + kept)["SSEKMSKeyId"] == new.kms_key_arn
    assert rt.objects.read_body(legal, kept, 100) == b"legal's object"
    rt.store.append(legal, "c0", "user", "after the switch")
    assert check_tenant(fleet.ws, tid).ok

    assert move(fleet.ws, tid, rollback=True).outcome == "rolled_back"
    back = fleet.ws.registry.require(tid)
    assert (back.cell, back.stack, back.move, back.resources) == ("eua", None, None, before)
    assert rt.store.history(rt.context(tid, "legal"), "c0").messages[0].content == "after the switch"
    assert _planned(fleet, tid) is Action.unchanged  # its stack file as the fingerprint recorded it
    # Nothing left in eud: the database role is the sandbox's one server's, IAM's the account's (the old role).
    assert inventory(sandbox, tid, DE, ACCOUNT_A, EUD_DB) == {"pg:role": 1, "iam:role": 1}
    iam = aws(sandbox, "iam", EU, ACCOUNT_A)
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName=naming.ws_iam_role_name(tid, "legal", 1))

    assert move(fleet.ws, tid, cell="eud").outcome == "switched"
    assert move(fleet.ws, tid, finalize=True).outcome == "finalized"
    done = fleet.ws.registry.require(tid)
    new = done.resources.workspaces["legal"]
    assert everywhere(sandbox, tid) == {"server": {"pg:role": 1}}  # the workspace's key, queues, secret included
    assert _versions(sandbox, "eua", old.prefix) == [] and _versions(sandbox, "eua", before.prefix) == []
    with psycopg.connect(sandbox.pg_dsn(WHERE["eua"][2]), autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace(%s)", (old.store.schema_name,)).fetchone()[0] is None
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName=naming.ws_iam_role_name(tid, "legal"))
    kms = aws(sandbox, "kms", EU, ACCOUNT_A)
    assert kms.describe_key(KeyId=old.kms_key_arn)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    legal = rt.context(tid, "legal")
    assert rt.store.history(legal, "c0").messages[0].content == "after the switch"
    assert rt.objects.read_body(legal, kept, 100) == b"legal's object"
    assert de_s3.list_objects_v2(Bucket=done.resources.bucket, Prefix=f"{new.prefix}backups/").get("KeyCount")
    # The workspace's backup taken before the move (under its old key, now pending deletion) restores under its
    # new key: carried at finalize.
    report = drill(*scoped_context(context_from_workspace(fleet.ws, done), done, "legal"), backup_id=earlier)
    assert report.passed, report.reasons
    assert check_tenant(fleet.ws, tid).ok
    assert _planned(fleet, tid) is Action.unchanged
    deprovision(fleet.ws, tid, final_backup=False, purge_data=True)
    assert everywhere(sandbox, tid) == {} and inventory(sandbox, tid, DE, ACCOUNT_A, EUD_DB) == {}


def _planned(fleet: Fleet, tenant_id: str) -> Action:
    """What `apply` plans for the tenant: from the stack its record names, against its recorded fingerprint."""
    [planned] = plan(fleet.ws, (1, 1), {tenant_id: fleet.ws.registry.require(tenant_id)}, match=[tenant_id])
    return planned.action


def test_the_runtime_wakes_a_hibernated_tenant_in_its_cells_account(fleet: Fleet, sandbox, monkeypatch):
    """A dedicated tenant of eua (account A), hibernated: the runtime, in the home
    account, starts its instance there as eua's waker role (which the hibernation
    names), answering 503 while it starts; `resume` wakes it in its cell's account too."""
    from tenant_runtime import TenantWaking
    from tenantctl.operations.hibernate import hibernate, wake

    tid = "cl-d1"
    fleet.provision(tid, region=EU, cell="eua", tier="dedicated")
    rds = aws(sandbox, "rds", EU, ACCOUNT_A)

    def state() -> str:
        return rds.describe_db_instances(DBInstanceIdentifier=naming.rds_identifier(tid))["DBInstances"][0][
            "DBInstanceStatus"]

    # A cell applied before waker roles existed: refused before anything is stopped.
    before_wakers = {k: v for k, v in fleet.ws.cell_outputs("eua").items() if k != "waker_role_arn"}
    with monkeypatch.context() as older:
        older.setattr(fleet.ws, "cell_outputs", lambda cell: before_wakers)
        with pytest.raises(InvalidInput, match="tenantctl cell add eua"):
            hibernate(fleet.ws, tid, force=True)
    assert state() == "available"
    slept, _ = hibernate(fleet.ws, tid, force=True)
    waker = f"arn:aws:iam::{ACCOUNT_A}:role/tenantctl-cell-eua-waker"
    assert slept.hibernation.waker_role_arn == waker == cells.show(fleet.ws, "eua").waker_role_arn
    assert cells.show(fleet.ws, "eub").waker_role_arn.endswith(":role/tenantctl-cell-eub-waker")
    assert cells.show(fleet.ws, "default").waker_role_arn is None  # the runtime role's own account
    assert state() == "stopped"
    runtime = TenantRuntime(jwt_settings(), fleet.ws.platform_outputs()["registry_table"], mode="assume_role",
                            endpoint_url=sandbox.aws_endpoint_url, region=US)
    try:
        ctx = runtime.resolve(token(tid), addressed_tenant=tid)
        with pytest.raises(TenantWaking) as waking:
            runtime.store.append(ctx, "c1", "user", "hello")
        assert waking.value.status_code == 503 and runtime.waker.starts == 1
        assert state() != "stopped"  # started in account A: the home account has no such instance
        as_waker = runtime.clients.own_client("sts", EU, role_arn=waker).get_caller_identity()["Arn"]
        assert as_waker.startswith(f"arn:aws:sts::{ACCOUNT_A}:assumed-role/tenantctl-cell-eua-waker/")
    finally:
        runtime.close()
    woken, done = wake(fleet.ws, tid)
    assert woken.hibernation is None and done == "woken from hibernation" and state() == "available"
