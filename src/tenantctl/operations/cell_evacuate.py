"""Emptying a cell (`tenantctl cell evacuate`): its tenants moved to other
cells, one `move` after another, so that `cell remove` can retire it.

The cell must be draining first (`tenantctl cell drain`): nothing new is placed
there while it empties, and evacuating is a deliberate second step. Each
tenant goes where `--to` says, else to the least loaded cell of its region
that takes its tier and retention classes and has a slot, a cell of the same
account first (the cheap move: its key, role and queues stay; another account
builds it again under new keys). A dedicated tenant never goes to another
cell of the same account and region (its store is its own: `move`'s rule).

One run moves the tenants it finds in id order, one after another or
``parallel`` at once (each in a worker process): each move is the whole
lifecycle of `tenantctl move ID --cell C` (copy while serving, a short write
freeze, verify, switch) and leaves the usual rollback window; a move a killed
run left half way (preparing, copying, freezing) is resumed. Every copy reads
the cell's one database and holds replication slots and WAL senders there
(``cell_database``): a run asking for more copies at once than its free ones
hold (``parallel``, or as many as there are moves taking a new slot there
when fewer: ``_by_link``) is refused before any move starts, and so is one
whose copies' subscriptions, summed per server they go to, that server's free
logical replication workers cannot hold, beside the way back each switched
move of the run (one resumed in its freeze too) leaves on the cell's own server
for its rollback window.
Each tenant's target is placed once, up front (``_place``): the checks count
the placement the moves use. ``limit`` moves at most that many tenants (waves);
``max_failures`` stops starting moves once more than that many failed (a
refused move, one that changed nothing, does not count). `--finalize` then
ends the rollback windows of the moves out of the cell: each old store
removed after its final backup.

A re-run is the resume: tenants already moved are no longer in the cell, those
switched are reported as waiting for `--finalize`, the rest are moved.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing import get_context
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from tenant_runtime.models import MovePhase
from tenantctl import worker_lines
from tenantctl.errors import (
    Conflict,
    InvalidInput,
    PostureCheckFailed,
    QuotaExceeded,
    TenantctlError,
    interrupts_within,
)
from tenantctl.models import CellSpec, TenantRecord, TenantSpec, TenantStatus, Tier
from tenantctl.operations.apply_guard import FailureBudget
from tenantctl.operations.fleet_threads import require_parallel
from tenantctl.operations.mover import Progress
from tenantctl.placement import add_cell_hint, load, named_cell, no_slot, undrain_hint, unfit
from tenantctl.stackconfig import read_tenant, stack_file
from tenantctl.timestamps import utc_minute
from tenantctl.workspace import Workspace, worker_workspace

if TYPE_CHECKING:
    from tenantctl.cell_database import PlanRooms
    from tenantctl.operations.move import MoveResult

Outcome = Literal["planned", "switched", "finalized", "waiting", "later", "skipped", "refused", "failed",
                  "not_started"]

# Refusals made before a move creates anything: they say nothing of the fleet's health.
_REFUSALS = (InvalidInput, Conflict, QuotaExceeded)
_RESUMED = (MovePhase.preparing, MovePhase.copying, MovePhase.freezing)


class Evacuee(BaseModel):
    """One tenant of the cell and what this run did with it."""

    tenant_id: str
    tier: Tier
    to_cell: str | None = None
    outcome: Outcome
    detail: str | None = None  # why skipped, refused or failed; a switched move's window end
    exit_code: int | None = None  # a refused or failed move's own exit code; 8: its posture check failed
    rule: str | None = None  # the rule a refused or failed move's error names, if any
    # `check`'s finding after a finalize that went through (the tenant drifted out of band), not the finalize's.
    check: str | None = None


class Evacuation(BaseModel):
    """What `cell evacuate` did (``dry_run``: would do) with the cell's tenants."""

    cell: str
    finalize: bool = False
    dry_run: bool = False
    tenants: list[Evacuee]
    stopped: str | None = None  # why moves stopped being started (--max-failures)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for t in self.tenants if t.outcome == outcome)

    def exit_code(self) -> int:
        """1 when a move was refused, failed or not started (--max-failures); else 8 (`check`'s
        exit) when a tenant finalized but failed the posture check after it; 0 otherwise: the
        tenants skipped (suspended, moving into the cell...), waiting for --finalize or left for
        a later run (--limit) are reported, not failures."""
        if any(t.outcome in ("refused", "failed", "not_started") for t in self.tenants):
            return 1
        return PostureCheckFailed.exit_code if any(t.check for t in self.tenants) else 0


def evacuate(ws: Workspace, name: str, *, to: str | None = None, finalize: bool = False, dry_run: bool = False,
             limit: int | None = None, max_failures: int | None = None, parallel: int = 1,
             progress: Progress | None = None) -> Evacuation:
    """Move the tenants of cell ``name`` out (see the module's docstring);
    ``finalize``: end the rollback windows of the moves out of it instead;
    ``parallel``: moves at once, each in a process of its own beyond one."""
    require_parallel(parallel)
    say = progress or (lambda line: None)
    cells = ws.cells()
    leaving = ws.cell(name)
    target = _forced_target(cells, leaving, to) if to is not None else None
    if not finalize and not leaving.draining:
        raise InvalidInput(f"cell {name!r} is not draining: `tenantctl cell drain {name}` first, so that nothing "
                           "new is placed there while it is emptied", rule="cell-not-draining")
    records = sorted(_of_cell(ws, name), key=lambda r: r.tenant_id)
    budget = FailureBudget(max_failures, on_spent=lambda why: say(f"evacuate {name}: starting no more moves: {why}"))
    triaged = [(record, _triage(record, name, finalize)) for record in records]
    queue = deque((r, e) for r, e in triaged if e.outcome == "planned")
    total = min(len(queue), limit) if limit is not None else len(queue)
    specs = {} if finalize else _stack_specs(ws, [r for r, _ in queue])  # each stack file read once
    if not finalize:
        _place(ws, cells, leaving, target, queue, specs, dry_run)
    if not finalize and total:  # a finalize copies nothing
        _refuse_without_room(ws, leaving, cells, target, [(r, e.to_cell) for r, e in queue], specs,
                             min(parallel, total), parallel, total)
    loads: Counter[str] = Counter()  # moves in flight, per cell (for a tenant placed again)
    running: dict[Future, Evacuee] = {}
    started = 0
    with _movers(ws, parallel, progress) as submit:
        while True:
            while queue and len(running) < parallel and not (budget.spent or (limit is not None and started >= limit)):
                record, evacuee = queue[0]
                if not dry_run and record.move is None and evacuee.to_cell is None and \
                        evacuee.outcome in ("planned", "refused"):
                    # No room when planned: placed again now (a move refused or failed since gave its slot
                    # back). Counters are read again; moves in flight may not have taken their slot yet.
                    evacuee.outcome, evacuee.detail, evacuee.exit_code = "planned", None, None
                    evacuee.to_cell = _destination(ws, cells, leaving, record, specs, target, Counter(loads),
                                                   evacuee)
                    if evacuee.outcome == "refused" and running:
                        evacuee.outcome, evacuee.detail, evacuee.exit_code = "planned", None, None
                        break  # full for now: a move in flight may end or free a slot; placed again then
                queue.popleft()
                if evacuee.outcome != "planned" or dry_run:
                    continue
                started += 1
                how = "finalizing" if finalize else "resuming" if record.move is not None else "moving"
                say(f"evacuate {name}: {how} {record.tenant_id} ({started} of {total}) to cell {evacuee.to_cell}")
                running[submit(record.tenant_id, how, evacuee.to_cell)] = evacuee
                loads[evacuee.to_cell or ""] += 1
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                evacuee = running.pop(future)
                loads[evacuee.to_cell or ""] -= 1
                _settle(evacuee, future, budget)
    for record, evacuee in queue:  # never started: placed again by the run that moves it
        evacuee.to_cell = evacuee.to_cell if record.move is not None else None
        evacuee.outcome, evacuee.detail = (("not_started", f"not started: {budget.why()}") if budget.spent
                                           else ("later", f"--limit {limit} reached: a next run moves it"))
    return Evacuation(cell=name, finalize=finalize, dry_run=dry_run, tenants=[e for _, e in triaged],
                      stopped=budget.why() if budget.spent else None)


def _stack_specs(ws: Workspace, records: list[TenantRecord]) -> dict[str, TenantSpec | None]:
    """Each record's committed stack file, read once for the run's checks and
    placements (None: no such file)."""
    paths = {r.tenant_id: stack_file(ws.stacks_dir, r.current_stack) for r in records}
    return {tid: read_tenant(path) if path.exists() else None for tid, path in paths.items()}


def _place(ws: Workspace, cells: dict[str, CellSpec], leaving: CellSpec, target: CellSpec | None,
           queue: deque[tuple[TenantRecord, Evacuee]], specs: dict[str, TenantSpec | None], dry_run: bool) -> None:
    """Where each tenant of ``queue`` not moving yet goes (``Evacuee.to_cell``),
    placed in turn as if the ones before had taken their slots: the run's
    moves and the up-front checks use the same placement. A dry run also
    judges each by its move's own checks (``_judged``), and a refused one
    takes no slot from the next."""
    from tenantctl.cell_database import PlanRooms

    loads: Counter[str] = Counter()
    slots: Counter[tuple[str, Tier]] = Counter()  # the same per tier, as each move's slot check counts them
    rooms = PlanRooms()  # each server's replication room, read once for the plan's moves
    for record, evacuee in queue:
        if record.move is not None:
            continue
        evacuee.to_cell = _destination(ws, cells, leaving, record, specs, target, Counter(loads), evacuee)
        if dry_run and evacuee.to_cell:  # what the move itself would refuse, nothing created
            _judged(ws, record, evacuee, slots[(evacuee.to_cell, record.tier)], rooms)
        if evacuee.outcome == "planned" and evacuee.to_cell:
            loads[evacuee.to_cell] += 1
            slots[(evacuee.to_cell, record.tier)] += 1


def _judged(ws: Workspace, record: TenantRecord, evacuee: Evacuee, taken: int, rooms: PlanRooms) -> None:
    """A dry run's planned move refused as its run would refuse it: by
    ``move.check``, every refusal the move makes before it takes the tenant's
    lock (the code path `move --preview` shares with the run, so the exit code
    and rule are the run's), changing nothing. A committed target cell never
    applied is judged without being applied (``apply_cell=False``): its fit and
    the tenant's residency now, its account's quotas once it exists. ``taken``:
    the slots the run's moves judged before this one take there first;
    ``rooms``: the replication room of each server, read once for the plan."""
    from tenantctl.operations.move import check

    try:
        check(ws, record, cell=evacuee.to_cell, apply_cell=False, taken=taken, rooms=rooms)
    except TenantctlError as exc:
        _ended(evacuee, exc)


def _refuse_without_room(ws: Workspace, leaving: CellSpec, cells: dict[str, CellSpec], target: CellSpec | None,
                         planned: list[tuple[TenantRecord, str | None]], specs: dict[str, TenantSpec | None],
                         at_once: int, parallel: int, total: int) -> None:
    """The moves' copies run from the cell's database, their subscriptions on
    their targets' (``cell_database``): a run either has no room for is refused
    before any starts (exit 3, the figures named). ``planned``: each tenant to
    move and the cell it goes to (``_place``; None: refused); at most
    ``at_once`` of them run together, ``total`` in all. Only those
    that take a new slot there count: a copy that may start from it
    (``_by_link``, ``_copies``) whose link holds no slot yet (a resumed copy's
    subscription goes on copying with its own, tenantctl running or not).
    A move resumed in its freeze copies nothing, but makes its way back."""
    from tenantctl.cell_database import cell_admin, refuse_copies
    from tenantctl.operations.mover import leaving_generation
    from tenantctl.transfer.store_sync import link_name

    linked = [(r, to) for r, to in planned if _by_link(ws, cells, leaving, target, r)]
    if not linked:  # nothing to read the database for
        return
    with cell_admin(ws, leaving.name) as conn:
        held = {slot for (slot,) in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()")}
        unlinked = {r.tenant_id for r, _ in linked if r.move is None or (spec := specs[r.tenant_id]) is None
                    or link_name(r.tenant_id, leaving_generation(spec)) not in held}
        new = {r.tenant_id for r, _ in linked if r.tenant_id in unlinked and _copies(r)}
        if new:
            refuse_copies(conn, min(len(new), at_once), f"cell {leaving.name!r}'s database",
                          parallel if parallel > 1 else None)
    _refuse_without_workers(ws, cells, leaving, linked, new, unlinked, at_once, parallel, total)


def _refuse_without_workers(ws: Workspace, cells: dict[str, CellSpec], leaving: CellSpec,
                            linked: list[tuple[TenantRecord, str | None]], new: set[str], unlinked: set[str],
                            at_once: int, parallel: int, total: int) -> None:
    """The subscriptions of the ``new`` copies of ``linked`` (each with the
    cell it goes to: a resumed move's, else ``_place``'s), summed per server
    they go to, at most ``at_once`` of them on one; and the way backs the run's
    moves leave on the cell's own server as they switch (one enabled
    subscription each, for its rollback window: ``total`` at most), which its
    later copies there must run beside: a server without the logical
    replication workers for its share refuses the run. A resumed move's
    subscription (copying or frozen) is held already and becomes its way back
    where both are one server; its way back is new where it goes to another
    server, or where its link is gone (``unlinked``: a freeze stopped after
    the link's stop). A target with no database yet is skipped (made with its
    cell: every worker free)."""
    from tenantctl.cell_database import cell_admin, refuse_subscriptions
    from tenantctl.operations.move import account_of

    def server(cell: str) -> tuple[str, str] | None:
        outputs = ws.cell_outputs(cell)
        return (outputs["db_endpoint"], str(outputs.get("db_port"))) if outputs.get("db_endpoint") else None

    home = server(leaving.name)
    servers: dict[tuple[str, str] | None, list[str]] = {home: []}  # (endpoint, port) -> a cell per copy there
    way_backs = 0
    for record, planned_to in linked:
        to = record.move.to_cell if record.move is not None else planned_to
        if to not in cells or (record.move is not None and record.move.to_tier is not Tier.pooled) or \
                account_of(ws, cells[to]) != account_of(ws, leaving):  # the refused, a store of its own, a relay
            continue
        there = server(to)
        way_backs += record.tenant_id in unlinked or there != home
        if record.tenant_id in new:
            servers.setdefault(there, []).append(to)
    servers.pop(None, None)
    for key, going in servers.items():
        backs = min(way_backs, total) if key == home else 0
        if not going and not backs:
            continue
        names = sorted(set(going)) or [leaving.name]
        with cell_admin(ws, names[0]) as conn:
            refuse_subscriptions(conn, min(len(going), at_once),
                                 f"the database of cell{'s' if len(names) > 1 else ''} {', '.join(names)}",
                                 parallel if parallel > 1 else None, way_backs=backs)


def _by_link(ws: Workspace, cells: dict[str, CellSpec], leaving: CellSpec, target: CellSpec | None,
             record: TenantRecord) -> bool:
    """Whether ``record``'s move may go from the cell's database by a
    replication link (``store_sync``) and a way back: a pooled store's move to
    a cell of the same account and region (``Mover``), copying or in its
    freeze (``_copies`` tells which). Not a dedicated
    tenant's (its store is its own instance, and it goes to another account),
    nor a move to another account or region (``KeyedMover``'s row relay takes
    no slot); a move not started goes to ``target``, else possibly to any
    other cell of the region of the same account."""
    from tenantctl.operations.move import account_of

    move = record.move
    if move is not None:
        return move.to_stack is None and move.from_tier is Tier.pooled
    if record.tier is not Tier.pooled:
        return False
    own = account_of(ws, leaving)
    return any(c.region == leaving.region and account_of(ws, c) == own
               for c in ([target] if target is not None else cells.values()) if c.name != leaving.name)


def _copies(record: TenantRecord) -> bool:
    """Whether ``record``'s move (if any) has a copy still to make: not one resumed in its freeze."""
    return record.move is None or record.move.phase is not MovePhase.freezing


Submit = Callable[[str, str, "str | None"], Future]


@contextmanager
def _movers(ws: Workspace, parallel: int, progress: Progress | None) -> Iterator[Submit]:
    """What runs each move: this process, one after another (``parallel`` 1), or
    a pool of that many spawned processes (the LocalEngine's Pulumi runtime is
    one per process), each keeping its Workspace from one move to the next.
    The workers' lines come out through ``progress``, each naming its tenant
    (``worker_lines``)."""
    if parallel == 1:
        def here(tenant_id: str, how: str, to_cell: str | None) -> Future:
            done: Future = Future()
            try:
                done.set_result(_move_one(ws, tenant_id, how, to_cell, progress))
            except TenantctlError as exc:
                done.set_exception(exc)
            return done

        yield here
        return
    say = progress or (lambda line: None)
    ws.engine.prepare()  # e.g. provider plugins installed once, not raced for by every worker
    with worker_lines.relayed(lambda tenant_id, line: say(_of_move(tenant_id, line))) as lines:
        pool = ProcessPoolExecutor(max_workers=parallel, mp_context=get_context("spawn"),
                                   initializer=worker_lines.start, initargs=(lines,))
        args = (str(ws.project_dir), str(ws.cwd))
        try:
            yield lambda tenant_id, how, to_cell: pool.submit(_worker, *args, tenant_id, how, to_cell)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


def _of_move(tenant_id: str, line: str) -> str:
    """A worker's line as the moves' own lines read: ``move ID: ...``."""
    own = f"move {tenant_id}: "
    return line if line.startswith(own) else own + line


def _worker(project_dir: str, cwd: str, tenant_id: str, how: str, to_cell: str | None) -> MoveResult:
    """A move in a pool process (module-level: it pickles); its lines go to the run's process."""
    with worker_lines.on(tenant_id), interrupts_within():
        return _move_one(worker_workspace(project_dir, cwd), tenant_id, how, to_cell, worker_lines.say)


def _move_one(ws: Workspace, tenant_id: str, how: str, to_cell: str | None, progress: Progress | None) -> MoveResult:
    from tenantctl.operations.move import move

    if how == "finalizing":
        return move(ws, tenant_id, finalize=True, progress=progress)
    if how == "resuming":
        return move(ws, tenant_id, progress=progress)
    return move(ws, tenant_id, cell=to_cell, progress=progress)


def _settle(evacuee: Evacuee, future: Future, budget: FailureBudget) -> None:
    """``evacuee``'s outcome from its move's ``future``."""
    try:
        moved = future.result()
    except _REFUSALS as exc:
        _ended(evacuee, exc)
    except PostureCheckFailed as exc:  # raised only once the finalize is recorded: the move is over
        tid = evacuee.tenant_id
        evacuee.outcome, evacuee.check, evacuee.exit_code = "finalized", str(exc), exc.exit_code
        evacuee.detail = (f"finalized, but its posture check failed (`tenantctl check {tid}`; `tenantctl provision "
                          f"{tid}` repairs drift): {exc}")
    except TenantctlError as exc:
        _ended(evacuee, exc)
        budget.fail()
    except BrokenProcessPool:
        evacuee.outcome, evacuee.exit_code = "failed", 1
        evacuee.detail = ("its worker process died (crashed or was killed) during the move: `tenantctl cell "
                          "evacuate` again resumes it")
        budget.fail()
    except Exception as exc:  # e.g. a worker's error that would not unpickle
        evacuee.outcome, evacuee.detail, evacuee.exit_code = "failed", f"{type(exc).__name__}: {exc}", 1
        budget.fail()
    else:
        evacuee.outcome = "finalized" if moved.outcome == "finalized" else "switched"
        evacuee.detail = f"rollback window until {utc_minute(moved.window_ends_at)}" if moved.window_ends_at else None


def _ended(evacuee: Evacuee, exc: TenantctlError) -> None:
    """``evacuee``'s move ended by ``exc``: ``refused`` for a refusal made before
    anything is created (``_REFUSALS``), else ``failed`` (e.g. a server that
    cannot be reached, exit 7); the run's moves and a dry run's judgements
    (``_judged``) say the same of the same error."""
    outcome: Outcome = "refused" if isinstance(exc, _REFUSALS) else "failed"
    evacuee.outcome, evacuee.detail, evacuee.exit_code, evacuee.rule = outcome, str(exc), exc.exit_code, exc.rule


def _forced_target(cells: dict[str, CellSpec], leaving: CellSpec, to: str) -> CellSpec:
    target = named_cell(cells, to, "--to")
    if target.name == leaving.name:
        raise InvalidInput(f"--to {to}: that is the cell being evacuated")
    if target.draining:
        raise QuotaExceeded(f"--to {to}: cell {to!r} is draining ({undrain_hint([to])})")
    return target


def _of_cell(ws: Workspace, name: str) -> list[TenantRecord]:
    """The live records placed in cell ``name`` or moving out of it (one full scan)."""
    return [r for r in ws.registry.iter_all()
            if r.status is not TenantStatus.deprovisioned
            and (r.cell == name if r.move is None else name in (r.move.from_cell, r.move.to_cell))]


def _triage(record: TenantRecord, name: str, finalize: bool) -> Evacuee:
    """What this run does with ``record``: ``planned`` (a move, a resume or a
    finalize to run), else why not."""
    tid, move = record.tenant_id, record.move

    def said(outcome: Outcome, detail: str | None = None) -> Evacuee:
        to_cell = move.to_cell if move is not None and move.from_cell == name else None
        return Evacuee(tenant_id=tid, tier=record.tier, to_cell=to_cell, outcome=outcome, detail=detail)

    if move is not None and move.to_cell == name and move.from_cell != name:
        return said("skipped", f"moving into this cell ({move.phase.value}): `tenantctl move {tid} --rollback` "
                               "takes it back")
    if move is not None and move.from_cell == move.to_cell:
        return said("skipped", f"changing tier within this cell ({move.phase.value}): finish it first "
                               f"(`tenantctl move {tid} --finalize` or `--rollback`)")
    if finalize:
        if move is not None and move.phase is MovePhase.switched:
            return said("planned")
        return said("skipped", f"moving ({move.phase.value}): not switched yet" if move is not None
                    else "not moved yet: `tenantctl cell evacuate` without --finalize moves it")
    if move is not None and move.phase is MovePhase.switched:
        ends = f" until {utc_minute(move.window_ends_at)}" if move.window_ends_at else ""
        return said("waiting", f"switched to cell {move.to_cell}, in its rollback window{ends}: "
                               f"`tenantctl cell evacuate {name} --finalize` ends it")
    if move is not None and move.phase not in _RESUMED:
        return said("skipped", f"its move is {move.phase.value}: `tenantctl move {tid} --rollback` finishes it")
    if move is None and record.status is not TenantStatus.active:
        return said("skipped", f"{record.status.value}: only an active tenant is moved")
    return said("planned")


def _destination(ws: Workspace, cells: dict[str, CellSpec], leaving: CellSpec, record: TenantRecord,
                 specs: dict[str, TenantSpec | None], target: CellSpec | None, loads: dict[str, int],
                 evacuee: Evacuee) -> str | None:
    """The cell ``record`` goes to: ``target``, else the least loaded one that
    takes it (same account first). Sets ``evacuee`` skipped when none can."""
    if target is not None:
        return target.name
    spec = specs[record.tenant_id]
    if spec is None:
        path = stack_file(ws.stacks_dir, record.current_stack)
        evacuee.outcome, evacuee.detail = "skipped", f"no committed stack file ({path}): nothing to move from"
        return None
    spec = spec.model_copy(update={"cell": record.cell, "tier": record.tier})
    chosen, refusals = pick(ws, cells, leaving, spec, loads)
    if chosen is None:
        why = "; ".join(refusals) or f"no other cell in {spec.region}"
        evacuee.outcome, evacuee.exit_code = "refused", QuotaExceeded.exit_code
        evacuee.detail = f"no cell can take it ({why}): {add_cell_hint(spec.region)}, or give --to"
        return None
    return chosen


def pick(ws: Workspace, cells: dict[str, CellSpec], leaving: CellSpec, spec: TenantSpec,
         loads: dict[str, int]) -> tuple[str | None, list[str]]:
    """The least loaded open cell of ``spec``'s region for it, other than
    ``leaving`` (a cell of ``leaving``'s account first), and why each other one
    cannot take it. ``loads``: tenants a dry run already sent to each cell."""
    own = leaving.account_id or ws.cell_outputs(leaving.name).get("account_id")
    fits, refusals = [], []
    others = [c for c in cells.values() if c.name != leaving.name and c.region == spec.region]
    items = ws.registry.cell_counts([c.name for c in others]) if others else {}
    for cell in others:
        same_account = (cell.account_id or ws.cell_outputs(cell.name).get("account_id")) == own
        counts, draining = items.get(cell.name) or ({}, False)
        tier = spec.tier.value  # as the counter would read once the dry run's earlier tenants were there
        counts = {**counts, tier: counts.get(tier, 0) + int(loads.get(cell.name, 0))}
        why = unfit(cell, spec) or no_slot(cell, (counts, draining), spec.tier)
        if why is None and spec.tier is Tier.dedicated and same_account:
            why = "a dedicated store cannot stand beside its own in the same account and region"
        if why is None and not ws.is_sandbox and not ws.cell_outputs(cell.name).get("bucket"):
            why = f"not applied yet (`tenantctl apply` or `tenantctl cell add {cell.name}` applies it)"
        if why is not None:
            refusals.append(f"cell {cell.name}: {why}")
            continue
        fits.append((not same_account, load((counts, draining), cell, spec.tier), cell.name))
    if not fits:
        return None, refusals
    name = min(fits)[2]
    loads[name] = loads.get(name, 0) + 1
    return name, refusals
