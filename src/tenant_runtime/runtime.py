"""TenantRuntime: the one object an application builds at start-up."""

from __future__ import annotations

from typing import Any

from tenant_runtime.auth import Addressed, JWTSettings, TenantResolver
from tenant_runtime.context import TenantContext, from_registry
from tenant_runtime.credentials import ClientFactory, Mode
from tenant_runtime.crypto import DataKeyCache, Envelope
from tenant_runtime.gateway import Gateway, SharedPool
from tenant_runtime.hibernation import DatabaseWaker
from tenant_runtime.jobs import SQS_MAX_MESSAGE, JobQueue
from tenant_runtime.objects import DEFAULT_TYPES, ObjectAccess
from tenant_runtime.registry import RegistryReader
from tenant_runtime.revocation import MAX_AGE, REFRESH_INTERVAL, RevocationList
from tenant_runtime.store import ContextStore


class TenantRuntime:
    """Registry reader + JWT resolver + the routed services, sharing one client
    factory. ``runtime.resolve(token, addressed)`` gives the TenantContext every
    service takes.

    ``gateway``: serve pooled tenants through one shared pool per process
    (``tenant_runtime.gateway``); without it every tenant logs in as its own
    role. ``revocation_table``: check every token against the denylist
    (``tenant_runtime.revocation``). ``statement_timeout``: seconds a store
    query may run before PostgreSQL cancels it (StoreTimeout, 503).
    ``runtime_role_arn``: in ``assume_role`` mode, the platform's runtime role
    to assume first when this process does not run as it (the sandbox).
    ``content_types``: the uploads' allow-list (``objects.DEFAULT_TYPES``).
    ``job_max_bytes``: the queues' ``MaximumMessageSize`` (SQS's 1 MiB by
    default, 1024 at least); ``jobs.schedule`` sends a job message (UTF-8 bytes
    of its JSON body) of at most that less ``jobs.DEAD_LETTER_ROOM``, the room
    its dead-letter reason needs. ``max_tenant_connections``: connections the
    process opens on one tenant's own login at most (None: its role's
    CONNECTION LIMIT; never more); a request past it waits
    ``tenant_connection_wait`` seconds for one, then StoreUnavailable (503)."""

    def __init__(self, jwt: JWTSettings, registry_table: str | None = None, *, mode: Mode = "ambient",
                 region: str | None = None, endpoint_url: str | None = None, session: Any | None = None,
                 key_cache: DataKeyCache | None = None, registry_ttl: float = 30.0,
                 gateway: Gateway | None = None, revocation_table: str | None = None,
                 revocation_refresh: float = REFRESH_INTERVAL, statement_timeout: float | None = None,
                 runtime_role_arn: str | None = None, content_types: frozenset[str] = DEFAULT_TYPES,
                 job_max_bytes: int = SQS_MAX_MESSAGE, max_tenant_connections: int | None = None,
                 tenant_connection_wait: float = 10.0) -> None:
        self.clients = ClientFactory(mode, session=session, region=region, endpoint_url=endpoint_url,
                                     runtime_role_arn=runtime_role_arn)
        self._platform = (session or self.clients.session, region, endpoint_url)
        self._platform_clients: dict[str, Any] = {}
        self.registry = RegistryReader(registry_table, client=self.platform_client("dynamodb"), ttl=registry_ttl)
        self.revocations = RevocationList(revocation_table, client=self.registry.client,
                                          refresh_interval=revocation_refresh,
                                          max_age=max(MAX_AGE, 6 * revocation_refresh)) if revocation_table else None
        self.resolver = TenantResolver(jwt, self.registry, revocations=self.revocations)
        self.envelope = Envelope(lambda ctx: self.clients.client(ctx, "kms"), key_cache)
        shared = SharedPool(gateway, lambda: self.platform_client("secretsmanager")) if gateway else None
        self.waker = DatabaseWaker(lambda hibernation: self.clients.own_client(
            "rds", hibernation.region, role_arn=hibernation.waker_role_arn))
        self.objects = ObjectAccess(lambda ctx: self.clients.client(ctx, "s3"), content_types=content_types)
        self.store = ContextStore(self.envelope, lambda ctx: self.clients.client(ctx, "secretsmanager"),
                                  gateway=shared, statement_timeout=statement_timeout, waker=self.waker,
                                  reresolve=self._reresolve, objects=self.objects,
                                  max_tenant_connections=max_tenant_connections,
                                  tenant_connection_wait=tenant_connection_wait)
        self.jobs = JobQueue(lambda ctx: self.clients.client(ctx, "sqs"), max_message_bytes=job_max_bytes)

    def platform_client(self, service: str) -> Any:
        """A client of the runtime's own principal (registry, revocations, the
        gateway secret), never a tenant's; one per service."""
        if service not in self._platform_clients:
            session, region, endpoint_url = self._platform
            self._platform_clients[service] = session.client(service, region_name=region, endpoint_url=endpoint_url,
                                                             config=self.clients.config)
        return self._platform_clients[service]

    def resolve(self, token: str, addressed_tenant: Addressed = None, workspace: str | None = None) -> TenantContext:
        """``workspace``: the workspace the request addresses; the token must
        list it (``JWTSettings.workspaces_claim``), else WorkspaceForbidden (403)
        before any store, KMS or S3 call. None: the tenant-level context."""
        return self.resolver.resolve(token, addressed_tenant, workspace)

    def context(self, tenant_id: str, workspace: str | None = None) -> TenantContext:
        """The context of an active tenant (or of one of its workspaces) for work
        without a request token (a job worker, a maintenance task), from the
        registry like ``resolve``."""
        return from_registry(self.registry, tenant_id, subject="service", workspace=workspace)

    def _reresolve(self, ctx: TenantContext, patient: bool = False) -> TenantContext:
        """``ctx``'s tenant read from the registry again (its cached record named
        a store that refused it: ``RegistryReader.refresh``), same subject and claims."""
        self.registry.refresh(ctx.tenant_id, ctx.record, patient)
        return from_registry(self.registry, ctx.tenant_id, subject=ctx.subject, claims=ctx.claims,
                             workspace=ctx.workspace)

    def close(self) -> None:
        """Close every connection the store holds (per-tenant logins, the shared pool)."""
        self.store.close()

    def __enter__(self) -> TenantRuntime:  # ``with TenantRuntime(...) as runtime``, as ``async with`` for the async API
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
