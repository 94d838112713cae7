"""Shared-resource walls and an unavailable registry (issue 7), on the session's
sandbox through the real `tenantctl` CLI:

- registry unreachable (endpoint down) or its table missing: provision exits 7
  with a clear message and creates nothing; deprovision removes nothing;
- lifecycle rules: provisioning writes none (a cell's bucket holds one rule per
  retention class), so a full configuration is no wall and parallel provisions
  lose nothing; the legacy per-tenant writer, which still removes the rules of
  tenants applied before cells, serialises its read-modify-writes;
- account quotas a dedicated tenant needs (VPCs, RDS instances, IAM roles):
  refused at preflight (exit 11) before anything exists.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fault_tools import (
    POOLED,
    Cli,
    aws,
    cell_count,
    engine_state,
    inventory,
    lifecycle_rules,
    platform_outputs,
    registry_record,
    run_id,
    tenant_rule_ids,
)

from tenantctl import naming

pytestmark = pytest.mark.integration

RUN = run_id()
QUOTA_EXIT = 11


@pytest.fixture(scope="module")
def cli(sandbox, workspace, tmp_path_factory) -> Cli:
    workspace.ensure_platform()
    return Cli.create(sandbox, tmp_path_factory.mktemp("walls-cli"))


@pytest.fixture(scope="module")
def bucket(sandbox, cli) -> str:
    return platform_outputs(sandbox)["bucket"]


def assert_nothing_created(cli: Cli, sandbox, tenant_id: str) -> None:
    assert inventory(sandbox, tenant_id) == {}
    assert registry_record(sandbox, tenant_id) is None
    assert not cli.stack_file(tenant_id).exists() and not engine_state(sandbox, tenant_id).exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- registry unavailable -------------------------------------------------------------

def test_registry_endpoint_down_provision_exits_7_and_creates_nothing(cli: Cli, sandbox):
    tenant_id = f"ft-r{RUN}-down"
    down = {"AWS_ENDPOINT_URL_DYNAMODB": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    started = time.monotonic()
    run = cli("provision", tenant_id, env=down)
    assert run.returncode == 7, run
    assert time.monotonic() - started < 60  # bounded retries, not a hang
    assert f"cannot reserve tenant '{tenant_id}' in the registry, nothing was created" in run.stderr
    assert "Traceback" not in run.stderr
    assert_nothing_created(cli, sandbox, tenant_id)


def test_registry_table_missing_provision_exits_7_and_creates_nothing(cli: Cli, sandbox):
    from moto.server import ThreadedMotoServer

    tenant_id = f"ft-r{RUN}-notable"
    port = free_port()
    empty = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)  # a DynamoDB without the table
    empty.start()
    try:
        run = cli("provision", tenant_id, env={"AWS_ENDPOINT_URL_DYNAMODB": f"http://127.0.0.1:{port}"})
    finally:
        empty.stop()
    assert run.returncode == 7, run
    assert "nothing was created" in run.stderr and "ResourceNotFoundException" in run.stderr
    assert_nothing_created(cli, sandbox, tenant_id)


def test_registry_down_deprovision_exits_7_and_removes_nothing(cli: Cli, sandbox):
    tenant_id = f"ft-r{RUN}-keep"
    assert cli("provision", tenant_id).returncode == 0
    run = cli("deprovision", tenant_id, "--yes", "--no-final-backup",
              env={"AWS_ENDPOINT_URL_DYNAMODB": f"http://127.0.0.1:{free_port()}"})
    assert run.returncode == 7, run
    assert "registry" in run.stderr
    assert inventory(sandbox, tenant_id) == POOLED
    assert cli("status", tenant_id, "--json").json()["status"] == "active"
    assert cli("deprovision", tenant_id, "--yes", "--no-final-backup").returncode == 0
    assert inventory(sandbox, tenant_id) == {}


# -- lifecycle rules: the legacy per-tenant writer, and no wall any more ----------------

WRITER = """
import sys, time
from infra.providers import PROVIDERS
from tenantctl.bucket_lifecycle import tenant_rules
from tenantctl import naming
action, bucket, tenant_id, start = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
prefix = naming.s3_prefix(tenant_id)
props = {"kind": "prefix-lifecycle", "tenant_id": tenant_id, "region": "us-east-1", "bucket": bucket,
         "prefix": prefix, "rules": tenant_rules(tenant_id, prefix, 7.0, 1.0, 30.0, 365.0)}
time.sleep(max(0.0, start - time.time()))  # every writer starts at the same instant
provider = PROVIDERS["prefix-lifecycle"]()
provider.create(props) if action == "create" else provider.delete("", props)
"""


def concurrent_writers(sandbox, action: str, bucket: str, tenants: list[str]) -> None:
    start = time.time() + 4  # after every interpreter has imported pulumi
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, action, bucket, t, str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for t in tenants]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]


def test_concurrent_writers_of_the_shared_lifecycle_configuration_lose_nothing(sandbox, bucket: str):
    tenants = [f"ft-lc{RUN}-{i:02d}" for i in range(12)]
    before = {r["ID"] for r in lifecycle_rules(sandbox, bucket)}
    concurrent_writers(sandbox, "create", bucket, tenants)
    after = {r["ID"] for r in lifecycle_rules(sandbox, bucket)}
    missing = {t: 3 - len(tenant_rule_ids(sandbox, bucket, t)) for t in tenants}
    assert {t: n for t, n in missing.items() if n} == {}, "rules lost by an interleaved read-modify-write"
    assert before <= after  # nobody else's rule was dropped either

    concurrent_writers(sandbox, "delete", bucket, tenants)
    assert {r["ID"] for r in lifecycle_rules(sandbox, bucket)} == before


def db_ingress_rules(sandbox) -> int:
    group = platform_outputs(sandbox)["db_security_group_id"]
    rules = aws(sandbox, "ec2").describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group]}])["SecurityGroupRules"]
    return sum(not r["IsEgress"] for r in rules)


def test_concurrent_provisions_write_no_lifecycle_rule_and_count_their_slots(cli: Cli, sandbox, bucket: str):
    """A tenant's retention is its cell's rules (one per class, by object tag):
    provisioning never reads or writes the bucket's configuration, so parallel
    provisions have nothing to lose there; their cell slots are counted exactly.
    Nor do they add rules to the database's security group (60 per group would
    stop a cell at 60 pooled tenants): the cell's pooled-clients group is admitted once."""
    tenants = [f"ft-cp{RUN}-{i}" for i in range(6)]
    before, placed, rules = lifecycle_rules(sandbox, bucket), cell_count(sandbox), db_ingress_rules(sandbox)
    with ThreadPoolExecutor(len(tenants)) as pool:
        runs = list(pool.map(lambda t: cli("provision", t), tenants))
    assert [r for r in runs if r.returncode != 0] == []
    assert lifecycle_rules(sandbox, bucket) == before
    assert cell_count(sandbox) == placed + len(tenants)
    assert db_ingress_rules(sandbox) == rules
    with ThreadPoolExecutor(len(tenants)) as pool:
        gone = list(pool.map(lambda t: cli("deprovision", t, "--yes", "--no-final-backup"), tenants))
    assert [r for r in gone if r.returncode != 0] == []
    assert lifecycle_rules(sandbox, bucket) == before and cell_count(sandbox) == placed


@pytest.fixture
def preload(sandbox, bucket: str):
    """preload(n): fill the shared bucket's configuration up to n rules with
    rules of no tenant (the cell's own rules restored afterwards)."""
    s3 = aws(sandbox, "s3")
    original = lifecycle_rules(sandbox, bucket)

    def fill(total: int) -> None:
        fillers = [{"ID": f"filler-{i:04d}", "Status": "Enabled", "Filter": {"Prefix": f"filler/{i:04d}/"},
                    "Expiration": {"Days": 30}} for i in range(total - len(original))]
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": original + fillers})
        assert len(lifecycle_rules(sandbox, bucket)) == total

    yield fill
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": original})


def test_a_full_lifecycle_configuration_is_no_wall(cli: Cli, sandbox, bucket: str, preload):
    """At S3's 1,000 rules (the old wall: 333 tenants of 3 rules each) a tenant is
    still accepted and the configuration is left exactly as it was."""
    preload(1000)
    full = lifecycle_rules(sandbox, bucket)
    tenant_id = f"ft-lim{RUN}-yes"
    made = cli("provision", tenant_id)
    assert made.returncode == 0, made
    assert lifecycle_rules(sandbox, bucket) == full
    assert cli("deprovision", tenant_id, "--yes", "--no-final-backup").returncode == 0
    assert lifecycle_rules(sandbox, bucket) == full


def test_the_serialized_writer_refuses_rule_1001_itself(sandbox, bucket: str, preload):
    """The backstop behind the preflight (two provisions racing for the last
    slots): the provider re-counts under its lock and writes nothing."""
    from infra.providers import PROVIDERS
    from infra.providers.prefix_lifecycle import LifecycleLimitExceeded
    from tenantctl.bucket_lifecycle import tenant_rules

    preload(998)
    tenant_id = f"ft-lim{RUN}-race"
    prefix = naming.s3_prefix(tenant_id)
    props = {"kind": "prefix-lifecycle", "tenant_id": tenant_id, "region": sandbox.region, "bucket": bucket,
             "prefix": prefix, "rules": tenant_rules(tenant_id, prefix, 7, 1, 30, 365)}
    with pytest.raises(LifecycleLimitExceeded, match="would hold 1001 lifecycle rules"):
        PROVIDERS["prefix-lifecycle"]().create(props)
    assert len(lifecycle_rules(sandbox, bucket)) == 998


# -- account quotas ------------------------------------------------------------------

def vpc_count(sandbox) -> int:
    return len(aws(sandbox, "ec2").describe_vpcs()["Vpcs"])


def assert_dedicated_nothing_created(cli: Cli, sandbox, tenant_id: str) -> None:
    assert_nothing_created(cli, sandbox, tenant_id)
    assert not aws(sandbox, "ec2").describe_vpcs(Filters=[{"Name": "tag:tenant", "Values": [tenant_id]}])["Vpcs"]
    assert not aws(sandbox, "rds").describe_db_instances(
        Filters=[{"Name": "db-instance-id", "Values": [naming.rds_identifier(tenant_id)]}])["DBInstances"]


def test_vpc_quota_refuses_a_dedicated_tenant_before_anything_exists(cli: Cli, sandbox):
    ec2 = aws(sandbox, "ec2")
    limit = int(aws(sandbox, "service-quotas").get_service_quota(ServiceCode="vpc", QuotaCode="L-F678F1CE")
                ["Quota"]["Value"])
    fillers = [ec2.create_vpc(CidrBlock=f"10.{200 + i}.0.0/16")["Vpc"]["VpcId"]
               for i in range(max(0, limit - vpc_count(sandbox)))]
    tenant_id = f"ft-q{RUN}-vpc"
    try:
        used = vpc_count(sandbox)
        refused = cli("provision", tenant_id, "--tier", "dedicated")
        assert refused.returncode == QUOTA_EXIT, refused
        flat = " ".join(refused.stderr.split())
        assert f"VPCs in {sandbox.region}: {used} of {limit} in use, the tenant needs 1 more" in flat
        assert "Service Quotas vpc/L-F678F1CE" in flat and "refused before anything was created" in flat
        # The region's only cell is full: placement names it and how to add one.
        assert "cell default: VPCs" in flat and f"`tenantctl cell add NAME --region {sandbox.region}`" in flat
        assert_dedicated_nothing_created(cli, sandbox, tenant_id)
        if not fillers:
            pytest.skip(f"the sandbox already holds {used} VPCs (limit {limit}): the refusal is checked, "
                        "the accepted run is not")

        # With one VPC free the same tenant goes through, and a re-run of it
        # at the limit needs nothing more.
        ec2.delete_vpc(VpcId=fillers.pop())
        made = cli("provision", tenant_id, "--tier", "dedicated")
        assert made.returncode == 0, made
        assert vpc_count(sandbox) == limit
        again = cli("provision", tenant_id)
        assert again.returncode == 0, again
        gone = cli("deprovision", tenant_id, "--yes", "--no-final-backup")
        assert gone.returncode == 0, gone
    finally:
        for vpc in fillers:
            ec2.delete_vpc(VpcId=vpc)


def test_rds_instance_quota_refuses_a_dedicated_tenant_before_anything_exists(cli: Cli, sandbox):
    used = len(aws(sandbox, "rds").describe_db_instances()["DBInstances"])
    tenant_id = f"ft-q{RUN}-rds"
    refused = cli("provision", tenant_id, "--tier", "dedicated", env={"TENANTCTL_QUOTA_DB_INSTANCES": str(used)})
    assert refused.returncode == QUOTA_EXIT, refused
    flat = " ".join(refused.stderr.split())
    assert f"RDS DB instances in {sandbox.region}: {used} of {used} in use, the tenant needs 1 more" in flat
    # moto has no rds:DescribeAccountAttributes nor an RDS Service Quota: the
    # account's limit is AWS's default (40), said so, then lowered by the override.
    assert "TENANTCTL_QUOTA_DB_INSTANCES" in flat and "AWS's default" in flat
    assert_dedicated_nothing_created(cli, sandbox, tenant_id)


def test_iam_role_quota_refuses_before_anything_exists(cli: Cli, sandbox):
    summary = aws(sandbox, "iam").get_account_summary()["SummaryMap"]
    assert summary["RolesQuota"] == 1000
    tenant_id = f"ft-q{RUN}-iam"
    roles = str(summary["Roles"])
    refused = cli("provision", tenant_id, "--tier", "dedicated", env={"TENANTCTL_QUOTA_IAM_ROLES": roles})
    assert refused.returncode == QUOTA_EXIT, refused
    flat = " ".join(refused.stderr.split())
    # the tenant role and its rotation function's execution role
    assert f"IAM roles in the account: {roles} of {roles} in use, the tenant needs 2 more" in flat
    assert "iam:GetAccountSummary RolesQuota" in flat
    assert_dedicated_nothing_created(cli, sandbox, tenant_id)


def test_cell_show_lists_every_account_quota_and_names_a_wall_only_when_one_is_met(cli: Cli, sandbox):
    roles = aws(sandbox, "iam").get_account_summary()["SummaryMap"]["Roles"]
    shown = cli("cell", "show", "default", "--json")
    assert shown.returncode == 0, shown
    assert [q for q in shown.json()["quotas"] if q.startswith("IAM roles in the account")]
    assert shown.json()["walls"] == []  # far from any quota: no wall, as `cell list` says
    assert cli("cell", "list", "--json").json()["cells"][0]["walls"] == []
    walled = cli("cell", "show", "default", "--json", env={"TENANTCTL_QUOTA_IAM_ROLES": str(roles)})
    assert [w for w in walled.json()["walls"] if w.startswith(f"IAM roles in the account: {roles} of {roles}")]
    text = cli("cell", "show", "default", env={"TENANTCTL_QUOTA_IAM_ROLES": str(roles)}).stdout
    assert [line for line in text.splitlines() if line.startswith("account wall") and "IAM roles" in line]
