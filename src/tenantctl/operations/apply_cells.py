"""`apply`'s cell stacks: each committed cell file (`Pulumi.platform.yaml`,
`Pulumi.cell-<name>.yaml`) is applied before any tenant when its spec or the
program changed since its last up (the fingerprint its counter item keeps), so
a committed change to a cell reaches the cloud without `tenantctl cell add`,
and a tenant is never placed in a cell that is committed but not up.

Every shard reconciles the same cells: the cell's lease lets one of them apply
it while the others wait, then find it applied (`cell_lease`). Only shard 1
previews them (one report is enough) and, with `--refresh`, reads them live
and repairs a drifted one. A committed ``draining`` is written to the counter,
with no up (it deploys nothing), and so is a committed ``platform_connections``
(the connection budget it was accepted at), once ``refuse_overcommit`` lets it.
A cell whose counter is in the registry but whose file is not in stacks/ is
reported as an orphan by an unscoped run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from tenant_runtime.registry import item_to_counts
from tenantctl.engines.base import ChangeSet, Op
from tenantctl.errors import ApplyFailed, InvalidInput, contained
from tenantctl.models import CellSpec
from tenantctl.naming import DEFAULT_CELL, cell_stack, new_cell_name_problem
from tenantctl.operations.apply_guard import FailureBudget
from tenantctl.operations.apply_results import Action, CellResult, after_refresh
from tenantctl.operations.cell import refuse_overcommit, stack_file_state
from tenantctl.operations.refresh import removal_failures, revoke_cell_rules
from tenantctl.registry_cells import AppliedBudget, CellBusy, applied_budget_of, up_failed_of
from tenantctl.workspace import Workspace

_WHY = {"never": "not applied yet", "partly": "partly applied: an up stopped half way",
        "changed since": "spec or program changed since its last up",
        "unknown": "no fingerprint recorded (applied by an older tenantctl)"}


def _refused(spec: CellSpec, error: str, rule: str | None = None) -> CellResult:
    return CellResult(cell=spec.name, action=Action.invalid, ok=False, reason="stack file refused", error=error,
                      rule=rule)


def _planned(ws: Workspace, spec: CellSpec, item: dict[str, Any] | None) -> CellResult:
    if spec.name != DEFAULT_CELL and spec.runtime_principal_arn is None:
        return _refused(spec, f"cell {spec.name!r} names no runtime_principal_arn (tenant roles outside the home "
                              f"cell trust the home's runtime): `tenantctl cell add {spec.name} --write-only` "
                              "writes a complete stack file to commit")
    state = stack_file_state(ws, spec, item)
    new = state in ("never", "partly")
    reserved = new_cell_name_problem(spec.name) if new else None
    if reserved:  # a new cell only: one of such a name added before the rule keeps working (its tenants are there)
        return _refused(spec, f"cell {spec.name!r}: {reserved}; rename the file's cell (`tenantctl cell add "
                              "NAME --write-only` writes one)")
    moved = ws.relocation(spec, ws.cell_outputs(spec.name)) if state in ("changed since", "unknown") else None
    if moved:  # deployed, and its file now names another region or account
        return _refused(spec, moved)
    warnings: list[str] = []
    applied = applied_budget_of(item)
    if state in ("changed since", "as committed"):  # deployed: its connection budget against the one accepted
        try:
            warnings = refuse_overcommit(ws, spec, applied)
        except InvalidInput as exc:
            return _refused(spec, str(exc), exc.rule)
    reasons = [] if state == "as committed" else [_WHY[state]]
    if item is not None and item_to_counts(item)[1] != spec.draining:
        reasons.append("draining: no new tenants" if spec.draining else "no longer draining: takes new tenants")
    if state == "as committed" and applied is not None and applied.platform != spec.platform_connections:
        reasons.append(f"platform_connections {applied.platform} → {spec.platform_connections}: its connection "
                       "budget, recorded")
    failed = None if new else up_failed_of(item)
    if failed is not None:  # its stack may record drifted values: an up against its live state, as a repair
        reasons.append(f"repair pending: its last up {failed}")
    if not reasons:
        return CellResult(cell=spec.name, action=Action.unchanged)
    action = Action.create if new else Action.repair if failed is not None else Action.update
    result = CellResult(cell=spec.name, action=action, reason="; ".join(reasons), warnings=warnings)
    result._up = state != "as committed" or failed is not None
    return result


def plan_cells(ws: Workspace, cells: dict[str, CellSpec]) -> list[CellResult]:
    """What apply would do per cell, from one read of their counters."""
    if not cells:
        return []
    items = ws.registry.counter_items(list(cells))
    return [_planned(ws, spec, items[name]) for name, spec in cells.items()]


def orphan_cells(counted: list[str], committed: dict[str, CellSpec]) -> list[CellResult]:
    """Cells with a counter in the registry and no stack file in stacks/ (``committed``):
    reported, never destroyed by apply (a deleted file is no way to retire a cell)."""
    defined = {DEFAULT_CELL, *committed}
    return [CellResult(cell=name, action=Action.orphan,
                       reason=f"in the registry, not in stacks/: restore its stack file and `tenantctl cell remove "
                              f"{name}` retires it") for name in sorted(set(counted) - set(defined))]


def drift_check(ws: Workspace, planned: list[CellResult]) -> list[CellResult]:
    """`--refresh`: each cell the fingerprint would skip read live; a drifted one is repaired."""
    from tenantctl.operations.refresh import refresh_cells

    drifts = {d.cell: d for d in refresh_cells(ws, [r.cell for r in planned if r.action is Action.unchanged])}
    checked = []
    for result in planned:
        result = after_refresh(result, drifts.get(result.cell))
        if result.action is Action.repair:
            result._up = True  # the fingerprint matches: the up runs all the same
        checked.append(result)
    return checked


def _record(result: CellResult, changes: ChangeSet) -> None:
    result.changes = changes.summary()
    result.resources = [c for c in changes.changes if c.op is not Op.same]


def preview_cells(ws: Workspace, planned: list[CellResult]) -> list[CellResult]:
    for result in planned:
        if result._up:
            started = time.monotonic()
            with contained(result):
                _record(result, ws.engine.preview(cell_stack(result.cell), refresh=result.action is Action.repair))
            result.seconds = round(time.monotonic() - started, 3)
    return planned


def apply_cells(ws: Workspace, cells: dict[str, CellSpec], planned: list[CellResult],
                on_wait: Callable[[CellBusy], None] | None = None,
                on_result: Callable[[CellResult], None] | None = None,
                budget: FailureBudget | None = None) -> list[CellResult]:
    """Apply the planned cells one at a time, the home cell first, each under
    its lease (waiting for another shard's), and set each counter's draining
    flag as its stack file says. A failed cell is spent from ``budget``
    (--max-failures); once it is spent, the cells left are not started."""
    budget = budget or FailureBudget()
    for result in planned:
        if result.action not in (Action.create, Action.update, Action.repair):
            continue
        if budget.spent:
            budget.hold(result)
            continue
        started = time.monotonic()
        with contained(result):
            up = None
            if result._up:
                repair = result.action is Action.repair
                up = ws.up_cell(result.cell, wait=math.inf, unless_applied=not repair, on_wait=on_wait, refresh=repair)
                if up is None:
                    result.action, result.reason = Action.unchanged, "applied by another run meanwhile"
            if up is None:  # an up sets the draining flag and records the budget itself
                ws.registry.set_draining(result.cell, cells[result.cell].draining)
                ws.registry.set_budget(result.cell, AppliedBudget.of(cells[result.cell]))
            else:
                _record(result, up.changes)
                if repair:
                    result.orphans = revoke_cell_rules(ws, result.cell, up.changes)
                    failures = removal_failures(result.orphans)
                    if failures:
                        raise ApplyFailed(failures)
        result.seconds = round(time.monotonic() - started, 3)
        if on_result is not None:
            on_result(result)
        budget.count(result)
    return planned
