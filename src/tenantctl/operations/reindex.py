"""`tenantctl search reindex ID`: rotate a tenant's search key and re-hash its
documents' index under it (tenant_runtime.documents owns the how; this module
reaches the tenant the way the runtime does: its registry record, its own
store login from its secret, its KMS key)."""

from __future__ import annotations

from typing import Any

from tenant_runtime import errors as runtime_errors
from tenant_runtime.context import from_registry
from tenant_runtime.crypto import Envelope
from tenant_runtime.documents import ReindexResult
from tenant_runtime.registry import RegistryReader
from tenant_runtime.store import ContextStore
from tenantctl.errors import InvalidInput, KeyUnusable, TargetUnavailable
from tenantctl.models import TenantStatus
from tenantctl.naming import require_valid


def reindex_search(ws: Any, tenant_id: str) -> ReindexResult:
    """Nothing is lost if it stops half way: documents already re-hashed are
    found under the new key, the others under the old one (both stay live
    until every document moved); run it again to finish."""
    require_valid(tenant_id)
    record = ws.registry.require(tenant_id)
    if record.status is not TenantStatus.active:
        raise InvalidInput(f"tenant {tenant_id!r} is {record.status.value}: only an active tenant is reindexed")
    reader = RegistryReader(ws.platform_outputs()["registry_table"], client=ws.client("dynamodb"))
    clients = ws.clients_for(record)  # its key and secret: in its cell's account, its region
    store = ContextStore(Envelope(lambda _ctx: clients("kms")), lambda _ctx: clients("secretsmanager"))
    try:
        return store.reindex(from_registry(reader, tenant_id, subject="tenantctl"))
    except runtime_errors.KeyUnusable as exc:
        raise KeyUnusable(str(exc)) from None
    except (runtime_errors.StoreUnavailable, runtime_errors.KmsUnavailable, runtime_errors.RegistryUnavailable) as exc:
        raise TargetUnavailable(str(exc)) from None
    finally:
        store.close()
