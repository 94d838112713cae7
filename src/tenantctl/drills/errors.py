"""Drill failures, each with its own exit code (documented in docs/drills.md)."""

from __future__ import annotations

from tenantctl.errors import TenantctlError


class DrillFailed(TenantctlError):
    """The drill ran but its verdict is fail (mismatch, or RTO/RPO over the limit)."""

    exit_code = 9


class BackupCorrupt(DrillFailed):
    """A backup failed authentication or its checksum (tampered, truncated or foreign)."""


class KeyUnusable(TenantctlError):
    """The tenant's KMS key cannot be used: pending deletion, disabled, or not the tenant's."""

    exit_code = 10
