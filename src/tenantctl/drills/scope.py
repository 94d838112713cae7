"""What a drill backs up and restores: a tenant, or one of its workspaces.

A workspace's backup is a tenant backup of a narrower record: the drills run
on a view of the tenant's record whose resources are the workspace's (its
schema in the tenant's store, its prefix, its key), so the dump holds its
schema only, the manifest lists its prefix only, and everything is sealed
under its key and written under ``<workspace prefix>backups/``. The view is
pooled whatever the tenant's tier: a workspace is always one schema, never a
whole database or an RDS snapshot."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tenantctl.drills.context import DrillContext
from tenantctl.drills.objects import backups_prefix
from tenantctl.errors import NotFound
from tenantctl.models import TenantRecord, Tier
from tenantctl.naming import OwnerNames, require_valid_workspace


def workspace_view(record: TenantRecord, workspace: str | None) -> TenantRecord:
    """``record`` itself when ``workspace`` is None; else the record as the drills see the workspace."""
    if workspace is None:
        return record
    require_valid_workspace(record.tenant_id, workspace)
    found = record.workspaces.get(workspace)
    if found is None or record.resources is None:
        raise NotFound(f"tenant {record.tenant_id!r} has no workspace {workspace!r} applied")
    resources = record.resources.model_copy(update={
        "tier": Tier.pooled, "store": found.store, "kms_key_arn": found.kms_key_arn, "kms_alias": found.kms_alias,
        "prefix": found.prefix, "queue_url": found.queue_url, "dlq_url": found.dlq_url, "role_arn": found.role_arn,
        "workspaces": {}})
    return record.model_copy(update={"tier": Tier.pooled, "resources": resources})


def scoped_context(ctx: DrillContext, record: TenantRecord,
                   workspace: str | None) -> tuple[DrillContext, TenantRecord]:
    """The context and record a drill of ``workspace`` (None: the tenant) runs
    on; a workspace the tenant no longer has is seen by ``removed_view`` when
    its prefix holds backups or drills, else it is unknown (NotFound): a name
    the tenant never had is no removed workspace, and nothing is written under it."""
    if workspace is not None and workspace not in record.workspaces:
        view = removed_view(record, workspace)
        if not _has_backups(ctx.s3, view):
            raise NotFound(f"tenant {record.tenant_id!r} has no workspace {workspace!r} "
                           "(nor backups of one it had)")
        return replace(ctx, scope=workspace), view
    return replace(ctx, scope=workspace), workspace_view(record, workspace)


def _has_backups(s3: Any, view: TenantRecord) -> bool:
    res = view.resources
    return bool(s3.list_objects_v2(Bucket=res.bucket, Prefix=backups_prefix(res.prefix), MaxKeys=1).get("KeyCount"))


def removed_view(record: TenantRecord, workspace: str) -> TenantRecord:
    """A removed workspace as the drills see it, from its names alone (the
    registry no longer has its resources): its prefix in the tenant's bucket,
    where its backups stay, and its schema and role in the tenant's store. The
    key is unknown here: a revive takes it from the backup's index and checks
    its tags (``tenantctl.operations.revive.revive_workspace``)."""
    require_valid_workspace(record.tenant_id, workspace)
    if record.resources is None:
        raise NotFound(f"tenant {record.tenant_id!r} has no resources recorded")
    names = OwnerNames(record.tenant_id, workspace)
    res = record.resources
    store = res.store.model_copy(update={"schema_name": names.schema, "role": names.db_role, "secret_arn": ""})
    resources = res.model_copy(update={"tier": Tier.pooled, "store": store, "kms_key_arn": "",
                                       "kms_alias": names.kms_alias, "prefix": names.s3_prefix, "workspaces": {}})
    return record.model_copy(update={"tier": Tier.pooled, "resources": resources})
