"""The CLI a platform engineer trusts in a terminal and in CI: every test runs
`python -m tenantctl` as a subprocess in a project of its own on the session's
sandbox, with stdout/stderr piped (CI) or on a pseudo-terminal (a person), and
checks exit codes, what was printed, files, and the registry itself."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from fault_tools import Cli, aws, engine_state, platform_outputs, registry_record, write_record
from terminal import run_in_terminal

from tenantctl import __version__, naming
from tenantctl.errors import CHANGES_PENDING, NotConfirmed
from tenantctl.models import TenantSpec, utcnow
from tenantctl.stackconfig import write_tenant

ACME = "op-acme"
NOT_CONFIRMED = NotConfirmed.exit_code


@pytest.fixture(scope="module")
def cli(sandbox, tmp_path_factory) -> Cli:
    return Cli.create(sandbox, tmp_path_factory.mktemp("operator"))


@pytest.fixture(scope="module")
def acme(cli) -> dict:
    """op-acme, provisioned once (pooled), as `status --json` shows it."""
    made = cli("provision", ACME, "--owner", "team-a", "--json")
    assert made.returncode == 0, made
    return cli("status", ACME, "--json").json()


@pytest.fixture(scope="module")
def dedicated(cli, sandbox) -> Iterator[dict]:
    """op-ded, a dedicated tenant (its own VPC and RDS instance), provisioned once; deprovisioned
    after the module when no test did (one of the session account's five VPCs)."""
    made = cli("provision", "op-ded", "--tier", "dedicated", "--json")
    assert made.returncode == 0, made
    yield made.json()["record"]
    if (registry_record(sandbox, "op-ded") or {}).get("status") not in (None, "deprovisioned"):
        gone = cli("deprovision", "op-ded", "--yes", "--no-final-backup")
        assert gone.returncode == 0, gone


def error_of(run) -> dict:
    """The --json error object a failed run printed on stdout."""
    return json.loads(run.stdout)["error"]


# -- exit codes: usage errors are 2, a pending preview 12, a bad id 3 -----------------

@pytest.mark.parametrize("args, needle", [
    (["list", "-o", "json"], "No such option: -o"),
    (["status"], "Missing argument"),
    (["statsu"], "No such command 'statsu'"),
    (["list", "--limit", "abc"], "'--limit'"),
    (["provision", "x", "--tier", "huge"], "'--tier'"),
    # ... and the ones the operations find (the parser cannot: they depend on other options)
    (["refresh"], "Missing argument 'ID...'"),
    (["refresh", "x", "--all"], "exclude each other"),
    (["apply", "--preview", "--shard", "abc"], "Invalid value for '--shard': 'abc' is not I/N"),
    (["apply", "--preview", "--shard", "3/2"], "I must be between 1 and N"),
    (["list", "--limit", "0"], "Invalid value for '--limit'"),  # before the registry is looked for
    (["move", "x", "--rollback", "--finalize"], "Option '--rollback' cannot be used with '--finalize'"),
    (["move", "x", "--past-window"], "Option '--past-window' goes with '--rollback'"),
    (["token", "revoke"], "give exactly one of '--jti' or '--tenant'"),
    (["cost"], "Missing argument 'ID'"),
    (["drill", "backup", "x", "--compress", ""], "Invalid value for '--compress'"),  # not taken as gzip
    (["drill", "run", "x", "--compress", ""], "Invalid value for '--compress'"),
])
def test_usage_errors_exit_2_with_a_clear_message(cli, args, needle):
    run = cli(*args)
    assert run.returncode == 2, run
    assert needle in run.stderr and "Traceback" not in run.stderr and "unexpected" not in run.stderr
    as_json = cli(*args, "--json")
    assert as_json.returncode == 2 and error_of(as_json)["code"] == 2 and needle in error_of(as_json)["message"]


def test_a_pending_preview_exits_12_and_an_empty_id_3(cli, acme, sandbox):
    write_tenant(cli.root / "stacks", TenantSpec(id="op-pending"))
    try:
        pending = cli("apply", "--preview", "--match", "op-pending", "--json")
        assert pending.returncode == CHANGES_PENDING == 12, pending
        assert pending.json()["exit_code"] == 12 and pending.json()["counts"] == {"create": 1}
    finally:
        cli.stack_file("op-pending").unlink()
    clean = cli("apply", "--preview", "--match", ACME, "--json")
    assert clean.returncode == 0 and clean.json()["counts"] == {"unchanged": 1}, clean

    for args in (["status", ""], ["provision", ""], ["deprovision", "", "--yes"]):
        empty = cli(*args, "--json")
        assert empty.returncode == 3, empty
        assert error_of(empty)["rule"] and "tenant id ''" in error_of(empty)["message"]
    assert registry_record(sandbox, "op-pending") is None


# -- everything is anchored to the project directory; -C/--cwd -----------------------

def test_a_subdirectory_reaches_the_projects_sandbox_and_stacks(cli, acme, tmp_path):
    sub = cli.root / "app" / "src"
    sub.mkdir(parents=True)
    own = {"TENANTCTL_SANDBOX_DIR": "", "TENANTCTL_HOME": ""}  # the default: no override
    for where, args in ((sub, ()), (tmp_path, ("-C", str(sub)))):
        shown = cli(*args, "target", "show", "--json", env=own, cwd=where)
        assert shown.returncode == 0, shown
        assert shown.json()["project_dir"] == str(cli.root.resolve())
        assert shown.json()["sandbox_dir"] == str(cli.root.resolve() / ".tenantctl")

    for where, args in ((sub, ()), (tmp_path, ("--cwd", str(cli.root)))):
        listed = cli(*args, "list", "--all", "--json", cwd=where)
        assert listed.returncode == 0, listed
        assert ACME in {t["tenant_id"] for t in listed.json()["tenants"]}
        assert cli(*args, "status", ACME, "--json", cwd=where).json()["tenant_id"] == ACME
    assert list(sub.iterdir()) == [] and sorted(p.name for p in (cli.root / "app").iterdir()) == ["src"]

    missing = cli("-C", str(tmp_path / "nowhere"), "list")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


# -- progress: a line per phase off a terminal, "N of M resources" on one ---------------

def test_progress_off_a_terminal_is_a_line_per_phase_with_the_elapsed_time(cli):
    made = cli("provision", "op-lines")
    assert made.returncode == 0, made
    lines = [line for line in made.stderr.splitlines() if "provisioning op-lines: " in line]
    stamps = [re.fullmatch(r"\[\s*(\d+\.\d)s\] provisioning op-lines: (.+)", line) for line in lines]
    assert all(stamps), lines
    seconds = [float(m.group(1)) for m in stamps]
    phases = [m.group(2) for m in stamps]
    assert seconds == sorted(seconds)
    assert phases[-1] == "done"
    for expected in ("reserving the tenant in the registry", "applying Pulumi.op-lines.yaml",
                     "recording the tenant active, checking its isolation posture"):
        assert expected in phases, phases
    planned = [p for p in phases if p.startswith("op-lines: ") and p.endswith(" resource(s) to change")]
    assert planned and int(planned[0].split()[1]) > 5

    gone = cli("deprovision", "op-lines", "--yes")
    assert gone.returncode == 0, gone
    phases = [line.split(": ", 1)[1] for line in gone.stderr.splitlines() if "deprovisioning op-lines: " in line]
    assert {"final backup", "destroying its resources", "recording the tombstone", "done"} <= set(phases), phases


def test_a_terminal_sees_a_live_count_of_resources_and_is_asked_before_a_deprovision(cli, sandbox):
    # Wide enough for the longest live line (a rolePolicy's type and name, then the count): at 100
    # columns rich wraps and truncates it ("10 of 13" / "resou…"), whichever resource a refresh showed.
    made = run_in_terminal(cli, "provision", "op-tty", columns=200)
    assert made.returncode == 0, made.text
    assert re.search(r"\d+ of \d+ resources", made.text), made.text
    assert "provisioning op-tty: reserving the tenant in the registry" in made.text

    record = registry_record(sandbox, "op-tty")
    declined = run_in_terminal(cli, "deprovision", "op-tty", answer="n")
    assert declined.returncode == NOT_CONFIRMED, declined.text
    assert record["resources"]["kms_key_arn"] in declined.text and record["resources"]["queue_url"] in declined.text
    assert "not confirmed; nothing was changed" in declined.text
    assert registry_record(sandbox, "op-tty") == record  # not even a lock was taken

    confirmed = run_in_terminal(cli, "deprovision", "op-tty", answer="y")
    assert confirmed.returncode == 0, confirmed.text
    assert registry_record(sandbox, "op-tty")["status"] == "deprovisioned"


# -- one confirmation rule: what deletes or replaces needs --yes off a terminal -------------

def test_without_a_terminal_what_deletes_is_refused_until_yes(cli, acme, sandbox):
    before = registry_record(sandbox, ACME)
    refused = cli("deprovision", ACME)
    assert refused.returncode == NOT_CONFIRMED, refused
    assert "pass --yes" in refused.stderr and "aborted" not in refused.stderr
    assert acme["resources"]["role_arn"] in refused.stderr  # what it would have deleted
    as_json = cli("deprovision", ACME, "--json")
    assert as_json.returncode == NOT_CONFIRMED and error_of(as_json)["code"] == NOT_CONFIRMED

    restore = cli("drill", "restore", ACME, "--target", "in-place")
    assert restore.returncode == NOT_CONFIRMED and "pass --yes" in restore.stderr, restore
    assert registry_record(sandbox, ACME) == before


def test_a_provision_that_would_replace_resources_asks_first(cli, sandbox, dedicated):
    stack = cli.stack_file("op-ded").read_text()
    state = engine_state(sandbox, "op-ded").read_text()

    refused = cli("provision", "op-ded", "--vpc-cidr", "10.77.0.0/16")  # a new VPC: replaces it and its subnets
    assert refused.returncode == NOT_CONFIRMED, refused
    assert "replace aws:ec2/vpc:Vpc" in refused.stderr and "pass --yes" in refused.stderr
    assert cli.stack_file("op-ded").read_text() == stack
    assert engine_state(sandbox, "op-ded").read_text() == state
    record = registry_record(sandbox, "op-ded")
    assert record["lock"] is None and record["status"] == "active"
    # Refused before its first change: no failed provision for `apply` to re-run or `refresh` to report.
    assert not record.get("provision_failed") and cli("refresh", "op-ded").returncode == 0

    declined = run_in_terminal(cli, "provision", "op-ded", "--vpc-cidr", "10.77.0.0/16", answer="n")
    assert declined.returncode == NOT_CONFIRMED and "replace aws:ec2/subnet:Subnet" in declined.text
    assert engine_state(sandbox, "op-ded").read_text() == state


def test_a_dedicated_tenants_rotation_function_and_snapshots_are_no_orphans(cli, sandbox, dedicated):
    # Tagged as the tenant's but absent from its state: the rotation function and its role (made by the
    # rotation application's CloudFormation stack), RDS's automated snapshot and a drill backup's.
    assert cli("drill", "backup", "op-ded", "--json").returncode == 0
    tagged = {m["ResourceARN"] for page in aws(sandbox, "resourcegroupstaggingapi").get_paginator("get_resources")
              .paginate(TagFilters=[{"Key": "tenant", "Values": ["op-ded"]}]) for m in page["ResourceTagMappingList"]}
    assert any(":function:tenantctl-op-ded-rot" in arn for arn in tagged)
    assert any(":snapshot:rds:tenantctl-op-ded-" in arn for arn in tagged)
    assert any(":snapshot:tenantctl-op-ded-drill-" in arn for arn in tagged)
    role = naming.rotation_function_name("op-ded") + "-role"
    assert {"Key": "tenant", "Value": "op-ded"} in aws(sandbox, "iam").list_role_tags(RoleName=role)["Tags"]

    refreshed = cli("refresh", "op-ded", "--json")
    assert refreshed.returncode == 0, refreshed  # a repair would have removed the function's role
    assert refreshed.json()["tenants"][0]["orphans"] == []


# -- stack files are edited round-trip; Pulumi.yaml is portable ---------------------------

def test_provision_edits_the_stack_file_keeping_hand_written_comments(cli, acme):
    path = cli.stack_file(ACME)
    text = path.read_text()
    assert "    owner: team-a\n" in text
    edited = (text.replace("    owner: team-a\n", "    owner: team-a  # pager: #team-a\n")
              + "# reviewed by the platform team\n")
    path.write_text(edited)
    run = cli("provision", ACME, "--owner", "team-b", "--json")
    assert run.returncode == 0, run
    assert path.read_text() == edited.replace("owner: team-a  # pager", "owner: team-b  # pager")
    assert run.json()["record"]["owner"] == "team-b"


def test_a_new_project_gets_a_program_reference_that_works_on_any_machine(cli, tmp_path):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    # Reading outside any project, with no sandbox of its own: "no platform" at once, and nothing left
    # behind (no Pulumi.yaml, no .tenantctl/, no sandbox started and left running there).
    own = {"TENANTCTL_SANDBOX_DIR": "", "TENANTCTL_HOME": ""}
    for args in (("status", ACME), ("list",), ("drill", "history", ACME)):
        nothing = cli(*args, "--json", env=own, cwd=fresh)
        assert nothing.returncode == 7 and "no tenantctl project" in nothing.json()["error"]["message"], nothing
    assert list(fresh.iterdir()) == []
    run = cli("platform", "outputs", "--json", cwd=fresh)
    assert run.returncode == 0, run
    project = yaml.safe_load((fresh / "Pulumi.yaml").read_text())
    assert project["main"] == "tenantctl_program/"
    assert str(Path.home()) not in (fresh / "Pulumi.yaml").read_text() and "site-packages" not in (
        fresh / "Pulumi.yaml").read_text()
    assert "from infra.program import main" in (fresh / "tenantctl_program" / "__main__.py").read_text()


# -- output: never cut ids or paths; readable help --------------------------------------

def test_tables_keep_every_id_and_path_whole(cli, acme):
    backup = cli("drill", "backup", ACME, "--json")
    assert backup.returncode == 0, backup
    backup_id = backup.json()["backup_id"]
    history = cli("drill", "history", ACME)  # piped: plain table, whatever the width
    assert history.returncode == 0 and backup_id in history.stdout and "…" not in history.stdout, history
    status = cli("status", ACME)
    for value in (acme["resources"]["kms_key_arn"], acme["resources"]["role_arn"], acme["resources"]["dlq_url"]):
        assert value in status.stdout
    narrow = run_in_terminal(cli, "status", ACME, columns=60)
    assert narrow.returncode == 0 and "…" not in narrow.text and "tenant op-acme" in narrow.text

    helped = cli("provision", "--help")
    assert helped.returncode == 0
    assert "--backup-retention-days" in helped.stdout and "--multi-az / --single-az" in helped.stdout
    assert "<bool>" not in helped.stdout and "…" not in helped.stdout


# -- everyday verbs: --version, list --all, completion ---------------------------------

def test_version_list_all_and_shell_completion(cli, acme, dedicated):
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"tenantctl {__version__}"

    one = cli("list", "--limit", "1", "--json").json()
    assert len(one["tenants"]) == 1 and one["next_cursor"]
    every = cli("list", "--all", "--limit", "1", "--json").json()
    ids = [t["tenant_id"] for t in every["tenants"]]
    assert every["next_cursor"] is None and len(ids) == len(set(ids)) and {ACME, "op-ded"} <= set(ids)

    completion = cli(env={"_TENANTCTL_COMPLETE": "complete_bash", "COMP_WORDS": "tenantctl prov",
                          "COMP_CWORD": "1"})
    assert completion.returncode == 0 and completion.stdout.split() == ["provision"]
    # The shell named, not detected from the parent processes (a CI runner may have no shell among them).
    script = cli("--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert script.returncode == 0 and "_TENANTCTL_COMPLETE=complete_bash" in script.stdout


# -- locks: SIGTERM releases them; a dead run's lock is cleared by the next run ------------

def wait_for_lock(sandbox, tenant_id: str, proc, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = registry_record(sandbox, tenant_id)
        if record and record["lock"]:
            return record
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    pytest.fail(f"{tenant_id} was never locked")


def test_sigterm_releases_the_lock_and_a_dead_runs_lock_is_cleared(cli, sandbox, acme):
    proc = cli.start("provision", "op-term")
    locked = wait_for_lock(sandbox, "op-term", proc)
    assert locked["lock"]["pid"] == proc.pid
    proc.send_signal(signal.SIGTERM)  # what a cancelled CI job gets
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted" in err
    record = registry_record(sandbox, "op-term")
    assert record["lock"] is None and record["last_error"].startswith("interrupted"), record
    assert cli("provision", "op-term").returncode == 0  # and a re-run converges

    # Killed outright (os._exit: no cleanup): the lock stays, naming a pid that is gone.
    killed = cli("provision", "op-dead", env={"TENANTCTL_FAULT_AFTER": "provision:reserved"})
    assert killed.returncode == 86, killed
    assert registry_record(sandbox, "op-dead")["lock"]["pid"] == killed.pid
    # `status` says what frees it, in the words every refusal it causes uses.
    remedy = "re-run the command (it takes the dead run's lock over), or `tenantctl unlock op-dead` removes it"
    shown = cli("status", "op-dead", "--json")
    assert shown.returncode == 0 and shown.json()["lock"]["remedy"] == remedy, shown
    shown = cli("status", "op-dead")
    assert shown.returncode == 0 and remedy in " ".join(shown.stdout.split()), shown
    rerun = cli("provision", "op-dead")  # no unlock --force needed: the holder provably died on this host
    assert rerun.returncode == 0, rerun
    assert "note: tenant 'op-dead': the provision holding its lock died" in rerun.stderr
    assert f"pid {killed.pid} is gone" in rerun.stderr
    record = registry_record(sandbox, "op-dead")
    assert record["status"] == "active" and record["lock"] is None

    # A pid reused by a process started after the lock was taken is no proof of life either.
    newer = subprocess.Popen(["sleep", "60"])
    try:
        stale = {**record, "lock": {"operation": "deprovision", "owner": "ci", "host": socket.gethostname(),
                                    "pid": newer.pid, "acquired_at": "2020-01-01T00:00:00Z"}}
        write_record(sandbox, stale)
        unlocked = cli("unlock", "op-dead", "--json")  # no --force
        assert unlocked.returncode == 0, unlocked
        assert unlocked.json()["lock"] is None and "newer process" in unlocked.json()["last_error"]
        # The shape of suspend's and resume's --json: the record, and what was done.
        assert unlocked.json()["done"] == ["lock removed"] and unlocked.json()["record"]["lock"] is None
        # The same process as a live holder (locked after it started): wait or stop it, no --force.
        write_record(sandbox, {**stale, "lock": {**stale["lock"], "acquired_at": utcnow().isoformat()}})
        held = cli("unlock", "op-dead")
        said = " ".join(held.stderr.split())
        assert held.returncode == 3 and "alive on this host" in said and "--force" not in said, held
    finally:
        newer.kill()
    elsewhere = {**registry_record(sandbox, "op-dead")}
    elsewhere["lock"] = {"operation": "provision", "owner": "ci", "host": "another-host", "pid": 1,
                         "acquired_at": "2020-01-01T00:00:00Z"}
    write_record(sandbox, elsewhere)
    refused = cli("deprovision", "op-dead", "--yes")  # another host's run: unknowable, refused
    assert refused.returncode == 5 and "another-host" in refused.stderr, refused
    assert "`tenantctl unlock op-dead --force`" in " ".join(refused.stderr.split())
    assert cli("unlock", "op-dead", "--force").returncode == 0
    again = cli("unlock", "op-dead", "--json")
    assert again.returncode == 0 and again.json()["done"] == [] and again.json()["record"]["lock"] is None, again
    # Another host's run that renews its lock (as tenantctl does): refused while its lease holds, the
    # refusal saying when it lapses; once it lapsed (the run lost with its runner) a re-run takes it over.
    renewing = {**elsewhere["lock"], "lapses_at": (utcnow() + timedelta(minutes=2)).isoformat()}
    write_record(sandbox, {**registry_record(sandbox, "op-dead"), "lock": renewing})
    refused = cli("provision", "op-dead")
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 5 and "its lock lapses at" in said and "unlock op-dead --force" in said, refused
    # `list --locked`: the tenants a run holds, each lock with whose run it is and whether it provably died.
    listed = cli("list", "--locked", "--all", "--json")
    assert listed.returncode == 0, listed
    locks = {t["tenant_id"]: t["lock"] for t in listed.json()["tenants"]}
    assert locks["op-dead"]["holder"] == "elsewhere" and "op-term" not in locks and all(locks.values()), locks
    shown = cli("list", "--locked", "--all")
    row = next(line for line in shown.stdout.splitlines() if "op-dead" in line)
    assert "provision by ci@another-host pid 1" in row and "another host's, renewed until" in row, shown
    write_record(sandbox, {**registry_record(sandbox, "op-dead"),
                           "lock": {**renewing, "lapses_at": (utcnow() - timedelta(seconds=1)).isoformat()}})
    shown = cli("status", "op-dead", "--json")
    assert shown.returncode == 0 and shown.json()["lock"]["remedy"] == remedy, shown  # as a dead pid's
    assert shown.json()["lock"]["holder"] == "lapsed", shown
    listed = {t["tenant_id"]: t["lock"] for t in cli("list", "--locked", "--all", "--json").json()["tenants"]}
    assert listed["op-dead"]["holder"] == "lapsed", listed
    rerun = cli("provision", "op-dead")
    assert rerun.returncode == 0, rerun
    assert "host another-host, pid 1 stopped renewing it: it lapsed at" in " ".join(rerun.stderr.split()), rerun
    assert registry_record(sandbox, "op-dead")["lock"] is None


# -- suspend, resume, hibernate --------------------------------------------------------

def trust_allows_the_runtime(sandbox, tenant_id: str) -> bool:
    from tenant_runtime.credentials import SESSION_TAG
    from tenantctl.checks import iam_eval

    role = aws(sandbox, "iam").get_role(RoleName=naming.iam_role_name(tenant_id))["Role"]
    document = role["AssumeRolePolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    runtime = platform_outputs(sandbox)["runtime_principal_arn"]
    return iam_eval.allows_all([document], iam_eval.assume_role(role["Arn"], runtime, {SESSION_TAG: tenant_id}))


def test_a_suspended_tenant_is_refused_within_the_cache_ttl_and_its_role_cannot_be_assumed(cli, sandbox):
    from runtime_tenants import jwt_settings, token

    from tenant_runtime import TenantInactive
    from tenant_runtime.auth import TenantResolver
    from tenant_runtime.registry import RegistryReader

    assert cli("provision", "op-sus").returncode == 0
    now = [0.0]
    reader = RegistryReader(platform_outputs(sandbox)["registry_table"], client=aws(sandbox, "dynamodb"), ttl=30,
                            clock=lambda: now[0])
    resolver = TenantResolver(jwt_settings(), reader)
    assert resolver.resolve(token("op-sus"), "op-sus").tenant_id == "op-sus"
    assert trust_allows_the_runtime(sandbox, "op-sus")

    suspended = cli("suspend", "op-sus", "--json")
    assert suspended.returncode == 0, suspended
    assert suspended.json()["status"] == "suspended" and "suspended: true" in cli.stack_file("op-sus").read_text()
    # resume's shape too: the record, and what was done (the record's fields stay at the top level).
    assert suspended.json()["done"] == ["suspended"] and suspended.json()["record"]["status"] == "suspended"
    again = cli("suspend", "op-sus", "--json")  # idempotent: nothing done
    assert again.returncode == 0 and again.json()["done"] == [] and again.json()["status"] == "suspended", again
    assert "recording the tenant suspended" in suspended.stderr and "tenant active" not in suspended.stderr
    assert not trust_allows_the_runtime(sandbox, "op-sus")  # no role session is renewed
    checked = cli("check", "op-sus", "--json")
    assert checked.returncode == 0 and "suspended" in json.dumps(checked.json()), checked

    now[0] = 29.9  # the runtime's cached record: served until the TTL runs out, never after
    assert resolver.resolve(token("op-sus"), "op-sus").tenant_id == "op-sus"
    now[0] = 30.1
    with pytest.raises(TenantInactive, match="suspended"):
        resolver.resolve(token("op-sus"), "op-sus")

    resumed = cli("resume", "op-sus", "--json")
    assert resumed.returncode == 0 and resumed.json()["done"] == ["suspension lifted"], resumed
    assert resumed.json()["record"]["status"] == "active" and "suspended" not in cli.stack_file("op-sus").read_text()
    assert resumed.json()["status"] == "active"  # suspend's shape too
    assert trust_allows_the_runtime(sandbox, "op-sus")
    now[0] = 61
    assert resolver.resolve(token("op-sus"), "op-sus").tenant_id == "op-sus"


def test_hibernate_stops_an_idle_dedicated_database_the_runtime_wakes_it_and_cost_shows_the_saving(
        cli, sandbox, acme, dedicated):
    from runtime_tenants import jwt_settings, token

    from tenant_runtime import TenantRuntime, TenantWaking
    from tenant_runtime.hibernation import DatabaseWaker

    rds = aws(sandbox, "rds")

    def instance_state() -> str:
        return rds.describe_db_instances(DBInstanceIdentifier=naming.rds_identifier("op-ded"))["DBInstances"][0][
            "DBInstanceStatus"]

    busy = cli("hibernate", "op-ded")  # provisioned minutes ago: not idle
    assert busy.returncode == 3 and "not idle" in busy.stderr, busy
    # --all skips it (every dedicated tenant here is busy): its progress line says so and why, never "done".
    # A record of a cell this project does not define (another project's, or its stack file removed) is
    # skipped too, naming the cell: one odd record does not end the nightly sweep.
    elsewhere = {**registry_record(sandbox, "op-ded"), "tenant_id": "op-elsewhere", "cell": "nowhere"}
    write_record(sandbox, elsewhere)
    try:
        swept = cli("hibernate", "--all", "--json")
        alone = cli("hibernate", "op-elsewhere", "--json")
    finally:
        aws(sandbox, "dynamodb").delete_item(TableName=platform_outputs(sandbox)["registry_table"],
                                             Key={"tenant_id": {"S": "op-elsewhere"}})
    assert swept.returncode == 0, swept
    assert swept.json()["hibernated"] == [] and "not idle" in swept.json()["skipped"]["op-ded"]
    # ... with the reason `check` and `refresh` give (the shared selection), before any run of it starts.
    why = "its cell 'nowhere' has no stack file in stacks/: its account cannot be read"
    assert swept.json()["skipped"]["op-elsewhere"] == why
    assert "] op-elsewhere: " not in swept.stderr, swept.stderr
    # Named on its own, it is refused, saying what to do.
    assert alone.returncode == 3 and f"tenant 'op-elsewhere': {why}" in alone.json()["error"]["message"], alone
    assert "] op-ded: skipped: " in swept.stderr and "not idle" in swept.stderr, swept.stderr
    assert "] op-ded: hibernated" not in swept.stderr
    pooled = cli("hibernate", ACME)
    assert pooled.returncode == 3 and "pooled" in pooled.stderr
    assert instance_state() == "available"

    slept = cli("hibernate", "op-ded", "--force", "--json")
    assert slept.returncode == 0, slept
    assert slept.json()["record"]["hibernation"]["db_instance"] == naming.rds_identifier("op-ded")
    assert instance_state() == "stopped"
    assert "hibernation" in cli("status", "op-ded").stdout
    again = cli("hibernate", "op-ded", "--json")  # idempotent: no --force to say it again, nothing changed
    assert again.returncode == 0 and again.json()["record"]["hibernation"] == slept.json()["record"]["hibernation"]

    cost = cli("cost", "op-ded", "--json")
    assert cost.returncode == 0, cost
    [priced] = cost.json()["tenants"]
    saving = priced["hibernation"]["monthly_saving"]
    assert priced["hibernation"]["hibernated"] is True and saving > 0
    [instance_line] = [line for line in priced["estimate"]["lines"] if line["item"] == "RDS instance"]
    assert instance_line["monthly"] == 0 and f"saves ${saving:.2f}" in instance_line["detail"]
    assert f"hibernated, its RDS instance is stopped: saves ${saving:,.2f}/month" in cli("cost", "op-ded").stdout

    # The first request wakes it: 503 + retry while it starts, then served.
    now = [0.0]
    runtime = TenantRuntime(jwt_settings(), platform_outputs(sandbox)["registry_table"], region=sandbox.region,
                            endpoint_url=sandbox.aws_endpoint_url)
    runtime.store.waker = waker = DatabaseWaker(lambda _: aws(sandbox, "rds"), recheck=5, clock=lambda: now[0])
    try:
        ctx = runtime.resolve(token("op-ded"), "op-ded")
        with pytest.raises(TenantWaking) as waking:
            runtime.store.append(ctx, "c1", "user", "hello")
        assert waking.value.status_code == 503 and waking.value.retry_after == 30
        assert waker.starts == 1 and instance_state() != "stopped"
        with pytest.raises(TenantWaking):  # within `recheck`: answered without another RDS call
            runtime.store.append(ctx, "c1", "user", "hello")
        assert waker.describes == 1
        now[0] = 5.1
        assert runtime.store.append(ctx, "c1", "user", "hello").content == "hello"
        assert waker.describes == 2 and waker.starts == 1
    finally:
        runtime.close()

    woken = cli("resume", "op-ded", "--json")
    assert woken.returncode == 0 and woken.json()["done"] == ["woken from hibernation"], woken
    assert woken.json()["record"]["hibernation"] is None and instance_state() == "available"
    after = cli("cost", "op-ded", "--json").json()["tenants"][0]
    assert after["hibernation"] == {"hibernated": False, "idle": False, "monthly_saving": saving}


def test_a_hibernate_sweep_goes_on_past_a_tenants_failure_and_exits_with_the_worst_code(cli, sandbox, dedicated):
    """`hibernate --all` carries on past a tenant whose run fails (as `check --all` and `search
    reindex --all` do): the tenants after it are still hibernated, the failed one listed with its
    error and exit code (`failed` in --json), the exit code the worst tenant's."""
    ghost = "op-dec"  # before op-ded in the sweep's order; its record names an instance that does not exist
    write_record(sandbox, {**registry_record(sandbox, "op-ded"), "tenant_id": ghost})
    try:
        swept = cli("hibernate", "--all", "--force", "--json")
    finally:
        aws(sandbox, "dynamodb").delete_item(TableName=platform_outputs(sandbox)["registry_table"],
                                             Key={"tenant_id": {"S": ghost}})
    out = swept.json()
    slept = [h["record"]["tenant_id"] for h in out.get("hibernated", [])]
    try:
        assert swept.returncode == 4, swept
        assert "op-ded" in slept, out
        [failed] = out["failed"]
        assert failed["tenant_id"] == ghost and failed["exit_code"] == 4 and ghost in failed["error"], out
        assert out["exit_code"] == 4 and ghost not in out["skipped"], out
        assert "] op-ded: hibernated" in swept.stderr and f"] {ghost}: failed (exit 4)" in swept.stderr
    finally:
        # --force sweeps every dedicated tenant of the session's sandbox (other modules' too): each awake
        # again for the tests after it.
        for tenant in slept:
            woken = cli("resume", tenant, "--json")
            assert woken.returncode == 0 and woken.json()["done"] == ["woken from hibernation"], woken


def test_a_hibernate_sweep_of_one_cell_tries_only_that_cells_tenants(cli, sandbox, dedicated):
    """`hibernate --cell C`, a nightly sweep per cell: only that cell's dedicated tenants are listed and
    tried (one of another cell is not even skipped); an unknown cell is exit 6, and --cell beside a
    tenant id or --all exit 2."""
    unknown = cli("hibernate", "--cell", "nowhere", "--json")
    assert unknown.returncode == 6 and "no cell 'nowhere'" in error_of(unknown)["message"], unknown
    for mixed in (["op-ded", "--cell", "default"], ["--all", "--cell", "default"]):
        refused = cli("hibernate", *mixed)
        assert refused.returncode == 2 and "'--cell' cannot be used" in refused.stderr, refused
    elsewhere = {**registry_record(sandbox, "op-ded"), "tenant_id": "op-elsewhere", "cell": "nowhere"}
    write_record(sandbox, elsewhere)
    try:
        everywhere = cli("hibernate", "--all", "--json")
        one_cell = cli("hibernate", "--cell", "default", "--json")
    finally:
        aws(sandbox, "dynamodb").delete_item(TableName=platform_outputs(sandbox)["registry_table"],
                                             Key={"tenant_id": {"S": "op-elsewhere"}})
    assert everywhere.returncode == 0 and "op-elsewhere" in everywhere.json()["skipped"], everywhere
    assert one_cell.returncode == 0, one_cell
    tried = {**one_cell.json()["skipped"], **{h["record"]["tenant_id"]: "" for h in one_cell.json()["hibernated"]}}
    assert "op-elsewhere" not in tried and "not idle" in tried["op-ded"], one_cell.json()
    assert {registry_record(sandbox, tid)["cell"] for tid in tried} == {"default"}, tried


def test_a_run_that_needs_a_hibernated_tenants_database_wakes_it_first(cli, sandbox, dedicated):
    """Provision (its schema steps, its posture check), a drill's backup and deprovision's final backup
    read the database: each starts the stopped instance and clears the flag first, a progress line saying
    so. (`drill run --all` leaves one whose instance is stopped asleep: tests/unit/test_drill_scope.py.)"""
    rds = aws(sandbox, "rds")
    instance = naming.rds_identifier("op-ded")

    def hibernated() -> tuple[str, dict | None]:
        state = rds.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"][0]["DBInstanceStatus"]
        return state, registry_record(sandbox, "op-ded").get("hibernation")

    assert cli("hibernate", "op-ded", "--force").returncode == 0 and hibernated()[0] == "stopped"
    again = cli("provision", "op-ded", "--tier", "dedicated", "--json")
    assert again.returncode == 0, again
    assert f"starting database instance {instance}" in again.stderr and hibernated() == ("available", None)

    assert cli("hibernate", "op-ded", "--force").returncode == 0 and hibernated()[0] == "stopped"
    backed_up = cli("drill", "backup", "op-ded", "--json")  # the checksums are read from the instance
    assert backed_up.returncode == 0, backed_up
    assert f"starting database instance {instance}" in backed_up.stderr and hibernated() == ("available", None)

    assert cli("hibernate", "op-ded", "--force").returncode == 0 and hibernated()[0] == "stopped"
    gone = cli("deprovision", "op-ded", "--yes", "--json")
    assert gone.returncode == 0, gone
    woke, backed_up = (gone.stderr.index(line) for line in (f"starting database instance {instance}", "final backup"))
    assert woke < backed_up and gone.json()["final_backup"], gone.stderr


def test_check_and_refresh_skip_a_tenant_of_a_cell_the_project_does_not_define_saying_why(cli, sandbox, acme):
    """A record of a cell this project has no stack file for (another project's, or its file removed):
    `check` and `refresh` both skip it, with the same reason, in --json and on the terminal, and
    the others run as ever (one odd record does not fail the sweep)."""
    away = "op-away"
    write_record(sandbox, {**registry_record(sandbox, ACME), "tenant_id": away, "cell": "nowhere"})
    try:
        checked = cli("check", ACME, away, "--json")
        refreshed = cli("refresh", ACME, away, "--json")
        said = cli("refresh", ACME, away)
        # Named alone, it is refused (exit 3) naming the cell and what to do, as `hibernate ID` is.
        alone = [cli("check", away, "--json"), cli("refresh", away, "--json"), cli("check", away)]
    finally:
        aws(sandbox, "dynamodb").delete_item(TableName=platform_outputs(sandbox)["registry_table"],
                                             Key={"tenant_id": {"S": away}})
    why = "its cell 'nowhere' has no stack file in stacks/: its account cannot be read"
    assert checked.returncode == 0, checked
    assert checked.json()["skipped"] == [{"tenant_id": away, "reason": why}]
    assert [t["tenant_id"] for t in checked.json()["tenants"]] == [ACME]
    assert refreshed.returncode == 0, refreshed
    by_id = {t["tenant_id"]: t for t in refreshed.json()["tenants"]}
    assert (by_id[away]["ok"], by_id[away]["note"], by_id[away]["checked"]) == (True, f"skipped: {why}", 0)
    assert by_id[ACME]["ok"] and by_id[ACME]["checked"] > 0
    assert refreshed.json()["counts"]["skipped"] == 1 and refreshed.json()["counts"]["failed"] == 0
    assert said.returncode == 0 and f"{away}: skipped: {why}" in said.stderr, said
    assert "1 skipped" in said.stdout, said
    for run in alone[:2]:
        assert run.returncode == 3, run
        message = run.json()["error"]["message"]
        assert f"tenant {away!r}: {why}" in message and "Pulumi.cell-nowhere.yaml" in message, message
    assert alone[2].returncode == 3 and "error: tenant 'op-away': its cell 'nowhere'" in alone[2].stderr, alone[2]


def test_dev_token_refuses_a_tenant_the_registry_does_not_hold_unless_asked(cli, acme):
    """Like `status`, exit 6 for an unknown id (a typo must not yield a token
    that only ever meets 404s); --allow-unknown signs one anyway, to try the 404."""
    unknown = cli("dev", "token", "op-never-made")
    assert unknown.returncode == 6, unknown
    assert unknown.stdout == "" and "'op-never-made' is not in the registry" in unknown.stderr, unknown
    as_json = cli("dev", "token", "op-never-made", "--json")
    assert as_json.returncode == 6 and error_of(as_json)["code"] == 6, as_json
    asked = cli("dev", "token", "op-never-made", "--allow-unknown", "--json")
    assert asked.returncode == 0, asked
    assert asked.json()["claims"]["tenant_id"] == "op-never-made"
    known = cli("dev", "token", ACME, "--json")
    assert known.returncode == 0 and known.json()["claims"]["tenant_id"] == ACME, known
