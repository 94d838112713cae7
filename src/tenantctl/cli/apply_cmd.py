"""`tenantctl apply`: reconcile the committed stacks/ with the registry (for CI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tenantctl.cli.output import console, err_console, print_json, table


def apply(
    preview: Annotated[bool, typer.Option("--preview", help="Plan only. Exit 0: no changes, 2: changes pending, 1: error.")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="Deprovision tenants in the registry but not in stacks/ (needs --yes).")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Confirm --prune.")] = False,
    parallel: Annotated[int, typer.Option(help="Tenants applied at once.")] = 4,
    shard: Annotated[Optional[str], typer.Option(help="I/N: only this runner's deterministic share of tenants.")] = None,
    markdown: Annotated[Optional[Path], typer.Option(help="Also write a markdown summary (pull-request comment) here.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable summary on stdout.")] = False,
) -> None:
    """Provision new tenants, update changed ones, skip unchanged ones, report orphans.

    Exit codes: 0 all applied (or, with --preview, nothing pending); 2 changes pending
    (--preview); 1 at least one tenant failed (the summary says which and why).
    """
    from tenantctl.errors import InvalidInput
    from tenantctl.operations.apply import apply as run
    from tenantctl.templates import render
    from tenantctl.workspace import Workspace

    if prune and not yes and not preview:
        raise InvalidInput("--prune deprovisions tenants: pass --yes as well")

    def progress(result) -> None:
        if not json_out:
            mark = "[green]ok[/]" if result.ok else f"[red]failed[/]: {result.error}"
            err_console.print(f"{result.tenant_id}: {result.action.value} {mark} ({result.seconds:.1f}s)")

    summary = run(Workspace(), preview=preview, prune=prune and yes, parallel=parallel, shard=shard,
                  on_result=progress)
    if markdown:
        markdown.write_text(render("apply_summary.md.j2", summary=summary))
    if json_out:
        print_json({**summary.model_dump(mode="json"), "exit_code": summary.exit_code()})
    else:
        rows = [(r.tenant_id, r.action.value, "ok" if r.ok else f"failed: {r.error}",
                 ", ".join(f"{k} {v}" for k, v in r.changes.items())) for r in summary.results]
        table(f"apply{' --preview' if preview else ''} · shard {summary.shard} · {summary.seconds:.1f}s",
              ["tenant", "action", "result", "resources"], rows)
        counts = {a: sum(1 for r in summary.results if r.action.value == a) for a in
                  ("create", "update", "unchanged", "orphan", "prune", "invalid")}
        console.print(", ".join(f"{n} {a}" for a, n in counts.items() if n) or "no tenants in stacks/")
    raise typer.Exit(summary.exit_code())


def register(app: typer.Typer) -> None:
    app.command()(apply)
