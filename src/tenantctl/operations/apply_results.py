"""What `tenantctl apply` reports: a result per cell stack and per tenant,
and the run's summary (the CLI's table, `--json` and the markdown comment)."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, Field, PrivateAttr

from tenantctl.engines.base import ResourceChange
from tenantctl.errors import CHANGES_PENDING
from tenantctl.models import TenantStatus
from tenantctl.operations.refresh import Orphan, StackDrift


class Action(str, Enum):
    create = "create"
    update = "update"
    repair = "repair"  # --refresh: unchanged spec and program, but the live resources drifted
    unchanged = "unchanged"
    orphan = "orphan"  # in the registry, not in stacks/: reported, removed only with --prune --yes
    prune = "prune"
    invalid = "invalid"


RUNS = (Action.create, Action.update, Action.repair, Action.prune)  # actions that reach the engine
SETTLED = (TenantStatus.active, TenantStatus.suspended)  # statuses an unchanged fingerprint can skip
GONE = (TenantStatus.deprovisioned, TenantStatus.deprovisioning)


class StackResult(BaseModel):
    action: Action
    ok: bool = True
    error: str | None = None
    reason: str = ""  # why the action was planned (people read it in the summary)
    changes: dict[str, int] = Field(default_factory=dict)
    # Each resource's step (not the unchanged ones), with its changed properties for updates and replaces.
    resources: list[ResourceChange] = Field(default_factory=list)
    drift: list[ResourceChange] = Field(default_factory=list)  # --refresh: what was out of line (recorded -> live)
    # --refresh: a tenant's resources tagged as its own its state lacks; a tenant's or cell's ingress
    # rules added out of band
    orphans: list[Orphan] = Field(default_factory=list)
    seconds: float = 0.0
    # --max-failures: planned to run, never started once too many others had failed (``ok`` False,
    # ``error`` says why); the run fails, but it is not a failure of its own.
    not_started: bool = False

    @property
    def outcome(self) -> str:
        """What the summary's result column says: ok, failed (with the error) or not started."""
        if self.not_started:
            return "not started"
        return "ok" if self.ok else f"failed: {self.error or ''}"

    @property
    def loses_data(self) -> list[ResourceChange]:
        """Steps that replace or delete a data-bearing resource (a database, a key, a bucket, a secret)."""
        return [r for r in self.resources if r.loses_data]


class CellResult(StackResult):
    """A cell's platform stack: applied before any tenant, when its spec or the program changed."""

    cell: str
    rule: str | None = None  # a refused stack file: the rule it broke (e.g. connection-budget)
    warnings: list[str] = Field(default_factory=list)  # said and not refused (an overcommit its file allows)
    _up: bool = PrivateAttr(False)  # the plan runs its stack (a draining flag alone needs no up)

    @property
    def name(self) -> str:
        return f"cell {self.cell}"


class TenantResult(StackResult):
    tenant_id: str

    @property
    def name(self) -> str:
        return self.tenant_id


def after_refresh(result: StackResult, drift: StackDrift | None) -> StackResult:
    """A planned result once its stack was read live (``--refresh``): a failed read fails it, a drifted
    stack becomes a repair carrying what drifted (its orphans too)."""
    if drift is not None and not drift.ok:
        return result.model_copy(update={"ok": False, "error": f"refresh failed: {drift.error}", "reason": "refresh"})
    if drift is not None and drift.drifted:
        return result.model_copy(update={"action": Action.repair, "reason": f"drift: {drift.headline()}",
                                         "drift": drift.resources, "orphans": drift.orphans})
    return result


class ApplySummary(BaseModel):
    preview: bool
    refresh: bool = False
    shard: str
    match: list[str] = Field(default_factory=list)
    cell: str | None = None
    max_failures: int | None = None  # --max-failures: None, no limit
    stopped: str | None = None  # why the run started no more stacks (--max-failures passed)
    seconds: float
    cells: list[CellResult] = Field(default_factory=list)
    results: list[TenantResult]

    def count(self, action: Action) -> int:
        return sum(1 for r in self.results if r.action is action)

    @property
    def counts(self) -> dict[str, int]:
        return {a.value: self.count(a) for a in Action if self.count(a)}

    @property
    def stacks(self) -> list[StackResult]:
        """Cells first (they are applied first), then tenants."""
        return [*self.cells, *self.results]

    @property
    def failed(self) -> list[StackResult]:
        return [r for r in self.stacks if not r.ok and not r.not_started]

    @property
    def not_started(self) -> list[StackResult]:
        """Stacks --max-failures kept from starting: they fail the run, not as failures of their own."""
        return [r for r in self.stacks if r.not_started]

    @property
    def skipped(self) -> list[TenantResult]:
        """Tenants left alone with nothing to say: unchanged, and not failed (a
        failed live read leaves a tenant `unchanged`, and is reported as failed)."""
        return [r for r in self.results if r.ok and r.action is Action.unchanged]

    @property
    def listed(self) -> list[StackResult]:
        """Each stack with a row of its own in the summary: what runs or would,
        what failed whatever its action, the orphans, a skip with its reason
        (a tenant its open move holds); not the plain skipped."""
        return [r for r in self.stacks if not r.ok or r.action is not Action.unchanged or r.reason]

    @property
    def pending(self) -> list[StackResult]:
        return [r for r in self.stacks if r.action in RUNS]

    @property
    def orphans(self) -> list[TenantResult]:
        return [r for r in self.results if r.action is Action.orphan]

    def exit_code(self) -> int:
        """apply: 0 ok / 1 a cell or tenant failed or was not started; preview: 0 nothing to do / 12 changes
        pending / 1 error."""
        if self.failed or self.not_started:
            return 1
        if self.preview and self.pending:
            return CHANGES_PENDING
        return 0
