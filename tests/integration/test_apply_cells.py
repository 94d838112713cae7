"""`tenantctl apply` applies the committed cell stacks before any tenant: a
cell written for review (`cell add --write-only`) is created by the apply that
places its first tenant, an unchanged cell is left alone, an edited one is
updated, a committed ``draining`` reaches the counter, and CI shards take turns
on a cell through its lease, which lapses when its holder dies.

A project of its own on the session's sandbox, one cell ``apc`` in
ap-northeast-2 of account 555555555555, which no other test uses (cell names,
accounts and regions are shared by every project on the sandbox, and other
tests audit the home account). What happened is read on the sandbox:
the cell's bucket, the engine's state file, the counter item.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from fault_tools import Cli, aws, platform_outputs
from faults import FAULT_THROTTLE_ENV, FAULT_THROTTLE_FILE_ENV

from tenant_runtime.registry import APPLIED, DRAINING, LEASE, LEASE_UNTIL, counter_key
from tenantctl import naming
from tenantctl.engines.local.state import StateFile
from tenantctl.models import CellSpec, TenantLock, TenantSpec
from tenantctl.operations.apply import in_shard
from tenantctl.stackconfig import read_cell, stack_file, write_cell, write_tenant

pytestmark = pytest.mark.integration

CELL, REGION, ACCOUNT = "apc", "ap-northeast-2", "555555555555"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/tenantctl-cell"
TENANT = "apc-t1"


@pytest.fixture(scope="module")
def cli(sandbox, tmp_path_factory) -> Cli:
    cli = Cli.create(sandbox, tmp_path_factory.mktemp("apply-cells"))
    write_cell(cli.root / "stacks", CellSpec())
    return cli


def apply(cli: Cli, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
    """`tenantctl apply --json ARGS` -> (exit code, summary, stderr)."""
    run = cli("apply", "--json", *args, env=env)
    assert run.stdout.startswith("{"), run  # the summary, whatever the exit code
    assert run.json()["exit_code"] == run.returncode
    return run.returncode, run.json(), run.stderr


def cells(summary: dict) -> dict[str, dict]:
    return {c["cell"]: c for c in summary["cells"]}


def tenants(summary: dict) -> dict[str, dict]:
    """The run's tenant results (the session's other tests' tenants are orphans here)."""
    return {r["tenant_id"]: r for r in summary["results"]}


def applied(cli: Cli) -> str:
    """`cell show`'s word on the cell's stack file against its last up."""
    run = cli("cell", "show", CELL, "--json")
    assert run.returncode == 0, run
    return run.json()["applied"]


def bucket_tags(sandbox) -> dict[str, str] | None:
    """The cell's shared bucket's tags in its region (None: no such bucket)."""
    s3 = aws(sandbox, "s3", region=REGION, account=ACCOUNT)
    try:
        tags = s3.get_bucket_tagging(Bucket=naming.cell_bucket_name(ACCOUNT, REGION, CELL))["TagSet"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchBucket":
            return None
        raise
    return {t["Key"]: t["Value"] for t in tags}


def counter(sandbox) -> dict:
    table = platform_outputs(sandbox)["registry_table"]
    return aws(sandbox, "dynamodb").get_item(TableName=table, Key=counter_key(CELL), ConsistentRead=True)["Item"]


def cell_state(sandbox) -> Path:
    return StateFile(Path(sandbox.state_dir) / "local-engine", naming.cell_stack(CELL)).path


def naming_file(cli: Cli) -> Path:
    return cli.root / "stacks" / f"Pulumi.{naming.cell_stack(CELL)}.yaml"


def edit_cell(cli: Cli, **fields) -> None:
    stacks = cli.root / "stacks"
    write_cell(stacks, read_cell(stacks, CELL).model_copy(update=fields))


def test_a_cell_written_for_review_is_created_by_the_apply_that_places_its_tenant(cli, sandbox):
    run = cli("cell", "add", CELL, "--region", REGION, "--account-role", ROLE, "--max-pooled", "2", "--write-only",
              "--json")
    assert run.returncode == 0, run.stderr
    spec = read_cell(cli.root / "stacks", CELL)
    # Complete as committed: the home's runtime, which the cell's tenant roles trust.
    assert spec.runtime_principal_arn == platform_outputs(sandbox)["runtime_principal_arn"]
    assert bucket_tags(sandbox) is None and not cell_state(sandbox).exists()
    assert applied(cli) == "never"
    write_tenant(cli.root / "stacks", TenantSpec(id=TENANT, region=REGION, cell=CELL))

    rc, summary, _ = apply(cli, "--preview")
    assert rc == 12
    planned = cells(summary)[CELL]
    assert planned["action"] == "create" and planned["reason"] == "not applied yet"
    assert planned["changes"]["create"] >= 40 and any(r["name"] == "shared-bucket" for r in planned["resources"])
    # Its tenant reads the cell's outputs: pending, planned by the apply once the cell exists.
    awaiting = tenants(summary)[TENANT]
    assert awaiting["action"] == "create" and awaiting["ok"]
    assert f"its cell {CELL} is created first" in awaiting["reason"]
    # Another shard's preview shows no cell (shard 1's does) but knows its tenant waits for one.
    total = next(n for n in range(2, 20) if not in_shard(TENANT, 1, n))
    index = next(i for i in range(2, total + 1) if in_shard(TENANT, i, total))
    rc, summary, _ = apply(cli, "--preview", "--shard", f"{index}/{total}")
    assert rc == 12 and summary["cells"] == []
    assert f"its cell {CELL} is created first" in tenants(summary)[TENANT]["reason"]
    assert bucket_tags(sandbox) is None  # a preview creates nothing

    rc, summary, err = apply(cli)
    assert rc == 0, err
    done = cells(summary)[CELL]
    assert done["action"] == "create" and done["ok"] and done["changes"]["create"] == planned["changes"]["create"]
    tenant = tenants(summary)[TENANT]
    assert tenant["action"] == "create" and tenant["ok"], tenant
    # The cell was up before its tenant was placed (progress on stderr, in order).
    assert err.index(f"cell {CELL}: create ok") < err.index(f"{TENANT}: create ok")
    assert bucket_tags(sandbox)["owner"] == "platform" and applied(cli) == "as committed"
    assert APPLIED in counter(sandbox) and LEASE not in counter(sandbox)


def test_a_new_cell_gets_a_vpc_range_of_its_own_and_the_cells_before_it_stay_as_they_are(cli, sandbox):
    stacks = cli.root / "stacks"
    committed = naming_file(cli).read_text()
    assert read_cell(stacks, CELL).vpc_cidr == "10.0.0.0/16"  # the first of its account and region
    added = []
    try:
        for name, extra, cidr in (("apd", (), "10.1.0.0/16"), ("ape", (), "10.2.0.0/16"),
                                  ("apf", ("--vpc-cidr", "10.0.0.0/20"), "10.0.0.0/20")):  # given: kept as given
            run = cli("cell", "add", name, "--region", REGION, "--account-role", ROLE, "--write-only", *extra, "--json")
            assert run.returncode == 0, run.stderr
            added.append(stack_file(stacks, naming.cell_stack(name)))
            assert read_cell(stacks, name).vpc_cidr == cidr and run.json()["cell"]["vpc_cidr"] == cidr
            overlaps = [w for w in run.json()["cell"]["warnings"] if "overlaps" in w]
            assert overlaps == ([f"cell 'apf': its vpc_cidr 10.0.0.0/20 overlaps the VPC of cell(s) {CELL} of its "
                                 "account and region: they cannot be peered or joined by a transit gateway later "
                                 "(without --vpc-cidr a range of its own is picked)"] if extra else []), run.stderr
        bad = cli("cell", "add", "aph", "--region", REGION, "--vpc-cidr", "8.8.0.0/16", "--write-only", "--json")
        assert bad.returncode == 3 and "private IPv4 network" in bad.json()["error"]["message"], bad
        unlimited = cli("cell", "add", "aph", "--region", REGION, "--db-connection-limit", "0", "--write-only",
                        "--json")
        assert unlimited.returncode == 2, unlimited  # a usage error, naming the option
        assert "'--db-connection-limit'" in unlimited.json()["error"]["message"], unlimited
        assert not stack_file(stacks, naming.cell_stack("aph")).exists()
        # The pooled logins' connection limit: the cell's default, or as given (a tenant may override it).
        assert [read_cell(stacks, name).db_connection_limit for name in ("apd", "apf")] == [10, 10]
        limited = cli("cell", "add", "apd", "--db-connection-limit", "25", "--write-only", "--json")
        assert limited.returncode == 0 and limited.json()["cell"]["db_connection_limit"] == 25, limited
        assert read_cell(stacks, "apd").db_connection_limit == 25
        # Another account's first cell starts from 10.0 again; the home's account skips the home's range.
        elsewhere = cli("cell", "add", "apg", "--region", REGION, "--write-only", "--json")
        assert elsewhere.returncode == 0, elsewhere.stderr
        added.append(stack_file(stacks, naming.cell_stack("apg")))
        assert read_cell(stacks, "apg").vpc_cidr == "10.0.0.0/16"  # the home is in us-east-1
        # The cells before are left as they were: their file, their fingerprint, their tenant.
        assert naming_file(cli).read_text() == committed
        rc, summary, err = apply(cli, "--preview")
        assert cells(summary)[CELL]["action"] == "unchanged" and tenants(summary)[TENANT]["action"] == "unchanged"
        assert cells(summary)["apd"]["action"] == "create"
    finally:
        for path in added:
            path.unlink(missing_ok=True)


def test_an_unchanged_cell_is_left_alone_an_edited_one_updated_and_draining_needs_no_up(cli, sandbox):
    before = cell_state(sandbox).stat().st_mtime_ns
    rc, summary, err = apply(cli)
    assert rc == 0, err
    # (The cells of the session's other projects share the registry: orphans in this project's stacks/.)
    assert {c["action"] for c in summary["cells"] if c["action"] != "orphan"} == {"unchanged"}
    assert cell_state(sandbox).stat().st_mtime_ns == before

    edit_cell(cli, owner="team-apc")
    assert applied(cli) == "changed since"
    rc, summary, _ = apply(cli, "--preview")
    planned = cells(summary)[CELL]
    assert rc == 12 and planned["action"] == "update"
    assert planned["reason"] == "spec or program changed since its last up" and planned["changes"]["update"] >= 1
    rc, summary, err = apply(cli)
    assert rc == 0, err
    assert cells(summary)[CELL]["action"] == "update" and bucket_tags(sandbox)["owner"] == "team-apc"

    # A committed drain: the counter's flag, no up (it deploys nothing).
    before = cell_state(sandbox).stat().st_mtime_ns
    edit_cell(cli, draining=True)
    rc, summary, err = apply(cli)
    assert rc == 0, err
    drained = cells(summary)[CELL]
    assert drained["action"] == "update" and drained["reason"] == "draining: no new tenants"
    assert drained["changes"] == {} and counter(sandbox)[DRAINING] == {"BOOL": True}
    assert cell_state(sandbox).stat().st_mtime_ns == before
    edit_cell(cli, draining=False)
    assert apply(cli)[0] == 0 and counter(sandbox)[DRAINING] == {"BOOL": False}

    # A run scoped to tenant ids leaves the cells alone, changed or not.
    edit_cell(cli, owner="team-apc-2")
    rc, summary, err = apply(cli, "--match", "apc-*")
    assert rc == 0, err
    assert summary["cells"] == [] and bucket_tags(sandbox)["owner"] == "team-apc"


def test_shards_take_turns_on_a_changed_cell(cli, sandbox):
    """Both shards find the cell changed; its lease lets one apply it, the
    other waits and finds it applied (or plans after it and finds nothing)."""
    runs = [cli.start("apply", "--json", "--shard", f"{i}/2") for i in (1, 2)]
    outs = [p.communicate(timeout=600) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outs
    results = [cells(json.loads(out))[CELL] for out, _ in outs]
    assert sorted(r["action"] for r in results) == ["unchanged", "update"], results
    assert next(r for r in results if r["action"] == "update")["changes"]["update"] >= 1
    assert bucket_tags(sandbox)["owner"] == "team-apc-2" and LEASE not in counter(sandbox)


def hold_lease(sandbox, holder: TenantLock, until: float) -> None:
    """Write the cell's lease as ``holder``'s, held until the epoch second ``until``."""
    aws(sandbox, "dynamodb").update_item(
        TableName=platform_outputs(sandbox)["registry_table"], Key=counter_key(CELL),
        UpdateExpression="SET #l = :l, #u = :u", ExpressionAttributeNames={"#l": LEASE, "#u": LEASE_UNTIL},
        ExpressionAttributeValues={":l": {"S": holder.model_dump_json()}, ":u": {"N": str(until)}})


def test_a_held_lease_refuses_cell_add_and_lapses_when_its_holder_is_gone(cli, sandbox):
    # Held for as long as the refused runs could take on a loaded machine: the lease lapses when the
    # test says so, not when a 4 s timer that two CLI runs raced against ran out.
    dead = TenantLock(operation="cell up", owner="ci", host="runner-7", pid=4242)
    hold_lease(sandbox, dead, time.time() + 600)

    path = naming_file(cli)
    written = path.stat().st_mtime_ns
    run = cli("cell", "add", CELL, "--owner", "team-apc-3")
    assert run.returncode == 5, run.stderr
    assert "cell 'apc' is being applied by a cell up (owner ci, host runner-7, pid 4242" in run.stderr
    # Refused before anything ran: the cloud and the stack file are as they were, the file not even written
    # (a write put back afterwards could undo what the lease's holder wrote meanwhile).
    assert bucket_tags(sandbox)["owner"] == "team-apc-2" and read_cell(cli.root / "stacks", CELL).owner == "team-apc-2"
    assert path.stat().st_mtime_ns == written
    # A drain too: an up running meanwhile would set the counter's flag back to what its file said.
    run = cli("cell", "drain", CELL, "--json")
    assert run.returncode == 5 and run.json()["error"]["code"] == 5, run
    assert path.stat().st_mtime_ns == written and counter(sandbox)[DRAINING] == {"BOOL": False}

    hold_lease(sandbox, dead, time.time() - 1)  # nobody renewed it: its time ran out, the holder still named
    run = cli("cell", "add", CELL, "--owner", "team-apc-3", "--json")
    assert run.returncode == 0, run.stderr
    assert bucket_tags(sandbox)["owner"] == "team-apc-3" and LEASE not in counter(sandbox)
    # `cell add` recorded what it applied: the next apply has nothing to do for the cell.
    rc, summary, err = apply(cli)
    assert rc == 0 and cells(summary)[CELL]["action"] == "unchanged", err


def test_a_committed_cell_without_the_homes_runtime_is_refused_before_anything_runs(cli, sandbox):
    stacks = cli.root / "stacks"
    write_cell(stacks, CellSpec(name="apd", region=REGION, account_role_arn=ROLE))
    # A new cell named like the cell prefix (stack `cell-cell`), hand-written as `cell add` would refuse it.
    principal = platform_outputs(sandbox)["runtime_principal_arn"]
    write_cell(stacks, CellSpec(name="cell", region=REGION, account_role_arn=ROLE, runtime_principal_arn=principal))
    try:
        rc, summary, _ = apply(cli, "--preview")
    finally:
        for name in ("apd", "cell"):
            stack_file(stacks, naming.cell_stack(name)).unlink()
    refused = cells(summary)["apd"]
    assert rc == 1 and refused["action"] == "invalid" and not refused["ok"]
    assert "names no runtime_principal_arn" in refused["error"] and "cell add apd --write-only" in refused["error"]
    reserved = cells(summary)["cell"]
    assert reserved["action"] == "invalid" and "'cell' is reserved" in reserved["error"], reserved


def test_a_cell_file_moved_to_another_region_is_refused_by_apply_and_placement(cli, sandbox):
    """A cell's region never changes: an edited file is refused before any engine call, by `apply`
    (the cell invalid) and by a provision placed there and its preview, full or not (exit 3, no record,
    no slot)."""
    path = naming_file(cli)
    committed = path.read_text()
    edit_cell(cli, region="us-west-2")
    try:
        # `cell list` / `cell show` say where it is deployed, not what the file says, and flag the file.
        for args in (("list",), ("show", CELL)):
            run = cli("cell", *args, "--json")
            assert run.returncode == 0, run  # a listing reports; the commands that act refuse (below)
            body = run.json()
            [mine] = [c for c in body["cells"] if c["name"] == CELL] if "cells" in body else [body]
            assert mine["region"] == "ap-northeast-2", mine
            assert "names region us-west-2 (deployed in ap-northeast-2)" in mine["relocated"], mine
            people = cli("cell", *args)
            assert people.returncode == 0 and "ap-northeast-2" in people.stdout, people
            assert "names region us-west-2 (deployed in ap-northeast-2)" in people.stderr, people
        assert all(c["relocated"] is None for c in cli("cell", "list", "--json").json()["cells"] if c["name"] != CELL)
        rc, summary, _ = apply(cli, "--preview")
        refused = cells(summary)[CELL]
        assert rc == 1 and refused["action"] == "invalid" and not refused["ok"]
        assert ("names region us-west-2 (deployed in ap-northeast-2): a cell's region and account never change"
                in refused["error"])
        before = counter(sandbox).get("pooled")
        run = cli("provision", "apc-moved", "--region", "us-west-2", "--cell", CELL, "--json")
        assert run.returncode == 3 and "deployed in ap-northeast-2" in run.json()["error"]["message"], run
        assert cli("status", "apc-moved").returncode == 6 and counter(sandbox).get("pooled") == before
        assert not (cli.root / "stacks" / "Pulumi.apc-moved.yaml").exists()
        # Full by its file's cap too: a preview refuses it as the run does (exit 3, not 11), placed or forced.
        edit_cell(cli, region="us-west-2", max_pooled_tenants=max(1, int(before["N"])))
        for forced in (["--cell", CELL], []):
            args = ("provision", "apc-moved", "--region", "us-west-2", *forced, "--json")
            for run in (cli(*args, "--preview"), cli(*args)):
                assert run.returncode == 3 and "deployed in ap-northeast-2" in run.json()["error"]["message"], run
    finally:
        path.write_text(committed)
    rc, summary, err = apply(cli, "--preview")
    assert cells(summary)[CELL]["action"] == "unchanged", err
    # A region no partition has, and a name the rules refuse: exit 3, no stack file written.
    typo = cli("cell", "add", "apz", "--region", "zz-nowhere-1", "--json")
    assert typo.returncode == 3 and typo.json()["error"]["rule"] == "region", typo
    bad = cli("cell", "add", "Apz", "--region", REGION, "--json")
    assert bad.returncode == 3 and bad.json()["error"]["rule"] == "cell-name", bad
    assert not list((cli.root / "stacks").glob("Pulumi.cell-?pz.yaml"))


def test_a_cell_changed_behind_tenantctls_back_is_reported_by_refresh_and_repaired_by_apply_refresh(cli, sandbox):
    """Its flow logs kept a day, its database's TLS-only parameter off, SSH let in from anywhere by its
    network's default ACL, a retention class of its bucket shortened: each named, each repaired."""
    logs = aws(sandbox, "logs", region=REGION, account=ACCOUNT)
    group = f"/tenantctl/{naming.cell_stack(CELL)}/vpc-flow-logs"

    def retention() -> int:
        return next(g for g in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
                    if g["logGroupName"] == group)["retentionInDays"]

    rds = aws(sandbox, "rds", region=REGION, account=ACCOUNT)
    params = f"tenantctl-{naming.cell_stack(CELL)}"

    def force_ssl() -> str:
        return next(p["ParameterValue"] for p in rds.describe_db_parameters(DBParameterGroupName=params)["Parameters"]
                    if p["ParameterName"] == "rds.force_ssl")

    ec2 = aws(sandbox, "ec2", region=REGION, account=ACCOUNT)
    vpc_id = json.loads(cell_state(sandbox).read_text())["outputs"]["vpc_id"]

    def default_acl() -> tuple[str, set[tuple[int, bool]]]:
        [acl] = ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                   {"Name": "default", "Values": ["true"]}])["NetworkAcls"]
        return acl["NetworkAclId"], {(e["RuleNumber"], e["Egress"]) for e in acl["Entries"]}

    [db] = rds.describe_db_instances(DBInstanceIdentifier=params)["DBInstances"]
    db_group = db["VpcSecurityGroups"][0]["VpcSecurityGroupId"]

    def db_ingress() -> set[str]:
        return {r["SecurityGroupRuleId"] for r in ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [db_group]}])["SecurityGroupRules"] if not r["IsEgress"]}

    declared_ingress = db_ingress()
    [opened] = ec2.authorize_security_group_ingress(GroupId=db_group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )["SecurityGroupRules"]
    acl_id, declared_entries = default_acl()
    ec2.create_network_acl_entry(NetworkAclId=acl_id, RuleNumber=90, Protocol="6", RuleAction="allow", Egress=False,
                                 CidrBlock="0.0.0.0/0", PortRange={"From": 22, "To": 22})
    declared = retention()
    logs.put_retention_policy(logGroupName=group, retentionInDays=1)
    s3, bucket = aws(sandbox, "s3", region=REGION, account=ACCOUNT), json.loads(cell_state(sandbox).read_text())[
        "outputs"]["bucket"]
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    next(r for r in rules if r["ID"] == "tenantctl-class-tmp-7d")["Expiration"]["Days"] = 2
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules[::-1]})
    rds.modify_db_parameter_group(DBParameterGroupName=params, Parameters=[
        {"ParameterName": "rds.force_ssl", "ParameterValue": "0", "ApplyMethod": "pending-reboot"}])

    run = cli("refresh", "--cell", CELL, "--json")
    assert run.returncode == 12, run
    (drift,) = run.json()["cells"]
    ssh = {"ruleNo": 90, "protocol": "6", "action": "allow", "cidrBlock": "0.0.0.0/0", "fromPort": 22, "toPort": 22}
    assert drift["cell"] == CELL and sorted((r["name"], r["diffs"]) for r in drift["resources"]) == [
        ("shared-default-nacl", [{"path": "ingress[3]", "old": None, "new": ssh}]),
        ("shared-flow-logs", [{"path": "retentionInDays", "old": declared, "new": 1}]),
        ("shared-lifecycle", [{"path": "rules[2].expiration.days", "old": 7, "new": 2}]),  # S3's order is not drift
        ("shared-params", [{"path": "parameters[0].value", "old": "1", "new": "0"}])]
    # The shared database's group manages its rules one resource each: no resource drifted, the rule is an orphan.
    assert [(o["kind"], o["name"]) for o in drift["orphans"]] == [
        ("ec2:security-group-rule", f"{opened['SecurityGroupRuleId']} (tcp 5432 from 0.0.0.0/0 into {db_group})")]
    rc, summary, _ = apply(cli, "--preview", "--refresh")
    assert rc == 12 and cells(summary)[CELL]["action"] == "repair" and retention() == 1
    rc, summary, err = apply(cli, "--refresh", "--yes")
    repaired = cells(summary)[CELL]
    assert rc == 0 and repaired["action"] == "repair" and repaired["reason"] == "drift: 4 changed, 1 orphan(s)", err
    assert [o["removed"] for o in repaired["orphans"]] == ["revoked"] and db_ingress() == declared_ingress
    assert retention() == declared and force_ssl() == "1" and default_acl() == (acl_id, declared_entries)
    assert {r["ID"]: r.get("Expiration") for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}[
        "tenantctl-class-tmp-7d"] == {"Days": 7}
    run = cli("refresh", "--cell", CELL, "--json")
    assert run.returncode == 0 and not run.json()["cells"][0]["resources"], run


def test_a_cell_repair_that_fails_part_way_stays_pending_until_one_succeeds(cli, sandbox, tmp_path):
    """The up's refresh records the live (drifted) values before its writes; one that fails after that
    must not leave `refresh` comparing live with those and calling the cell clean (as a tenant's)."""
    rds = aws(sandbox, "rds", region=REGION, account=ACCOUNT)
    params = f"tenantctl-{naming.cell_stack(CELL)}"
    rds.modify_db_parameter_group(DBParameterGroupName=params, Parameters=[
        {"ParameterName": "rds.force_ssl", "ParameterValue": "0", "ApplyMethod": "pending-reboot"}])
    # The parameter group's write throttled with no retry left: the repair fails part-way.
    throttle = tmp_path / "throttle.json"
    throttle.write_text(json.dumps({"rds.ModifyDBParameterGroup": {"tokens": 0, "stamp": time.time(), "allowed": 0,
                                                                   "throttled": 0}}))
    rc, summary, err = apply(cli, "--refresh", "--yes", env={
        FAULT_THROTTLE_ENV: "rds.ModifyDBParameterGroup=0.0001", FAULT_THROTTLE_FILE_ENV: str(throttle),
        "TENANTCTL_AWS_THROTTLE_ATTEMPTS": "1"})
    assert rc != 0 and not cells(summary)[CELL]["ok"], (summary, err)

    run = cli("refresh", "--cell", CELL, "--json")
    assert run.returncode == 12, run
    (drift,) = run.json()["cells"]
    assert drift["pending"].startswith("last up failed at ") and "Throttling" in drift["pending"], drift
    assert "tenantctl apply --refresh" in drift["pending"]
    human = cli("refresh", "--cell", CELL)
    assert human.returncode == 12 and f"cell {CELL}: repair pending" in human.stdout, human
    assert cli("cell", "show", CELL, "--json").json()["repair_pending"] == drift["pending"]
    rc, summary, _ = apply(cli, "--preview")  # planned as a repair, without --refresh too
    assert cells(summary)[CELL]["action"] == "repair", summary

    rc, summary, err = apply(cli, "--yes")
    assert rc == 0 and cells(summary)[CELL]["action"] == "repair", (summary, err)
    run = cli("refresh", "--cell", CELL, "--json")
    assert run.returncode == 0 and run.json()["cells"][0]["pending"] is None, run
    assert cli("cell", "show", CELL, "--json").json()["repair_pending"] is None
