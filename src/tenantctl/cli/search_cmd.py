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
    console.print(f"{tenant_id}: {result.documents} documents re-indexed under search key "
                  f"v{result.key_version}")
    for workspace, done in result.workspaces.items():
        console.print(f"{tenant_id}/{workspace}: {done.documents} documents re-indexed under search key "
                      f"v{done.key_version}")
