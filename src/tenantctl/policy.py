"""Isolation invariants, checked on planned resources before anything is applied.

One module serves three callers: the CLI's policy gate (planned resources of a
preview), the LocalEngine's preview, and `tenantctl check`. A resource is what
Pulumi hands a resource monitor: its type token, logical name and camelCase
inputs (the same dicts ``pulumi.runtime.Mocks.new_resource`` receives).

Each rule has a name, so a refusal says which invariant broke. Values still
unknown at preview time (Pulumi's unknown sentinel) are never judged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tenantctl import naming

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # pulumi's unknown-value sentinel

TAGGABLE = frozenset({
    "aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/routeTable:RouteTable",
    "aws:ec2/securityGroup:SecurityGroup", "aws:ec2/vpcEndpoint:VpcEndpoint",
    "aws:rds/subnetGroup:SubnetGroup", "aws:rds/instance:Instance", "aws:kms/key:Key",
    "aws:s3/bucket:Bucket", "aws:dynamodb/table:Table", "aws:sqs/queue:Queue",
    "aws:iam/role:Role", "aws:secretsmanager/secret:Secret", "aws:sns/topic:Topic",
    "aws:cloudwatch/metricAlarm:MetricAlarm",
})
REQUIRED_TAGS = ("tenant", "tier", "owner", "managed-by")
DYNAMIC = "pulumi-python:dynamic:Resource"

# Suffixes of the `tenantctl-<id>-<suffix>` names the program gives a tenant's
# resources. Knowing them lets no-foreign-reference tell `acme`'s names from
# `acme-corp`'s without a list of every other tenant.
NAME_SUFFIXES = frozenset({
    "jobs", "jobs-dlq", "app", "final", "alarms", "dlq-depth", "queue-age",
    "db-storage", "db-cpu", "tmp-expiry", "abort-multipart", "archive",
})

# Actions that touch tenant data: never allowed on a wildcard resource.
_DATA_SERVICES = ("s3:", "sqs:", "kms:", "secretsmanager:", "dynamodb:", "rds-db:", "rds-data:")


def resource_name(tenant_id: str, suffix: str) -> str:
    """`tenantctl-<id>-<suffix>`: the only shape of tenant-specific names besides naming.py's."""
    if suffix not in NAME_SUFFIXES:
        raise ValueError(f"unknown name suffix {suffix!r}: add it to policy.NAME_SUFFIXES")
    return f"tenantctl-{tenant_id}-{suffix}"


class PlannedResource(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: str
    name: str
    inputs: dict[str, Any] = Field(default_factory=dict)


class Violation(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule: str
    resource: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.resource}: {self.message}"


class _Plan:
    """The resources under check plus what the rules derive from them."""

    def __init__(self, resources: Iterable[PlannedResource], tenant_id: str, platform: bool) -> None:
        self.resources = list(resources)
        self.tenant_id = tenant_id
        self.platform = platform

    def of(self, *types: str) -> Iterator[PlannedResource]:
        return (r for r in self.resources if r.type in types)

    def dynamic(self, kind: str) -> Iterator[PlannedResource]:
        return (r for r in self.of(DYNAMIC) if r.inputs.get("kind") == kind)

    @property
    def own_key_refs(self) -> set[str]:
        """ARNs/ids of this stack's own keys: what its aliases point at."""
        return {str(a.inputs.get("targetKeyId")) for a in self.of("aws:kms/alias:Alias")
                if a.inputs.get("name") == naming.kms_alias(self.tenant_id)}


Rule = Callable[[_Plan], Iterator[Violation]]
RULES: dict[str, Rule] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        def named(plan: _Plan) -> Iterator[Violation]:
            for resource, message in fn(plan):
                yield Violation(rule=name, resource=resource, message=message)
        RULES[name] = named
        return fn
    return register


def _known(value: Any) -> bool:
    return value is not None and value != UNKNOWN


def _doc(value: Any) -> dict:
    """A policy document given as a JSON string or already as a dict."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


@rule("tenant-tag")
def _tenant_tag(plan: _Plan):
    for r in plan.of(*TAGGABLE):
        tags = r.inputs.get("tags") or {}
        missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
        if missing:
            yield r.name, f"missing tag(s) {', '.join(missing)}"
        elif tags["tenant"] != plan.tenant_id:
            yield r.name, f"tagged tenant={tags['tenant']!r}, expected {plan.tenant_id!r}"
        elif tags["managed-by"] != "tenantctl":
            yield r.name, "tag managed-by must be 'tenantctl'"


@rule("kms-rotation")
def _kms_rotation(plan: _Plan):
    for r in plan.of("aws:kms/key:Key"):
        if r.inputs.get("enableKeyRotation") is not True:
            yield r.name, "key rotation is off"


@rule("queue-encryption")
def _queue_encryption(plan: _Plan):
    keys = plan.own_key_refs
    for r in plan.of("aws:sqs/queue:Queue"):
        key = r.inputs.get("kmsMasterKeyId")
        if not key:
            yield r.name, "queue has no SSE-KMS key"
        elif _known(key) and key not in keys:
            yield r.name, f"queue encrypted with {key!r}, not this tenant's key"


@rule("lifecycle-scope")
def _lifecycle_scope(plan: _Plan):
    prefix = naming.s3_prefix(plan.tenant_id)
    for r in plan.dynamic("prefix-lifecycle"):
        if plan.platform:
            yield r.name, "the platform stack must not own tenant lifecycle rules"
            continue
        if r.inputs.get("tenant_id") != plan.tenant_id:
            yield r.name, f"rules declared for tenant {r.inputs.get('tenant_id')!r}"
        for rl in r.inputs.get("rules") or []:
            rule_prefix = (rl.get("Filter") or {}).get("Prefix", "")
            if not rule_prefix.startswith(prefix):
                yield r.name, f"rule {rl.get('ID')!r} filters {rule_prefix!r}, outside {prefix!r}"
            if not str(rl.get("ID", "")).startswith(f"tenantctl-{plan.tenant_id}-"):
                yield r.name, f"rule id {rl.get('ID')!r} does not carry the tenant id"


def _statement_scope(plan: _Plan, stmt: dict) -> Iterator[str]:
    tid = plan.tenant_id
    prefix = naming.s3_prefix(tid)
    actions = [a.lower() for a in _as_list(stmt.get("Action"))]
    data = any(a == "*" or a.startswith(_DATA_SERVICES) for a in actions)
    for res in _as_list(stmt.get("Resource")):
        if not _known(res):
            continue
        if "*" == res or res.endswith(":*") or res.split(":")[2:3] == ["*"]:
            if data:
                yield f"wildcard resource {res!r} on data actions {actions}"
            continue
        service = res.split(":")[2] if res.count(":") >= 5 else ""
        if service == "s3":
            bucket, _, key = res.split(":::", 1)[-1].partition("/")
            if key:
                if not key.startswith(prefix):
                    yield f"S3 resource {res!r} outside {prefix}"
            else:
                cond = stmt.get("Condition") or {}
                prefixes = [p for op in cond.values() for p in _as_list(op.get("s3:prefix"))]
                if not prefixes or any(not p.startswith(prefix) for p in prefixes):
                    yield f"bucket-level {res!r} without an s3:prefix condition under {prefix}"
        elif service == "sqs":
            if res.rsplit(":", 1)[-1] not in (naming.queue_name(tid), naming.dlq_name(tid)):
                yield f"queue {res!r} is not this tenant's"
        elif service == "kms":
            if res not in plan.own_key_refs:
                yield f"key {res!r} is not this tenant's"
        elif service == "secretsmanager":
            if f":secret:{naming.secret_name(tid)}" not in res:
                yield f"secret {res!r} is not this tenant's"
        else:
            yield f"resource {res!r} of service {service or '?'} is not a tenant resource"


@rule("iam-scope")
def _iam_scope(plan: _Plan):
    for r in plan.of("aws:iam/rolePolicy:RolePolicy"):
        policy = r.inputs.get("policy")
        if not _known(policy):
            continue
        for stmt in _as_list(_doc(policy).get("Statement")):
            if stmt.get("Effect") != "Allow":
                continue
            if "NotResource" in stmt or "NotAction" in stmt:
                yield r.name, f"statement {stmt.get('Sid', '?')} uses NotResource/NotAction"
            for problem in _statement_scope(plan, stmt):
                yield r.name, problem


@rule("rds-posture")
def _rds_posture(plan: _Plan):
    for r in plan.of("aws:rds/instance:Instance"):
        i = r.inputs
        if i.get("storageEncrypted") is not True:
            yield r.name, "storage not encrypted"
        if i.get("publiclyAccessible") is not False:
            yield r.name, "instance may be publicly accessible"
        if i.get("deletionProtection") is not True:
            yield r.name, "deletion protection is off"
        if int(i.get("backupRetentionPeriod") or 0) < 7:
            yield r.name, f"backup retention {i.get('backupRetentionPeriod') or 0} < 7 days"
        if i.get("skipFinalSnapshot") is True:
            yield r.name, "final snapshot skipped"
        if not plan.platform and _known(i.get("kmsKeyId")) and i.get("kmsKeyId") not in plan.own_key_refs:
            yield r.name, "dedicated storage not encrypted with this tenant's key"


@rule("no-open-ingress")
def _no_open_ingress(plan: _Plan):
    for r in plan.of("aws:ec2/securityGroup:SecurityGroup"):
        for ing in r.inputs.get("ingress") or []:
            cidrs = _as_list(ing.get("cidrBlocks")) + _as_list(ing.get("ipv6CidrBlocks"))
            for cidr in cidrs:
                if cidr in ("0.0.0.0/0", "::/0"):
                    yield r.name, f"ingress open to {cidr} on port {ing.get('fromPort')}"


_PATTERNS = (
    re.compile(r"tenants/([a-z][a-z0-9-]*)/"),          # S3 prefix
    re.compile(r"alias/tenantctl/([a-z][a-z0-9-]*)"),   # KMS alias
    re.compile(r"tenantctl/([a-z][a-z0-9-]*)/db"),      # secret name
)
_TOKEN = re.compile(r"tenantctl-[a-z0-9-]+")
_SCHEMA = re.compile(r"^tenant_[a-z0-9_]+$")


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


def foreign_references(text: str, tenant_id: str) -> set[str]:
    """Tenant ids other than ``tenant_id`` whose names appear in ``text``."""
    found = {m.group(1) for p in _PATTERNS for m in p.finditer(text)}
    for token in _TOKEN.findall(text):
        body = token.removeprefix("tenantctl-")
        if body == tenant_id or body.removeprefix(f"{tenant_id}-") in NAME_SUFFIXES and body.startswith(f"{tenant_id}-"):
            continue
        for suffix in NAME_SUFFIXES:
            if body.endswith(f"-{suffix}"):
                found.add(body.removesuffix(f"-{suffix}"))
    if _SCHEMA.match(text) and text != "tenant_id":
        if text not in (naming.schema_name(tenant_id), naming.db_role_name(tenant_id)):
            found.add(text.removeprefix("tenant_").removesuffix("_app").replace("_", "-"))
    found.discard(tenant_id)
    return found


@rule("no-foreign-reference")
def _no_foreign_reference(plan: _Plan):
    for r in plan.resources:
        others: set[str] = set()
        for s in _strings(r.inputs):
            others |= foreign_references(s, plan.tenant_id)
        if others:
            yield r.name, f"references other tenant(s): {', '.join(sorted(others))}"


@rule("bucket-public-access")
def _bucket_public_access(plan: _Plan):
    if not plan.platform:
        return
    blocks = {str(b.inputs.get("bucket")): b.inputs for b in plan.of("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")}
    policies = {str(p.inputs.get("bucket")): _doc(p.inputs.get("policy")) for p in plan.of("aws:s3/bucketPolicy:BucketPolicy")}
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    for b in plan.of("aws:s3/bucket:Bucket"):
        name = str(b.inputs.get("bucket"))
        block = blocks.get(name)
        if block is None or not all(block.get(f) is True for f in flags):
            yield b.name, "public access not fully blocked"
        policy = policies.get(name, {})
        tls = any(s.get("Effect") == "Deny" and "aws:SecureTransport" in json.dumps(s.get("Condition", {}))
                  for s in _as_list(policy.get("Statement")))
        if not tls:
            yield b.name, "no TLS-only (aws:SecureTransport) deny statement"


def check(resources: Iterable[PlannedResource], tenant_id: str, platform: bool = False,
          rules: Iterable[str] | None = None) -> list[Violation]:
    """Every violation of the named rules (all rules by default).

    For the platform stack pass ``tenant_id="platform", platform=True``.
    """
    plan = _Plan(resources, tenant_id, platform)
    selected = list(RULES) if rules is None else list(rules)
    unknown = set(selected) - set(RULES)
    if unknown:
        raise ValueError(f"unknown rule(s): {', '.join(sorted(unknown))}")
    return [v for name in selected for v in RULES[name](plan)]
