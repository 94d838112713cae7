"""Runtime errors. Each carries the HTTP status an application should answer
with, so the ASGI layer (and any other) maps them without a table of its own."""

from __future__ import annotations


class TenantRuntimeError(Exception):
    status_code = 500
    code = "tenant_runtime_error"


class Unauthenticated(TenantRuntimeError):
    """No token, a bad signature, expired, wrong audience/issuer, no tenant claim."""

    status_code = 401
    code = "unauthenticated"


class TenantMismatch(TenantRuntimeError):
    """The caller's tenant is not the tenant of what it addressed. Always raised,
    never turned into an empty result."""

    status_code = 403
    code = "tenant_mismatch"

    def __init__(self, caller: str, addressed: str, what: str = "resource") -> None:
        super().__init__(f"tenant {caller!r} may not access {what} of tenant {addressed!r}")
        self.caller, self.addressed, self.what = caller, addressed, what


class TenantNotFound(TenantRuntimeError):
    status_code = 404
    code = "tenant_not_found"


class TenantInactive(TenantRuntimeError):
    """The tenant exists but cannot serve requests (suspended, provisioning,
    deprovisioning, deprovisioned)."""

    status_code = 403
    code = "tenant_inactive"

    def __init__(self, tenant_id: str, status: str) -> None:
        super().__init__(f"tenant {tenant_id!r} is {status}: requests are refused")
        self.tenant_id, self.status = tenant_id, status


class RegistryUnavailable(TenantRuntimeError):
    """The registry could not be read: fail closed, never guess a tenant."""

    status_code = 503
    code = "registry_unavailable"


class InvalidRequest(TenantRuntimeError):
    """Bad input: a cursor, filename, size, content type, delay, role..."""

    status_code = 400
    code = "invalid_request"


class DecryptionFailed(TenantRuntimeError):
    """A ciphertext that is corrupt, tampered with, or sealed for another tenant
    or conversation."""

    status_code = 403
    code = "decryption_failed"


class TenantWaking(TenantRuntimeError):
    """The tenant was hibernated (its database instance stopped while idle) and
    is starting again: retry after ``retry_after`` seconds."""

    status_code = 503
    code = "tenant_waking"

    def __init__(self, tenant_id: str, state: str, retry_after: int) -> None:
        super().__init__(f"tenant {tenant_id!r} is waking from hibernation (database {state}): "
                         f"retry in {retry_after} s")
        self.tenant_id, self.state, self.retry_after = tenant_id, state, retry_after


class StoreUnavailable(TenantRuntimeError):
    status_code = 503
    code = "store_unavailable"
