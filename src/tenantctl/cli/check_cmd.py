"""`tenantctl check ID... | --all | --cell C`: verify tenants' isolation posture on their live resources."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from tenantctl.cli.output import console, escape, print_json, table

app = typer.Typer()

_STYLE = {"pass": "green", "warn": "cyan", "fail": "bold red", "error": "yellow"}


@app.command()
def check(
    tenant_ids: Annotated[Optional[list[str]], typer.Argument(
        metavar="ID", help="Tenant(s) to verify.", show_default=False)] = None,
    every: Annotated[bool, typer.Option("--all", help="Every tenant in the registry (not deprovisioned).")] = False,
    cell: Annotated[Optional[str], typer.Option(help="Every tenant of this cell (not deprovisioned).")] = None,
    parallel: Annotated[int, typer.Option(min=1, help="Tenants checked at once (several ids, --all, --cell).")] = 8,
    markdown: Annotated[Optional[Path], typer.Option(
        help="Also write a markdown summary (an issue or pull-request comment) here (several ids, --all, "
             "--cell).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False,
) -> None:
    """Verify tenants' isolation on their LIVE resources (also run after every provision).

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

    One ID prints every check; several ids, --all or --cell check tenants in
    parallel, a progress line each (stderr), and list the tenants that did not
    pass (a tenant with no resources recorded, or of a cell stacks/ does not
    define, is skipped, with why).

    A check may warn instead (shown, counted under `warnings`, never an
    exit code): a store whose search index another analyzer than
    tenantctl's built, naming `tenantctl search reindex ID`.

    Exit codes: 0 all pass (warnings or not), 8 a check failed (a resource AWS says is gone
    fails the checks reading it), 7 a check could not run (and none failed),
    3 one tenant named alone whose cell stacks/ does not define (the message
    says which stack file to restore), 2 no ids, --all or --cell (or more
    than one of them).
    """
    if tenant_ids and len(tenant_ids) == 1 and not every and cell is None and markdown is None:
        _check_one(tenant_ids[0], json_out)
    else:
        _check_many(tenant_ids or [], every, cell, parallel, markdown, json_out)


def _check_one(tenant_id: str, json_out: bool) -> None:
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
        if report.warnings:
            console.print(f"[{_STYLE['warn']}]{len(report.warnings)} check(s) warn:[/] "
                          f"{', '.join(f'{c.area}/{c.name}' for c in report.warnings)}", highlight=False)
        if report.ok:
            console.print(f"[green]all {len(report.checks)} checks pass[/]")
    if report.exit_code():
        raise typer.Exit(report.exit_code())


def _worst(report) -> str:
    """The worst outcome of a tenant's checks."""
    return "fail" if report.failed else "error" if report.errors else "warn" if report.warnings else "pass"


def _remarks(report) -> str:
    """The checks of a tenant that did not pass, then its warnings with their
    details (they name the fix), one line."""
    return "; ".join([f"{c.outcome.value} {c.area}/{c.name}" for c in report.failed + report.errors]
                     + report.lines(report.warnings))


def _check_many(tenant_ids: list[str], every: bool, cell: Optional[str], parallel: int,
                markdown: Optional[Path], json_out: bool) -> None:
    from tenantctl.cli.progress import fleet_progress
    from tenantctl.operations.fleet_check import check_fleet
    from tenantctl.templates import render
    from tenantctl.workspace import Workspace

    with fleet_progress("checking") as progress:
        def on_result(report) -> None:
            mark = (f"[{_STYLE['fail' if report.failed else 'error']}]{escape(_remarks(report))}[/]"
                    if not report.ok else f"all {len(report.checks)} checks pass" + (
                        f"; [{_STYLE['warn']}]{escape(_remarks(report))}[/]" if report.warnings else ""))
            progress.done(f"{report.tenant_id}: {mark}")

        summary = check_fleet(Workspace(), tenant_ids, every=every, cell=cell, parallel=parallel,
                              on_plan=lambda n: progress.plan(n, f"{n} tenant(s)"), on_result=on_result)
    if markdown:
        markdown.write_text(render("check_summary.md.j2", summary=summary, remarks=_remarks))
    if json_out:
        print_json({"tenants": [r.as_json() for r in summary.reports], "skipped": summary.skipped,
                    "counts": summary.counts, "exit_code": summary.exit_code()})
    else:
        noted = summary.failed + summary.unverified + summary.warned
        if noted:
            table(f"posture · {len(summary.reports)} tenant(s) · {summary.seconds:.1f}s",
                  ["tenant", "result", "checks that did not pass, warnings"],
                  [(r.tenant_id, f"[{_STYLE[_worst(r)]}]{_worst(r)}[/]",
                    escape("; ".join(f"{c.area}/{c.name}: {c.detail}" for c in r.failed + r.errors + r.warnings)))
                   for r in sorted(noted, key=lambda r: (("fail", "error", "warn").index(_worst(r)), r.tenant_id))])
        for skipped in summary.skipped:
            console.print(f"skipped {skipped.tenant_id}: {escape(skipped.reason)}", highlight=False)
        counts = summary.counts
        console.print(f"{counts['passed']} of {counts['tenants']} tenant(s) pass every check"
                      + (f"; {counts['failed']} failed" if counts["failed"] else "")
                      + (f"; {counts['unverified']} could not be fully verified" if counts["unverified"] else "")
                      + (f"; {counts['warnings']} with warnings" if counts["warnings"] else "")
                      + (f"; {counts['skipped']} skipped" if counts["skipped"] else ""), highlight=False)
    if summary.exit_code():
        raise typer.Exit(summary.exit_code())
