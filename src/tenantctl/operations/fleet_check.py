"""`tenantctl check` over many tenants (`--all`, `--cell`, several ids): each
tenant's posture checks on its live resources, tenants in threads (a check
only reads: the AWS calls and database sessions of several tenants wait on the
servers together), one summary whose exit code is the worst of them (8 a
check failed, 7 a check could not run).

A tenant with no resources recorded (a provision that failed before creating
any) has nothing to check: it is listed as skipped, with why, not as an error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel, Field

from tenantctl.checks import CheckResult, Outcome, PostureReport, check_tenant
from tenantctl.errors import TenantctlError
from tenantctl.models import TenantRecord
from tenantctl.operations.fleet_threads import Watch, in_threads, require_parallel
from tenantctl.operations.selection import Skipped, in_defined_cells, select
from tenantctl.workspace import Workspace


class FleetPosture(BaseModel):
    reports: list[PostureReport] = Field(default_factory=list)  # by tenant id
    skipped: list[Skipped] = Field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[PostureReport]:
        return [r for r in self.reports if r.failed]

    @property
    def unverified(self) -> list[PostureReport]:
        """Tenants nothing failed for but a check could not run."""
        return [r for r in self.reports if r.errors and not r.failed]

    @property
    def warned(self) -> list[PostureReport]:
        """Tenants that pass (nothing failed, every check ran) with a warning."""
        return [r for r in self.reports if r.ok and r.warnings]

    @property
    def counts(self) -> dict[str, int]:
        """``warnings``: of the ``passed``, those with a warning."""
        return {"tenants": len(self.reports), "passed": sum(r.ok for r in self.reports),
                "failed": len(self.failed), "unverified": len(self.unverified), "warnings": len(self.warned),
                "skipped": len(self.skipped)}

    def exit_code(self) -> int:
        """The worst tenant's: a failed check (8) outranks one that could not run (7)."""
        return max((r.exit_code() for r in self.reports), default=0)


def check_one(ws: Workspace, record: TenantRecord) -> PostureReport:
    """The tenant's report; a tenant the checks could not start on (its cell's
    outputs unreadable, say) is one check that could not run, naming why."""
    try:
        return check_tenant(ws, record.tenant_id, record)
    except TenantctlError as exc:
        return PostureReport(tenant_id=record.tenant_id, checks=[
            CheckResult(area="tenant", name="checks-started", outcome=Outcome.error, detail=str(exc))])


def check_fleet(ws: Workspace, tenant_ids: Sequence[str] = (), every: bool = False, cell: str | None = None,
                parallel: int = 8, on_plan: Callable[[int], None] | None = None,
                on_result: Callable[[PostureReport], None] | None = None) -> FleetPosture:
    """The posture of the named tenants, or of every tenant (of ``cell``)."""
    require_parallel(parallel)
    started = time.monotonic()
    records = select(ws, tenant_ids, every, cell, verb="check")
    summary = FleetPosture(skipped=[
        Skipped(tenant_id=r.tenant_id, reason=f"no resources recorded (status {r.status.value}): nothing to check")
        for r in records if r.resources is None])
    kept, undefined = in_defined_cells(ws, [r for r in records if r.resources is not None])
    summary.skipped += undefined
    records = [r for r, _ in kept]
    if records:
        _ = ws.engine  # made once, before the threads share it
    summary.reports = in_threads(lambda r: check_one(ws, r), records, parallel,
                                 Watch.of(on_plan, on_result))
    summary.reports.sort(key=lambda r: r.tenant_id)
    summary.seconds = time.monotonic() - started
    return summary
