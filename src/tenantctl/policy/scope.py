"""Whose a resource is and what it may reach: the tenant's tags, lifecycle
rules under its own prefix, IAM policies scoped to its own resources (the
platform's runtime role to what the runtime reads), no other tenant's names."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tenantctl import naming
from tenantctl.policy.plan import (
    REQUIRED_TAGS,
    TAGGABLE,
    UNKNOWN,
    Plan,
    PlannedResource,
    as_doc,
    as_list,
    known,
    rule,
)

# Actions that touch tenant data: never allowed on a wildcard resource.
_DATA_SERVICES = ("s3:", "sqs:", "kms:", "secretsmanager:", "dynamodb:", "rds-db:", "rds-data:")


@rule("tenant-tag")
def _tenant_tag(plan: Plan):
    for r in plan.of(*TAGGABLE):
        tags = r.inputs.get("tags") or {}
        if not isinstance(tags, dict) or any(tags.get(t) == UNKNOWN for t in REQUIRED_TAGS):
            plan.unknown(r, "tags")
            continue
        missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
        if missing:
            yield r.name, f"missing tag(s) {', '.join(missing)}"
        elif tags["tenant"] != plan.tenant_id:
            yield r.name, f"tagged tenant={tags['tenant']!r}, expected {plan.tenant_id!r}"
        elif tags["managed-by"] != "tenantctl":
            yield r.name, "tag managed-by must be 'tenantctl'"


LIFECYCLE_CONFIGURATIONS = ("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
                            "aws:s3/bucketLifecycleConfigurationV2:BucketLifecycleConfigurationV2")


@rule("lifecycle-scope")
def _lifecycle_scope(plan: Plan):
    prefix = naming.s3_prefix(plan.tenant_id)
    if not plan.platform:
        # A bucket holds one lifecycle configuration: a tenant declaring one
        # would replace its whole cell's retention rules.
        for r in plan.of(*LIFECYCLE_CONFIGURATIONS):
            yield r.name, "a tenant stack must not own a bucket's lifecycle configuration (its cell's stack does)"
    for r in plan.dynamic("prefix-lifecycle"):
        if plan.platform:
            yield r.name, "the platform stack must not own tenant lifecycle rules"
            continue
        if r.inputs.get("tenant_id") != plan.tenant_id:
            yield r.name, f"rules declared for tenant {r.inputs.get('tenant_id')!r}"
        if r.inputs.get("rules") == UNKNOWN:
            plan.unknown(r, "rules")
            continue
        for rl in r.inputs.get("rules") or []:
            rule_prefix = (rl.get("Filter") or {}).get("Prefix", "")
            if not rule_prefix.startswith(prefix):
                yield r.name, f"rule {rl.get('ID')!r} filters {rule_prefix!r}, outside {prefix!r}"
            if not str(rl.get("ID", "")).startswith(f"tenantctl-{plan.tenant_id}-"):
                yield r.name, f"rule id {rl.get('ID')!r} does not carry the tenant id"


def _statement_scope(plan: Plan, r: PlannedResource, stmt: dict) -> Iterator[str]:
    tid = plan.tenant_id
    prefix = naming.s3_prefix(tid)
    actions = [a.lower() for a in as_list(stmt.get("Action"))]
    data = any(a == "*" or a.startswith(_DATA_SERVICES) for a in actions)
    for res in as_list(stmt.get("Resource")):
        if not known(res):
            continue
        if "*" == res or res.endswith(":*") or res.split(":")[2:3] == ["*"]:
            if data:
                yield f"wildcard resource {res!r} on data actions {actions}"
            continue
        if plan.platform:  # the platform's roles are AWS services' (flow logs, monitoring): no tenant scope
            continue
        service = res.split(":")[2] if res.count(":") >= 5 else ""
        if service == "s3":
            bucket, _, key = res.split(":::", 1)[-1].partition("/")
            if key:
                if not naming.owns_key_path(tid, key):
                    yield f"S3 resource {res!r} outside {prefix} (or its workspaces')"
            else:
                cond = stmt.get("Condition") or {}
                prefixes = [p for op in cond.values() for p in as_list(op.get("s3:prefix"))]
                if not prefixes or any(not naming.owns_key_path(tid, p) for p in prefixes):
                    yield f"bucket-level {res!r} without an s3:prefix condition under {prefix}"
        elif service == "sqs":
            if not naming.owns_queue(tid, res.rsplit(":", 1)[-1]):
                yield f"queue {res!r} is not this tenant's"
        elif service == "kms":
            if not plan.owns_key(r, "policy key resource", res):
                yield f"key {res!r} is not this tenant's"
        elif service == "secretsmanager":
            if ":secret:" not in res or not naming.owns_secret(tid, res.split(":secret:", 1)[1]):
                yield f"secret {res!r} is not this tenant's"
        else:
            yield f"resource {res!r} of service {service or '?'} is not a tenant resource"


# What the platform's runtime role may do (infra/components/runtime_role.py): assume
# tenant roles and cells' waker roles (any account: cells), read the platform's own
# tables, the gateway secret and (through Secrets Manager) the key it is sealed
# with, and wake tenant database instances (never another instance of the account).
# A cell's waker role may do only the last, in its own account. The gate knows no
# region: ARNs of any partition match (the program writes its cell's).
_TENANT_INSTANCE = f":db:{naming.rds_identifier('*')}"
# (any region's: in_any_partition compares what follows the partition)
_TENANT_ROLES, _WAKER_ROLES = naming.tenant_roles("us-east-1"), naming.waker_roles("us-east-1")


def _of(service: str, part: str):
    return lambda res: naming.is_arn_of(res, service) and part in res


def _tenant_instance(res: str) -> bool:
    return naming.is_arn_of(res, "rds") and res.endswith(_TENANT_INSTANCE)


_WAKER_GRANTS = {"rds:describedbinstances": _tenant_instance, "rds:startdbinstance": _tenant_instance}
_RUNTIME_GRANTS = {
    **_WAKER_GRANTS,
    "sts:assumerole": lambda res: any(naming.in_any_partition(res, r) for r in (_TENANT_ROLES, _WAKER_ROLES)),
    "sts:tagsession": lambda res: naming.in_any_partition(res, _TENANT_ROLES),
    "dynamodb:getitem": _of("dynamodb", ":table/"),
    "dynamodb:scan": _of("dynamodb", ":table/"),
    "secretsmanager:getsecretvalue": _of("secretsmanager", ":secret:"),
    "kms:decrypt": _of("kms", ":key/"),
}


def _granted_scope(stmt: dict, grants: dict, who: str, may: str) -> Iterator[str]:
    for action in (a.lower() for a in as_list(stmt.get("Action"))):
        allowed = grants.get(action)
        if allowed is None:
            yield f"action {action!r}: {who} may only {may}"
            continue
        for res in as_list(stmt.get("Resource")):
            if known(res) and not allowed(res):
                yield f"{action} on {res!r}: outside what {who} may reach"


@rule("iam-scope")
def _iam_scope(plan: Plan):
    for r in plan.of("aws:iam/rolePolicy:RolePolicy"):
        policy = r.inputs.get("policy")
        if not known(policy):
            plan.unknown(r, "policy")
            continue
        for stmt in as_list(as_doc(policy).get("Statement")):
            if stmt.get("Effect") != "Allow":
                continue
            unknown = [part for part in ("Action", "Resource") if not all(map(known, as_list(stmt.get(part))))]
            if unknown:
                plan.unknown(r, f"policy statement {stmt.get('Sid', '?')} {'/'.join(unknown)}")
            if "NotResource" in stmt or "NotAction" in stmt:
                yield r.name, f"statement {stmt.get('Sid', '?')} uses NotResource/NotAction"
            for problem in _role_policy_scope(plan, r, stmt):
                yield r.name, problem


def _role_policy_scope(plan: Plan, r: PlannedResource, stmt: dict) -> Iterator[str]:
    """A tenant stack's role is the tenant's; the platform's are the runtime's,
    a cell's waker role, and the cell's AWS service roles (flow-log delivery, RDS
    monitoring), which reach no tenant data (the wildcard check)."""
    if not plan.platform:
        return _statement_scope(plan, r, stmt)
    role = r.inputs.get("role")
    if role == UNKNOWN:
        plan.unknown(r, "role")
        return iter(())
    if role == naming.RUNTIME_ROLE:
        return _granted_scope(stmt, _RUNTIME_GRANTS, "the runtime role",
                              "assume tenant and waker roles, read what the runtime reads and wake tenant databases")
    if naming.is_cell_waker_role(role):
        return _granted_scope(stmt, _WAKER_GRANTS, "a cell's waker role", "describe and start tenant databases")
    return _statement_scope(plan, r, stmt)


def _strings(value: Any, key: str = "") -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            if not str(k).startswith("__"):  # __provider: the pickled dynamic provider
                yield from _strings(v, k)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v, key)


def foreign_references(text: str, tenant_id: str) -> frozenset[str]:
    """Tenant ids other than ``tenant_id`` whose names appear in ``text``."""
    return naming.tenant_ids_in(text, tenant_id)


@rule("no-foreign-reference")
def _no_foreign_reference(plan: Plan):
    for r in plan.resources:
        others: set[str] = set()
        for s in _strings(r.inputs):
            if s == UNKNOWN:  # may name anyone once known
                plan.unknown(r, "inputs")
            others |= foreign_references(s, plan.tenant_id)
        if others:
            yield r.name, f"references other tenant(s): {', '.join(sorted(others))}"
