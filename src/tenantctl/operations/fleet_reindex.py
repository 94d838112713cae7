"""`tenantctl search reindex` over many tenants (`--all`, `--cell`, several
ids): each tenant's `search reindex` (operations.reindex), tenants in threads
(each reindex waits on its database and KMS, not on this process), one
summary whose exit code is the worst of them.

Selected as `check` and `refresh` select (operations.selection). A tenant
is skipped, with why, when it is not active (suspended, …), when it
hibernates (its database instance stays stopped, as `drill run --all` leaves
it; `search reindex ID` wakes it), or, with ``outdated``, when every store of
it (its own and each workspace's) is indexed by this installation's analyzer
and no reindex of one is unfinished (nor a rebuild due). A tenant whose reindex could not run or
stopped (another run holds its lock, its store unreachable, its key unusable)
is a failed row with its exit code; the others still run. Each tenant is
judged again on its record at its turn: one suspended or hibernated since the
listing is skipped, with why, as it would have been then.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from tenant_runtime import analyzer
from tenantctl.errors import TenantctlError
from tenantctl.models import TenantRecord, TenantStatus
from tenantctl.operations.fleet_threads import Watch, in_threads, require_parallel
from tenantctl.operations.reindex import Reindexed, reindex_search, store_analyzers
from tenantctl.operations.selection import Failed, Skipped, in_defined_cells, select, worst_exit

Outcome = Reindexed | Skipped | Failed


class FleetReindex(BaseModel):
    reindexed: dict[str, Reindexed] = Field(default_factory=dict)  # by tenant id
    skipped: list[Skipped] = Field(default_factory=list)
    failed: list[Failed] = Field(default_factory=list)
    seconds: float = 0.0

    def add(self, tenant_id: str, outcome: Outcome) -> None:
        if isinstance(outcome, Reindexed):
            self.reindexed[tenant_id] = outcome
        elif isinstance(outcome, Skipped):
            self.skipped.append(outcome)
        else:
            self.failed.append(outcome)

    @property
    def counts(self) -> dict[str, int]:
        return {"tenants": len(self.reindexed) + len(self.skipped) + len(self.failed),
                "reindexed": len(self.reindexed), "skipped": len(self.skipped), "failed": len(self.failed)}

    def exit_code(self) -> int:
        """The highest failed tenant's, which is also the order of what needs a person
        most: 10 key unusable, 9 stored data failing authentication, 7 unreachable,
        6 gone since selected, 5 locked by another run (one no longer active
        since selected is skipped, not failed: ``reindex_one``)."""
        return worst_exit(self.failed)

    def as_json(self) -> dict[str, Any]:
        """``tenants``: each reindexed tenant as `search reindex ID --json` prints it."""
        return {"tenants": [{"tenant_id": t, **r.model_dump(mode="json")} for t, r in sorted(self.reindexed.items())],
                "skipped": [s.model_dump() for s in sorted(self.skipped, key=lambda s: s.tenant_id)],
                "failed": [f.model_dump() for f in sorted(self.failed, key=lambda f: f.tenant_id)],
                "counts": self.counts, "exit_code": self.exit_code()}


def not_reindexed(record: TenantRecord) -> str | None:
    """Why a fleet run leaves the tenant alone whatever its index (None: it is reindexed)."""
    if record.status is not TenantStatus.active:
        return f"{record.status.value}: only an active tenant is reindexed"
    if record.resources is None:
        return "no resources recorded: nothing to reindex"
    if record.store_hibernation is not None:
        return _asleep(record.tenant_id)
    return None


def _asleep(tenant_id: str) -> str:
    return (f"hibernated: its database instance is stopped; `tenantctl search reindex {tenant_id}` "
            "wakes it and reindexes it")


def outdated_stores(analyzers: Mapping[str, Iterable[str]], record: TenantRecord, current: str) -> list[str]:
    """The stores (``""`` the tenant's own, else a workspace's name) a reindex
    to ``current`` would change: one with a live search key built by another
    analyzer (``analyzers``: each store's, as ``index_analyzers`` reads them;
    a store with no key yet is up to date: its first writer records its own),
    one whose reindex is unfinished (the record's marker), and every one while
    the record says a rebuild of unindexed items is due (search refuses there)."""
    stale = {store for store, found in analyzers.items() if any(a != current for a in found)}
    return sorted(stale | set(record.search_reindex_stores) | (set(analyzers) if record.search_rebuild_due else set()))


def reindex_one(ws: Any, record: TenantRecord, outdated: bool) -> Outcome:
    """The tenant's reindex, or why it was skipped, or why it failed. Judged
    again on its record as of its turn: one suspended or hibernated since the
    listing is a skip saying why, as at listing time (and so is one that became
    so while its run failed: its store closed or stopped under it)."""
    tenant_id = record.tenant_id
    try:
        record = ws.registry.require(tenant_id)
        if why := not_reindexed(record):
            return Skipped(tenant_id=tenant_id, reason=why)
        if outdated:
            current = analyzer.identity()
            if not outdated_stores(store_analyzers(ws, record), record, current):
                return Skipped(tenant_id=tenant_id, reason=f"up to date (analyzer {current})")
        done = reindex_search(ws, tenant_id, wake=False)  # hibernated since it was read: left asleep
    except TenantctlError as exc:
        if why := _left_alone_since(ws, tenant_id):
            return Skipped(tenant_id=tenant_id, reason=why)
        return Failed.of(tenant_id, exc)
    return done if done is not None else Skipped(tenant_id=tenant_id, reason=_asleep(tenant_id))


def _left_alone_since(ws: Any, tenant_id: str) -> str | None:
    """Why a fleet run now leaves the tenant alone (``not_reindexed``), read again; None: it would not."""
    try:
        return not_reindexed(ws.registry.require(tenant_id))
    except TenantctlError:  # gone, or the registry unreachable: the run's own error says it
        return None


def reindex_fleet(ws: Any, tenant_ids: Sequence[str] = (), every: bool = False, cell: str | None = None,
                  outdated: bool = False, parallel: int = 4, on_plan: Callable[[int, int], None] | None = None,
                  on_result: Callable[[str, Outcome], None] | None = None) -> FleetReindex:
    """Reindex the named tenants, or every tenant (of ``cell``); ``outdated``:
    only those whose index another analyzer built (or whose reindex is unfinished).
    ``on_plan(tenants, skipped)``: the tenants each given a turn (with
    ``outdated``, checked first: some are then skipped as up to date), and
    those skipped from the listing alone."""
    require_parallel(parallel)
    started = time.monotonic()
    records = select(ws, tenant_ids, every, cell, verb="reindex")
    summary, awake = FleetReindex(), []
    for record in records:  # from the record alone: not even its cell is read
        if why := not_reindexed(record):
            summary.add(record.tenant_id, Skipped(tenant_id=record.tenant_id, reason=why))
        else:
            awake.append(record)
    kept, undefined = in_defined_cells(ws, awake)
    summary.skipped += undefined
    records = [r for r, _ in kept]
    if on_plan:
        on_plan(len(records), len(summary.skipped))
    if records:
        ws.platform_outputs()  # read once, before the threads share it

        def each(done: tuple[str, Outcome]) -> None:
            summary.add(*done)
            if on_result:
                on_result(*done)

        in_threads(lambda r: (r.tenant_id, reindex_one(ws, r, outdated)), records, parallel, Watch(on_result=each))
    summary.seconds = time.monotonic() - started
    return summary
