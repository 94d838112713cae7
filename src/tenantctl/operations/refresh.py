"""Drift: every resource of each tenant (and of each cell, for `--all` and
`--cell`) read live and compared with what its stack's state recorded (per
resource, per property: expected -> live), the resources deleted out of band,
and orphans: resources tagged as the tenant's
(``managed-by=tenantctl`` + ``tenant=<id>``) that its state does not know,
ingress rules added out of band to a security group of its own whose rules its
stack declares one by one (a dedicated tenant's database group), and policies
put on or attached to one of its roles out of band.
Among them, one another tenant's name or urn tag claims is mis-tagged: it is
reported and left for a person, never removed as this tenant's.

The engine reads the resources (``Engine.refresh``); the orphans come from one
tag inventory of the account (``tenantctl.inventory``) shared by every tenant
of the run. Tenants are refreshed in threads: a refresh runs no program, it
only reads, so 200 tenants take seconds on the sandbox. Nothing is changed;
``apply --refresh`` and ``provision`` of an existing tenant repair
(``remove_orphans`` is their half for orphans).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from tenantctl import inventory
from tenantctl.engines.base import ChangeSet, Op, PropertyDiff, ResourceChange
from tenantctl.errors import CHANGES_PENDING, NotConfirmed, contained
from tenantctl.models import TenantRecord
from tenantctl.naming import cell_stack
from tenantctl.operations.fleet_threads import Watch, in_threads, require_parallel
from tenantctl.operations.selection import in_defined_cells, select
from tenantctl.registry import DEAD, describe_lock, lock_holder, provision_failed
from tenantctl.registry_cells import lease_of, up_failed_of
from tenantctl.timestamps import utc_minute
from tenantctl.workspace import Workspace

NOUNS = {"ec2:security-group-rule": "unmanaged ingress rule", "iam:role-policy": "unmanaged role policy",
         "iam:role-policy-attachment": "unmanaged role policy", "kms:grant": "unmanaged key grant",
         "sqs:queue-policy": "unmanaged queue policy", "secretsmanager:resource-policy": "unmanaged secret policy",
         "sns:subscription": "unmanaged topic subscription", "sns:topic-policy": "unmanaged topic policy"}


class Orphan(BaseModel):
    """A resource tagged as the tenant's that its state does not know, or an
    ingress rule or a role policy added out of band to one of the stack's own
    security groups or roles (``inventory.UnmanagedRule``,
    ``inventory.UnmanagedRolePolicy``)."""

    arn: str
    kind: str
    name: str
    removable: bool  # tenantctl removes it on repair (else a person must)
    conflict: str | None = None  # why it is another's though tagged as the tenant's: mis-tagged, never removed
    removed: str | None = None  # what a repair did with it
    kept: str | None = None  # why a repair left it on purpose (its removal was not confirmed)
    error: str | None = None  # why its removal failed: the repair fails

    @classmethod
    def of(cls, tagged: inventory.Tagged, tenant_id: str) -> Orphan:
        conflict = tagged.foreign(tenant_id)
        return cls(arn=tagged.arn, kind=tagged.kind, name=tagged.name, conflict=conflict,
                   removable=tagged.removable and conflict is None)

    @property
    def noun(self) -> str:
        if self.conflict:
            return "mis-tagged resource"
        return NOUNS.get(self.kind, "orphan resource")

    def fate(self, preview: bool) -> str:
        """What was (or would be) done with it, as the summaries say it."""
        if self.conflict:
            return f"not this tenant's ({self.conflict}): left for a person, never removed"
        if self.removed:
            return self.removed
        if self.error:
            return f"removal failed: {self.error}"
        if self.kept:
            return f"not removed: {self.kept}"
        return "would be removed" if preview and self.removable else "left for a person"


def removal_failures(orphans: Iterable[Orphan]) -> str | None:
    """What a repair whose orphan removals failed reports (its ``error``), or None."""
    failed = [o for o in orphans if o.error]
    if not failed:
        return None
    return (f"{len(failed)} orphan resource(s) could not be removed: "
            + "; ".join(f"{o.kind} {o.name} ({(o.error or '').rstrip('.')})" for o in failed))


SKIPPED = "skipped: "  # a note's start when the stack was left unread, then why


class StackDrift(BaseModel):
    ok: bool = True
    error: str | None = None
    note: str = ""  # why it was skipped (``SKIPPED``), or what could not be checked
    checked: int = 0  # resources read
    resources: list[ResourceChange] = Field(default_factory=list)  # drifted: update (with diffs) or delete
    orphans: list[Orphan] = Field(default_factory=list)
    seconds: float = 0.0
    # A tenant's open move's (``move_hold``): `apply` leaves the tenant alone and `provision` refuses
    # it (exit 5) until the move ends, so its drift is repaired only after that.
    held: str | None = None
    # A tenant whose last provision failed (``pending_repair``): drift whatever the read found.
    pending: str | None = None

    @property
    def drifted(self) -> bool:
        return bool(self.resources or self.orphans or self.pending)

    @property
    def skipped(self) -> bool:
        return self.note.startswith(SKIPPED)

    def headline(self) -> str:
        """``2 changed, 1 deleted out of band, 1 no longer declared, 1 missing, 1 orphan(s)``
        (or ``no drift``; ``not read`` for a stack left unread, which is no evidence of no drift)."""
        mistagged = sum(1 for o in self.orphans if o.conflict)
        undeclared = sum(1 for r in self.resources if no_longer_declared(r))
        parts = [f"{n} {what}" for n, what in (
            (sum(1 for r in self.resources if r.op is Op.update), "changed"),
            (sum(1 for r in self.resources if r.op is Op.delete) - undeclared, "deleted out of band"),
            (undeclared, "no longer declared"),
            (sum(1 for r in self.resources if r.op is Op.create), "missing"),
            (len(self.orphans) - mistagged, "orphan(s)"), (mistagged, "mis-tagged")) if n]
        if self.pending:
            parts.append("repair pending")
        return ", ".join(parts) or ("not read" if self.skipped else "no drift")


class TenantDrift(StackDrift):
    tenant_id: str
    # The refresh itself, for `apply --refresh --preview` to preview the repair from (not read again).
    read: ChangeSet | None = Field(default=None, exclude=True)

    @property
    def name(self) -> str:
        return self.tenant_id


class CellDrift(StackDrift):
    """A cell's platform stack read live (its tagged leftovers are audit's: its only orphans are
    ingress rules added out of band to its shared database's group)."""

    cell: str

    @property
    def name(self) -> str:
        return f"cell {self.cell}"


class RefreshSummary(BaseModel):
    seconds: float
    cells: list[CellDrift] = Field(default_factory=list)
    tenants: list[TenantDrift]

    @property
    def stacks(self) -> list[StackDrift]:
        return [*self.cells, *self.tenants]

    @property
    def drifted(self) -> list[StackDrift]:
        return [t for t in self.stacks if t.drifted]

    @property
    def failed(self) -> list[StackDrift]:
        return [t for t in self.stacks if not t.ok]

    @property
    def counts(self) -> dict[str, int]:
        return {"cells": len(self.cells), "tenants": len(self.tenants), "drifted": len(self.drifted),
                "failed": len(self.failed), "skipped": sum(t.skipped for t in self.stacks),
                "resources": sum(len(t.resources) for t in self.stacks),
                "orphans": sum(len(t.orphans) for t in self.stacks)}

    def exit_code(self) -> int:
        """0 no drift, 12 drift, 1 a cell or tenant could not be refreshed (as `apply --preview`)."""
        if self.failed:
            return 1
        return CHANGES_PENDING if self.drifted else 0


# -- orphans ------------------------------------------------------------------------

def _known(record: TenantRecord, changes: ChangeSet) -> tuple[set[str], set[str]]:
    """(ARNs, urns) of what the tenant's state and record know."""
    arns = {c.arn for c in changes.changes if c.arn}
    res = record.resources
    if res is not None:  # the record's word too: never call the tenant's (or a workspace's) key or role an orphan
        for owner in (res, *res.workspaces.values()):
            arns |= {owner.kms_key_arn, owner.role_arn, owner.store.secret_arn}
    urns = {c.urn for c in changes.changes if c.urn}
    return arns, urns


def orphans_of(ws: Workspace, record: TenantRecord, changes: ChangeSet, tagged: Iterable[inventory.Tagged]
               ) -> tuple[list[inventory.Tagged], str, list[inventory.SubscriptionDrift]]:
    """Tagged resources of the tenant that neither its state nor its record
    knows, a note when that cannot be told (an engine naming no ARNs), and where
    its alarm topics' subscriptions differ from what its cell declares
    (``inventory.SubscriptionDrift``: declared ones its stack holds no resource for, held ones
    declared no more; each stack's against the cell it is applied in, ``Workspace.stack_cell``)."""
    if changes.changes and not any(c.arn for c in changes.changes):
        return [], "orphans not checked: this engine's refresh names no resource ARNs", []
    arns, urns = _known(record, changes)
    mine = [t for t in tagged if t.tenant == record.tenant_id and not t.retained]  # snapshots are backups
    clients = ws.clients_for(record)
    candidates = [t for t in inventory.unknown(mine, arns, urns) if inventory.is_live(clients, t)]
    # Access added out of band: its current stack's alone (in an open move the other stack is the
    # move's until it ends, as its repairs are); of the other only its alarm subscriptions, below.
    current = [c for c in changes.changes if inventory.urn_stack(c.urn) in (None, record.current_stack)]
    found = _unmanaged(clients, record.region, ChangeSet(stack=changes.stack, changes=current),
                       _declared(ws, record, record.current_stack, current))
    drift = [t for t in found if isinstance(t, inventory.SubscriptionDrift)]
    for stack in record.stacks[1:]:  # an open move's other stack: its topics' subscriptions alone
        theirs = [c for c in changes.changes if inventory.urn_stack(c.urn) == stack
                  and c.type in (inventory.TOPIC, inventory.SUBSCRIPTION)]
        declared, cell = _declared(ws, record, stack, theirs), ws.stack_cell(record, stack)
        if declared is not None and cell is not None:
            there = ws.client.in_account(cell.account_role_arn, record.region)
            drift += [t for t in _unmanaged(there, record.region, ChangeSet(stack=stack, changes=theirs), declared)
                      if isinstance(t, inventory.SubscriptionDrift)]
    return candidates + [t for t in found if not isinstance(t, inventory.SubscriptionDrift)], "", drift


def _declared(ws: Workspace, record: TenantRecord, stack: str,
              changes: list[ResourceChange]) -> list[tuple[str, str]] | None:
    """The alarm subscriptions (protocol, endpoint) of the cell ``stack`` is applied in, when its
    ``changes`` hold an alarm topic and that cell is defined here; None: not judged."""
    cell = ws.stack_cell(record, stack) if any(c.type == inventory.TOPIC for c in changes) else None
    return [(s.protocol, s.endpoint) for s in cell.alarm_subscriptions] if cell is not None else None


DECLARED = "subscription"  # the diff path of an alarm subscription's drift against its cell's list


def missing_subscription(declared: inventory.DeclaredSubscription) -> ResourceChange:
    """A declared alarm subscription its topic lacks, as drift: what the repair creates."""
    return ResourceChange(op=Op.create, type=inventory.SUBSCRIPTION, name=declared.resource, arn=declared.arn,
                          diffs=[PropertyDiff(path=DECLARED, old=f"{declared.protocol} {declared.endpoint}",
                                              new=None)])


def undeclared_subscription(held: inventory.UndeclaredSubscription) -> ResourceChange:
    """A subscription the stack holds whose endpoint its cell declares no more, as drift: what the
    repair deletes (declared: nothing; live: the endpoint)."""
    return ResourceChange(op=Op.delete, type=inventory.SUBSCRIPTION, name=held.resource, arn=held.arn,
                          id=held.subscription,
                          diffs=[PropertyDiff(path=DECLARED, old=None, new=f"{held.protocol} {held.endpoint}")])


def no_longer_declared(change: ResourceChange) -> bool:
    """A drift's delete the repair does (``undeclared_subscription``), not a resource deleted out of band."""
    return change.op is Op.delete and any(d.path == DECLARED and d.old is None for d in change.diffs)


def remove_orphans(ws: Workspace, record: TenantRecord, changes: ChangeSet,
                   tagged: list[inventory.Tagged]) -> list[Orphan]:
    """Repair's half for orphans: those of ``tagged`` (the tenant's tag scan,
    taken before the up) its state does not know after the up (``changes``) are
    removed where tenantctl may; the rest (mis-tagged ones among them) are
    reported for a person. A removal that fails is on its orphan's ``error``."""
    return _remove(ws, ws.clients_for(record), record.tenant_id, orphans_of(ws, record, changes, tagged)[0])


def _unmanaged(clients: inventory.Clients, region: str, changes: ChangeSet,
               subscriptions: list[tuple[str, str]] | None = None) -> list[inventory.Tagged]:
    """What was added out of band to the stack's own groups, roles, keys, queues, secrets and topics:
    ingress rules, role policies, key grants, resource policies, topic subscriptions (not of a
    resource deleted out of band: the repair makes it again with what it declares alone), and
    (``subscriptions``: its cell's declared alarm subscriptions) those its topics' stack lacks."""
    live = [(c.type, c.arn, c.id, c.name) for c in changes.changes if c.op is not Op.delete]
    return [*inventory.unmanaged_rules(clients, region, ((c.type, c.arn) for c in changes.changes)),
            *inventory.unmanaged_role_policies(clients, [(t, a, i) for t, a, i, _ in live]),
            *inventory.unmanaged_access(clients, region, live, subscriptions,
                                        [(c.id, c.name) for c in changes.changes if c.type == inventory.SUBSCRIPTION])]


def cell_rules(ws: Workspace, cell: str, changes: ChangeSet) -> list[inventory.Tagged]:
    """Ingress rules and role policies added out of band to the cell's own groups (its shared
    database's) and roles: a cell's only orphans (its tagged leftovers are the audit's)."""
    return _unmanaged(ws.cell_clients(cell), ws.cell(cell).region, changes)


def revoke_cell_rules(ws: Workspace, cell: str, changes: ChangeSet) -> list[Orphan]:
    """A cell's repair: what ``cell_rules`` finds after its up, revoked or removed."""
    return _remove(ws, ws.cell_clients(cell), cell_stack(cell), cell_rules(ws, cell, changes))


def _remove(ws: Workspace, clients: inventory.Clients, stack: str, found: list[inventory.Tagged]) -> list[Orphan]:
    """``found`` removed where tenantctl may, once the confirmation rule allows (refused: each kept, reported)."""
    from botocore.exceptions import BotoCoreError, ClientError

    orphans = [(t, Orphan.of(t, stack)) for t in found]
    removable = [(t, o) for t, o in orphans if o.removable]
    refused = ""
    if removable and ws.approve is not None:  # deleting them follows the confirmation rule too
        try:
            ws.approve(ChangeSet(stack=stack, changes=[
                ResourceChange(op=Op.delete, type=f"orphan {t.kind}", name=t.name, arn=t.arn) for t, _ in removable]))
        except NotConfirmed as exc:  # the stack is still repaired; the orphans stay, reported
            refused = str(exc)
    for resource, orphan in removable:
        if refused:
            orphan.kept = refused
            continue
        try:
            orphan.removed = inventory.remove(clients, resource)
        except (ClientError, BotoCoreError) as exc:  # the stack itself is repaired; the callers fail its run
            orphan.error = str(exc)
    return [o for _, o in orphans]


# -- one tenant, then the fleet -------------------------------------------------------

def move_hold(record: TenantRecord) -> str | None:
    """Why the tenant is its open move's until the move ends, or None."""
    move = record.move
    if move is None:
        return None
    until = f", rollback window until {utc_minute(move.window_ends_at)}" if move.window_ends_at else ""
    return (f"moving ({move.phase.value}{until}): `tenantctl move {record.tenant_id} --finalize` (or "
            "`--rollback`) ends it")


def pending_repair(record: TenantRecord) -> str | None:
    """Why the tenant is drift though live and recorded may agree, or None: its last provision
    failed. A repair's up refreshes first and records the live (drifted) values as its state before
    it writes anything (Pulumi's `up --refresh` does, and so does the LocalEngine), so an up that
    failed part-way leaves a state that agrees with the drift it did not repair."""
    if not provision_failed(record):
        return None
    what = "repair" if record.resources is not None else "provision"
    error = f": {record.last_error}" if record.last_error else ""
    return (f"last {what} failed at {utc_minute(record.updated_at)}{error}; its resources may differ from its "
            f"stack until one succeeds: re-run `tenantctl provision {record.tenant_id}` (or `tenantctl apply "
            "--refresh`)")


def pending_cell_repair(item: dict[str, Any] | None) -> str | None:
    """``pending_repair`` of a cell, from its counter ``item``: its last up failed after its first change."""
    failed = up_failed_of(item)
    if failed is None:
        return None
    return (f"last up {failed}; its resources may differ from its stack until one succeeds: `tenantctl apply "
            "--refresh` (or `tenantctl apply`) repairs it")


def refresh_tenant(ws: Workspace, record: TenantRecord, tagged: list[inventory.Tagged]) -> TenantDrift:
    started = time.monotonic()
    result = TenantDrift(tenant_id=record.tenant_id, held=move_hold(record))
    # Only a live holder is waited for: a killed run's half-done work is what a drift read is for.
    if record.lock is not None and lock_holder(record.lock) not in DEAD:
        result.note = SKIPPED + describe_lock(record.tenant_id, record.lock)
        return result
    result.pending = pending_repair(record)
    with contained(result):
        changes = result.read = refresh_stacks(ws, record)
        result.checked = len(changes.changes)
        result.resources = [c for c in changes.changes if c.op is not Op.same]
        found, result.note, declared = orphans_of(ws, record, changes, tagged)
        result.orphans = [Orphan.of(t, record.tenant_id) for t in found]
        held = [d for d in declared if isinstance(d, inventory.UndeclaredSubscription)]
        wanted = [d for d in declared if isinstance(d, inventory.DeclaredSubscription)]
        result.resources += [*map(undeclared_subscription, held),
                             *(missing_subscription(d) for d in wanted if not d.subscription)]
        adopted = [d.describe() for d in wanted if d.subscription]
        if adopted:
            result.note = "; ".join(filter(None, [result.note, (
                f"declared alarm subscription(s) {', '.join(adopted)} not in its stack yet: the next `tenantctl "
                "apply` (or `provision ID`) adopts them")]))
    result.seconds = round(time.monotonic() - started, 3)
    return result


def refresh_stacks(ws: Workspace, record: TenantRecord) -> ChangeSet:
    """Every stack of the tenant read live, as one change set: while a move to
    a second stack is open, the stack it leaves or goes to too (its resources
    are the tenant's, not orphans), once that stack has a state (a move killed
    before building it has none: nothing to drift, where the current stack
    without one is an error). Each stack's state is read once, by its refresh."""
    reads = [ws.engine.refresh(stack, absent_ok=stack != record.current_stack) for stack in record.stacks]
    if len(reads) == 1:  # the engine's own, with the state it read against (a preview may reuse it)
        return reads[0]
    return ChangeSet(stack=record.current_stack, changes=[c for read in reads for c in read.changes])


def refresh_many(ws: Workspace, records: list[TenantRecord], parallel: int = 8,
                 on_result: Callable[[TenantDrift], None] | None = None) -> list[TenantDrift]:
    """Drift of ``records``, ``parallel`` tenants at a time, sorted by id."""
    require_parallel(parallel)
    if not records:
        return []
    _ = ws.engine  # made once, before the threads share it
    kept, skipped = in_defined_cells(ws, records)
    done = [TenantDrift(tenant_id=s.tenant_id, note=SKIPPED + s.reason) for s in skipped]
    if on_result:
        for unread in done:
            on_result(unread)
    records = [r for r, _ in kept]
    account_of = {r.tenant_id: spec.account_id for r, spec in kept}
    tagged = _tagged_by_account(ws, records, account_of, ws.account_roles(spec for _, spec in kept))
    done += in_threads(lambda r: refresh_tenant(ws, r, tagged[account_of[r.tenant_id]]), records, parallel,
                       Watch.of(on_result=on_result))
    return sorted(done, key=lambda t: t.tenant_id)


def _tagged_by_account(ws: Workspace, records: list[TenantRecord], account_of: dict[str, str | None],
                       roles: dict[str | None, str | None]) -> dict[str | None, list[inventory.Tagged]]:
    """One tag inventory per account the tenants' cells are in (``account_of``: each
    tenant's cell's account id, None: the target's own; ``roles``: the role reaching
    each), over their tenants' regions. The tenants' own roles are known from their
    records: no tag read for those."""
    by_account: dict[str | None, list[TenantRecord]] = {}
    for record in records:
        by_account.setdefault(account_of[record.tenant_id], []).append(record)
    return {account: inventory.scan(ws.client.in_account(roles[account]), {r.region for r in group},
                                    claimed=inventory.record_roles(group))
            for account, group in by_account.items()}


def refresh_cells(ws: Workspace, names: Iterable[str],
                  on_result: Callable[[StackDrift], None] | None = None) -> list[CellDrift]:
    """Drift of each cell's stack (one that was never applied has none to
    read); one being applied under its lease is skipped, as a locked tenant is."""
    names = list(names)
    items = ws.registry.counter_items(names) if names else {}
    done = []
    for name in names:
        started = time.monotonic()
        result = CellDrift(cell=name)
        held = lease_of(items[name])
        result.pending = None if held is not None else pending_cell_repair(items[name])
        if held is not None:
            result.note = f"{SKIPPED}being applied by a {held.operation} (owner {held.owner}, host {held.host})"
        elif not ws.cell_outputs(name):
            result.note = "never applied: nothing to read"
        else:
            with contained(result):
                changes = ws.engine.refresh(cell_stack(name))
                result.checked = len(changes.changes)
                result.resources = [c for c in changes.changes if c.op is not Op.same]
                result.orphans = [Orphan.of(r, cell_stack(name)) for r in cell_rules(ws, name, changes)]
        result.seconds = round(time.monotonic() - started, 3)
        if on_result:
            on_result(result)
        done.append(result)
    return done


def refresh(ws: Workspace, tenant_ids: Sequence[str] = (), every: bool = False, parallel: int = 8,
            on_plan: Callable[[int, int], None] | None = None,
            on_result: Callable[[StackDrift], None] | None = None, cell: str | None = None) -> RefreshSummary:
    """The named tenants, or (``every`` / ``cell``) every tenant and every committed cell, or one cell and
    its tenants."""
    started = time.monotonic()
    records = select(ws, tenant_ids, every, cell)
    cells = list(ws.committed_cells(cell)) if every or cell is not None else []
    if on_plan:
        on_plan(len(cells), len(records))
    drifts = refresh_cells(ws, cells, on_result)
    tenants = refresh_many(ws, records, parallel, on_result)
    return RefreshSummary(seconds=round(time.monotonic() - started, 3), cells=drifts, tenants=tenants)
