"""Runtime errors. Each carries the HTTP status an application should answer
with (and a stable ``code`` and ``title``), so the ASGI layer (and any other)
maps them without a table of its own: one RFC 9457 problem per error. Each
also says how loud its answer is logged (``log_level``): a refusal that may be
an attack on another tenant (a mismatch, a revoked token, a workspace not
granted) is a warning; what clients cause every day (an expired token, a bad
request, a tenant moving or waking) is info; what the platform got wrong is an
error.

An error whose message quotes the platform's internals (a server and port, a
role, a key ARN, the underlying service's own error text) says
``public_detail`` to the client instead: the message is for the log."""

from __future__ import annotations

from logging import ERROR, INFO, WARNING


class TenantRuntimeError(Exception):
    status_code = 500
    log_level = ERROR
    code = "tenant_runtime_error"
    title = "Tenant runtime error"
    public_detail: str | None = None  # None: the message is the client's detail too


class Unauthenticated(TenantRuntimeError):
    """No token, a bad signature, expired, wrong audience/issuer, no tenant claim.

    ``bearer_error`` is the RFC 6750 error code for ``WWW-Authenticate``: None
    when the request carried no credentials at all, ``invalid_request`` for a
    malformed header, ``invalid_token`` for a token that was refused."""

    status_code = 401
    log_level = INFO
    code = "unauthenticated"
    title = "Authentication required"

    def __init__(self, message: str, bearer_error: str | None = "invalid_token") -> None:
        super().__init__(message)
        self.bearer_error = bearer_error


class TokenRevoked(Unauthenticated):
    """The token's ``jti`` is on the denylist, or its tenant revoked every token
    issued before a time this one predates."""

    code = "token_revoked"
    title = "Token revoked"
    log_level = WARNING  # a token someone chose to revoke is still being presented


class TenantMismatch(TenantRuntimeError):
    """The caller's tenant is not the tenant of what it addressed. Always raised,
    never turned into an empty result."""

    status_code = 403
    log_level = WARNING
    code = "tenant_mismatch"
    title = "Another tenant's resource"

    def __init__(self, caller: str, addressed: str, what: str = "resource", source: str | None = None) -> None:
        target = f"tenant {addressed!r}" if what == "tenant" else f"{what} of tenant {addressed!r}"
        super().__init__(f"tenant {caller!r} may not access {target}" + (f" (addressed by {source})" if source else ""))
        self.caller, self.addressed, self.what, self.source = caller, addressed, what, source


class WorkspaceForbidden(TenantRuntimeError):
    """The request addressed a workspace its token does not list, or one its
    tenant does not have: refused before any store, KMS or S3 call."""

    status_code = 403
    log_level = WARNING
    code = "workspace_forbidden"
    title = "Workspace not allowed"

    def __init__(self, tenant_id: str, workspace: str, reason: str) -> None:
        super().__init__(f"tenant {tenant_id!r} may not use workspace {workspace!r}: {reason}")
        self.tenant_id, self.workspace, self.reason = tenant_id, workspace, reason


class TenantNotFound(TenantRuntimeError):
    status_code = 404
    log_level = INFO
    code = "tenant_not_found"
    title = "Unknown tenant"


class TenantInactive(TenantRuntimeError):
    """The tenant exists but cannot serve requests (suspended, provisioning,
    deprovisioning, deprovisioned)."""

    status_code = 403
    log_level = INFO
    code = "tenant_inactive"
    title = "Tenant not active"

    def __init__(self, tenant_id: str, status: str) -> None:
        super().__init__(f"tenant {tenant_id!r} is {status}: requests are refused")
        self.tenant_id, self.status = tenant_id, status


class RegistryUnavailable(TenantRuntimeError):
    """The registry could not be read: fail closed, never guess a tenant."""

    status_code = 503
    log_level = WARNING
    code = "registry_unavailable"
    title = "Tenant registry unavailable"
    public_detail = "the tenant registry could not be read: retry later"


class RevocationsUnavailable(TenantRuntimeError):
    """The revocation list is older than its bound and could not be refreshed:
    fail closed rather than serve a token that may have been revoked."""

    status_code = 503
    log_level = WARNING
    code = "revocations_unavailable"
    title = "Token revocation list unavailable"
    public_detail = "the token revocation list could not be refreshed: retry later"


class JwksUnavailable(TenantRuntimeError):
    """The keys verifying tokens (``JWTSettings.jwks_url``) could not be fetched:
    the service's outage, not the token's fault, so a 503 (retry) rather than a
    401 that would make a client throw its token away."""

    status_code = 503
    log_level = WARNING
    code = "jwks_unavailable"
    title = "Token signing keys unavailable"
    public_detail = "the keys verifying tokens could not be fetched: retry later"


class InvalidRequest(TenantRuntimeError):
    """Bad input: a cursor, filename, size, content type, delay, role..."""

    status_code = 400
    log_level = INFO
    code = "invalid_request"
    title = "Invalid request"


class DecryptionFailed(TenantRuntimeError):
    """A ciphertext that is corrupt, tampered with, or sealed for another tenant
    or conversation."""

    status_code = 403
    code = "decryption_failed"
    title = "Ciphertext refused"


class UntrustedContext(TenantRuntimeError, TypeError):
    """A service was handed something that is not a TenantContext the runtime's
    resolution made (or one altered since): an application bug, refused before
    any call, never served."""

    status_code = 500
    code = "untrusted_context"
    title = "Untrusted tenant context"


class KeyUnusable(TenantRuntimeError):
    """The tenant's KMS key is disabled, pending deletion or gone: nothing of
    the tenant can be sealed or opened until an operator enables it again."""

    status_code = 403
    code = "key_unusable"
    title = "Tenant key unusable"

    def __init__(self, tenant_id: str, key_arn: str, state: str) -> None:
        super().__init__(f"the KMS key of tenant {tenant_id!r} is unusable ({state}): {key_arn}")
        self.tenant_id, self.key_arn, self.state = tenant_id, key_arn, state
        self.public_detail = f"the key of tenant {tenant_id!r} is unusable ({state})"


class KmsUnavailable(TenantRuntimeError):
    """KMS throttled the call (after the client's retries) or could not be
    reached: retry later."""

    status_code = 503
    log_level = WARNING
    code = "kms_unavailable"
    title = "Key service unavailable"
    public_detail = "the key service throttled or failed the call, or could not be reached: retry later"


class ServiceUnavailable(TenantRuntimeError):
    """S3 or SQS throttled the call (after the client's retries), failed, or
    could not be reached: retry later."""

    status_code = 503
    log_level = WARNING
    code = "service_unavailable"
    title = "Object storage or queue unavailable"
    public_detail = "object storage or the job queue throttled or failed the call, or could not be reached: retry later"


class AccessDenied(TenantRuntimeError):
    """S3 or SQS refused the tenant's role (its policy, the bucket's or
    queue's, expired scoped credentials): the platform's configuration, not
    the caller's request."""

    status_code = 403
    code = "access_denied"
    title = "Access denied to the tenant's resources"
    public_detail = ("the platform refused the tenant's role access to its own resources: its configuration, "
                     "not the request")


class ResourceNotFound(TenantRuntimeError):
    """An object, upload, bucket or queue of the tenant does not exist (or no longer)."""

    status_code = 404
    log_level = INFO
    code = "resource_not_found"
    title = "Resource not found"


class TenantWaking(TenantRuntimeError):
    """The tenant was hibernated (its database instance stopped while idle) and
    is starting again: retry after ``retry_after`` seconds."""

    status_code = 503
    log_level = INFO
    code = "tenant_waking"
    title = "Tenant waking from hibernation"

    def __init__(self, tenant_id: str, state: str, retry_after: int) -> None:
        super().__init__(f"tenant {tenant_id!r} is waking from hibernation (database {state}): "
                         f"retry in {retry_after} s")
        self.tenant_id, self.state, self.retry_after = tenant_id, state, retry_after


class StoreUnavailable(TenantRuntimeError):
    status_code = 503
    log_level = WARNING
    code = "store_unavailable"
    title = "Context store unavailable"
    public_detail = "the tenant's context store could not be reached or failed the call: retry later"


def runtime_closed() -> StoreUnavailable:
    """A call after the runtime's ``close()`` that would need what it closed: a
    connection opened now would outlive the runtime, with nothing left to close
    it (and the async runtime's I/O threads are gone)."""
    return StoreUnavailable("the runtime was closed (close() or aclose()) and opens no connection again: "
                            "build a new one")


class StoreTimeout(StoreUnavailable):
    """A store query was cancelled: it ran past the store's statement timeout,
    or was cancelled (PostgreSQL's ``query_canceled``). Nothing of it was
    committed; retrying is safe."""

    code = "store_timeout"
    title = "Context store query cancelled"
    public_detail = "a context store query was cancelled (it ran too long); nothing of it was committed: retry"


class WritesFrozen(TenantRuntimeError):
    """The tenant is being moved and its store takes no writes for a few
    seconds; reads go on. Retry after ``retry_after`` seconds."""

    status_code = 503
    log_level = INFO
    code = "writes_frozen"
    title = "Tenant writes briefly frozen"
    retry_after = 1

    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"tenant {tenant_id!r} is being moved: writes are refused for a few seconds, retry")
        self.tenant_id = tenant_id


class IndexIncomplete(TenantRuntimeError):
    """Search refused: the tenant's store holds items its search index does not
    cover yet (``terms`` NULL: a store upgraded, or a backup restored, from
    before the one-row-per-item index), so an answer could miss hits. Retry
    once ``tenantctl search reindex`` rebuilt it; nothing else is affected."""

    status_code = 503
    log_level = INFO
    code = "index_incomplete"
    title = "Search index being rebuilt"
    retry_after = 30

    def __init__(self, tenant_id: str, unindexed: int) -> None:
        super().__init__(f"tenant {tenant_id!r} has {unindexed} items not in its search index yet (a store from "
                         f"before the one-row index): search is refused until `tenantctl search reindex "
                         f"{tenant_id}` rebuilds it, retry")
        self.tenant_id, self.unindexed = tenant_id, unindexed


class AnalyzerUnavailable(TenantRuntimeError):
    """A write refused: the store's search index was built by an analyzer this
    runtime cannot reproduce (the Japanese extra, or its dictionary version,
    differs, or another analyzer format), and terms cut differently would be
    mixed into it unseen: searches would miss the documents written. Install
    the analyzer the index records, or rebuild the index with this runtime's
    (``tenantctl search reindex``). Searches still answer, flagged
    (``SearchResult.analyzer_mismatch``)."""

    status_code = 503
    log_level = ERROR  # the platform's deployment got it wrong, not the client
    code = "analyzer_unavailable"
    title = "Search analyzer differs from the index's"

    def __init__(self, tenant_id: str, key: str, recorded: str, running: str) -> None:
        where = f"tenant {tenant_id!r}" + (f" (store {key!r})" if key != tenant_id else "")
        super().__init__(f"the search index of {where} was built by analyzer {recorded!r}, which this runtime cannot "
                         f"reproduce (it runs {running}): writes are refused rather than mix terms; install the "
                         f"index's analyzer, or run `tenantctl search reindex {tenant_id}` to rebuild it with this one")
        self.tenant_id, self.recorded, self.running = tenant_id, recorded, running


class StoreMoved(StoreUnavailable):
    """The store named by this runtime's (cached) record refused a write: the
    tenant was moved and its old store is read-only. The runtime re-reads the
    registry and retries once; surfacing it means retrying later."""

    code = "store_moved"
    title = "Tenant store moved"
    public_detail = "the tenant's store was moved: retry"
    log_level = INFO  # a move's switch: expected, and over in a moment
