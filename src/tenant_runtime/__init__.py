"""tenant_runtime: route every request's context to its tenant's store and nowhere else.

Imports neither pulumi, typer nor tenantctl (tests/unit/test_import_boundary.py);
web frameworks are optional (tenant_runtime.asgi imports none). The async API
(``AsyncTenantRuntime``, tenant_runtime.aio) is imported on first use.
"""

from typing import Any

from tenant_runtime.auth import JWTSettings, TenantResolver
from tenant_runtime.context import TenantContext
from tenant_runtime.errors import (
    DecryptionFailed,
    InvalidRequest,
    KeyUnusable,
    KmsUnavailable,
    RegistryUnavailable,
    RevocationsUnavailable,
    StoreTimeout,
    StoreUnavailable,
    TenantInactive,
    TenantMismatch,
    TenantNotFound,
    TenantRuntimeError,
    TenantWaking,
    TokenRevoked,
    Unauthenticated,
    UntrustedContext,
)
from tenant_runtime.gateway import Gateway
from tenant_runtime.models import (
    StoreConnection,
    TenantRecord,
    TenantResources,
    TenantStatus,
    Tier,
)
from tenant_runtime.registry import RegistryReader
from tenant_runtime.runtime import TenantRuntime

__all__ = [
    "AsyncTenantRuntime", "DecryptionFailed", "Gateway", "InvalidRequest", "JWTSettings", "KeyUnusable",
    "KmsUnavailable", "RegistryReader", "RegistryUnavailable", "RevocationsUnavailable", "StoreConnection",
    "StoreTimeout", "StoreUnavailable", "TenantContext", "TenantInactive", "TenantMismatch", "TenantNotFound",
    "TenantRecord", "TenantResolver", "TenantResources", "TenantRuntime", "TenantRuntimeError", "TenantStatus",
    "TenantWaking", "Tier",
    "TokenRevoked", "Unauthenticated", "UntrustedContext",
]


def __getattr__(name: str) -> Any:
    if name == "AsyncTenantRuntime":  # asyncio and the async drivers only for applications that use them
        from tenant_runtime.aio import AsyncTenantRuntime

        return AsyncTenantRuntime
    raise AttributeError(f"module 'tenant_runtime' has no attribute {name!r}")
