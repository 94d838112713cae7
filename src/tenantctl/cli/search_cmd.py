"""`tenantctl search reindex ID`: the tenant's document search index."""

from typing import Annotated

import typer

from tenantctl.cli.options import JsonFlag, tenant_argument
from tenantctl.cli.output import console, print_json

app = typer.Typer(name="search", no_args_is_help=True, help="Tenant document search: the blind index.")


@app.command("reindex")
def reindex(
    tenant_id: Annotated[str, tenant_argument("Tenant id.")],
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

    Exit codes: 0 done, 3 bad id or tenant not active, 5 another run (another
    reindex too) holds the tenant's lock, 6 unknown tenant,
    7 store, KMS or registry unreachable, 10 the tenant's key is unusable.
    """
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
