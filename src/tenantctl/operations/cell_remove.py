"""Retiring a cell (`tenantctl cell remove`): its stack destroyed once nothing
of any tenant is left in it, then its stack file and counter removed.

What keeps a cell: a tenant placed there that is not deprovisioned (or a move
into or out of it, or a revive bringing it back), and a deprovisioned tenant inside its retention window
whose objects or backups are still under its prefixes in the cell's bucket
(`drill restore --target in-place` brings it back from them). A tombstone
past its window, or whose data was purged, keeps nothing: its leftovers go
with the bucket. The home cell is never removed (the registry is there), nor
one whose database's final snapshot name an earlier cell of that name took
(RDS would refuse the delete after the protections were lifted). A cell that
manages its account-and-region RDSOSMetrics log group (``os_metrics_group``)
is removed like any other: the group stays (see ``os_metrics``); refused
only while the cell taking it over has changes not applied yet (the
handover applies that cell, and must change nothing else there).

Under the cell's lease (CI's `apply` and `cell add` wait or refuse meanwhile):
1. its counter's draining flag is set, so no placement reserves a slot there;
2. what keeps it is looked for: every record (a full scan), the objects of
   tombstones in their window, and the counter's counts (a slot no record
   holds: a run killed before giving a slot back; a provision, a move and a
   revive take theirs with their record, in one transaction);
3. what goes is listed and confirmed (`--yes`, or asked on a terminal);
4. the stack file is written ``retiring`` and applied: the shared database's
   deletion protection lifted and both buckets set to go with what they hold
   (the policy gate lets exactly this through; the final snapshot is still
   taken); the RDSOSMetrics log group, when the cell manages it, recorded as
   retained (``retain_on_delete``: a state from before that option learns it here);
5. a cell that manages the RDSOSMetrics group gives it up: to another cell of
   its account and region (that cell's stack file says it manages the group,
   adopted, and an applied one is applied: it imports the group and puts it
   under its own key), or, with none, back to the account (its key and
   tenantctl's tags removed); then its own stack file says
   ``os_metrics_group: false``;
6. the stack is destroyed (the group, retained, only leaves its state), then
   its stack file and counter deleted.

A run killed after 4 finds the file ``retiring`` and goes on (the up changes
nothing, the destroy is idempotent); one killed in 5 before the cell's own
file says ``os_metrics_group: false`` hands over again to the same cell (the
one that says it manages the group already: an applied one is not applied
twice) or releases again; one killed after it finds the group handed over
(its up only drops the group from the state); one killed between the file
and the counter finds no file: a re-run deletes the counter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel

from tenantctl.confirmation import Confirmation
from tenantctl.engines.base import ChangeSet, EventSink, Op, phase
from tenantctl.errors import Conflict, InvalidInput, NotFound, engine_step
from tenantctl.models import CellSpec, TenantRecord, TenantStatus, Tier, utcnow
from tenantctl.naming import DEFAULT_CELL, cell_stack, resource_name
from tenantctl.operations import os_metrics
from tenantctl.operations.deletion_protection import snapshot_exists
from tenantctl.policy import waived
from tenantctl.registry import RegistryWriter
from tenantctl.registry_cells import held_slots
from tenantctl.stackconfig import stack_file, write_cell
from tenantctl.timestamps import utc_minute
from tenantctl.workspace import Workspace

LISTED = 1000  # objects counted per bucket for the confirmation (more: "at least")


class CellHold(BaseModel):
    """A tenant that keeps the cell, and why."""

    tenant_id: str
    kind: Literal["placed", "retained", "counted"]  # counted: a slot of the counter no record holds
    why: str


class CellRemoval(BaseModel):
    """What `cell remove` did (or, ``removed`` false, would do)."""

    cell: str
    stack: str
    region: str | None  # None: only its counter was left (a removal killed after deleting its stack file)
    account_role_arn: str | None
    removed: bool
    planned: bool = False  # its stack has resources to destroy
    goes: list[str]  # what the destroy deletes, one line each (what the confirmation lists)
    changes: dict[str, int] | None = None  # the destroy's, once run
    final_snapshot: str | None = None  # the shared database's, kept by RDS
    # The account-and-region RDSOSMetrics log group the cell manages: kept, and the cell that takes it over
    # (None: back to the account, no other cell being there). Both None: the cell does not manage it.
    os_metrics_group: str | None = None
    os_metrics_heir: str | None = None


def holds(registry: RegistryWriter, spec: CellSpec, s3: Any, now: datetime) -> list[CellHold]:
    """The tenants that keep the cell (every record read). ``s3``: a client of
    the cell's account and region, to look under tombstones' prefixes."""
    found: list[CellHold] = []
    for record in registry.iter_all():
        tiers = sorted(tier.value for cell, tier in held_slots(record) if cell == spec.name)
        if tiers:
            found.append(CellHold(tenant_id=record.tenant_id, kind="placed",
                                  why=f"{'/'.join(tiers)} tenant here, {_how(record)}"))
        elif (record.status is TenantStatus.deprovisioned and record.cell == spec.name
              and record.retain_until is not None and record.retain_until > now):
            kept = _kept_prefixes(record, s3)
            if kept:
                found.append(CellHold(tenant_id=record.tenant_id, kind="retained", why=(
                    f"deprovisioned, retained until {utc_minute(record.retain_until)} with objects or backups "
                    f"under {', '.join(kept)} (`drill restore --target in-place` needs them)")))
    return found


def _how(record: TenantRecord) -> str:
    """What a tenant holding a slot is doing."""
    if record.move is not None:
        return f"moving ({record.move.phase.value})"
    if record.reviving:  # a killed one holds it until a re-run ends it, or `unlock` gives it up
        return (f"deprovisioned, being restored in place (`tenantctl drill restore {record.tenant_id} --target "
                f"in-place --yes` finishes it, or gives the slot back if it fails; `tenantctl unlock "
                f"{record.tenant_id}` gives a killed one up, its slot with it)")
    return record.status.value


def _kept_prefixes(record: TenantRecord, s3: Any) -> list[str]:
    """The tombstone's prefixes (its own, its workspaces') that still hold an object version."""
    res = record.resources
    if res is None:
        return []
    prefixes = [res.prefix] + [w.prefix for _, w in sorted(res.workspaces.items())]
    return [p for p in prefixes if _versions(s3.list_object_versions(Bucket=res.bucket, Prefix=p, MaxKeys=1))]


def _versions(page: dict[str, Any]) -> int:
    return len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))


def _counted_without_record(registry: RegistryWriter, name: str, found: list[CellHold]) -> CellHold | None:
    """The counter counts more tenants than the records hold: a stale count
    (a provision, a move and a revive take their slot with their record, in
    one transaction; a run killed before giving one back leaves it counted)."""
    counts = (registry.cell_counts([name]).get(name) or ({}, False))[0]
    counted = sum(counts.get(t.value, 0) for t in Tier)
    live = sum(1 for h in found if h.kind == "placed")
    if counted <= live:
        return None
    return CellHold(tenant_id="(counter)", kind="counted", why=(
        f"its counter holds {counted} slot(s), its records {live}: the count is stale (a run killed before "
        f"giving a slot back): `tenantctl cell show {name} --recount` corrects it"))


def _by_reason(found: list[CellHold]) -> list[str]:
    """One line per reason, naming the tenants it holds (a cell of hundreds of tenants
    left is a few lines, not one per tenant): placed ones first, then retained, counted."""
    kinds = list(get_args(CellHold.model_fields["kind"].annotation))
    ids: dict[str, list[str]] = {}
    for hold in sorted(found, key=lambda h: (kinds.index(h.kind), h.why)):
        ids.setdefault(hold.why, []).append(hold.tenant_id)
    return [f"{why}: {', '.join(sorted(tenants))}" for why, tenants in ids.items()]


def _bucket_count(s3: Any, bucket: str) -> str:
    page = s3.list_object_versions(Bucket=bucket, MaxKeys=LISTED)
    return f"at least {_versions(page)}" if page.get("IsTruncated") else str(_versions(page))


def _goes(spec: CellSpec, outputs: dict[str, Any], plan: ChangeSet, s3: Any, heir: CellSpec | None) -> list[str]:
    lines = []
    if outputs.get("db_endpoint"):
        lines.append(f"the shared PostgreSQL {outputs['db_endpoint']} (database {outputs.get('db_name')}): deleted, "
                     f"a final snapshot {resource_name(spec.stack, 'final')} kept")
    bucket, logs = outputs.get("bucket"), outputs.get("logs_bucket")
    for name, what in ((bucket, f"; its access logs are in s3://{logs}" if logs else ""),
                       (logs, f": the access logs of s3://{bucket}" if bucket else "")):
        if name:
            lines.append(f"s3://{name}: deleted with every object version in it ({_bucket_count(s3, name)}{what})")
    if outputs.get("platform_key_arn"):
        lines.append(f"KMS key {outputs['platform_key_arn']}: scheduled for deletion")
    lines += [f"delete {c.type} {c.name}" + (": with its data" if c.loses_data else "")
              for c in plan.changes if c.op is Op.delete and not c.retained]
    if spec.os_metrics_group:
        lines.append(f"the {os_metrics.GROUP} log group of {spec.region}: kept (every RDS instance of the account "
                     "and region with enhanced monitoring writes there), " + (
                         f"handed over to cell {heir.name} (its stack imports it and puts it under its key)"
                         if heir is not None else "given back to the account (its key and tenantctl's tags removed)"))
    lines.append(f"stacks/Pulumi.{spec.stack}.yaml and the cell's counter in the registry")
    return lines


def remove(ws: Workspace, name: str, confirm: Confirmation, *, dry_run: bool = False,
           on_event: EventSink | None = None) -> CellRemoval:
    """Retire the cell ``name`` (see the module's docstring). ``dry_run``: say
    what keeps it or what would go, change nothing. Refused (what keeps it, or
    not confirmed): the draining flag is put back as it was."""
    from tenantctl import cell_lease

    if name == DEFAULT_CELL:
        raise InvalidInput("the default cell is the home of the registry: it is never removed")
    registry = ws.registry
    path = stack_file(ws.stacks_dir, cell_stack(name))
    if not path.exists():
        if dry_run:
            raise NotFound(f"no cell {name!r} in {ws.stacks_dir}")
        return _forget_counter(ws, registry, name)
    spec = ws.cell(name)
    heir = os_metrics.heir(ws, spec, ws.platform_outputs().get("account_id")) if spec.os_metrics_group else None
    clients = ws.cell_clients(name)
    if dry_run:
        return _planned(ws, registry, spec, clients, heir)
    with cell_lease.held(registry, name, "cell remove") as lease:
        registry.set_draining(name, True)  # before looking: no placement slips in behind the look
        try:
            result = _planned(ws, registry, spec, clients, heir)
            confirm.check(f"remove cell {name} ({spec.region})", result.goes)
        except BaseException:
            registry.set_draining(name, spec.draining)
            raise
        outputs = ws.cell_outputs(name)
        retiring = spec.model_copy(update={"retiring": True, "draining": True})
        if result.planned:
            write_cell(ws.stacks_dir, retiring)
            phase(on_event, spec.stack, "lifting the database's deletion protection, letting the buckets go")
            with waived("deletion-protection"), engine_step(f"cell {name}: lifting its protections"):
                ws.engine.up(spec.stack, on_event=on_event)
        if spec.os_metrics_group:
            _give_up_os_metrics(ws, retiring, heir, clients, on_event)
        with engine_step(f"cell {name}: destroying its stack"):
            changes = ws.engine.destroy(spec.stack, on_event=on_event)
        path.unlink()
        registry.forget_cell(name, lease.lock)
        lease.forgotten = True
    ws.forget_cell_outputs(name)
    return result.model_copy(update={"removed": True, "changes": changes.summary(),
                                     "final_snapshot": resource_name(spec.stack, "final")
                                     if outputs.get("db_endpoint") else None})


def _give_up_os_metrics(ws: Workspace, retiring: CellSpec, heir: CellSpec | None, clients: Any,
                        on_event: EventSink | None) -> None:
    """Step 5 of the module's docstring: the group to ``heir`` (None: to the account),
    then the cell's own file no longer names it (the group, retained, only leaves its state)."""
    if heir is not None:
        # A group that does not exist (the cell never applied): the heir's up creates it.
        os_metrics.hand_over(ws, heir, os_metrics.exists(clients("logs")), on_event)
    else:
        phase(on_event, retiring.stack, f"giving the {os_metrics.GROUP} log group back to the account")
        os_metrics.release(clients("logs"), retiring)
    write_cell(ws.stacks_dir, retiring.model_copy(update={"os_metrics_group": False, "os_metrics_adopted": False}))


def _planned(ws: Workspace, registry: RegistryWriter, spec: CellSpec, clients: Any,
             heir: CellSpec | None) -> CellRemoval:
    """What the removal deletes; Conflict naming what keeps the cell, or what would stop its destroy halfway."""
    s3 = clients("s3")
    found = holds(registry, spec, s3, utcnow())
    stray = _counted_without_record(registry, spec.name, found)
    if found:
        raise Conflict(f"cell {spec.name!r} still holds {len(found)} tenant(s): move them out (`tenantctl move ID "
                       "--cell OTHER`), deprovision them, or wait for their retention to end; nothing was changed",
                       details=_by_reason(found + ([stray] if stray else [])))
    if stray:
        raise Conflict(f"cell {spec.name!r} holds no tenant, but {stray.why}; nothing was changed",
                       details=[f"{stray.tenant_id}: {stray.why}"])
    if heir is not None and (why := os_metrics.unapplied(ws, heir)):
        raise Conflict(why)
    outputs, final = ws.cell_outputs(spec.name), resource_name(spec.stack, "final")
    if outputs.get("db_endpoint") and snapshot_exists(clients("rds"), final):
        raise Conflict(f"cell {spec.name!r}: RDS would name its database's final snapshot {final}, which an earlier "
                       f"cell of that name left in {spec.region}: copy that snapshot aside under another name (or "
                       "delete it), then remove the cell again; nothing was changed")
    plan = ws.engine.preview_destroy(spec.stack)
    return CellRemoval(cell=spec.name, stack=spec.stack, region=spec.region, account_role_arn=spec.account_role_arn,
                       removed=False, planned=bool(plan.changes), goes=_goes(spec, outputs, plan, s3, heir),
                       os_metrics_group=os_metrics.GROUP if spec.os_metrics_group else None,
                       os_metrics_heir=heir.name if heir is not None else None)


def _forget_counter(ws: Workspace, registry: RegistryWriter, name: str) -> CellRemoval:
    """No stack file: a removal killed after deleting it leaves the counter, which goes now."""
    if registry.counter_items([name])[name] is None:
        raise NotFound(f"no cell {name!r} in {ws.stacks_dir} and none in the registry (`tenantctl cell list` "
                       "shows the cells)")
    if ws.engine.outputs(cell_stack(name)):
        raise InvalidInput(f"cell {name!r} has no stack file but its stack is still up: restore "
                           f"stacks/Pulumi.{cell_stack(name)}.yaml from your repository's history (its region and "
                           "account are there), then remove it again")
    from tenantctl import cell_lease

    with cell_lease.held(registry, name, "cell remove") as lease:
        registry.forget_cell(name, lease.lock)
        lease.forgotten = True
    return CellRemoval(cell=name, stack=cell_stack(name), region=None, account_role_arn=None, removed=True,
                       goes=["the cell's counter in the registry (its stack was destroyed already)"])
