"""Kill-at-every-step: `tenantctl provision ID` and `tenantctl deprovision ID
--yes`, run as real processes on the session's sandbox (through the faults
launcher, tests/faults/launch.py), are killed (``os._exit``, no cleanup) at
each step in turn — each registry step and resource writes (the destroy's
every one, the up's every third: the engine test kills it at every one) — and then:

1. the lock the dead run left is reported by `status` with owner, host, pid and time;
2. its holder provably died on this host (the pid is gone), so `tenantctl unlock ID`
   (no --force) or the plain re-run itself says so and clears it;
3. (a lock of another host's run refuses every run with exit 5 until `unlock --force`:
   tests/integration/test_operator_cli.py)
4. the re-run converges: exactly one of everything (one key with the alias,
   two queues, one role, one secret, one schema...), and after deprovision
   nothing of the tenant is left on the sandbox;
5. the deprovisioned id is a tombstone: provisioning it again is refused (exit 5)
   and creates nothing.

Pooled tier only (a few seconds per run); one tenant id per step, since ids are
never reused."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from fault_tools import (
    POOLED,
    Cli,
    alias_target,
    aws,
    engine_state,
    inventory,
    live_tenant_keys,
    registry_record,
    run_id,
    slot_drift,
)
from faults import FAULT_AFTER_ENV, FAULT_EXIT_CODE, FAULT_POINT_ENV, FAULT_SIGINT_ENV, LAUNCHER

from tenantctl.naming import OwnerNames

pytestmark = pytest.mark.integration

RUN = run_id()
POOLED_WRITES = 13  # resource writes of a pooled tenant's up (and of its destroy): one per resource

# (TENANTCTL_FAULT_AFTER, TENANTCTL_FAULT_POINT): the registry steps by name,
# resource writes between the sandbox call and the state record (the resource
# exists, the state holds only the intent), and two right after it. The up's
# writes: every third here, around the CLI's lock and registry steps; every one
# in tests/integration/test_local_engine.py, where the engine's own convergence
# is what a kill between two writes tests. The destroy's: every one here.
PROVISION_STEPS = ([("provision:reserved", "recorded")]
                   + [(str(n), "unrecorded") for n in range(1, POOLED_WRITES + 1, 3)]
                   + [("1", "recorded"), (str(POOLED_WRITES), "recorded"), ("provision:applied", "recorded")])
DEPROVISION_STEPS = ([("deprovision:marked", "recorded")]
                     + [(str(n), "unrecorded") for n in range(1, POOLED_WRITES + 1)]
                     + [(str(POOLED_WRITES), "recorded"), ("deprovision:destroyed", "recorded")])


def step_id(step: tuple[str, str]) -> str:
    return step[0] if not step[0].isdigit() else f"write{step[0]}-{step[1]}"


@pytest.fixture(scope="module")
def cli(sandbox, workspace, tmp_path_factory) -> Cli:
    workspace.ensure_platform()  # the platform exists first: its writes must not count as the tenant's
    return Cli.create(sandbox, tmp_path_factory.mktemp("faults-cli"))


def kill_at(cli: Cli, step: tuple[str, str], *args: str):
    run = cli(*args, env={FAULT_AFTER_ENV: step[0], FAULT_POINT_ENV: step[1]})
    assert run.returncode == FAULT_EXIT_CODE, f"the run was not killed at {step}: {run}"
    assert "injected fault" in run.stderr
    return run


def assert_lock_reported(cli: Cli, tenant_id: str, operation: str, pid: int, status: str, table: bool) -> None:
    shown = cli("status", tenant_id, "--json")
    assert shown.returncode == 0, shown
    record = shown.json()
    assert record["status"] == status
    lock = record["lock"]
    assert lock is not None, record
    assert (lock["operation"], lock["pid"], lock["host"]) == (operation, pid, socket.gethostname())
    assert lock["owner"]
    taken = datetime.fromisoformat(lock["acquired_at"].replace("Z", "+00:00"))
    assert timedelta(0) <= datetime.now(UTC) - taken < timedelta(minutes=10)
    if not table:
        return
    shown = cli("status", tenant_id)  # people see the same: operation, owner@host, pid, time
    assert shown.returncode == 0, shown
    flat = " ".join(shown.stdout.split())
    assert f"pid {pid}" in flat and f"since {taken:%Y-%m-%d %H:%M:%S}Z" in flat and lock["owner"] in flat


def rerun_clearing_the_dead_lock(cli: Cli, tenant_id: str, pid: int, *rerun: str, by_unlock: bool):
    """The dead run's pid is gone from this host: `unlock` (``by_unlock``, no
    --force needed) or the re-run itself reports and clears the lock; the re-run's result."""
    if by_unlock:
        unlocked = cli("unlock", tenant_id, "--json")
        assert unlocked.returncode == 0, unlocked
        assert unlocked.json()["lock"] is None and f"pid {pid} is gone" in unlocked.json()["last_error"]
    again = cli(*rerun)
    assert again.returncode == 0, again
    if not by_unlock:
        assert f"pid {pid} is gone" in again.stderr and "lock cleared" in again.stderr, again
    return again


def assert_converged(cli: Cli, sandbox, tenant_id: str) -> None:
    assert inventory(sandbox, tenant_id) == POOLED
    keys = live_tenant_keys(sandbox, tenant_id)
    assert len(keys) == 1 and alias_target(sandbox, tenant_id) == keys[0]
    record = cli("status", tenant_id, "--json").json()
    assert record["status"] == "active" and record["lock"] is None and record["last_error"] is None
    assert record["resources"]["kms_key_arn"] == keys[0]


def assert_gone(cli: Cli, sandbox, tenant_id: str) -> None:
    assert inventory(sandbox, tenant_id) == {}
    assert alias_target(sandbox, tenant_id) is None
    assert not cli.stack_file(tenant_id).exists() and not engine_state(sandbox, tenant_id).exists()
    record = cli("status", tenant_id, "--json").json()
    assert record["status"] == "deprovisioned" and record["lock"] is None


@pytest.mark.parametrize("step", PROVISION_STEPS, ids=[step_id(s) for s in PROVISION_STEPS])
def test_provision_killed_at_every_step_converges(cli: Cli, sandbox, step: tuple[str, str]):
    tenant_id = f"ft-p{RUN}-{step_id(step).replace(':', '-').replace('provision-', '')}"
    named = not step[0].isdigit()  # the slower checks once per registry step, not at every write
    killed = kill_at(cli, step, "provision", tenant_id)
    assert_lock_reported(cli, tenant_id, "provision", killed.pid, status="provisioning", table=named)
    rerun_clearing_the_dead_lock(cli, tenant_id, killed.pid, "provision", tenant_id, "--json", by_unlock=named)
    assert_converged(cli, sandbox, tenant_id)
    if named:  # converged for good: a further re-run changes nothing
        assert cli("provision", tenant_id, "--json").json()["changes"] == {"same": POOLED_WRITES}

    gone = cli("deprovision", tenant_id, "--yes", "--no-final-backup")
    assert gone.returncode == 0, gone
    assert_gone(cli, sandbox, tenant_id)


@pytest.mark.parametrize("registration", [1, 5])
def test_a_provision_interrupted_while_its_program_runs_prints_only_its_own_error(cli: Cli, sandbox, registration):
    """Ctrl-C while the Pulumi program's tasks are pending (SIGINT at its 5th registration): exit 130
    and `error: interrupted`, without asyncio's noise about the tasks the interrupt left behind; at its
    first, which starts the first registration thread, the process exits too (it waited forever)."""
    tenant_id = f"ft-p{RUN}-sigint{registration}"
    run = cli("provision", tenant_id, env={FAULT_SIGINT_ENV: str(registration)}, timeout=60)
    assert run.returncode == 130 and "error: interrupted" in run.stderr, run
    for noise in ("Task was destroyed", "was never awaited", "Exception ignored"):
        assert noise not in run.stderr, run.stderr
    record = registry_record(sandbox, tenant_id)
    assert record["lock"] is None and record["last_error"].startswith("interrupted"), record
    gone = cli("deprovision", tenant_id, "--yes", "--no-final-backup")
    assert gone.returncode == 0, gone
    tombstone = registry_record(sandbox, tenant_id)  # the run that succeeded is the last: no stale error
    assert tombstone["status"] == "deprovisioned" and tombstone["last_error"] is None, tombstone


def test_a_move_interrupted_as_it_builds_its_target_prints_only_its_own_error(cli: Cli, sandbox):
    """Ctrl-C at the first registration of a move's target store: exit 130 and `error: interrupted`
    alone; the interrupt crossing a Pulumi run nested in the move's event loop printed asyncio's
    "Leaving task ... does not match the current task None" traceback before it. The lock is
    released and the re-run moves the tenant."""
    tenant_id = f"ft-m{RUN}-sigint"
    assert cli("provision", tenant_id).returncode == 0
    run = cli("move", tenant_id, "--tier", "dedicated", env={FAULT_SIGINT_ENV: "1"}, timeout=60)
    assert run.returncode == 130 and run.stderr.rstrip().endswith("error: interrupted"), run
    for noise in ("Traceback", "Exception in callback", "Task was destroyed", "Exception ignored"):
        assert noise not in run.stderr, run.stderr
    record = registry_record(sandbox, tenant_id)
    assert record["lock"] is None and record["last_error"].startswith("interrupted"), record
    assert cli("move", tenant_id).returncode == 0
    assert cli("move", tenant_id, "--rollback").returncode == 0
    gone = cli("deprovision", tenant_id, "--yes", "--no-final-backup")
    assert gone.returncode == 0, gone


def test_a_provision_killed_around_its_reservation_counts_a_slot_only_with_its_record(cli: Cli, sandbox, workspace):
    """A new tenant's slot is taken in one transaction with its record: killed just before it, neither
    exists; just after it, the record holds the slot; either way the cell's counter agrees with a
    recount of its records as before the run, and the re-run converges. Its deprovision, killed as
    the tombstone is written, has given the slot back with it."""
    tenant_id = f"ft-slot{RUN}"
    drift = slot_drift(workspace)
    kill_at(cli, ("provision:reserving", "recorded"), "provision", tenant_id)
    assert registry_record(sandbox, tenant_id) is None
    assert slot_drift(workspace) == drift
    killed = kill_at(cli, ("provision:reserved", "recorded"), "provision", tenant_id)
    assert registry_record(sandbox, tenant_id)["status"] == "provisioning"
    assert slot_drift(workspace) == drift
    rerun_clearing_the_dead_lock(cli, tenant_id, killed.pid, "provision", tenant_id, by_unlock=False)
    assert_converged(cli, sandbox, tenant_id)
    assert slot_drift(workspace) == drift
    # Killed as its tombstone is written: the slot went back with it (it was released after, apart).
    kill_at(cli, ("deprovision:tombstoned", "recorded"), "deprovision", tenant_id, "--yes", "--no-final-backup")
    assert registry_record(sandbox, tenant_id)["status"] == "deprovisioned"
    assert slot_drift(workspace) == drift


# A provision the operator refuses at its plan (before its up's first change), in a process armed as the
# launcher arms one: the CLI asks only before deletes or replacements, which a new tenant's plan has none of.
DECLINED_PROVISION = """
import sys
from faults import arm
arm()
from tenantctl.errors import NotConfirmed
from tenantctl.models import TenantSpec
from tenantctl.operations.provision import provision
from tenantctl.workspace import Workspace

def decline(changes):
    raise NotConfirmed("plan declined; nothing was changed")

ws = Workspace()
ws.engine.approve = decline
provision(ws, TenantSpec(id=sys.argv[1]))
"""


def test_a_refused_provision_killed_as_it_withdraws_leaves_no_slot_counted(cli: Cli, sandbox, workspace):
    """A new tenant's provision refused before its first change withdraws its record and gives back its
    slot in one transaction: killed right after it, neither is left, the cell's counter agrees with a
    recount (before: the slot was given back in a second write, and the kill left it counted)."""
    tenant_id = f"ft-decl{RUN}"
    drift = slot_drift(workspace)
    armed = {**cli.env, FAULT_AFTER_ENV: "provision:withdrawn", "PYTHONPATH": str(LAUNCHER.parents[1])}
    run = subprocess.run([sys.executable, "-c", DECLINED_PROVISION, tenant_id], cwd=cli.root, text=True, env=armed,
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
    assert run.returncode == FAULT_EXIT_CODE, run.stderr[-3000:]
    assert "injected fault at step provision:withdrawn" in run.stderr
    assert registry_record(sandbox, tenant_id) is None and not cli.stack_file(tenant_id).exists()
    assert slot_drift(workspace) == drift


@pytest.mark.parametrize("step", DEPROVISION_STEPS, ids=[step_id(s) for s in DEPROVISION_STEPS])
def test_deprovision_killed_at_every_step_converges(cli: Cli, sandbox, step: tuple[str, str]):
    tenant_id = f"ft-d{RUN}-{step_id(step).replace(':', '-').replace('deprovision-', '')}"
    made = cli("provision", tenant_id)
    assert made.returncode == 0, made
    assert_converged(cli, sandbox, tenant_id)

    named = not step[0].isdigit()
    killed = kill_at(cli, step, "deprovision", tenant_id, "--yes", "--no-final-backup")
    assert_lock_reported(cli, tenant_id, "deprovision", killed.pid, status="deprovisioning", table=named)
    rerun_clearing_the_dead_lock(cli, tenant_id, killed.pid, "deprovision", tenant_id, "--yes", "--no-final-backup",
                                 by_unlock=named)
    assert_gone(cli, sandbox, tenant_id)


# What one workspace adds to its tenant's tagged inventory: its key, queue + DLQ,
# secret, alarm topic and two alarms (its IAM role, schema and DB role apart).
WORKSPACE = {"kms:key": 1, "sqs": 2, "secretsmanager:secret": 1, "sns": 1, "cloudwatch:alarm": 2}


def assert_workspace(sandbox, tenant_id: str, ws: str, present: bool) -> None:
    """Exactly one of each of the workspace's resources when ``present``, none else (its key pending deletion)."""
    names, kms, iam = OwnerNames(tenant_id, ws), aws(sandbox, "kms"), aws(sandbox, "iam")
    expected = Counter(POOLED) + (Counter(WORKSPACE) if present else Counter())
    assert inventory(sandbox, tenant_id) == dict(sorted(expected.items()))
    try:
        key = kms.describe_key(KeyId=names.kms_alias)["KeyMetadata"]
    except kms.exceptions.NotFoundException:
        key = None
    assert (key is not None) == present
    assert key is None or (key["KeyState"] == "Enabled" and key["Arn"] in live_tenant_keys(sandbox, tenant_id))
    try:
        role = iam.get_role(RoleName=names.iam_role)["Role"]
    except iam.exceptions.NoSuchEntityException:
        role = None
    assert (role is not None) == present


WS_WRITES = 13  # resource writes of adding a workspace (and of removing it): one per resource
# Each registry step of `workspace add`, and the same step of `workspace
# remove`: the lock taken, resource writes before the state records them, the
# last one recorded, every resource applied with the record not yet written. A
# remove is also killed right after its final backup (its add then runs
# whole). The writes are every third one, first and last included: a write's
# crash convergence is the engine's, the same for every resource and proven at
# each write by the provision and deprovision tests above; what is the
# workspace's own is its registry steps and backup, all killed here.
WORKSPACE_STEPS = ([(("provision:reserved", "recorded"),) * 2]
                   + [((str(n), "unrecorded"),) * 2 for n in range(1, WS_WRITES + 1, 3)]
                   + [((str(WS_WRITES), "recorded"),) * 2, (("provision:applied", "recorded"),) * 2]
                   + [(None, ("workspace:backed-up", "recorded"))])


@pytest.fixture(scope="module")
def ws_tenant(cli: Cli) -> str:
    tenant_id = f"ft-w{RUN}"
    made = cli("provision", tenant_id)
    assert made.returncode == 0, made
    return tenant_id


@pytest.mark.parametrize("steps", WORKSPACE_STEPS, ids=[step_id(r) for _, r in WORKSPACE_STEPS])
def test_workspace_add_and_remove_killed_at_every_step_converge(cli: Cli, sandbox, ws_tenant: str, steps):
    """One workspace per step on one tenant: the re-run after each kill clears
    the dead run's lock and leaves exactly the tenant plus the workspace's
    resources (add), or the tenant alone (remove)."""
    add, remove = steps
    ws = f"s{WORKSPACE_STEPS.index(steps)}"
    if add is None:
        assert cli("workspace", "add", ws_tenant, ws).returncode == 0
    else:
        killed = kill_at(cli, add, "workspace", "add", ws_tenant, ws)
        if not add[0].isdigit():  # the slower check once per registry step, not at every write
            assert_lock_reported(cli, ws_tenant, "provision", killed.pid, status="active", table=False)
        again = rerun_clearing_the_dead_lock(cli, ws_tenant, killed.pid, "workspace", "add", ws_tenant, ws,
                                             "--json", by_unlock=False)
        assert again.json()["changed"] is True
    assert_workspace(sandbox, ws_tenant, ws, present=True)
    backup = () if remove[0] == "workspace:backed-up" else ("--no-final-backup",)
    killed = kill_at(cli, remove, "workspace", "remove", ws_tenant, ws, "--yes", *backup)
    if backup:
        rerun_clearing_the_dead_lock(cli, ws_tenant, killed.pid, "workspace", "remove", ws_tenant, ws, "--yes",
                                     *backup, by_unlock=False)
    else:  # killed before the remove took the lock: a plain re-run (which backs it up again)
        assert cli("workspace", "remove", ws_tenant, ws, "--yes").returncode == 0
    assert_workspace(sandbox, ws_tenant, ws, present=False)
    record = registry_record(sandbox, ws_tenant)
    assert record["resources"].get("workspaces", {}) == {} and record["lock"] is None
    assert "workspaces" not in cli.stack_file(ws_tenant).read_text()


def test_a_tenant_whose_workspaces_were_killed_midway_deprovisions_to_nothing(cli: Cli, sandbox, ws_tenant: str):
    assert cli("deprovision", ws_tenant, "--yes", "--no-final-backup").returncode == 0
    assert_gone(cli, sandbox, ws_tenant)


def assert_dedicated_gone(cli: Cli, sandbox, tenant_id: str, snapshot: bool) -> None:
    """Nothing of the tenant left but, when it had a database, that database's final snapshot."""
    assert inventory(sandbox, tenant_id) == ({"rds:snapshot": 1} if snapshot else {})
    assert alias_target(sandbox, tenant_id) is None
    assert not cli.stack_file(tenant_id).exists() and not engine_state(sandbox, tenant_id).exists()
    record = cli("status", tenant_id, "--json").json()
    assert record["status"] == "deprovisioned" and record["lock"] is None


def test_a_dedicated_tenant_whose_provision_died_before_its_database_deprovisions_without_building_it(
        cli: Cli, sandbox):
    """Half its resources made, no database yet: deprovision removes those and
    builds nothing (lifting the protection of a database that does not exist
    must not complete the tenant first, which fails wherever its provision did)."""
    tenant_id = f"ft-hd{RUN}"
    kill_at(cli, ("20", "recorded"), "provision", tenant_id, "--tier", "dedicated")
    gone = cli("deprovision", tenant_id, "--yes", "--no-final-backup")
    assert gone.returncode == 0, gone
    assert "lifting" not in gone.stderr and " create" not in gone.stderr, gone
    assert_dedicated_gone(cli, sandbox, tenant_id, snapshot=False)


def test_a_dedicated_deprovision_killed_as_it_lifted_the_protection_converges(cli: Cli, sandbox):
    """Killed after writing its stack file unprotected, before the instance
    was: the file says so, the live instance does not, and a re-run lifts it.
    Hibernated (no final backup wakes it): the stopped instance is unprotected
    and deleted as it is, never waited on to become available."""
    tenant_id = f"ft-hl{RUN}"
    made = cli("provision", tenant_id, "--tier", "dedicated")
    assert made.returncode == 0, made
    assert cli("hibernate", tenant_id, "--force").returncode == 0
    killed = kill_at(cli, ("deprovision:marked", "recorded"), "deprovision", tenant_id, "--yes", "--no-final-backup")
    path = cli.stack_file(tenant_id)
    assert "deletion_protection: true" in path.read_text()
    path.write_text(path.read_text().replace("deletion_protection: true", "deletion_protection: false"))
    rerun_clearing_the_dead_lock(cli, tenant_id, killed.pid, "deprovision", tenant_id, "--yes", "--no-final-backup",
                                 by_unlock=False)
    assert_dedicated_gone(cli, sandbox, tenant_id, snapshot=True)
