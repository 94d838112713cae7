"""`tenantctl move ID ... --preview`: a move shown before it runs, changing nothing.

The preview makes the run's own checks (``move.check``: the one code path
both take, so it refuses exactly what the run would, with its exit code and
rule), then the refusals the run meets once it reads the record under its
lock (a live run's lock, exit 5; a move rolling back, exit 3), and says where
the tenant would go: the target cell (the tenant's own for ``--tier`` alone,
as the run takes it; else the named one), its account and region, the kind
of move, and the phases the run would go through from where the tenant
stands. The target stack is planned the way `provision --preview` plans a
tenant (``provision.proposed`` + ``Engine.preview``: the spec in the stack
file for the length of the plan, then the committed file exactly as it was),
and a move to another account or region names each resource of the old stack
its `--finalize` destroys (``Engine.preview_destroy``, the state as recorded).

No lock is taken, no registry item written, no cell slot counted, no cloud
resource created, no replication slot or subscription made: the replication
room is read as the run reads it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from tenant_runtime.models import MovePhase, TenantRecord, Tier
from tenantctl import naming
from tenantctl.engines.base import ChangeSet
from tenantctl.errors import UsageError, engine_step
from tenantctl.operations.move import Checked, account_of, check, refuse_misused, refuse_rolling_back
from tenantctl.operations.move_activation import unactivated
from tenantctl.registry import live_lock
from tenantctl.workspace import Workspace

SAME_ACCOUNT = "same-account"  # the tenant's stack keeps its key, role, queues, secret: its store (and prefix) move
CROSS_ACCOUNT = "cross-account-region"  # built again as a second stack under new keys


class Side(BaseModel):
    tier: Tier
    cell: str
    account_id: str
    region: str


class MovePreview(BaseModel):
    """What `move` would do (``outcome``: ``would_start``, ``would_resume``,
    ``would_activate``: a finalize killed before activating the tenant, or
    ``unchanged``: nothing to move), read only."""

    tenant_id: str
    outcome: str
    source: Side
    target: Side
    kind: str  # SAME_ACCOUNT | CROSS_ACCOUNT
    stack: str  # the stack the target store is built in: the tenant's own, or `<id>.k<N>`
    phase: MovePhase | None = None  # an open move's (``would_resume``)
    wakes_first: bool = False  # a hibernated tenant's instance is started first
    # A committed target cell the sandbox has not applied (the run applies it first): its
    # account's quotas, its replication workers and the target's plan wait for it.
    cell_created_first: bool = False
    changes: ChangeSet | None = None  # the target stack's plan (a move that would start)
    phases: list[str] = Field(default_factory=list)  # what the run goes through, from where the tenant stands
    finalize_destroys: list[str] = Field(default_factory=list)  # what `--finalize` removes


def preview(ws: Workspace, tenant_id: str, *, tier: Tier | None = None, cell: str | None = None,
            rollback: bool = False, finalize: bool = False, past_window: bool = False) -> MovePreview:
    """What ``move(ws, tenant_id, tier=, cell=)`` would do; raises what it would refuse.
    `--rollback` / `--finalize` have no preview (exit 2): what they act on is the
    open move `tenantctl status ID` shows."""
    naming.require_valid(tenant_id)
    refuse_misused(rollback, finalize, past_window)
    if rollback or finalize:
        raise UsageError(f"Option '--preview' shows a move before it starts or resumes, not "
                         f"'--{'rollback' if rollback else 'finalize'}': `tenantctl status {tenant_id}` shows "
                         "where the open move stands and what its rollback window is")
    record = ws.registry.require(tenant_id)
    if record.move is None and tier is None and cell is None and unactivated(ws, record) is not None:
        return _activation(ws, record)
    # A committed cell the sandbox has not applied: the run applies it first (``ensure_cell``), the
    # preview does not (it would create the cell): its quotas and the target's plan wait for it.
    unapplied = (cell is not None and record.move is None and ws.is_sandbox and cell in ws.cells()
                 and not ws.cell_outputs(cell).get("bucket"))
    checked = check(ws, record, tier=tier, cell=cell, apply_cell=False)
    source = _side(ws, record, record.tier, record.cell)
    target = _side(ws, record, checked.to_tier, checked.to_cell)
    if checked.unchanged:
        return MovePreview(tenant_id=tenant_id, outcome="unchanged", source=source, target=target,
                           kind=SAME_ACCOUNT, stack=record.current_stack)
    # What the run meets once it reads the record under its lock (``registry.hold``, ``_drive``).
    if (locked := live_lock(record)) is not None:
        raise locked
    refuse_rolling_back(record)
    to_stack = checked.to_stack if record.move is None else record.move.to_stack
    kind = SAME_ACCOUNT if to_stack is None else CROSS_ACCOUNT
    found = MovePreview(tenant_id=tenant_id, outcome="would_start" if record.move is None else "would_resume",
                        source=source if record.move is None else _side(
                            ws, record, record.move.from_tier, record.move.from_cell),
                        target=target, kind=kind, stack=to_stack or record.current_stack,
                        phase=record.move.phase if record.move else None,
                        wakes_first=record.hibernation is not None, cell_created_first=unapplied)
    found.phases = _phases(found, record.move.phase if record.move else MovePhase.preparing)
    found.finalize_destroys = _destroyed(ws, record, found)
    if checked.target is not None and not unapplied:  # the target stack reads its cell's outputs
        found.changes = _plan(ws, record, checked)
    return found


def _activation(ws: Workspace, record: TenantRecord) -> MovePreview:
    """What `move ID` does for a tenant no move is open for whose last finalize (or provision) applied
    its stack but did not activate it (``move_activation``): its stack applied again, then activated."""
    here = _side(ws, record, record.tier, record.cell)
    return MovePreview(tenant_id=record.tenant_id, outcome="would_activate", source=here, target=here,
                       kind=SAME_ACCOUNT, stack=record.current_stack, phases=[
                           "activating: no move open; the stack applied again as its file says (nothing to change "
                           "but drift), its posture checked, the tenant recorded active"])


def _side(ws: Workspace, record: TenantRecord, tier: Tier, cell: str) -> Side:
    spec = ws.cells().get(cell) or ws.cell(cell)
    region = record.region if cell == record.cell else spec.region
    return Side(tier=tier, cell=cell, account_id=account_of(ws, spec), region=region)


def _plan(ws: Workspace, record: TenantRecord, checked: Checked) -> ChangeSet:
    """The target stack's plan, as `provision --preview` plans a tenant's (the
    run's `up` of the target spec, on the recorded state, gate included)."""
    from tenantctl.operations.provision import proposed

    assert checked.target is not None
    stack = checked.to_stack or record.current_stack
    with proposed(ws, checked.target, stack), engine_step(f"previewing the move of {record.tenant_id!r}"):
        return ws.engine.preview(stack)


def _phases(found: MovePreview, at: MovePhase) -> list[str]:
    """The run's phases from ``at`` on (a resumed move skips those done), in words."""
    cells = found.source.cell != found.target.cell
    keyed = found.kind == CROSS_ACCOUNT
    objects = f"; its prefix's objects copied to cell {found.target.cell}'s bucket" if cells else ""
    said = {
        MovePhase.preparing: f"preparing: the {found.target.tier.value} store built "
                             + (f"in stack {found.stack} in cell {found.target.cell} (new key, role, queues, secret)"
                                if keyed else "beside the current one (one `up` of the tenant's stack)"),
        MovePhase.copying: "copying while the tenant serves: "
                           + ("rows relayed, each sealed column re-wrapped under the new keys" if keyed
                              else "logical replication (initial copy, then every change)") + objects,
        MovePhase.freezing: "freezing: writes refused for about a second, the target caught up, counts and "
                            "checksums compared, the registry record switched",
        MovePhase.switched: "switched: the old store read-only and in step for the rollback window "
                            "(`--rollback` undoes it, `--finalize` ends it)",
    }
    if at is MovePhase.switched:  # a run resuming a switch compares the stores again (``Mover.verify_again``)
        said[at] = ("switched: the stores compared again unless a --finalize has begun (the new store's writes "
                    "refused a moment while the old one catches up; a difference is exit 9, nothing undone); "
                    + said[at].removeprefix("switched: "))
    order = list(said)
    first = ([f"cell {found.target.cell} applied first (not applied on the sandbox yet); the move is judged "
              "against it then"] if found.cell_created_first else [])
    return first + ([said[phase] for phase in order[order.index(at):]] if at in said else [])


def _destroyed(ws: Workspace, record: TenantRecord, found: MovePreview) -> list[str]:
    """What `--finalize` removes after its final backup: the old stack's every
    resource (another account or region), else the old store and, between
    cells, the old prefix's objects."""
    if found.kind == CROSS_ACCOUNT:
        old = record.move.from_stack if record.move and record.move.from_stack else record.current_stack
        return [f"{c.type} {c.name}" for c in ws.engine.preview_destroy(old).changes]
    store = record.move.old_store if record.move else (record.resources.store if record.resources else None)
    where = f" (database {store.database}, schema {store.schema_name})" if store else ""
    gone = [f"the old {found.source.tier.value} store{where}"]
    if found.source.cell != found.target.cell:
        gone.append(f"the old prefix's objects in cell {found.source.cell}'s bucket")
    return gone
