"""Isolation invariants, checked on planned resources before anything is applied.

One module serves three callers: the policy gate both engines run between their
preview and the first change (``PolicyGate``: the LocalEngine's plan pass, the
PulumiEngine's Automation API preview), provision's early spec check, and
`tenantctl check` (the IAM rules on the live role policy). A resource is what
Pulumi hands a resource monitor: its type token, logical name and camelCase
inputs (the same dicts ``pulumi.runtime.Mocks.new_resource`` receives).

Each rule has a name, so a refusal says which invariant broke. A value a
rule needs that is still unknown at preview time (Pulumi's unknown sentinel:
an ARN of a resource not created yet) cannot be judged there: the rule records
it as unjudged instead of passing it. The gate fails closed on those unless
the engine judges every resource again with resolved values right before it is
created or updated (``ResolvedJudge``: the CrossGuard pack in ``policy/`` on the
PulumiEngine, the apply pass on the LocalEngine). One rule set, two
enforcement points.

The package: ``plan`` (the planned resource, violations and the rule
registry), one module of rules per concern (``scope``, ``keys``, ``buckets``,
``network``, ``databases``), and ``gate`` (judging, the gate, the spec's rules).
"""

from __future__ import annotations

# Each rule module registers its rules in RULES on import, in the order judgments list them:
# what a stack's resources may reach first, then keys, databases, the network and buckets.
# isort: off
from tenantctl.policy import scope, keys, databases, network, buckets  # noqa: F401
# isort: on
from tenantctl.policy.gate import (
    PolicyGate,
    PolicyRefused,
    ResolvedJudge,
    check,
    check_spec,
    is_platform,
    judge,
    judged_as,
    refuse_unsafe_spec,
    waived,
    waived_rules,
)
from tenantctl.policy.keys import key_use_actions, role_key_actions
from tenantctl.policy.network import endpoint_policy_problems
from tenantctl.policy.plan import (
    MAX_ROTATION_DAYS,
    MIN_BACKUP_RETENTION_DAYS,
    POSTGRES_PORT,
    REQUIRED_DB_LOG_EXPORTS,
    REQUIRED_DB_PARAMETERS,
    REQUIRED_TAGS,
    RULES,
    UNKNOWN,
    Judgment,
    PlannedResource,
    Violation,
    planned_resource,
)

__all__ = [
    "MAX_ROTATION_DAYS", "MIN_BACKUP_RETENTION_DAYS", "POSTGRES_PORT", "REQUIRED_DB_LOG_EXPORTS",
    "REQUIRED_DB_PARAMETERS", "REQUIRED_TAGS", "RULES", "UNKNOWN", "Judgment", "PlannedResource", "PolicyGate",
    "PolicyRefused", "ResolvedJudge", "Violation", "check", "check_spec", "endpoint_policy_problems", "is_platform",
    "judge", "judged_as", "key_use_actions", "planned_resource", "refuse_unsafe_spec", "role_key_actions", "waived",
    "waived_rules",
]
