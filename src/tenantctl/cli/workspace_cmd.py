"""`tenantctl workspace add | list | show | remove`: a tenant's departments and projects."""

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tenantctl.cli.options import JsonFlag, YesFlag, tenant_argument
from tenantctl.cli.output import console, print_json, show, table

if TYPE_CHECKING:
    from tenantctl.operations.workspaces import WorkspaceView

app = typer.Typer(name="workspace", no_args_is_help=True,
                  help="Workspaces of a tenant: each with its own key, schema and role, prefix, queues and IAM role.")

WorkspaceArg = Annotated[str, typer.Argument(
    metavar="WS", help="Workspace name (lowercase words joined by single hyphens).")]


def _state(v: "WorkspaceView") -> str:
    if v.desired and v.applied:
        return "applied"
    return "in the stack file, not applied" if v.desired else "applied, not in the stack file (removed on apply)"


def _rows(v: "WorkspaceView") -> list[tuple[str, str]]:
    rows = [("tenant", v.tenant_id), ("workspace", v.name), ("state", _state(v))]
    if v.spec is not None and v.spec.owner:
        rows.append(("owner", v.spec.owner))
    res = v.resources
    if res is not None:
        store = res.store
        rows += [("kms key", res.kms_key_arn), ("kms alias", res.kms_alias), ("prefix", res.prefix),
                 ("queue", res.queue_url), ("dlq", res.dlq_url), ("role", res.role_arn),
                 ("db secret", store.secret_arn),
                 ("store", f"{store.endpoint}:{store.port}/{store.database} schema {store.schema_name}")]
    return rows


@app.command("add")
def add(
    tenant_id: Annotated[str, tenant_argument("Tenant the workspace belongs to.", metavar="TENANT")],
    name: WorkspaceArg,
    owner: Annotated[Optional[str], typer.Option(help="Owner tag of the workspace's resources.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Add a workspace to a tenant: written to its stack file (commit it) and applied.

    Idempotent: a workspace the tenant has is left as it is; one in the stack
    file but not applied (a killed run) is applied."""
    from tenantctl.cli.progress import engine_progress
    from tenantctl.operations.workspaces import add as run
    from tenantctl.workspace import Workspace

    with engine_progress(f"adding workspace {name} to {tenant_id}") as view:
        done = run(Workspace(), tenant_id, name, owner=owner, on_event=view)
    if json_out:
        print_json({"record": done.record, "workspace": done.record.workspaces.get(name), "changed": done.changed})
        return
    console.print(f"[green]workspace {name} of tenant {tenant_id}[/]: "
                  + ("added" if done.changed else "already there, nothing changed"), highlight=False)


@app.command("list")
def list_(tenant_id: Annotated[str, tenant_argument("Tenant.", metavar="TENANT")], json_out: JsonFlag = False) -> None:
    """The tenant's workspaces: in its stack file, applied, or both."""
    from tenantctl.operations.workspaces import views
    from tenantctl.workspace import Workspace

    found = views(Workspace(), tenant_id)
    if json_out:
        print_json(found)
        return
    table(f"workspaces of {tenant_id}", ["workspace", "state", "schema", "prefix"],
          [(v.name, _state(v), v.resources.store.schema_name if v.resources else "-",
            v.resources.prefix if v.resources else "-") for v in found])


@app.command("show")
def show_(tenant_id: Annotated[str, tenant_argument("Tenant.", metavar="TENANT")], name: WorkspaceArg,
          json_out: JsonFlag = False) -> None:
    """One workspace: its state and resources."""
    from tenantctl.operations.workspaces import view
    from tenantctl.workspace import Workspace

    found = view(Workspace(), tenant_id, name)
    show(found, f"workspace {name} of {tenant_id}", _rows(found), json_out)


@app.command("remove")
def remove(
    tenant_id: Annotated[str, tenant_argument("Tenant the workspace belongs to.", metavar="TENANT")],
    name: WorkspaceArg,
    no_final_backup: Annotated[bool, typer.Option(
        "--no-final-backup", help="Remove without the final backup (its schema's data is then gone for good).")]
    = False,
    yes: YesFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Remove a workspace (lists what goes and asks first; --yes without asking).

    Its schema (with its data), role, queues and secret are deleted; its KMS
    key is scheduled for deletion (cancellable for 30 days); its objects stay."""
    from tenantctl.cli.confirm import confirmation
    from tenantctl.cli.progress import engine_progress
    from tenantctl.operations.workspaces import remove as run
    from tenantctl.operations.workspaces import view, what_goes
    from tenantctl.workspace import Workspace

    ws = Workspace()
    view(ws, tenant_id, name)  # unknown tenant or workspace: refused before anything is asked
    confirmation(yes).check(f"remove workspace {name} of tenant {tenant_id}",
                            what_goes(ws.registry.require(tenant_id), name, final_backup=not no_final_backup))
    with engine_progress(f"removing workspace {name} of {tenant_id}") as progress:
        done = run(ws, tenant_id, name, on_event=progress, final_backup=not no_final_backup)
    if json_out:
        print_json({"record": done.record, "removed": name, "changed": done.changed,
                    "final_backup": done.final_backup})
        return
    backup = f"final backup {done.final_backup}" if done.final_backup else "no final backup"
    console.print(f"[yellow]workspace {name} of tenant {tenant_id} removed[/]: {backup}; key scheduled for "
                  "deletion (restorable for 30 days), objects kept", highlight=False)
