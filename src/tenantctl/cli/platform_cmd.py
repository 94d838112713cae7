"""`tenantctl platform preview | up | outputs`: the default cell's stack (VPC,
shared PostgreSQL, shared bucket, and the registry table every cell's tenants
are recorded in). On the sandbox it is applied on first use; on AWS it is
applied once, explicitly. Other cells: `tenantctl cell`."""

from typing import Annotated, Optional

import typer

from tenantctl.cli.options import JsonFlag, YesFlag
from tenantctl.cli.output import changes_summary, changes_table, console, print_json, table

app = typer.Typer(name="platform", no_args_is_help=True,
                  help="The shared platform stack (VPC, shared DB, bucket, registry).")


@app.command("preview")
def preview(
    region: Annotated[Optional[str], typer.Option(help="AWS region of the platform (new stack file only).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """What `platform up` would change. Exit 0: nothing; 12: changes pending."""
    from tenantctl.cli.progress import engine_progress
    from tenantctl.errors import CHANGES_PENDING
    from tenantctl.naming import PLATFORM_STACK
    from tenantctl.operations.cell import platform_stack_file
    from tenantctl.workspace import Workspace

    ws = Workspace()
    platform_stack_file(ws, region, None)
    with engine_progress("previewing platform") as on_event:
        changes = ws.engine.preview(PLATFORM_STACK, on_event=on_event)
    if json_out:
        print_json({"changes": changes.summary()})
    else:
        console.print(f"platform: {changes_summary(changes)}")
        changes_table("platform changes", changes)
    raise typer.Exit(CHANGES_PENDING if changes.has_changes else 0)


@app.command("up")
def up(
    region: Annotated[Optional[str], typer.Option(help="AWS region of the platform (writes the stack file).")] = None,
    owner: Annotated[Optional[str], typer.Option(help="Owner tag of the shared resources.")] = None,
    yes: YesFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Create or update the platform stack (idempotent). A plan that deletes or
    replaces a shared resource is listed and asked about first."""
    from tenantctl.cli.confirm import confirmation
    from tenantctl.cli.progress import engine_progress
    from tenantctl.naming import DEFAULT_CELL
    from tenantctl.operations.cell import platform_stack_file
    from tenantctl.workspace import Workspace

    ws = Workspace()
    platform_stack_file(ws, region, owner)
    with engine_progress("applying platform") as view:
        ws.approve = confirmation(yes, view)
        result = ws.up_cell(DEFAULT_CELL, on_event=view)
    if json_out:
        print_json({"changes": result.changes.summary(), "outputs": result.outputs})
        return
    console.print(f"[green]platform applied[/] ({changes_summary(result.changes)})")
    changes_table("platform changes", result.changes)
    table("platform outputs", ["output", "value"], sorted((k, str(v)) for k, v in result.outputs.items()))


@app.command("outputs")
def outputs(json_out: JsonFlag = False) -> None:
    """The platform stack's outputs (empty until `platform up`)."""
    from tenantctl.errors import NotFound
    from tenantctl.naming import PLATFORM_STACK
    from tenantctl.workspace import Workspace

    values = Workspace().engine.outputs(PLATFORM_STACK)
    if not values:
        raise NotFound("the platform stack has not been applied on this target: run `tenantctl platform up`")
    if json_out:
        print_json(values)
        return
    table("platform outputs", ["output", "value"], sorted((k, str(v)) for k, v in values.items()))
