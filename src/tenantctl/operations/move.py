"""Move a tenant to another tier of its cell with its data, while it serves
(a move never changes cells: the tenant keeps its cell, account and region).

    preparing     the target store is created beside the current one: the stack
                  declares both (the spec's ``retiring`` store), one `up`
    copying       the target follows the current store (logical replication:
                  initial copy, then every change) while the tenant serves
    freezing      writes refused (runtimes: 503 + Retry-After; stale ones by the
                  revoked write rights), the target catches up, counts and
                  checksums compared, the registry record switched (conditional write)
    switched      the record names the target; the old store is read-only and
                  follows the new one for the rollback window
    --finalize    final backup, the old store removed (the spec without ``retiring``)
    --rollback    before the switch: the target removed; after it: a freeze the
                  other way round, the record switched back, then the target removed

Each phase is written to the record (``TenantRecord.move``) before its work,
under the tenant's lock, so a killed run is resumed (``move ID``) or undone
(``move ID --rollback``); the lock of a run that provably died on this host
is cleared by that next run. At every point exactly one store takes the tenant
role's writes.

Cell slots: an open move holds a slot of both tiers in the tenant's cell (both
stores exist). The target tier's is taken before anything is created (a
pooled target under the cell's ``max_pooled_tenants``: refused with exit 11
when the cell is full); ``--finalize`` gives the old tier's back once the old
store is gone, ``--rollback`` the target tier's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from tenant_runtime.models import (
    MovePhase,
    StoreConnection,
    TenantMove,
    TenantRecord,
    TenantResources,
    TenantStatus,
    Tier,
    utcnow,
)
from tenantctl import store_sync
from tenantctl.errors import DrillFailed, InvalidInput, TargetUnavailable
from tenantctl.models import DedicatedSpec, RetiringStore, TenantSpec
from tenantctl.naming import require_valid
from tenantctl.placement import take_slot
from tenantctl.stackconfig import read_tenant, stack_file
from tenantctl.workspace import Workspace

DEFAULT_WINDOW = timedelta(days=1)
COPY_TIMEOUT = 6 * 3600.0
CATCH_UP_TIMEOUT = 120.0
CELL_KEPT = ("a move changes a tenant's tier within its cell and never changes cells (`--cell` is refused): "
             "the tenant's cell, account and region stay")

Progress = Callable[[str], None]


class MoveResult(BaseModel):
    tenant_id: str
    outcome: str  # switched | finalized | rolled_back | unchanged
    from_tier: Tier
    to_tier: Tier
    phase: MovePhase | None = None
    copy_seconds: float | None = None
    freeze_seconds: float | None = None  # writes refused, from the freeze being recorded to the switch
    rows: dict[str, int] = {}
    window_ends_at: str | None = None


class Mover:
    """One run of a move over a held record (``held.record`` is kept current)."""

    def __init__(self, ws: Workspace, held: Any, progress: Progress | None = None) -> None:
        from tenantctl.drills.context import context_from_workspace

        self.ws, self.held, self.say = ws, held, progress or (lambda _line: None)
        self.admin = context_from_workspace(ws, held.record)
        self.result_extra: dict[str, Any] = {}

    # -- plumbing ---------------------------------------------------------------
    @property
    def record(self) -> TenantRecord:
        return self.held.record

    @property
    def move(self) -> TenantMove:
        assert self.record.move is not None
        return self.record.move

    def connect(self, store: StoreConnection) -> Any:
        return self.admin.connect(store.endpoint, store.port, store.database)

    def save(self, **changes: Any) -> None:
        self.held.record = self.ws.registry.save(self.record, **changes)

    def phase(self, phase: MovePhase, **move_changes: Any) -> None:
        self.say(f"move {self.record.tenant_id}: {phase.value}")
        self.save(move=self.move.model_copy(update={"phase": phase, "phase_at": utcnow(), **move_changes}))

    def link(self, backwards: bool = False) -> store_sync.Link:
        """Forward: the new store follows the old one; backwards: the reverse."""
        spec = self.spec()
        old_gen = spec.retiring.generation if spec.retiring else spec.store_generation
        new_store = self.move.new_store
        assert new_store is not None
        if backwards:
            return store_sync.Link(store_sync.link_name(self.record.tenant_id, spec.store_generation),
                                   new_store, self.move.old_store)
        return store_sync.Link(store_sync.link_name(self.record.tenant_id, old_gen), self.move.old_store, new_store)

    def spec(self) -> TenantSpec:
        # The record's cell: a stack file CI did not commit placement back to may lack it.
        spec = read_tenant(stack_file(self.ws.stacks_dir, self.record.tenant_id))
        return spec.model_copy(update={"cell": self.record.cell})

    def resources_at(self, tier: Tier, store: StoreConnection) -> TenantResources:
        assert self.record.resources is not None
        return self.record.resources.model_copy(update={"tier": tier, "store": store})

    def point_secret(self, store: StoreConnection) -> None:
        """The tenant's secret names the store the registry routes to (same role and password)."""
        sm = self.ws.clients_for(self.record)("secretsmanager")
        current = json.loads(sm.get_secret_value(SecretId=store.secret_arn)["SecretString"])
        wanted = {**current, "host": store.endpoint, "port": store.port, "dbname": store.database,
                  "schema": store.schema_name, "username": store.role}
        if wanted != current:
            sm.put_secret_value(SecretId=store.secret_arn, SecretString=json.dumps(wanted))

    def apply(self, spec: TenantSpec) -> Any:
        from tenantctl.operations.provision import apply_spec

        return apply_spec(self.ws, spec, on_event=None)

    def unprotect(self, spec: TenantSpec) -> None:
        """Apply ``spec``, in which the dedicated store about to go has its
        deletion protection lifted: a step of its own, as deprovision does."""
        from tenantctl.policy import waived

        with waived("deletion-protection"):
            self.apply(spec)

    # -- forward ----------------------------------------------------------------
    def prepare(self, target: TenantSpec) -> None:
        self.say(f"move {self.record.tenant_id}: creating the {target.tier.value} store beside the current one")
        applied = self.apply(target)
        self.phase(MovePhase.copying, new_store=applied.resources.store)

    def copy(self) -> None:
        link = self.link()
        started = time.monotonic()
        with self.connect(link.target) as conn:  # nothing but the replication writes the target before the switch
            store_sync.set_writable(conn, link.target, False)
        store_sync.start(self.connect, link, self.admin.admin_user, self.admin.admin_password)
        self.say(f"move {self.record.tenant_id}: copying while the tenant serves")
        store_sync.wait("initial copy", lambda: store_sync.copied(self.connect, link), COPY_TIMEOUT, 0.2)
        self.result_extra["copy_seconds"] = time.monotonic() - started
        self.phase(MovePhase.freezing)

    def switch(self, window: timedelta) -> None:
        frozen_at = self.move.phase_at
        pinned = self.catch_up(self.link(), MovePhase.copying)
        spec = self.spec()
        new_store = self.move.new_store
        assert new_store is not None
        # The old store follows the new one from here, read-only: a rollback keeps every write.
        store_sync.start(self.connect, self.link(backwards=True), self.admin.admin_user, self.admin.admin_password,
                         copy_data=False)
        now = utcnow()
        self.save(tier=spec.tier, resources=self.resources_at(spec.tier, new_store),
                  move=self.move.model_copy(update={"phase": MovePhase.switched, "phase_at": now,
                                                    "switched_at": now, "window_ends_at": now + window}))
        self.point_secret(new_store)
        self.result_extra["freeze_seconds"] = (utcnow() - frozen_at).total_seconds()
        self.say(f"move {self.record.tenant_id}: switched to the {spec.tier.value} store "
                 f"(writes refused {self.result_extra['freeze_seconds']:.2f} s); the old one is read-only")
        if pinned is not None:
            self.say(f"move {self.record.tenant_id}: verifying (counts + checksums as of the freeze)")
            try:
                self.result_extra["rows"] = store_sync.compare_pinned(
                    self.record.tenant_id, pinned, self.move.old_store, new_store)
            except DrillFailed:
                self.rollback(verified=False)  # back to the old store, which kept every write since
                raise

    def catch_up(self, link: store_sync.Link, unfrozen: MovePhase) -> tuple[Any, Any] | None:
        """Freeze ``link``'s source, let the target catch up, pin a snapshot of
        both (verified after the freeze), make the target the writable one.
        None: the link was dropped by an earlier run (which got this far). A
        target not caught up in time ends the freeze, nothing switched: the
        source takes writes again, the move is back in phase ``unfrozen`` and a
        re-run freezes again."""
        pinned = None
        with self.connect(link.target) as conn:
            following = conn.execute("SELECT 1 FROM pg_subscription WHERE subname = %s",
                                     (link.name,)).fetchone() is not None
        if following:
            lsn = store_sync.quiesce(self.connect, link.source)
            try:
                store_sync.wait("replication catch-up", lambda: store_sync.caught_up(self.connect, link, lsn),
                                CATCH_UP_TIMEOUT, 0.02)
            except TargetUnavailable:
                with self.connect(link.source) as conn:
                    store_sync.set_writable(conn, link.source, True)
                self.phase(unfrozen)
                raise
            pinned = (store_sync.pin(self.connect, link.source), store_sync.pin(self.connect, link.target))
            store_sync.align_sequences(self.connect, link.target)
            store_sync.stop(self.connect, link)
        with self.connect(link.target) as conn:
            store_sync.set_writable(conn, link.target, True)
        return pinned

    def finalize(self) -> None:
        from tenantctl.drills.backup import final_backup
        from tenantctl.operations.provision import activate

        spec = self.spec()
        assert spec.retiring is not None
        old = self.resources_at(spec.retiring.tier, self.move.old_store)
        self.say(f"move {self.record.tenant_id}: final backup of the old store")
        final_backup(self.ws, self.record.model_copy(update={"tier": spec.retiring.tier, "resources": old}))
        store_sync.stop(self.connect, self.link(backwards=True))
        ded = spec.retiring.dedicated
        if ded is not None and ded.deletion_protection:
            self.unprotect(spec.model_copy(update={"retiring": spec.retiring.model_copy(update={
                "dedicated": ded.model_copy(update={"deletion_protection": False})})}))
        self.say(f"move {self.record.tenant_id}: removing the old store")
        final = spec.model_copy(update={"retiring": None})
        applied = self.apply(final)
        self.save(move=None)
        # After the record (a run killed in between keeps a slot too many, never one too few).
        self.ws.registry.release_slot(self.record.cell, spec.retiring.tier)
        self.held.record = activate(self.ws, self.record, final, applied)

    # -- backward ---------------------------------------------------------------
    def rollback(self, verified: bool = True) -> None:
        """``verified``: compare the stores as of the freeze before switching
        back (not when undoing a switch whose own verification failed)."""
        spec, target_tier = self.spec(), self.move.to_tier
        if spec.retiring is None:  # killed before the target spec was written: nothing was created
            self.save(move=None)
            self.ws.registry.release_slot(self.record.cell, target_tier)
            return
        if self.move.phase in (MovePhase.switched, MovePhase.rolling_back):
            if self.move.phase is MovePhase.switched:
                self.phase(MovePhase.rolling_back)
            pinned = self.catch_up(self.link(backwards=True), MovePhase.switched)
            self.save(tier=spec.retiring.tier, resources=self.resources_at(spec.retiring.tier, self.move.old_store),
                      move=self.move.model_copy(update={"phase": MovePhase.preparing, "phase_at": utcnow(),
                                                        "switched_at": None, "window_ends_at": None}))
            self.point_secret(self.move.old_store)
            if pinned is not None and verified:  # after the freeze; a difference keeps the new store for a person
                store_sync.compare_pinned(self.record.tenant_id, pinned, self.move.new_store, self.move.old_store)
            elif pinned is not None:
                for conn in pinned:
                    conn.close()
        # Before the switch (or switched back): the old store takes writes, the new one goes.
        if self.move.new_store is not None:
            store_sync.stop(self.connect, self.link())
        with self.connect(self.move.old_store) as conn:
            store_sync.set_writable(conn, self.move.old_store, True)
        self.point_secret(self.move.old_store)
        self.say(f"move {self.record.tenant_id}: removing the {spec.tier.value} store")
        if spec.dedicated is not None and spec.dedicated.deletion_protection:
            self.unprotect(spec.model_copy(update={"dedicated": spec.dedicated.model_copy(
                update={"deletion_protection": False})}))
        back = spec.model_copy(update={"tier": spec.retiring.tier, "dedicated": spec.retiring.dedicated,
                                       "store_generation": spec.retiring.generation, "retiring": None})
        self.apply(back)
        self.save(move=None)
        self.ws.registry.release_slot(self.record.cell, target_tier)


def target_spec(spec: TenantSpec, tier: Tier, started: datetime | None = None) -> TenantSpec:
    """``spec`` moved to ``tier``: the next store generation, the current one
    retiring; a dedicated target's final snapshot named after ``started``."""
    body = spec.model_dump(mode="json", exclude_none=True)
    body.update(tier=tier.value, store_generation=spec.store_generation + 1,
                retiring=RetiringStore(tier=spec.tier, generation=spec.store_generation,
                                       dedicated=spec.dedicated).model_dump(mode="json", exclude_none=True))
    body.pop("dedicated", None)
    if tier is Tier.dedicated:
        body["dedicated"] = DedicatedSpec(final_snapshot_suffix=f"{started or utcnow():%Y%m%d%H%M%S}").model_dump(
            mode="json")
    return TenantSpec.model_validate(body)


def move(ws: Workspace, tenant_id: str, *, tier: Tier | None = None, cell: str | None = None,
         rollback: bool = False, finalize: bool = False, window: timedelta = DEFAULT_WINDOW,
         progress: Progress | None = None) -> MoveResult:
    """Start, resume, finalize or roll back the move of ``tenant_id``."""
    require_valid(tenant_id)
    if cell is not None:
        raise InvalidInput(CELL_KEPT)
    if rollback and finalize:
        raise InvalidInput("--rollback and --finalize exclude each other")
    record = ws.registry.require(tenant_id)
    target: TenantSpec | None = None
    if record.move is None:
        if rollback or finalize:
            raise InvalidInput(f"tenant {tenant_id!r} has no move to {'roll back' if rollback else 'finalize'}")
        if tier is None:
            raise InvalidInput("--tier is required to start a move")
        if record.status is not TenantStatus.active or record.resources is None:
            raise InvalidInput(f"tenant {tenant_id!r} is {record.status.value}: only an active tenant is moved")
        if tier is record.tier:
            return MoveResult(tenant_id=tenant_id, outcome="unchanged", from_tier=record.tier, to_tier=tier)
        target = _refuse_or_target(ws, record, tier)
        # Both stores exist while the move is open: it holds a slot of both tiers in the cell (exit 11: full).
        take_slot(ws, record.cell, tier, f"tenant {tenant_id!r} refused before anything was created "
                                         "(a move never changes cells: free a slot there and re-run)")
    elif tier is not None and tier is not record.move.to_tier:
        raise InvalidInput(f"tenant {tenant_id!r} is being moved to {record.move.to_tier.value}: "
                           f"finish or roll back that move first")
    elif finalize and record.move.phase is not MovePhase.switched:
        raise InvalidInput(f"tenant {tenant_id!r}'s move is {record.move.phase.value}: only a switched move is "
                           "finalized (`tenantctl move ID` resumes it)")

    started = False
    try:
        with ws.registry.hold(tenant_id, "move") as held:
            if target is not None:
                assert held.record.resources is not None and tier is not None
                held.record = ws.registry.save(held.record, last_error=None, move=TenantMove(
                    from_tier=held.record.tier, to_tier=tier, from_cell=held.record.cell, to_cell=held.record.cell,
                    old_store=held.record.resources.store))
            started = True
            mover = Mover(ws, held, progress)
            run = mover.move
            outcome = _drive(mover, target, rollback, finalize, window)
    finally:
        if target is not None and tier is not None and not started:  # no move recorded: its slot goes back
            ws.registry.release_slot(record.cell, tier)
    return MoveResult(tenant_id=tenant_id, outcome=outcome, from_tier=run.from_tier, to_tier=run.to_tier,
                      phase=held.record.move.phase if held.record.move else None,
                      window_ends_at=(held.record.move.window_ends_at.isoformat()
                                      if held.record.move and held.record.move.window_ends_at else None),
                      **mover.result_extra)


def _drive(mover: Mover, target: TenantSpec | None, rollback: bool, finalize: bool, window: timedelta) -> str:
    if rollback:
        mover.rollback()
        return "rolled_back"
    if finalize:
        mover.finalize()
        return "finalized"
    phase = mover.move.phase
    if phase is MovePhase.rolling_back:
        raise InvalidInput(f"tenant {mover.record.tenant_id!r} is rolling back: `tenantctl move ID --rollback` "
                           "finishes it")
    if phase is MovePhase.preparing:
        if target is None:  # resumed: the spec was written (or not yet, when killed right after the record)
            spec = mover.spec()
            target = spec if spec.retiring is not None else target_spec(spec, mover.move.to_tier,
                                                                        mover.move.started_at)
        mover.prepare(target)
        phase = MovePhase.copying
    if phase is MovePhase.copying:
        mover.copy()
        phase = MovePhase.freezing
    if phase is MovePhase.freezing:
        mover.switch(window)
    return "switched"


def _refuse_or_target(ws: Workspace, record: TenantRecord, tier: Tier) -> TenantSpec:
    """The spec of the move's target, after every check that refuses a move
    before anything is created: the policy gate's spec rules, quotas, and
    residency (the target is in the tenant's region)."""
    from tenantctl import preflight
    from tenantctl.policy import refuse_unsafe_spec

    path = stack_file(ws.stacks_dir, record.tenant_id)
    if not path.exists():
        raise InvalidInput(f"tenant {record.tenant_id!r} has no committed stack file ({path}): nothing to move from")
    target = target_spec(read_tenant(path).model_copy(update={"cell": record.cell}), tier)
    if target.region != record.region:
        raise InvalidInput(f"tenant {record.tenant_id!r} lives in {record.region}; a move never leaves its region")
    refuse_unsafe_spec(target)
    preflight.check(target, ws.ensure_cell(record.cell), ws.clients_for(record))
    return target

