"""What the rules judge: a planned resource (what Pulumi hands a resource
monitor), the violations they find, the plan they read it through, and the
rule registry (``RULES``, filled by the ``@rule`` modules of this package)."""

from __future__ import annotations

import json
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


class Plan:
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
        if known(ref) and ref in refs:
            return True
        if not known(ref) or UNKNOWN in refs:
            self.unknown(resource, field)
            return True
        return False


Rule = Callable[[Plan], Iterator[Violation]]
RULES: dict[str, Rule] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        def named(plan: Plan) -> Iterator[Violation]:
            plan.rule = name
            for resource, message in fn(plan):
                yield Violation(rule=name, resource=resource, message=message)
        named.__doc__ = fn.__doc__  # the CrossGuard pack describes each policy with it
        RULES[name] = named
        return fn
    return register


def known(value: Any) -> bool:
    return value is not None and value != UNKNOWN


def as_doc(value: Any) -> dict:
    """A policy document given as a JSON string or already as a dict."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]

