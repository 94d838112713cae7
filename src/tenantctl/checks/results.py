"""The results of posture checks: one ``CheckResult`` per check, gathered in a
``PostureReport`` whose exit code the CLI uses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field

from tenantctl.errors import PolicyViolation, TargetUnavailable


class Outcome(str, Enum):
    passed = "pass"
    # Holds, but something wants doing (a search index of another analyzer): said, never an exit code,
    # so a fleet right after an upgrade (every store on the old analyzer) still passes.
    warned = "warn"
    failed = "fail"
    error = "error"


class CheckResult(BaseModel):
    area: str  # "database" | "aws"
    name: str  # stable id, e.g. "rls-forced"
    outcome: Outcome
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Nothing against the report: passed, or passed with a warning."""
        return self.outcome in (Outcome.passed, Outcome.warned)


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
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if c.outcome is Outcome.warned]

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
            return f"tenant {self.tenant_id!r}: all {len(self.checks)} posture checks pass" + "".join(
                f"; {line}" for line in self.lines(self.warnings))
        return f"tenant {self.tenant_id!r} posture check: " + "; ".join(self.lines(bad))

    @staticmethod
    def lines(checks: list[CheckResult]) -> list[str]:
        """``outcome area/name: detail`` of each of ``checks``."""
        return [f"{c.outcome.value} {c.area}/{c.name}: {c.detail}" for c in checks]

    def as_json(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "ok": self.ok, "failed": [c.name for c in self.failed],
                "errors": [c.name for c in self.errors], "warnings": [c.name for c in self.warnings],
                "checks": [c.model_dump(mode="json") for c in self.checks]}


# (ok, detail); a check that may only warn says so as (Outcome.warned, detail) instead of False.
Check = Callable[[], tuple[bool | Outcome, str]]


# AWS's answers for a resource that does not exist: the tenant's resource was deleted, which is a
# broken posture (fail), not a check that could not run (error: exit 7, "target unavailable").
GONE_CODES = frozenset({
    "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NoSuchEntity", "NotFoundException",
    "ResourceNotFoundException", "NoSuchBucket", "NotFound", "DBInstanceNotFound", "InvalidVpcID.NotFound",
    "InvalidGroup.NotFound", "InvalidVpcEndpointId.NotFound", "InvalidFlowLogId.NotFound",
})


def gone(exc: Exception) -> bool:
    """``exc`` is AWS saying the resource a check reads does not exist."""
    response = getattr(exc, "response", None)
    return isinstance(response, dict) and response.get("Error", {}).get("Code") in GONE_CODES


def run_each(area: str, checks: list[tuple[str, Check]]) -> Iterator[CheckResult]:
    """Run each check; an exception is an ``error`` of that check, not of the rest,
    but a resource AWS says is gone fails it."""
    for name, fn in checks:
        try:
            ok, detail = fn()
        except Exception as exc:  # noqa: BLE001 - reported per check
            if gone(exc):
                message = exc.response["Error"].get("Message") or exc.response["Error"]["Code"]
                yield CheckResult(area=area, name=name, outcome=Outcome.failed,
                                  detail=f"gone: {message} (deleted out of band? `tenantctl refresh` names it, "
                                         "`tenantctl provision ID` creates it again)")
            else:
                yield CheckResult(area=area, name=name, outcome=Outcome.error, detail=f"{type(exc).__name__}: {exc}")
            continue
        outcome = ok if isinstance(ok, Outcome) else Outcome.passed if ok else Outcome.failed
        yield CheckResult(area=area, name=name, outcome=outcome, detail=detail)


def run_connected(area: str, names: tuple[str, ...], connect: Callable[[], Any], checks: Callable[[Any], Any],
                  who: str) -> Iterator[CheckResult]:
    """Connect (as ``who``), then run each named check, a method of ``checks(conn)``
    (``rls-forced`` -> ``rls_forced``); no connection is an error of every check."""
    try:
        conn = connect()
    except Exception as exc:  # noqa: BLE001 - every check reports it
        for name in names:
            yield CheckResult(area=area, name=name, outcome=Outcome.error,
                              detail=f"cannot connect as {who}: {type(exc).__name__}: {exc}")
        return
    with conn:
        target = checks(conn)
        yield from run_each(area, [(name, getattr(target, name.replace("-", "_"))) for name in names])
