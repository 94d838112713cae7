"""tenant_runtime: route every request's context to its tenant's store and nowhere else.

Imports neither pulumi, typer nor tenantctl (tests/unit/test_import_boundary.py);
web frameworks are optional (tenant_runtime.asgi imports none). Every name is
imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names are imported on first use (PEP 562): the control side reads the models
# and the registry codec without paying for psycopg, jwt and cryptography.
_EXPORTS = {
    "AsyncTenantRuntime": "tenant_runtime.aio",
    "JWTSettings": "tenant_runtime.auth", "TenantResolver": "tenant_runtime.auth",
    "TenantContext": "tenant_runtime.context",
    "Gateway": "tenant_runtime.gateway",
    "RegistryReader": "tenant_runtime.registry",
    "TenantRuntime": "tenant_runtime.runtime",
    **dict.fromkeys(("StoreConnection", "TenantRecord", "TenantResources"), "tenant_runtime.models"),
    **dict.fromkeys(("TenantStatus", "Tier"), "tenant_runtime.states"),
    **dict.fromkeys(("AccessDenied", "AnalyzerUnavailable", "DecryptionFailed", "IndexIncomplete", "InvalidRequest",
                     "JwksUnavailable", "KeyUnusable", "KmsUnavailable", "ResourceNotFound", "ServiceUnavailable",
                     "RegistryUnavailable", "RevocationsUnavailable", "StoreMoved", "StoreTimeout", "StoreUnavailable",
                     "TenantInactive", "TenantMismatch", "TenantNotFound", "TenantRuntimeError", "TenantWaking",
                     "TokenRevoked", "Unauthenticated", "UntrustedContext", "WorkspaceForbidden", "WritesFrozen"),
                    "tenant_runtime.errors"),
}

if TYPE_CHECKING:
    from tenant_runtime.aio import AsyncTenantRuntime
    from tenant_runtime.auth import JWTSettings, TenantResolver
    from tenant_runtime.context import TenantContext
    from tenant_runtime.errors import (
        AccessDenied,
        AnalyzerUnavailable,
        DecryptionFailed,
        IndexIncomplete,
        InvalidRequest,
        JwksUnavailable,
        KeyUnusable,
        KmsUnavailable,
        RegistryUnavailable,
        ResourceNotFound,
        RevocationsUnavailable,
        ServiceUnavailable,
        StoreMoved,
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
        WorkspaceForbidden,
        WritesFrozen,
    )
    from tenant_runtime.gateway import Gateway
    from tenant_runtime.models import StoreConnection, TenantRecord, TenantResources
    from tenant_runtime.registry import RegistryReader
    from tenant_runtime.runtime import TenantRuntime
    from tenant_runtime.states import TenantStatus, Tier

__all__ = [
    "AccessDenied", "AnalyzerUnavailable", "AsyncTenantRuntime", "DecryptionFailed", "Gateway", "IndexIncomplete",
    "InvalidRequest",
    "JWTSettings", "JwksUnavailable", "KeyUnusable",
    "KmsUnavailable", "RegistryReader", "RegistryUnavailable", "ResourceNotFound", "RevocationsUnavailable",
    "ServiceUnavailable", "StoreConnection",
    "StoreMoved", "StoreTimeout", "StoreUnavailable", "TenantContext", "TenantInactive", "TenantMismatch",
    "TenantNotFound", "TenantRecord", "TenantResolver", "TenantResources", "TenantRuntime", "TenantRuntimeError",
    "TenantStatus", "TenantWaking", "Tier", "TokenRevoked", "Unauthenticated", "UntrustedContext",
    "WorkspaceForbidden", "WritesFrozen",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tenant_runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
