"""tenantctl's entry point: the command modules' typer apps, and errors mapped to exit codes.

Command modules import pulumi / pulumi_aws inside their function bodies, never at
module level, so `--help`, `list` and `status` stay fast.
"""

from __future__ import annotations

import sys

import typer

from tenantctl.cli import (
    apply_cmd,
    audit_cmd,
    check_cmd,
    dev_cmd,
    drill_cmd,
    move_cmd,
    platform_cmd,
    refresh_cmd,
    sandbox_cmd,
    setup_cmd,
    target_cmd,
    tenant_cmd,
    token_cmd,
    usage_cmd,
)
from tenantctl.errors import TenantctlError

app = typer.Typer(
    name="tenantctl",
    help="Provision, operate and verify isolated tenants of a multi-tenant SaaS on AWS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# Top-level commands merge into the root app, groups keep their names; --help lists them in this order.
for _module in (tenant_cmd, move_cmd, check_cmd, apply_cmd, refresh_cmd, audit_cmd, platform_cmd, sandbox_cmd,
                usage_cmd, drill_cmd, token_cmd, dev_cmd, target_cmd, setup_cmd):
    app.add_typer(_module.app)


def main() -> None:
    try:
        # standalone_mode=False hands typer.Exit codes back instead of exiting.
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except TenantctlError as exc:
        from tenantctl.cli.output import error

        error(str(exc))
        sys.exit(exc.exit_code)
    except typer.Abort:
        from tenantctl.cli.output import error

        error("aborted")
        sys.exit(1)
    except KeyboardInterrupt:
        from tenantctl.cli.output import error

        error("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors and the unexpected
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        from tenantctl.cli.output import error

        error(f"unexpected {type(exc).__name__}: {exc}")
        sys.exit(1)
