"""tenant_runtime: route every request's context to its tenant's store and nowhere else.

Imports neither pulumi, typer nor tenantctl (tests/unit/test_import_boundary.py).
"""

from tenant_runtime.models import (
    StoreConnection,
    TenantRecord,
    TenantResources,
    TenantStatus,
    Tier,
)

__all__ = ["StoreConnection", "TenantRecord", "TenantResources", "TenantStatus", "Tier"]
