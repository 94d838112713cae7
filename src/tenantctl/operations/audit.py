"""The registry against the cloud and the committed stacks/, in one report:

- ``resources-gone``: a live record (active, suspended) whose key, queues, role
  or DB secret no longer exist (deleted by hand, a lost account...);
- ``unclaimed``: a resource tagged ``managed-by=tenantctl`` for a tenant no
  record names, or for a deprovisioned one yet still live (left by a crash or
  by hand); the platform's own resources are claimed by the platform stack;
- ``tombstoned-stack-file``: a committed stack file whose tenant is
  deprovisioned (a re-commit `apply` would refuse);
- ``bad-name``: a registry record or stack file whose id breaks the naming rules.

Read-only: one registry scan, one tag inventory per region (``tenantctl.inventory``),
a key-state read per live record. Exit 12 when anything is found.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from tenantctl import inventory
from tenantctl.errors import CHANGES_PENDING
from tenantctl.models import TenantRecord, TenantStatus
from tenantctl.naming import PLATFORM_STACK, broken_rule
from tenantctl.stackconfig import tenant_stack_files
from tenantctl.workspace import Workspace

Kind = Literal["resources-gone", "unclaimed", "tombstoned-stack-file", "bad-name"]
KINDS: tuple[Kind, ...] = ("resources-gone", "unclaimed", "tombstoned-stack-file", "bad-name")
LIVE = (TenantStatus.active, TenantStatus.suspended)
GONE = (TenantStatus.deprovisioned, TenantStatus.deprovisioning)
# What a deprovision keeps on purpose for the tenant's retention window.
RETAINED_KINDS = ("rds:snapshot", "rds:cluster-snapshot")


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
    findings: list[Finding] = Field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {k: sum(1 for f in self.findings if f.kind == k) for k in KINDS}

    def exit_code(self) -> int:
        return CHANGES_PENDING if self.findings else 0


def _missing(ws: Workspace, res: Any, by_arn: dict[str, inventory.Tagged], names: set[str],
             roles: set[str]) -> list[str]:
    """What of ``res`` (a tenant's or a workspace's resources: the same fields) is gone."""
    key = by_arn.get(res.kms_key_arn)
    return [what for what, present in (
        ("kms key", key is not None and inventory.is_live(ws.client, key)),
        ("queue", res.queue_url.rsplit("/", 1)[-1] in names),
        ("dead-letter queue", res.dlq_url.rsplit("/", 1)[-1] in names),
        ("role", res.role_arn in roles),
        ("db secret", res.store.secret_arn in by_arn and inventory.is_live(ws.client, by_arn[res.store.secret_arn])))
        if not present]


def _gone(ws: Workspace, record: TenantRecord, by_arn: dict[str, inventory.Tagged],
          names: set[str], roles: set[str]) -> Finding | None:
    res = record.resources
    if res is None:
        return None
    missing = _missing(ws, res, by_arn, names, roles)
    for name, workspace in sorted(res.workspaces.items()):
        missing += [f"workspace {name}'s {what}" for what in _missing(ws, workspace, by_arn, names, roles)]
    if not missing:
        return None
    return Finding(kind="resources-gone", tenant_id=record.tenant_id, subject=f"registry record {record.tenant_id}",
                   detail=f"{record.status.value} in the registry, but its {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} gone")


def _role_arns(ws: Workspace) -> set[str]:
    """Every role's ARN (one paged list, no tag reads): is a record's role still there."""
    return {role["Arn"] for page in ws.client("iam").get_paginator("list_roles").paginate() for role in page["Roles"]}


def _unclaimed(ws: Workspace, tagged: list[inventory.Tagged], records: dict[str, TenantRecord]) -> list[Finding]:
    found = []
    for resource in tagged:
        tenant = resource.tenant or ""
        record = records.get(tenant)
        if tenant == PLATFORM_STACK or (record is not None and record.status not in GONE):
            continue
        if record is not None and resource.kind in RETAINED_KINDS:
            continue
        if not inventory.is_live(ws.client, resource):
            continue  # a key pending deletion, a secret in its recovery window: the tail of a deletion
        why = (f"tagged for tenant {tenant!r}, {record.status.value} since "
               f"{record.deprovisioned_at or record.updated_at:%Y-%m-%d}" if record is not None
               else f"tagged for tenant {tenant!r}, which no registry record names" if tenant
               else "tagged managed-by=tenantctl without a tenant")
        found.append(Finding(kind="unclaimed", tenant_id=tenant, subject=resource.arn,
                             detail=f"{resource.describe()}: {why}"))
    return found


def audit(ws: Workspace) -> AuditReport:
    started = time.monotonic()
    records = {r.tenant_id: r for r in ws.registry.iter_all()}
    current = {t: r.current_stack for t, r in records.items()}
    files = tenant_stack_files(ws.stacks_dir, current) if ws.stacks_dir.is_dir() else {}
    regions = {r.region for r in records.values()} | {ws.client.region or "us-east-1"}
    live_roles = {r.resources.role_arn for r in records.values() if r.status in LIVE and r.resources is not None}
    tagged = inventory.scan(ws.client, regions, claimed=live_roles)  # roles of live records: no tag read each
    by_arn = {t.arn: t for t in tagged}
    queue_names = {t.name for t in tagged if t.service == "sqs"}
    role_arns = _role_arns(ws)

    findings: list[Finding] = []
    for tenant_id, record in sorted(records.items()):
        rule = broken_rule(tenant_id)
        if rule is not None:
            findings.append(Finding(kind="bad-name", tenant_id=tenant_id, subject=f"registry record {tenant_id}",
                                    detail=f"breaks the {rule.name} rule: {rule.explain}"))
        if record.status in LIVE:
            gone = _gone(ws, record, by_arn, queue_names, role_arns)
            if gone is not None:
                findings.append(gone)
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
    findings += _unclaimed(ws, tagged, records)
    order = {k: i for i, k in enumerate(KINDS)}
    findings.sort(key=lambda f: (order[f.kind], f.tenant_id, f.subject))
    return AuditReport(seconds=round(time.monotonic() - started, 3), records=len(records), stack_files=len(files),
                       tagged=len(tagged), findings=findings)
