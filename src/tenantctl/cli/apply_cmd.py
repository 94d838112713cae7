"""`tenantctl apply`: reconcile the committed stacks/ with the registry (for CI)."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tenantctl.cli.output import console, err_console, escape, orphan_lines, print_json, steps_table, table, warn

if TYPE_CHECKING:
    from tenantctl.operations.apply_results import StackResult


app = typer.Typer()


def _changes(result: "StackResult") -> str:
    return ", ".join(f"{op} {n}" for op, n in result.changes.items() if op != "same")


def _line(result: "StackResult", ran: bool = True) -> str:
    """A stack's progress line (rich markup): its action and result, with the
    error of a failed one; ``ran``: with the time its run took."""
    mark = "[green]ok[/]" if result.ok else f"[red]failed[/]: {escape(result.error or '')}"
    took = f" ({result.seconds:.1f}s)" if ran else ""
    changes = _changes(result)
    return f"{result.name}: {result.action.value} {mark}{took}{' · ' + changes if changes else ''}"


def _details(result: "StackResult", preview: bool) -> None:
    """The stack's resource steps with their changed properties; a tenant's drift and orphan resources."""
    steps_table(f"{result.name} · {result.action.value}", result.resources)
    if result.drift:
        repaired = "" if preview or not result.ok else ", repaired"
        steps_table(f"{result.name} · drift found (recorded → live){repaired}", result.drift)
    if result.orphans:
        orphan_lines(result.name, result.orphans, preview)


@contextmanager
def _progress(preview: bool) -> Iterator[tuple[Callable, Callable, Callable, Callable, Callable]]:
    """Per-tenant progress on stderr: the plan, then one line per finished
    tenant, each stamped with the time since the start; what a --parallel
    worker writes on stderr (a note, a warning), stamped and tagged with its
    tenant. stdout stays for the summary (and --json)."""
    from tenantctl.cli.progress import fleet_progress
    from tenantctl.operations.apply_results import CellResult

    with fleet_progress("previewing" if preview else "applying") as progress:
        def on_plan(cells, results) -> None:
            changed = [c for c in cells if c.action.value != "unchanged"]
            if changed:
                progress.note("cells: " + ", ".join(f"{c.cell} {c.action.value}" for c in changed))
            counts: dict[str, int] = {}
            for r in results:
                counts[r.action.value] = counts.get(r.action.value, 0) + 1
            progress.plan(sum(counts.get(a, 0) for a in ("create", "update", "repair", "prune")),
                          ", ".join(f"{n} {a}" for a, n in counts.items()) or "no tenants")
            for failed in [r for r in (*cells, *results) if not r.ok]:  # refused or not read live: never run
                progress.note(_line(failed, ran=False))

        def on_result(result) -> None:
            (progress.note if isinstance(result, CellResult) else progress.done)(_line(result))

        def on_wait(busy) -> None:
            progress.note(f"waiting: {escape(str(busy))}")

        def on_stop(why: str) -> None:
            progress.note(f"[red]stopping[/]: {escape(why)}: no further stack is started, the running ones finish")

        def on_line(tenant_id: str, line: str) -> None:
            progress.note(f"{escape(tenant_id)}: {escape(line)}")

        yield on_plan, on_result, on_wait, on_stop, on_line


@app.command()
def apply(
    preview: Annotated[bool, typer.Option(
        "--preview", help="Plan only, with each resource's step and changed properties. Exit 0: no changes, "
        "12: changes pending, 1: error (including what the run would refuse).")] = False,
    refresh: Annotated[bool, typer.Option(
        "--refresh", help="Read every tenant's live resources instead of trusting the fingerprint: drifted "
        "tenants are repaired (resources reset or created again, orphan resources removed).")] = False,
    prune: Annotated[bool, typer.Option(
        "--prune", help="Deprovision tenants in the registry but not in stacks/ (asked first on a terminal; "
                        "elsewhere only with --yes).")] = False,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Go ahead with what deletes: --prune's deprovisions, and tenant updates whose plan "
                            "deletes or replaces resources (without it such a tenant is refused).")] = False,
    parallel: Annotated[int, typer.Option(min=1, help="Tenants applied at once (each in a process of its own).")] = 4,
    max_failures: Annotated[Optional[int], typer.Option(
        "--max-failures", min=0, metavar="N",
        help="Once more than N cells and tenants have failed, start no more: the running ones finish, the rest "
             "are reported 'not started' (exit 1). Default: no limit. Not with --preview.")] = None,
    shard: Annotated[Optional[str], typer.Option(
        help="I/N: only this runner's deterministic share of tenants.")] = None,
    match: Annotated[Optional[list[str]], typer.Option(
        metavar="GLOB", help="Only tenants whose id matches this glob (repeatable), in stacks/ and in the "
                             "registry alike.")] = None,
    cell: Annotated[Optional[str], typer.Option(
        help="Only this cell's stack and its tenants (by their registry record; a new tenant by the cell its "
             "stack file names).")] = None,
    markdown: Annotated[Optional[Path], typer.Option(
        help="Also write a markdown summary (pull-request comment) here.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable summary on stdout.")] = False,
) -> None:
    """Apply changed cells, provision new tenants, update changed ones, skip unchanged ones, report orphans.

    Cell stacks (Pulumi.platform.yaml, Pulumi.cell-NAME.yaml) come first: each
    whose spec or program changed since its last up is applied (CI shards take
    turns through the cell's lease); a --match run leaves cells alone.

    Previews list each resource's step (create / update / replace / delete) with
    its changed properties, old → new; a replaced or deleted database, key,
    bucket or secret is called out. Unchanged tenants are skipped by their
    fingerprint; --refresh reads them live instead and repairs the drifted ones.

    --max-failures N guards a fleet rollout (a program change re-applies every
    tenant): once more than N cells and tenants have failed, no further one
    starts; those never started are reported 'not started'.

    Exit codes: 0 all applied (or, with --preview, nothing pending); 12 changes pending
    (--preview); 1 at least one tenant failed, or would be refused, or was not started
    (the summary says which and why); 13 not confirmed; 2 a usage error. Progress goes
    to stderr, the summary to stdout.
    """
    from tenantctl.cli.confirm import confirmation
    from tenantctl.operations.apply import Action
    from tenantctl.operations.apply import apply as run
    from tenantctl.templates import render
    from tenantctl.workspace import Workspace

    confirm = confirmation(yes)

    def confirm_prunes(results) -> None:
        # Before anything runs: the orphans --prune would deprovision (a preview only shows them).
        doomed = [r.tenant_id for r in results if r.action is Action.prune]
        if doomed and not preview:
            confirm.check(f"apply --prune: deprovision {len(doomed)} tenant(s) missing from stacks/ "
                          "(final backup, keys scheduled for deletion, tombstones kept)", doomed)

    with _progress(preview) as (on_plan, on_result, on_wait, on_stop, on_line):
        summary = run(Workspace(), preview=preview, prune=prune, parallel=parallel, shard=shard,
                      match=match or (), cell=cell, refresh=refresh, yes=yes, max_failures=max_failures,
                      # confirmed (or refused) before the plan line says what runs
                      on_plan=lambda c, r: (confirm_prunes(r), on_plan(c, r)), on_result=on_result, on_wait=on_wait,
                      on_stop=on_stop, on_line=on_line)
    for warning in (w for c in summary.cells for w in c.warnings):
        warn(warning)
    if markdown:
        markdown.write_text(render("apply_summary.md.j2", summary=summary))
    if json_out:
        print_json({**summary.model_dump(mode="json"), "counts": summary.counts,
                    "not_started": len(summary.not_started), "exit_code": summary.exit_code()})
    else:
        shown = summary.listed
        rows = [(r.name, r.action.value, escape(r.outcome), escape(r.reason), _changes(r)) for r in shown]
        if rows:
            table(f"apply{' --preview' if preview else ''} · shard {summary.shard} · {summary.seconds:.1f}s",
                  ["stack", "action", "result", "why", "resources"], rows)
        for result in shown:
            _details(result, preview)
        cells = [f"cell {c.cell} {c.action.value}" for c in summary.cells if c.action is not Action.unchanged]
        tenants = ", ".join(f"{n} {a}" for a, n in summary.counts.items()) or "no tenants in stacks/"
        failed = [f"{len(summary.failed)} failed"] if summary.failed else []
        held = [f"{len(summary.not_started)} not started ({summary.stopped})"] if summary.not_started else []
        console.print("; ".join([*cells, tenants, *failed, *held]), highlight=False)
    orphans = summary.orphans
    if orphans:
        names = ", ".join(r.tenant_id for r in orphans)
        hint = "`--prune` deprovisions them"
        err_console.print(f"[yellow]{len(orphans)} orphan(s)[/] (in the registry, not in stacks/): {names}; {hint}",
                          highlight=False)
    raise typer.Exit(summary.exit_code())
