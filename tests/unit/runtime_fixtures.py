"""Shared builders for the runtime unit tests (records and contexts, no I/O)."""

from __future__ import annotations

from tenant_runtime.context import TenantContext
from tenant_runtime.models import StoreConnection, TenantRecord, TenantResources, TenantStatus, Tier


def record(tenant_id: str, status: TenantStatus = TenantStatus.active, key_arn: str = "arn:aws:kms:us-east-1:123456789012:key/x") -> TenantRecord:
    store = StoreConnection(endpoint="127.0.0.1", database="postgres", schema_name=f"tenant_{tenant_id}",
                            role=f"tenant_{tenant_id}_app", secret_arn=f"arn:secret:{tenant_id}")
    resources = TenantResources(
        tenant_id=tenant_id, tier=Tier.pooled, region="us-east-1", store=store, kms_key_arn=key_arn,
        kms_alias=f"alias/tenantctl/{tenant_id}", bucket="shared", prefix=f"tenants/{tenant_id}/",
        queue_url=f"https://sqs/{tenant_id}", dlq_url=f"https://sqs/{tenant_id}-dlq",
        role_arn=f"arn:aws:iam::123456789012:role/tenantctl-{tenant_id}-app")
    return TenantRecord(tenant_id=tenant_id, tier=Tier.pooled, status=status, region="us-east-1", resources=resources)


def context(tenant_id: str, **kwargs) -> TenantContext:
    return TenantContext(tenant_id=tenant_id, record=record(tenant_id, **kwargs))
