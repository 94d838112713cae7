"""Shared builders for the runtime unit tests: records, an in-memory registry
and the contexts it resolves (no I/O)."""

from __future__ import annotations

from tenant_runtime.context import TenantContext, from_registry
from tenant_runtime.models import (
    StoreConnection,
    TenantRecord,
    TenantResources,
    TenantStatus,
    Tier,
    WorkspaceResources,
    workspace_prefix,
)
from tenant_runtime.registry import RegistryReader

KEY = "arn:aws:kms:us-east-1:123456789012:key/x"


def record(tenant_id: str, status: TenantStatus = TenantStatus.active, key_arn: str = KEY) -> TenantRecord:
    store = StoreConnection(endpoint="127.0.0.1", database="postgres", schema_name=f"tenant_{tenant_id}",
                            role=f"tenant_{tenant_id}_app", secret_arn=f"arn:secret:{tenant_id}")
    resources = TenantResources(
        tenant_id=tenant_id, tier=Tier.pooled, region="us-east-1", store=store, kms_key_arn=key_arn,
        kms_alias=f"alias/tenantctl/{tenant_id}", bucket="shared", prefix=f"tenants/{tenant_id}/",
        queue_url=f"https://sqs/{tenant_id}", dlq_url=f"https://sqs/{tenant_id}-dlq",
        role_arn=f"arn:aws:iam::123456789012:role/tenantctl-{tenant_id}-app")
    return TenantRecord(tenant_id=tenant_id, tier=Tier.pooled, status=status, region="us-east-1", resources=resources)


def with_workspaces(rec: TenantRecord, *names: str) -> TenantRecord:
    """``rec`` with workspaces of those names, each with names of its own (as a stack outputs them)."""
    tid = rec.tenant_id
    workspaces = {ws: WorkspaceResources(
        name=ws, store=StoreConnection(endpoint="127.0.0.1", database="postgres", schema_name=f"tenant_{tid}__ws_{ws}",
                                       role=f"tenant_{tid}__ws_{ws}_app", secret_arn=f"arn:secret:{tid}--{ws}"),
        kms_key_arn=f"{KEY}-{ws}", kms_alias=f"alias/tenantctl/{tid}--{ws}", prefix=workspace_prefix(tid, ws),
        queue_url=f"https://sqs/{tid}--{ws}", dlq_url=f"https://sqs/{tid}--{ws}-dlq",
        role_arn=f"arn:aws:iam::123456789012:role/tenantctl-{tid}--{ws}-app") for ws in names}
    assert rec.resources is not None
    return rec.model_copy(update={"resources": rec.resources.model_copy(update={"workspaces": workspaces})})


class Registry(RegistryReader):
    """A RegistryReader answering from records in memory (its DynamoDB reads
    and cache are tested with a Stubber in test_runtime_registry.py)."""

    def __init__(self, *records: TenantRecord) -> None:
        super().__init__("registry", client=object(), ttl=1e-9, negative_ttl=1e-9)
        self.records = {r.tenant_id: r for r in records}
        self.asked: list[str] = []

    def _fetch(self, tenant_id: str, consistent: bool = False) -> TenantRecord | None:
        self.asked.append(tenant_id)
        return self.records.get(tenant_id)


def context(tenant_id: str, **kwargs) -> TenantContext:
    """A context resolved the way the runtime resolves one (from a registry record)."""
    return from_registry(Registry(record(tenant_id, **kwargs)), tenant_id)
