"""`tenantctl check ID`: verify a tenant's isolation posture on its live resources."""

from typing import Annotated

import typer

from tenantctl.cli.options import tenant_argument
from tenantctl.cli.output import console, escape, print_json, table

app = typer.Typer()

_STYLE = {"pass": "green", "fail": "bold red", "error": "yellow"}


@app.command()
def check(
    tenant_id: Annotated[str, tenant_argument("Tenant to verify.")],
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False,
) -> None:
    """Verify a tenant's isolation on its LIVE resources (also run after every provision).

    Database, as the tenant's own role: not superuser, no BYPASSRLS, owns
    nothing, RLS enabled and forced on every table, unique keys include the
    tenant, a session without the tenant setting sees no rows (fail closed).
    splinter's RLS lints on its schema; PUBLIC without CONNECT/TEMP.
    AWS: key state (Enabled), rotation and key policy (= the role's KMS
    actions), queue/DLQ, alarm topic and bucket encryption, no public access,
    bucket access logging, secret rotation, tags, the role's trust and access
    policies. Network: endpoint policies, flow logs, empty default group,
    PostgreSQL from security groups only, RDS hardening. Placement: its cell
    is in its region, every resource ARN in the cell's account and the
    tenant's region, its prefix in its cell's bucket.

    Exit codes: 0 all pass, 8 a check failed (a resource AWS says is gone
    fails the checks reading it), 7 a check could not run.
    """
    from tenantctl.checks import check_tenant
    from tenantctl.workspace import Workspace

    report = check_tenant(Workspace(), tenant_id)
    if json_out:
        print_json({**report.as_json(), "exit_code": report.exit_code()})
    else:
        table(f"posture of tenant {tenant_id}", ["area", "check", "result", "detail"],
              [(c.area, c.name, f"[{_STYLE[c.outcome.value]}]{c.outcome.value}[/]", escape(c.detail))
               for c in report.checks])
        if report.failed:
            console.print(f"[bold red]{len(report.failed)} check(s) failed:[/] "
                          f"{', '.join(f'{c.area}/{c.name}' for c in report.failed)}", highlight=False)
        if report.errors:
            console.print(f"[yellow]{len(report.errors)} check(s) could not run:[/] "
                          f"{', '.join(f'{c.area}/{c.name}' for c in report.errors)}", highlight=False)
        if report.ok:
            console.print(f"[green]all {len(report.checks)} checks pass[/]")
    if report.exit_code():
        raise typer.Exit(report.exit_code())
