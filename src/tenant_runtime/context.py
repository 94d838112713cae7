"""TenantContext: who a request acts for, resolved once per request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tenant_runtime.errors import TenantMismatch
from tenant_runtime.models import TenantRecord, TenantResources


@dataclass(frozen=True)
class TenantContext:
    tenant_id: str
    record: TenantRecord
    subject: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # A context holding another tenant's record would route this tenant's
        # requests to that tenant's store, key, prefix and queue: refuse it.
        owners = {self.record.tenant_id} | ({self.record.resources.tenant_id} if self.record.resources else set())
        if owners != {self.tenant_id}:
            raise TenantMismatch(self.tenant_id, ",".join(sorted(owners - {self.tenant_id})), "registry record")

    @property
    def resources(self) -> TenantResources:
        # RegistryReader.get refuses records without resources, so this holds.
        assert self.record.resources is not None
        return self.record.resources

    def require(self, addressed_tenant: str, what: str = "resource") -> None:
        """Refuse (403) anything that belongs to another tenant."""
        if addressed_tenant != self.tenant_id:
            raise TenantMismatch(self.tenant_id, addressed_tenant, what)
