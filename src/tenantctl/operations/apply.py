"""Reconcile the committed stacks/ directory with the registry (GitOps).

The cells' stacks come first (`apply_cells`). Each tenant is planned from one
registry read: unchanged when its record is active and carries the fingerprint
of the same spec + program and its last provision did not fail, otherwise
created or updated; a stack file the program would not run as it is (see
`stackconfig`), or that is none of its tenant's stacks, is refused. Work runs in a
bounded process pool (the LocalEngine drives Pulumi's process-global runtime,
so tenants can't share a process), one failure never stops the others (unless
`--max-failures` says how many may: `apply_guard`), and
`--shard I/N` splits tenants deterministically by a hash of their id so CI
runners get disjoint sets that cover everything.

A worker process that dies (a crash, the OOM killer) breaks the whole pool; the
tenants it left unfinished are then re-run one process each, so the tenant that
crashed is the one reported failed and the others still run.

The fingerprint never looks at the cloud. ``refresh=True`` (`apply --refresh`)
trades the skip for a live read: every tenant the fingerprint would skip is
refreshed (in threads, in this process), and one that drifted is planned as a
``repair``, which re-applies it against its live state and removes its orphan
resources (a removal that fails fails the tenant). Previews list each
resource's step with its changed properties, and classify what the run would
refuse (invalid file, tombstoned id, tier move, policy gate, quota) as
failures, so a green preview means a green apply.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from tenantctl import worker_lines
from tenantctl.confirmation import Confirmation
from tenantctl.engines.base import ChangeSet, Op, ResourceChange
from tenantctl.errors import InvalidInput, TenantctlError, UsageError, contained
from tenantctl.fingerprint import applied_hash, program_fingerprint
from tenantctl.models import TenantRecord, TenantSpec, Tier
from tenantctl.naming import DEFAULT_CELL, broken_rule, forget_hint, require_valid
from tenantctl.operations.apply_cells import apply_cells, drift_check, orphan_cells, plan_cells, preview_cells
from tenantctl.operations.apply_guard import FailureBudget
from tenantctl.operations.apply_results import (
    GONE,
    RUNS,
    SETTLED,
    Action,
    ApplySummary,
    CellResult,
    StackResult,
    TenantResult,
    after_refresh,
)
from tenantctl.operations.fleet_threads import require_parallel
from tenantctl.operations.refresh import move_hold, refresh_many
from tenantctl.registry import lock_remedy, provision_failed, refusal
from tenantctl.registry_cells import CellBusy
from tenantctl.stackconfig import (
    read_tenant,
    stack_file,
    stack_of,
    stray_stack,
    tenant_stack_files,
    tenant_stacks,
    write_tenant,
)
from tenantctl.workspace import Workspace, worker_workspace


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 1, 1
    try:
        index, total = (int(p) for p in text.split("/"))
    except ValueError:
        raise UsageError(f"Invalid value for '--shard': {text!r} is not I/N (e.g. 2/4).") from None
    if not 1 <= index <= total:
        raise UsageError(f"Invalid value for '--shard': {text!r}: I must be between 1 and N.")
    return index, total


def in_shard(tenant_id: str, index: int, total: int) -> bool:
    bucket = int.from_bytes(hashlib.sha256(tenant_id.encode()).digest()[:8], "big") % total
    return bucket == index - 1


def matches(tenant_id: str, patterns: Sequence[str]) -> bool:
    """No patterns: every tenant; else the id matches one of the globs."""
    return not patterns or any(fnmatch.fnmatchcase(tenant_id, p) for p in patterns)


def _rebuild_owed(record: TenantRecord) -> bool:
    """A search index rebuild a provision put off (failed, or the tenant was not
    serving) that can run now: the tenant is updated to run it."""
    if not record.search_rebuild_due:
        return False
    from tenantctl.operations.reindex import can_rebuild  # the store and its driver: only when one is due

    return can_rebuild(record)


def _moving(record: TenantRecord | None, stack: str, spec: TenantSpec) -> str | None:
    """Why an open move's tenant is left alone, or None: its file is as the move
    wrote it (or, a stack the move has not written, as last applied), and the
    move owns the tenant until `move --finalize` or `--rollback` (an edit of the
    file meanwhile is refused, as every run on a moving tenant is)."""
    move = record.move if record is not None else None
    if move is None:
        return None
    digest = spec.content_hash()
    if move.stack_digests.get(stack, record.spec_digest) != digest:
        return None
    return move_hold(record)


def _update_reason(record: TenantRecord) -> str:
    if record.status not in SETTLED:
        why = f"registry status {record.status.value}"
        return why + (f" (last error: {record.last_error})" if record.last_error else "")
    if provision_failed(record):
        return f"the last provision failed (last error: {record.last_error})"
    if not record.spec_hash:
        return "no fingerprint recorded"
    if _rebuild_owed(record):
        return "search index rebuild due after a schema upgrade"
    return "spec or program changed since the last apply"


def plan(ws: Workspace, shard: tuple[int, int], records: dict[str, TenantRecord],
         match: Sequence[str] = (), prune: bool = False, cell: str | None = None) -> list[TenantResult]:
    """What apply would do per tenant, from the stack files and one registry read.
    ``cell``: only tenants of that cell (by their record; a new tenant by the
    cell its stack file forces)."""
    index, total = shard
    fingerprint = program_fingerprint(ws.project_dir)
    cells = ws.committed_cells()  # the settings of its cell a tenant's stack reads are in its fingerprint

    def mine(tenant_id: str) -> bool:
        return in_shard(tenant_id, index, total) and matches(tenant_id, match)

    results: list[TenantResult] = []

    def refuse(name: str, record: TenantRecord | None, error: str) -> None:
        # Before the file's content is read: in a --cell run, only a file of a tenant of that cell.
        if cell is None or (record is not None and record.cell == cell):
            results.append(TenantResult(tenant_id=name, action=Action.invalid, ok=False, error=error,
                                        reason="stack file refused"))

    files = {t: found for t, found in tenant_stacks(ws.stacks_dir).items() if mine(t)}
    for tenant_id, found in files.items():
        record = records.get(tenant_id)
        for stack in found:
            stray = stray_stack(stack, record)
            if stray is not None:  # never read as the tenant's: its run would look for another file
                refuse(stack, record, stray)
        stack = stack_of(tenant_id, record)
        path = found.get(stack)
        if path is None:
            if record is not None and record.status not in GONE:  # a file of another of its stacks only
                refuse(tenant_id, record, f"its registry record names stack {stack!r}, whose file "
                                          f"{stack_file(ws.stacks_dir, stack).name} is not in stacks/")
            continue
        try:
            require_valid(tenant_id, hint=forget_hint(tenant_id))  # the file's name, before its content
            spec = read_tenant(path)
        except TenantctlError as exc:
            refuse(tenant_id, record, str(exc))
            continue
        if cell is not None and (record.cell if record is not None else spec.cell) != cell:
            continue
        if moving := _moving(record, stack, spec):
            results.append(TenantResult(tenant_id=tenant_id, action=Action.unchanged, reason=moving))
        elif (refused := refusal(record, spec, locks=False)) is not None:  # an error in a preview too
            results.append(TenantResult(tenant_id=tenant_id, action=Action.invalid, ok=False, error=str(refused),
                                        reason="refused by the registry"))
        elif record is None:
            results.append(TenantResult(tenant_id=tenant_id, action=Action.create, reason="not in the registry"))
        elif spec.cell is not None and spec.cell != record.cell and record.status not in GONE:
            results.append(TenantResult(tenant_id=tenant_id, action=Action.invalid, ok=False,
                                        error=f"the stack file names cell {spec.cell!r}, the tenant lives in "
                                              f"{record.cell!r}: tenants do not change cells in place",
                                        reason="cell changed"))
        elif (record.status in SETTLED and not _rebuild_owed(record) and not provision_failed(record)
              and record.spec_hash == applied_hash(spec, ws.project_dir, fingerprint, cells.get(record.cell))):
            results.append(TenantResult(tenant_id=tenant_id, action=Action.unchanged))
        else:
            results.append(TenantResult(tenant_id=tenant_id, action=Action.update, reason=_update_reason(record)))
    for tenant_id, record in records.items():
        if tenant_id in files or not mine(tenant_id) or (cell is not None and record.cell != cell):
            continue
        rule = broken_rule(tenant_id)
        if rule is not None:  # never deprovisioned by --prune: no operation accepts the id
            results.append(TenantResult(tenant_id=tenant_id, action=Action.invalid, ok=False,
                                        error=f"registry record under an id that breaks the {rule.name} rule"
                                              + forget_hint(tenant_id), reason="registry record refused"))
        elif record.status not in GONE:
            results.append(TenantResult(tenant_id=tenant_id, action=Action.prune if prune else Action.orphan,
                                        reason="in the registry, not in stacks/"))
    return sorted(results, key=lambda r: r.tenant_id)


# -- one tenant's work ----------------------------------------------------------

def _steps(changes: list[ResourceChange]) -> list[ResourceChange]:
    return [c for c in changes if c.op is not Op.same]


def _preview_one(ws: Workspace, stack: str, action: Action, refresh: bool, result: TenantResult,
                 read: ChangeSet | None = None) -> None:
    from tenantctl import preflight

    if action is Action.prune:
        result.resources = ws.engine.preview_destroy(stack).changes
        result.changes = {Op.delete.value: len(result.resources)} if result.resources else {}
        return
    # What provision would refuse before its engine runs (the engine's preview runs the policy gate).
    spec = read_tenant(stack_file(ws.stacks_dir, stack))
    cell = spec.cell or DEFAULT_CELL  # pinned from its record for an existing tenant
    preflight.check(spec, ws.cell_outputs(cell), ws.cell_clients(cell))
    changes = ws.engine.preview(stack, refresh=refresh and action is not Action.create, read=read)
    result.changes, result.resources = changes.summary(), _steps(changes.changes)


def _apply_one(ws: Workspace, tenant_id: str, action: Action, preview: bool, record: TenantRecord | None,
               refresh: bool = False, read: ChangeSet | None = None) -> TenantResult:
    """``record``: the plan's (None: not in the registry). Not read again: it
    only names the stack and cell; provision and deprovision read the record
    they reserve on themselves. ``read``: a preview's stack as the drift check
    read it live (its preview folds that instead of reading it again)."""
    from tenantctl.operations.deprovision import deprovision
    from tenantctl.operations.provision import OrphansNotRemoved, provision

    started = time.monotonic()
    result = TenantResult(tenant_id=tenant_id, action=action)
    with contained(result):  # one tenant's failure never stops the others
        stack = stack_of(tenant_id, record)  # the one the plan read (a finished move's `acme.k1`)
        if preview:
            if action is not Action.prune:
                _pin_cell(ws, stack, record)
            _preview_one(ws, stack, action, refresh, result, read)
        elif action is Action.prune:
            _, changes, _ = deprovision(ws, tenant_id)
            result.changes, result.resources = changes.summary(), _steps(changes.changes)
        else:
            try:
                _, up = provision(ws, read_tenant(stack_file(ws.stacks_dir, stack)), refresh=refresh)
            except OrphansNotRemoved as failed:  # applied: its steps and orphans are still reported
                up, result.ok, result.error = failed.result, False, str(failed)
            result.changes, result.resources = up.changes.summary(), _steps(up.changes.changes)
            result.drift, result.orphans = up.drift, up.orphans
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _pin_cell(ws: Workspace, stack: str, record: TenantRecord | None) -> None:
    """Before previewing an existing tenant, name its cell in its stack file
    when the committed file does not (placement wrote it on the machine that
    provisioned it; CI may not have committed it back): the preview must run
    against the tenant's own cell and account, as its up will."""
    spec = read_tenant(stack_file(ws.stacks_dir, stack))
    if record is not None and spec.cell is None:
        write_tenant(ws.stacks_dir, spec.model_copy(update={"cell": record.cell}), stack=stack)


def _worker(project_dir: str, cwd: str, yes: bool, tenant_id: str, action: str, preview: bool,
            record: TenantRecord | None, refresh: bool = False, read: ChangeSet | None = None) -> TenantResult:
    """Entry point in a pool process (module-level so it pickles); it has no
    terminal to ask on, so a plan that deletes or replaces needs ``yes``. What it
    writes on stderr is its tenant's (``worker_lines``)."""
    with worker_lines.on(tenant_id):
        return _apply_one(worker_workspace(project_dir, cwd, yes), tenant_id, Action(action), preview, record,
                          refresh, read)


# (project_dir, cwd, yes, tenant_id, action, preview, the plan's record[, refresh=, read=])
Worker = Callable[..., TenantResult]


def _died(r: TenantResult) -> TenantResult:
    # A lock it left names its pid, gone from this host: no --force needed.
    return r.model_copy(update={"ok": False, "error": (
        "its worker process died (crashed or was killed) while applying it; if its registry record is "
        f"still locked: {lock_remedy(r.tenant_id, 'gone')}")})


def _rolling(start: Callable[[TenantResult], Future], waiting: deque[TenantResult], width: int,
             may_start: Callable[[TenantResult], bool], settle: Callable[[TenantResult, Future], None]) -> None:
    """Keep up to ``width`` of ``waiting`` running (``start`` submits one), ``settle``
    each as it finishes. Submitted one by one rather than all at once, so that
    nothing is queued past ``may_start`` saying no (an executor runs what it has
    queued, cancel or not); what was never started is left in ``waiting``."""
    running: dict[Future, TenantResult] = {}
    while True:
        while waiting and len(running) < width and may_start(waiting[0]):
            planned = waiting.popleft()
            try:
                running[start(planned)] = planned
            except BrokenProcessPool:  # broken before any future said so: theirs will; submit no more
                waiting.appendleft(planned)
                break
        if not running:
            return
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            settle(running.pop(future), future)


def run_pool(todo: Iterable[TenantResult], args: tuple[str, str, bool], preview: bool, parallel: int,
             report: Callable[[TenantResult], None], records: Mapping[str, TenantRecord],
             worker: Worker = _worker, refresh: bool = False,
             budget: FailureBudget | None = None, on_line: worker_lines.OnLine | None = None,
             reads: Mapping[str, ChangeSet] | None = None) -> list[TenantResult]:
    """Run `todo` in at most `parallel` spawned processes, calling `report` as
    each finishes; each worker gets its tenant's record from ``records`` (the plan's).
    Each failure is spent from ``budget`` (--max-failures): once it is spent no
    further tenant starts. ``on_line``: called with each line a worker writes on
    stderr and its tenant (none: they are dropped). ``reads``: the drift check's
    read of each tenant it passes (``_apply_one``'s ``read``). Returns the planned
    results never started."""
    if on_line is None:
        return _run_pool(todo, args, preview, parallel, report, records, worker, refresh, budget, (None, ()),
                         reads or {})
    with worker_lines.relayed(on_line) as lines:
        return _run_pool(todo, args, preview, parallel, report, records, worker, refresh, budget,
                         (worker_lines.start, (lines,)), reads or {})


def _run_pool(todo: Iterable[TenantResult], args: tuple[str, str, bool], preview: bool, parallel: int,
              report: Callable[[TenantResult], None], records: Mapping[str, TenantRecord], worker: Worker,
              refresh: bool, budget: FailureBudget | None, init: tuple[Callable[..., None] | None, tuple],
              reads: Mapping[str, ChangeSet]) -> list[TenantResult]:
    """``run_pool``'s pools, each process started by ``init`` (initializer, its arguments)."""
    budget = budget or FailureBudget()
    extra = {"refresh": True} if refresh else {}
    ctx = get_context("spawn")  # not fork: the parent may hold gRPC/boto3 threads that fork would break
    waiting = deque(todo)
    broken: list[TenantResult] = []

    def call(submit: Callable[..., Future], r: TenantResult) -> Future:
        read = {"read": reads[r.tenant_id]} if r.tenant_id in reads else {}
        return submit(worker, *args, r.tenant_id, r.action.value, preview, records.get(r.tenant_id), **extra, **read)

    def finish(result: TenantResult) -> None:
        report(result)
        budget.count(result)

    def settle(planned: TenantResult, future: Future) -> None:
        try:
            finish(future.result())
        except BrokenProcessPool:
            broken.append(planned)
        except Exception as exc:  # e.g. a result that would not unpickle
            finish(planned.model_copy(update={"ok": False, "error": f"{type(exc).__name__}: {exc}"}))

    pool = ProcessPoolExecutor(max_workers=max(1, min(parallel, len(waiting))), mp_context=ctx, initializer=init[0],
                               initargs=init[1])
    try:
        _rolling(lambda r: call(pool.submit, r), waiting, parallel, lambda _: not broken and not budget.spent,
                 settle)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    if not broken and (not waiting or budget.spent):
        return list(waiting)

    # A dead worker broke the pool and took every running tenant with it: re-run
    # each of those in a process of its own, so only the culprit fails (a tenant
    # killed mid-run finds its record locked and says so). They were started, so
    # they run whatever the budget says; the ones the broken pool never started
    # follow, one process each too, while the budget allows.
    def isolated(r: TenantResult) -> TenantResult:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=init[0], initargs=init[1]) as one:
            try:
                return call(one.submit, r).result()
            except BrokenProcessPool:
                return _died(r)

    restarted = {r.tenant_id for r in broken}
    waiting.extendleft(reversed(broken))
    with ThreadPoolExecutor(max_workers=parallel) as threads:
        _rolling(lambda r: threads.submit(isolated, r), waiting, parallel,
                 lambda r: r.tenant_id in restarted or not budget.spent, lambda _, f: finish(f.result()))
    return list(waiting)


def _drift_check(ws: Workspace, results: list[TenantResult], records: dict[str, TenantRecord],
                 parallel: int) -> tuple[list[TenantResult], dict[str, ChangeSet]]:
    """--refresh: read every tenant the fingerprint would skip; a drifted one becomes a repair.
    Also returns each repair's read (what a preview of it folds instead of reading again)."""
    # A moving tenant's stacks are the move's until it ends: not repaired meanwhile.
    unchanged = [records[r.tenant_id] for r in results
                 if r.action is Action.unchanged and records[r.tenant_id].move is None]
    drifts = {d.tenant_id: d for d in refresh_many(ws, unchanged, parallel=max(parallel, 8))}
    for r in results:
        if r.action is Action.unchanged and records[r.tenant_id].move is not None:
            r.reason += "; not read for drift nor repaired until then"
    checked = [after_refresh(r, drifts.get(r.tenant_id)) for r in results]
    return checked, {r.tenant_id: drifts[r.tenant_id].read for r in checked
                     if r.action is Action.repair and drifts[r.tenant_id].read is not None}


def _awaiting_cells(ws: Workspace, results: list[TenantResult], creating: set[str]) -> set[str]:
    """A preview's new tenants whose stack file names a cell this apply creates
    (their stacks read the cell's outputs): pending, their reason says so, and
    their resources are planned by the apply once the cell exists."""
    awaiting = set()
    for r in results:
        if creating and r.action is Action.create:
            cell = read_tenant(stack_file(ws.stacks_dir, r.tenant_id)).cell
            if cell in creating:
                r.reason += f"; its cell {cell} is created first (its resources are planned once the cell exists)"
                awaiting.add(r.tenant_id)
    return awaiting


def _placed_in_turn(ws: Workspace, results: list[TenantResult], awaiting: set[str]) -> tuple[set[str], set[str]]:
    """A preview's new tenants placed one after another as the apply places them
    (a cell of their region with a slot, not draining), each counting the slots
    the ones before it take: one placement refuses (no cell of the region, a
    forced cell full, draining, of another region) fails in the preview too,
    and is not previewed further. Returns those refused, and those placed in a
    committed cell the sandbox has not applied yet (the run's placement applies
    it first: pending, as `provision --preview` says; elsewhere placement refuses
    such a cell)."""
    from tenantctl.placement import choose

    taken: Counter[tuple[str, Tier]] = Counter()
    refused, unapplied = set(), set()
    for r in results:
        if r.action is not Action.create or r.tenant_id in awaiting:
            continue
        with contained(r):
            spec = choose(ws, read_tenant(stack_file(ws.stacks_dir, r.tenant_id)), None, taken)
            cell = spec.cell or DEFAULT_CELL
            taken[(cell, spec.tier)] += 1
            if not ws.cell_outputs(cell).get("bucket"):
                r.reason += (f"; its cell {cell} is not applied yet: the run applies it first (its resources "
                             "are planned once the cell exists)")
                unapplied.add(r.tenant_id)
        if not r.ok:
            refused.add(r.tenant_id)
    return refused, unapplied


def check_scope(ws: Workspace, prune: bool, match: Sequence[str]) -> None:
    """Refuse runs that would read a missing desired state as "no tenants"."""
    if not ws.stacks_dir.is_dir():
        raise InvalidInput(f"{ws.stacks_dir} does not exist: run apply in the project that holds Pulumi.yaml and "
                           "the committed stacks/")
    if prune and not any(matches(t, match) for t in tenant_stack_files(ws.stacks_dir)):
        # Every tenant in scope would be an orphan: a mistyped glob or the wrong checkout, far likelier than intent.
        globs = ", ".join(match)
        what, check = ((f"every tenant of the registry matching {globs}", "the --match globs") if match else
                       ("every tenant in the registry", "that this is the project's directory"))
        raise InvalidInput(f"{ws.stacks_dir} holds no tenant stack file{' matching ' + globs if match else ''}: "
                           f"--prune is refused, as it would deprovision {what} (check {check}; "
                           "`tenantctl deprovision ID` deprovisions a tenant on purpose)")


def apply(
    ws: Workspace,
    *,
    preview: bool = False,
    prune: bool = False,
    parallel: int = 4,
    shard: str | None = None,
    match: Sequence[str] = (),
    cell: str | None = None,
    yes: bool = False,
    refresh: bool = False,
    max_failures: int | None = None,
    on_plan: Callable[[list[CellResult], list[TenantResult]], None] | None = None,
    on_result: Callable[[StackResult], None] | None = None,
    on_wait: Callable[[CellBusy], None] | None = None,
    on_stop: Callable[[str], None] | None = None,
    on_line: worker_lines.OnLine | None = None,
) -> ApplySummary:
    """Reconcile stacks/ with the registry: the committed cell stacks first
    (those whose spec or program changed; none in a ``match`` run, whose scope
    is tenant ids), then the tenants. `prune`: orphans become `prune` actions
    (previewed, or deprovisioned when not previewing); without it they are only
    reported. `cell`: only that cell and its tenants. `refresh`: tenants the
    fingerprint would skip are read live, and the drifted ones repaired.
    ``yes``: a stack whose plan deletes or replaces resources goes ahead
    (without it that stack is refused: NotConfirmed, the others still run).
    ``on_plan`` sees the plan before anything runs; raising there stops the
    run with nothing changed. ``on_wait``: another shard holds a cell's lease.
    ``max_failures``: once more than that many cells and tenants have failed,
    start no more (`apply_guard`; refused with a preview, which starts nothing
    and reports every stack); ``on_stop`` is told why, once."""
    require_parallel(parallel)
    if preview and max_failures is not None:
        raise UsageError("Option '--max-failures' cannot be used with '--preview': a preview starts nothing and "
                         "reports every stack (drop --max-failures there, keep it on the apply).")
    budget = FailureBudget(max_failures, on_spent=on_stop)
    started = time.monotonic()
    index, total = parse_shard(shard)
    match = list(match)
    check_scope(ws, prune=prune and not preview, match=match)
    if cell is not None:
        ws.cell(cell)  # NotFound (exit 6) for an unknown cell
    program_fingerprint.cache_clear()  # the program as it is now, even in a long-lived process
    ws.ensure_platform()
    cells = {} if match else ws.committed_cells(cell)
    cell_plan = plan_cells(ws, cells)
    if refresh and index == 1:
        cell_plan = drift_check(ws, cell_plan)
    shown = [] if preview and index != 1 else cell_plan  # one preview of the cells is enough: shard 1's
    fleet, counted = ws.registry.fleet()
    records = {r.tenant_id: r for r in fleet}  # every cell's: a stack file may name any
    if not match and cell is None and index == 1:  # the owner of the cell files runs unscoped: told once
        shown = shown + orphan_cells(counted, cells)
    results = plan(ws, (index, total), records, match=match, prune=prune, cell=cell)
    reads: dict[str, ChangeSet] = {}
    if refresh:
        results, reads = _drift_check(ws, results, records, parallel)
        # A preview folds what the drift check read; an up reads again, under the tenant's lock, what it repairs.
        reads = reads if preview else {}
    if on_plan:
        on_plan(shown, results)
    ws.approve = Confirmation(yes)  # the same rule in this process as in the workers
    awaiting: set[str] = set()
    if preview:
        preview_cells(ws, shown)
        awaiting = _awaiting_cells(ws, results, {c.cell for c in cell_plan if c.action is Action.create})
        refused, unapplied = _placed_in_turn(ws, results, awaiting)
        for r in results:
            if r.tenant_id in refused and on_result:
                on_result(r)
        awaiting |= refused | unapplied  # failed already, or nothing to plan against yet
    else:
        apply_cells(ws, cells, cell_plan, on_wait=on_wait, on_result=on_result, budget=budget)
    todo = [r for r in results if r.action in RUNS and r.tenant_id not in awaiting]
    planned = {r.tenant_id: r for r in todo}
    done: dict[str, TenantResult] = {}

    def report(res: TenantResult) -> None:
        found = planned[res.tenant_id]  # the plan's why, and the drift check's findings
        res = res.model_copy(update={"reason": found.reason, "drift": res.drift or found.drift,
                                     "orphans": res.orphans or found.orphans})
        done[res.tenant_id] = res
        if on_result:
            on_result(res)

    never: list[TenantResult] = []  # what --max-failures kept from starting
    if budget.spent:  # failed cells already: no tenant starts
        never = todo
    elif parallel == 1 or len(todo) == 1:
        # In this process: no spawn (a few seconds of imports) for one tenant at a time.
        for i, r in enumerate(todo):
            if budget.spent:
                never = todo[i:]
                break
            res = _apply_one(ws, r.tenant_id, r.action, preview, records.get(r.tenant_id), refresh,
                             reads.get(r.tenant_id))
            report(res)
            budget.count(res)
    elif todo:
        ws.engine.prepare()  # e.g. provider plugins installed once, not raced for by every worker
        never = run_pool(todo, (str(ws.project_dir), str(ws.cwd), yes), preview, parallel, report, records,
                         refresh=refresh, budget=budget, on_line=on_line, reads=reads)
    for r in never:
        done[r.tenant_id] = budget.hold(r)
    merged = [done.get(r.tenant_id, r) for r in results]
    return ApplySummary(preview=preview, refresh=refresh, shard=f"{index}/{total}", match=match, cell=cell,
                        max_failures=max_failures, stopped=budget.why() if budget.spent else None,
                        seconds=round(time.monotonic() - started, 3), cells=shown, results=merged)
