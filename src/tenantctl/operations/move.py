"""Move a tenant to another tier, another cell of its account and region, or
both, with its data, while it serves (the tenant keeps its account and region:
its key, role, queues and secret stay; what moves is its store and, between
cells, its prefix, from the old cell's bucket to the new one's).

    preparing     the target store is created beside the current one: the stack
                  declares both (the spec's ``retiring`` store), one `up`
    copying       the target follows the current store (logical replication:
                  initial copy, then every change) while the tenant serves;
                  between cells, the prefix's objects copied (server-side)
    freezing      writes refused (runtimes: 503 + Retry-After; stale ones by the
                  revoked write rights), the objects changed since copied, the
                  target catches up, the slot of the link back taken (no
                  room: the freeze ends, exit 3), counts and checksums
                  compared, the registry record switched (conditional write:
                  tier, cell, store and bucket at once)
    switched      the record names the target; the old store is read-only and
                  follows the new one for the rollback window (the old prefix
                  stays, the role reaches both); a run killed before the
                  verification: the next ``move ID`` compares the stores again
                  (``Mover.verify_again``)
    --finalize    final backup, the old store (and the old prefix's objects)
                  removed (the spec without ``retiring``), the move cleared by
                  a write recording what was applied, then the tenant activated
                  (a run killed between the two: the next ``--finalize``
                  activates it, ``move_activation``)
    --rollback    before the switch: the target removed; after it: a freeze the
                  other way round (objects included), the record switched back,
                  then the target removed

A hibernated tenant's instance is started first (``_wake``: the move copies
from it, and it follows the new store through the rollback window), and
`hibernate` refuses a tenant while its move is open.

Each phase is written to the record (``TenantRecord.move``) before its work,
under the tenant's lock, so a killed run is resumed (``move ID``) or undone
(``move ID --rollback``); the lock of a run that provably died on this host
is cleared by that next run. At every point exactly one store takes the tenant
role's writes.

Cell slots: an open move holds a slot where each store is (the old tier's in
the old cell, the target tier's in the target cell). The target's is taken
before anything is created (refused with exit 11 when that cell is full or
draining); ``--finalize`` gives the old one back once the old store is gone,
``--rollback`` the target's.

Workspaces: each has its schema and role in the tenant's store, so a tier
move carries them with the tenant's: the target spec declares each
workspace's schema in both stores (named by the store's generation), the one
replication link carries the tenant's schema and every workspace's, the
freeze revokes every workspace role's writes with the tenant role's, the
counts and checksums are compared per schema, and the conditional registry
write that switches the tenant's store switches its workspaces' with it (and
their secrets after it); between cells each workspace's prefix is copied
with the tenant's (under the workspace's key), and its role reaches it in
both buckets while the move is open. ``--rollback`` and ``--finalize`` cover
them the same way (a final backup of each workspace's old schema under its
own key; its old prefix removed).

A target cell of another account or region needs the tenant's key, role,
queues and secret created again there and every ciphertext re-wrapped under
the new key: that move is ``move_keyed.KeyedMover``'s (a second stack of the
tenant), on this plumbing, for either tier on either side. A dedicated
tenant's move to another cell of its account and region as dedicated is
refused: its store's resources (VPC, instance, database) are named after the
tenant, not the stack, and those names are unique per account and region, so
a second one cannot stand beside it; move it as pooled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tenant_runtime.models import MovePhase, TenantMove, TenantRecord, TenantStatus, Tier
from tenantctl.cell_database import PlanRooms, Server
from tenantctl.errors import Conflict, InvalidInput, TargetUnavailable, UsageError
from tenantctl.models import CellSpec, TenantSpec, utcnow
from tenantctl.naming import require_valid
from tenantctl.operations.move_activation import activate_unactivated, unactivated
from tenantctl.operations.move_keyed import KeyedMover, refuse_or_target, refuse_over_quota
from tenantctl.operations.mover import Mover, Progress, in_store, target_spec
from tenantctl.placement import named_cell, slot_cap, slot_refused, unfit
from tenantctl.stackconfig import read_tenant, stack_file
from tenantctl.timestamps import utc_second
from tenantctl.workspace import Workspace

__all__ = ["KeyedMover", "MoveResult", "Mover", "in_store", "move", "target_spec"]

DEFAULT_WINDOW = timedelta(days=1)


class MoveResult(BaseModel):
    tenant_id: str
    outcome: str  # switched | finalized | rolled_back | unchanged | activated (a finalize killed before it)
    from_tier: Tier
    to_tier: Tier
    from_cell: str | None = None
    to_cell: str | None = None
    phase: MovePhase | None = None
    copy_seconds: float | None = None
    freeze_seconds: float | None = None  # writes refused, from the freeze being recorded to the switch
    rows: dict[str, int] = {}
    verified: bool = False  # this run compared the two stores and found them equal (the switch, or its resume)
    objects_copied: int | None = None  # a move between cells: objects copied (and deleted) by its passes
    window_ends_at: str | None = None


def move(ws: Workspace, tenant_id: str, *, tier: Tier | None = None, cell: str | None = None,
         rollback: bool = False, finalize: bool = False, window: timedelta = DEFAULT_WINDOW,
         past_window: bool = False, progress: Progress | None = None) -> MoveResult:
    """Start, resume, finalize or roll back the move of ``tenant_id``. ``past_window``:
    roll back a switched move whose rollback window ended (refused otherwise)."""
    require_valid(tenant_id)
    refuse_misused(rollback, finalize, past_window)
    record = ws.registry.require(tenant_id)
    if (record.move is None and not rollback and tier is None and cell is None
            and unactivated(ws, record) is not None):
        return _activated(ws, record, progress)
    checked = check(ws, record, tier=tier, cell=cell, rollback=rollback, finalize=finalize,
                    past_window=past_window)
    to_tier, to_cell, target = checked.to_tier, checked.to_cell, checked.target
    if checked.unchanged:
        return MoveResult(tenant_id=tenant_id, outcome="unchanged", from_tier=record.tier, to_tier=to_tier,
                          from_cell=record.cell, to_cell=to_cell)

    with ws.registry.hold(tenant_id, "move") as held:
        if held.record.hibernation is not None:  # what the lock's write left names its store
            _wake(ws, held, progress)
        if target is not None:
            resources = held.record.resources
            assert resources is not None
            to_stack = checked.to_stack
            saved = ws.registry.save_taking_slot(
                held.record, to_cell, to_tier, checked.cap, last_error=None, move=TenantMove(
                    from_tier=held.record.tier, to_tier=to_tier, from_cell=held.record.cell, to_cell=to_cell,
                    old_store=resources.store, old_bucket=resources.bucket if to_cell != held.record.cell else None,
                    to_stack=to_stack, from_stack=held.record.current_stack if to_stack else None))
            if saved is None:  # the last slot taken, or the cell drained, since it was read
                raise slot_refused(ws, to_cell, to_tier, refused(tenant_id), ELSEWHERE)
            held.record = saved
        mover = _mover(ws, held, progress)
        run = mover.move
        outcome = _drive(mover, target, rollback, finalize, window)
    return MoveResult(tenant_id=tenant_id, outcome=outcome, from_tier=run.from_tier, to_tier=run.to_tier,
                      from_cell=run.from_cell, to_cell=run.to_cell,
                      phase=held.record.move.phase if held.record.move else None,
                      window_ends_at=(held.record.move.window_ends_at.isoformat()
                                      if held.record.move and held.record.move.window_ends_at else None),
                      **mover.result_extra)


ELSEWHERE = ", or move it to another cell (`--cell`)"  # a move's way round a draining target cell


def refused(tenant_id: str) -> str:
    """How a move refused for want of a slot in its target cell (exit 11) begins."""
    return f"tenant {tenant_id!r} refused before anything was created"


@dataclass(frozen=True)
class Checked:
    """What `move` found it would do once past every refusal it makes before
    taking the tenant's lock: start a move (``target``: its spec; ``to_stack``:
    the second stack of a move to another account or region; ``cap``: the
    target slot's), go on with the open one, or nothing (``unchanged``)."""

    to_tier: Tier
    to_cell: str
    target: TenantSpec | None = None
    to_stack: str | None = None
    cap: int | None = None
    unchanged: bool = False


def refuse_misused(rollback: bool, finalize: bool, past_window: bool) -> None:
    """Options that do not go together (exit 2), before the registry is read."""
    if rollback and finalize:
        raise UsageError("Option '--rollback' cannot be used with '--finalize'.")
    if past_window and not rollback:
        raise UsageError("Option '--past-window' goes with '--rollback'.")


def check(ws: Workspace, record: TenantRecord, *, tier: Tier | None = None, cell: str | None = None,
          rollback: bool = False, finalize: bool = False, past_window: bool = False,
          apply_cell: bool = True, taken: int = 0, rooms: PlanRooms | None = None) -> Checked:
    """Every refusal `move` makes before it takes the tenant's lock, in the
    run's order, changing nothing: the one code path the run and its preview
    (`move --preview`) share, so that a preview refuses exactly what the run
    would, with the same exit code and rule. ``apply_cell=False`` (a preview):
    a committed target cell the sandbox has not applied, which the run applies
    first to read its account's quotas (``refuse_over_quota``), is not applied,
    its quotas and replication workers judged once it exists. ``taken``: slots
    of the target tier there that moves judged before this one (a dry run of
    `cell evacuate`) would take first, counted as taken; ``rooms``: that dry
    run's replication room of each server, read once for all its moves
    (``refuse_without_replication_room``)."""
    tenant_id = record.tenant_id
    to_tier, to_cell = tier or record.tier, cell or record.cell
    if record.move is None:
        if rollback or finalize:
            raise InvalidInput(f"tenant {tenant_id!r} has no move to {'roll back' if rollback else 'finalize'}")
        if tier is None and cell is None:
            raise UsageError("Missing option '--tier' or '--cell' (what the move starts towards).")
        if record.status is not TenantStatus.active or record.resources is None:
            raise InvalidInput(f"tenant {tenant_id!r} is {record.status.value}: only an active tenant is moved")
        if to_tier is record.tier and to_cell == record.cell:
            return Checked(to_tier, to_cell, unchanged=True)
        target, to_stack = _refuse_or_target(ws, record, to_tier, to_cell, apply_cell)
        way_back = None
        if to_stack is None:  # a replication link, not the KeyedMover's relay: room for it first (exit 3)
            way_back = refuse_without_replication_room(ws, record, to_tier, to_cell, rooms)
        # Both stores exist while the move is open: it holds a slot where each is (exit 11: full or draining),
        # taken with the record of the move (``save_taking_slot``), so a run killed before that counts none.
        cap = slot_cap(ws, to_cell, to_tier, refused(tenant_id), ELSEWHERE, taken)
        if rooms is not None and way_back is not None:  # a plan's move that passes holds its way back there
            rooms.take(way_back)
        return Checked(to_tier, to_cell, target, to_stack, cap)
    if (tier is not None and tier is not record.move.to_tier) or (cell is not None and cell != record.move.to_cell):
        # The tenant is busy, as for a provision or deprovision of it (registry.refuse_open_move): exit 5.
        raise Conflict(f"tenant {tenant_id!r} is being moved ({record.move.phase.value}) to "
                       f"{record.move.to_tier.value} in cell {record.move.to_cell!r}: finish or roll back that move "
                       f"first (`tenantctl move {tenant_id}`, `--finalize` or `--rollback`)")
    if rollback and not past_window:
        refuse_past_window(record, record.move)
    elif finalize and record.move.phase is not MovePhase.switched:
        raise InvalidInput(f"tenant {tenant_id!r}'s move is {record.move.phase.value}: only a switched move is "
                           "finalized (`tenantctl move ID` resumes it)")
    return Checked(record.move.to_tier, record.move.to_cell)


def refuse_rolling_back(record: TenantRecord) -> None:
    """A move rolling back is finished by `--rollback` only: resuming it forwards is refused (exit 3)."""
    if record.move is not None and record.move.phase is MovePhase.rolling_back:
        raise InvalidInput(f"tenant {record.tenant_id!r} is rolling back: `tenantctl move ID --rollback` "
                           "finishes it")


def _activated(ws: Workspace, record: TenantRecord, progress: Progress | None) -> MoveResult:
    """A finalized move whose run was killed before activating the tenant, activated
    (``move_activation``); a run that finished it since leaves nothing to finalize."""
    done = activate_unactivated(ws, record.tenant_id, progress)
    if done is None:
        raise InvalidInput(f"tenant {record.tenant_id!r} has no move to finalize")
    return MoveResult(tenant_id=done.tenant_id, outcome="activated", from_tier=done.tier, to_tier=done.tier,
                      from_cell=done.cell, to_cell=done.cell)


def refuse_without_replication_room(ws: Workspace, record: TenantRecord, to_tier: Tier, to_cell: str,
                                    rooms: PlanRooms | None = None) -> Server | None:
    """A move's copy holds replication slots and WAL senders on the server of
    the store it leaves, and a logical replication apply worker (with a
    table-sync one) on the server of the store it goes to (``cell_database``):
    with no room for one it would fail or wait without end once its target
    store was built, so it is refused first (exit 3, naming the figures; exit
    7 when a server cannot be reached). A dedicated target is an instance of
    its own, made by the move: every worker free. ``rooms``: a plan's (a dry
    run of `cell evacuate`): the leaving server's room read once for all its
    moves, and each target cell's workers once. Returns the server of the new
    store, where the move's way back holds a slot once switched (None: a store
    of its own)."""
    import psycopg

    from tenantctl.cell_database import cell_admin, first_line, refuse_room, refuse_workers
    from tenantctl.drills.context import context_from_workspace

    assert record.resources is not None
    store = record.resources.store
    where = f"the server of tenant {record.tenant_id!r}'s store ({store.endpoint}:{store.port})"

    def connect() -> Any:
        try:
            return context_from_workspace(ws, record).connect(store.endpoint, store.port, store.database)
        except psycopg.OperationalError as exc:
            raise TargetUnavailable(f"{where} took no admin connection: {first_line(exc)}") from None

    rooms = rooms or PlanRooms()
    refuse_room(rooms.room((store.endpoint, int(store.port)), connect), 1, where)
    outputs = ws.cell_outputs(to_cell)
    if to_tier is not Tier.pooled or not outputs.get("db_endpoint"):
        return None
    refuse_workers(rooms.workers(to_cell, lambda: cell_admin(ws, to_cell)), 1, f"cell {to_cell!r}'s database")
    return outputs["db_endpoint"], int(outputs.get("db_port") or 5432)


def refuse_past_window(record: TenantRecord, move: TenantMove) -> None:
    """A switched move whose rollback window ended is not rolled back unless asked
    for explicitly (exit 3): by then the tenant has run on the new store for as long
    as its operator wanted to be able to go back, and `--finalize` is what is due.
    A rollback already under way (``rolling_back``: writes frozen) always finishes."""
    ends = move.window_ends_at
    if move.phase is not MovePhase.switched or ends is None or ends > utcnow():
        return
    switched = f" (switched {utc_second(move.switched_at)})" if move.switched_at else ""
    raise InvalidInput(f"tenant {record.tenant_id!r}: the move's rollback window ended at "
                       f"{utc_second(ends)}{switched}: `tenantctl move {record.tenant_id} --finalize` ends "
                       f"the move; `--rollback --past-window` rolls it back anyway (the old store still follows "
                       "the new one)", rule="rollback-window")


def _wake(ws: Workspace, held: Any, progress: Progress | None) -> None:
    """Start a hibernated tenant's instance before the move goes on: a move
    copies from that store, which then follows the new one through the
    rollback window, so it must run. The move was asked for, so the tenant is
    woken rather than the move refused (hibernate refuses an open move)."""
    from tenantctl.operations.hibernate import wake_held

    tenant_id, say = held.record.tenant_id, progress or (lambda _line: None)
    done = wake_held(ws, held, lambda event: say(f"move {tenant_id}: {event.message}"))
    say(f"move {tenant_id}: {done} (a move copies from its store)")


def _mover(ws: Workspace, held: Any, progress: Progress | None) -> Mover:
    """A move building the tenant again in a second stack (another account or
    region) is the KeyedMover's; every other move keeps the tenant's stack."""
    return (Mover if held.record.move.to_stack is None else KeyedMover)(ws, held, progress)


def _drive(mover: Mover, target: TenantSpec | None, rollback: bool, finalize: bool, window: timedelta) -> str:
    mover.thaw_reverifying()  # a run killed comparing a resumed switch's stores left the new store frozen
    if rollback:
        mover.rollback()
        return "rolled_back"
    if finalize:
        mover.finalize()
        return "finalized"
    refuse_rolling_back(mover.record)
    phase = mover.move.phase
    if phase is MovePhase.preparing:
        mover.prepare(target or mover.resumed_target())
        phase = MovePhase.copying
    if phase is MovePhase.copying:
        mover.copy()
        phase = MovePhase.freezing
    if phase is MovePhase.freezing:
        mover.switch(window)
    else:  # switched by a run killed before it finished what follows the switch, its verification too
        mover.switched()
        mover.verify_again()
    return "switched"


def _refuse_or_target(ws: Workspace, record: TenantRecord, tier: Tier, cell: str,
                      apply_cell: bool = True) -> tuple[TenantSpec, str | None]:
    """The spec of the move's target and, for a cell of another account or
    region, the second stack it is built in (else None), after every check
    that refuses a move before anything is created: the target cell (known,
    within the tenant's residency, takes the tier and the tenant's retention
    classes), the policy gate's spec rules and quotas."""
    from tenantctl.policy import refuse_unsafe_spec

    path = stack_file(ws.stacks_dir, record.current_stack)
    if not path.exists():
        raise InvalidInput(f"tenant {record.tenant_id!r} has no committed stack file ({path}): nothing to move from")
    spec = read_tenant(path).model_copy(update={"cell": record.cell})
    refuse_unapplied_edits(record, spec, path)
    if cell != record.cell and _refuse_cell(ws, record, spec, tier, cell):
        return refuse_or_target(ws, record, spec, tier, cell, apply_cell)
    target = target_spec(spec, tier, cell=cell)
    if target.region != record.region:
        raise InvalidInput(f"tenant {record.tenant_id!r} lives in {record.region}; a move never leaves its region")
    refuse_unsafe_spec(target)
    refuse_over_quota(ws, target, cell, apply_cell)
    return target, None


def refuse_unapplied_edits(record: TenantRecord, spec: TenantSpec, path: Path) -> None:
    """A move builds its target from the stack file and applies it: edits made to
    the file since its last apply would ride along unreviewed, and a tier edited
    there would name the store the move retires wrongly (declaring a store that
    does not exist, and not the one that does). Both are refused (exit 3) before
    anything is created."""
    if spec.tier is not record.tier:
        raise InvalidInput(
            f"tenant {record.tenant_id!r} is {record.tier.value} but its stack file {path} says "
            f"`tier: {spec.tier.value}`: a move writes the tier itself; put `tier: {record.tier.value}` back and "
            f"run `tenantctl move {record.tenant_id} --tier {spec.tier.value}`", rule="unapplied-edits")
    if record.spec_digest and spec.content_hash() != record.spec_digest:
        raise InvalidInput(
            f"tenant {record.tenant_id!r}: its stack file {path} was edited since its last apply, and a move "
            f"would apply those edits with it: apply them first (`tenantctl provision {record.tenant_id} "
            f"--preview` shows them, `tenantctl provision {record.tenant_id}` applies them, as your pipeline's "
            "`apply` does), or undo them",
            rule="unapplied-edits")


def _refuse_cell(ws: Workspace, record: TenantRecord, spec: TenantSpec, tier: Tier, cell: str) -> bool:
    """Why ``cell`` cannot take the tenant as ``tier`` (InvalidInput, exit 3); draining and
    full cells are refused when the slot is taken (exit 11). True: the cell is in
    another account or region (the KeyedMover's refusals follow)."""
    cells = ws.cells()
    target, current = named_cell(cells, cell), cells.get(record.cell) or ws.cell(record.cell)
    refused = f"tenant {record.tenant_id!r} cannot move to cell {cell!r}"
    allowed = spec.allowed_regions
    if target.region not in allowed:
        raise InvalidInput(f"{refused}: it is in {target.region}, the tenant's data must stay in "
                           f"{' or '.join(allowed)} (residency)")
    if target.region != record.region or account_of(ws, target) != account_of(ws, current):
        return True
    if tier is Tier.dedicated and record.tier is Tier.dedicated:
        raise InvalidInput(f"{refused} as dedicated: a dedicated store is the tenant's own (VPC, database "
                           "instance, named after the tenant), so a second one cannot stand beside it; move it "
                           "with --tier pooled (then back to dedicated within the cell if wanted)")
    problem = unfit(target, spec.model_copy(update={"tier": tier, "dedicated": None}))
    if problem:
        raise InvalidInput(f"{refused}: {problem}")
    return False


def account_of(ws: Workspace, cell: CellSpec) -> str:
    """The cell's account id (a cell without a role: the target's own account)."""
    return cell.account_id or ws.cell_outputs(cell.name).get("account_id") or "the target's own"
