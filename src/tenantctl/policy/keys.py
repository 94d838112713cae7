"""KMS keys, and what they encrypt: rotation, queues and the alarm topic under the
stack's own key, the key policy granting the tenant role exactly what its IAM
policy does; Secrets Manager secrets rotating on schedule."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from tenantctl.policy.plan import MAX_ROTATION_DAYS, UNKNOWN, Plan, as_doc, as_list, known, rule


@rule("kms-rotation")
def _kms_rotation(plan: Plan):
    for r in plan.of("aws:kms/key:Key"):
        if r.inputs.get("enableKeyRotation") is not True:
            yield r.name, "key rotation is off"


def _encrypted_with_own_key(plan: Plan, typ: str, what: str, missing: str) -> Iterator[tuple[str, str]]:
    """Every ``typ`` resource names a KMS key (``kmsMasterKeyId``), this stack's own."""
    for r in plan.of(typ):
        key = r.inputs.get("kmsMasterKeyId")
        if not key:
            yield r.name, missing
        elif not plan.owns_key(r, "kmsMasterKeyId", key):
            yield r.name, f"{what} encrypted with {key!r}, not this tenant's key"


@rule("queue-encryption")
def _queue_encryption(plan: Plan):
    yield from _encrypted_with_own_key(plan, "aws:sqs/queue:Queue", "queue", "queue has no SSE-KMS key")


@rule("secret-rotation")
def _secret_rotation(plan: Plan):
    """Every secret rotates automatically, at most every ``MAX_ROTATION_DAYS``.
    A secret's ARN is an output, so schedules naming an ARN not known yet are
    paired with secrets by count."""
    schedules = list(plan.of("aws:secretsmanager/secretRotation:SecretRotation"))
    for r in schedules:
        if r.inputs.get("rotationEnabled") is False:
            yield r.name, "rotation disabled"
        if not r.inputs.get("rotationLambdaArn"):
            yield r.name, "no rotation function"
        days = (r.inputs.get("rotationRules") or {}).get("automaticallyAfterDays")
        if known(days) and int(float(days)) > MAX_ROTATION_DAYS:  # Pulumi numbers arrive as floats
            yield r.name, f"rotated every {int(float(days))} days (> {MAX_ROTATION_DAYS})"
    if not plan.complete:  # a schedule comes after its secret in an up
        return
    ids = [str(r.inputs.get("secretId")) for r in schedules]
    pending = ids.count(UNKNOWN)
    for secret in plan.of("aws:secretsmanager/secret:Secret"):
        name = str(secret.inputs.get("name"))
        if any(i == name or f":secret:{name}-" in i for i in ids):
            continue
        if pending:
            pending -= 1
            continue
        yield secret.name, "no automatic rotation"


@rule("alarm-topic-encryption")
def _alarm_topic_encryption(plan: Plan):
    yield from _encrypted_with_own_key(plan, "aws:sns/topic:Topic", "topic", "topic not encrypted (no KMS key)")


def _lower(actions: Any) -> set[str]:
    return {str(a).lower() for a in as_list(actions)}


def key_use_actions(key_policy: dict) -> set[str]:
    """What a key policy lets IAM principals do besides administering it (the
    ``kms:*`` statement): the tenant role's grant."""
    found: set[str] = set()
    for stmt in as_list(key_policy.get("Statement")):
        principal = stmt.get("Principal")
        if stmt.get("Effect") != "Allow" or not isinstance(principal, dict) or "AWS" not in principal:
            continue
        actions = _lower(stmt.get("Action"))
        if actions != {"kms:*"}:
            found |= actions
    return found


def role_key_actions(role_policies: Iterable[dict]) -> set[str]:
    """The KMS actions the role's identity policies allow."""
    return {a for doc in role_policies for stmt in as_list(doc.get("Statement")) if stmt.get("Effect") == "Allow"
            for a in _lower(stmt.get("Action")) if a.startswith("kms:")}


@rule("key-policy-matches-role")
def _key_policy_matches_role(plan: Plan):
    """Within one account a key policy alone grants use of the key: what it grants
    the tenant role must be exactly what the role's IAM policy grants, or the
    role holds the union of both."""
    policies = list(plan.of("aws:iam/rolePolicy:RolePolicy"))
    if plan.platform or not policies:  # (an up: the role policy comes after the key)
        return
    unknown = [r for r in policies if not known(r.inputs.get("policy"))]
    for r in unknown:
        plan.unknown(r, "policy")
    if unknown:
        return
    role = role_key_actions(as_doc(r.inputs.get("policy")) for r in policies)
    for key in plan.of("aws:kms/key:Key"):
        policy = key.inputs.get("policy")
        if not known(policy):
            plan.unknown(key, "policy")
            continue
        granted = key_use_actions(as_doc(policy))
        if granted and granted != role:
            extra, missing = sorted(granted - role), sorted(role - granted)
            detail = "; ".join(x for x in (extra and f"key policy adds {', '.join(extra)}",
                                           missing and f"lacks {', '.join(missing)}") if x)
            yield key.name, f"key policy and role policy grant different KMS actions: {detail}"
