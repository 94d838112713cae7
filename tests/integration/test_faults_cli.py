"""Kill-at-every-step: `tenantctl provision ID` and `tenantctl deprovision ID
--yes`, run as real processes on the session's sandbox (through the faults
launcher, tests/faults/launch.py), are killed (``os._exit``, no cleanup) at
every step in turn — each registry step and each resource write — and then:

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
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from fault_tools import POOLED, Cli, alias_target, aws, engine_state, inventory, live_tenant_keys, run_id
from faults import FAULT_AFTER_ENV, FAULT_EXIT_CODE, FAULT_POINT_ENV

from tenantctl.naming import OwnerNames

pytestmark = pytest.mark.integration

RUN = run_id()
POOLED_WRITES = 13  # resource writes of a pooled tenant's up (and of its destroy): one per resource

# (TENANTCTL_FAULT_AFTER, TENANTCTL_FAULT_POINT): the registry steps by name,
# every resource write between the sandbox call and the state record (the
# resource exists, the state holds only the intent), and two right after it.
PROVISION_STEPS = ([("provision:reserved", "recorded")]
                   + [(str(n), "unrecorded") for n in range(1, POOLED_WRITES + 1)]
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


def test_workspace_add_and_remove_killed_midway_converge(cli: Cli, sandbox):
    tenant_id = f"ft-w{RUN}"
    assert cli("provision", tenant_id).returncode == 0
    # Killed after a write the engine's state does not hold yet: the re-run clears the dead lock, finishes.
    killed = kill_at(cli, ("5", "unrecorded"), "workspace", "add", tenant_id, "legal")
    assert_lock_reported(cli, tenant_id, "provision", killed.pid, status="active", table=False)
    again = rerun_clearing_the_dead_lock(cli, tenant_id, killed.pid, "workspace", "add", tenant_id, "legal", "--json",
                                         by_unlock=False)
    assert again.json()["changed"] is True
    assert_workspace(sandbox, tenant_id, "legal", present=True)
    killed = kill_at(cli, ("3", "unrecorded"), "workspace", "remove", tenant_id, "legal", "--yes", "--no-final-backup")
    rerun_clearing_the_dead_lock(cli, tenant_id, killed.pid, "workspace", "remove", tenant_id, "legal", "--yes",
                                 "--no-final-backup", by_unlock=False)
    assert_workspace(sandbox, tenant_id, "legal", present=False)
    assert cli("deprovision", tenant_id, "--yes", "--no-final-backup").returncode == 0
    assert_gone(cli, sandbox, tenant_id)


@pytest.mark.parametrize("operation", ["provision", "deprovision"])
def test_the_steps_cover_every_resource_write(cli: Cli, sandbox, operation: str):
    """One write past the last: the run is not killed, so the loops above hit every write."""
    tenant_id = f"ft-{operation[:3]}{RUN}-all"
    if operation == "deprovision":
        assert cli("provision", tenant_id).returncode == 0
    args = (operation, tenant_id) + (("--yes", "--no-final-backup") if operation == "deprovision" else ())
    last = cli(*args, env={FAULT_AFTER_ENV: str(POOLED_WRITES), FAULT_POINT_ENV: "unrecorded"})
    assert last.returncode == FAULT_EXIT_CODE, last
    assert cli("unlock", tenant_id, "--force").returncode == 0
    past = cli(*args, env={FAULT_AFTER_ENV: str(POOLED_WRITES + 1), FAULT_POINT_ENV: "unrecorded"})
    assert past.returncode == 0, past
    if operation == "provision":
        assert_converged(cli, sandbox, tenant_id)
        assert cli("deprovision", tenant_id, "--yes", "--no-final-backup").returncode == 0
    assert_gone(cli, sandbox, tenant_id)


def test_a_deprovisioned_id_is_a_tombstone_never_reused(cli: Cli, sandbox):
    tenant_id = f"ft-t{RUN}-tomb"
    assert cli("provision", tenant_id).returncode == 0
    assert cli("deprovision", tenant_id, "--yes", "--no-final-backup").returncode == 0
    before = cli("status", tenant_id, "--json").json()

    reused = cli("provision", tenant_id)
    assert reused.returncode == 5, reused
    assert "tombstoned" in reused.stderr and "never reused" in reused.stderr
    again = cli("deprovision", tenant_id, "--yes")
    assert again.returncode == 5 and "already deprovisioned" in again.stderr
    # Nothing was made or changed by the refused runs.
    assert inventory(sandbox, tenant_id) == {}
    assert not cli.stack_file(tenant_id).exists() and not engine_state(sandbox, tenant_id).exists()
    assert cli("status", tenant_id, "--json").json() == before
