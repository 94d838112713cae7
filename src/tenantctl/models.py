"""Every model that crosses a boundary on the provisioning side.

TenantSpec is a tenant's desired state (stacks/Pulumi.<id>.yaml, CLI flags),
CellSpec a cell's (stacks/Pulumi.platform.yaml for the default cell,
stacks/Pulumi.cell-<name>.yaml for the others); registry models come from
tenant_runtime so both sides share one definition.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tenant_runtime.models import (
    Hibernation,
    StoreConnection,
    TenantLock,
    TenantRecord,
    TenantResources,
    TenantStatus,
    Tier,
    WorkspaceResources,
    utcnow,
)
from tenantctl import cell_bounds, naming
from tenantctl.naming import partition_of

__all__ = [
    "AlarmSubscription", "ArchiveClass", "BackupSpec", "CellSpec", "DedicatedSpec", "Hibernation", "LifecycleSpec",
    "QueueSpec", "RetentionMenu", "RetiringStore",
    "StoreConnection", "TenantLock", "TenantRecord", "TenantResources", "TenantSpec",
    "TenantStatus", "Tier", "WorkspaceResources", "WorkspaceSpec", "describe_validation_error", "utcnow",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)

TagValue = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[\w .:/=+\-@]*$")]
# A principal of its own (role or user), never an account (root ARN, bare id) or '*'.
_PRINCIPAL = re.compile(r"arn:aws[\w-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+")
_SERVICE = re.compile(r"[a-z0-9.-]+\.amazonaws\.com")


Region = Annotated[str, Field(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")]


def _cell_name(v: str) -> str:
    problem = naming.cell_name_problem(v)
    if problem:
        raise ValueError(f"cell {v!r}: {problem}")
    return v


CellName = Annotated[str, AfterValidator(_cell_name)]


def _vpc_cidr(v: str) -> str:
    net = ipaddress.ip_network(v, strict=True)
    if not net.is_private or net.version != 4 or not 16 <= net.prefixlen <= 24:
        raise ValueError("vpc_cidr must be a private IPv4 network between /16 and /24")
    return str(net)


# A VPC's range, a dedicated tenant's or a cell's.
VpcCidr = Annotated[str, AfterValidator(_vpc_cidr)]


def _expiry_after(transition_days: int, expiry_days: int, field_prefix: str = "") -> None:
    """Archived objects expire after they move to Glacier, not before."""
    if expiry_days <= transition_days:
        raise ValueError(f"{field_prefix}expiry_days must be greater than {field_prefix}transition_days")
ABORT_MULTIPART_DEFAULT = 1
# Connections one pooled tenant's database login (and each of its workspaces')
# may hold on its cell's shared PostgreSQL at once (ALTER ROLE ... CONNECTION
# LIMIT). The shared pool logs in as the cell's gateway, which no tenant limit
# counts; only per-tenant logins do: a runtime without the gateway (each
# process keeps up to 4 idle connections per tenant, tenant_runtime.logins)
# and tenantctl's `check` (one login per role). 10 leaves two such processes
# and a check their room, and one tenant at most 10 of the ~400 connections a
# db.t4g.medium takes, so it can no longer starve the gateway's pools and its
# neighbours. Raise it per tenant (`db_connection_limit` in its stack file) or
# per cell for runtimes that log in per tenant at higher concurrency.
DB_CONNECTION_LIMIT_DEFAULT = 10
# A cell database's connections kept for the platform's own logins: the runtime's shared
# pools (the gateway login, max_size 10 per process: five processes) and tenantctl's admin
# sessions (``CellSpec.platform_connections``).
PLATFORM_CONNECTIONS_DEFAULT = 50
DB_CONNECTION_LIMIT_MAX = cell_bounds.DB_CONNECTION_LIMIT[1]
NO_CONNECTION_LIMIT = -1  # PostgreSQL's rolconnlimit for "no limit": a dedicated tenant's own server
DbConnectionLimit = Annotated[int, Field(ge=cell_bounds.DB_CONNECTION_LIMIT[0], le=DB_CONNECTION_LIMIT_MAX)]


class LifecycleSpec(BaseModel):
    """Lifecycle of objects under the tenant prefix: retention classes its cell's
    bucket offers (one shared rule per class, matched by the object tag the
    runtime's uploads carry), so a tenant writes no lifecycle rule of its own."""

    model_config = _STRICT

    temp_upload_days: int = Field(7, ge=1, le=365, description="uploads/tmp/ objects expire after N days")
    archive_transition_days: int = Field(30, ge=1, le=3650, description="archive/ moves to Glacier after N days")
    archive_expiry_days: int = Field(365, ge=2, le=36500, description="archive/ expires after N days")

    @model_validator(mode="before")
    @classmethod
    def _abort_multipart_moved_to_the_cell(cls, data: Any) -> Any:
        # Stack files written before cells carry abort_multipart_days; S3 cannot
        # filter that action by object tag, so it is one rule of the whole cell now.
        if isinstance(data, dict) and "abort_multipart_days" in data:
            data = dict(data)
            if data.pop("abort_multipart_days") != ABORT_MULTIPART_DEFAULT:
                raise ValueError("abort_multipart_days is a setting of the tenant's cell now "
                                 "(abort_multipart_days in its cell's stack file): remove it here")
        return data

    @model_validator(mode="after")
    def _expiry_after_transition(self) -> LifecycleSpec:
        _expiry_after(self.archive_transition_days, self.archive_expiry_days, "archive_")
        return self


class QueueSpec(BaseModel):
    model_config = _STRICT

    delay_seconds: int = Field(0, ge=0, le=900, description="default delivery delay (SQS allows 0..900)")
    max_receive_count: int = Field(5, ge=1, le=1000, description="receives before a message moves to the DLQ")
    retention_seconds: int = Field(345600, ge=60, le=1209600)


class BackupSpec(BaseModel):
    model_config = _STRICT

    retention_days: int = Field(14, ge=1, le=35, description="days backups (and RDS snapshots) are kept")


class DedicatedSpec(BaseModel):
    model_config = _STRICT

    vpc_cidr: VpcCidr = "10.42.0.0/16"
    instance_class: str = Field("db.t4g.micro", pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$")
    storage_gb: int = Field(20, ge=20, le=65536)
    # Multi-AZ as the shared database is: a dedicated tenant does not get a less
    # available store than a pooled one unless it asks (`--single-az`).
    multi_az: bool = True
    deletion_protection: bool = True
    # Set by `move` on the dedicated store it creates: that store's final
    # snapshot gets a name of its own (a tenant moved back and forth deletes
    # more than one instance, and snapshot names are unique).
    final_snapshot_suffix: str | None = Field(None, pattern=r"^[0-9]{14}$")


class RetiringStore(BaseModel):
    """The store a move is retiring, declared beside the tenant's current one
    while the move is open (so one `up` creates the new store and deletes
    nothing); dropped from the spec when the move is finalized or rolled back."""

    model_config = _STRICT

    tier: Tier
    generation: int = Field(0, ge=0)
    dedicated: DedicatedSpec | None = None
    # The cell the retiring store is in when the move changes cells (None: the
    # tenant's own cell). Only a cell of the same account and region: the
    # tenant's key, role, queues and secret stay where they are.
    cell: CellName | None = None


class WorkspaceSpec(BaseModel):
    """A workspace of the tenant (a department or project): its own key, schema
    and role in the tenant's store, prefix, queues and IAM role. ``name`` is
    checked against the tenant's id by TenantSpec (its names must fit)."""

    model_config = _STRICT

    name: str = Field(description="workspace name: lowercase words joined by single hyphens")
    owner: TagValue | None = None
    queue: QueueSpec = QueueSpec()
    # The tenant store generation whose schema resource keeps the plain name
    # (`<id>--<ws>-schema`; another generation's is `...-schema-s<N>`). None:
    # the tenant's current store (the retiring one while a move is open); a move
    # pins it, so neither store's resource is renamed (a rename would drop it).
    schema_generation: int | None = Field(None, ge=0)


class TenantSpec(BaseModel):
    """Desired state of one tenant."""

    model_config = _STRICT

    id: str = Field(description="tenant id: it names every resource of the tenant")
    tier: Tier = Tier.pooled
    region: Region = Field("us-east-1", description="where the tenant's data lives, backups included (residency)")
    residency: list[Region] = Field(default_factory=list, description=(
        "the regions the tenant's data may ever live in (a move to another region goes only there); "
        "empty: its region alone"))
    cell: CellName | None = Field(None, description="the cell it is placed in: chosen by placement on first "
                                                    "provision (or forced with --cell), then changed only by a move")
    owner: TagValue = "unknown"
    cost_centre: TagValue | None = None
    lifecycle: LifecycleSpec = LifecycleSpec()
    queue: QueueSpec = QueueSpec()
    backup: BackupSpec = BackupSpec()
    dedicated: DedicatedSpec | None = None
    db_connection_limit: DbConnectionLimit | None = Field(None, description=(
        "connections its database login (and each workspace's) may hold at once; default: its cell's "
        "db_connection_limit when the store is pooled, none on a dedicated tenant's own server"))
    # Suspended (`tenantctl suspend`): the registry says so (the runtime refuses
    # the tenant), the role's trust policy denies every AssumeRole, so no role
    # session is renewed, and the tenant's database logins are NOLOGIN with
    # their sessions ended. Written to the stack file only when true.
    suspended: bool = False
    # The stack a move to another account or region leaves, retired by its
    # finalize before the old queues are forwarded: the role may no longer send
    # to them (a runtime holding the old record fails closed on enqueue), so no
    # message lands there after the forward. Written to the stack file only when true.
    retired: bool = False
    # Which store the tenant's data is in: 0 for the store it was provisioned
    # with, +1 per move (each store's resources are named after its generation,
    # so the old and the new store of a move never share a name).
    store_generation: int = Field(0, ge=0)
    retiring: RetiringStore | None = None
    # Written to the stack file only when there are some (files without stay as they were).
    workspaces: list[WorkspaceSpec] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        rule = naming.broken_rule(v)
        if rule is not None:
            raise ValueError(f"tenant id {v!r} breaks the {rule.name} rule: {rule.explain}")
        return v

    @model_validator(mode="after")
    def _tier_options(self) -> TenantSpec:
        if self.tier is Tier.pooled and self.dedicated is not None:
            raise ValueError("dedicated options (vpc_cidr, instance class, storage, multi-AZ) need tier=dedicated")
        if self.tier is Tier.dedicated and self.dedicated is None:
            object.__setattr__(self, "dedicated", DedicatedSpec())
        if self.residency and self.region not in self.residency:
            raise ValueError(f"residency ({', '.join(self.residency)}) does not allow the tenant's own region "
                             f"{self.region}")
        names = [w.name for w in self.workspaces]
        if len(set(names)) != len(names):
            raise ValueError(f"workspaces: a name appears twice ({', '.join(sorted(names))})")
        for name in names:
            problem = naming.workspace_problem(self.id, name)
            if problem:
                raise ValueError(f"workspace {name!r}: {problem}")
        return self

    @property
    def allowed_regions(self) -> list[str]:
        """Where the tenant's data may live: its residency, or its region alone."""
        return self.residency or [self.region]

    def workspace(self, name: str) -> WorkspaceSpec | None:
        return next((w for w in self.workspaces if w.name == name), None)

    @property
    def pooled_store(self) -> bool:
        """A store of the tenant is on its cell's shared server: its current one, or the one an open move retires."""
        return self.tier is Tier.pooled or (self.retiring is not None and self.retiring.tier is Tier.pooled)

    def connection_limit(self, cell_default: int | None) -> int:
        """Its database logins' CONNECTION LIMIT: its own setting, else ``cell_default``
        (its cell's, None: a cell applied before the setting existed) while a store of
        it is pooled (a move keeps the bound until it ends: the role is one per server
        on the sandbox, and the tenant was bounded on the server it leaves), else none."""
        if self.db_connection_limit is not None:
            return self.db_connection_limit
        return (cell_default or DB_CONNECTION_LIMIT_DEFAULT) if self.pooled_store else NO_CONNECTION_LIMIT

    def tags(self) -> dict[str, str]:
        tags = {"tenant": self.id, "tier": self.tier.value, "owner": self.owner, "managed-by": "tenantctl"}
        if self.cost_centre:
            tags["cost-centre"] = self.cost_centre
        return tags

    def desired(self) -> dict:
        """The spec as the stack file holds it: every option, defaults included,
        except ``suspended`` / ``retired`` while false and ``workspaces`` while empty (files written before
        they existed stay as they were)."""
        unset = {name for name, empty in (("suspended", not self.suspended), ("workspaces", not self.workspaces),
                                          ("residency", not self.residency), ("retired", not self.retired)) if empty}
        return self.model_dump(mode="json", exclude_none=True, exclude=unset)

    def content_hash(self) -> str:
        """Stable hash of the desired state (used to skip unchanged tenants). The
        cell is left out: placement writes it into a stack file CI may not commit
        back, and a tenant never changes cells in place (`apply` compares it with
        the registry's apart)."""
        dumped = self.model_dump(mode="json", exclude={"cell"})
        # Fields only suspensions, moves and workspaces set are left out at their defaults:
        # specs never suspended or moved hash as before.
        for name, default in (("suspended", False), ("store_generation", 0), ("retiring", None), ("workspaces", []),
                              ("residency", []), ("retired", False), ("db_connection_limit", None)):
            if dumped.get(name) == default:
                dumped.pop(name)
        # A workspace unpinned, or pinned to the generation it takes unpinned (the retiring
        # store's while a move is open, else the current one: what a rollback writes), is
        # one deployment: hashed as before the pin existed.
        unpinned = self.retiring.generation if self.retiring is not None else self.store_generation
        for workspace in dumped.get("workspaces", []):
            if workspace.get("schema_generation") in (None, unpinned):
                workspace.pop("schema_generation", None)
        if dumped.get("dedicated") and dumped["dedicated"].get("final_snapshot_suffix") is None:
            dumped["dedicated"].pop("final_snapshot_suffix")
        body = json.dumps(dumped, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()


class ArchiveClass(BaseModel):
    model_config = _STRICT

    transition_days: int = Field(ge=1, le=3650)
    expiry_days: int = Field(ge=2, le=36500)

    @model_validator(mode="after")
    def _expiry_after_transition(self) -> ArchiveClass:
        _expiry_after(self.transition_days, self.expiry_days)
        return self


class RetentionMenu(BaseModel):
    """The retention classes a cell's bucket offers: one lifecycle rule per
    class, shared by every tenant of the cell (objects carry the class as a tag)."""

    model_config = _STRICT

    temp_upload_days: list[int] = Field(default_factory=lambda: [1, 3, 7, 14, 30, 90])
    archive: list[ArchiveClass] = Field(default_factory=lambda: [
        ArchiveClass(transition_days=t, expiry_days=e)
        for t, e in ((30, 365), (90, 365), (30, 730), (90, 730), (90, 2555), (365, 3650))])

    @field_validator("temp_upload_days")
    @classmethod
    def _days(cls, v: list[int]) -> list[int]:
        if any(not 1 <= d <= 365 for d in v):
            raise ValueError("temp_upload_days values are between 1 and 365")
        return sorted(set(v))

    @property
    def rule_count(self) -> int:
        return len(self.temp_upload_days) + len(self.archive)

    def refuses(self, lifecycle: LifecycleSpec) -> str | None:
        """Why ``lifecycle`` is not on this menu, or None."""
        if lifecycle.temp_upload_days not in self.temp_upload_days:
            return (f"temp_upload_days {lifecycle.temp_upload_days} is not offered "
                    f"(offered: {', '.join(map(str, self.temp_upload_days))})")
        pair = (lifecycle.archive_transition_days, lifecycle.archive_expiry_days)
        if pair not in {(a.transition_days, a.expiry_days) for a in self.archive}:
            offered = ", ".join(f"{a.transition_days}/{a.expiry_days}" for a in self.archive)
            return f"archive transition/expiry {pair[0]}/{pair[1]} days is not offered (offered: {offered})"
        return None


S3_MAX_LIFECYCLE_RULES = 1000


# What SNS delivers to with nobody confirming (a queue, a function; an HTTPS endpoint that confirms
# itself), so one declaration reaches every alarm topic of a cell, thousands of them. email and sms
# (and email-json) need a person to confirm each topic's subscription: thousands of confirmation
# mails, each one a live subscription only once clicked; firehose needs a subscription role (not
# offered yet); http is plain text; application is a mobile push endpoint.
ALARM_PROTOCOLS = ("sqs", "lambda", "https")
_REFUSED_PROTOCOLS = {
    "email": "each topic's subscription waits for a person to confirm it (a mail per topic, thousands per cell)",
    "email-json": "each topic's subscription waits for a person to confirm it (a mail per topic, thousands per cell)",
    "sms": "each message is a paid text to a phone, and a phone number is no fleet's pager",
    "http": "alarms would travel in plain text: use https",
    "firehose": "a Firehose subscription needs a subscription role tenantctl does not declare yet: subscribe an "
                "SQS queue or a Lambda function that forwards to the stream",
    "application": "a mobile push endpoint is not an operator's alerting",
}
_ENDPOINT_ARN = re.compile(r"arn:(aws[a-z-]*):(sqs|lambda):([a-z]{2}(?:-gov)?-[a-z]+-\d):(\d{12}):(.+)")


class AlarmSubscription(BaseModel):
    """An endpoint every alarm topic of a cell (each tenant's, each workspace's) delivers to:
    the operators' queue, function or paging service. The one subscription those topics may
    have: `check` fails any other, and a repair removes it."""

    model_config = _STRICT

    protocol: str = Field(description=f"one of {', '.join(ALARM_PROTOCOLS)}")
    endpoint: str = Field(description="the queue's or function's ARN (any account: the cell's operators "
                                      "choose it), or an https:// URL")

    @model_validator(mode="after")
    def _deliverable(self) -> AlarmSubscription:
        protocol, endpoint = self.protocol, self.endpoint
        if protocol in _REFUSED_PROTOCOLS:
            raise ValueError(f"alarm subscription protocol {protocol!r} is refused: {_REFUSED_PROTOCOLS[protocol]} "
                             f"(use {', '.join(ALARM_PROTOCOLS)})")
        if protocol not in ALARM_PROTOCOLS:
            raise ValueError(f"alarm subscription protocol {protocol!r}: use {', '.join(ALARM_PROTOCOLS)}")
        if protocol == "https":
            if not re.fullmatch(r"https://[^\s/:]+(:\d+)?(/\S*)?", endpoint):
                raise ValueError(f"alarm subscription endpoint {endpoint!r}: an https protocol needs an https:// URL")
            return self
        m = _ENDPOINT_ARN.fullmatch(endpoint)
        if m is None or m.group(2) != protocol:
            raise ValueError(f"alarm subscription endpoint {endpoint!r}: a {protocol} protocol needs a {protocol} ARN "
                             f"(arn:aws:{protocol}:<region>:<account>:...)")
        if m.group(1) != partition_of(m.group(3)):
            raise ValueError(f"alarm subscription endpoint {endpoint!r}: region {m.group(3)} is in partition "
                             f"{partition_of(m.group(3))}, not {m.group(1)}")
        return self

    @property
    def region(self) -> str | None:
        return naming.region_of_arn(self.endpoint)


class CellSpec(BaseModel):
    """One cell: an instance of what pooled tenants share (network, PostgreSQL,
    bucket) in one account and region. The default cell (stack `platform`) is
    the home of the registry and runs in the target's own account."""

    model_config = _STRICT
    # Settings no resource of its own stack reads (the counter's flag, the connection budget's; the
    # alarm subscriptions its tenants' stacks take): left out of its fingerprint, so a change to them
    # runs no up of the cell (the tenants' fingerprints take the subscriptions).
    UNDEPLOYED: ClassVar[frozenset[str]] = frozenset({"draining", "allow_overcommit", "platform_connections",
                                                      "alarm_subscriptions"})

    name: str = naming.DEFAULT_CELL
    region: Region = "us-east-1"
    account_role_arn: str | None = Field(
        None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$",
        description="role assumed in the cell's account (None: the target's own account)")
    owner: TagValue = "platform"
    vpc_cidr: VpcCidr = "10.0.0.0/16"
    az_count: int = Field(2, ge=2, le=6)
    db_instance_class: str = Field("db.t4g.medium", pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$")
    db_storage_gb: int = Field(50, ge=20, le=65536)
    db_multi_az: bool = Field(True, description="the shared database in two AZs: every pooled tenant depends on it "
                                                "(false is refused by the policy gate)")
    admin_role_arn: str | None = Field(None, description="role allowed to administer every tenant key")
    runtime_principal_arn: str | None = Field(
        None, description="an existing role (or user) the tenant runtime runs as: the only principal tenant roles "
                          "trust; default: the home cell creates the role tenantctl-runtime (other cells: "
                          "the home's)")
    runtime_trusted: list[str] = Field(
        default_factory=lambda: ["ecs-tasks.amazonaws.com"], min_length=1,
        description="who may run as the created runtime role: service principals (*.amazonaws.com) or role/user ARNs")

    tiers: list[Tier] = Field(default_factory=lambda: [Tier.pooled, Tier.dedicated],
                              description="tiers placement may put here")
    max_pooled_tenants: int = Field(500, ge=cell_bounds.MAX_POOLED_TENANTS[0], le=cell_bounds.MAX_POOLED_TENANTS[1],
                                    description="pooled tenants (schemas) the cell's one PostgreSQL takes")
    db_connection_limit: DbConnectionLimit = Field(
        DB_CONNECTION_LIMIT_DEFAULT, description="connections each pooled tenant's database login (and each of its "
                                                 "workspaces') may hold on the shared PostgreSQL; a tenant's own "
                                                 "db_connection_limit overrides it")
    draining: bool = Field(False, description="placement puts no new tenant here")
    allow_overcommit: bool = Field(
        False, description="its connection cap (max_pooled_tenants x db_connection_limit) may be raised past what "
                           "its live database leaves tenant logins: `apply` and `cell add` go ahead, warned, "
                           "instead of refusing (rule connection-budget)")
    platform_connections: int = Field(
        PLATFORM_CONNECTIONS_DEFAULT, ge=cell_bounds.PLATFORM_CONNECTIONS[0], le=cell_bounds.PLATFORM_CONNECTIONS[1],
        description="connections of its database kept for the platform's own logins (the runtime's shared pools, "
                    "tenantctl's admin sessions), taken off max_connections beside the reserved ones before the "
                    "connection cap is compared with what is left")
    retiring: bool = Field(False, description="`tenantctl cell remove` is destroying it: its database's deletion "
                                              "protection lifted, its buckets deleted with what they hold")
    retention: RetentionMenu = Field(default_factory=RetentionMenu)
    abort_multipart_days: int = Field(ABORT_MULTIPART_DEFAULT, ge=1, le=30,
                                      description="incomplete multipart uploads aborted after N days (cell-wide)")
    os_metrics_group: bool = Field(
        True, description="this cell manages the RDSOSMetrics log group of its account and region (a name RDS "
                          "fixes: one per account and region); `cell add` sets false when another cell has it, "
                          "`cell remove` of the cell that has it hands it to another cell of its account and region")
    alarm_subscriptions: list[AlarmSubscription] = Field(
        default_factory=list, description="endpoints every alarm topic of the cell (each tenant's and workspace's) "
                                          "delivers to; the only subscriptions those topics may have")
    os_metrics_adopted: bool = Field(
        False, description="the RDSOSMetrics log group existed before this cell managed it (handed over by a "
                           "removed cell, or left by one): its up imports it instead of creating it")

    @field_validator("runtime_principal_arn")
    @classmethod
    def _runtime_principal(cls, v: str | None) -> str | None:
        if v is not None and not _PRINCIPAL.fullmatch(v):
            raise ValueError("runtime_principal_arn must name the runtime's own IAM role or user "
                             "(arn:aws:iam::<account>:role/...), never an account root, an account id or '*': "
                             "tenant roles trust exactly this principal")
        return v

    @field_validator("runtime_trusted")
    @classmethod
    def _trusted(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if not (_SERVICE.fullmatch(p) or _PRINCIPAL.fullmatch(p))]
        if bad:
            raise ValueError(f"runtime_trusted: {', '.join(map(repr, bad))} is neither a service principal "
                             "(<name>.amazonaws.com) nor a role/user ARN (account roots and '*' are refused)")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        problem = naming.cell_name_problem(v)
        if problem:
            raise ValueError(f"cell {v!r}: {problem}")
        return v

    @model_validator(mode="after")
    def _home_and_rules(self) -> CellSpec:
        if self.name == naming.DEFAULT_CELL and self.account_role_arn:
            raise ValueError("the default cell is the home of the registry: it runs in the target's own "
                             "account (no account_role_arn); add another cell for another account")
        if self.name == naming.DEFAULT_CELL and self.retiring:
            raise ValueError("the default cell is the home of the registry: it is never retired")
        for sub in self.alarm_subscriptions:
            if sub.region is not None and partition_of(sub.region) != partition_of(self.region):
                raise ValueError(f"alarm subscription endpoint {sub.endpoint!r}: partition {partition_of(sub.region)} "
                                 f"is not the cell's ({partition_of(self.region)}, region {self.region}): "
                                 "SNS delivers within its partition only")
        keys = [(s.protocol, s.endpoint) for s in self.alarm_subscriptions]
        if len(set(keys)) != len(keys):
            raise ValueError("alarm_subscriptions: an endpoint is listed twice")
        # The one lifecycle limit left: the cell's own menu (+1: the abort-multipart rule).
        if self.retention.rule_count + 1 > S3_MAX_LIFECYCLE_RULES:
            raise ValueError(f"the retention menu needs {self.retention.rule_count + 1} lifecycle rules; "
                             f"S3 allows {S3_MAX_LIFECYCLE_RULES} per bucket")
        return self

    @property
    def stack(self) -> str:
        return naming.cell_stack(self.name)

    @property
    def unwritten(self) -> set[str]:
        """Fields its stack file and fingerprint leave out while at their default
        (they came after both existed: the files and fingerprints written before stay
        as they were, and a tenantctl of before still reads a file written now)."""
        late = ("retiring", "os_metrics_adopted", "allow_overcommit", "platform_connections", "alarm_subscriptions")
        fields = type(self).model_fields
        return {name for name in late if getattr(self, name) == fields[name].get_default(call_default_factory=True)}

    @property
    def connection_cap(self) -> int:
        """Connections its pooled tenants' logins may hold at its cap (before per-tenant
        overrides and workspaces): what its database's max_connections is held against."""
        return self.max_pooled_tenants * self.db_connection_limit

    @property
    def connections_claimed(self) -> int:
        """What its file claims of its database's connections: the pooled logins' cap and
        what the platform's own logins keep. Its database overcommits when this is over
        max_connections less the reserved ones, so a change growing it is what the
        connection budget checks (a larger cap, or more kept for the platform)."""
        return self.connection_cap + self.platform_connections

    @property
    def home(self) -> bool:
        """The default cell: the registry, revocations and runtime role live there."""
        return self.name == naming.DEFAULT_CELL

    @property
    def account_id(self) -> str | None:
        """The cell's account when it names one (None: the target's own account)."""
        return naming.account_of_arn(self.account_role_arn)

    def tags(self) -> dict[str, str]:
        return {"tenant": self.stack, "tier": "platform", "owner": self.owner, "managed-by": "tenantctl"}


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the field and the rule, never a traceback."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}")
    return "; ".join(lines)
