"""The plumbing of a move (``Mover``), shared by the move within an account
and region and the move to another one (``move_keyed.KeyedMover``); the
phases and guarantees are described in ``operations/move.py``."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from tenant_runtime.models import (
    MovePhase,
    StoreConnection,
    TenantMove,
    TenantRecord,
    TenantResources,
    Tier,
    WorkspaceResources,
    utcnow,
    workspace_key,
)
from tenant_runtime.registry import REREAD_INTERVAL
from tenantctl import __version__
from tenantctl.errors import DrillFailed, InvalidInput, TargetUnavailable
from tenantctl.models import DedicatedSpec, RetiringStore, TenantSpec
from tenantctl.stackconfig import read_tenant, stack_file, write_tenant
from tenantctl.transfer import prefix_sync, store_sync
from tenantctl.workspace import Workspace

COPY_TIMEOUT = 6 * 3600.0
STALLED_AFTER = 30.0  # an initial copy no table of which started by then is said to wait for a worker
CATCH_UP_TIMEOUT = 120.0
MAINTENANCE_DATABASE = "postgres"  # on every PostgreSQL server, RDS's included
Progress = Callable[[str], None]


class Mover:
    """One run of a move over a held record (``held.record`` is kept current)."""

    def __init__(self, ws: Workspace, held: Any, progress: Progress | None = None) -> None:
        self.ws, self.held, self.say = ws, held, progress or (lambda _line: None)
        self.admins: dict[str, Any] = {}
        self.result_extra: dict[str, Any] = {}
        # What this run copied of each prefix (the tenant's, each workspace's), each way
        # (a resumed run copies every object once).
        self.objects: dict[tuple[bool, str], prefix_sync.Copied] = defaultdict(prefix_sync.Copied)
        # Each stack file as this run read it; a step that writes one forgets it (``changed``).
        self.specs: dict[str, TenantSpec] = {}
        self.frozen_at: float | None = None  # when this run wrote the record refusing writes (monotonic)

    # -- plumbing ---------------------------------------------------------------
    @property
    def record(self) -> TenantRecord:
        return self.held.record

    @property
    def move(self) -> TenantMove:
        assert self.record.move is not None
        return self.record.move

    def admin(self, store: StoreConnection) -> Any:
        """The admin context of the cell ``store`` is in (each cell's database has its own admin)."""
        from tenantctl.drills.context import context_from_workspace

        cell = self.move.from_cell if store == self.move.old_store else self.move.to_cell
        if cell not in self.admins:  # in the cell's own region (a move to another region has two)
            where = {"cell": cell, "region": self.ws.cell(cell).region if cell != self.record.cell else
                     self.record.region}
            self.admins[cell] = context_from_workspace(self.ws, self.record.model_copy(update=where))
        return self.admins[cell]

    def connect(self, store: StoreConnection) -> Any:
        return self.admin(store).connect(store.endpoint, store.port, store.database)

    @contextmanager
    def leaving(self, store: StoreConnection) -> Iterator[Any | None]:
        """A connection to ``store`` to remove what the move made there; None when its
        database is gone already (``database_gone``: dropped with everything in it by a
        run killed destroying the store's dedicated stack), as nothing is left to remove."""
        import psycopg

        try:
            conn = self.connect(store)
        except psycopg.OperationalError:
            if not self.database_gone(store):
                raise
            self.say(f"move {self.record.tenant_id}: database {store.database} is gone already, "
                     "with what the move made in it")
            yield None
            return
        with conn:
            yield conn

    def database_gone(self, store: StoreConnection) -> bool:
        """Whether ``store``'s database no longer exists on its server, asked of the
        server's maintenance database; False when that cannot be asked either (the
        server unreachable is not taken for the database gone)."""
        import psycopg

        try:
            with self.admin(store).connect(store.endpoint, store.port, MAINTENANCE_DATABASE) as conn:
                return conn.execute("SELECT NOT EXISTS (SELECT FROM pg_database WHERE datname = %s)",
                                    (store.database,)).fetchone()[0]
        except psycopg.OperationalError:
            return False

    def follow(self, link: store_sync.Link, copy_data: bool = True) -> None:
        source = self.admin(link.source)
        store_sync.start(self.connect, link, source.admin_user, source.admin_password, copy_data=copy_data)

    def prefixes(self, backwards: bool = False) -> list[tuple[prefix_sync.Place, prefix_sync.Place, str]]:
        """The tenant's prefix and each workspace's, in the old and the new
        cell's bucket (reversed ``backwards``), each with the key its objects
        are encrypted under; none within a cell."""
        old, new = self.move.old_bucket, self.move.new_bucket
        if old is None or new is None:
            return []
        res = self.record.resources
        assert res is not None
        owners = [(res.prefix, res.kms_key_arn),
                  *((w.prefix, w.kms_key_arn) for _, w in sorted(res.workspaces.items()))]
        pairs = [(prefix_sync.Place(old, prefix), prefix_sync.Place(new, prefix), key) for prefix, key in owners]
        return [(b, a, key) for a, b, key in pairs] if backwards else pairs

    def sync_objects(self, backwards: bool = False) -> None:
        """A pass over each prefix; backwards (a rollback), only what changed in
        the new prefix since the switch (both were in step then)."""
        s3 = self.ws.clients_for(self.record)("s3")
        for source, target, key in self.prefixes(backwards):
            prefix_sync.sync(s3, source, target, key, self.objects[backwards, source.prefix],
                             since=self.move.switched_at if backwards else None)
        if self.move.old_bucket is not None:
            self.result_extra["objects_copied"] = sum(c.objects + c.removed for (way, _), c in self.objects.items()
                                                      if way is backwards)

    def save(self, **changes: Any) -> None:
        self.held.record = self.ws.registry.save(self.record, **changes)

    def end(self, cell: str, tier: Tier, **changes: Any) -> None:
        """The write ending the move (``move`` cleared, with ``changes``) gives back
        the ``tier`` slot of ``cell`` the store it leaves held, in the same transaction."""
        self.held.record = self.ws.registry.save_giving_slot(self.record, cell, tier, move=None, **changes)

    def phase(self, phase: MovePhase, **move_changes: Any) -> None:
        self.say(f"move {self.record.tenant_id}: {phase.value.replace('_', ' ')}")
        self.save(move=self.move.model_copy(update={"phase": phase, "phase_at": utcnow(), **move_changes}))

    def link(self, backwards: bool = False) -> store_sync.Link:
        """Forward: the new store follows the old one; backwards: the reverse.
        Either way with every workspace's schema in the same two databases."""
        spec = self.spec()
        old_gen = leaving_generation(spec)
        new_store = self.move.new_store
        assert new_store is not None
        source, target = (new_store, self.move.old_store) if backwards else (self.move.old_store, new_store)
        assert self.record.resources is not None
        workspaces = tuple((workspace_key(self.record.tenant_id, name), in_store(res, source), in_store(res, target))
                           for name, res in sorted(self.record.resources.workspaces.items()))
        name = store_sync.link_name(self.record.tenant_id, spec.store_generation if backwards else old_gen)
        return store_sync.Link(name, source, target, workspaces)

    def set_writable(self, stores: list[StoreConnection], writable: bool) -> None:
        """The tenant's (or a workspace's) role's writes on each of ``stores`` (one database)."""
        with self.connect(stores[0]) as conn:
            for store in stores:
                store_sync.set_writable(conn, store, writable)

    def stack_spec(self, stack: str) -> TenantSpec:
        """The spec in ``stack``'s file, read once per run."""
        if stack not in self.specs:
            self.specs[stack] = read_tenant(stack_file(self.ws.stacks_dir, stack))
        return self.specs[stack]

    def changed(self, stack: str) -> None:
        """A step wrote or applied ``stack``: what this run read of it is read again."""
        self.specs.pop(stack, None)

    def spec(self) -> TenantSpec:
        # The record's cell (a stack file CI did not commit placement back to may
        # lack it); while the target spec is written, the cell the move goes to.
        spec = self.stack_spec(self.record.current_stack)
        moving = self.record.move is not None and spec.retiring is not None
        return spec.model_copy(update={"cell": self.move.to_cell if moving else self.record.cell})

    def resources_at(self, tier: Tier, store: StoreConnection, bucket: str | None = None) -> TenantResources:
        """The record's resources in ``store`` (its workspaces' schemas in the same database)."""
        assert self.record.resources is not None
        workspaces = {name: res.model_copy(update={"store": in_store(res, store)})
                      for name, res in self.record.resources.workspaces.items()}
        return self.record.resources.model_copy(update={"tier": tier, "store": store, "workspaces": workspaces,
                                                        "bucket": bucket or self.record.resources.bucket})

    def point_secret(self, store: StoreConnection) -> None:
        """The tenant's secret, and each workspace's, names the store the
        registry routes to (same role and password)."""
        sm = self.ws.clients_for(self.record)("secretsmanager")
        assert self.record.resources is not None
        for each in (store, *(in_store(res, store) for res in self.record.resources.workspaces.values())):
            current = json.loads(sm.get_secret_value(SecretId=each.secret_arn)["SecretString"])
            wanted = {**current, "host": each.endpoint, "port": each.port, "dbname": each.database,
                      "schema": each.schema_name, "username": each.role}
            if wanted != current:
                sm.put_secret_value(SecretId=each.secret_arn, SecretString=json.dumps(wanted))

    def apply(self, spec: TenantSpec, stack: str | None = None) -> Any:
        """``spec`` written to its stack file (the tenant's, or ``stack``) and applied."""
        from tenantctl.operations.provision import apply_spec

        stack = stack or self.record.stack
        self.record_digest(spec, stack)
        try:
            return apply_spec(self.ws, spec, on_event=None, stack=stack)
        finally:  # a failed up may have changed it too
            self.changed(stack or spec.id)

    def record_digest(self, spec: TenantSpec, stack: str | None) -> None:
        """The move's digest of the stack file about to hold ``spec``, before the file changes."""
        move, written, digest = self.record.move, stack or spec.id, spec.content_hash()
        if move is not None and move.stack_digests.get(written) != digest:
            self.save(move=move.model_copy(update={"stack_digests": {**move.stack_digests, written: digest}}))

    def unprotect(self, spec: TenantSpec, retiring: bool) -> None:
        """Lift the deletion protection of the dedicated store about to go
        (``retiring``: the old one, at a finalize; else the target, at a
        rollback) right before the `up` that removes it, as deprovision does (``deletion_protection.lift``):
        the stack file written without it (what stays declared if the run dies
        before that `up`, so no `up` protects it again), then the live
        instance, asked each time (a run killed between the two left the file
        saying unprotected), by one ModifyDBInstance. Not by an `up` of the
        whole stack, which would run every other resource of the tenant, both
        stores' included, for one flag."""
        from tenantctl.operations.deletion_protection import lift_live

        going = spec.retiring if retiring else spec
        assert going is not None and going.dedicated is not None
        if going.dedicated.deletion_protection:
            going = going.model_copy(update={"dedicated": going.dedicated.model_copy(
                update={"deletion_protection": False})})
            spec = spec.model_copy(update={"retiring": going}) if retiring else going
            self.record_digest(spec, self.record.stack)
            write_tenant(self.ws.stacks_dir, spec, stack=self.record.stack)
            self.changed(self.record.stack or spec.id)
        # Same account and region either way: a move to another one is a KeyedMover's.
        lift_live(self.ws, self.move.from_cell if retiring else self.move.to_cell, spec.region, spec.id)

    # -- forward ----------------------------------------------------------------
    def resumed_target(self) -> TenantSpec:
        """The target spec of a move resumed in ``preparing``: written already,
        or not yet when the run was killed right after recording the move."""
        spec = self.spec()
        return spec if spec.retiring is not None else target_spec(spec, self.move.to_tier, self.move.started_at,
                                                                  self.move.to_cell)

    def prepare(self, target: TenantSpec) -> None:
        self.say(f"move {self.record.tenant_id}: creating the {target.tier.value} store beside the current one")
        applied = self.apply(target)
        self.phase(MovePhase.copying, new_store=applied.resources.store,
                   new_bucket=applied.resources.bucket if self.move.old_bucket is not None else None)

    def copy(self) -> None:
        link = self.link()
        started = time.monotonic()
        self.set_writable(link.targets, False)  # nothing but the replication writes the target before the switch
        self.follow(link)
        self.say(f"move {self.record.tenant_id}: copying while the tenant serves")
        self.sync_objects()  # while the store's initial copy runs
        store_sync.wait("initial copy", self.copied_or_told(link, started), COPY_TIMEOUT, 0.2)
        self.result_extra["copy_seconds"] = time.monotonic() - started

    def copied_or_told(self, link: store_sync.Link, started: float) -> Callable[[], bool]:
        """Whether ``link``'s initial copy is done; once past ``STALLED_AFTER``
        with no table's copy started, says once why it likely waits (no
        logical replication worker free on the new store's server) and what
        to do, instead of waiting in silence."""
        from tenantctl.cell_database import worker_room

        looked = False

        def done() -> bool:
            nonlocal looked
            if store_sync.copied(self.connect, link):
                return True
            if not looked and time.monotonic() - started > STALLED_AFTER:
                looked = True  # once: said, or a table's copy started and the rest follow as workers free up
                with self.connect(link.target) as conn:
                    if store_sync.none_started(conn, link):
                        tid = self.record.tenant_id
                        self.say(f"move {tid}: no table copy started after {STALLED_AFTER:.0f} s: likely no "
                                 "logical replication worker free on the new store's server "
                                 f"({worker_room(conn).figures(copies=False)}); it goes on waiting: `--finalize` "
                                 "switched moves there or raise max_logical_replication_workers (and "
                                 f"max_worker_processes), then `tenantctl move {tid}` resumes it if stopped")
            return False

        return done

    def switch(self, window: timedelta) -> None:
        pinned = self.catch_up(self.link(), MovePhase.copying, way_back=self.link(backwards=True),
                               first=self.freezer(MovePhase.freezing))
        frozen_at = self.move.phase_at
        spec = self.spec()
        new_store = self.move.new_store
        assert new_store is not None
        # The old store follows the new one from here, read-only: a rollback keeps every write.
        self.follow(self.link(backwards=True), copy_data=False)  # its slot taken in the freeze
        now = utcnow()
        self.save(tier=spec.tier, cell=self.move.to_cell,
                  resources=self.resources_at(spec.tier, new_store, self.move.new_bucket),
                  move=self.move.model_copy(update={"phase": MovePhase.switched, "phase_at": now,
                                                    "switched_at": now, "window_ends_at": now + window}))
        self.switched()
        self.result_extra["freeze_seconds"] = (utcnow() - frozen_at).total_seconds()
        where = f" of cell {self.move.to_cell}" if self.move.to_cell != self.move.from_cell else ""
        self.say(f"move {self.record.tenant_id}: switched to the {spec.tier.value} store{where} "
                 f"(writes refused {self.result_extra['freeze_seconds']:.2f} s); the old one is read-only")
        if pinned is not None:
            self.say(f"move {self.record.tenant_id}: verifying (counts + checksums as of the freeze)")
            try:
                self.result_extra["rows"] = store_sync.compare_pinned(
                    self.record.tenant_id, pinned, self.link().pairs(self.record.tenant_id))
                self.result_extra["verified"] = True
            except DrillFailed:
                self.rollback(verified=False)  # back to the old store, which kept every write since
                raise

    def switched(self) -> None:
        """What follows the switch's registry write, run again by a resumed
        move a kill left switched: the tenant's secret (and each workspace's)
        names the new store, as the registry does."""
        assert self.move.new_store is not None
        self.point_secret(self.move.new_store)

    # -- a switched move resumed: its stores compared again -----------------------
    def verify_again(self) -> None:
        """The verification a run killed right after the switch did not make,
        made by the run resuming it (``move ID``). The snapshots pinned at the
        freeze went with the killed run, and the new store has taken writes
        since, which reach the old one only through the way back: so the new
        store's writes are refused again for a moment (``reverifying``: runtimes
        answer 503), the old store catches up with it by the way back, both are
        pinned and then compared, as the switch compares them. Equal snapshots of
        both means the old store (the freeze's state plus the way back's
        changes) and the new one hold the same rows: a row the copy got wrong is
        still wrong in one of them unless a write since replaced it in both.
        A difference is reported (exit 9) and nothing undone or removed: the
        tenant serves on the new store and has since the switch, the old store
        still follows it (the way back intact), and which one to keep is the
        operator's call (`--rollback`, whose own comparison then stops it, or
        `--finalize`). Not once a ``--finalize`` began (its final backup
        recorded): it may have dropped the way back, and it finishes the move."""
        tid = self.record.tenant_id
        if self.move.final_backup_id is not None:
            self.say(f"move {tid}: a --finalize has begun, the stores are not compared again "
                     f"(`tenantctl move {tid} --finalize` finishes it)")
            return
        self.say(f"move {tid}: verifying the switch a killed run left unverified (the new store's writes refused "
                 "while the old one catches up)")
        try:
            self.save(move=self.move.model_copy(update={"reverifying": True}))
            self.frozen_at = time.monotonic()
            pinned = self.pin_again()
        finally:  # an interrupt or a timeout too (one landing as the flag was written: the record re-read)
            self.resync()
            self.thaw_reverifying()
        try:
            self.result_extra["rows"] = self.compare_again(pinned)
        except DrillFailed as exc:
            raise DrillFailed(f"{exc}. Nothing was rolled back or removed: the tenant serves on its new store, "
                              "the old one still follows it. Find what differs, then `tenantctl move "
                              f"{tid} --rollback` (back to the old store) or `--finalize` (keep the new one)"
                              ) from None
        self.result_extra["verified"] = True

    def thaw_reverifying(self) -> None:
        """The new store writable and the record's ``reverifying`` cleared: after
        ``verify_again`` pinned both stores, or at a ``--finalize`` or
        ``--rollback`` of a move a run killed in it left so."""
        if not self.move.reverifying:
            return
        self.set_writable(self.serving(), True)
        self.resync()
        self.save(move=self.move.model_copy(update={"reverifying": False}))

    def serving(self) -> list[StoreConnection]:
        """The new store's schemas (the tenant's, each workspace's): the way back's sources."""
        return self.link(backwards=True).sources

    def pin_again(self) -> tuple[Any, Any]:
        """The new store frozen (``store_sync.quiesce``), the old one caught up
        with it by the way back, then (old, new) pinned."""
        back = self.link(backwards=True)
        self.follow(back, copy_data=False)  # there since the switch (enabled if a killed stop left it disabled)
        self.runtimes_told()
        lsn = store_sync.quiesce(self.connect, back.sources, CATCH_UP_TIMEOUT)
        store_sync.wait("the old store catching up with the new one", lambda: store_sync.caught_up(
            self.connect, back, lsn), CATCH_UP_TIMEOUT, 0.02)
        return store_sync.pin_both(self.connect, back.target, back.source)

    def compare_again(self, pinned: tuple[Any, Any]) -> dict[str, Any]:
        return store_sync.compare_pinned(self.record.tenant_id, pinned, self.link().pairs(self.record.tenant_id))

    def catch_up(self, link: store_sync.Link, unfrozen: MovePhase, way_back: store_sync.Link | None = None,
                 first: Callable[[], None] = lambda: None) -> tuple[Any, Any] | None:
        """``first`` (the freeze's phase written: ``frozen``), then freeze
        ``link``'s source, let the target catch up, take the slot of
        ``way_back`` (the link the source follows the target by once switched:
        ``reserve``), pin a snapshot of both (verified after the freeze), make
        the target the writable one. None: the link was dropped by an earlier
        run (which got this far). A target not caught up in time, no room for
        ``way_back``'s slot, or an interrupt from ``first`` on, ends the freeze,
        nothing switched: the source takes writes again, the move is back in
        phase ``unfrozen`` and a re-run freezes again. Once the link is
        dropped there is no going back: ``first`` runs unguarded."""
        pinned = None
        with self.connect(link.target) as conn:
            following = store_sync.has_subscription(conn, link.name)
        if not following:
            first()
        else:
            with self.thawed_if_stopped(link.sources, unfrozen):
                first()
                self.runtimes_told()
                lsn = store_sync.quiesce(self.connect, link.sources, CATCH_UP_TIMEOUT)
                store_sync.wait("replication catch-up", lambda: store_sync.caught_up(self.connect, link, lsn),
                                CATCH_UP_TIMEOUT, 0.02)
                if way_back is not None:
                    self.reserve(way_back)
            pinned = store_sync.pin_both(self.connect, link.source, link.target)
            for target in link.targets:
                store_sync.align_sequences(self.connect, target)
            store_sync.stop(self.connect, link)
        self.set_writable(link.targets, True)
        return pinned

    def frozen(self, phase: MovePhase) -> None:
        """The move's record says ``phase`` (``freezing``, ``rolling_back``: runtimes refuse the
        tenant's writes from here), unless it says so already (a resumed run). Written inside the
        guard that ends the freeze (``thawed_if_stopped``): an interrupt landing as it was written,
        or before the freeze's own steps began, left the record frozen and the tenant refusing
        every write until someone ran the move again."""
        if self.move.phase is not phase:
            self.phase(phase)
            self.frozen_at = time.monotonic()

    def runtimes_told(self) -> None:
        """Before a store refuses the tenant's writes: wait until ``REREAD_INTERVAL`` has passed since
        this run wrote the record saying so. A runtime reads the record again when the store refuses
        a write, but not one it read under ``REREAD_INTERVAL`` ago (a refusal alone is weak evidence:
        an application's missing grant looks the same), so one read just before that write would
        answer the refusal with a 500, not the freeze's 503 (retry in a second)."""
        if self.frozen_at is not None:
            time.sleep(max(0.0, REREAD_INTERVAL - (time.monotonic() - self.frozen_at)))

    def freezer(self, phase: MovePhase, backwards: bool = False) -> Callable[[], None]:
        """The first step of a freeze (``catch_up``'s ``first``): the record frozen in
        ``phase`` (``frozen``), then a pass over the objects changed since the last
        one, that way round (writes are refused from here: forward, what changed
        since the copy's pass; backwards, what was written since the switch)."""
        def freeze() -> None:
            self.frozen(phase)
            self.sync_objects(backwards)

        return freeze

    @contextmanager
    def thawed_if_stopped(self, sources: list[StoreConnection], unfrozen: MovePhase) -> Iterator[None]:
        """The freeze of ``sources`` (a link's) ended when the block fails (a target
        not caught up in time, no room for the way back) or the run is
        interrupted (Ctrl-C, SIGTERM: a cancelled job, a killed evacuation's
        workers): the source takes writes again and the move is back in phase
        ``unfrozen``, nothing switched, rather than the tenant refusing every
        write until someone runs the move again."""
        try:
            yield
        except (TargetUnavailable, InvalidInput, KeyboardInterrupt):
            self.set_writable(sources, True)
            self.resync()
            self.phase(unfrozen)
            raise

    def resync(self) -> None:
        """The record as the registry holds it, while this run still holds its lock: an interrupt can
        land after a write of this run and before its result came back (the phase just written), and a
        write on the record as this run last knew it would then be refused as a concurrent change."""
        current = self.ws.registry.get(self.record.tenant_id)
        if current is not None and current.lock == self.record.lock and current.version != self.record.version:
            self.held.record = current

    def reserve(self, link: store_sync.Link) -> None:
        """``link``'s slot on its source's server, taken in the freeze once
        that source caught up with the store it followed: it decodes only the
        writes made after the switch (the old store is frozen, and every change
        of the link the other way is applied before). Taken before anything is
        switched, so a server with no room for it refuses the switch (exit 3)
        instead of leaving the tenant frozen after it; a re-run finds it taken."""
        import psycopg

        from tenantctl.cell_database import refuse_follower, refuse_link

        store = link.source
        where = f"the server of tenant {self.record.tenant_id!r}'s new store ({store.endpoint}:{store.port})"
        done = (f"nothing was switched, the tenant takes writes on its old store again (`tenantctl move "
                f"{self.record.tenant_id}` switches once there is room): ")
        old = link.target  # its subscription's apply worker runs where the old store is; on the new store's
        if (old.endpoint, old.port) != (store.endpoint, store.port):  # server it takes the copy's, stopped first
            with self.connect(old) as conn:
                refuse_follower(conn, f"the server of tenant {self.record.tenant_id!r}'s old store ({old.endpoint}"
                                      f":{old.port})", done, held=store_sync.has_subscription(conn, link.name))
        with self.connect(store) as conn:
            refuse_link(conn, where, done, held=store_sync.has_slot(conn, link.name))
            try:
                store_sync.reserve(conn, link)
            except psycopg.errors.ConfigurationLimitExceeded:  # taken since it was read
                refuse_link(conn, where, done)
                raise

    def final_backup(self) -> None:
        """One final backup (the tenant's, then each workspace's) per finalize:
        the tenant's id is recorded after them all and before anything else, so
        a re-run after a kill skips them (a run killed before that write leaves
        one backup more, never none)."""
        from tenantctl.drills.backup import final_backup

        taken = self.move.final_backup_id
        if taken is not None:
            self.say(f"move {self.record.tenant_id}: final backup {taken} taken by an earlier run")
            return
        backed_up, workspaces, which = self.final_backup_scope()
        self.say(f"move {self.record.tenant_id}: final backup of {which}")
        manifest = final_backup(self.ws, backed_up)
        for name in workspaces:  # each under the workspace's own key
            final_backup(self.ws, backed_up, workspace=name)
        self.save(move=self.move.model_copy(update={"final_backup_id": manifest.backup_id}))

    def final_backup_scope(self) -> tuple[TenantRecord, list[str], str]:
        """(the record as of the store backed up, its workspaces, what it is):
        here the old store, as it was before the move (its backup goes to the
        new prefix, which stays)."""
        old = self.resources_at(self.move.from_tier, self.move.old_store)
        was = self.record.model_copy(update={"tier": self.move.from_tier, "resources": old,
                                             "cell": self.move.from_cell})
        return was, sorted(old.workspaces), "the old store"

    def finalize(self) -> None:
        spec = self.spec()
        # No retiring store: a run killed in the `up` below wrote the final spec already (after its backup,
        # its objects' removal and the protection's lift), so this run finishes that `up`.
        self.final_backup()
        self.stop_way_back()
        s3 = self.ws.clients_for(self.record)("s3")
        for source, target, key in self.prefixes():
            late = prefix_sync.carry_late(s3, source, target, key)
            if late:
                self.say(f"move {self.record.tenant_id}: {len(late)} objects written to the old prefix "
                         f"{source.prefix} after the switch carried over")
        self.remove_objects(backwards=False)
        if spec.retiring is not None and spec.retiring.dedicated is not None:
            self.unprotect(spec, retiring=True)
        self.say(f"move {self.record.tenant_id}: removing the old store")
        final = spec.model_copy(update={"retiring": None})
        self.finish(final, self.apply(final))

    def finish(self, final: TenantSpec, applied: Any) -> None:
        """The write ending a finalized move, then the tenant's activation
        (``provision.activate``). That write records the fingerprint and digest
        of what was applied (as ``put_back`` does) and the tenant as not verified
        yet, so a run killed before the activation leaves a record naming the
        spec it runs, which `apply` provisions again and `move ID --finalize`
        activates (``move_activation``), rather than the pre-move fingerprint."""
        from tenantctl.operations.move_activation import unactivated_note
        from tenantctl.operations.provision import activate

        self.end(self.move.from_cell, self.move.from_tier, resources=applied.resources,
                 spec_hash=applied.fingerprint, spec_digest=final.content_hash(), program_version=__version__,
                 provision_failed=True, last_error=unactivated_note(self.record.tenant_id))
        self.held.record = activate(self.ws, self.record, final, applied)

    def stop_way_back(self) -> None:
        """The link the old store follows the new one by, dropped at a finalize;
        nothing to drop once the old store's database is gone (``leaving``): the
        `up` that dropped it (a dedicated old store's, its run killed after) runs
        after this step, so the subscription went with the database and the slot
        and publication on the new store were dropped before (before: every
        re-run failed connecting to that database, exit 1). The connection that
        asked is the one the link's removal uses on the old store."""
        old = self.move.old_store
        with self.leaving(old) as conn:
            if conn is None:
                return
            store_sync.stop(self.connecting(old, conn), self.link(backwards=True))

    def connecting(self, store: StoreConnection, conn: Any) -> store_sync.Connect:
        """``connect``, with ``conn`` (open already, left open) as ``store``'s connection:
        the one ``leaving`` opened to learn the database is there serves what follows,
        rather than a second login to the same database."""
        @contextmanager
        def opened() -> Iterator[Any]:
            yield conn

        return lambda each: opened() if each == store else self.connect(each)

    # -- backward ---------------------------------------------------------------
    def old_side(self) -> str:
        """What a --finalize removes, for messages."""
        return "the old store"

    def refuse_rollback_once_finalizing(self) -> None:
        """A --finalize that recorded its final backup goes on to remove the old
        side: rolling back onto it could lose it half-way (exit 3, nothing changed)."""
        if self.move.final_backup_id is not None:
            raise InvalidInput(f"tenant {self.record.tenant_id!r}: a --finalize has begun removing the old side "
                               f"({self.old_side()}); `tenantctl move {self.record.tenant_id} --finalize` "
                               "finishes it")

    def rollback(self, verified: bool = True) -> None:
        """``verified``: compare the stores as of the freeze before switching
        back (not when undoing a switch whose own verification failed)."""
        self.refuse_rollback_once_finalizing()
        spec, target_tier, target_cell = self.spec(), self.move.to_tier, self.move.to_cell
        if spec.retiring is None:
            if self.move.stack_digests.get(self.record.stack or spec.id) == spec.content_hash():
                # The spec a rollback put back, that run killed in its `up` (every step before it done).
                self.say(f"move {self.record.tenant_id}: removing the {target_tier.value} store")
                self.put_back(spec)
            else:  # killed before the target spec was written: nothing was created
                self.end(target_cell, target_tier)
            return
        if self.move.phase in (MovePhase.switched, MovePhase.rolling_back):
            pinned = self.catch_up(self.link(backwards=True), MovePhase.switched,
                                   first=self.freezer(MovePhase.rolling_back, backwards=True))
            self.save(tier=spec.retiring.tier, cell=self.move.from_cell,
                      resources=self.resources_at(spec.retiring.tier, self.move.old_store, self.move.old_bucket),
                      move=self.move.model_copy(update={"phase": MovePhase.preparing, "phase_at": utcnow(),
                                                        "switched_at": None, "window_ends_at": None}))
            self.point_secret(self.move.old_store)
            if pinned is not None and verified:  # after the freeze; a difference keeps the new store for a person
                store_sync.compare_pinned(self.record.tenant_id, pinned,
                                          self.link(backwards=True).pairs(self.record.tenant_id))
            elif pinned is not None:
                for conn in pinned:
                    conn.close()
        # Before the switch (or switched back): the old store takes writes, the new one goes.
        if self.move.new_store is not None:
            store_sync.stop(self.connect, self.link())
            store_sync.stop(self.connect, self.link(backwards=True))  # its slot, when a freeze took it
        self.set_writable(self.link().sources if self.move.new_store is not None else [self.move.old_store], True)
        self.point_secret(self.move.old_store)
        self.say(f"move {self.record.tenant_id}: removing the {spec.tier.value} store")
        self.remove_objects(backwards=True)
        if spec.dedicated is not None:
            self.unprotect(spec, retiring=False)
        self.put_back(rolled_back(spec))

    def put_back(self, back: TenantSpec) -> None:
        """``back`` (the spec on the store the move leaves) applied, removing
        the target store; the move cleared and its target slot given back."""
        applied = self.apply(back)
        # The fingerprint of what was applied, as a provision records it: `apply` compares the stack file with it.
        self.end(self.move.to_cell, self.move.to_tier, spec_hash=applied.fingerprint,
                 spec_digest=back.content_hash(), program_version=__version__)

    def remove_objects(self, backwards: bool) -> None:
        """The prefixes the move leaves (the old ones at --finalize; the new ones
        at --rollback), every version of them: nothing of the tenant or its
        workspaces stays in that cell."""
        for old, new, _ in self.prefixes():
            gone = new if backwards else old
            self.say(f"move {self.record.tenant_id}: removing its objects from s3://{gone.bucket}/{gone.prefix}")
            prefix_sync.remove(self.ws.clients_for(self.record)("s3"), gone)


def leaving_generation(spec: TenantSpec) -> int:
    """The generation of the store a move leaves, which its forward link is
    named after (``Mover.link``): the retiring one, or the current one while
    the target spec is not written yet."""
    return spec.retiring.generation if spec.retiring else spec.store_generation


def in_store(workspace: WorkspaceResources, store: StoreConnection) -> StoreConnection:
    """The workspace's schema and role in the tenant's store ``store`` (its database)."""
    return workspace.store.model_copy(update={"endpoint": store.endpoint, "port": store.port,
                                              "database": store.database})


def rolled_back(spec: TenantSpec) -> TenantSpec:
    """A move's target spec (``target_spec``) back on the store it retires;
    each workspace keeps its pin (on that store it names the plain schema)."""
    assert spec.retiring is not None
    return spec.model_copy(update={"tier": spec.retiring.tier, "dedicated": spec.retiring.dedicated,
                                   "cell": spec.retiring.cell or spec.cell,
                                   "store_generation": spec.retiring.generation, "retiring": None})


def target_spec(spec: TenantSpec, tier: Tier, started: datetime | None = None,
                cell: str | None = None) -> TenantSpec:
    """``spec`` moved to ``tier`` (and to ``cell``, default its own): the next
    store generation, the current one retiring (with its cell when the move
    changes cells); a dedicated target's final snapshot named after ``started``."""
    to_cell = cell or spec.cell
    body = spec.model_dump(mode="json", exclude_none=True)
    body.update(tier=tier.value, cell=to_cell, store_generation=spec.store_generation + 1,
                retiring=RetiringStore(tier=spec.tier, generation=spec.store_generation, dedicated=spec.dedicated,
                                       cell=spec.cell if to_cell != spec.cell else None,
                                       ).model_dump(mode="json", exclude_none=True))
    body.pop("dedicated", None)
    # Each workspace's schema keeps the resource name it has now (see WorkspaceSpec.schema_generation).
    for workspace in body.get("workspaces", []):
        workspace.setdefault("schema_generation", spec.store_generation)
    if tier is Tier.dedicated:
        body["dedicated"] = DedicatedSpec(final_snapshot_suffix=f"{started or utcnow():%Y%m%d%H%M%S}").model_dump(
            mode="json")
    return TenantSpec.model_validate(body)
