"""Placement: the cell a tenant is provisioned into.

A new tenant goes to a cell that

1. is in the tenant's region: its data, backups included, never leaves that
   region (residency). No cell there: refused, never placed elsewhere;
2. takes its tier (``CellSpec.tiers``) and offers its retention classes
   (``CellSpec.retention``);
3. is not draining (``tenantctl cell drain``);
4. has room: the account walls the tenant would hit there (IAM roles; VPCs and
   RDS instances for a dedicated tenant: ``tenantctl.preflight``, read from the
   cell's account) and a slot under the cell's cap of pooled tenants per
   PostgreSQL (``max_pooled_tenants``).

Candidates are tried least loaded first (one BatchGetItem of the cells'
counters). The slot is taken with one conditional update of the cell's counter
item in the registry (fewer than the cap placed and not draining), so two
provisions racing for a cell's last slot cannot both get it, and nothing is
counted per tenant (no registry scan per provision). A new tenant's slot is
taken in one transaction with its record's creation
(``RegistryWriter.acquire_new``): a run killed on either side of it leaves both
or neither, never a slot counted for a tenant with no record. ``--cell`` forces a cell,
which must still satisfy 1-4.

When no cell can take the tenant, the provision is refused before anything
exists (exit 11), naming each cell's wall and the command that adds a cell.
Cells are never created automatically: a cell is a new VPC, PostgreSQL and
bucket, possibly in another account, and adding one is a deliberate act.

An existing tenant stays in its cell (moving cells is a `move`, not an update):
its account walls are checked again for what an update may add, and it holds
the slot it took when it was first placed until it is deprovisioned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from tenant_runtime.registry import item_to_counts
from tenantctl import preflight
from tenantctl.errors import InvalidInput, QuotaExceeded, TargetUnavailable
from tenantctl.models import CellSpec, TenantRecord, TenantSpec, TenantStatus, Tier
from tenantctl.registry import PROVISION
from tenantctl.registry_cells import applied_budget_of, applied_of

if TYPE_CHECKING:
    from tenantctl.registry import RegistryWriter
    from tenantctl.workspace import Workspace


class Placement(BaseModel):
    cell: str
    account_id: str | None = None  # None: the registry's own account
    # A new tenant's record, created with its slot and locked for the provision (a refusal that changed
    # nothing withdraws both: ``RegistryWriter.withdraw``).
    record: TenantRecord | None = None


DRAINING = "draining"  # a cell's refusal reason (``no_slot``): no new tenant, whatever its room


def undrain_hint(names: list[str]) -> str:
    """What opens draining cells again: the one wording every refusal of a
    draining cell (exit 11: a provision, a move, a revive) names it in."""
    return " or ".join(f"`tenantctl cell drain {name} --undo`" for name in names) + " takes new tenants there again"


def add_cell_hint(region: str) -> str:
    return (f"add a cell: `tenantctl cell add NAME --region {region}` "
            "(`--account-role ARN` for another account)")


def unfit(cell: CellSpec, spec: TenantSpec) -> str | None:
    """Why ``cell`` can never take ``spec`` (capacity aside), or None."""
    if cell.region != spec.region:
        return f"it is in {cell.region}, the tenant's data must stay in {spec.region}"
    if spec.tier not in cell.tiers:
        return f"it takes {', '.join(t.value for t in cell.tiers)} tenants, not {spec.tier.value}"
    menu = cell.retention.refuses(spec.lifecycle)
    if menu:
        return f"its retention menu does not offer the tenant's lifecycle: {menu}"
    return None


def load(counts: tuple[dict[str, int], bool] | None, cell: CellSpec, tier: Tier) -> float:
    """How full ``cell`` is for ``tier`` by its counter as read: the pooled share of its cap,
    or its dedicated count."""
    placed = (counts or ({}, False))[0].get(tier.value, 0)
    return placed / max(cell.max_pooled_tenants, 1) if tier is Tier.pooled else placed


def no_slot(cell: CellSpec, counts: tuple[dict[str, int], bool] | None, tier: Tier) -> str | None:
    """Why ``cell`` has no ``tier`` slot by its counter as read (``cell_counts``):
    draining, or its pooled count at the cap; None when it has one."""
    placed, draining = counts or ({}, False)
    if draining or cell.draining:
        return DRAINING
    if tier is Tier.pooled and placed.get(tier.value, 0) >= cell.max_pooled_tenants:
        return (f"{placed.get(tier.value, 0)} of {cell.max_pooled_tenants} pooled tenants placed "
                "(max_pooled_tenants: schemas per PostgreSQL)")
    return None


def within_budget(ws: Workspace, cell: CellSpec, item: dict[str, Any] | None) -> tuple[CellSpec, str | None]:
    """``cell`` as placement counts its pooled slots, and what it says about it.
    A committed file raising the cell's connection cap past what its live
    database leaves tenant logins is refused by `apply` (rule connection-budget)
    until it says ``allow_overcommit``; meanwhile its max_pooled_tenants places
    no tenant past the cap the cell was applied at (``applied_cap``)."""
    applied = applied_budget_of(item)
    if applied is None or cell.allow_overcommit or cell.connection_cap <= applied.cap:
        return cell, None
    from tenantctl.operations.cell import refuse_overcommit

    try:
        refuse_overcommit(ws, cell, applied)
    except InvalidInput:
        slots = applied.cap // cell.db_connection_limit
        return cell.model_copy(update={"max_pooled_tenants": slots}), (
            f"its stack file's max_pooled_tenants {cell.max_pooled_tenants} is refused by `tenantctl apply` "
            f"(rule connection-budget: `tenantctl apply --preview` says why), so {slots} as applied")
    return cell, None


def full_reason(registry: RegistryWriter, cell: CellSpec, tier: Tier) -> str:
    """Why ``cell`` has no ``tier`` slot, read again after a reservation was refused."""
    return no_slot(cell, registry.cell_counts([cell.name]).get(cell.name), tier) or "no slot could be taken"


def refused(spec: TenantSpec, refusals: list[str]) -> QuotaExceeded:
    """Exit 11 for a new tenant no cell takes, each cell's reason in the message and in ``details``."""
    if spec.cell is not None:
        where = f"cell {spec.cell} cannot take it"
    elif refusals:
        where = f"no cell in {spec.region} can take it"
    else:
        from tenantctl.aws import require_known_region

        require_known_region(spec.region)  # a typo is no region to add a cell to
        where = f"{spec.region} has no cell"
    return QuotaExceeded(
        f"tenant {spec.id!r} ({spec.tier.value}) refused before anything was created: {where}"
        + (" (" + "; ".join(refusals) + ")" if refusals else "") + f"; {_remedy(spec, refusals)}",
        details=refusals)


def _remedy(spec: TenantSpec, refusals: list[str]) -> str:
    """What to do about ``refusals`` (``cell NAME: why`` each): a draining cell is no capacity
    problem (undrain it, or place the tenant elsewhere); freeing capacity helps the others."""
    why = dict(r.removeprefix("cell ").split(": ", 1) for r in refusals)
    draining = [name for name, reason in why.items() if reason.startswith(DRAINING)]
    hint = add_cell_hint(spec.region)
    if draining:
        elsewhere = " (another `--cell` of its region, or none)" if spec.cell else ""
        # Each cell's reason is said once, in the list before: the remedy does not name it again.
        hint = f"{undrain_hint(draining)}, or place it in another cell{elsewhere}; {hint}"
    return hint + (", or free capacity and re-run" if len(draining) < len(why) else "")


def named_cell(cells: dict[str, CellSpec], name: str, option: str = "--cell") -> CellSpec:
    """The cell ``option`` names; InvalidInput (exit 3, nothing created) when stacks/ defines none."""
    if name not in cells:
        raise InvalidInput(f"{option} {name}: no such cell (`tenantctl cell list` shows them)")
    return cells[name]


def _forced(cells: dict[str, CellSpec], spec: TenantSpec) -> CellSpec:
    """The cell ``spec`` names, when it can take the tenant."""
    forced = named_cell(cells, spec.cell)
    problem = unfit(forced, spec)
    if problem:
        raise InvalidInput(f"tenant {spec.id!r} cannot go to cell {forced.name!r}: {problem}")
    return forced

def place(ws: Workspace, spec: TenantSpec, record: TenantRecord | None) -> tuple[TenantSpec, Placement]:
    """The cell ``spec`` goes to and ``spec`` with that cell set; a new
    tenant's record is created there, locked for its provision, with its slot
    (the placement's ``record``; Conflict, exit 5, when a racing run created
    it first). Raises InvalidInput (exit 3) for a request no cell could
    ever satisfy, QuotaExceeded (exit 11) when the region's cells are full."""
    if record is not None:
        return _existing(ws, spec, record)
    cells = ws.cells()
    candidates, refusals = _candidates(cells, spec)
    registry = ws.registry
    if len(candidates) > 1:  # one BatchGetItem orders them; a lone candidate needs no read
        counts = registry.cell_counts([c.name for c in candidates])
        candidates = sorted(candidates, key=lambda c: load(counts[c.name], c, spec.tier))
    for cell in candidates:
        if cell.draining:
            refusals.append(f"cell {cell.name}: {DRAINING}")
            continue
        try:
            outputs = ws.ensure_cell(cell.name)
        except TargetUnavailable:  # committed, not applied yet (`cell add --write-only`): the next cell
            if spec.cell is not None:
                raise
            refusals.append(f"cell {cell.name}: not applied yet (`tenantctl apply` or `tenantctl cell add "
                            f"{cell.name}` applies it)")
            continue
        ws.refuse_relocated(cell, outputs)
        walls = preflight.over(spec, outputs, ws.cell_clients(cell.name))
        if walls:
            refusals.append(f"cell {cell.name}: " + "; ".join(w.explain() for w in walls))
            continue
        placed = spec.model_copy(update={"cell": cell.name})
        acquired, cell, note = _reserve(ws, cell, placed)
        if acquired is not None:
            return placed, Placement(cell=cell.name, account_id=cell.account_id, record=acquired)
        refusals.append(f"cell {cell.name}: {full_reason(registry, cell, spec.tier)}" + (f"; {note}" if note else ""))
    raise refused(spec, refusals)


def choose(ws: Workspace, spec: TenantSpec, record: TenantRecord | None,
           taken: Mapping[tuple[str, Tier], int] | None = None) -> TenantSpec:
    """``spec`` with the cell a provision would place it in, taking no slot (a
    preview): its record's, the forced one, or the least loaded fit of its
    region. Raises as ``place`` does: a request no cell could take, or no cell
    with a slot by the counters as read now (a run may still find one taken).
    ``taken``: slots per (cell, tier) that tenants placed before this one in the
    same run take (an `apply --preview` of several new tenants)."""
    if record is not None:
        return _stays(spec, record)
    cells = ws.cells()
    candidates, refusals = _candidates(cells, spec)
    items = ws.registry.counter_items([c.name for c in candidates]) if candidates else {}
    before = {name: (taken or {}).get((name, spec.tier), 0) for name in items}
    counts = {name: _plus(item_to_counts(item) if item else None, spec.tier, before[name])
              for name, item in items.items()}
    open_cells = []
    for listed in candidates:
        cell, note = within_budget(ws, listed, items[listed.name]) if spec.tier is Tier.pooled else (listed, None)
        why = no_slot(cell, counts[cell.name], spec.tier)
        if why is not None and before[cell.name]:
            why += f", {before[cell.name]} of them by this run's tenants before it"
        if why is not None and note:
            why += f"; {note}"
        # What `place` passes over off the sandbox: committed, never applied (the sandbox applies it).
        if why is None and not ws.is_sandbox and not (applied_of(items[cell.name])
                                                      or ws.cell_outputs(cell.name).get("bucket")):
            why = f"not applied yet (`tenantctl apply` or `tenantctl cell add {cell.name}` applies it)"
        if why is None:
            open_cells.append(cell)
        else:
            refusals.append(f"cell {cell.name}: {why}")
    if not open_cells:
        # Before refusing, `place` reaches every candidate not draining and refuses (exit 3) one whose file
        # names another region or account than it was deployed in: so does its preview (outputs read only here).
        for cell in candidates:
            if not cell.draining:
                ws.refuse_relocated(cell, ws.cell_outputs(cell.name))
        raise refused(spec, refusals)
    best = min(open_cells, key=lambda c: load(counts[c.name], c, spec.tier))
    return spec.model_copy(update={"cell": best.name})


def _reserve(ws: Workspace, cell: CellSpec, spec: TenantSpec) -> tuple[TenantRecord | None, CellSpec, str | None]:
    """Create new tenant ``spec``'s record taking its slot of ``cell``
    (``spec.cell``): the record (None: no slot), with the cell as counted and
    why its cap is lower than its file's (for a refusal to name). A pooled slot
    by its file's cap in one transaction while the cell was applied at that
    connection cap or more (no raise: nothing more to read); else by the cap
    ``within_budget`` allows (the counter read, and the live database when the
    file raises the cap)."""
    def take(cap: int | None, applied_at_least: int | None = None) -> TenantRecord | None:
        return ws.registry.acquire_new(spec, PROVISION, cell.account_id, cap, applied_at_least)

    if spec.tier is not Tier.pooled:
        return take(None), cell, None
    record = take(cell.max_pooled_tenants, None if cell.allow_overcommit else cell.connection_cap)
    if record is not None:
        return record, cell, None
    allowed, note = _slots_of(ws, cell, spec.tier)
    return take(allowed.max_pooled_tenants), allowed, note


def _slots_of(ws: Workspace, cell: CellSpec, tier: Tier) -> tuple[CellSpec, str | None]:
    """``within_budget`` of ``cell`` read from its counter item now (a pooled slot only)."""
    if tier is not Tier.pooled:
        return cell, None
    return within_budget(ws, cell, ws.registry.counter_items([cell.name])[cell.name])


def _plus(counts: tuple[dict[str, int], bool] | None, tier: Tier, more: int) -> tuple[dict[str, int], bool] | None:
    """A counter as read (``cell_counts``) with ``more`` ``tier`` tenants placed."""
    if not more:
        return counts
    placed, draining = counts or ({}, False)
    return {**placed, tier.value: placed.get(tier.value, 0) + more}, draining


def _candidates(cells: dict[str, CellSpec], spec: TenantSpec) -> tuple[list[CellSpec], list[str]]:
    """The cells that could take ``spec`` (the forced one, else every fit of its
    region) and why each other cell of its region never could."""
    if spec.cell is not None:
        return [_forced(cells, spec)], []
    candidates = [c for c in cells.values() if unfit(c, spec) is None]
    return candidates, [f"cell {c.name}: {unfit(c, spec)}" for c in cells.values()
                        if c not in candidates and c.region == spec.region]


def _stays(spec: TenantSpec, record: TenantRecord) -> TenantSpec:
    """``spec`` in the cell of its record; InvalidInput (exit 3) when it names another cell or region."""
    if spec.cell is not None and spec.cell != record.cell:
        raise InvalidInput(f"tenant {spec.id!r} lives in cell {record.cell!r}, the spec names {spec.cell!r}: "
                           f"a tenant does not change cells in place (`tenantctl move {spec.id} --cell "
                           f"{spec.cell}` moves it with its data)")
    if spec.region != record.region:
        raise InvalidInput(f"tenant {spec.id!r} lives in {record.region}: its region never changes in place "
                           f"(residency; `tenantctl move {spec.id} --cell CELL` to a cell of another region "
                           "its residency allows)")
    return spec.model_copy(update={"cell": record.cell})


def _existing(ws: Workspace, spec: TenantSpec, record: TenantRecord) -> tuple[TenantSpec, Placement]:
    """An existing tenant stays where it is; its account walls are checked again."""
    placed = _stays(spec, record)
    placement = Placement(cell=record.cell, account_id=record.account_id)
    if record.status in (TenantStatus.deprovisioning, TenantStatus.deprovisioned):
        return placed, placement  # the registry's hold refuses it with the tombstone's story
    outputs = ws.ensure_cell(record.cell)
    ws.refuse_relocated(ws.cell(record.cell), outputs)
    walls = preflight.over(spec, outputs, ws.cell_clients(record.cell))
    if walls:
        raise QuotaExceeded(f"tenant {spec.id!r} refused before anything was changed: cell {record.cell}: "
                            + "; ".join(w.explain() for w in walls) + ". Free capacity (raise the quota) and re-run.")
    return placed, placement


def slot_cap(ws: Workspace, cell_name: str, tier: Tier, refused: str, elsewhere: str = "",
             taken: int = 0) -> int | None:
    """The cap a ``tier`` slot of cell ``cell_name`` is taken under
    (``RegistryWriter.save_taking_slot``; None: uncapped), taking none;
    QuotaExceeded (exit 11) starting with ``refused`` when the cell has none by
    its counter as read now (full or draining). ``elsewhere``: the way round a
    draining cell the caller has besides undraining it (``, or ...``).
    ``taken``: ``tier`` slots there a dry run's earlier planned moves would
    hold by then, read as if the counter had them (the run's later moves see them)."""
    cell, cap, note = _slot_cap(ws, cell_name, tier)
    placed, draining = ws.registry.cell_counts([cell.name])[cell.name] or ({}, False)
    counts = ({**placed, tier.value: placed.get(tier.value, 0) + taken}, draining)
    if cell.draining or no_slot(cell, counts, tier):
        raise _no_slot(ws, cell, tier, refused, note, elsewhere, counts if taken else None)
    return cap


def slot_refused(ws: Workspace, cell_name: str, tier: Tier, refused: str, elsewhere: str = "") -> QuotaExceeded:
    """The exit 11 of a slot ``save_taking_slot`` was refused (taken meanwhile, or the cell drained)."""
    cell, _, note = _slot_cap(ws, cell_name, tier)
    return _no_slot(ws, cell, tier, refused, note, elsewhere)


def _slot_cap(ws: Workspace, cell_name: str, tier: Tier) -> tuple[CellSpec, int | None, str | None]:
    cell, note = _slots_of(ws, ws.cell(cell_name), tier)
    return cell, cell.max_pooled_tenants if tier is Tier.pooled else None, note


def _no_slot(ws: Workspace, cell: CellSpec, tier: Tier, refused: str, note: str | None, elsewhere: str,
             counts: tuple[dict[str, int], bool] | None = None) -> QuotaExceeded:
    """A draining cell is no capacity problem: its remedy is undraining it (or ``elsewhere``), not room.
    ``counts``: the counter as a dry run reads it (``slot_cap``'s ``taken``), else read again."""
    why = (no_slot(cell, counts, tier) or "no slot could be taken") if counts else full_reason(ws.registry, cell, tier)
    remedy = (undrain_hint([cell.name]) + elsewhere if why.startswith(DRAINING) or cell.draining
              else "free a slot there and re-run")
    return QuotaExceeded(f"{refused}: cell {cell.name!r} has no {tier.value} slot "
                         f"({why}{f'; {note}' if note else ''}); {remedy}")


def lock_again(ws: Workspace, tomb: TenantRecord, operation: str) -> TenantRecord:
    """A tombstone coming back (a revive) takes a slot in its old cell again
    (its backups and data are there, in its region), with its lock in one
    write (``RegistryWriter.lock_reviving``): the locked tombstone, holding
    it. A full or draining cell is refused (QuotaExceeded, exit 11) before
    anything is written; a tombstone a killed revive marked holds its slot already."""
    refused = f"tenant {tomb.tenant_id!r} cannot come back into its cell"
    cap = None if tomb.reviving else slot_cap(ws, tomb.cell, tomb.tier, refused)
    locked = ws.registry.lock_reviving(tomb, operation, cap)
    if locked is None:  # the last slot taken, or the cell drained, since it was read
        raise slot_refused(ws, tomb.cell, tomb.tier, refused)
    return locked
