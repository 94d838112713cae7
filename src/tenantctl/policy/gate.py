"""Judging a plan with the rules, and the gate both engines run before every
up: the preview's judgment (fail closed on what is unknown until apply unless
the up judges again), the resolved-value judgment during the up
(``ResolvedJudge``), the spec's own rules and the waivers deprovision uses."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from tenantctl import naming
from tenantctl.errors import PolicyViolation
from tenantctl.policy.plan import MIN_BACKUP_RETENTION_DAYS, RULES, Judgment, Plan, PlannedResource, Violation


def judge(resources: Iterable[PlannedResource], tenant_id: str, platform: bool = False,
          rules: Iterable[str] | None = None, complete: bool = True) -> Judgment:
    """The violations of the named rules (all rules by default), and what they
    could not judge because it is unknown until apply.

    For a cell's stack pass its stack name and ``platform=True`` (``tenant_id="platform"``
    for the default cell).
    """
    plan = Plan(resources, tenant_id, platform, complete)
    selected = list(RULES) if rules is None else list(rules)
    unknown = set(selected) - set(RULES)
    if unknown:
        raise ValueError(f"unknown rule(s): {', '.join(sorted(unknown))}")
    violations = [v for name in selected for v in RULES[name](plan)]
    return Judgment(violations=violations, unjudged=list(dict.fromkeys(plan.unjudged)))


def check(resources: Iterable[PlannedResource], tenant_id: str, platform: bool = False,
          rules: Iterable[str] | None = None) -> list[Violation]:
    """Every violation of the named rules (all rules by default)."""
    return judge(resources, tenant_id, platform, rules).violations


class ResolvedJudge:
    """The second enforcement point: an up hands it each resource as it is
    registered, with resolved values, right before the resource is created or
    updated (what CrossGuard sees; the LocalEngine's apply pass). The resources
    registered before it are the context: the program takes its tenant key's ARN
    from the key's alias, so the alias is always judged before a queue, secret,
    database or role policy that uses the key. Each violation is reported once,
    by the registration that completed it. Thread-safe (an up registers
    resources from several threads)."""

    def __init__(self, tenant_id: str, platform: bool = False, waived: Iterable[str] = ()) -> None:
        self.tenant_id, self.platform = tenant_id, platform
        self.waived = frozenset(waived)
        self._seen: dict[str, PlannedResource] = {}
        self._reported: set[Violation] = set()
        self._lock = threading.Lock()

    def __call__(self, resource: PlannedResource, key: str = "") -> list[Violation]:
        """New violations once ``resource`` (registered as ``key``, its URN) is in."""
        with self._lock:
            self._seen[key or f"{resource.type}::{resource.name}"] = resource
            found = judge(self._seen.values(), self.tenant_id, self.platform, complete=False).violations
            new = [v for v in dict.fromkeys(found) if v not in self._reported and v.rule not in self.waived]
            self._reported.update(new)
            return new


# -- the spec: what the planned resources cannot show --------------------------------------
# A pooled tenant's backup retention (logical backups, the tombstone window)
# is not an input of any resource, so the spec itself is judged too; the same
# rule names as the resource rules, so a refusal reads the same either way.
SPEC_RULES = ("backup-retention", "deletion-protection", "shared-db-multi-az")


def check_spec(spec: Any) -> list[Violation]:
    """Violations of a TenantSpec or a CellSpec."""
    from tenantctl.models import CellSpec, TenantSpec, Tier

    if isinstance(spec, CellSpec):
        if spec.db_multi_az:
            return []
        return [Violation(rule="shared-db-multi-az", resource=f"stacks/Pulumi.{spec.stack}.yaml",
                          message=f"cell {spec.name}: db_multi_az is false: every pooled tenant of the cell "
                                  "depends on the shared database")]
    if not isinstance(spec, TenantSpec):
        return []
    where = f"stacks/Pulumi.{spec.id}.yaml"
    found = []
    if spec.backup.retention_days < MIN_BACKUP_RETENTION_DAYS:
        found.append(Violation(rule="backup-retention", resource=where,
                               message=f"backup.retention_days {spec.backup.retention_days} < "
                                       f"{MIN_BACKUP_RETENTION_DAYS} days"))
    if spec.tier is Tier.dedicated and spec.dedicated is not None and not spec.dedicated.deletion_protection:
        found.append(Violation(rule="deletion-protection", resource=where,
                               message="dedicated.deletion_protection is false"))
    return found


# -- the gate: run by both engines before every up ------------------------------------------
_WAIVED: ContextVar[frozenset[str]] = ContextVar("tenantctl_policy_waived", default=frozenset())


@contextmanager
def waived(*rules: str) -> Iterator[None]:
    """Let the gate pass ``rules`` for the applies inside the block. Only
    deprovision uses it: it lifts RDS deletion protection in one update right
    before destroying the instance."""
    unknown = set(rules) - set(RULES) - set(SPEC_RULES)
    if unknown:
        raise ValueError(f"unknown rule(s): {', '.join(sorted(unknown))}")
    token = _WAIVED.set(_WAIVED.get() | frozenset(rules))
    try:
        yield
    finally:
        _WAIVED.reset(token)


BEFORE_CHANGES = "policy gate refused stack {stack!r} before anything was applied"
DURING_UP = ("policy refused stack {stack!r} during its up, before changing the resource named "
             "(resources earlier in the up may have changed)")


def waived_rules() -> frozenset[str]:
    """The rules waived around this call (``waived``)."""
    return _WAIVED.get()


class PolicyRefused(PolicyViolation):
    """The gate refused a plan (exit code 8); ``violations`` lists every broken rule.
    ``changed_nothing``: refused before the first change (the preview's gate),
    not during an up by the resolved-value judgment (CrossGuard)."""

    def __init__(self, stack: str, violations: list[Violation], changed_nothing: bool = True) -> None:
        self.stack, self.violations, self.changed_nothing = stack, violations, changed_nothing
        rules = ", ".join(dict.fromkeys(v.rule for v in violations))
        details = "; ".join(str(v) for v in violations)
        when = (BEFORE_CHANGES if changed_nothing else DURING_UP).format(stack=stack)
        super().__init__(f"{when} (rule {rules}): {details}", rule=rules)


def refuse_unsafe_spec(spec: Any) -> None:
    """The spec half of the gate, for callers that want to refuse before
    writing anything (provision runs it before its registry reservation)."""
    found = [v for v in check_spec(spec) if v.rule not in _WAIVED.get()]
    if found:
        raise PolicyRefused(getattr(spec, "id", "platform"), found)


def is_platform(stack: str) -> bool:
    """A cell's stack (`platform` or `cell-<name>`) is judged as the platform,
    its resources tagged with its own stack name; any other stack is a tenant's."""
    return naming.cell_of_stack(stack) is not None


def judged_as(stack: str) -> str:
    """Whose names a stack's resources must carry: a cell's stack its own name,
    a tenant's stack (`acme`, or `acme.k1` of a move) its tenant's id."""
    found = None if is_platform(stack) else naming.stack_tenant(stack)
    return found[0] if found is not None else stack


class PolicyGate:
    """``gate(stack, planned)``: raises PolicyRefused when the plan of ``stack``
    (or its committed spec) breaks an invariant. Engines call it between their
    preview of the program and the first change; ``target.open_engine`` hands
    one to every engine it opens."""

    def __init__(self, project_dir: Path) -> None:
        self.project_dir = Path(project_dir)

    @property
    def stacks_dir(self) -> Path:
        from tenantctl.project import Project

        return Project.load(self.project_dir).stacks_dir

    def _spec(self, stack: str) -> Any:
        from tenantctl.stackconfig import read_cell, read_tenant, stack_file

        cell = naming.cell_of_stack(stack)
        if cell is not None:
            return read_cell(self.stacks_dir, cell)
        path = stack_file(self.stacks_dir, stack)
        return read_tenant(path) if path.exists() else None

    def __call__(self, stack: str, planned: list[PlannedResource], *, judged_at_apply: bool = False) -> Judgment:
        """Judge a preview's plan. ``judged_at_apply``: the engine judges every
        resource again with resolved values right before creating or updating it
        (``resolved``); without that a value the rules need but cannot see yet is
        refused (fail closed). Returns the judgment (its ``unjudged``: what the
        apply will judge)."""
        platform = is_platform(stack)
        waived_now = waived_rules()
        judgment = judge(planned, judged_as(stack), platform=platform)
        found = [v for v in check_spec(self._spec(stack)) + judgment.violations if v.rule not in waived_now]
        unjudged = [u for u in judgment.unjudged if u.rule not in waived_now]
        if not judged_at_apply:
            found += [u.model_copy(update={"message": f"{u.message} and nothing judges it then (fail closed)"})
                      for u in unjudged]
        if found:
            raise PolicyRefused(stack, found)
        return Judgment(violations=[], unjudged=unjudged)

    @staticmethod
    def resolved(stack: str) -> ResolvedJudge:
        """The per-resource judgment with resolved values for an up of ``stack``
        (the rules waived around the call stay waived)."""
        return ResolvedJudge(judged_as(stack), is_platform(stack), waived_rules())
