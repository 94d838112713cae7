"""`tenantctl audit`: the registry against the cloud and stacks/."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from tenantctl.cli.options import JsonFlag
from tenantctl.cli.output import console, print_json, table

app = typer.Typer()


@app.command()
def audit(
    markdown: Annotated[Optional[Path], typer.Option(help="Also write the report as markdown here.")] = None,
    parallel: Annotated[int, typer.Option(min=1, help="Tenants whose keys are read at once.")] = 8,
    json_out: JsonFlag = False,
) -> None:
    """Audit the registry against the cloud and stacks/ (changes nothing).

    Records whose resources are gone, resources tagged managed-by=tenantctl
    that no record claims, stack files of tombstoned tenants, ids that break
    the naming rules, records of a cell stacks/ does not define, stalled runs
    (a lock whose run died on this host; a move's write freeze minutes old:
    `tenantctl move ID` resumes it). Every cell's account is read, each
    tenant's resources in its own cell's account.

    Exit codes: 0 nothing found, 12 findings, 1 error, 2 a usage error.
    """
    from tenantctl.operations.audit import audit as run
    from tenantctl.templates import render
    from tenantctl.workspace import Workspace

    report = run(Workspace(), parallel=parallel)
    if markdown:
        markdown.write_text(render("audit_report.md.j2", report=report))
    if json_out:
        print_json({**report.model_dump(mode="json"), "counts": report.counts, "exit_code": report.exit_code()})
    else:
        if report.findings:
            table(f"audit · {report.records} record(s), {report.stack_files} stack file(s), {report.tagged} tagged "
                  f"resource(s) in {report.accounts} account(s) · {report.seconds:.1f}s",
                  ["finding", "tenant", "subject", "detail"],
                  [(f.kind, f.tenant_id, f.subject, f.detail) for f in report.findings])
        found = ", ".join(f"{n} {k}" for k, n in report.counts.items() if n)
        console.print(f"{len(report.findings)} finding(s): {found}" if found else
                      f"nothing found ({report.records} record(s), {report.stack_files} stack file(s), "
                      f"{report.tagged} tagged resource(s) in {report.accounts} account(s))", highlight=False)
    raise typer.Exit(report.exit_code())
