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

Pooled and dedicated tenants, to either tier, take this path; what the tier
changes is in ``keyed_tier`` (the target spec, dedicated -> dedicated on one
server refused) and ``deletion_protection`` (lifted before a dedicated stack
is destroyed). The relay needs no endpoint of its own for a dedicated store:
it connects to each side's StoreConnection with that cell's admin login.

A tenant's workspaces move with it (``owners``): the target stack declares
each again (own key, role of the generation, queues, secret, schema,
prefix); each schema has its own relay with a ``Rewrapper`` of its owner's
keys (a workspace's blobs are sealed in the context ``<id>/<ws>``), each
prefix is copied under its owner's new key, the freeze, digests, switch,
rollback and finalize (a final backup and carried backups per workspace)
cover every schema.

A tenant whose spec does not list the workspaces applied is refused with
exit 3 before anything is created.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tenant_runtime import models as runtime_models
from tenant_runtime.crypto import Envelope
from tenant_runtime.models import MovePhase, StoreConnection, TenantRecord, TenantResources, Tier, utcnow
from tenant_runtime.tables import SEALED_BY_TABLE
from tenantctl import naming
from tenantctl.drills.scope import workspace_view
from tenantctl.errors import DrillFailed, InvalidInput
from tenantctl.models import TenantSpec
from tenantctl.operations import deletion_protection
from tenantctl.operations.keyed_tier import keyed_target, one_server_refusal
from tenantctl.operations.mover import CATCH_UP_TIMEOUT, Mover, Progress
from tenantctl.stackconfig import stack_file
from tenantctl.transfer import backup_carry, prefix_sync, queue_forward, row_relay, store_sync
from tenantctl.transfer.rewrap import KmsKey, Rewrapper
from tenantctl.workspace import Workspace


def keyed_refusal(record: TenantRecord, spec: TenantSpec, tier: Tier) -> str | None:
    """Why the tenant cannot move to another account or region (None: it can);
    the tier's own refusal needs the cells (``keyed_tier.one_server_refusal``)."""
    if (problem := workspaces_refusal(record, spec)) is not None:
        return problem
    return naming.key_generation_problem(record.tenant_id, next_generation(record))


def workspaces_refusal(record: TenantRecord, spec: TenantSpec) -> str | None:
    """Why the tenant's workspaces cannot come along (None: they can): the
    target stack is built from the spec, the relay carries what the record
    has, so both must list the same workspaces; and each workspace's role of
    the next generation must fit IAM's names."""
    listed, applied = {w.name for w in spec.workspaces}, set(record.workspaces)
    if listed != applied:
        return (f"its spec lists workspaces {sorted(listed)} but {sorted(applied)} are applied: "
                "`tenantctl apply` first")
    generation = next_generation(record)
    return next((p for name in sorted(applied)
                 if (p := naming.ws_key_generation_problem(record.tenant_id, name, generation))), None)


def next_generation(record: TenantRecord) -> int:
    return (naming.stack_tenant(record.current_stack) or (record.tenant_id, 0))[1] + 1


def refuse_over_quota(ws: Workspace, target: TenantSpec, cell: str, apply_cell: bool = True) -> None:
    """The target cell's account walls for ``target`` (exit 11). On the sandbox
    a committed cell not applied yet is applied first (``ensure_cell``), as
    the run needs it; ``apply_cell=False`` (a preview, which creates nothing)
    leaves such a cell to be judged once it exists."""
    from tenantctl import preflight

    if apply_cell or ws.cell_outputs(cell).get("bucket"):
        preflight.check(target, ws.ensure_cell(cell), ws.cell_clients(cell))


def refuse_or_target(ws: Workspace, record: TenantRecord, spec: TenantSpec, tier: Tier,
                     cell: str, apply_cell: bool = True) -> tuple[TenantSpec, str]:
    """The target spec and its stack, after the refusals of this path: the
    tenant's workspaces, a dedicated store that cannot stand beside the
    tenant's (exit 3), the cell's fit (it takes the tier), the policy gate's
    spec rules (exit 8) and the target cell's quotas (``refuse_over_quota``)."""
    from tenantctl.placement import unfit
    from tenantctl.policy import refuse_unsafe_spec

    refused = f"tenant {record.tenant_id!r} cannot move to cell {cell!r}"
    target = keyed_target(spec, tier, ws.cell(cell), utcnow())
    problem = (keyed_refusal(record, spec, tier)
               or one_server_refusal(ws, record.tier, tier, record.cell, cell, apply_cell)
               or unfit(ws.cell(cell), target))
    if problem:
        raise InvalidInput(f"{refused}: {problem}")
    refuse_unsafe_spec(target)
    refuse_over_quota(ws, target, cell, apply_cell)
    return target, naming.stack_name(record.tenant_id, next_generation(record))


@dataclass(frozen=True)
class Owner:
    """The tenant or one of its workspaces, with its resources in the stack the
    move leaves (``old``) and in its target (``new``): each owner's rows are
    re-wrapped under its own new key, in its own KMS context (``scope``)."""

    scope: str  # the tenant id, or a workspace's `<id>/<ws>` (what its blobs are sealed for)
    workspace: str | None
    old: TenantResources | runtime_models.WorkspaceResources
    new: TenantResources | runtime_models.WorkspaceResources

    @property
    def label(self) -> str:
        """What the owner's tables are reported under (the tenant's: their own names)."""
        return "" if self.workspace is None else f"{self.workspace}/"


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
        self.rewrappers: dict[tuple[bool, str], Rewrapper] = {}  # by direction (backwards) and owner
        # Each stack's outputs as this run read them ({}: not built); forgotten where a step applies or
        # destroys the stack (``changed``), so no step after it works from outputs before it.
        self.stack_outputs: dict[str, dict[str, Any]] = {}

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

    def outputs(self, stack: str) -> dict[str, Any]:
        """``stack``'s outputs, read once per run until a step changes the stack."""
        if stack not in self.stack_outputs:
            self.stack_outputs[stack] = self.ws.engine.outputs(stack)
        return self.stack_outputs[stack]

    def changed(self, stack: str) -> None:
        super().changed(stack)
        self.stack_outputs.pop(stack, None)

    def stack_resources(self, stack: str) -> TenantResources:
        return TenantResources.model_validate(self.outputs(stack))

    def clients(self, cell: str) -> Any:
        return self.ws.cell_clients(cell)

    def owners(self) -> list[Owner]:
        """The tenant, then each workspace (by name), on both sides."""
        old, new = self.stack_resources(self.from_stack), self.stack_resources(self.to_stack)
        return [Owner(self.record.tenant_id, None, old, new),
                *(Owner(runtime_models.workspace_key(self.record.tenant_id, name), name, res, new.workspaces[name])
                  for name, res in sorted(old.workspaces.items()))]

    def key(self, owner: Owner, backwards: bool = False) -> tuple[KmsKey, KmsKey]:
        """(source key, target key) of ``owner`` in the relay's direction."""
        old = KmsKey(self.clients(self.move.from_cell)("kms"), owner.old.kms_key_arn)
        new = KmsKey(self.clients(self.move.to_cell)("kms"), owner.new.kms_key_arn)
        return (new, old) if backwards else (old, new)

    def rewrapper(self, owner: Owner, backwards: bool) -> Rewrapper:
        """One per owner and direction for the run: the freeze reuses the copy's keys."""
        if (backwards, owner.scope) not in self.rewrappers:
            self.rewrappers[backwards, owner.scope] = Rewrapper(owner.scope, *self.key(owner, backwards))
        return self.rewrappers[backwards, owner.scope]

    def schemas(self, store: StoreConnection) -> list[StoreConnection]:
        """``store`` (the tenant's schema on one side) and its workspaces'
        schemas beside it, in the same database (none while that side's stack
        is not built)."""
        stack = self.from_stack if store == self.move.old_store else self.to_stack
        outputs = self.outputs(stack)
        workspaces = TenantResources.model_validate(outputs).workspaces if outputs else {}
        return [store, *(res.store for _, res in sorted(workspaces.items()))]

    def stores(self, backwards: bool = False) -> tuple[StoreConnection, StoreConnection]:
        new = self.move.new_store
        assert new is not None
        return (new, self.move.old_store) if backwards else (self.move.old_store, new)

    @contextmanager
    def relaying(self, backwards: bool = False) -> Iterator[row_relay.Relays]:
        """The relays old -> new (or back) of the tenant's schema and each
        workspace's, sealed columns re-wrapped between each owner's two keys."""
        source, target = self.stores(backwards)
        with self.connect(source) as src, self.connect(target) as dst:
            yield row_relay.Relays(
                row_relay.Relay(src, owner.new.store if backwards else owner.old.store, dst,
                                owner.old.store if backwards else owner.new.store,
                                self.rewrapper(owner, backwards).rewrap_column) for owner in self.owners())

    def spec(self) -> TenantSpec:
        """The spec the move leaves (its stack file stays until finalize)."""
        return self.stack_spec(self.from_stack).model_copy(update={"cell": self.move.from_cell})

    def target(self) -> TenantSpec:
        return self.stack_spec(self.to_stack)

    def resumed_target(self) -> TenantSpec:
        return keyed_target(self.spec(), self.move.to_tier, self.ws.cell(self.move.to_cell), self.move.started_at)

    def prefixes(self, backwards: bool = False) -> list[tuple[prefix_sync.Place, prefix_sync.Place, str]]:
        """The tenant's prefix and each workspace's (``owners`` order) in each
        cell's bucket, each with its side's S3 client; the key is the target's
        owner's (objects are copied under it). Across accounts each object is
        read and written by its own side's client."""
        old, new = self.stack_resources(self.from_stack), self.stack_resources(self.to_stack)
        apart = naming.account_of_arn(old.kms_key_arn) != naming.account_of_arn(new.kms_key_arn)
        old_s3, new_s3 = self.clients(self.move.from_cell)("s3"), self.clients(self.move.to_cell)("s3")
        out = []
        for owner in self.owners():
            there = prefix_sync.Place(old.bucket, owner.old.prefix, client=old_s3, other_account=apart)
            here = prefix_sync.Place(new.bucket, owner.new.prefix, client=new_s3, other_account=apart)
            out.append((here, there, owner.old.kms_key_arn) if backwards else (there, here, owner.new.kms_key_arn))
        return out

    def capture(self, store: StoreConnection, installed: bool = True) -> None:
        """The change capture on ``store``'s schema and its workspaces'; removed,
        none is left to remove in a database dropped already (``leaving``)."""
        with self.connect(store) if installed else self.leaving(store) as conn:
            if conn is None:
                return
            for schema in self.schemas(store):
                (row_relay.install if installed else row_relay.remove)(conn, schema)

    def set_writable(self, stores: list[StoreConnection], writable: bool) -> None:
        """The tenant's role's writes on each of ``stores``, and its workspaces' roles' beside them."""
        super().set_writable([schema for store in stores for schema in self.schemas(store)], writable)

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
        for owner in self.owners():  # each workspace's role too
            secret = owner.new.store.secret_arn
            password = json.loads(new_sm.get_secret_value(SecretId=secret)["SecretString"])["password"]
            current = json.loads(old_sm.get_secret_value(SecretId=owner.old.store.secret_arn)["SecretString"])
            if current.get("password") != password:
                old_sm.put_secret_value(SecretId=owner.old.store.secret_arn,
                                        SecretString=json.dumps({**current, "password": password}))

    def bound_login_again(self) -> None:
        """Two stores on one PostgreSQL server (the sandbox's cells) share the
        tenant's database roles, and the target stack set their CONNECTION
        LIMIT for its tier: a rollback, which destroys that stack and leaves
        the roles to the old store, puts back the limit the old stack declares
        (a dedicated store's none, a pooled one's bound). Stores on two
        servers (AWS) are left alone."""
        from psycopg import sql

        old, new = self.move.old_store, self.move.new_store
        if new is None or (old.endpoint, old.port) != (new.endpoint, new.port):
            return
        limit = self.spec().connection_limit(self.ws.cell_outputs(self.move.from_cell).get("db_connection_limit"))
        with self.connect(old) as conn:
            for store in self.schemas(old):  # each workspace's role too
                conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(
                    sql.Identifier(store.role), sql.Literal(limit)))

    # -- forward ----------------------------------------------------------------
    def prepare(self, target: TenantSpec) -> None:
        self.say(f"move {self.record.tenant_id}: building stack {self.to_stack} in cell {self.move.to_cell}")
        applied = self.apply(target, stack=self.to_stack)
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

    def switch(self, window: timedelta) -> None:
        pinned = self.freeze(backwards=False)
        frozen_at = self.move.phase_at
        new = self.stack_resources(self.to_stack)
        cell = self.ws.cell(self.move.to_cell)
        now = utcnow()
        self.save(tier=self.move.to_tier, cell=cell.name, account_id=cell.account_id, region=new.region,
                  stack=self.to_stack, resources=new,
                  move=self.move.model_copy(update={"phase": MovePhase.switched, "phase_at": now,
                                                    "switched_at": now, "window_ends_at": now + window}))
        self.result_extra["freeze_seconds"] = (utcnow() - frozen_at).total_seconds()
        self.say(f"move {self.record.tenant_id}: switched to stack {self.to_stack} in cell {cell.name} "
                 f"(writes refused {self.result_extra['freeze_seconds']:.2f} s); the old store is read-only")
        self.say(f"move {self.record.tenant_id}: verifying (digests as of the freeze, each under its own key)")
        try:
            self.result_extra["rows"] = self.verify(pinned)
            self.result_extra["verified"] = True
        except DrillFailed:
            self.rollback()  # back to the old store, which kept every write until the freeze
            raise

    def switched(self) -> None:
        """Nothing: the new stack's secrets name the new store from its build."""

    def serving(self) -> list[StoreConnection]:
        assert self.move.new_store is not None
        return self.schemas(self.move.new_store)

    def pin_again(self) -> tuple[Any, Any]:
        """The new store frozen (``store_sync.freeze``), the changes captured
        there since the switch relayed to the old one (re-wrapped under the old
        key, as a rollback's freeze relays them), then (new, old) pinned."""
        new, old = self.stores(backwards=True)
        self.runtimes_told()
        with self.connect(new) as conn:
            store_sync.freeze(conn, self.schemas(new), CATCH_UP_TIMEOUT)
        with self.relaying(backwards=True) as relay:
            relay.catch_up()
        return store_sync.pin_both(self.connect, new, old)

    def compare_again(self, pinned: tuple[Any, Any]) -> dict[str, Any]:
        return self.verify(pinned, backwards=True)

    def freeze(self, backwards: bool) -> tuple[Any, Any]:
        """The move's record frozen (``rolling_back`` backwards, else ``freezing``: ``frozen``),
        writes on the source revoked and those under way waited out
        (``store_sync.freeze``, as within an account), the relay drained,
        the target's identities advanced and its writes allowed; forward, the capture the other way installed on the
        new store first (a rollback carries the writes made after the
        switch). Returns snapshots of (source, target) pinned as of now."""
        source, target = self.stores(backwards)
        # A writer that never ends (the freeze times out) or an interrupt (Ctrl-C, SIGTERM) before the
        # target is writable: the freeze ends, the source writable again, nothing switched.
        with self.thawed_if_stopped([source], MovePhase.switched if backwards else MovePhase.copying):
            self.frozen(MovePhase.rolling_back if backwards else MovePhase.freezing)
            self.sync_objects(backwards)  # what changed since the last pass (writes are refused from here)
            self.runtimes_told()
            with self.connect(source) as conn:
                store_sync.freeze(conn, self.schemas(source), CATCH_UP_TIMEOUT)
            with self.relaying(backwards) as relay:
                relay.catch_up()
            with self.connect(target) as conn:
                for schema in self.schemas(target):
                    row_relay.advance_identities(conn, schema)
            if not backwards:
                self.capture(target)
            pinned = store_sync.pin_both(self.connect, source, target)
        self.set_writable([target], True)
        return pinned

    def verify(self, pinned: tuple[Any, Any], backwards: bool = False) -> dict[str, int]:
        """Both pinned snapshots' digests, each opened with its own key; a
        difference raises DrillFailed (exit 9)."""
        try:
            found = [self.digests(conn, side, backwards) for side, conn in enumerate(pinned)]
        finally:
            for conn in pinned:
                conn.close()
        if found[0] != found[1]:
            differ = sorted(t for t in found[0] if found[0][t] != found[1].get(t))
            raise DrillFailed(f"tenant {self.record.tenant_id!r}: the target store differs from the source as of "
                              f"the freeze in {', '.join(differ)}")
        return {table: count for table, (count, _) in found[0].items()}

    def digests(self, conn: Any, side: int, backwards: bool) -> dict[str, tuple[int, str]]:
        """``row_relay.digests`` of every owner's schema on one side (0: the
        source) of the pinned ``conn``, each opened with that owner's key
        there; a workspace's tables reported as `<ws>/<table>`."""
        found: dict[str, tuple[int, str]] = {}
        for owner in self.owners():
            stores = (owner.new.store, owner.old.store) if backwards else (owner.old.store, owner.new.store)
            open_blob = opener(owner.scope, self.key(owner, backwards)[side])
            found |= {owner.label + table: digest
                      for table, digest in row_relay.digests(conn, stores[side], open_blob).items()}
        return found

    # -- finalize / rollback ----------------------------------------------------
    def finalize(self) -> None:
        outputs = self.outputs(self.from_stack)
        if outputs:
            self.leave(TenantResources.model_validate(outputs))
        else:  # a run killed after destroying the old stack had done every step before it, not the last
            stack_file(self.ws.stacks_dir, self.from_stack).unlink(missing_ok=True)
        target = self.target()
        self.finish(target, self.apply(target, stack=self.to_stack))

    def leave(self, old: TenantResources) -> None:
        """The old side gone, after a final backup of the new store: the old
        stack retired, the capture removed from both stores, late objects
        carried, backups re-wrapped, the old prefix removed, the old queues'
        messages forwarded, the old stack destroyed. Each step finds its work
        done by a killed run (or does it again); once the destroy began, a
        re-run goes straight to it."""
        if self.move.old_stack_destroying:
            self.destroy(self.from_stack)
            return
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
        self.save(move=self.move.model_copy(update={"old_stack_destroying": True}))
        self.destroy(self.from_stack)

    def retire(self) -> None:
        """The old stack applied ``retired``: its role's sends to the old
        queues denied, so a worker still holding the old record fails closed
        on enqueue (and re-reads the registry) instead of leaving a message
        there after the forward. Its other rights stay: workers drain the old
        queue until the destroy. Recorded, as an up of a stack a killed run
        half destroyed would build it again."""
        if self.move.old_stack_retired:
            return
        self.say(f"move {self.record.tenant_id}: retiring stack {self.from_stack} (its role sends to its queues "
                 "no more)")
        self.apply(self.spec().model_copy(update={"retired": True}), stack=self.from_stack)
        self.save(move=self.move.model_copy(update={"old_stack_retired": True}))

    def forward_queues(self, backwards: bool) -> None:
        """What is left in the queue and DLQ of the stack the move leaves
        (the tenant's and each workspace's), to the other stack's, right before
        they are destroyed: at finalize after the retirement (the longer after
        it, the surer IAM has applied the deny everywhere); at a rollback the
        jobs enqueued on the new queues since the switch."""
        sqs = [self.clients(self.move.from_cell)("sqs"), self.clients(self.move.to_cell)("sqs")]
        source_sqs, target_sqs = sqs[::-1] if backwards else sqs
        moved = 0
        for owner in self.owners():
            source, target = (owner.new, owner.old) if backwards else (owner.old, owner.new)
            moved += sum(queue_forward.forward(source_sqs, a, target_sqs, b)
                         for a, b in ((source.queue_url, target.queue_url), (source.dlq_url, target.dlq_url)))
        self.say(f"move {self.record.tenant_id}: {moved} messages left in the queues of the stack it leaves "
                 "forwarded")

    def final_backup_scope(self) -> tuple[TenantRecord, list[str], str]:
        """The new store's (each workspace's under its new key): the old one
        goes with its stack, its backups carried under the new key."""
        return self.record, sorted(self.record.workspaces), "the new store"

    def carry_backups(self, old: TenantResources) -> None:
        """The backups taken before the move, their data keys wrapped under the
        new key (their dumps came with the prefix's objects), while the old key
        still opens them."""
        was = self.record.model_copy(update={"cell": self.move.from_cell, "region": old.region, "resources": old})
        for owner, (source, target, _) in zip(self.owners(), self.prefixes(), strict=True):
            # A workspace's backups: its prefix, its key, the tenant's context naming the workspace.
            rewrapper = Rewrapper(self.record.tenant_id, *self.key(owner))
            carried = backup_carry.carry(source, workspace_view(was, owner.workspace), target,
                                         workspace_view(self.record, owner.workspace), rewrapper)
            self.say(f"move {self.record.tenant_id}: {len(carried)} backups of {owner.workspace or 'the tenant'} "
                     "re-wrapped under the new key")

    def old_side(self) -> str:
        return f"stack {self.from_stack}"

    def rollback(self, verified: bool = True) -> None:
        """``verified``: unused here, the digests are compared either way."""
        self.refuse_rollback_once_finalizing()  # the old side's queues refuse sends from then on
        if self.move.new_store is None:  # killed before the target stack was recorded
            self.say(f"move {self.record.tenant_id}: removing stack {self.to_stack}")
        elif self.move.phase in (MovePhase.switched, MovePhase.rolling_back):
            pinned = self.freeze(backwards=True)
            cell = self.ws.cell(self.move.from_cell)
            old = self.stack_resources(self.from_stack)
            self.save(tier=self.move.from_tier, cell=cell.name, account_id=cell.account_id, region=old.region,
                      stack=None if self.from_stack == self.record.tenant_id else self.from_stack, resources=old,
                      move=self.move.model_copy(update={"phase": MovePhase.preparing, "phase_at": utcnow(),
                                                        "switched_at": None, "window_ends_at": None}))
            self.result_extra["rows"] = self.verify(pinned, backwards=True)
        # Before the switch (or switched back): the old store takes writes, the target goes.
        self.capture(self.move.old_store, installed=False)
        self.set_writable([self.move.old_store], True)
        # No outputs: a run killed after destroying the target stack removed its objects before.
        if self.move.new_store is not None and self.outputs(self.to_stack):
            self.remove_objects(backwards=True)
            self.forward_queues(backwards=True)
        self.destroy(self.to_stack)
        self.bound_login_again()
        self.end(self.move.to_cell, self.move.to_tier)

    def destroy(self, stack: str) -> None:
        """The stack's resources (its key scheduled for deletion; a dedicated
        store's protection lifted first) and its file."""
        self.say(f"move {self.record.tenant_id}: destroying stack {stack}")
        try:
            deletion_protection.lift(self.ws, stack)
            self.ws.engine.destroy(stack)
            stack_file(self.ws.stacks_dir, stack).unlink(missing_ok=True)
        finally:  # half destroyed is changed too
            self.changed(stack)
