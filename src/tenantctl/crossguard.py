"""tenantctl's isolation rules as a Pulumi CrossGuard policy pack (``policy/``).

The policy gate judges a preview's plan, where a value that depends on a
resource not created yet (a new tenant's role policy, the key ARN a queue or
an RDS instance is encrypted with) is still unknown. CrossGuard judges each
resource during `up`, with resolved values, right before it is created or
updated, and a mandatory violation stops the update there. One rule set
(``tenantctl.policy.RULES``), two enforcement points: every rule is one
mandatory ``ResourceValidationPolicy`` of the same name, judging through
``policy.ResolvedJudge`` (the resources the update registered before are the
context, e.g. the tenant key's alias).

``tenantctl`` passes the pack to every preview and up of the aws target
(``policy_packs=``) and disables waived rules through the pack's config
(``policy_pack_configs=``); a team runs the same pack in its own pipelines
with ``pulumi preview/up --policy-pack <pack dir>`` (docs/aws.md). The pack's
``__main__.py`` only wires ``policies()`` into a ``PolicyPack``; pulumi-policy
is imported when the pack runs, never by tenantctl's other commands.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tenantctl.policy import RULES, UNKNOWN, PlannedResource, ResolvedJudge, Violation, is_platform, judged_as

PACK_NAME = "tenantctl-isolation"
_PACKAGE_DIR = Path(__file__).resolve().parent

# pulumi-policy's typed unknown sentinels (pulumi_policy/proxy.py); the engine
# serialises every unknown as the string one, policy.UNKNOWN.
_UNKNOWNS = frozenset({
    UNKNOWN,
    "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7", "3eeb2bf0-c639-47a8-9e75-3b44932eb421",
    "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2", "030794c1-ac77-496b-92df-f27374a8bd58",
    "e48ece36-62e2-4504-bad9-02848725956a", "dd056dcd-154b-4c76-9bd3-c8f88648b5ff",
})


def pack_dir() -> Path | None:
    """The policy pack tenantctl passes to Pulumi: ``policy/`` in a checkout, or
    the copy force-included into the wheel as ``tenantctl/_policy``; None when
    it or pulumi-policy is missing (then the gate fails closed on unknowns)."""
    import importlib.util

    if importlib.util.find_spec("pulumi_policy") is None:
        return None
    for candidate in (_PACKAGE_DIR.parent.parent / "policy", _PACKAGE_DIR / "_policy"):
        if (candidate / "PulumiPolicy.yaml").is_file():
            return candidate
    return None


def plain(value: Any) -> Any:
    """pulumi-policy's ``props`` as plain JSON-shaped inputs: its proxies (which
    raise on an unknown value) unwrapped, every unknown as ``policy.UNKNOWN``."""
    target = _target(value)
    if isinstance(target, dict):
        return {str(k): plain(target[k]) for k in target}
    if isinstance(target, (list, tuple)):
        return [plain(v) for v in target]
    if isinstance(target, str) and target in _UNKNOWNS:
        return UNKNOWN
    return target


def _target(value: Any) -> Any:
    """What a pulumi-policy proxy wraps (its ``__target`` item), else the value."""
    from collections.abc import Mapping, Sequence

    if isinstance(value, (Mapping, Sequence)) and not isinstance(value, (str, bytes, dict, list, tuple)):
        try:
            return value["__target"]
        except (KeyError, TypeError, IndexError):
            return dict(value) if isinstance(value, Mapping) else list(value)
    return value


def stack_of(urn: str) -> str:
    """The stack a resource belongs to: ``urn:pulumi:<stack>::<project>::...``."""
    head = urn.split("::", 1)[0]
    return head.rsplit(":", 1)[-1] if head.startswith("urn:pulumi:") else ""


class PackRun:
    """One run of the pack: the CLI starts the analyzer once per preview or up
    and calls every policy for each resource as it is registered. The first
    policy called for a resource judges it (``ResolvedJudge``: every rule at
    once) and the others read their rule's share."""

    def __init__(self) -> None:
        self._judges: dict[str, ResolvedJudge] = {}
        self._found: dict[str, list[Violation]] = {}
        self._lock = threading.Lock()

    def violations(self, urn: str, resource_type: str, name: str, props: Any) -> list[Violation]:
        with self._lock:
            if urn not in self._found:
                stack = stack_of(urn)
                judge = self._judges.setdefault(stack, ResolvedJudge(judged_as(stack), is_platform(stack)))
                resource = PlannedResource(type=resource_type, name=name, inputs=plain(props))
                self._found[urn] = judge(resource, urn)
            return self._found[urn]

    def validator(self, rule: str) -> Any:
        def validate(args: Any, report_violation: Any) -> None:
            if args.resource_type == "pulumi:pulumi:Stack" or args.resource_type.startswith("pulumi:providers:"):
                return
            for v in self.violations(args.urn, args.resource_type, args.name, args.props):
                if v.rule == rule:
                    report_violation(v.message if v.resource == args.name else f"{v.resource}: {v.message}", None)

        return validate


def describe(rule: str) -> str:
    doc = (RULES[rule].__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split()) or f"tenantctl isolation rule {rule} (tenantctl.policy)"


def policies(run: PackRun | None = None) -> list[Any]:
    """One mandatory ResourceValidationPolicy per rule of ``tenantctl.policy``."""
    from pulumi_policy import EnforcementLevel, ResourceValidationPolicy

    run = run or PackRun()
    return [ResourceValidationPolicy(name=rule, description=describe(rule), validate=run.validator(rule),
                                     enforcement_level=EnforcementLevel.MANDATORY)
            for rule in RULES]
