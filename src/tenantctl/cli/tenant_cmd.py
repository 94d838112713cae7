"""`tenantctl provision | deprovision | status | list | unlock`: one tenant's lifecycle."""

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tenant_runtime.states import TenantStatus, Tier
from tenantctl.cli.options import JsonFlag, YesFlag, tenant_argument
from tenantctl.cli.output import (
    changes_summary,
    changes_table,
    console,
    error_lines,
    error_object,
    escape,
    orphan_lines,
    print_json,
    record_result,
    show,
    steps_table,
    table,
)
from tenantctl.timestamps import utc_minute, utc_second

if TYPE_CHECKING:  # the models load with the commands that read records, not with `--help`
    from tenantctl.models import TenantRecord

app = typer.Typer()


def _record_rows(record: "TenantRecord") -> list[tuple[str, str]]:
    rows = [("tenant", record.tenant_id), ("tier", record.tier.value), ("status", record.status.value),
            ("region", record.region), ("cell", record.cell), ("account", record.account_id or "the registry's"),
            ("owner", record.owner), ("version", str(record.version)),
            ("updated", utc_second(record.updated_at))]
    res = record.resources
    if res is not None:
        store = res.store
        # A tombstone keeps naming what its tenant had: say what became of it.
        gone = record.status is TenantStatus.deprovisioned
        key, deleted = (" (scheduled for deletion)", " (deleted)") if gone else ("", "")
        rows += [("kms key", res.kms_key_arn + key), ("kms alias", res.kms_alias + deleted),
                 ("prefix", f"s3://{res.bucket}/{res.prefix}" + (" (what it holds is kept unless purged)"
                                                                  if gone else "")),
                 ("queue", res.queue_url + deleted), ("dlq", res.dlq_url + deleted),
                 ("role", res.role_arn + deleted), ("db secret", store.secret_arn + deleted),
                 ("store", f"{store.endpoint}:{store.port}/{store.database} schema {store.schema_name}{deleted}")]
        rows += [("workspace", f"{name}: schema {w.store.schema_name}, key {w.kms_alias}, prefix {w.prefix}{deleted}")
                 for name, w in sorted(res.workspaces.items())]
    if record.retain_until:
        rows.append(("retained until", f"{record.retain_until:%Y-%m-%d}"))
    if record.hibernation:
        woken = ("woken by the next request" if record.store_hibernation else
                 f"stale: not this tenant's store; `tenantctl resume {record.tenant_id}` clears it")
        rows.append(("hibernation", f"database instance {record.hibernation.db_instance} stopped since "
                                    f"{utc_second(record.hibernation.since)} ({woken})"))
    if record.lock:
        from tenantctl.registry import DEAD, lock_holder, lock_remedy

        holder = lock_holder(record.lock)
        dead = " (that run is no longer running)" if holder in DEAD else ""
        rows.append(("lock", f"{record.lock.operation} by {record.lock.owner}@{record.lock.host} pid {record.lock.pid} "
                             f"since {utc_second(record.lock.acquired_at)}{dead}: "
                             f"{lock_remedy(record.tenant_id, holder, record.lock)}"))
    if record.move:
        mv = record.move
        window = ""
        if mv.window_ends_at:
            from tenant_runtime.models import utcnow

            ended = (f" (ended: `tenantctl move {record.tenant_id} --finalize` is due; a rollback needs "
                     "`--rollback --past-window`)" if mv.window_ends_at <= utcnow() else "")
            window = f", rollback window until {utc_minute(mv.window_ends_at)}{ended}"
        cells = f", cell {mv.from_cell} -> {mv.to_cell}" if mv.from_cell != mv.to_cell else ""
        again = ("; its stores being compared again, the new store's writes refused meanwhile (a run killed "
                 f"doing so: `tenantctl move {record.tenant_id}` gives them back)" if mv.reverifying else "")
        rows.append(("move", f"{mv.from_tier.value} -> {mv.to_tier.value}{cells}: {mv.phase.value} "
                             f"since {utc_second(mv.phase_at)}{window}{again}"))
        if len(record.stacks) > 1:  # served from the first
            rows.append(("stacks", ", ".join(record.stacks)))
    if record.search_reindex_since:
        stores = ", ".join(f"workspace {name}'s" if name else "the tenant's own"
                           for name in record.search_reindex_stores)
        rows.append(("search reindex", f"unfinished: a run started {utc_second(record.search_reindex_since)} "
                                       "stopped (or is running: see the lock) before every document"
                                       + (f" of {stores} store" if stores else "") + " was re-hashed; "
                                       "until one finishes, each query is hashed under two search keys; "
                                       f"`tenantctl search reindex {record.tenant_id}` finishes it"))
    if record.search_rebuild_due:
        rows.append(("search index", "rebuild due (items in no index: search answers index_incomplete); the next "
                                     f"provision or `tenantctl search reindex {record.tenant_id}` rebuilds it"))
    if record.resources is not None:
        rows.append(("search analyzer", _analyzers_text(record)))
    if record.last_error:
        rows.append(("last error", record.last_error))
    return rows


def _stores(record: "TenantRecord") -> list[str]:
    """The tenant's stores as the registry names them: "" its own, then each workspace's."""
    return ["", *sorted(record.resources.workspaces)] if record.resources is not None else []


def _outdated_analyzers(record: "TenantRecord") -> tuple[str | None, list[str]]:
    """(this installation's analyzer, the stores recorded as built by another);
    the analyzer (its dictionary) is loaded only when some store has one recorded."""
    recorded = {store: record.search_analyzers[store] for store in _stores(record) if store in record.search_analyzers}
    if not recorded:
        return None, []
    from tenant_runtime import analyzer

    current = analyzer.identity()
    return current, [store for store, found in recorded.items() if found != current]


def _analyzers_text(record: "TenantRecord") -> str:
    current, outdated = _outdated_analyzers(record)
    tid, parts = record.tenant_id, []
    for store in _stores(record):
        found = record.search_analyzers.get(store)
        text = (f"{found} (outdated: this tenantctl builds {current}; `tenantctl search reindex {tid}`)"
                if store in outdated else found or
                "none yet: no `tenantctl search reindex` has finished on this store (its index takes the analyzer of "
                f"the runtime that writes its first document; `tenantctl check {tid}` reads the live one)")
        parts.append(f"workspace {store}: {text}" if store else f"the tenant's own: {text}")
    return "; ".join(parts)


def lock_json(record: "TenantRecord") -> dict | None:
    """The record's lock with ``holder`` (``lock_holder``: running, gone, reused, lapsed, elsewhere) and
    ``remedy`` (what frees it, as every refusal it causes says); None when no run holds it."""
    if record.lock is None:
        return None
    from tenantctl.registry import lock_holder, lock_remedy

    holder = lock_holder(record.lock)
    return {**record.lock.model_dump(mode="json"), "holder": holder,
            "remedy": lock_remedy(record.tenant_id, holder, record.lock)}


def status_json(record: "TenantRecord") -> dict:
    """`status --json`: the record (its lock with ``remedy``: what frees it), the stores whose recorded
    analyzer is not this installation's, and those with none recorded (no reindex finished on them: a
    new tenant's)."""
    body = {**record.model_dump(mode="json"), "lock": lock_json(record)}
    return {**body, "search_analyzers_outdated": _outdated_analyzers(record)[1],
            "search_analyzers_unrecorded": [s for s in _stores(record) if s not in record.search_analyzers]}


@app.command()
def provision(
    tenant_id: Annotated[str, tenant_argument("Tenant id: lowercase letters, digits, single hyphens.",
                                              existing=False)],
    tier: Annotated[Optional[Tier], typer.Option(help="pooled (shared VPC/DB) or dedicated (own VPC + RDS).")] = None,
    region: Annotated[Optional[str], typer.Option(help="AWS region: the tenant's data (backups included) "
                                                       "stays there; placement picks a cell in it.")] = None,
    cell: Annotated[Optional[str], typer.Option(help="Force this cell (it must be in the region, take the tier "
                                                     "and have room); default: placement chooses.")] = None,
    owner: Annotated[Optional[str], typer.Option(help="Owner tag.")] = None,
    cost_centre: Annotated[Optional[str], typer.Option(help="Cost-centre tag.")] = None,
    delay_seconds: Annotated[Optional[int], typer.Option(help="Default queue delay, 0..900 s.")] = None,
    max_receive_count: Annotated[Optional[int], typer.Option(help="Receives before a message goes to the DLQ.")] = None,
    temp_upload_days: Annotated[Optional[int], typer.Option(
        help="Days before uploads/tmp/ objects expire: one of its cell's retention classes "
             "(1, 3, 7, 14, 30, 90 by default).")] = None,
    backup_retention_days: Annotated[Optional[int], typer.Option(help="Days backups are kept.")] = None,
    db_connection_limit: Annotated[Optional[int], typer.Option(
        help="Connections its database login (and each workspace's) may hold at once, 1..1000; default: its "
             "cell's db_connection_limit (10) when pooled, none when dedicated.")] = None,
    vpc_cidr: Annotated[Optional[str], typer.Option(help="Dedicated: VPC CIDR.")] = None,
    instance_class: Annotated[Optional[str], typer.Option(help="Dedicated: RDS instance class.")] = None,
    storage_gb: Annotated[Optional[int], typer.Option(help="Dedicated: RDS storage (GB).")] = None,
    multi_az: Annotated[Optional[bool], typer.Option("--multi-az/--single-az",
                                                     help="Dedicated: Multi-AZ RDS.")] = None,
    preview: Annotated[bool, typer.Option("--preview", help="Show each resource's step and changed properties; "
                                          "change nothing. Exit 0: no changes, 12: changes pending.")] = False,
    yes: YesFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Provision a tenant, or update it to the given options (idempotent).

    Places a new tenant in a cell of its region (tier, room, not draining; exit
    11 when the region is full), writes stacks/Pulumi.<ID>.yaml (an existing
    file is edited in place: its comments stay), applies it and records the
    tenant in the registry. An existing tenant stays in its cell and is
    repaired on the way: resources changed out of band are reset, deleted ones
    created again, orphan resources removed; the output says what was repaired.
    When the plan would delete or replace a resource (or remove orphans), it is
    listed and asked about first (--yes to go ahead without asking; refused
    without a terminal). --preview shows all of it, refusing what the run would
    refuse (with the run's exit code).
    """
    from tenantctl.cli.confirm import confirmation
    from tenantctl.cli.progress import engine_progress
    from tenantctl.engines.base import Op
    from tenantctl.operations.provision import OrphansNotRemoved, merge_options, read_record
    from tenantctl.operations.provision import preview as plan
    from tenantctl.operations.provision import provision as run
    from tenantctl.workspace import Workspace

    ws = Workspace()
    read = read_record(ws, tenant_id)  # one registry read: it names the stack file and the run reserves on it
    spec = merge_options(ws, tenant_id, read=read, options={
        "tier": tier.value if tier else None, "region": region, "cell": cell, "owner": owner,
        "cost_centre": cost_centre,
        "queue.delay_seconds": delay_seconds, "queue.max_receive_count": max_receive_count,
        "lifecycle.temp_upload_days": temp_upload_days, "backup.retention_days": backup_retention_days,
        "db_connection_limit": db_connection_limit,
        "dedicated.vpc_cidr": vpc_cidr, "dedicated.instance_class": instance_class,
        "dedicated.storage_gb": storage_gb, "dedicated.multi_az": multi_az,
    })
    if preview:
        _preview(tenant_id, plan(ws, spec, read=read), json_out)
        return
    with engine_progress(f"provisioning {tenant_id}") as view:
        ws.approve = confirmation(yes, view)
        try:
            record, result = run(ws, spec, on_event=view, read=read)
            failed = None
        except OrphansNotRemoved as exc:  # applied and recorded: what it did is shown, then the failure
            record, result, failed = exc.record, exc.result, exc
    steps = [c for c in result.changes.changes if c.op is not Op.same]
    if json_out:
        print_json({"record": record, "changes": result.changes.summary(), "resources": steps,
                    "repaired": result.drift, "orphans": result.orphans,
                    **({"error": error_object(failed.exit_code, str(failed), failed.rule, failed.details)}
                       if failed else {})})
        if failed:  # as app's errors are said (its object is in the result: the one document on stdout)
            error_lines(str(failed), failed.details)
            raise typer.Exit(failed.exit_code)
        return
    console.print(f"[green]tenant {tenant_id} is {record.status.value}[/] ({changes_summary(result.changes)})")
    changes_table("resources", result.changes)
    if result.drift:
        steps_table("repaired: drift found (recorded → live), brought back", result.drift)
    orphan_lines(tenant_id, result.orphans, preview=False)
    table("registry record", ["field", "value"], _record_rows(record))
    if failed:
        raise failed


def _preview(tenant_id: str, planned, json_out: bool) -> None:
    """provision --preview: exit 0 nothing to do, 12 changes pending."""
    from tenantctl.engines.base import Op
    from tenantctl.errors import CHANGES_PENDING

    steps = [c for c in planned.changes.changes if c.op is not Op.same]
    pending = bool(steps or planned.orphans or planned.cell_created_first)
    if json_out:
        print_json({"tenant_id": tenant_id, "existing": planned.existing, "cell": planned.cell,
                    "cell_created_first": planned.cell_created_first, "changes": planned.changes.summary(),
                    "resources": steps, "orphans": planned.orphans,
                    "exit_code": CHANGES_PENDING if pending else 0})
    elif planned.cell_created_first:
        console.print(f"{tenant_id} (cell {planned.cell}): pending; its cell {planned.cell} is not applied yet and is "
                      "created first (the tenant's resources are planned once the cell exists)", highlight=False)
    else:
        changes_table(f"provision {tenant_id} --preview", planned.changes)
        orphan_lines(tenant_id, planned.orphans, preview=True)
        console.print(f"{tenant_id} (cell {planned.cell}): {changes_summary(planned.changes)}"
                      + (f", {len(planned.orphans)} orphan resource(s)" if planned.orphans else ""), highlight=False)
    if pending:
        raise typer.Exit(CHANGES_PENDING)


@app.command()
def deprovision(
    tenant_id: Annotated[str, tenant_argument("Tenant to remove.")],
    yes: YesFlag = False,
    purge_data: Annotated[bool, typer.Option(
        "--purge-data", help="Also delete every object under the tenant's prefix and its workspaces' (removed "
                             "ones' included), backups too: no final backup is taken and the tenant can never "
                             "be restored.")] = False,
    no_final_backup: Annotated[bool, typer.Option("--no-final-backup", help="Do not take the final backup "
                                                  "(`drill backup`) before destroying.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Remove a tenant's resources (lists them and asks first; --yes without asking).

    A final backup is taken first (not with --purge-data, which deletes the
    backups too; skip it with --no-final-backup): `tenantctl drill restore ID
    --target in-place --yes` brings the tenant back within its retention window.

    The KMS key is scheduled for deletion (not deleted at once), objects stay
    unless --purge-data, and the registry keeps a tombstone for audit and restores.
    """
    from tenantctl.cli.confirm import confirmation
    from tenantctl.cli.progress import engine_progress
    from tenantctl.operations.deprovision import confirmation_items, purged_line, what_went
    from tenantctl.operations.deprovision import deprovision as run
    from tenantctl.workspace import Workspace

    ws = Workspace()
    record = ws.registry.require(tenant_id)
    if record.status is not TenantStatus.deprovisioned:
        confirmation(yes).check(f"deprovision tenant {tenant_id}", confirmation_items(
            ws, record, purge_data=purge_data, final_backup=not no_final_backup))
    elif not record.reviving:  # else refused, unasked
        # A tombstone: what a given-up revive created and left, and with --purge-data what it kept.
        items = [f"{c.op.value} {c.type} {c.name}" for c in ws.engine.preview_destroy(record.current_stack).changes
                 ] if ws.engine.holds_resources(record.current_stack) else []
        if purge_data and record.resources is not None:
            items.append(purged_line(record) + ": it can never be restored")
        if items:
            confirmation(yes).check(f"remove what deprovisioned tenant {tenant_id} still holds", items)
    with engine_progress(f"deprovisioning {tenant_id}") as on_event:
        record, changes, details = run(ws, tenant_id, purge_data=purge_data, on_event=on_event,
                                       final_backup=not no_final_backup)
    if json_out:
        print_json({"record": record, "changes": changes.summary(), **details})
        return
    if "revive_leftovers_removed" in details:
        done = [f"{details['revive_leftovers_removed']} resource(s) its given-up revive created removed, its old "
                "key scheduled for deletion again"] if details["revive_leftovers_removed"] else []
        if "purged_objects" in details:
            done.append(f"{details['purged_objects']} objects purged (its backups too: it can no longer be restored)")
        console.print(f"tenant {tenant_id} was deprovisioned already: {'; '.join(done)}", highlight=False)
        return
    console.print(f"[yellow]tenant {tenant_id} deprovisioned[/]: "
                  + escape(what_went(record, changes, details, purge_data)), highlight=False)


@app.command()
def status(
    tenant_id: Annotated[str, tenant_argument("Tenant id.")],
    json_out: JsonFlag = False,
) -> None:
    """Show a tenant's registry record: status, resources, lock, last error."""
    from tenantctl.workspace import Workspace

    record = Workspace().registry.require(tenant_id)
    if json_out:  # no rows: what they say of the analyzer loads it (its dictionary) once more
        print_json(status_json(record))
    else:
        show(record, f"tenant {tenant_id}", _record_rows(record), json_out)


@app.command("list")
def list_tenants(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Page size (1..1000).")] = 50,
    cursor: Annotated[Optional[str], typer.Option(help="next_cursor of the previous page.")] = None,
    tier: Annotated[Optional[Tier], typer.Option(help="Only this tier.")] = None,
    status: Annotated[Optional[TenantStatus], typer.Option(help="Only this status.")] = None,
    cell: Annotated[Optional[str], typer.Option(help="Only tenants of this cell (or moving in or out of it).")] = None,
    region: Annotated[Optional[str], typer.Option(help="Only tenants living in this region.")] = None,
    account: Annotated[Optional[str], typer.Option(
        metavar="ACCOUNT_ID", help="Only tenants living in this AWS account (12 digits; the registry's own "
                                   "account holds the home cell's tenants).")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Every record (from --cursor on), read in one pass "
                                                         "of the table's 1 MB pages; --limit does not apply.")] = False,
    locked: Annotated[bool, typer.Option("--locked", help="Only tenants a run holds locked, with a lock column: "
                                                         "whose run, since when, and whether it provably died.")
                      ] = False,
    json_out: JsonFlag = False,
) -> None:
    """List tenants in the registry, one page at a time (or every page with --all).

    Filters combine (--tier, --status, --cell, --region, --account, --locked); --cell,
    --region and --account read each record's own cell, region and account,
    where its cell placed it, and list too a tenant whose open move holds a
    stack there (its status says `moving out: old stack kept for the rollback
    window until ...` or `moving in: ...`; `via_move` in --json). Records
    and (on the first page) stack files under an id that breaks the naming
    rules are shown as invalid: `tenantctl forget ID --yes` removes them."""
    from tenantctl.operations.forget import leftovers
    from tenantctl.operations.selection import placed_in
    from tenantctl.workspace import Workspace

    ws = Workspace()
    if cell is not None:
        ws.cell(cell)  # an unknown cell is an error (exit 6), not an empty page
    where = placed_in(ws, region, account, cell)  # the cell too: a move's other side is in no item's attribute
    keep = where
    if locked:
        keep = (lambda r: r.lock is not None and where(r)) if where else (lambda r: r.lock is not None)
    records, next_cursor = ws.registry.list(limit=None if all_pages else limit, cursor=cursor, tier=tier,
                                            status=status, where=keep)
    invalid = leftovers(ws, records, stack_files=cursor is None)
    via_move = {r.tenant_id: where.via_move(r) if where else None for r in records}
    if json_out:
        print_json({"tenants": [{**r.model_dump(mode="json"), "lock": lock_json(r), "via_move": via_move[r.tenant_id]}
                                for r in records],
                    "next_cursor": next_cursor, "invalid_ids": invalid})
        return
    rules = {e.tenant_id: e.rule for e in invalid}
    rows = [(r.tenant_id + (f" (INVALID id: {rules[r.tenant_id]} rule)" if r.tenant_id in rules else ""),
             r.tier.value, r.status.value + (f"; {via_move[r.tenant_id]}" if via_move[r.tenant_id] else ""),
             r.region, r.cell, r.owner, utc_minute(r.updated_at)) for r in records]
    if locked:
        from tenantctl.registry import lock_holder, lock_state

        table("tenants", ["tenant", "tier", "status", "region", "cell", "owner", "updated", "lock"],
              [(*row, f"{r.lock.operation} by {r.lock.owner}@{r.lock.host} pid {r.lock.pid} since "
                      f"{utc_minute(r.lock.acquired_at)}: {lock_state(r.lock, lock_holder(r.lock))}")
               for row, r in zip(rows, records, strict=True)])
    else:
        table("tenants", ["tenant", "tier", "status", "region", "cell", "owner", "updated"], rows)
    for entry in invalid:
        where = ", ".join(w for w in ("registry record" if entry.record else "", entry.stack_file or "") if w)
        console.print(f"[red]invalid tenant id {entry.tenant_id!r}[/] ({entry.rule} rule): {where}; "
                      f"`tenantctl forget {entry.tenant_id} --yes` removes it", highlight=False)
    if next_cursor:
        console.print(f"more: --cursor {next_cursor}")


@app.command()
def forget(
    tenant_id: Annotated[str, typer.Argument(
        metavar="ID", help="An id that breaks the naming rules, as `list` shows it.")],
    yes: YesFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Remove the registry record and stack file of an id that breaks the naming rules.

    No operation accepts such an id, so nothing in the cloud exists under it;
    a record that names resources is refused (exit 5). A valid id is refused
    (exit 3): `deprovision` removes tenants."""
    from tenantctl.cli.confirm import confirmation
    from tenantctl.operations.forget import forget as run
    from tenantctl.operations.forget import forgettable, left_behind
    from tenantctl.workspace import Workspace

    forgettable(tenant_id)  # a valid id is refused before any target is touched
    ws = Workspace()
    left = left_behind(ws, tenant_id)  # nothing there, or a record naming resources: said before asking
    confirmation(yes).check(f"forget {tenant_id!r}", [
        *([f"the registry record of {tenant_id!r}"] if left.record else []),
        *([f"the stack file {left.stack_file}"] if left.stack_file else [])])
    gone = run(ws, tenant_id)
    if json_out:
        print_json(gone)
        return
    what = " and ".join(w for w in ("its registry record" if gone.record else "", gone.stack_file or "") if w)
    console.print(f"forgot {tenant_id!r} ({gone.rule} rule): removed {what}", highlight=False)


@app.command()
def unlock(
    tenant_id: Annotated[str, tenant_argument("Tenant whose lock a dead run left behind.")],
    force: Annotated[bool, typer.Option(
        "--force", help="Remove a lock this host cannot prove dead (another host's run, its lock still renewed): "
                        "you checked it is gone.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Remove a lock left by a killed provision/deprovision/revive.

    A lock whose run provably died is removed without --force (any command on
    the tenant does the same): on this host its pid is gone, or belongs to a
    process started after the lock was taken; another host's run stopped
    renewing it 2 minutes ago. --force is for another host's lock still renewed.
    A tombstone a killed revive left holding its cell's slot (locked or not)
    gives the slot back in the same write: the revive is given up (`drill
    restore ID --target in-place --yes` tries again), and what its up created
    is destroyed first (a failure is a warning: `deprovision ID` retries it).
    """
    from tenantctl.errors import InvalidInput
    from tenantctl.registry import DEAD, describe_lock, lock_holder
    from tenantctl.workspace import Workspace

    ws = Workspace()
    registry = ws.registry
    record = registry.require(tenant_id)
    reviving = record.holds_revive_slot
    done = [] if record.lock is None else ["lock removed"]  # or refused below
    removed = None
    if reviving and (record.lock is None or force or lock_holder(record.lock) in DEAD):
        from tenantctl.operations.revive_leftovers import withdraw_revive

        # Before the give-up's write: what the revive's up created goes while its mark still names it.
        removed = withdraw_revive(ws, tenant_id)
    if record.lock is None:
        message = f"tenant {tenant_id} is not locked"
        record = registry.give_back_revive_slot(tenant_id, record)
    elif lock_holder(record.lock) in DEAD:
        record = registry.clear_dead_lock(record, abandon=True)
        message = f"lock on {tenant_id} removed: {record.last_error}"
    elif not force:
        raise InvalidInput(describe_lock(tenant_id, record.lock))  # it says when --force is the remedy
    else:
        record = registry.force_unlock(tenant_id)
        message = f"lock on {tenant_id} removed"
    if reviving:
        done.append("revive slot given back")
        message += (f"; its killed revive is given up: its {record.tier.value} slot of cell {record.cell} given "
                    f"back with its mark (`tenantctl drill restore {tenant_id} --target in-place --yes` tries again)")
    if removed:
        done.append("revive's resources removed")
        message += f"; {removed}"
    if json_out:
        print_json(record_result(record, done))
    else:
        console.print(message)
