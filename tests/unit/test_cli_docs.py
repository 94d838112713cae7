"""The README's command table covers the CLI as it is: every command and every
subcommand of a group is in it, with the global options."""

import re
from pathlib import Path

import typer

from tenantctl.cli.app import app

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def command_table() -> list[str]:
    section = README.split("## Commands", 1)[1].split("\n### ", 1)[0]
    # The first cell of each row (`\|` inside a cell is not a column break).
    return [re.match(r"\| ((?:[^|\\]|\\.)*) \|", line).group(1) for line in section.splitlines()
            if line.startswith("| `tenantctl")]


def test_every_command_and_subcommand_is_in_the_readme_table():
    root = typer.main.get_command(app)
    rows = command_table()
    missing = []
    for name, command in root.commands.items():
        mine = [r for r in rows if re.search(rf"`tenantctl (\S+\\\|)*{re.escape(name)}\b", r)]
        if not mine:
            missing.append(name)
            continue
        for sub in getattr(command, "commands", {}):
            if not any(re.search(rf"\b{re.escape(sub)}\b", r) for r in mine):
                missing.append(f"{name} {sub}")
    assert missing == []


def test_global_options_and_completion_are_documented():
    [row] = [r for r in command_table() if r.startswith("`tenantctl [")]
    for option in ("-C DIR", "--version", "--install-completion", "--show-completion"):
        assert option in row
    assert "--show-completion bash" in README
