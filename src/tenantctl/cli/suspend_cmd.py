"""`tenantctl suspend | resume | hibernate`: a tenant that keeps its data and
serves nothing, or sleeps while idle."""

from typing import Annotated, Any, Optional

import typer

from tenantctl.cli.options import JsonFlag
from tenantctl.cli.output import console, escape, print_json, record_result
from tenantctl.timestamps import utc_minute

app = typer.Typer()

TenantArg = Annotated[str, typer.Argument(metavar="ID", help="Tenant id.")]


@app.command()
def suspend(tenant_id: TenantArg, json_out: JsonFlag = False) -> None:
    """Stop a tenant from serving, keeping every resource and its data.

    The registry record becomes `suspended` (the runtime refuses the tenant as
    soon as its registry cache entry expires, 30 s by default) and the tenant
    role's trust policy denies every AssumeRole (no role session is renewed).
    Its database logins and its workspaces' become NOLOGIN, their open sessions
    ended (pooled or dedicated; never the admin login tenantctl uses).
    Written to the stack file as `suspended: true`: commit it. `resume` undoes it.
    """
    from tenantctl.cli.progress import engine_progress
    from tenantctl.operations.suspend import suspend as run
    from tenantctl.workspace import Workspace

    with engine_progress(f"suspending {tenant_id}") as view:
        record, done = run(Workspace(), tenant_id, on_event=view)
    if json_out:
        print_json(record_result(record, done))
        return
    console.print(f"[yellow]tenant {tenant_id} is {record.status.value}[/]"
                  + ("" if done else " (it was already)") + ": the runtime refuses it within its "
                  "registry cache TTL; its role can no longer be assumed; its database logins are closed",
                  highlight=False)


@app.command()
def resume(tenant_id: TenantArg, json_out: JsonFlag = False) -> None:
    """Serve a suspended or hibernated tenant again (idempotent).

    Lifts a suspension (stack file, trust policy, database logins), finishes a
    password rotation the suspension deferred (exit 7 if it fails: run resume
    again), and wakes a hibernated
    tenant's database (started, waited for until available); a hibernation
    naming an instance that is not the tenant's store (gone, or the tenant
    moved since) is cleared, and says so.
    """
    from tenantctl.cli.progress import engine_progress
    from tenantctl.operations.suspend import resume as run
    from tenantctl.workspace import Workspace

    with engine_progress(f"resuming {tenant_id}") as view:
        record, done = run(Workspace(), tenant_id, on_event=view)
    if json_out:
        print_json(record_result(record, done))
        return
    console.print(f"[green]tenant {tenant_id} is {record.status.value}[/]"
                  + (f": {', '.join(done)}" if done else ": it was neither suspended nor hibernated"),
                  highlight=False)


@app.command()
def hibernate(
    tenant_id: Annotated[Optional[str], typer.Argument(metavar="ID", help="Tenant id (or --all).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every idle dedicated tenant (a nightly job: AWS starts a "
                                                     "stopped instance by itself after 7 days).")] = False,
    idle_days: Annotated[int, typer.Option(min=1, help="Idle means no write or upload for this many days.")] = 30,
    force: Annotated[bool, typer.Option("--force", help="Hibernate it even if it was active within "
                                                        "--idle-days.")] = False,
    cell: Annotated[Optional[str], typer.Option(metavar="C", help="Every idle dedicated tenant of this cell "
                                                                  "(--all, one cell's).")] = None,
    parallel: Annotated[int, typer.Option(min=1, metavar="N", help="Tenants hibernated at once (--all, "
                                                                   "--cell).")] = 8,
    json_out: JsonFlag = False,
) -> None:
    """Stop an idle dedicated tenant's database instance until it is needed.

    The first request after wakes it: the runtime starts the instance and
    answers 503 with Retry-After until it is up. `tenantctl resume` wakes it
    by hand; `tenantctl cost` shows what hibernation saves. Storage, backups
    and VPC endpoints keep billing. A tenant being moved is refused (exit 5);
    `tenantctl move` wakes a hibernated tenant first.

    --all skips a tenant not idle, moving or locked, saying why, and goes on
    past one whose run fails (listed with its error and exit code, `failed`
    in --json); its exit code is the worst failed tenant's (0: none failed).
    --parallel tenants at once (RDS takes minutes to stop an instance: the
    waits overlap), a progress line per tenant as it ends (stderr); the
    results in id order. Ctrl-C starts no more and exits 130 once the
    running ones have ended (none is left locked or half-recorded). --cell C
    sweeps one cell's dedicated tenants only (a nightly job per cell; an
    unknown cell is exit 6).
    """
    from tenantctl.cli.output import failed_table
    from tenantctl.cli.progress import engine_progress, fleet_progress
    from tenantctl.errors import require_one_or_all
    from tenantctl.operations.fleet_threads import Watch
    from tenantctl.operations.hibernate import hibernate as run
    from tenantctl.operations.hibernate import sweep
    from tenantctl.workspace import Workspace

    require_one_or_all(tenant_id, all_, cell)
    ws = Workspace()
    if tenant_id:
        with engine_progress(f"hibernating {tenant_id}") as view:
            record, usage = run(ws, tenant_id, idle_days=idle_days, force=force, on_event=view)
        if json_out:
            print_json({"record": record, "last_activity": usage.last_activity})
        else:
            _print_hibernated(record)
        return
    # A tenant of a cell this project does not define is skipped before any run, saying why.
    with fleet_progress("hibernating") as progress:
        def on_event(event: Any) -> None:
            if event.kind == "phase":
                progress.note(escape(f"{event.stack}: {event.message}"))

        def on_result(each: Any) -> None:
            outcome = ("hibernated" if each.hibernated is not None else f"skipped: {each.skipped}"
                       if each.skipped is not None else each.failed.line())
            progress.done(escape(f"{each.tenant_id}: {outcome}"))

        swept = sweep(ws, idle_days, force, parallel=parallel, on_event=on_event, cell=cell,
                      watch=Watch.of(lambda n: progress.plan(n, f"{n} dedicated tenant(s)"), on_result))
    if json_out:
        print_json({"hibernated": swept.hibernated, "skipped": swept.skipped, "failed": swept.failed,
                    "exit_code": swept.exit_code()})
    else:
        for item in swept.hibernated:
            _print_hibernated(item["record"])
        for tid, why in swept.skipped.items():
            console.print(f"{tid}: skipped: {why}", highlight=False, markup=False)
        failed_table("hibernate", swept.failed)
    if swept.exit_code():
        raise typer.Exit(swept.exit_code())


def _print_hibernated(record: Any) -> None:
    console.print(f"[green]tenant {record.tenant_id} hibernates[/]: database instance "
                  f"{record.hibernation.db_instance} stopped since {utc_minute(record.hibernation.since)}",
                  highlight=False)
