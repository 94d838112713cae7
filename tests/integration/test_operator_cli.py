"""The CLI a platform engineer trusts in a terminal and in CI: every test runs
`python -m tenantctl` as a subprocess in a project of its own on the session's
sandbox, with stdout/stderr piped (CI) or on a pseudo-terminal (a person), and
checks exit codes, what was printed, files, and the registry itself."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from fault_tools import Cli, engine_state, registry_record
from terminal import run_in_terminal

from tenantctl import __version__
from tenantctl.errors import CHANGES_PENDING, NotConfirmed
from tenantctl.models import TenantSpec
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
    made = run_in_terminal(cli, "provision", "op-tty")
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


def test_a_provision_that_would_replace_resources_asks_first(cli, sandbox):
    made = cli("provision", "op-ded", "--tier", "dedicated", "--json")
    assert made.returncode == 0, made
    stack = cli.stack_file("op-ded").read_text()
    state = engine_state(sandbox, "op-ded").read_text()

    refused = cli("provision", "op-ded", "--vpc-cidr", "10.77.0.0/16")  # a new VPC: replaces it and its subnets
    assert refused.returncode == NOT_CONFIRMED, refused
    assert "replace aws:ec2/vpc:Vpc" in refused.stderr and "pass --yes" in refused.stderr
    assert cli.stack_file("op-ded").read_text() == stack
    assert engine_state(sandbox, "op-ded").read_text() == state
    record = registry_record(sandbox, "op-ded")
    assert record["lock"] is None and record["status"] == "active"

    declined = run_in_terminal(cli, "provision", "op-ded", "--vpc-cidr", "10.77.0.0/16", answer="n")
    assert declined.returncode == NOT_CONFIRMED and "replace aws:ec2/subnet:Subnet" in declined.text
    assert engine_state(sandbox, "op-ded").read_text() == state


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

def test_version_list_all_and_shell_completion(cli, acme):
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
    script = cli("--show-completion", "bash")
    assert script.returncode == 0 and "_TENANTCTL_COMPLETE=complete_bash" in script.stdout
