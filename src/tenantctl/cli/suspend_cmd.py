"""`tenantctl suspend | resume | hibernate`: a tenant that keeps its data and
serves nothing, or sleeps while idle."""

from typing import Annotated, Any, NoReturn, Optional

import typer

from tenantctl.cli.options import JsonFlag
from tenantctl.cli.output import console, print_json, record_result
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
    json_out: JsonFlag = False,
) -> None:
    """Stop an idle dedicated tenant's database instance until it is needed.

    The first request after wakes it: the runtime starts the instance and
    answers 503 with Retry-After until it is up. `tenantctl resume` wakes it
    by hand; `tenantctl cost` shows what hibernation saves. Storage, backups
    and VPC endpoints keep billing. A tenant being moved is refused (exit 5);
    `tenantctl move` wakes a hibernated tenant first.
    """
    from tenantctl.cli.progress import engine_progress
    from tenantctl.errors import Conflict, InvalidInput, NotFound, require_one_or_all
    from tenantctl.operations.hibernate import candidates
    from tenantctl.operations.hibernate import hibernate as run
    from tenantctl.workspace import Workspace

    require_one_or_all(tenant_id, all_)
    ws = Workspace()
    # --all: a tenant of a cell this project does not define is skipped before any run, saying why.
    ids, skipped = candidates(ws) if all_ else ([tenant_id], {})
    done: list[dict[str, Any]] = []
    for at, tid in enumerate(ids):
        try:
            with engine_progress(f"hibernating {tid}") as view:
                try:
                    record, usage = run(ws, tid, idle_days=idle_days, force=force, on_event=view)
                except (InvalidInput, Conflict, NotFound) as exc:
                    if not all_:
                        raise
                    # --all: the tenants that are not idle, moving or locked stay up, and so does one gone
                    # (or whose cell's file went) since the listing.
                    skipped[tid] = str(exc)
                    view.skipped(str(exc))
                    continue
        except Exception as exc:
            if not all_:
                raise
            # What the sweep did before is reported with the error, never lost behind it.
            _sweep_stopped(tid, exc, {"hibernated": done, "skipped": skipped, "not_started": ids[at + 1:]},
                           json_out)
        done.append({"record": record, "last_activity": usage.last_activity})
    if json_out:
        print_json(done[0] if not all_ else {"hibernated": done, "skipped": skipped})
        return
    _print_swept(done, skipped)


def _print_swept(done: list[dict[str, Any]], skipped: dict[str, str]) -> None:
    for item in done:
        record = item["record"]
        console.print(f"[green]tenant {record.tenant_id} hibernates[/]: database instance "
                      f"{record.hibernation.db_instance} stopped since {utc_minute(record.hibernation.since)}",
                      highlight=False)
    for tid, why in skipped.items():
        console.print(f"{tid}: skipped: {why}", highlight=False, markup=False)


def _sweep_stopped(tenant_id: str, exc: Exception, swept: dict[str, Any], json_out: bool) -> NoReturn:
    """`hibernate --all` stopped by a tenant's failure: what it did so far, then the error (with
    --json one document: the result so far with the error object in it); its exit code."""
    from tenantctl.cli.output import error_lines, error_object
    from tenantctl.errors import TenantctlError

    known = isinstance(exc, TenantctlError)
    code, rule, details = (exc.exit_code, exc.rule, exc.details) if known else (1, None, None)
    message = f"tenant {tenant_id!r}: " + (str(exc) if known else f"unexpected {type(exc).__name__}: {exc}")
    if json_out:
        print_json({**swept, "failed": {tenant_id: message}, "error": error_object(code, message, rule, details)})
    else:
        _print_swept(swept["hibernated"], swept["skipped"])
        if swept["not_started"]:
            console.print(f"not started: {', '.join(swept['not_started'])}", highlight=False, markup=False)
    error_lines(message, details)
    raise typer.Exit(code)
