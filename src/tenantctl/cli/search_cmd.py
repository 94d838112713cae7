"""`tenantctl search reindex ID... | --all | --cell C`: tenants' document search indexes."""

from typing import Annotated, Optional

import typer

from tenantctl.cli.options import JsonFlag, tenants_argument
from tenantctl.cli.output import console, escape, failed_line, failed_table, print_json

app = typer.Typer(name="search", no_args_is_help=True, help="Tenant document search: the blind index.")


@app.command("reindex")
def reindex(
    tenant_ids: Annotated[Optional[list[str]], tenants_argument("Tenant(s) to reindex.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every tenant in the registry (not deprovisioned).")] = False,
    cell: Annotated[Optional[str], typer.Option(help="Every tenant of this cell (not deprovisioned).")] = None,
    outdated: Annotated[bool, typer.Option(
        "--outdated", help="Only tenants with a store whose index another analyzer built (or whose reindex is "
                           "unfinished, or rebuild due); the others are skipped as up to date.")] = False,
    parallel: Annotated[int, typer.Option(min=1, help="Tenants reindexed at once (several ids, --all, --cell).")] = 4,
    json_out: JsonFlag = False,
) -> None:
    """Rotate the tenant's search key and re-hash every document's index
    entries under it; the old key is dropped at the end. Each workspace of the
    tenant is re-indexed the same way, under its own key. Searches keep working
    throughout (both keys are queried meanwhile). Safe to run again.

    The index is rebuilt with this installation's analyzer (with or without
    the Japanese extra), whose identity each store records: runtimes then
    write and search it that way, or refuse writes when they cannot.

    A hibernated tenant's database is started first (a progress line says so).

    Several ids, --all or --cell reindex tenants in parallel, a plan line (how
    many get a turn, how many are skipped from the listing; "checking N" with
    --outdated) and a progress line each (stderr), and list the tenants that failed; a tenant not active, or
    hibernated (left asleep: `search reindex ID` wakes it), or of a cell
    stacks/ does not define, is skipped, with why (so is one suspended or
    hibernated between the listing and its turn). --outdated reindexes only
    the tenants with a store whose live index another analyzer built (a store
    from before identities counts as v1) or whose reindex is unfinished (or
    rebuild due): after deploying runtimes of a new analyzer,
    `search reindex --all --outdated`.

    Exit codes: 0 done, 3 bad id or tenant not active, 5 another run (another
    reindex too) holds the tenant's lock, 6 unknown tenant,
    7 store, KMS or registry unreachable, 9 a stored document fails
    authentication, 10 the tenant's key is unusable; several tenants: the
    highest of theirs (10, 9, 7, 6, 5); 2 no ids, --all or --cell (or more
    than one of them).
    """
    if tenant_ids and len(tenant_ids) == 1 and not every and cell is None and not outdated:
        _reindex_one(tenant_ids[0], json_out)
    else:
        _reindex_many(tenant_ids or [], every, cell, outdated, parallel, json_out)


def _reindex_one(tenant_id: str, json_out: bool) -> None:
    from tenantctl.cli.progress import engine_progress
    from tenantctl.operations.reindex import reindex_search
    from tenantctl.workspace import Workspace

    with engine_progress(f"re-indexing {tenant_id}") as on_event:
        result = reindex_search(Workspace(), tenant_id, on_event)
    if json_out:
        print_json({"tenant_id": tenant_id, **result.model_dump()})
        return
    for name, done in ((tenant_id, result), *((f"{tenant_id}/{w}", d) for w, d in result.workspaces.items())):
        console.print(f"{name}: {done.documents} documents re-indexed under search key v{done.key_version}, "
                      f"analyzer {done.analyzer}", highlight=False)


def _outcome_line(tenant_id: str, outcome) -> str:
    """A tenant's progress line (rich markup)."""
    from tenantctl.operations.fleet_reindex import Reindexed
    from tenantctl.operations.selection import Failed

    if isinstance(outcome, Reindexed):
        stores = f" and {len(outcome.workspaces)} workspace(s)" if outcome.workspaces else ""
        return (f"{tenant_id}: re-indexed, {outcome.documents} documents{stores}, "
                f"analyzer {escape(outcome.analyzer)}")
    if isinstance(outcome, Failed):
        return f"{tenant_id}: {failed_line(outcome)}"
    return f"{tenant_id}: skipped, {escape(outcome.reason)}"


def _reindex_many(tenant_ids: list[str], every: bool, cell: Optional[str], outdated: bool, parallel: int,
                  json_out: bool) -> None:
    from tenantctl.cli.progress import fleet_progress
    from tenantctl.operations.fleet_reindex import reindex_fleet
    from tenantctl.workspace import Workspace

    def on_plan(tenants: int, skipped: int) -> None:
        progress.plan(tenants, f"{tenants} tenant(s)" + (f", {skipped} skipped" if skipped else ""))

    # --outdated reads each tenant's stores before it knows whether it reindexes it.
    with fleet_progress("checking" if outdated else "re-indexing") as progress:
        summary = reindex_fleet(Workspace(), tenant_ids, every=every, cell=cell, outdated=outdated,
                                parallel=parallel, on_plan=on_plan,
                                on_result=lambda t, outcome: progress.done(_outcome_line(t, outcome)))
    if json_out:
        print_json(summary.as_json())
    else:
        failed_table("search reindex", summary.failed, summary.seconds)
        for skipped in sorted(summary.skipped, key=lambda s: s.tenant_id):
            console.print(f"skipped {skipped.tenant_id}: {escape(skipped.reason)}", highlight=False)
        counts = summary.counts
        console.print(f"{counts['reindexed']} of {counts['tenants']} tenant(s) re-indexed"
                      + (f"; {counts['skipped']} skipped" if counts["skipped"] else "")
                      + (f"; {counts['failed']} failed" if counts["failed"] else ""), highlight=False)
    if summary.exit_code():
        raise typer.Exit(summary.exit_code())
