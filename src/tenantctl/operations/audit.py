"""The registry against the cloud and the committed stacks/, in one report:

- ``resources-gone``: a live record (active, suspended) whose key, queues, role
  or DB secret no longer exist (deleted by hand, a lost account...);
- ``unclaimed``: a resource tagged ``managed-by=tenantctl`` for a tenant no
  record names, or for a deprovisioned one yet still live (left by a crash or
  by hand); the platform's own resources are claimed by the platform stack;
  the database snapshots a deprovision or a `cell remove` keeps are not;
- ``tombstoned-stack-file``: a committed stack file whose tenant is
  deprovisioned (a re-commit `apply` would refuse);
- ``stray-stack-file``: a committed key-generation stack file (`acme.k1`, a
  move's target) of a tenant with no record, or no open move to that stack
  (`apply` refuses it);
- ``bad-name``: a registry record or stack file whose id breaks the naming rules;
- ``unknown-cell``: a record not deprovisioned whose cell stacks/ does not define
  (its stack file removed, or the registry shared with another project): that
  account is not read;
- ``stalled-run``: a record locked by a run that provably died (on this host, or
  another host's whose lock lapsed unrenewed), or whose writes a move froze
  minutes ago (a freeze lasts seconds; a run killed outright in it leaves the
  tenant refusing writes until `tenantctl move ID`).

Every account the fleet is in is read where it is: the target's own and each
cell's (its role assumed), over the regions of its cells and of its tenants. A
tenant's resources are looked for in its cell's account, and a leftover found
in an account is judged with that account's clients.

Read-only: one registry scan, one tag inventory, one role listing and one listing of
the secrets in their recovery window per account (``tenantctl.inventory``), a
state read per live record's key (``parallel`` records at a time). Exit 12 when anything is found.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from tenantctl import inventory
from tenantctl.errors import CHANGES_PENDING
from tenantctl.models import CellSpec, TenantRecord, TenantStatus, utcnow
from tenantctl.naming import PLATFORM_STACK, broken_rule, cell_of_stack
from tenantctl.operations.fleet_threads import in_threads, require_parallel
from tenantctl.registry import DEAD, describe_lock, lock_holder
from tenantctl.stackconfig import stray_stack, tenant_stack_files, tenant_stacks
from tenantctl.timestamps import utc_second
from tenantctl.workspace import Workspace

if TYPE_CHECKING:
    from tenantctl.aws import Clients

Kind = Literal["resources-gone", "unclaimed", "tombstoned-stack-file", "stray-stack-file", "bad-name",
               "unknown-cell", "stalled-run"]
KINDS: tuple[Kind, ...] = ("resources-gone", "unclaimed", "tombstoned-stack-file", "stray-stack-file", "bad-name",
                           "unknown-cell", "stalled-run")
LIVE = (TenantStatus.active, TenantStatus.suspended)
GONE = (TenantStatus.deprovisioned, TenantStatus.deprovisioning)
# A move freezes a tenant's writes for seconds (the last changes caught up, the switch):
# one frozen this long has a run that stopped in it, wherever that run was.
STALLED_FREEZE = timedelta(minutes=5)


class Finding(BaseModel):
    kind: Kind
    tenant_id: str
    subject: str  # the record, stack file or ARN
    detail: str


class AuditReport(BaseModel):
    seconds: float
    records: int
    stack_files: int
    tagged: int
    accounts: int = 1  # accounts read: the target's own and each other cell account's
    findings: list[Finding] = Field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {k: sum(1 for f in self.findings if f.kind == k) for k in KINDS}

    def exit_code(self) -> int:
        return CHANGES_PENDING if self.findings else 0


@dataclass
class _Account:
    """What one account holds: its tagged resources (``by_arn``), its queues' names and its roles."""

    clients: Clients
    tagged: list[inventory.Tagged]
    by_arn: dict[str, inventory.Tagged]
    queue_names: set[str]
    role_arns: set[str]
    deleted_secrets: set[str]  # in their recovery window: listed, not asked one by one

    def is_live(self, resource: inventory.Tagged) -> bool:
        if resource.kind == "secretsmanager:secret":
            return resource.arn not in self.deleted_secrets
        return inventory.is_live(self.clients, resource)

    @classmethod
    def read(cls, clients: Clients, regions: set[str], claimed: set[str]) -> _Account:
        tagged = inventory.scan(clients, regions, claimed=claimed)  # claimed roles: no tag read each
        # Every role's ARN (one paged list, no tag reads): is a record's role still there.
        roles = {role["Arn"] for page in clients("iam").get_paginator("list_roles").paginate()
                 for role in page["Roles"]}
        return cls(clients, tagged, {t.arn: t for t in tagged}, {t.name for t in tagged if t.service == "sqs"}, roles,
                   inventory.secrets_pending_deletion(clients, regions))


def _missing(account: _Account, res: Any) -> list[str]:
    """What of ``res`` (a tenant's or a workspace's resources: the same fields) is gone from its account."""
    by_arn = account.by_arn
    key = by_arn.get(res.kms_key_arn)
    return [what for what, present in (
        ("kms key", key is not None and account.is_live(key)),
        ("queue", res.queue_url.rsplit("/", 1)[-1] in account.queue_names),
        ("dead-letter queue", res.dlq_url.rsplit("/", 1)[-1] in account.queue_names),
        ("role", res.role_arn in account.role_arns),
        ("db secret", res.store.secret_arn in by_arn and account.is_live(by_arn[res.store.secret_arn])))
        if not present]


def _gone(account: _Account, record: TenantRecord) -> Finding | None:
    res = record.resources
    if res is None:
        return None
    missing = _missing(account, res)
    for name, workspace in sorted(res.workspaces.items()):
        missing += [f"workspace {name}'s {what}" for what in _missing(account, workspace)]
    if not missing:
        return None
    return Finding(kind="resources-gone", tenant_id=record.tenant_id, subject=f"registry record {record.tenant_id}",
                   detail=f"{record.status.value} in the registry, but its {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} gone")


def _unclaimed(account: _Account, records: dict[str, TenantRecord], cell_stacks: set[str]) -> list[Finding]:
    """``cell_stacks``: the stacks of the cells stacks/ defines, whose shared resources carry their
    stack's name as their ``tenant`` tag (`platform`, `cell-<name>`: never a tenant id)."""
    found = []
    for resource in account.tagged:
        tenant = resource.tenant or ""
        record = records.get(tenant)
        if tenant in cell_stacks or (record is not None and record.status not in GONE):
            continue
        if record is not None and resource.retained:  # kept for the tenant's retention window
            continue
        if resource.retained and cell_of_stack(tenant):  # a removed cell's final snapshot: `cell remove` keeps it
            continue
        if not account.is_live(resource):
            continue  # a key pending deletion, a secret in its recovery window: the tail of a deletion
        why = (f"tagged for tenant {tenant!r}, {record.status.value} since "
               f"{record.deprovisioned_at or record.updated_at:%Y-%m-%d}" + _remedy(record) if record is not None
               else f"tagged for cell stack {tenant!r}, which stacks/ does not define" if cell_of_stack(tenant)
               else f"tagged for tenant {tenant!r}, which no registry record names" if tenant
               else "tagged managed-by=tenantctl without a tenant")
        found.append(Finding(kind="unclaimed", tenant_id=tenant, subject=resource.arn,
                             detail=f"{resource.describe()}: {why}"))
    return found


def _remedy(record: TenantRecord) -> str:
    """What removes a live resource of a tombstone that its stack still holds (a revive's up made it)."""
    if record.status is TenantStatus.deprovisioning:
        return f" (a deprovision that did not finish: `tenantctl deprovision {record.tenant_id}` finishes it)"
    return (f" (if its stack still holds it, as it holds what a revive not verified created: `tenantctl "
            f"deprovision {record.tenant_id}` removes it)")


def _accounts(ws: Workspace, records: dict[str, TenantRecord],
              cells: dict[str, CellSpec]) -> tuple[dict[str | None, _Account], dict[str, str | None]]:
    """Each account of the fleet read once, keyed by its id (None: the target's own) through the
    first of its cells' roles, and each tenant's account (none for a record of an unknown cell).
    An account's regions: its cells' and its tenants' (and the target's region for its own)."""
    cell_of = {t: spec for t, spec in ws.cells_of(records.values(), cells).items() if spec is not None}
    role = {None: None, **ws.account_roles((*cells.values(), *cell_of.values()))}
    regions: dict[str | None, set[str]] = {None: {ws.client.region or "us-east-1"}}
    for spec in (*cells.values(), *cell_of.values()):
        regions.setdefault(spec.account_id, set()).add(spec.region)
    live: dict[str | None, list[TenantRecord]] = {}
    for tenant_id, spec in cell_of.items():
        record, account = records[tenant_id], spec.account_id
        regions[account].add(record.region)
        if record.status in LIVE:
            live.setdefault(account, []).append(record)
    return ({account: _Account.read(ws.client.in_account(role[account]), where,
                                    inventory.record_roles(live.get(account, ())))
             for account, where in regions.items()},
            {t: spec.account_id for t, spec in cell_of.items()})


def stalled(record: TenantRecord, now: datetime) -> Finding | None:
    """A run that stopped without ending: the record's lock held by a run that provably died
    (its pid gone on this host, or another host's lock lapsed unrenewed: ``lock_lease``), or its
    writes frozen by a move for longer than ``STALLED_FREEZE`` (the runtime answers them 503 until
    the move is resumed)."""
    lock, move = record.lock, record.move
    frozen = move is not None and move.writes_frozen and now - move.phase_at > STALLED_FREEZE
    holder = lock_holder(lock) if lock is not None else None
    if not frozen and holder not in DEAD:
        return None
    detail = [f"no run holds {record.tenant_id!r}" if lock is None else describe_lock(record.tenant_id, lock, holder)]
    if frozen:
        detail.insert(0, f"its writes have been refused since {utc_second(move.phase_at)}: a move froze them "
                         f"({move.phase.value}{', re-verifying' if move.reverifying else ''}) and has not ended")
        detail.append(f"`tenantctl move {record.tenant_id}` resumes the move (`--rollback` ends it)")
    return Finding(kind="stalled-run", tenant_id=record.tenant_id, subject=f"registry record {record.tenant_id}",
                   detail="; ".join(detail))


def audit(ws: Workspace, parallel: int = 8) -> AuditReport:
    """``parallel``: live records whose key states are read at once (a call each, and one per
    workspace: with thousands of tenants, the bulk of an audit's time; the secrets' come listed)."""
    require_parallel(parallel)
    started = time.monotonic()
    records = {r.tenant_id: r for r in ws.registry.iter_all()}
    current = {t: r.current_stack for t, r in records.items()}
    stacks = tenant_stacks(ws.stacks_dir) if ws.stacks_dir.is_dir() else {}
    files = tenant_stack_files(ws.stacks_dir, current) if stacks else {}
    cells = ws.cells()
    accounts, account_of = _accounts(ws, records, cells)

    findings: list[Finding] = []
    for tenant_id, record in sorted(records.items()):
        rule = broken_rule(tenant_id)
        if rule is not None:
            findings.append(Finding(kind="bad-name", tenant_id=tenant_id, subject=f"registry record {tenant_id}",
                                    detail=f"breaks the {rule.name} rule: {rule.explain}"))
        if tenant_id not in account_of and record.status not in GONE:
            findings.append(Finding(kind="unknown-cell", tenant_id=tenant_id, subject=f"registry record {tenant_id}",
                                    detail=f"{ws.undefined_cell(record)}; restore the cell's stack file"))
    now = utcnow()
    findings += [f for r in records.values() if (f := stalled(r, now)) is not None]
    live = [r for t, r in records.items() if r.status in LIVE and t in account_of]
    findings += [f for f in in_threads(lambda r: _gone(accounts[account_of[r.tenant_id]], r), live, parallel) if f]
    for tenant_id, path in sorted(files.items()):
        rule = broken_rule(tenant_id)
        if rule is not None:
            findings.append(Finding(kind="bad-name", tenant_id=tenant_id, subject=str(path.name),
                                    detail=f"breaks the {rule.name} rule: {rule.explain}"))
        record = records.get(tenant_id)
        if record is not None and record.status in GONE:
            findings.append(Finding(
                kind="tombstoned-stack-file", tenant_id=tenant_id, subject=str(path.name),
                detail=f"tenant {tenant_id!r} is {record.status.value}: `apply` refuses this file "
                       "(ids are never reused); remove it, or restore the tenant with `tenantctl drill restore`"))
    for tenant_id, found in stacks.items():
        for stack, path in found.items():
            stray = stray_stack(stack, records.get(tenant_id))
            if stray is not None:
                findings.append(Finding(kind="stray-stack-file", tenant_id=tenant_id, subject=path.name, detail=stray))
    for account in accounts.values():
        findings += _unclaimed(account, records, {PLATFORM_STACK} | {spec.stack for spec in cells.values()})
    order = {k: i for i, k in enumerate(KINDS)}
    findings.sort(key=lambda f: (order[f.kind], f.tenant_id, f.subject))
    return AuditReport(seconds=round(time.monotonic() - started, 3), records=len(records), stack_files=len(files),
                       tagged=sum(len(a.tagged) for a in accounts.values()), accounts=len(accounts),
                       findings=findings)
