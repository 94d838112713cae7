"""tenant_runtime: route every request's context to its tenant's store and nowhere else.

Imports neither pulumi, typer nor tenantctl (tests/unit/test_import_boundary.py);
web frameworks are optional (tenant_runtime.asgi imports none).
"""

from tenant_runtime.auth import JWTSettings, TenantResolver
from tenant_runtime.context import TenantContext
from tenant_runtime.errors import (
    DecryptionFailed,
    InvalidRequest,
    RegistryUnavailable,
    StoreUnavailable,
    TenantInactive,
    TenantMismatch,
    TenantNotFound,
    TenantRuntimeError,
    TenantWaking,
    Unauthenticated,
)
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
    "DecryptionFailed", "InvalidRequest", "JWTSettings", "RegistryReader", "RegistryUnavailable",
    "StoreConnection", "StoreUnavailable", "TenantContext", "TenantInactive", "TenantMismatch",
    "TenantNotFound", "TenantRecord", "TenantResolver", "TenantResources", "TenantRuntime",
    "TenantRuntimeError", "TenantStatus", "TenantWaking", "Tier", "Unauthenticated",
]
