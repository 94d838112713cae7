"""Shared-pool mode: one bounded pool per process for every pooled tenant.

Per-tenant logins cost a connection per tenant per process (a tenant's role
is its login), which neither ``max_connections`` nor PgBouncer / RDS Proxy can
share across tenants. Here the process logs in once as the platform's gateway
role — LOGIN, NOINHERIT, member of every pooled tenant's role and nothing
else, owning nothing, privileged on nothing (``tenantctl check`` verifies it)
— through a psycopg_pool pool bounded to ``max_size`` connections, and each
transaction switches to the tenant: ``SET LOCAL ROLE`` + ``app.tenant_id``
(``transaction.scope_statement``). The tenant role's grants and FORCE RLS stay the
boundary: as itself the gateway reads nothing, and as tenant A's role with
tenant A set it reaches exactly what A's own login reaches.

Only the runtime's own statements ride the pool (a caller's ``store.transaction``
block runs on the tenant's own login: the gateway may become any pooled
tenant's role), and they keep nothing in the session (no SET, no prepared
statements: psycopg's ``prepare_threshold`` is off), so the pool is safe behind PgBouncer in
transaction mode; a transaction's first round trip is one simple-protocol
query of several statements (``BEGIN; SET LOCAL role = ...; SET LOCAL
app.tenant_id = ...``), which PgBouncer forwards as it is, the server
connection held from BEGIN to COMMIT. Every checkout runs an empty query first
(``ConnectionPool.check_connection``, one round trip): a connection the server
closed while it sat idle in the pool (a restart, a failover, an idle timeout)
is replaced there instead of failing the request that drew it, which, unlike
a per-tenant login, has no fresh login to retry on. Tenants whose store is
elsewhere (a dedicated database, or another cell's server) keep their
per-tenant logins: ``serves(ctx)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from tenant_runtime.blocking import may_block
from tenant_runtime.cache import TTLCache
from tenant_runtime.context import TenantContext
from tenant_runtime.errors import StoreUnavailable, runtime_closed
from tenant_runtime.models import Tier

SECRET_ENV = "TENANT_GATEWAY_SECRET_ARN"
APPLICATION_NAME = "tenant_runtime_gateway"


class Gateway(BaseModel):
    """How the shared pool logs in and how big it may grow. Give the platform's
    gateway secret (``secret_arn``: the platform stack's ``gateway_secret_arn``)
    or a libpq ``conninfo`` (e.g. a PgBouncer in front of the database)."""

    model_config = ConfigDict(frozen=True)

    secret_arn: str | None = None
    conninfo: str | None = None
    min_size: int = 1
    max_size: int = 10  # connections this process may hold, whatever the number of tenants
    timeout: float = 10.0  # waiting for a free connection, then StoreUnavailable (503)
    max_idle: float = 300.0
    secret_ttl: float = 300.0  # a rotated password is picked up by new connections within this
    connect_timeout: int = 5

    @model_validator(mode="after")
    def _one_source(self) -> Gateway:
        if (self.secret_arn is None) == (self.conninfo is None):
            raise ValueError("give exactly one of secret_arn or conninfo")
        if not 0 <= self.min_size <= self.max_size or self.max_size < 1:
            raise ValueError("0 <= min_size <= max_size and max_size >= 1 are required")
        return self


class GatewayLogin:
    """The gateway's credentials (secret cached ``secret_ttl``) and which
    tenants its database holds."""

    def __init__(self, settings: Gateway, secret_client: Callable[[], Any]) -> None:
        self.settings, self.secret_client = settings, secret_client
        self._secret: TTLCache[dict[str, Any]] = TTLCache(1, settings.secret_ttl)

    def credentials(self) -> dict[str, Any]:
        """host, port, dbname, user, password (blocking on a cache miss)."""
        hit, creds = self._secret.get("gateway")
        if hit and creds is not None:
            return creds
        s = self.settings
        if s.conninfo is not None:
            from psycopg.conninfo import conninfo_to_dict

            raw = conninfo_to_dict(s.conninfo)
            creds = {"host": raw.get("host", "localhost"), "port": int(raw.get("port") or 5432),
                     "dbname": raw.get("dbname", ""), "user": raw.get("user", ""), "password": raw.get("password")}
        else:
            creds = self._read_secret()
        self._secret.put("gateway", creds)
        return creds

    def _read_secret(self) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        from tenant_runtime.logins import StoreSecret

        may_block()
        try:
            raw = self.secret_client().get_secret_value(SecretId=self.settings.secret_arn)["SecretString"]
            secret = StoreSecret.model_validate_json(raw)
        except (ClientError, BotoCoreError, KeyError, ValidationError) as exc:
            raise StoreUnavailable(f"gateway secret unusable: {exc}") from None
        return {"host": secret.host, "port": secret.port, "dbname": secret.dbname, "user": secret.username,
                "password": secret.password}

    def connect_kwargs(self) -> dict[str, Any]:
        """psycopg.connect keywords; psycopg_pool calls this for every new connection."""
        creds = self.credentials()
        return {**creds, "connect_timeout": self.settings.connect_timeout, "application_name": APPLICATION_NAME,
                "prepare_threshold": None,  # no server-side prepared statements: PgBouncer-safe
                "autocommit": True}  # the transaction's BEGIN is the runtime's own (transaction.begin)

    def serves(self, ctx: TenantContext) -> bool:
        """A pooled tenant whose store is in the gateway's database."""
        store, creds = ctx.resources.store, self.credentials()
        return ctx.resources.tier is Tier.pooled and (store.endpoint, store.port, store.database) == (
            creds["host"], creds["port"], creds["dbname"])

    def forget(self) -> None:
        self._secret.pop("gateway")


class PoolBase:
    """What the sync and async shared pools share: settings, login, statistics."""

    def __init__(self, settings: Gateway, secret_client: Callable[[], Any]) -> None:
        self.settings, self.login = settings, GatewayLogin(settings, secret_client)
        self._pool: Any = None
        self._closed = False  # for good: a pool opened after close() would never be closed

    def exhausted(self, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"no shared-pool connection within {self.settings.timeout:g} s "
                                f"(max_size {self.settings.max_size}): {exc}")

    def stats(self) -> dict[str, int]:
        return dict(self._pool.get_stats()) if self._pool is not None else {}


class SharedPool(PoolBase):
    """The shared pool for threads (``psycopg_pool.ConnectionPool``), opened
    on first use."""

    def __init__(self, settings: Gateway, secret_client: Callable[[], Any]) -> None:
        super().__init__(settings, secret_client)
        self._lock = threading.Lock()

    def serves(self, ctx: TenantContext) -> bool:
        return self.login.serves(ctx)

    def pool(self) -> Any:
        with self._lock:
            if self._closed:
                raise runtime_closed()
            if self._pool is None:
                from psycopg_pool import ConnectionPool

                s = self.settings
                self._pool = ConnectionPool(kwargs=self.login.connect_kwargs, min_size=s.min_size,
                                            max_size=s.max_size, max_idle=s.max_idle, timeout=s.timeout,
                                            check=ConnectionPool.check_connection, name=APPLICATION_NAME,
                                            open=True)
            return self._pool

    @contextmanager
    def connection(self, ctx: TenantContext) -> Iterator[tuple[Any, str]]:
        """A gateway connection and the role each transaction switches to."""
        from psycopg_pool import PoolTimeout

        try:
            with self.pool().connection() as conn:
                yield conn, ctx.resources.store.role
        except PoolTimeout as exc:
            raise self.exhausted(exc) from None

    def close(self) -> None:
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.close()
