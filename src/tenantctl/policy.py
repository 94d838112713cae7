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
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tenantctl import naming
from tenantctl.errors import PolicyViolation

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # pulumi's unknown-value sentinel

TAGGABLE = frozenset({
    "aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/routeTable:RouteTable",
    "aws:ec2/securityGroup:SecurityGroup", "aws:ec2/vpcEndpoint:VpcEndpoint",
    "aws:rds/subnetGroup:SubnetGroup", "aws:rds/instance:Instance", "aws:kms/key:Key",
    "aws:s3/bucket:Bucket", "aws:dynamodb/table:Table", "aws:sqs/queue:Queue",
    "aws:iam/role:Role", "aws:secretsmanager/secret:Secret", "aws:sns/topic:Topic",
    "aws:cloudwatch/metricAlarm:MetricAlarm", "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
    "aws:ec2/flowLog:FlowLog", "aws:cloudwatch/logGroup:LogGroup", "aws:rds/parameterGroup:ParameterGroup",
    "aws:ec2/defaultNetworkAcl:DefaultNetworkAcl",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
    "aws:serverlessrepository/cloudFormationStack:CloudFormationStack",
})
REQUIRED_TAGS = ("tenant", "tier", "owner", "managed-by")
DYNAMIC = "pulumi-python:dynamic:Resource"

MIN_BACKUP_RETENTION_DAYS = 7
MAX_ROTATION_DAYS = 90  # prowler's default for secretsmanager_automatic_rotation_enabled
POSTGRES_PORT = 5432
# The parameters every instance's own parameter group must pin.
REQUIRED_DB_PARAMETERS = {"rds.force_ssl": "1"}
REQUIRED_DB_LOG_EXPORTS = ("postgresql",)

# Actions that touch tenant data: never allowed on a wildcard resource.
_DATA_SERVICES = ("s3:", "sqs:", "kms:", "secretsmanager:", "dynamodb:", "rds-db:", "rds-data:")


class PlannedResource(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: str
    name: str
    inputs: dict[str, Any] = Field(default_factory=dict)


def planned_resource(typ: str, name: str, inputs: dict[str, Any]) -> PlannedResource:
    """A PlannedResource from the inputs a Pulumi mock receives: JSON-shaped,
    Pulumi internals (``__provider``...) dropped, and every unknown value (a
    ``pulumi.output.Unknown`` during a preview) as the ``UNKNOWN`` sentinel, so
    the rules skip it instead of judging its repr."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items() if not str(k).startswith("__")}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if type(value).__name__ == "Unknown" and type(value).__module__.startswith("pulumi"):
            return UNKNOWN
        return value

    return PlannedResource(type=typ, name=name, inputs=json.loads(json.dumps(plain(inputs), default=str)))


class Violation(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule: str
    resource: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.resource}: {self.message}"


UNKNOWN_UNTIL_APPLY = "unknown until apply"


class Judgment(BaseModel):
    """What the rules found: ``violations``, and ``unjudged``, the values a rule
    needs that are unknown until apply (``message``: "<field> unknown until apply")."""

    violations: list[Violation] = Field(default_factory=list)
    unjudged: list[Violation] = Field(default_factory=list)


class _Plan:
    """The resources under check plus what the rules derive from them.

    ``complete``: every resource of the stack is here (a preview's plan). An up
    judging resources one by one as they are registered (``ResolvedJudge``) has
    only those registered so far: a companion resource not seen yet (a bucket's
    public access block) is not judged missing then; the preview judged it."""

    def __init__(self, resources: Iterable[PlannedResource], tenant_id: str, platform: bool,
                 complete: bool = True) -> None:
        self.resources = list(resources)
        self.tenant_id = tenant_id
        self.platform = platform
        self.complete = complete
        self.unjudged: list[Violation] = []
        self.rule = ""  # the rule running now, set by @rule

    def unknown(self, resource: PlannedResource, field: str) -> None:
        """``field`` of ``resource`` is unknown: the running rule cannot judge it."""
        message = f"{field} {UNKNOWN_UNTIL_APPLY}"
        self.unjudged.append(Violation(rule=self.rule, resource=resource.name, message=message))

    def of(self, *types: str) -> Iterator[PlannedResource]:
        return (r for r in self.resources if r.type in types)

    def dynamic(self, kind: str) -> Iterator[PlannedResource]:
        return (r for r in self.of(DYNAMIC) if r.inputs.get("kind") == kind)

    @property
    def own_key_refs(self) -> set[str]:
        """ARNs/ids of this stack's own keys: what its aliases point at (the
        tenant's key and its workspaces')."""
        return {str(a.inputs.get("targetKeyId")) for a in self.of("aws:kms/alias:Alias")
                if naming.owns_alias(self.tenant_id, str(a.inputs.get("name")))}

    def owns_key(self, resource: PlannedResource, field: str, ref: Any) -> bool:
        """Whether ``ref`` may stand as one of this stack's keys: it is one, or it
        cannot be told yet (recorded as unknown)."""
        refs = self.own_key_refs
        if _known(ref) and ref in refs:
            return True
        if not _known(ref) or UNKNOWN in refs:
            self.unknown(resource, field)
            return True
        return False


Rule = Callable[[_Plan], Iterator[Violation]]
RULES: dict[str, Rule] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        def named(plan: _Plan) -> Iterator[Violation]:
            plan.rule = name
            for resource, message in fn(plan):
                yield Violation(rule=name, resource=resource, message=message)
        named.__doc__ = fn.__doc__  # the CrossGuard pack describes each policy with it
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


@rule("kms-rotation")
def _kms_rotation(plan: _Plan):
    for r in plan.of("aws:kms/key:Key"):
        if r.inputs.get("enableKeyRotation") is not True:
            yield r.name, "key rotation is off"


def _encrypted_with_own_key(plan: _Plan, typ: str, what: str, missing: str) -> Iterator[tuple[str, str]]:
    """Every ``typ`` resource names a KMS key (``kmsMasterKeyId``), this stack's own."""
    for r in plan.of(typ):
        key = r.inputs.get("kmsMasterKeyId")
        if not key:
            yield r.name, missing
        elif not plan.owns_key(r, "kmsMasterKeyId", key):
            yield r.name, f"{what} encrypted with {key!r}, not this tenant's key"


@rule("queue-encryption")
def _queue_encryption(plan: _Plan):
    yield from _encrypted_with_own_key(plan, "aws:sqs/queue:Queue", "queue", "queue has no SSE-KMS key")


LIFECYCLE_CONFIGURATIONS = ("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
                            "aws:s3/bucketLifecycleConfigurationV2:BucketLifecycleConfigurationV2")


@rule("lifecycle-scope")
def _lifecycle_scope(plan: _Plan):
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


def _statement_scope(plan: _Plan, r: PlannedResource, stmt: dict) -> Iterator[str]:
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
                prefixes = [p for op in cond.values() for p in _as_list(op.get("s3:prefix"))]
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
# tenant roles (any account: cells) and read the platform's own tables, the
# gateway secret and (through Secrets Manager) the key it is sealed with.
_RUNTIME_GRANTS = {
    "sts:assumerole": lambda res: res == f"arn:aws:iam::*:role/{naming.iam_role_name('*')}",
    "sts:tagsession": lambda res: res == f"arn:aws:iam::*:role/{naming.iam_role_name('*')}",
    "dynamodb:getitem": lambda res: res.startswith("arn:aws:dynamodb:") and ":table/" in res,
    "dynamodb:scan": lambda res: res.startswith("arn:aws:dynamodb:") and ":table/" in res,
    "secretsmanager:getsecretvalue": lambda res: res.startswith("arn:aws:secretsmanager:") and ":secret:" in res,
    "kms:decrypt": lambda res: res.startswith("arn:aws:kms:") and ":key/" in res,
}


def _runtime_role_scope(stmt: dict) -> Iterator[str]:
    for action in (a.lower() for a in _as_list(stmt.get("Action"))):
        allowed = _RUNTIME_GRANTS.get(action)
        if allowed is None:
            yield f"action {action!r}: the runtime role may only assume tenant roles and read what the runtime reads"
            continue
        for res in _as_list(stmt.get("Resource")):
            if _known(res) and not allowed(res):
                yield f"{action} on {res!r}: outside what the runtime role may reach"


@rule("iam-scope")
def _iam_scope(plan: _Plan):
    for r in plan.of("aws:iam/rolePolicy:RolePolicy"):
        policy = r.inputs.get("policy")
        if not _known(policy):
            plan.unknown(r, "policy")
            continue
        for stmt in _as_list(_doc(policy).get("Statement")):
            if stmt.get("Effect") != "Allow":
                continue
            unknown = [part for part in ("Action", "Resource") if not all(map(_known, _as_list(stmt.get(part))))]
            if unknown:
                plan.unknown(r, f"policy statement {stmt.get('Sid', '?')} {'/'.join(unknown)}")
            if "NotResource" in stmt or "NotAction" in stmt:
                yield r.name, f"statement {stmt.get('Sid', '?')} uses NotResource/NotAction"
            for problem in _role_policy_scope(plan, r, stmt):
                yield r.name, problem


def _role_policy_scope(plan: _Plan, r: PlannedResource, stmt: dict) -> Iterator[str]:
    """A tenant stack's role is the tenant's; the platform's are the runtime's
    and the cell's AWS service roles (flow-log delivery, RDS monitoring), which
    reach no tenant data (the wildcard check)."""
    if not plan.platform:
        return _statement_scope(plan, r, stmt)
    role = r.inputs.get("role")
    if role == UNKNOWN:
        plan.unknown(r, "role")
        return iter(())
    return _runtime_role_scope(stmt) if role == naming.RUNTIME_ROLE else _statement_scope(plan, r, stmt)


def _instances(plan: _Plan) -> Iterator[PlannedResource]:
    return plan.of("aws:rds/instance:Instance")


@rule("rds-encryption")
def _rds_encryption(plan: _Plan):
    for r in _instances(plan):
        i = r.inputs
        if i.get("storageEncrypted") is not True:
            yield r.name, "storage not encrypted"
        elif not plan.platform and not plan.owns_key(r, "kmsKeyId", i.get("kmsKeyId") or ""):
            yield r.name, "dedicated storage not encrypted with this tenant's key"


@rule("public-database")
def _public_database(plan: _Plan):
    for r in _instances(plan):
        if r.inputs.get("publiclyAccessible") is not False:
            yield r.name, "instance may be publicly accessible (publiclyAccessible must be false)"


@rule("deletion-protection")
def _deletion_protection(plan: _Plan):
    for r in _instances(plan):
        if r.inputs.get("deletionProtection") is not True:
            yield r.name, "deletion protection is off"
        if r.inputs.get("skipFinalSnapshot") is True:
            yield r.name, "final snapshot skipped"


@rule("backup-retention")
def _backup_retention(plan: _Plan):
    for r in _instances(plan):
        days = r.inputs.get("backupRetentionPeriod")
        if days == UNKNOWN:
            plan.unknown(r, "backupRetentionPeriod")
            continue
        if days is None:
            continue
        if int(days or 0) < MIN_BACKUP_RETENTION_DAYS:
            yield r.name, f"backup retention {days or 0} < {MIN_BACKUP_RETENTION_DAYS} days"


_OPEN = ("0.0.0.0/0", "::/0")


@rule("no-open-ingress")
def _no_open_ingress(plan: _Plan):
    def opened(r: PlannedResource, rule_inputs: dict, *keys: str) -> Iterator[tuple[str, str]]:
        cidrs = [c for key in keys for c in _as_list(rule_inputs.get(key))]
        if not all(map(_known, cidrs)):
            plan.unknown(r, "ingress CIDR")
        for cidr in cidrs:
            if cidr in _OPEN:
                yield r.name, f"ingress open to {cidr} on port {rule_inputs.get('fromPort')}"

    for r in plan.of("aws:ec2/securityGroup:SecurityGroup"):
        ingress = r.inputs.get("ingress") or []
        if not _known(ingress):
            plan.unknown(r, "ingress")
            continue
        for ing in ingress:
            yield from opened(r, ing, "cidrBlocks", "ipv6CidrBlocks")
    # The same rule written as separate rule resources.
    for r in plan.of("aws:ec2/securityGroupRule:SecurityGroupRule"):
        if r.inputs.get("type") == "ingress":
            yield from opened(r, r.inputs, "cidrBlocks", "ipv6CidrBlocks")
    for r in plan.of("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        yield from opened(r, r.inputs, "cidrIpv4", "cidrIpv6")


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
    return naming.tenant_ids_in(text, tenant_id)


@rule("no-foreign-reference")
def _no_foreign_reference(plan: _Plan):
    for r in plan.resources:
        others: set[str] = set()
        for s in _strings(r.inputs):
            if s == UNKNOWN:  # may name anyone once known
                plan.unknown(r, "inputs")
            others |= foreign_references(s, plan.tenant_id)
        if others:
            yield r.name, f"references other tenant(s): {', '.join(sorted(others))}"


_PUBLIC_ACLS = ("public-read", "public-read-write", "authenticated-read")
_BLOCK_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def _public_statement(stmt: dict) -> bool:
    """An Allow to everyone without a condition narrowing it."""
    if stmt.get("Effect") != "Allow" or stmt.get("Condition"):
        return False
    principal = stmt.get("Principal")
    if isinstance(principal, dict):
        principal = principal.get("AWS")
    return principal == "*" or (isinstance(principal, list) and "*" in principal)


def _bucket_key(value: Any) -> str:
    # A bucket named by an output not known yet pairs with settings whose bucket is unknown too.
    return str(value) if _known(value) else UNKNOWN


@rule("bucket-public-access")
def _bucket_public_access(plan: _Plan):
    """Every bucket any stack declares: the four public-access-block flags on,
    no public ACL, no bucket policy granting everyone, TLS-only. A policy
    document still unknown at preview time is judged on the next apply."""
    blocks = {_bucket_key(b.inputs.get("bucket")): b.inputs
              for b in plan.of("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")}
    policies = {_bucket_key(p.inputs.get("bucket")): p.inputs.get("policy")
                for p in plan.of("aws:s3/bucketPolicy:BucketPolicy")}
    acls = {_bucket_key(a.inputs.get("bucket")): a.inputs.get("acl")
            for a in plan.of("aws:s3/bucketAclV2:BucketAclV2", "aws:s3/bucketAcl:BucketAcl")}
    for b in plan.of("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"):
        name = _bucket_key(b.inputs.get("bucket"))
        block = blocks.get(name)
        if block is not None and any(block.get(f) == UNKNOWN for f in _BLOCK_FLAGS):
            plan.unknown(b, "public access block")
        elif (block is None and plan.complete) or (block is not None and
                                                     not all(block.get(f) is True for f in _BLOCK_FLAGS)):
            yield b.name, "public access not fully blocked"
        for acl in (b.inputs.get("acl"), acls.get(name)):
            if acl in _PUBLIC_ACLS:
                yield b.name, f"public ACL {acl!r}"
            elif acl == UNKNOWN:
                plan.unknown(b, "acl")
        policy = policies.get(name)
        if policy == UNKNOWN:
            plan.unknown(b, "bucket policy")
            continue
        if policy is None and not plan.complete:
            continue
        statements = _as_list(_doc(policy).get("Statement"))
        if any(_public_statement(s) for s in statements):
            yield b.name, "bucket policy allows everyone (Principal \"*\")"
        tls = any(s.get("Effect") == "Deny" and "aws:SecureTransport" in json.dumps(s.get("Condition", {}))
                  for s in statements)
        if not tls:
            yield b.name, "no TLS-only (aws:SecureTransport) deny statement"


def _logging_targets(plan: _Plan) -> set[str]:
    """Buckets receiving another bucket's server access logs."""
    return {_bucket_key(r.inputs.get("targetBucket")) for r in plan.of(*_BUCKET_LOGGING)
            if _bucket_key(r.inputs.get("targetBucket")) != _bucket_key(r.inputs.get("bucket"))}


_BUCKET_LOGGING = ("aws:s3/bucketLogging:BucketLogging", "aws:s3/bucketLoggingV2:BucketLoggingV2")
_BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")


@rule("bucket-encryption")
def _bucket_encryption(plan: _Plan):
    """Default SSE-KMS; SSE-S3 only on a bucket that receives server access logs
    (S3 log delivery cannot write into a bucket whose default is SSE-KMS)."""
    sse = {_bucket_key(e.inputs.get("bucket")): e.inputs for e in plan.of(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2")}
    targets = _logging_targets(plan)
    for b in plan.of(*_BUCKETS):
        name = _bucket_key(b.inputs.get("bucket"))
        config = sse.get(name)
        if config is None and not plan.complete:
            continue
        config = config or {}
        if config.get("rules") == UNKNOWN:
            plan.unknown(b, "encryption rules")
            continue
        algorithms = [((r or {}).get("applyServerSideEncryptionByDefault") or {}).get("sseAlgorithm")
                      for r in _as_list(config.get("rules"))]
        if any(a in ("aws:kms", "aws:kms:dsse") for a in algorithms):
            continue
        if UNKNOWN in algorithms:
            plan.unknown(b, "encryption algorithm")
        elif "AES256" in algorithms and name in targets and name != UNKNOWN:
            continue  # a log target: S3 log delivery cannot write under SSE-KMS
        elif "AES256" in algorithms and not plan.complete:
            continue  # its logging may be registered later: the preview judged the whole set
        else:
            yield b.name, "no default SSE-KMS encryption"


@rule("bucket-access-logging")
def _bucket_access_logging(plan: _Plan):
    """Every bucket's server access logs go to another bucket; a bucket receiving
    logs does not log itself (log delivery would log its own writes)."""
    logged = {_bucket_key(r.inputs.get("bucket")): r.inputs for r in plan.of(*_BUCKET_LOGGING)}
    targets = _logging_targets(plan)
    for b in plan.of(*_BUCKETS):
        name = _bucket_key(b.inputs.get("bucket"))
        if name in targets and name != UNKNOWN:
            continue
        target = (logged.get(name) or {}).get("targetBucket")
        if target == UNKNOWN:
            plan.unknown(b, "access log target")
        elif not target and plan.complete:  # (an up judging resources as they come: registered later)
            yield b.name, "no server access logging"
        elif target == name:
            yield b.name, "access logs delivered into the bucket itself"


# -- the network ------------------------------------------------------------------------------

def endpoint_policy_problems(doc: dict, service_name: str) -> list[str]:
    """What is wrong with a VPC endpoint's policy (``doc``; {} when there is none):
    missing (AWS's default is every action on every resource of every account),
    an Allow of every action, or resources of any account: the S3 gateway must
    name buckets and ``aws:ResourceAccount``, an interface endpoint must confine
    principals or resources to an account."""
    statements = _as_list(doc.get("Statement"))
    if not statements:
        return ["no endpoint policy: AWS's default allows every action on every resource of every account"]
    s3 = service_name.endswith(".s3")
    problems = []
    for stmt in statements:
        if stmt.get("Effect") != "Allow":
            continue
        sid = stmt.get("Sid", "?")
        actions = [str(a) for a in _as_list(stmt.get("Action"))]
        resources = [str(r) for r in _as_list(stmt.get("Resource"))]
        keys = {k.lower() for op in (stmt.get("Condition") or {}).values() if isinstance(op, dict) for k in op}
        if "*" in actions or "NotAction" in stmt or "NotResource" in stmt:
            problems.append(f"statement {sid} allows every action")
        if s3:
            if any(r in ("*", "arn:aws:s3:::*", "arn:aws:s3:::*/*") for r in resources):
                problems.append(f"statement {sid} reaches every bucket")
            if "aws:resourceaccount" not in keys:
                problems.append(f"statement {sid} has no aws:ResourceAccount condition")
        elif not keys & {"aws:resourceaccount", "aws:principalaccount", "aws:resourceorgid", "aws:principalorgid"} \
                and "*" in resources:
            problems.append(f"statement {sid} is confined to no account")
    return problems


@rule("vpc-endpoint-policy")
def _vpc_endpoint_policy(plan: _Plan):
    for r in plan.of("aws:ec2/vpcEndpoint:VpcEndpoint"):
        policy = r.inputs.get("policy")
        if policy == UNKNOWN:
            plan.unknown(r, "policy")
            continue
        for problem in endpoint_policy_problems(_doc(policy), str(r.inputs.get("serviceName", ""))):
            yield r.name, problem


def _per_vpc(plan: _Plan, typ: str, ok: Callable[[PlannedResource], bool], missing: str) -> Iterator[tuple[str, str]]:
    """Each VPC of the plan needs one ``typ`` resource passing ``ok`` (a VPC's id
    is not an input, so they are matched by count). Judged on a whole plan only:
    the resource comes after its VPC in an up."""
    if not plan.complete:
        return
    vpcs = list(plan.of("aws:ec2/vpc:Vpc"))
    good = [r for r in plan.of(typ) if _known(r.inputs.get("vpcId")) or r.inputs.get("vpcId") == UNKNOWN]
    good = [r for r in good if ok(r)]
    for vpc in vpcs[len(good):]:
        yield vpc.name, missing


@rule("vpc-flow-logs")
def _vpc_flow_logs(plan: _Plan):
    def complete(r: PlannedResource) -> bool:
        return r.inputs.get("trafficType") == "ALL" and bool(r.inputs.get("logDestination")
                                                               or r.inputs.get("logGroupName"))
    yield from _per_vpc(plan, "aws:ec2/flowLog:FlowLog", complete, "no flow log of ALL traffic")


@rule("default-security-group")
def _default_security_group(plan: _Plan):
    groups = list(plan.of("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"))
    for g in groups:
        if g.inputs.get("ingress") or g.inputs.get("egress"):
            yield g.name, "the default security group keeps rules (it must have none)"
    yield from _per_vpc(plan, "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup", lambda g: True,
                        "default security group not taken over (AWS's allows all egress and traffic within the group)")


def _covers_postgres(protocol: Any, from_port: Any, to_port: Any) -> bool:
    if str(protocol) in ("-1", "all"):
        return True
    try:
        return int(float(from_port)) <= POSTGRES_PORT <= int(float(to_port))
    except (TypeError, ValueError):
        return False


@rule("db-ingress-from-groups")
def _db_ingress_from_groups(plan: _Plan):
    """PostgreSQL is admitted from security groups (the tenants' app groups, the
    rotation function), never from an address range such as the whole VPC."""
    for r in plan.of("aws:ec2/securityGroup:SecurityGroup"):
        for ing in r.inputs.get("ingress") or []:
            ranges = _as_list(ing.get("cidrBlocks")) + _as_list(ing.get("ipv6CidrBlocks")) \
                + _as_list(ing.get("prefixListIds"))
            if not all(map(_known, ranges)):
                plan.unknown(r, "ingress source")
            if ranges and _covers_postgres(ing.get("protocol"), ing.get("fromPort"), ing.get("toPort")):
                yield r.name, f"PostgreSQL ingress from {', '.join(map(str, ranges))}, not from a security group"
    for r in plan.of("aws:ec2/securityGroupRule:SecurityGroupRule"):
        i = r.inputs
        ranges = _as_list(i.get("cidrBlocks")) + _as_list(i.get("ipv6CidrBlocks")) + _as_list(i.get("prefixListIds"))
        if i.get("type") == "ingress" and ranges and _covers_postgres(i.get("protocol"), i.get("fromPort"),
                                                                      i.get("toPort")):
            yield r.name, f"PostgreSQL ingress from {', '.join(map(str, ranges))}, not from a security group"
    for r in plan.of("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        i = r.inputs
        ranges = [v for v in (i.get("cidrIpv4"), i.get("cidrIpv6"), i.get("prefixListId")) if v]
        if ranges and _covers_postgres(i.get("ipProtocol"), i.get("fromPort"), i.get("toPort")):
            yield r.name, f"PostgreSQL ingress from {', '.join(map(str, ranges))}, not from a security group"


# -- the database instances ---------------------------------------------------------------------

@rule("rds-hardening")
def _rds_hardening(plan: _Plan):
    """IAM database authentication, log exports, enhanced monitoring, and a
    parameter group of its own that forces TLS."""
    groups = {str(g.inputs.get("name")): g.inputs for g in plan.of("aws:rds/parameterGroup:ParameterGroup")}
    for r in _instances(plan):
        i = r.inputs
        if i.get("iamDatabaseAuthenticationEnabled") is not True:
            yield r.name, "IAM database authentication is off"
        exports = _as_list(i.get("enabledCloudwatchLogsExports"))
        if UNKNOWN not in exports and not set(REQUIRED_DB_LOG_EXPORTS) <= set(exports):
            yield r.name, f"log exports {sorted(exports)} lack {', '.join(REQUIRED_DB_LOG_EXPORTS)}"
        if not i.get("monitoringInterval") or not i.get("monitoringRoleArn"):
            yield r.name, "enhanced monitoring is off"
        name = i.get("parameterGroupName")
        if name == UNKNOWN:
            plan.unknown(r, "parameterGroupName")
        elif not name or str(name).startswith("default."):
            yield r.name, "default parameter group (rds.force_ssl not pinned)"
        elif name != UNKNOWN and str(name) in groups:
            pinned = {p.get("name"): str(p.get("value")) for p in _as_list(groups[str(name)].get("parameters"))}
            for param, value in REQUIRED_DB_PARAMETERS.items():
                if pinned.get(param) != value:
                    yield r.name, f"parameter group {name} does not pin {param}={value}"


@rule("shared-db-multi-az")
def _shared_db_multi_az(plan: _Plan):
    if not plan.platform:
        return
    for r in _instances(plan):
        if r.inputs.get("multiAz") is not True:
            yield r.name, "the shared database is single-AZ: every pooled tenant depends on it"


@rule("database-public-privileges")
def _database_public_privileges(plan: _Plan):
    """Each instance's database strips PUBLIC of CONNECT and TEMPORARY (PostgreSQL
    grants both to PUBLIC on every new database)."""
    revoked = {str(r.inputs.get("database")) for r in plan.dynamic("database-acl")}
    if not plan.complete:  # the ACL comes after its instance in an up
        return
    for r in _instances(plan):
        database = r.inputs.get("dbName")
        if _known(database) and str(database) not in revoked:
            yield r.name, f"PUBLIC keeps CONNECT and TEMPORARY on {database}"


# -- secrets, topics and keys --------------------------------------------------------------------

@rule("secret-rotation")
def _secret_rotation(plan: _Plan):
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
        if _known(days) and int(float(days)) > MAX_ROTATION_DAYS:  # Pulumi numbers arrive as floats
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
def _alarm_topic_encryption(plan: _Plan):
    yield from _encrypted_with_own_key(plan, "aws:sns/topic:Topic", "topic", "topic not encrypted (no KMS key)")


def _lower(actions: Any) -> set[str]:
    return {str(a).lower() for a in _as_list(actions)}


def key_use_actions(key_policy: dict) -> set[str]:
    """What a key policy lets IAM principals do besides administering it (the
    ``kms:*`` statement): the tenant role's grant."""
    found: set[str] = set()
    for stmt in _as_list(key_policy.get("Statement")):
        principal = stmt.get("Principal")
        if stmt.get("Effect") != "Allow" or not isinstance(principal, dict) or "AWS" not in principal:
            continue
        actions = _lower(stmt.get("Action"))
        if actions != {"kms:*"}:
            found |= actions
    return found


def role_key_actions(role_policies: Iterable[dict]) -> set[str]:
    """The KMS actions the role's identity policies allow."""
    return {a for doc in role_policies for stmt in _as_list(doc.get("Statement")) if stmt.get("Effect") == "Allow"
            for a in _lower(stmt.get("Action")) if a.startswith("kms:")}


@rule("key-policy-matches-role")
def _key_policy_matches_role(plan: _Plan):
    """Within one account a key policy alone grants use of the key: what it grants
    the tenant role must be exactly what the role's IAM policy grants, or the
    role holds the union of both."""
    policies = list(plan.of("aws:iam/rolePolicy:RolePolicy"))
    if plan.platform or not policies:  # (an up: the role policy comes after the key)
        return
    unknown = [r for r in policies if not _known(r.inputs.get("policy"))]
    for r in unknown:
        plan.unknown(r, "policy")
    if unknown:
        return
    role = role_key_actions(_doc(r.inputs.get("policy")) for r in policies)
    for key in plan.of("aws:kms/key:Key"):
        policy = key.inputs.get("policy")
        if not _known(policy):
            plan.unknown(key, "policy")
            continue
        granted = key_use_actions(_doc(policy))
        if granted and granted != role:
            extra, missing = sorted(granted - role), sorted(role - granted)
            detail = "; ".join(x for x in (extra and f"key policy adds {', '.join(extra)}",
                                           missing and f"lacks {', '.join(missing)}") if x)
            yield key.name, f"key policy and role policy grant different KMS actions: {detail}"


def judge(resources: Iterable[PlannedResource], tenant_id: str, platform: bool = False,
          rules: Iterable[str] | None = None, complete: bool = True) -> Judgment:
    """The violations of the named rules (all rules by default), and what they
    could not judge because it is unknown until apply.

    For a cell's stack pass its stack name and ``platform=True`` (``tenant_id="platform"``
    for the default cell).
    """
    plan = _Plan(resources, tenant_id, platform, complete)
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
