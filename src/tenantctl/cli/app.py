"""tenantctl's entry point: the command modules' typer apps, and errors mapped to exit codes.

Command modules import pulumi / pulumi_aws inside their function bodies, never at
module level, so `--help`, `list` and `status` stay fast. They also keep their
annotations evaluated (no ``from __future__ import annotations``; names imported for
type checking only are quoted): typer resolves every command's annotations at each
start, and evaluating them from strings cost ~20 ms, a fifth of `--help`.
"""

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from tenantctl.cli import (
    apply_cmd,
    audit_cmd,
    cell_cmd,
    check_cmd,
    dev_cmd,
    drill_cmd,
    move_cmd,
    platform_cmd,
    refresh_cmd,
    sandbox_cmd,
    search_cmd,
    setup_cmd,
    suspend_cmd,
    target_cmd,
    tenant_cmd,
    token_cmd,
    usage_cmd,
    workspace_cmd,
)
from tenantctl.errors import USAGE_ERROR, NotConfirmed, TenantctlError

app = typer.Typer(
    name="tenantctl",
    help="Provision, operate and verify isolated tenants of a multi-tenant SaaS on AWS.\n\n"
         "Works from anywhere inside the project (the directory holding Pulumi.yaml); every command takes "
         "--json. Exit codes: README.md, \"Exit codes\".",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help: rich's option panels print `<bool>` after every flag and cut
    # long option names to fit 80 columns.
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        from tenantctl import __version__

        typer.echo(f"tenantctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    cwd: Annotated[Optional[Path], typer.Option(
        "-C", "--cwd", metavar="DIR", exists=True, file_okay=False, resolve_path=True,
        help="Run as if started in DIR (like `pulumi -C`, `terraform -chdir`): the project (the nearest "
             "Pulumi.yaml), its stacks/ and its sandbox are found from there.")] = None,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_show_version,
                                          help="Print tenantctl's version and exit.")] = False,
) -> None:
    if cwd is not None:
        os.chdir(cwd)


# Top-level commands merge into the root app, groups keep their names; --help lists them in this order.
for _module in (tenant_cmd, suspend_cmd, workspace_cmd, move_cmd, check_cmd, apply_cmd, refresh_cmd, audit_cmd,
                cell_cmd, platform_cmd,
                sandbox_cmd, usage_cmd, drill_cmd, search_cmd, token_cmd, dev_cmd, target_cmd, setup_cmd):
    app.add_typer(_module.app)


def _fail(code: int, message: str, rule: str | None, json_mode: bool, details: list[str] | None = None) -> None:
    """The error on stderr for people; with --json also as the one object on
    stdout, details and all, so scripts read ``error.code`` instead of parsing
    text."""
    from tenantctl.cli.output import error_lines, error_object, print_json

    if json_mode:
        print_json({"error": error_object(code, message, rule, details)})
    error_lines(message, details)
    sys.exit(code)


def _usage_line(exc: Exception) -> str:
    """A usage error as one line: typer's message and where the command's options are
    listed (click's own display adds a usage line, a hint and a blank line)."""
    message = exc.format_message()  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    return f"{message} (`{ctx.command_path} --help`)" if ctx is not None else message


def _notes_on_stderr() -> None:
    """What operations report without failing (a dead run's lock cleared, ...)
    goes to stderr as `note: ...` lines."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("note: %(message)s"))
    logger = logging.getLogger("tenantctl")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main() -> None:
    from tenantctl import collector
    from tenantctl.errors import interrupt_on_sigterm, terminated

    collector.one_command()  # what lasts to the end is not walked again by the collector (collector.py)
    json_mode = "--json" in sys.argv[1:]
    interrupt_on_sigterm()
    _notes_on_stderr()
    try:
        # standalone_mode=False hands typer.Exit codes back instead of exiting.
        rc = app(prog_name="tenantctl", standalone_mode=False)
    except TenantctlError as exc:
        _fail(exc.exit_code, str(exc), exc.rule, json_mode, exc.details)
    except typer.Abort:  # a prompt's input ended (EOF) before an answer
        _fail(NotConfirmed.exit_code, "aborted: nothing was changed", None, json_mode)
    except typer.TyperException as exc:  # usage errors (typer's own click): exit 2, as documented
        code = getattr(exc, "exit_code", USAGE_ERROR) or USAGE_ERROR
        _fail(code, _usage_line(exc), None, json_mode)
    except SystemExit:
        raise
    except Exception as exc:
        _fail(1, f"unexpected {type(exc).__name__}: {exc}", None, json_mode)
    else:
        if rc == 130:  # typer turns Ctrl-C (and SIGTERM, see interrupt_on_sigterm) into Exit(130)
            _fail(128 + terminated() if terminated() else 130, "interrupted", None, json_mode)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
