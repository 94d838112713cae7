"""TenantRuntime: the one object an application builds at start-up."""

from __future__ import annotations

from typing import Any

from tenant_runtime.auth import JWTSettings, TenantResolver
from tenant_runtime.context import TenantContext
from tenant_runtime.credentials import ClientFactory, Mode
from tenant_runtime.crypto import DataKeyCache, Envelope
from tenant_runtime.hibernation import DatabaseWaker
from tenant_runtime.jobs import JobQueue
from tenant_runtime.objects import ObjectAccess
from tenant_runtime.registry import RegistryReader
from tenant_runtime.store import ContextStore


class TenantRuntime:
    """Registry reader + JWT resolver + the routed services, sharing one client
    factory. ``runtime.resolve(token, addressed)`` gives the TenantContext every
    service takes."""

    def __init__(self, jwt: JWTSettings, registry_table: str | None = None, *, mode: Mode = "ambient",
                 region: str | None = None, endpoint_url: str | None = None, session: Any | None = None,
                 key_cache: DataKeyCache | None = None, registry_ttl: float = 30.0) -> None:
        self.clients = ClientFactory(mode, session=session, region=region, endpoint_url=endpoint_url)
        registry_client = (session or self.clients.session).client(
            "dynamodb", region_name=region, endpoint_url=endpoint_url, config=self.clients.config)
        self.registry = RegistryReader(registry_table, client=registry_client, ttl=registry_ttl)
        self.resolver = TenantResolver(jwt, self.registry)
        self.envelope = Envelope(lambda ctx: self.clients.client(ctx, "kms"), key_cache)
        self.waker = DatabaseWaker(lambda region: self.clients.own_client("rds", region))
        self.store = ContextStore(self.envelope, lambda ctx: self.clients.client(ctx, "secretsmanager"),
                                  waker=self.waker)
        self.objects = ObjectAccess(lambda ctx: self.clients.client(ctx, "s3"))
        self.jobs = JobQueue(lambda ctx: self.clients.client(ctx, "sqs"))

    def resolve(self, token: str, addressed_tenant: str | None = None) -> TenantContext:
        return self.resolver.resolve(token, addressed_tenant)

    def close(self) -> None:
        self.store.close()
