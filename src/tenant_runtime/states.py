"""The states a registry record names, as plain enums: importable without pydantic,
so tenantctl's CLI declares its `--tier` / `--status` options without loading the
models (``tenant_runtime.models`` re-exports them)."""

from __future__ import annotations

from enum import Enum


class Tier(str, Enum):
    pooled = "pooled"
    dedicated = "dedicated"


class TenantStatus(str, Enum):
    provisioning = "provisioning"
    active = "active"
    suspended = "suspended"
    deprovisioning = "deprovisioning"
    deprovisioned = "deprovisioned"
