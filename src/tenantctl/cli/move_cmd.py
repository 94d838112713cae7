"""`tenantctl move ID --tier T | --cell C | --rollback | --finalize`: a tenant to another tier or cell."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tenant_runtime.states import Tier
from tenantctl.cli.options import JsonFlag, tenant_argument
from tenantctl.cli.output import console, err_console, print_json

if TYPE_CHECKING:
    from tenantctl.operations.move import MoveResult

app = typer.Typer()


@app.command()
def move(
    tenant_id: Annotated[str, tenant_argument("Tenant to move.")],
    tier: Annotated[Optional[Tier], typer.Option(help="Target tier (starts a move).")] = None,
    cell: Annotated[Optional[str], typer.Option(help="Target cell (starts a move; with --tier, both change; "
                                                     "another account or region too).")] = None,
    rollback: Annotated[bool, typer.Option("--rollback", help="Put the tenant back where the move started "
                                                               "(inside the rollback window).")] = False,
    past_window: Annotated[bool, typer.Option("--past-window", help="With --rollback: roll back a move whose "
                                                                    "rollback window ended.")] = False,
    finalize: Annotated[bool, typer.Option("--finalize", help="End the rollback window: final backup, the old "
                                                               "store removed.")] = False,
    window_hours: Annotated[float, typer.Option("--window-hours", min=0, help="Rollback window after the switch.")]
    = 24.0,
    preview: Annotated[bool, typer.Option("--preview", help="Show the move (target cell, account, region, kind, "
                                          "the target stack's plan, phases) and refuse what the run would; "
                                          "change nothing. Exit 0: nothing to move, 12: the move would run.")]
    = False,
    json_out: JsonFlag = False,
) -> None:
    """Move a tenant to another tier or cell with its data while it serves.

    Prepare the target store beside the current one, copy while the tenant
    serves (logical replication), freeze writes for the last changes (runtimes
    answer 503 + Retry-After; reads go on), verify counts and checksums, switch
    the registry record; the old store stays read-only, in step, for the
    rollback window. `--cell C`: its prefix's objects are copied server-side
    to C's bucket too, and removed from the old one at `--finalize`. A cell of
    another account or region (within the spec's residency) takes a tenant,
    pooled or dedicated, to either tier, with its workspaces: it is built
    again there as stack `<id>.k<N>` under new keys (the tenant's and each
    workspace's), its rows relayed with every sealed column re-wrapped, and
    `--finalize` forwards the old queues' messages and destroys the old stack
    (dedicated -> dedicated on one database server: exit 3, nothing created).
    `move ID` alone resumes a killed move (the dead run's lock is cleared);
    `--rollback` undoes it (with the writes made since the switch) inside
    the rollback window (`--window-hours`, from the switch; past it only with
    `--past-window`); `--finalize` removes the old store after a final backup
    (and activates a tenant whose finalize was killed after ending the move:
    `activated`). `--preview` shows a move (or the rest of an open one) before
    it runs, refusing what the run would refuse with its exit code, changing
    nothing.

    Exit codes: 0 done, 3 refused (nothing created; a rollback past the window
    without --past-window; no free replication slot and WAL sender for the
    copy on the server of the store it leaves), 5 locked or changed
    concurrently, 6 unknown tenant, 7 target unavailable or not caught up in
    time (writes resumed, nothing switched), 8 policy gate, 9 the target's rows
    differed from the source's as of the freeze (switched back: the tenant is
    on its old store), 11 a quota, or no slot of the target tier in the target
    cell (full or draining).
    """
    import time
    from datetime import timedelta

    from tenantctl.cli.progress import elapsed
    from tenantctl.operations.move import move as run
    from tenantctl.workspace import Workspace

    if preview:
        _preview(tenant_id, tier, cell, rollback, finalize, past_window, json_out)
        return
    started = time.monotonic()

    def progress(line: str) -> None:
        # Stderr, stamped like every long command's phases (--json or not: stdout holds the result).
        err_console.print(f"{elapsed(started)} {line}", highlight=False, markup=False)

    result = run(Workspace(), tenant_id, tier=tier, cell=cell, rollback=rollback, finalize=finalize,
                 window=timedelta(hours=window_hours), past_window=past_window, progress=progress)
    if json_out:
        print_json(result)
        return
    console.print(_summary(result), highlight=False)


def _summary(result: MoveResult) -> str:
    """One line; a rollback names where the tenant is now (the result's from/to are the move it undid)."""
    from tenantctl.timestamps import utc_minute

    cells = result.from_cell != result.to_cell
    if result.outcome == "rolled_back":
        where = (result.from_tier.value, result.to_tier.value)
        if cells:
            where = (f"{where[0]} in cell {result.from_cell}", f"{where[1]} in cell {result.to_cell}")
        return f"tenant {result.tenant_id}: rolled back to {where[0]} (its move to {where[1]} undone)"
    if result.outcome == "activated":
        return (f"tenant {result.tenant_id}: activated ({result.to_tier.value} in cell {result.to_cell}; no move "
                "was open, its last finalize or provision had not been verified)")
    outcome = result.outcome.replace("_", " ")
    line = f"tenant {result.tenant_id}: {outcome} ({result.from_tier.value} -> {result.to_tier.value}"
    line += f", cell {result.from_cell} -> {result.to_cell})" if cells else ")"
    if result.freeze_seconds is not None:
        line += f"; writes refused {result.freeze_seconds:.2f} s"
    if result.verified:
        line += "; stores verified equal"
    if result.window_ends_at:  # as `status` writes it (--json keeps the ISO time)
        line += f"; rollback window until {utc_minute(result.window_ends_at)} (`--rollback` / `--finalize`)"
    return line


def _preview(tenant_id: str, tier: Tier | None, cell: str | None, rollback: bool, finalize: bool,
             past_window: bool, json_out: bool) -> None:
    """move --preview: exit 0 nothing to move, 12 the move would run (as `provision --preview`'s changes pending)."""
    from tenantctl.cli.output import changes_summary, changes_table
    from tenantctl.errors import CHANGES_PENDING
    from tenantctl.operations.move_preview import preview
    from tenantctl.workspace import Workspace

    found = preview(Workspace(), tenant_id, tier=tier, cell=cell, rollback=rollback, finalize=finalize,
                    past_window=past_window)
    pending = found.outcome != "unchanged"
    if json_out:
        print_json({**found.model_dump(mode="json"), "exit_code": CHANGES_PENDING if pending else 0})
    elif not pending:
        console.print(f"tenant {tenant_id}: nothing to move ({found.source.tier.value} in cell "
                      f"{found.source.cell} already)", highlight=False)
    else:
        if found.changes is not None:
            changes_table(f"move {tenant_id} --preview: stack {found.stack}", found.changes)
        src, dst = found.source, found.target
        verb = {"would_start": "would start", "would_activate": "would activate the tenant"}.get(
            found.outcome, f"would resume ({found.phase.value if found.phase else ''})")
        lines = [f"tenant {tenant_id}: move {verb}: {src.tier.value} in cell {src.cell} ({src.account_id}, "
                 f"{src.region})" + ("" if src == dst else f" -> {dst.tier.value} in cell {dst.cell} "
                                                             f"({dst.account_id}, {dst.region})")
                 + f", {found.kind.replace('-', ' ')}"
                 + (f"; target stack {found.stack}: {changes_summary(found.changes)}" if found.changes else "")]
        if found.wakes_first:
            lines.append("  hibernated: its instance is started first (a move copies from its store)")
        lines += [f"  {phase}" for phase in found.phases]
        lines += [f"  --finalize destroys: {what}" for what in found.finalize_destroys]
        console.print("\n".join(lines), highlight=False, markup=False)
    if pending:
        raise typer.Exit(CHANGES_PENDING)
