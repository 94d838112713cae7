"""The one interface both engines implement: preview / up / destroy / refresh / outputs.

A stack is named by its id (`platform` or a tenant id); its desired state is the
committed stacks/Pulumi.<stack>.yaml. Engines report progress through
``on_event`` so the CLI can draw it without knowing which engine runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field


class Op(str, Enum):
    create = "create"
    update = "update"
    delete = "delete"
    same = "same"
    replace = "replace"


class PropertyDiff(BaseModel):
    """One changed property of a resource: desired (or recorded) ``old`` -> ``new``.
    ``path`` is dotted into nested inputs (``tags.owner``, ``redrivePolicy``);
    secret values are never carried (``"[secret]"``)."""

    path: str
    old: Any = None
    new: Any = None


# Resources whose replacement or deletion loses data: a preview calls them out.
DATA_BEARING_TYPES = frozenset({
    "aws:rds/instance:Instance", "aws:rds/cluster:Cluster", "aws:kms/key:Key", "aws:s3/bucket:Bucket",
    "aws:s3/bucketV2:BucketV2", "aws:secretsmanager/secret:Secret", "aws:dynamodb/table:Table",
})
# The dynamic resource under the tenant's database component, and the one under each
# workspace's, is a schema (its tables, its rows); each runs the schema template
# (templates/tenant_schema.sql.j2) when made, updated or replaced.
SCHEMA_PARENTS = ("tenantctl:database:TenantDatabase$pulumi-python:dynamic:Resource",
                  "tenantctl:workspace:TenantWorkspace$pulumi-python:dynamic:Resource")
DATA_BEARING_PARENTS = SCHEMA_PARENTS


def resource_arn(outputs: Mapping[str, Any] | None, resource_id: str | None) -> str:
    """A resource's ARN as a refresh reports it: its ``arn`` output, else its id when that is an
    ARN (a CloudFormation stack has no ``arn`` output: its id is its ARN, which AWS tags every
    resource the stack creates with)."""
    arn = (outputs or {}).get("arn")
    if isinstance(arn, str) and arn.startswith("arn:"):
        return arn
    return resource_id if isinstance(resource_id, str) and resource_id.startswith("arn:") else ""


class ResourceChange(BaseModel):
    op: Op
    type: str
    name: str
    urn: str = ""
    # For update / replace (a preview) and drift (a refresh): what differs.
    diffs: list[PropertyDiff] = Field(default_factory=list)
    # The resource's ARN when it has one (a refresh fills it): the refresh
    # operation tells a tagged resource the state knows from an orphan by it.
    arn: str = ""
    # Its provider id (a refresh and an up fill it): an inline role policy's ``role:name``, which
    # tells the policies a stack declares on its roles from ones added out of band.
    id: str = ""
    # A delete that leaves the resource where it is (Pulumi's retain_on_delete): only the state forgets it.
    retained: bool = False
    # A refresh's update: the live values of the inputs that differ, for a preview to fold
    # (``Engine.preview(read=)``) instead of reading them again. Not part of any output.
    live: dict[str, Any] = Field(default_factory=dict, exclude=True)

    @property
    def data_bearing(self) -> bool:
        """Replacing or deleting it loses data: a database, a key, a bucket, a secret, a schema."""
        return self.type in DATA_BEARING_TYPES or any(p in self.urn for p in DATA_BEARING_PARENTS)

    @property
    def loses_data(self) -> bool:
        return self.data_bearing and self.op in (Op.replace, Op.delete) and not self.retained

    @property
    def ran_schema_template(self) -> bool:
        """A step of an up that ran a store's schema template (a schema made, updated or replaced)."""
        return self.op in (Op.create, Op.update, Op.replace) and any(p in self.urn for p in SCHEMA_PARENTS)


class ChangeSet(BaseModel):
    """What preview found (or what up/destroy did)."""

    stack: str
    changes: list[ResourceChange] = Field(default_factory=list)
    # A refresh's: the recorded state it compared the live one with (an engine's token, "" none),
    # so a preview given this read uses it only while the state is still that one.
    basis: str = Field(default="", exclude=True)

    def count(self, op: Op) -> int:
        return sum(1 for c in self.changes if c.op is op)

    @property
    def has_changes(self) -> bool:
        return any(c.op is not Op.same for c in self.changes)

    def summary(self) -> dict[str, int]:
        return {op.value: self.count(op) for op in Op if self.count(op)}


class EngineEvent(BaseModel):
    """One step of progress: a resource starting/finishing, a diagnostic, the
    plan of an up (``total``: resources it will change, before the first
    change), or a phase of an operation (``message``: what it does now)."""

    stack: str
    kind: str  # "resource-pre" | "resource-done" | "diagnostic" | "summary" | "plan" | "phase"
    op: Op | None = None
    type: str = ""
    name: str = ""
    message: str = ""
    total: int | None = None


EventSink = Callable[[EngineEvent], None]
Approval = Callable[[ChangeSet], None]


def phase(on_event: EventSink | None, stack: str, message: str) -> None:
    """Tell the progress display an operation entered a phase (`reserving`, `applying`...)."""
    if on_event is not None:
        on_event(EngineEvent(stack=stack, kind="phase", message=message))


class AppliedResource(BaseModel):
    """A resource as the up itself left it: made, updated or replaced by it,
    or read live by its refresh (``inputs``: what it holds, as declared)."""

    type: str
    name: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    made: bool = False  # made by this up: it holds nothing the up did not put in it


class UpResult(BaseModel):
    stack: str
    outputs: dict[str, Any]
    changes: ChangeSet
    # up(refresh=True): what the refresh found out of line (recorded -> live),
    # which this up then brought back; the repair's own steps are in ``changes``.
    drift: list[ResourceChange] = Field(default_factory=list)
    # What the up established (the post-provision check reuses it instead of
    # reading it back: checks/reads.py). Empty when an engine cannot say: then
    # everything is read live. Not part of any command's output.
    applied: list[AppliedResource] = Field(default_factory=list, exclude=True)


class Engine(ABC):
    """Applies the infra/ program for one stack at a time.

    ``approve``: called by every ``up`` with its plan once the policy gate has
    judged it, before the first change; raising there (``NotConfirmed``) stops
    the up with nothing changed. The CLI sets it to ask before a delete or a
    replacement (``cli/confirm.py``)."""

    name: str
    approve: Approval | None = None

    def planned(self, changes: ChangeSet, on_event: EventSink | None) -> None:
        """An up's plan is known and judged: report how many resources it
        changes (the progress display's "N of M"), then let ``approve`` see it."""
        if on_event is not None:
            on_event(EngineEvent(stack=changes.stack, kind="plan",
                                 total=sum(1 for c in changes.changes if c.op is not Op.same)))
        if self.approve is not None:
            self.approve(changes)

    @abstractmethod
    def preview(self, stack: str, on_event: EventSink | None = None, *, refresh: bool = False,
                read: ChangeSet | None = None) -> ChangeSet:
        """What ``up`` would change, with property diffs for updates and
        replaces; ``refresh``: against the live state instead of the recorded one.
        ``read``: this stack's ``refresh`` just done (`apply --refresh --preview`
        read it to find the drift): an engine that can takes the live state from it
        instead of reading every resource again, while the recorded state is still
        the one it was compared with; else (or one that cannot: Pulumi) it reads."""

    @abstractmethod
    def up(self, stack: str, on_event: EventSink | None = None, *, refresh: bool = False) -> UpResult:
        """Apply the stack; ``refresh``: first take the live state of every
        resource (drift), so drifted resources are brought back to the program's
        inputs (a resource deleted out of band is created again)."""

    @abstractmethod
    def destroy(self, stack: str, on_event: EventSink | None = None) -> ChangeSet: ...

    def refresh(self, stack: str, on_event: EventSink | None = None, *, absent_ok: bool = False) -> ChangeSet:
        """Drift: the live state of each resource the stack's state knows, compared
        with that state, changing nothing. ``update`` with ``diffs`` (recorded ->
        live) for a changed resource, ``delete`` for one gone out of band,
        ``same`` otherwise. ``absent_ok``: a stack without a state has nothing to
        drift (an empty change set) instead of being an error where the engine
        treats it as one."""
        raise NotImplementedError(f"{type(self).__name__} cannot refresh")

    @abstractmethod
    def preview_destroy(self, stack: str, on_event: EventSink | None = None) -> ChangeSet:
        """What ``destroy`` would delete (each resource the stack's state knows), changing nothing."""

    def prepare(self) -> None:
        """Called once before several stacks run at once (a parallel `apply`):
        set up what concurrent runs would otherwise race to set up."""
        return None

    @abstractmethod
    def outputs(self, stack: str) -> dict[str, Any]:
        """The stack's outputs from its last successful up; {} if never applied."""

    @abstractmethod
    def holds_resources(self, stack: str) -> bool:
        """The stack's state records a resource of the program (not the stack
        itself, not a provider): with no outputs, an up that stopped half way."""
