"""Registry models shared by tenantctl (writer) and tenant_runtime (reader).

They live here, not in tenantctl, because tenant_runtime must import nothing of
the provisioning stack; tenantctl re-exports them from ``tenantctl.models``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

from tenant_runtime.states import TenantStatus, Tier

DEFAULT_CELL = "default"


def tenant_prefix(tenant_id: str) -> str:
    """The tenant's S3 prefix; the trailing slash keeps `acme` from matching `acme-corp`."""
    return f"tenants/{tenant_id}/"


# Between a tenant id and one of its workspaces' names: tenant ids never hold "--",
# so `tenants/<id>--<ws>/` is no tenant's prefix and lies under none.
WORKSPACE_SEP = "--"


def workspace_prefix(tenant_id: str, workspace: str) -> str:
    """A workspace's S3 prefix: beside its tenant's, not under it, so neither the
    tenant's role (``tenants/<id>/*``) nor a listing of the tenant's prefix reaches
    it; the trailing slash keeps `legal` from matching `legal-x`."""
    return f"tenants/{tenant_id}{WORKSPACE_SEP}{workspace}/"


def workspace_key(tenant_id: str, workspace: str) -> str:
    """A workspace's RLS row key (``app.tenant_id`` in its schema) and its role's
    session tag value: `<id>/<ws>` ("/" is in no tenant id, so no tenant-level
    setting matches a workspace's rows)."""
    return f"{tenant_id}/{workspace}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class StoreConnection(BaseModel):
    """Where the tenant's context store lives. Never carries a password:
    credentials are read from ``secret_arn`` at connection time."""

    model_config = ConfigDict(frozen=True)

    engine: str = "postgres"
    endpoint: str
    port: int = 5432
    database: str
    schema_name: str
    role: str
    secret_arn: str


class WorkspaceResources(BaseModel):
    """One workspace of a tenant (a department or project): its own schema and
    role in the tenant's store, key, prefix under the tenant's, queues and role.
    Exactly the items of a tenant stack's ``workspaces`` output."""

    model_config = ConfigDict(frozen=True)

    name: str
    store: StoreConnection
    kms_key_arn: str
    kms_alias: str
    prefix: str
    queue_url: str
    dlq_url: str
    role_arn: str


class TenantResources(BaseModel):
    """Exactly the outputs of a tenant stack (infra/ exports these keys)."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    tier: Tier
    region: str
    store: StoreConnection
    kms_key_arn: str
    kms_alias: str
    bucket: str
    prefix: str
    queue_url: str
    dlq_url: str
    role_arn: str
    # Retention class -> the object tag value (`tenantctl-class=<value>`) the
    # cell's lifecycle rule for it matches: "tmp" (uploads/tmp/), "archive".
    # Empty for tenants applied before retention classes.
    lifecycle_classes: dict[str, str] = Field(default_factory=dict)
    # The tenant's workspaces by name (the stack exports the key only when it has some).
    workspaces: dict[str, WorkspaceResources] = Field(default_factory=dict)


class TenantLock(BaseModel):
    """A provision/deprovision in progress; held in the registry record."""

    operation: str
    owner: str
    host: str
    pid: int
    acquired_at: datetime = Field(default_factory=utcnow)
    # When the lock lapses unless its holder renews it (tenantctl renews a lock it
    # holds while its run lives: ``tenantctl.lock_lease``). None: a holder that does
    # not renew (an older tenantctl), whose lock never lapses by itself.
    lapses_at: datetime | None = None

    def __eq__(self, other: object) -> bool:
        # One run's lock whenever its lease was read: a renewal changes no lock (nor record).
        if not isinstance(other, TenantLock):
            return NotImplemented
        return self.identity == other.identity

    @property
    def identity(self) -> tuple[str, str, str, int, datetime]:
        return self.operation, self.owner, self.host, self.pid, self.acquired_at


class Hibernation(BaseModel):
    """A dedicated tenant's database instance stopped while the tenant is idle
    (`tenantctl hibernate`). The runtime starts it on the tenant's first request
    and answers TenantWaking (503, retry) until it is available; tenantctl clears
    this once it is awake (`tenantctl resume`), and whenever the record no longer
    names the store it describes (``TenantRecord.store_hibernation``)."""

    db_instance: str
    region: str
    since: datetime = Field(default_factory=utcnow)
    # In a cell of another account: the role the runtime assumes there to start
    # it (the cell's waker role); None: the runtime's own account and credentials.
    waker_role_arn: str | None = None
class MovePhase(str, Enum):
    """Where a `tenantctl move` stands (one step after another, each recorded
    before the next begins, so a killed move resumes or rolls back)."""

    preparing = "preparing"  # the target store is being created beside the current one
    copying = "copying"  # the target follows the current store (logical replication) while it serves
    freezing = "freezing"  # writes refused (503 + Retry-After); the target catches up and is verified
    switched = "switched"  # the record names the target; the old store is read-only, kept in step, for rollback
    rolling_back = "rolling_back"  # writes refused while the old store takes over again


class TenantMove(BaseModel):
    """A move in progress, in the tenant's registry record. ``old_store`` /
    ``new_store``: the stores the move is between (the record's ``resources``
    name the writable one). A move changes the tier, the cell (of the same
    account and region), or both: ``from_cell`` / ``to_cell``. A move between
    cells also moves the tenant's prefix from ``old_bucket`` (the old cell's
    bucket) to ``new_bucket``; both are None when the cell stays."""

    from_tier: Tier
    to_tier: Tier
    from_cell: str = "default"
    to_cell: str = "default"
    phase: MovePhase = MovePhase.preparing
    old_store: StoreConnection
    new_store: StoreConnection | None = None
    old_bucket: str | None = None
    new_bucket: str | None = None
    # A move to another account or region builds the tenant again in a second
    # stack (`<id>.k<N>`): its name, None for a move that keeps the stack; and
    # the stack it leaves (the record's when the move began), which the record
    # no longer names once switched.
    to_stack: str | None = None
    from_stack: str | None = None
    # The final backup a finalize took of the new store: recorded before the
    # steps after it, so a finalize re-run after a kill does not take another.
    final_backup_id: str | None = None
    # The stack it leaves was applied retired (its role sends to its queues no
    # more); a re-run skips that up, which would build a half-destroyed stack again.
    old_stack_retired: bool = False
    # The destroy of the stack it leaves began, every finalize step before it
    # done: a re-run goes straight to the destroy (the old store may be gone, a
    # dedicated one's database with it).
    old_stack_destroying: bool = False
    # The content digest of each stack file the move wrote, by stack: `apply`
    # takes a file still as the move wrote it for the move's (the tenant is
    # reported moving, not refused), an edit of it for an edit.
    stack_digests: dict[str, str] = Field(default_factory=dict)
    started_at: datetime = Field(default_factory=utcnow)
    phase_at: datetime = Field(default_factory=utcnow)
    switched_at: datetime | None = None
    window_ends_at: datetime | None = None
    # A switched move resumed by `move ID` compares its stores again: the new
    # store's writes are refused (503 + Retry-After) while the old one catches up
    # and both are pinned, a few seconds. A runtime before this field ignores it
    # (its writes are refused by the store instead, as a stale runtime's are).
    reverifying: bool = False

    @property
    def writes_frozen(self) -> bool:
        return self.reverifying or self.phase in (MovePhase.freezing, MovePhase.rolling_back)


class TenantRecord(BaseModel):
    """One registry item per tenant. Written only by tenantctl, with optimistic
    concurrency on ``version``; read by tenant_runtime."""

    tenant_id: str
    tier: Tier
    status: TenantStatus
    region: str
    # Where the tenant lives: its cell (records written before cells are the
    # default cell's) and that cell's account (None: the registry's own account).
    cell: str = DEFAULT_CELL
    account_id: str | None = None
    owner: str = ""
    resources: TenantResources | None = None
    version: int = 0
    spec_hash: str = ""
    # The content hash of the spec last applied, without the program's (which
    # ``spec_hash`` adds): tells a stack file edited since its last apply from a
    # changed program. Empty on records written before it existed.
    spec_digest: str = ""
    program_version: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    deprovisioned_at: datetime | None = None
    retain_until: datetime | None = None
    lock: TenantLock | None = None
    last_error: str | None = None
    # Its last provision failed, possibly after recording it active (in the
    # posture check that follows, a move's finalize's and a revive's too):
    # `tenantctl apply` runs the provision again. Only an apply of its stack
    # clears it; ``last_error`` is any run's, and may be the note of one that
    # succeeded (posture checks that could not run from where it ran).
    provision_failed: bool = False
    hibernation: Hibernation | None = None
    # A tombstone whose in-place restore (a revive) took its cell's slot, in one
    # write with its lock: it counts in its cell until the revive brings it back
    # or, failing, gives the slot back with this mark. Only ever on a tombstone.
    reviving: bool = False
    move: TenantMove | None = None
    # The tenant's Pulumi stack; None: the one named by its id (key generation 0).
    stack: str | None = None
    # The schema template re-ran over the tenant's stores and the search index of
    # the items it may have left unindexed is not rebuilt yet (the rebuild failed,
    # or the tenant was not serving): the next provision rebuilds it.
    search_rebuild_due: bool = False
    # When a search reindex of a store of the tenant started that has not
    # finished (stopped, or running now), and which stores ("": the tenant's
    # own, else a workspace's name): until one finishes, such a store has two
    # live search keys and every query is hashed under both. Kept in the record
    # so `status` says so without reading the store; set and cleared by every
    # reindex (``tenant_runtime.registry.reindex_marks``, its one definition).
    search_reindex_since: datetime | None = None
    search_reindex_stores: list[str] = []
    # The analyzer each store ("": the tenant's own, else a workspace's name)
    # was last reindexed with by tenantctl (`search reindex`, the rebuild a
    # provision or an in-place restore runs), so `status` says it, and whether
    # this installation builds another, without reading the store. A store no
    # such reindex finished has none; an in-place restore drops its store's
    # (it holds the backup's index), every write those of stores gone
    # (``live_search_analyzers``): `check` reads the live index.
    search_analyzers: dict[str, str] = {}

    @property
    def current_stack(self) -> str:
        return self.stack or self.tenant_id

    @property
    def holds_revive_slot(self) -> bool:
        """A tombstone a revive marked (``reviving``): it holds its cell's slot until the revive brings
        the tenant back, or gives it back (failed, or given up: `tenantctl unlock`). Here, by the
        record, so the registry's writes and its slot count (``held_slots``) judge it alike."""
        return self.reviving and self.status is TenantStatus.deprovisioned

    @property
    def store_hibernation(self) -> Hibernation | None:
        """``hibernation`` while it describes the tenant's store: a dedicated
        one (a pooled store lives in its cell's shared instance, never
        stopped), in the tenant's region (a move to another region leaves the
        old instance behind), of a tenant that is no tombstone (its instance
        went with its stack). None otherwise: what is left names an instance
        that is not the tenant's store, which nobody may wait for or start."""
        sleeping = self.hibernation
        if (sleeping is None or self.tier is not Tier.dedicated or self.status is TenantStatus.deprovisioned
                or sleeping.region != self.region):
            return None
        return sleeping

    @property
    def live_search_analyzers(self) -> dict[str, str]:
        """``search_analyzers`` of the stores the tenant still has: none for a
        tombstone (its stores went with it), none for a workspace removed (one
        added again under its name starts a store of its own)."""
        if self.resources is None or self.status is TenantStatus.deprovisioned:
            return {}
        return {store: found for store, found in self.search_analyzers.items()
                if not store or store in self.resources.workspaces}

    @property
    def stacks(self) -> list[str]:
        """Every stack of the tenant, the one it is served from first: while a
        move to a second stack is open, both (before the switch, after it and
        after switching back); once finalized or rolled back, the one left."""
        move = self.move
        others = (move.from_stack, move.to_stack) if move is not None else ()
        return list(dict.fromkeys([self.current_stack, *(s for s in others if s)]))

    @property
    def workspaces(self) -> dict[str, WorkspaceResources]:
        """The tenant's applied workspaces (recorded with its resources, as its stack outputs them)."""
        return self.resources.workspaces if self.resources is not None else {}
