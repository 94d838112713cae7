"""`tenantctl refresh`: drift of tenants' live resources against their state."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from tenantctl.cli.options import JsonFlag
from tenantctl.cli.output import console, escape, orphan_lines, print_json, steps_table, table

app = typer.Typer()


@app.command()
def refresh(
    tenant_ids: Annotated[Optional[list[str]], typer.Argument(metavar="ID", help="Tenants to refresh.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every committed cell's stack and every tenant in the "
                                                      "registry (not deprovisioned).")] = False,
    cell: Annotated[Optional[str], typer.Option(help="This cell's stack and every tenant of it (not "
                                                     "deprovisioned).")] = None,
    parallel: Annotated[int, typer.Option(min=1, help="Tenants read at once.")] = 8,
    markdown: Annotated[Optional[Path], typer.Option(
        help="Also write a markdown summary (an issue or pull-request comment) here.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Report drift: each tenant's live resources against its state (changes nothing).

    Per resource and property (expected → live), resources deleted out of band,
    orphan resources (tagged as the tenant's, unknown to its state), ingress
    rules added out of band to the tenant's own security groups, its cell's
    declared alarm subscriptions an alarm topic lacks (to create), and the
    subscriptions its stack holds that the cell declares no more (to delete). --all and
    --cell read the committed cells' stacks too. `apply --refresh` (cells and
    tenants) or `provision ID` repairs (a tenant in a move: once `move ID
    --finalize` or `--rollback` ends it; said per tenant). A tenant of a cell stacks/ does not
    define, or held by a running operation, is skipped with why. A tenant
    whose last provision or repair failed, or a cell whose last up failed
    after its first change, is drift ("repair pending") until one succeeds,
    whatever its read finds.

    Exit codes: 0 no drift, 12 drift found, 2 no ids, --all or --cell (or more
    than one of them), 1 a tenant could not be refreshed
    (the same convention as `apply --preview`).
    """
    from tenantctl.cli.progress import fleet_progress
    from tenantctl.operations.refresh import TenantDrift
    from tenantctl.operations.refresh import refresh as run
    from tenantctl.templates import render
    from tenantctl.workspace import Workspace

    with fleet_progress("refreshing") as progress:
        def on_plan(cells: int, tenants: int) -> None:
            progress.plan(tenants, (f"{cells} cell(s), " if cells else "") + f"{tenants} tenant(s)")

        def on_result(t) -> None:
            mark = ("[red]failed[/]: " + escape(t.error or "")) if not t.ok else (
                f"[yellow]{t.headline()}[/]" if t.drifted else escape(t.note or t.headline()))
            (progress.done if isinstance(t, TenantDrift) else progress.note)(f"{t.name}: {mark} ({t.seconds:.1f}s)")

        summary = run(Workspace(), tenant_ids or (), every=every, cell=cell, parallel=parallel,
                      on_plan=on_plan, on_result=on_result)
    if markdown:
        markdown.write_text(render("refresh_summary.md.j2", summary=summary))
    if json_out:
        print_json({**summary.model_dump(mode="json"), "counts": summary.counts, "exit_code": summary.exit_code()})
    else:
        rows = [(t.name, "failed: " + (t.error or "") if not t.ok else t.headline(), t.checked, t.note)
                for t in summary.stacks if t.drifted or not t.ok or t.note]
        if rows:
            cells = f"{len(summary.cells)} cell(s), " if summary.cells else ""
            table(f"refresh · {cells}{len(summary.tenants)} tenant(s) · {summary.seconds:.1f}s",
                  ["stack", "drift", "resources read", "note"], rows)
        for t in summary.drifted:
            steps_table(f"{t.name} · drift (expected → live)", t.resources)
            if t.pending:
                console.print(f"{t.name}: repair pending: {t.pending}", highlight=False)
            orphan_lines(t.name, t.orphans, preview=True)
        counts = summary.counts
        held = [t for t in summary.drifted if t.held]
        console.print(f"{counts['drifted']} of {counts['cells'] + counts['tenants']} stack(s) drifted: "
                      f"{counts['resources']} "
                      f"resource(s), {counts['orphans']} orphan resource(s)"
                      + (f"; {counts['failed']} failed" if counts["failed"] else "")
                      + (f"; {counts['skipped']} skipped" if counts["skipped"] else "")
                      + ("; `tenantctl apply --refresh` (or `provision ID`) repairs"
                         + (" the others" if held else "") if len(held) < counts["drifted"] else ""),
                      highlight=False)
        for t in held:  # apply leaves a moving tenant alone, provision refuses it (exit 5)
            console.print(f"{t.name}: {t.held} first; `apply --refresh` (or `provision {t.name}`) repairs it "
                          "after, not before", highlight=False)
    raise typer.Exit(summary.exit_code())
