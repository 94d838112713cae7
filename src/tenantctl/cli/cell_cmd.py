"""`tenantctl cell add | list | show | drain | evacuate | remove`: the cells tenants are placed in."""

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tenant_runtime.states import Tier
from tenantctl import cell_bounds
from tenantctl.cell_bounds import option_range
from tenantctl.cli import output
from tenantctl.cli.options import JsonFlag, YesFlag
from tenantctl.cli.output import changes_summary, console, print_json, table, warn

if TYPE_CHECKING:
    from tenantctl.operations.cell import CellInfo

app = typer.Typer(name="cell", no_args_is_help=True,
                  help="Cells: instances of the shared platform, per account and region, that tenants are placed in.")

CellArg = Annotated[str, typer.Argument(metavar="NAME", help="Cell name (`default` is the platform stack).")]


def _count(value: int | None, cap: int | None = None) -> str:
    if value is None:
        return "-"
    return f"{value}/{cap}" if cap is not None else str(value)


# Its stack holds resources, no outputs: an up stopped half way (or is running now).
_PARTLY = "partly applied: re-run `tenantctl cell add {name}` (or `tenantctl apply`)"


def _applied(info: "CellInfo") -> str:
    return {"changed since": "changed since its last up: `tenantctl apply` applies it",
            "never": "not applied yet", "partly": _PARTLY.format(name=info.name),
            "unknown": "applied (from what: not recorded)"}.get(info.applied, "applied as committed")



def _warn_relocated(cells: "list[CellInfo]") -> None:
    """Each cell whose stack file names another region or account than it was deployed in, said
    on stderr. Not an exit code: a listing reports what is; `apply` and placement refuse the file."""
    for message in (c.relocated for c in cells if c.relocated):
        warn(message)


def _rows(info: "CellInfo") -> list[tuple[str, str]]:
    rows = [("cell", info.name), ("stack", info.stack), ("region", info.region),
            *([("relocated", f"its stack file is refused: {info.relocated}")] if info.relocated else []),
            ("account", info.account_id or "the target's own"), ("account role", info.account_role_arn or "-"),
            ("tiers", ", ".join(t.value for t in info.tiers)), ("vpc", info.vpc_cidr),
            ("pooled tenants", _count(info.pooled, info.max_pooled_tenants)),
            ("db connections", f"{info.db_connection_limit} per pooled tenant login (up to "
                               f"{info.db_connection_limit * info.max_pooled_tenants} at its cap, before workspaces)"),
            *([("db connection room", info.connections.describe())] if info.connections else []),
            *([("overcommit", "allowed (allow_overcommit)")] if info.allow_overcommit else []),
            ("dedicated tenants", _count(info.dedicated)), ("draining", "yes" if info.draining else "no"),
            ("deployed", "yes" if info.deployed else "no"), ("stack file", _applied(info)),
            *([("repair pending", info.repair_pending)] if info.repair_pending else []),
            ("bucket", info.bucket or "-"), ("database", info.database or "-"),
            ("alarm subscriptions", ", ".join(info.alarm_subscriptions) or "none: its alarms reach nobody")]
    if info.account_role_arn:
        rows.append(("waker role", info.waker_role_arn or "none yet: `tenantctl cell add` applies it"))
    rows += [("account wall" if q in info.walls else "account quota", q) for q in info.quotas]
    if info.recounted is not None:
        rows.append(("recounted", ", ".join(f"{tier} {was} → {now}" for tier, (was, now) in info.recounted.items())
                     or "the counter was right"))
    return rows


def _subscriptions(values: list[str]) -> list[dict[str, str]]:
    """``PROTOCOL=ENDPOINT`` each (the protocol and endpoint are judged by the cell's spec); ``none``: no list."""
    from tenantctl.errors import UsageError

    if values == ["none"]:
        return []
    parsed = [value.partition("=") for value in values]
    bad = [value for value, (protocol, sep, endpoint) in zip(values, parsed, strict=True)
           if not (protocol and sep and endpoint)]
    if bad:
        raise UsageError(f"Invalid value for '--alarm-subscription': {bad[0]!r} is not PROTOCOL=ENDPOINT "
                         "(sqs=arn:aws:sqs:REGION:ACCOUNT:QUEUE, lambda=FUNCTION_ARN, https=URL, or none).")
    return [{"protocol": protocol.strip().lower(), "endpoint": endpoint.strip()} for protocol, _, endpoint in parsed]


@app.command("add")
def add(
    name: CellArg,
    region: Annotated[Optional[str], typer.Option(help="AWS region (required for a new cell; never changes).")] = None,
    account_role: Annotated[Optional[str], typer.Option(
        help="Role ARN to assume in the cell's account (default: the target's own account; never changes).")] = None,
    tier: Annotated[Optional[list[Tier]], typer.Option(help="Tiers placed here (repeatable; default both).")] = None,
    max_pooled: Annotated[Optional[int], typer.Option(
        metavar="N", help="Pooled tenants (schemas) its PostgreSQL takes (1..20000).",
        **option_range(cell_bounds.MAX_POOLED_TENANTS))] = None,
    vpc_cidr: Annotated[Optional[str], typer.Option(
        help="The cell's VPC CIDR (a new cell's default: the first 10.N.0.0/16 no other cell of its account and "
             "region overlaps, 10.42 left to dedicated tenants; never changes by itself).")] = None,
    db_instance_class: Annotated[Optional[str], typer.Option(help="Its shared RDS instance class.")] = None,
    db_connection_limit: Annotated[Optional[int], typer.Option(
        "--db-connection-limit", metavar="N", **option_range(cell_bounds.DB_CONNECTION_LIMIT),
        help="Connections each pooled tenant's (and workspace's) database login may hold at once (1..1000; "
             "default 10; a tenant's stack file may override it).")] = None,
    platform_connections: Annotated[Optional[int], typer.Option(
        "--platform-connections", metavar="N", **option_range(cell_bounds.PLATFORM_CONNECTIONS),
        help="Connections of its database kept for the platform's own logins (the runtime's shared pools, "
             "tenantctl's admin sessions; 0..100000, default 50): taken off max_connections before the pooled "
             "logins' cap is compared with what is left (rule connection-budget).")] = None,
    owner: Annotated[Optional[str], typer.Option(help="Owner tag of its shared resources.")] = None,
    alarm_subscription: Annotated[Optional[list[str]], typer.Option(
        "--alarm-subscription", metavar="PROTOCOL=ENDPOINT",
        help="Subscribe every alarm topic of the cell (each tenant's and workspace's) to ENDPOINT: sqs=QUEUE_ARN, "
             "lambda=FUNCTION_ARN or https=URL (repeatable; replaces the cell's list; `none` empties it). Email "
             "and SMS are refused: each topic's subscription would wait for a person to confirm it.")] = None,
    write_only: Annotated[bool, typer.Option(
        "--write-only", help="Only write the stack file (complete: the home's runtime principal, the account's "
                             "RDS log group owner): commit it and `tenantctl apply` applies it.")] = False,
    allow_overcommit: Annotated[Optional[bool], typer.Option(
        "--allow-overcommit/--no-allow-overcommit",
        help="Let an applied cell's --max-pooled x --db-connection-limit (or --platform-connections) be raised "
             "past the connections its live database leaves tenant logins (refused otherwise, exit 3): written to "
             "its stack file as allow_overcommit, which `apply` of the file reads too (default: as the file "
             "says).")] = None,
    yes: YesFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Add a cell (or apply changed options to one): write stacks/Pulumi.cell-NAME.yaml and apply it.

    A cell is a VPC, a shared PostgreSQL and a bucket in one account and region.
    With --account-role the cell lives in another account, reached by assuming
    that role (which must exist there and trust the operator). Placement never
    adds cells by itself: when a region is full, provisioning says so (exit 11).
    A change raising an applied cell's connection cap (max pooled tenants x
    their connection limit) past what its database's max_connections leaves
    tenant logins, or raising --platform-connections so that it leaves them
    less than the cap, is refused (exit 3, nothing written) without
    --allow-overcommit (allow_overcommit in the stack file)."""
    from tenantctl.cli.confirm import confirmation
    from tenantctl.cli.progress import engine_progress
    from tenantctl.operations.cell import add as run
    from tenantctl.workspace import Workspace

    options = {"region": region, "account_role_arn": account_role, "tiers": tier, "max_pooled_tenants": max_pooled,
               "vpc_cidr": vpc_cidr, "db_instance_class": db_instance_class, "owner": owner,
               "db_connection_limit": db_connection_limit, "platform_connections": platform_connections,
               "allow_overcommit": allow_overcommit,
               "alarm_subscriptions": None if alarm_subscription is None else _subscriptions(alarm_subscription)}
    ws = Workspace()
    # --write-only applies nothing: its progress must not say it does.
    with engine_progress(f"writing cell {name}'s stack file" if write_only else f"applying cell {name}") as view:
        # A changed option that replaces a shared resource is asked about first, as `platform up` does.
        ws.approve = confirmation(yes, view)
        info, result = run(ws, name, options, on_event=view, write_only=write_only)
    for warning in info.warnings:
        warn(warning)
    if info.pooled is not None and info.pooled > info.max_pooled_tenants:
        warn(f"cell {name} holds {info.pooled} pooled tenants, over its cap of {info.max_pooled_tenants}: they stay "
             "(`tenantctl move ID --cell OTHER` moves one out); no new pooled tenant is placed there until it is below")
    if json_out:
        print_json({"cell": info, "changes": result.changes.summary() if result else None})
        return
    if result is None:
        console.print(f"cell {name}: stacks/Pulumi.{info.stack}.yaml written; commit it and `tenantctl apply` "
                      "applies it")
    else:
        console.print(f"[green]cell {name} applied[/] ({changes_summary(result.changes)})")
    table(f"cell {name}", ["field", "value"], _rows(info))


@app.command("list")
def list_cells(json_out: JsonFlag = False) -> None:
    """Every cell: region, account, tenants placed against its caps, draining, whether its stack file is applied.

    Region and account are where each cell was deployed; a stack file naming another (refused by
    `apply` and placement) is flagged, with a warning on stderr."""
    from tenantctl.operations.cell import list_cells as run
    from tenantctl.workspace import Workspace

    cells = run(Workspace())
    if json_out:
        print_json({"cells": cells})
        _warn_relocated(cells)
        return
    table("cells", ["cell", "region", "account", "tiers", "pooled", "dedicated", "draining", "deployed", "stack file"],
          [(c.name, c.region, c.account_id or "own", ",".join(t.value for t in c.tiers),
            _count(c.pooled, c.max_pooled_tenants), _count(c.dedicated), "yes" if c.draining else "no",
            "yes" if c.deployed else "no",
            "relocated: refused" if c.relocated else
            _PARTLY.format(name=c.name) if c.applied == "partly" else c.applied) for c in cells])
    _warn_relocated(cells)


@app.command("show")
def show_cell(
    name: CellArg,
    recount: Annotated[bool, typer.Option("--recount", help="Count its tenants from the registry (a full scan) "
                                                              "and correct its counter.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """One cell: where it is, its tenants against its caps, its account's walls, and whether its
    pooled logins' connection cap can overcommit its live database's max_connections.

    Where it is: where it was deployed; a stack file naming another region or account is flagged
    (and warned about on stderr)."""
    from tenantctl.operations.cell import show as run
    from tenantctl.workspace import Workspace

    info = run(Workspace(), name, recount=recount)
    output.show(info, f"cell {name}", _rows(info), json_out)
    _warn_relocated([info])


@app.command("drain")
def drain(
    name: CellArg,
    undo: Annotated[bool, typer.Option("--undo", help="Place new tenants here again.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Place no new tenant in the cell (its tenants stay and keep being updated)."""
    from tenantctl.operations.cell import drain as run
    from tenantctl.workspace import Workspace

    info = run(Workspace(), name, draining=not undo)
    if json_out:
        print_json(info)
    else:
        console.print(f"cell {name}: {'draining: no new tenants' if info.draining else 'takes new tenants'}")


@app.command("evacuate")
def evacuate(
    name: CellArg,
    to: Annotated[Optional[str], typer.Option("--to", metavar="CELL", help="Move every tenant to this cell "
                                              "(default: each to the least loaded cell of its region that "
                                              "takes it, one of the same account first).")] = None,
    finalize: Annotated[bool, typer.Option("--finalize", help="End the rollback windows of the moves out of the "
                                                               "cell (final backups, old stores removed).")] = False,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, metavar="N",
                                                 help="Move at most N tenants in this run (waves).")] = None,
    max_failures: Annotated[Optional[int], typer.Option(
        "--max-failures", min=0, metavar="N",
        help="Once more than N moves have failed, start no more (the rest: 'not started', exit 1).")] = None,
    parallel: Annotated[int, typer.Option(min=1, metavar="N", help="Moves at once, each in a process of its "
                                                                   "own (default 1: one after another); at most "
                                                                   "what the cell database's free replication "
                                                                   "slots and WAL senders hold.")] = 1,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Say where each tenant would go and which moves would be refused; move nothing.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Move every tenant of a draining cell to other cells, N moves at a time (one by default).

    Each is `tenantctl move ID --cell C` (copy while serving, a short write
    freeze, verify, switch) and keeps its rollback window; a move a killed run
    left is resumed; a re-run moves what is left. `--finalize` then ends the
    windows of the moves out of the cell, after which `tenantctl cell remove`
    retires it. Tenants not active or moving otherwise are skipped, saying why.

    Exit codes: 0 every tenant it could move moved (skipped ones, those
    waiting for --finalize and those left by --limit are listed); 1 a move
    refused (no cell with room: add one or give --to), failed or not started
    (--max-failures); 8 (`check`'s) a tenant finalized but failed the posture
    check after it (drifted out of band: `tenantctl provision ID` repairs); 3
    the cell is not draining (`tenantctl cell drain NAME`), or --to is the cell
    itself or unknown, or the cell's database has no free
    replication slots and WAL senders for that many copies at once (nothing
    started; the figures named); 6 unknown cell; 7 its database cannot be
    reached; 11 --to is draining.
    """
    import time
    from collections import Counter

    from tenantctl.cli.progress import elapsed
    from tenantctl.operations.cell_evacuate import evacuate as run
    from tenantctl.workspace import Workspace

    started = time.monotonic()

    def progress(line: str) -> None:  # stderr, stamped like `move`'s (stdout holds the result)
        output.err_console.print(f"{elapsed(started)} {line}", highlight=False, markup=False)

    if dry_run and finalize:
        from tenantctl.errors import UsageError

        raise UsageError("Option '--dry-run' cannot be used with '--finalize'.")
    result = run(Workspace(), name, to=to, finalize=finalize, dry_run=dry_run, limit=limit,
                 max_failures=max_failures, parallel=parallel, progress=progress)
    if json_out:
        print_json({**result.model_dump(mode="json"), "exit_code": result.exit_code()})
    else:
        verb = "would go" if dry_run else "done"
        rows = [(t.tenant_id, t.tier.value, t.to_cell or "-", t.outcome.replace("_", " "), t.detail or "")
                for t in result.tenants]
        if rows:
            table(f"cell {name}: evacuate{' --finalize' if finalize else ''}{' --dry-run' if dry_run else ''}",
                  ["tenant", "tier", "to cell", verb, "why"], rows)
        counts = Counter(t.outcome for t in result.tenants)
        said = ", ".join(f"{n} {o.replace('_', ' ')}" for o, n in counts.items()) or "no tenant in it"
        if checked := sum(1 for t in result.tenants if t.check):
            said += f" ({checked} failed the posture check after it)"
        console.print(f"cell {name}: {said}" + (f"; stopped: {result.stopped}" if result.stopped else ""),
                      highlight=False)
    raise typer.Exit(result.exit_code())


@app.command("remove")
def remove(
    name: CellArg,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what keeps the cell or what would go; "
                                                            "change nothing.")] = False,
    yes: YesFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Retire an empty cell: destroy its stack, delete its stack file and counter.

    Refused (exit 5, each reason once with the tenants it holds) while a
    tenant is placed there or moving in or out, or a deprovisioned tenant's
    objects or backups there are still in their retention window: `tenantctl move ID --cell OTHER` empties a cell. The
    shared database's final snapshot is kept; its buckets go with what they hold
    (the confirmation lists it; --yes without asking). The home cell is never
    removed. The account-and-region RDSOSMetrics log group a cell manages is
    kept: handed over to another cell there, or, with none, given back to the
    account."""
    from tenantctl.cli.confirm import confirmation
    from tenantctl.cli.progress import engine_progress
    from tenantctl.operations.cell_remove import remove as run
    from tenantctl.workspace import Workspace

    ws = Workspace()
    with engine_progress(f"cell remove {name} --dry-run" if dry_run else f"removing cell {name}") as view:
        ws.approve = confirmation(yes, view)
        result = run(ws, name, ws.approve, dry_run=dry_run, on_event=view)
    if json_out:
        print_json(result)
    elif not result.removed:
        table(f"cell {name}: `cell remove {name} --yes` deletes", ["what goes"], [(line,) for line in result.goes])
    else:
        snapshot = f"; final database snapshot {result.final_snapshot} kept" if result.final_snapshot else ""
        group = (f"; its {result.os_metrics_group} log group kept, now cell {result.os_metrics_heir}'s"
                 if result.os_metrics_heir else f"; its {result.os_metrics_group} log group kept, given back to the "
                 "account" if result.os_metrics_group else "")
        console.print(f"[yellow]cell {name} removed[/] ({(result.changes or {}).get('delete', 0)} resources "
                      f"deleted{snapshot}{group})")
