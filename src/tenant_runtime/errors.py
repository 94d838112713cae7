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


class UntrustedContext(TenantRuntimeError, TypeError):
    """A service was handed something that is not a TenantContext the runtime's
    resolution made (or one altered since): an application bug, refused before
    any call, never served."""

    status_code = 500
    code = "untrusted_context"


class KeyUnusable(TenantRuntimeError):
    """The tenant's KMS key is disabled, pending deletion or gone: nothing of
    the tenant can be sealed or opened until an operator enables it again."""

    status_code = 403
    code = "key_unusable"

    def __init__(self, tenant_id: str, key_arn: str, state: str) -> None:
        super().__init__(f"the KMS key of tenant {tenant_id!r} is unusable ({state}): {key_arn}")
        self.tenant_id, self.key_arn, self.state = tenant_id, key_arn, state


class KmsUnavailable(TenantRuntimeError):
    """KMS throttled the call (after the client's retries) or could not be
    reached: retry later."""

    status_code = 503
    code = "kms_unavailable"


class StoreUnavailable(TenantRuntimeError):
    status_code = 503
    code = "store_unavailable"
