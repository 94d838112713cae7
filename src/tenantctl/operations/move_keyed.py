"""Move a pooled tenant to a cell of another account or region (docs/moves.md).

The tenant's KMS key, role, queues and secret belong to an account and
region, so the target is the tenant built again in a second stack,
``<id>.k<N>`` (key generation N), in the target cell; every sealed column is
re-wrapped under the new key on the way. The phases, the record's
bookkeeping, the lock and the resume/rollback rules are ``Mover``'s:

    preparing     the target stack applied in the target cell (new key, role,
                  queues, secret, store); change capture installed on the
                  current store (``row_relay``)
    copying       rows copied and relayed with a ``Rewrapper(old key -> new
                  key)`` while the tenant serves; the prefix's objects copied
                  to the target cell's bucket under the new key
    freezing      the old role's writes on the old store revoked (stale
                  runtimes fail closed), the relay drained, the target's
                  identities advanced, the capture the other way installed on
                  the new store, a last object pass, snapshots of both stores
                  pinned, then ONE conditional registry write switching
                  region, cell, account, stack and resources (key, role,
                  queues, secret, store, bucket); the pinned snapshots are
                  compared after it (digests, each side opened with its own
                  key), a difference rolls the move back
    switched      the new stack serves; the old store is read-only, and a
                  rollback relays the writes made since back to it
    --finalize    final backup of the new store (once), the old stack retired
                  (its role's sends to the old queues denied), capture removed,
                  late objects carried, the old prefix removed, queue leftovers
                  forwarded, the old stack destroyed (its key scheduled for
                  deletion); the tenant's stack is ``<id>.k<N>`` for good; a
                  rollback is refused once it began
    --rollback    before the switch: the target stack removed; after it: the
                  freeze the other way (relay new -> old with a
                  ``Rewrapper(new key -> old key)``), the record switched back,
                  then the target stack removed

Only pooled tenants without workspaces take this path (a workspace has its
own key; a dedicated store would need its own relay endpoints): refused with
exit 3 before anything is created.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from tenant_runtime.crypto import Envelope
from tenant_runtime.models import MovePhase, StoreConnection, TenantRecord, TenantResources, Tier, utcnow
from tenant_runtime.tables import SEALED_BY_TABLE
from tenantctl import backup_carry, naming, prefix_sync, queue_forward, row_relay, store_sync
from tenantctl.errors import DrillFailed, InvalidInput, TargetUnavailable
from tenantctl.models import TenantSpec
from tenantctl.operations.mover import CATCH_UP_TIMEOUT, Mover, Progress
from tenantctl.rewrap import KmsKey, Rewrapper
from tenantctl.stackconfig import read_tenant, stack_file
from tenantctl.workspace import Workspace


def keyed_refusal(record: TenantRecord, spec: TenantSpec, tier: Tier) -> str | None:
    """Why the tenant cannot move to another account or region (None: it can)."""
    if record.tier is not Tier.pooled or tier is not Tier.pooled:
        return ("only a pooled tenant moves to another account or region (a dedicated store is not built for "
                "this path): move it to pooled within its account and region first")
    if spec.workspaces or record.workspaces:
        return ("a tenant with workspaces does not move to another account or region yet (each workspace has "
                "its own key to re-wrap under)")
    return naming.key_generation_problem(record.tenant_id, next_generation(record))


def next_generation(record: TenantRecord) -> int:
    return (naming.stack_tenant(record.current_stack) or (record.tenant_id, 0))[1] + 1


def refuse_or_target(ws: Workspace, record: TenantRecord, spec: TenantSpec, tier: Tier,
                     cell: str) -> tuple[TenantSpec, str]:
    """The target spec and its stack, after the refusals of this path: the
    tenant's tier and workspaces (exit 3), the cell's fit, the policy gate's
    spec rules (exit 8) and the target cell's quotas."""
    from tenantctl import preflight
    from tenantctl.placement import unfit
    from tenantctl.policy import refuse_unsafe_spec

    refused = f"tenant {record.tenant_id!r} cannot move to cell {cell!r}"
    target = spec.model_copy(update={"cell": cell, "region": ws.cell(cell).region})
    problem = keyed_refusal(record, spec, tier) or unfit(ws.cell(cell), target)
    if problem:
        raise InvalidInput(f"{refused}: {problem}")
    refuse_unsafe_spec(target)
    preflight.check(target, ws.ensure_cell(cell), ws.cell_clients(cell))
    return target, naming.stack_name(record.tenant_id, next_generation(record))


def opener(tenant_id: str, key: KmsKey) -> row_relay.Open:
    """A sealed column's plaintext, opened under ``key`` (KMS once per data key)."""
    envelope = Envelope(lambda _ctx: key.kms)

    def open_blob(table: str, row_key: tuple, blob: bytes) -> bytes:
        scope = SEALED_BY_TABLE[table].scope_of(row_key)
        return envelope.open(lambda: key.kms, tenant_id, key.key_arn, scope, [blob])[0]

    return open_blob


class KeyedMover(Mover):
    """A move to a second stack of the tenant in another account or region."""

    def __init__(self, ws: Workspace, held: Any, progress: Progress | None = None) -> None:
        super().__init__(ws, held, progress)
        self.rewrappers: dict[bool, Rewrapper] = {}  # by direction (backwards)

    # -- the two sides ----------------------------------------------------------
    @property
    def to_stack(self) -> str:
        assert self.move.to_stack is not None
        return self.move.to_stack

    @property
    def from_stack(self) -> str:
        """The stack the move leaves (a move recorded without it: the generation before the target's)."""
        if self.move.from_stack is not None:
            return self.move.from_stack
        tenant_id, generation = naming.stack_tenant(self.to_stack) or (self.record.tenant_id, 1)
        return naming.stack_name(tenant_id, generation - 1)

    def stack_resources(self, stack: str) -> TenantResources:
        return TenantResources.model_validate(self.ws.engine.outputs(stack))

    def clients(self, cell: str) -> Any:
        return self.ws.cell_clients(cell)

    def key(self, backwards: bool = False) -> tuple[KmsKey, KmsKey]:
        """(source key, target key) of the relay's direction."""
        old = KmsKey(self.clients(self.move.from_cell)("kms"), self.stack_resources(self.from_stack).kms_key_arn)
        new = KmsKey(self.clients(self.move.to_cell)("kms"), self.stack_resources(self.to_stack).kms_key_arn)
        return (new, old) if backwards else (old, new)

    def stores(self, backwards: bool = False) -> tuple[StoreConnection, StoreConnection]:
        new = self.move.new_store
        assert new is not None
        return (new, self.move.old_store) if backwards else (self.move.old_store, new)

    @contextmanager
    def relaying(self, backwards: bool = False) -> Iterator[row_relay.Relay]:
        """The relay old -> new (or back), sealed columns re-wrapped between the two keys."""
        source, target = self.stores(backwards)
        if backwards not in self.rewrappers:  # one per direction for the run: the freeze reuses the copy's keys
            self.rewrappers[backwards] = Rewrapper(self.record.tenant_id, *self.key(backwards))
        with self.connect(source) as src, self.connect(target) as dst:
            yield row_relay.Relay(src, source, dst, target, self.rewrappers[backwards].rewrap_column)

    def spec(self) -> TenantSpec:
        """The spec the move leaves (its stack file stays until finalize)."""
        return read_tenant(stack_file(self.ws.stacks_dir, self.from_stack)).model_copy(
            update={"cell": self.move.from_cell})

    def target(self) -> TenantSpec:
        return read_tenant(stack_file(self.ws.stacks_dir, self.to_stack))

    def resumed_target(self) -> TenantSpec:
        cell = self.ws.cell(self.move.to_cell)
        return self.spec().model_copy(update={"cell": cell.name, "region": cell.region})

    def prefixes(self, backwards: bool = False) -> list[tuple[prefix_sync.Place, prefix_sync.Place, str]]:
        """The tenant's prefix in each cell's bucket, each with its side's S3
        client; the key is the target's (objects are copied under it). Across
        accounts each object is read and written by its own side's client."""
        old, new = self.stack_resources(self.from_stack), self.stack_resources(self.to_stack)
        apart = naming.account_of_arn(old.kms_key_arn) != naming.account_of_arn(new.kms_key_arn)
        there = prefix_sync.Place(old.bucket, old.prefix, client=self.clients(self.move.from_cell)("s3"),
                                  other_account=apart)
        here = prefix_sync.Place(new.bucket, new.prefix, client=self.clients(self.move.to_cell)("s3"),
                                 other_account=apart)
        return [(here, there, old.kms_key_arn)] if backwards else [(there, here, new.kms_key_arn)]

    def capture(self, store: StoreConnection, installed: bool = True) -> None:
        with self.connect(store) as conn:
            (row_relay.install if installed else row_relay.remove)(conn, store)

    def share_login(self, new: StoreConnection) -> None:
        """Two stores on one PostgreSQL server (the sandbox's cells) share the
        tenant's database role, whose password the target stack just set: the
        old secret takes it too, or the old store's logins would be refused
        until the switch. Stores on two servers (AWS) are left alone."""
        old = self.move.old_store
        if (old.endpoint, old.port) != (new.endpoint, new.port):
            return
        new_sm, old_sm = self.clients(self.move.to_cell)("secretsmanager"), self.clients(
            self.move.from_cell)("secretsmanager")
        password = json.loads(new_sm.get_secret_value(SecretId=new.secret_arn)["SecretString"])["password"]
        current = json.loads(old_sm.get_secret_value(SecretId=old.secret_arn)["SecretString"])
        if current.get("password") != password:
            old_sm.put_secret_value(SecretId=old.secret_arn, SecretString=json.dumps({**current,
                                                                                      "password": password}))

    # -- forward ----------------------------------------------------------------
    def prepare(self, target: TenantSpec) -> None:
        from tenantctl.operations.provision import apply_spec

        self.say(f"move {self.record.tenant_id}: building stack {self.to_stack} in cell {self.move.to_cell}")
        applied = apply_spec(self.ws, target, stack=self.to_stack)
        self.share_login(applied.resources.store)
        self.capture(self.move.old_store)  # before the copy: a row changed while copied is relayed again
        self.phase(MovePhase.copying, new_store=applied.resources.store, new_bucket=applied.resources.bucket)

    def copy(self) -> None:
        started = time.monotonic()
        source, target = self.stores()
        self.set_writable([target], False)  # nothing but the relay writes the target before the switch
        self.say(f"move {self.record.tenant_id}: copying and re-wrapping while the tenant serves")
        with self.relaying() as relay:
            relay.copy()
            relay.catch_up()
        self.sync_objects()
        self.result_extra["copy_seconds"] = time.monotonic() - started
        self.phase(MovePhase.freezing)

    def switch(self, window: timedelta) -> None:
        frozen_at = self.move.phase_at
        pinned = self.freeze(backwards=False)
        new = self.stack_resources(self.to_stack)
        cell = self.ws.cell(self.move.to_cell)
        now = utcnow()
        self.save(cell=cell.name, account_id=cell.account_id, region=new.region, stack=self.to_stack, resources=new,
                  move=self.move.model_copy(update={"phase": MovePhase.switched, "phase_at": now,
                                                    "switched_at": now, "window_ends_at": now + window}))
        self.result_extra["freeze_seconds"] = (utcnow() - frozen_at).total_seconds()
        self.say(f"move {self.record.tenant_id}: switched to stack {self.to_stack} in cell {cell.name} "
                 f"(writes refused {self.result_extra['freeze_seconds']:.2f} s); the old store is read-only")
        self.say(f"move {self.record.tenant_id}: verifying (digests as of the freeze, each under its own key)")
        try:
            self.result_extra["rows"] = self.verify(pinned)
        except DrillFailed:
            self.rollback()  # back to the old store, which kept every write until the freeze
            raise

    def freeze(self, backwards: bool) -> tuple[Any, Any]:
        """Writes on the source revoked and those under way waited out
        (``store_sync.freeze``, as within an account), the relay drained,
        the target's identities advanced and its writes allowed; forward, the capture the other way installed on the
        new store first (a rollback carries the writes made after the
        switch). Returns snapshots of (source, target) pinned as of now."""
        source, target = self.stores(backwards)
        self.sync_objects(backwards)  # what changed since the last pass (writes are refused from here)
        with self.connect(source) as conn:
            try:
                store_sync.freeze(conn, [source], CATCH_UP_TIMEOUT)
            except TargetUnavailable:  # a writer that never ends: the freeze ends, nothing switched
                self.phase(MovePhase.switched if backwards else MovePhase.copying)
                raise
        with self.relaying(backwards) as relay:
            relay.catch_up()
        with self.connect(target) as conn:
            row_relay.advance_identities(conn, target)
        if not backwards:
            self.capture(target)
        pinned = (store_sync.pin(self.connect, source), store_sync.pin(self.connect, target))
        self.set_writable([target], True)
        return pinned

    def verify(self, pinned: tuple[Any, Any], backwards: bool = False) -> dict[str, int]:
        """Both pinned snapshots' digests, each opened with its own key; a
        difference raises DrillFailed (exit 9)."""
        source, target = self.stores(backwards)
        keys = self.key(backwards)
        try:
            found = [row_relay.digests(conn, store, opener(self.record.tenant_id, key))
                     for conn, store, key in zip(pinned, (source, target), keys, strict=True)]
        finally:
            for conn in pinned:
                conn.close()
        if found[0] != found[1]:
            differ = sorted(t for t in found[0] if found[0][t] != found[1].get(t))
            raise DrillFailed(f"tenant {self.record.tenant_id!r}: the target store differs from the source as of "
                              f"the freeze in {', '.join(differ)}")
        return {table: count for table, (count, _) in found[0].items()}

    # -- finalize / rollback ----------------------------------------------------
    def finalize(self) -> None:
        from tenantctl.operations.provision import activate, apply_spec

        outputs = self.ws.engine.outputs(self.from_stack)
        if outputs:
            self.leave(TenantResources.model_validate(outputs))
        else:  # a run killed after destroying the old stack had done every step before it, not the last
            stack_file(self.ws.stacks_dir, self.from_stack).unlink(missing_ok=True)
        from_cell, stack, target = self.move.from_cell, self.to_stack, self.target()
        self.save(move=None)
        # After the record (a run killed in between keeps a slot too many, never one too few).
        self.ws.registry.release_slot(from_cell, Tier.pooled)
        self.held.record = activate(self.ws, self.record, target, apply_spec(self.ws, target, stack=stack))

    def leave(self, old: TenantResources) -> None:
        """The old side gone, after a final backup of the new store: the old
        stack retired, the capture removed from both stores, late objects
        carried, backups re-wrapped, the old prefix removed, the old queues'
        messages forwarded, the old stack destroyed. Each step finds its work
        done by a killed run (or does it again)."""
        self.final_backup()
        self.retire()
        for store in self.stores():
            self.capture(store, installed=False)
        for source, target, key in self.prefixes():
            late = prefix_sync.carry_late(self.ws.clients_for(self.record)("s3"), source, target, key)
            if late:
                self.say(f"move {self.record.tenant_id}: {len(late)} objects written to the old prefix after the "
                         "switch carried over")
        self.carry_backups(old)
        self.remove_objects(backwards=False)
        self.forward_queues(backwards=False)
        self.destroy(self.from_stack)

    def retire(self) -> None:
        """The old stack applied ``retired``: its role's sends to the old
        queues denied, so a worker still holding the old record fails closed
        on enqueue (and re-reads the registry) instead of leaving a message
        there after the forward. Its other rights stay: workers drain the old
        queue until the destroy. Recorded, as an up of a stack a killed run
        half destroyed would build it again."""
        from tenantctl.operations.provision import apply_spec

        if self.move.old_stack_retired:
            return
        self.say(f"move {self.record.tenant_id}: retiring stack {self.from_stack} (its role sends to its queues "
                 "no more)")
        apply_spec(self.ws, self.spec().model_copy(update={"retired": True}), stack=self.from_stack)
        self.save(move=self.move.model_copy(update={"old_stack_retired": True}))

    def forward_queues(self, backwards: bool) -> None:
        """What is left in the queue and DLQ of the stack the move leaves, to
        the other stack's, right before they are destroyed: at finalize after
        the retirement (the longer after it, the surer IAM has applied the deny
        everywhere); at a rollback the jobs enqueued on the new queues since
        the switch."""
        sides = [(self.clients(self.move.from_cell)("sqs"), self.stack_resources(self.from_stack)),
                 (self.clients(self.move.to_cell)("sqs"), self.stack_resources(self.to_stack))]
        (source_sqs, source), (target_sqs, target) = sides[::-1] if backwards else sides
        moved = sum(queue_forward.forward(source_sqs, a, target_sqs, b)
                    for a, b in ((source.queue_url, target.queue_url), (source.dlq_url, target.dlq_url)))
        self.say(f"move {self.record.tenant_id}: {moved} messages left in the queues of the stack it leaves "
                 "forwarded")

    def final_backup(self) -> None:
        """One final backup of the new store per finalize: its id is recorded
        before anything after it, so a re-run skips it (a run killed between
        the backup and that write leaves one backup more, never none)."""
        from tenantctl.drills.backup import final_backup

        taken = self.move.final_backup_id
        if taken is not None:
            self.say(f"move {self.record.tenant_id}: final backup {taken} taken by an earlier run")
            return
        self.say(f"move {self.record.tenant_id}: final backup of the new store")
        manifest = final_backup(self.ws, self.record)
        self.save(move=self.move.model_copy(update={"final_backup_id": manifest.backup_id}))

    def carry_backups(self, old: TenantResources) -> None:
        """The backups taken before the move, their data keys wrapped under the
        new key (their dumps came with the prefix's objects), while the old key
        still opens them."""
        was = self.record.model_copy(update={"cell": self.move.from_cell, "region": old.region, "resources": old})
        [(source, target, _)] = self.prefixes()
        carried = backup_carry.carry(source, was, target, self.record, Rewrapper(self.record.tenant_id, *self.key()))
        self.say(f"move {self.record.tenant_id}: {len(carried)} backups re-wrapped under the new key")

    def rollback(self, verified: bool = True) -> None:
        """``verified``: unused here, the digests are compared either way."""
        if self.move.final_backup_id is not None:  # the old side is being removed (its queues refuse sends)
            raise InvalidInput(f"tenant {self.record.tenant_id!r}: a --finalize has begun removing the old side "
                               f"(stack {self.from_stack}); `tenantctl move {self.record.tenant_id} --finalize` "
                               "finishes it")
        if self.move.new_store is None:  # killed before the target stack was recorded
            self.say(f"move {self.record.tenant_id}: removing stack {self.to_stack}")
        elif self.move.phase in (MovePhase.switched, MovePhase.rolling_back):
            if self.move.phase is MovePhase.switched:
                self.phase(MovePhase.rolling_back)
            pinned = self.freeze(backwards=True)
            cell = self.ws.cell(self.move.from_cell)
            old = self.stack_resources(self.from_stack)
            self.save(cell=cell.name, account_id=cell.account_id, region=old.region,
                      stack=None if self.from_stack == self.record.tenant_id else self.from_stack, resources=old,
                      move=self.move.model_copy(update={"phase": MovePhase.preparing, "phase_at": utcnow(),
                                                        "switched_at": None, "window_ends_at": None}))
            self.result_extra["rows"] = self.verify(pinned, backwards=True)
        # Before the switch (or switched back): the old store takes writes, the target goes.
        self.capture(self.move.old_store, installed=False)
        self.set_writable([self.move.old_store], True)
        # No outputs: a run killed after destroying the target stack removed its objects before.
        if self.move.new_store is not None and self.ws.engine.outputs(self.to_stack):
            self.remove_objects(backwards=True)
            self.forward_queues(backwards=True)
        self.destroy(self.to_stack)
        to_cell = self.move.to_cell
        self.save(move=None)
        self.ws.registry.release_slot(to_cell, Tier.pooled)

    def destroy(self, stack: str) -> None:
        """The stack's resources (its key scheduled for deletion) and its file."""
        self.say(f"move {self.record.tenant_id}: destroying stack {stack}")
        self.ws.engine.destroy(stack)
        stack_file(self.ws.stacks_dir, stack).unlink(missing_ok=True)
