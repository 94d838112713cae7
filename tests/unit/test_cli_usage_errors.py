"""Usage errors are what the README's exit-code table says: exit 2, typer's
wording, one line on stderr (naming the command's --help); and a command's
help names its arguments as the README's commands table does (`ID`, `TENANT WS`;
typer braces a required one).
Parsing fails before any project or sandbox is looked for, so these run anywhere."""

from __future__ import annotations

import subprocess
import sys

import pytest

RUN = "import sys; from tenantctl.cli.app import main; sys.argv = ['tenantctl', *sys.argv[1:]]; main()"


def tenantctl(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.mark.parametrize("args, needle, hint", [
    (["list", "-o", "json"], "No such option: -o", "tenantctl list --help"),
    (["status"], "Missing argument 'ID'", "tenantctl status --help"),
    (["statsu"], "No such command 'statsu'", "tenantctl --help"),
    (["list", "--limit", "abc"], "Invalid value for '--limit'", "tenantctl list --help"),
    (["workspace", "add", "acme"], "Missing argument 'WS'", "tenantctl workspace add --help"),
    # Every numeric option of `cell add` / `cell evacuate` out of its range: a usage error naming it.
    (["cell", "add", "c1", "--region", "eu-west-1", "--db-connection-limit", "0"],
     "Invalid value for '--db-connection-limit': Input should be greater than or equal to 1",
     "tenantctl cell add --help"),
    (["cell", "add", "c1", "--db-connection-limit", "1001"], "Invalid value for '--db-connection-limit'",
     "tenantctl cell add --help"),
    (["cell", "add", "c1", "--max-pooled", "0"], "Invalid value for '--max-pooled'",
     "tenantctl cell add --help"),
    (["cell", "add", "c1", "--max-pooled", "-3"], "Invalid value for '--max-pooled'", "tenantctl cell add --help"),
    (["cell", "add", "c1", "--platform-connections", "-1"],
     "Invalid value for '--platform-connections'", "tenantctl cell add --help"),
    (["cell", "evacuate", "c1", "--limit", "0"], "Invalid value for '--limit'", "tenantctl cell evacuate --help"),
    (["cell", "evacuate", "c1", "--parallel", "0"], "Invalid value for '--parallel'",
     "tenantctl cell evacuate --help"),
    # The fleet reads take --parallel as `check --all` does.
    (["usage", "--all", "--parallel", "0"], "Invalid value for '--parallel'", "tenantctl usage --help"),
    (["cost", "--all", "--parallel", "-2"], "Invalid value for '--parallel'", "tenantctl cost --help"),
    (["report", "--parallel", "0"], "Invalid value for '--parallel'", "tenantctl report --help"),
    (["cell", "evacuate", "c1", "--max-failures", "-1"], "Invalid value for '--max-failures'",
     "tenantctl cell evacuate --help"),
    # A negative limit would fail every drill (exit 9) as if it had been too slow.
    (["drill", "run", "acme", "--max-rpo", "-1"], "Invalid value for '--max-rpo'", "tenantctl drill run --help"),
    (["drill", "run", "--all", "--max-rto", "-0.5"], "Invalid value for '--max-rto'", "tenantctl drill run --help"),
])
def test_a_usage_error_is_one_line_with_exit_2(tmp_path, args, needle, hint):
    run = tenantctl(*args, cwd=tmp_path)
    assert run.returncode == 2, run
    assert run.stdout == ""
    [line] = run.stderr.splitlines()
    assert line.startswith("error: ") and needle in line and hint in line, line
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


@pytest.mark.parametrize("args", [["statsu", "--json"], ["status", "", "--json"], ["list", "--limit", "0", "--json"]])
def test_with_json_an_error_is_the_one_document_on_stdout_and_one_plain_line_on_stderr(tmp_path, args):
    """README's --json contract: stdout holds the error object alone (a script pipes it to a JSON
    reader); stderr the same one line as without --json, for a person, never JSON."""
    import json

    run = tenantctl(*args, cwd=tmp_path)
    error = json.loads(run.stdout)["error"]  # one document: json.loads refuses anything after it
    assert error["code"] == run.returncode != 0
    assert run.stderr == f"error: {error['message']}\n"
    assert tenantctl(*args[:-1], cwd=tmp_path).stderr == run.stderr


@pytest.mark.parametrize("args, usage", [
    (["status", "--help"], "Usage: tenantctl status [OPTIONS] {ID}"),
    (["provision", "--help"], "Usage: tenantctl provision [OPTIONS] {ID}"),
    (["workspace", "add", "--help"], "Usage: tenantctl workspace add [OPTIONS] {TENANT} {WS}"),
    (["drill", "run", "--help"], "Usage: tenantctl drill run [OPTIONS] [ID]"),
])
def test_help_names_the_arguments_as_the_readme_does(tmp_path, args, usage):
    run = tenantctl(*args, cwd=tmp_path)
    assert run.returncode == 0, run
    assert run.stdout.splitlines()[0].strip() == usage
