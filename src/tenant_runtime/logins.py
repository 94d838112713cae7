"""Per-tenant logins to the store: each tenant's credentials, read from its
secret (never from the registry record), cached and read again after a refused
login so that connections open throughout a rotation (AWSCURRENT again, then
AWSPENDING), and its idle connections (bounded per tenant, LRU over tenants).
Only bookkeeping: the sync and async drivers open and close the connections."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tenant_runtime.blocking import may_block
from tenant_runtime.cache import TTLCache
from tenant_runtime.context import TenantContext
from tenant_runtime.errors import StoreUnavailable, TenantMismatch
from tenant_runtime.models import StoreConnection

# Secrets Manager's staging labels.
CURRENT, PENDING = "AWSCURRENT", "AWSPENDING"
_BAD, _IDLE = psycopg.pq.ConnStatus.BAD, psycopg.pq.TransactionStatus.IDLE


class StoreSecret(BaseModel):
    """A login's secret JSON (Secrets Manager): the tenant's (ARN in
    StoreConnection.secret_arn) or the gateway's (the platform's)."""

    model_config = ConfigDict(frozen=True)

    username: str
    password: str = Field(repr=False)
    host: str
    port: int = 5432
    dbname: str
    schema_: str = Field(alias="schema")


class IdleConnections:
    """Idle connections of one login (bounded). Only bookkeeping: the drivers
    open and close connections, sync or async."""

    def __init__(self, max_idle: int, store: StoreConnection | None = None) -> None:
        self.max_idle, self.store = max_idle, store  # the store they are connected to
        self.idle: list[Any] = []
        self.lock = threading.Lock()

    def take(self) -> Any | None:
        with self.lock:
            return self.idle.pop() if self.idle else None

    def keep(self, conn: Any) -> bool:
        """Keep ``conn`` for reuse when it is clean and there is room; False: close it."""
        # The libpq states, not ``conn.closed`` / ``conn.info``: those build a
        # ConnectionInfo and an enum per call, on every statement's return.
        pgconn = conn.pgconn
        clean = pgconn.status != _BAD and pgconn.transaction_status == _IDLE
        with self.lock:
            if clean and len(self.idle) < self.max_idle:
                self.idle.append(conn)
                return True
        return False

    def drain(self) -> list[Any]:
        with self.lock:
            idle, self.idle = self.idle, []
        return idle


class TenantLogins:
    """Per-tenant logins: each tenant's credentials (from its secret, cached and
    re-read after a failed login) and its idle connections (LRU over tenants)."""

    def __init__(self, secret_client_for: Callable[[TenantContext], Any], max_idle_per_tenant: int = 4,
                 max_tenants: int = 256, secret_ttl: float = 300.0, connect_timeout: int = 5) -> None:
        self.secret_client_for = secret_client_for
        self.max_idle, self.max_tenants, self.connect_timeout = max_idle_per_tenant, max_tenants, connect_timeout
        self._secrets: TTLCache[StoreSecret] = TTLCache(max_tenants, secret_ttl)
        self.pools: OrderedDict[str, IdleConnections] = OrderedDict()
        self._lock = threading.Lock()

    def credentials(self, ctx: TenantContext) -> StoreSecret:
        store = ctx.resources.store
        hit, secret = self._secrets.get(store.secret_arn)
        if hit and secret is not None:
            return secret
        secret = self._read_secret(ctx)
        self._secrets.put(store.secret_arn, secret)
        return secret

    def _read_secret(self, ctx: TenantContext, stage: str = CURRENT) -> StoreSecret:
        from botocore.exceptions import BotoCoreError, ClientError

        store = ctx.resources.store
        may_block()
        try:
            raw = self.secret_client_for(ctx).get_secret_value(SecretId=store.secret_arn,
                                                               VersionStage=stage)["SecretString"]
            secret = StoreSecret.model_validate_json(raw)
        except (ClientError, BotoCoreError, KeyError, ValidationError) as exc:
            raise StoreUnavailable(f"store secret of tenant {ctx.key!r} unusable: {exc}") from None
        # The secret must name this tenant's role and schema: a secret of another
        # login is refused. Its host and database are not followed: connections
        # go to the store the registry record names (during a move the secret is
        # rewritten a moment after the record).
        if (secret.username, secret.schema_) != (store.role, store.schema_name):
            raise TenantMismatch(ctx.key, f"{secret.dbname}/{secret.schema_}/{secret.username}", "store secret")
        return secret

    def login_failed(self, ctx: TenantContext, exc: Exception) -> StoreUnavailable:
        self._secrets.pop(ctx.resources.store.secret_arn)  # re-read next time
        return StoreUnavailable(f"store of tenant {ctx.key!r} unreachable: {exc}")

    def rotated(self, ctx: TenantContext, refused: StoreSecret) -> list[StoreSecret]:
        """Credentials to try after ``refused`` failed to log in, only those with
        another password (libpq gives no SQLSTATE for a refused login, so any
        failure asks): the secret's AWSCURRENT read again (a rotation finished
        since it was cached), then AWSPENDING (a rotation between setting the new
        password on the role and promoting it: single-user rotation's window)."""
        self._secrets.pop(ctx.resources.store.secret_arn)
        tried, found = {refused.password}, []
        for stage in (CURRENT, PENDING):
            try:
                candidate = self._read_secret(ctx, stage)
            except StoreUnavailable:  # no AWSPENDING: no rotation in progress
                continue
            if candidate.password not in tried:
                tried.add(candidate.password)
                found.append(candidate)
        return found

    def forget(self, ctx: TenantContext) -> list[Any]:
        """Forget the tenant's secret and idle connections (its store moved);
        returns the connections for the caller to close."""
        self._secrets.pop(ctx.resources.store.secret_arn)
        with self._lock:
            pool = self.pools.pop(ctx.key, None)
        return pool.drain() if pool is not None else []

    def remember(self, ctx: TenantContext, secret: StoreSecret) -> None:
        """``secret`` logged in: the credentials to use from now on."""
        self._secrets.put(ctx.resources.store.secret_arn, secret)

    def connect_kwargs(self, secret: StoreSecret, store: StoreConnection) -> dict[str, Any]:
        return {"host": store.endpoint, "port": store.port, "dbname": store.database, "user": secret.username,
                "password": secret.password, "connect_timeout": self.connect_timeout,
                "application_name": "tenant_runtime",
                "autocommit": True}  # the transaction's BEGIN is the runtime's own (transaction.begin)

    def idle(self, ctx: TenantContext) -> tuple[IdleConnections, Sequence[Any]]:
        """The tenant's idle connections, and the connections of tenants
        evicted to make room (the caller closes them)."""
        store = ctx.resources.store
        with self._lock:
            pool = self.pools.get(ctx.key)
            if pool is not None and (pool.store is store or pool.store == store):
                self.pools.move_to_end(ctx.key)
                return pool, ()
            # None yet, or connected to a store the tenant was moved away from: never reused.
            evicted: list[Any] = pool.drain() if pool is not None else []
            pool = self.pools[ctx.key] = IdleConnections(self.max_idle, store)
            self.pools.move_to_end(ctx.key)
            while len(self.pools) > self.max_tenants:
                evicted += self.pools.popitem(last=False)[1].drain()
            return pool, evicted

    def drain(self) -> list[Any]:
        with self._lock:
            pools, self.pools = list(self.pools.values()), OrderedDict()
        return [conn for pool in pools for conn in pool.drain()]
