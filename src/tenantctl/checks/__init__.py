"""`tenantctl check ID`: the isolation posture of one tenant, verified on its
LIVE resources (never on tenantctl's state or the registry's word for it).

One module per concern:

- ``db_posture``: the tenant's PostgreSQL role and tables (role attributes and
  ownership, RLS enabled + forced, unique keys including the tenant column, a
  session without the tenant setting fails closed);
- ``aws_posture``: KMS rotation and key policy, queue/DLQ encryption, bucket
  public access block and encryption, tags, the role's trust and access
  policies (the latter judged with ``iam_eval``);
- ``iam_eval``: a small IAM policy evaluator.

Every check yields one ``CheckResult`` named by a stable id; ``pass`` / ``fail``
(an invariant is broken: exit 8) / ``error`` (could not be verified, e.g. the
database is unreachable from here: exit 7 when nothing failed).
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Callable, Iterator

from pydantic import BaseModel, Field

from tenantctl.errors import PolicyViolation, TargetUnavailable


class Outcome(str, Enum):
    passed = "pass"
    failed = "fail"
    error = "error"


class CheckResult(BaseModel):
    area: str  # "database" | "aws"
    name: str  # stable id, e.g. "rls-forced"
    outcome: Outcome
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.passed


class PostureReport(BaseModel):
    tenant_id: str
    checks: list[CheckResult] = Field(default_factory=list)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.outcome is Outcome.failed]

    @property
    def errors(self) -> list[CheckResult]:
        return [c for c in self.checks if c.outcome is Outcome.error]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.errors

    def exit_code(self) -> int:
        if self.failed:
            return PolicyViolation.exit_code
        if self.errors:
            return TargetUnavailable.exit_code
        return 0

    def summary(self) -> str:
        """One line naming every check that did not pass."""
        bad = self.failed + self.errors
        if not bad:
            return f"tenant {self.tenant_id!r}: all {len(self.checks)} posture checks pass"
        return (f"tenant {self.tenant_id!r} posture check: "
                + "; ".join(f"{c.outcome.value} {c.area}/{c.name}: {c.detail}" for c in bad))

    def as_json(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "ok": self.ok, "failed": [c.name for c in self.failed],
                "errors": [c.name for c in self.errors], "checks": [c.model_dump(mode="json") for c in self.checks]}


Check = Callable[[], tuple[bool, str]]


def run_each(area: str, checks: list[tuple[str, Check]]) -> Iterator[CheckResult]:
    """Run each check; an exception is an ``error`` of that check, not of the rest."""
    for name, fn in checks:
        try:
            ok, detail = fn()
        except Exception as exc:  # noqa: BLE001 - reported per check
            yield CheckResult(area=area, name=name, outcome=Outcome.error, detail=f"{type(exc).__name__}: {exc}")
            continue
        yield CheckResult(area=area, name=name, outcome=Outcome.passed if ok else Outcome.failed, detail=detail)


def check_tenant(ws: Any, tenant_id: str, record: Any = None) -> PostureReport:
    """Every posture check of ``tenant_id`` on its live resources."""
    from tenantctl.checks.aws_posture import aws_checks
    from tenantctl.checks.db_posture import database_checks
    from tenantctl.errors import InvalidInput

    record = record or ws.registry.require(tenant_id)
    if record.status.value in ("deprovisioning", "deprovisioned"):
        raise InvalidInput(f"tenant {tenant_id!r} is {record.status.value}: its resources are gone, nothing to check")
    if record.resources is None:
        raise InvalidInput(f"tenant {tenant_id!r} has no resources recorded (status {record.status.value}): "
                           "nothing to check")
    platform = ws.platform_outputs()
    report = PostureReport(tenant_id=tenant_id)
    report.checks += list(database_checks(record))
    report.checks += list(aws_checks(record, platform))
    return report


def verify_provisioned(ws: Any, record: Any) -> Any:
    """The check at the end of every provision: a violation puts the summary in
    the record's ``last_error`` and raises PolicyViolation (exit 8). Checks that
    could not run (say, a private RDS endpoint unreachable from the operator's
    machine) are noted in ``last_error`` but do not fail the provision."""
    report = check_tenant(ws, record.tenant_id, record)
    if report.failed:
        ws.registry.release(record, error=report.summary())
        raise PolicyViolation(report.summary())
    if report.errors:
        return ws.registry.release(record, error=report.summary())
    return record
