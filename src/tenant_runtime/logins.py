"""Per-tenant logins to the store: each tenant's credentials, read from its
secret (never from the registry record), cached and read again after a refused
login so that connections open throughout a rotation (AWSCURRENT again, then
AWSPENDING), and its connections (LRU over tenants): a few kept idle, and at
most its role's CONNECTION LIMIT open at once in this process, a request past
it waiting for one another request returns instead of being refused by the
server (``too many connections for role``). Per tenant: a busy tenant makes no
other wait. Only bookkeeping: the sync and async drivers open and close the
connections."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Sequence
from typing import Any, NamedTuple

import psycopg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tenant_runtime.blocking import may_block
from tenant_runtime.cache import TTLCache
from tenant_runtime.context import TenantContext
from tenant_runtime.errors import StoreUnavailable, TenantMismatch, runtime_closed
from tenant_runtime.models import StoreConnection

# What the first login of a tenant reads to size its connections (``IdleConnections.size``):
# its role's CONNECTION LIMIT (-1: none). pg_roles is readable by every role.
ROLE_LIMIT_SQL = b"SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user"
# Secrets Manager's staging labels.
CURRENT, PENDING = "AWSCURRENT", "AWSPENDING"
_BAD, _IDLE = psycopg.pq.ConnStatus.BAD, psycopg.pq.TransactionStatus.IDLE


class LoginRefused(StoreUnavailable):
    """The tenant's store refused its login, or its secret could not be read: a
    StoreUnavailable (503), unless its record is stale (the store asks the
    registry again: a finalized move drops the old store's role and secret, and
    libpq gives a refused login no SQLSTATE to tell that apart)."""


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


class Waiter:
    """A checkout waiting for one of its login's connections (``IdleConnections.take``):
    handed a returned connection, or None (its slot: log in). The sync driver's; the
    async driver's (``aio``) wakes its task on its loop instead."""

    __slots__ = ("granted", "conn", "_event")

    def __init__(self) -> None:
        self.granted, self.conn, self._event = False, None, threading.Event()

    def grant(self, conn: Any | None) -> None:  # under the pool's lock
        self.granted, self.conn = True, conn
        self._event.set()

    def wait(self, timeout: float) -> None:
        self._event.wait(timeout)


class IdleConnections:
    """One login's connections in this process: the idle ones (at most
    ``max_idle``) and how many are open, idle or in use (at most ``max_open``:
    the role admits its CONNECTION LIMIT across every process, and one login
    past it is refused outright). A checkout past the cap waits for a
    connection another request returns (``take``, ``wait``, first come first
    served). Until the first login read the role's limit (``size``) one
    connection is open at a time. Only bookkeeping: the drivers open and close
    connections, sync or async."""

    def __init__(self, max_idle: int, store: StoreConnection | None = None, max_open: int | None = None) -> None:
        self.max_idle, self.store = max_idle, store  # the store they are connected to
        self.cap = max_open  # this process's own bound (None: the role's limit alone)
        self.limit, self.sized = 1, False  # the lower of cap and the role's limit: one login until it read it
        self.max_open = 1  # limit, or fewer while other processes hold the rest of the role's (``refused``)
        self.open = 0  # connections counted against max_open: idle, in use, or being opened
        self.idle: list[Any] = []
        self.waiters: deque[Any] = deque()
        self.lock = threading.Lock()

    def take(self, waiter: Callable[[], Any] = Waiter) -> Any:
        """An idle connection; None: a slot to log in with (``release`` it if the
        login fails); or, at the cap, a ``waiter()`` queued for ``wait``."""
        with self.lock:
            if self.idle:
                return self.idle.pop()
            if self.open < self.max_open:
                self.open += 1
                return None
            queued = waiter()
            self.waiters.append(queued)
            return queued

    def expired(self, waiter: Any) -> bool:
        """``waiter``'s wait ended without a grant: it leaves the queue (True);
        False: it was granted meanwhile (its ``conn``, or a slot, is its own)."""
        with self.lock:
            if waiter.granted:
                return False
            self.waiters.remove(waiter)
            return True

    def size(self, role_limit: int) -> None:
        """The role's CONNECTION LIMIT (-1: none), read by the first login: the cap
        from now on is the lower of it and this process's own, if any."""
        limits = [n for n in (self.cap, role_limit if role_limit >= 0 else None) if n is not None]
        with self.lock:
            self.limit = self.max_open = max(1, min(limits)) if limits else 1 << 30
            self.sized = True
            while self.waiters and self.open < self.max_open:
                self.open += 1
                self.waiters.popleft().grant(None)

    def refused(self) -> bool:
        """The server refused a login of this slot for the role's CONNECTION LIMIT:
        other processes hold the rest of it. The slot is dropped and the cap
        lowered to what this process holds (until it stops needing them all:
        ``release``). True: it holds some, wait for one; False: none, log in again later."""
        with self.lock:
            self.open -= 1
            self.max_open = max(1, self.open)
            return self.open > 0

    def keep(self, conn: Any) -> bool:
        """Keep ``conn`` for reuse (a waiter's first) when it is clean and there is
        room; False: close it, then ``release`` its slot."""
        # The libpq states, not ``conn.closed`` / ``conn.info``: those build a
        # ConnectionInfo and an enum per call, on every statement's return.
        pgconn = conn.pgconn
        clean = pgconn.status != _BAD and pgconn.transaction_status == _IDLE
        with self.lock:
            if clean:
                if self.waiters:
                    self.waiters.popleft().grant(conn)
                    return True
                if len(self.idle) < self.max_idle:
                    self.idle.append(conn)
                    return True
        return False

    def release(self) -> None:
        """A connection of this login closed (or never opened): its slot to the
        first waiter (to log in with), else free."""
        with self.lock:
            if self.waiters:
                self.waiters.popleft().grant(None)
            else:
                self.open -= 1
                self.max_open = self.limit  # demand fell below the cap: try the whole of it again

    def drain(self) -> list[Any]:
        """Retire the pool: its idle connections (for the caller to close); its
        waiters log in, and the connections in use are closed when returned (none kept idle)."""
        with self.lock:
            idle, self.idle, self.max_idle = self.idle, [], 0
            self.open -= len(idle)
            while self.waiters:  # each its own slot, past the cap: its login closed when returned
                self.open += 1
                self.waiters.popleft().grant(None)
        return idle


def role_full(exc: psycopg.OperationalError) -> bool:
    """A login the server refused for its role's CONNECTION LIMIT (libpq gives
    no SQLSTATE for a refused login: PostgreSQL's message, in English)."""
    return "too many connections for role" in str(exc)


class Patience:
    """How long one checkout may still wait (``TenantLogins.wait`` from its
    start), and its pause between logins the server refused."""

    __slots__ = ("wait", "deadline", "pause")

    def __init__(self, wait: float) -> None:
        self.wait, self.deadline, self.pause = wait, time.monotonic() + wait, 0.02

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def refused(self, ctx: TenantContext, pool: IdleConnections) -> float:
        """A login the server refused for the role's limit (``IdleConnections.refused``):
        0, wait for one of the process's connections; else the seconds to pause
        before logging in again (it holds none); StoreUnavailable past the deadline."""
        if pool.refused():
            return 0.0
        pause = self.pause
        if time.monotonic() + pause > self.deadline:
            raise busy(ctx, pool, self.wait)
        self.pause = min(2 * pause, 0.5)
        return pause


def busy(ctx: TenantContext, pool: IdleConnections, wait: float) -> StoreUnavailable:
    """A checkout of ``ctx``'s login that waited ``wait`` seconds for a connection in vain."""
    return StoreUnavailable(
        f"no connection of tenant {ctx.key!r} free within {wait:g} s: this process holds {pool.open}, its cap "
        "(the role's CONNECTION LIMIT or max_tenant_connections; fewer while other processes hold the rest "
        "of the role's); retry")


# -- a checkout that found no idle connection, written once for both drivers ------
# ``acquisition`` decides; its steps are the I/O, which the sync and async drivers
# each do their own way and send back (a step's failure thrown in, as ``store.advance`` does).

LOGIN = "login"  # log in as the tenant (the connection sent back; a refusal for the role's limit thrown in)


class WaitTurn(NamedTuple):
    """Wait up to ``timeout`` seconds for ``waiter``'s grant."""

    waiter: Any
    timeout: float


class ReadLimit(NamedTuple):
    """Run ``ROLE_LIMIT_SQL`` on ``conn`` (its value sent back)."""

    conn: Any


class Pause(NamedTuple):
    seconds: float


class Close(NamedTuple):
    conn: Any


CheckoutStep = str | WaitTurn | ReadLimit | Pause | Close


def acquisition(ctx: TenantContext, pool: IdleConnections, got: Any | None, wait: float,
                waiter: type) -> Generator[CheckoutStep, Any, tuple[Any, bool]]:
    """A connection for a checkout that found none idle, within ``wait`` seconds
    (else StoreUnavailable): (it, reused). ``got``: a slot to log in with (None),
    or a ``waiter`` (the driver's class) queued at the tenant's cap, given a
    connection another request returns or its slot. A login the server refuses
    for the role's CONNECTION LIMIT (other processes hold the rest) lowers this
    process's cap to what it holds and waits for one of those; holding none, it
    logs in again a moment later. The tenant's first login reads its role's
    limit (``IdleConnections.size``)."""
    patience = Patience(wait)
    while True:
        if got is not None:
            try:
                yield WaitTurn(got, patience.left())
            except BaseException:  # interrupted: what it was granted meanwhile goes back
                if not pool.expired(got):
                    yield from _give_back(pool, got.conn)
                raise
            if pool.expired(got):
                raise busy(ctx, pool, wait)
            if got.conn is not None:
                return got.conn, True
        try:  # its slot (a granted one too): log in
            conn = yield LOGIN
            if not pool.sized:
                try:
                    pool.size((yield ReadLimit(conn)))
                except psycopg.Error:
                    pass  # unread: the next login reads it (a broken connection fails at its BEGIN)
            return conn, False
        except psycopg.OperationalError:  # the role's limit (the driver's login): the server's, not ours
            if pause := patience.refused(ctx, pool):
                yield Pause(pause)
        except BaseException:
            pool.release()
            raise
        got = pool.take(waiter)
        if got is not None and got.__class__ is not waiter:
            return got, True


def _give_back(pool: IdleConnections, conn: Any | None) -> Generator[CheckoutStep, Any, None]:
    """A granted connection (None: a slot) not used after all."""
    if conn is not None:
        if pool.keep(conn):
            return
        yield Close(conn)
    pool.release()


class TenantLogins:
    """Per-tenant logins: each tenant's credentials (from its secret, cached and
    re-read after a failed login) and its connections (LRU over tenants), at
    most ``max_connections`` open per tenant (None: its role's CONNECTION LIMIT;
    the lower of the two otherwise), a checkout past it waiting up to ``wait``
    seconds for one (then ``busy``)."""

    def __init__(self, secret_client_for: Callable[[TenantContext], Any], max_idle_per_tenant: int = 4,
                 max_tenants: int = 256, secret_ttl: float = 300.0, connect_timeout: int = 5,
                 max_connections: int | None = None, wait: float = 10.0) -> None:
        if max_connections is not None and max_connections < 1:
            raise ValueError("max_tenant_connections must be 1 or more (None: the role's CONNECTION LIMIT)")
        self.secret_client_for = secret_client_for
        self.max_idle, self.max_tenants, self.connect_timeout = max_idle_per_tenant, max_tenants, connect_timeout
        self.max_connections, self.wait = max_connections, wait
        self._secrets: TTLCache[StoreSecret] = TTLCache(max_tenants, secret_ttl)
        self.pools: OrderedDict[str, IdleConnections] = OrderedDict()
        self._lock = threading.Lock()
        self.closed = False  # drained for good: a login opened after it would never be closed

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
            raise LoginRefused(f"store secret of tenant {ctx.key!r} unusable: {exc}") from None
        # The secret must name this tenant's role and schema: a secret of another
        # login is refused. Its host and database are not followed: connections
        # go to the store the registry record names (during a move the secret is
        # rewritten a moment after the record).
        if (secret.username, secret.schema_) != (store.role, store.schema_name):
            raise TenantMismatch(ctx.key, f"{secret.dbname}/{secret.schema_}/{secret.username}", "store secret")
        return secret

    def login_failed(self, ctx: TenantContext, exc: Exception) -> LoginRefused:
        self._secrets.pop(ctx.resources.store.secret_arn)  # re-read next time
        return LoginRefused(f"store of tenant {ctx.key!r} unreachable: {exc}")

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
            if self.closed:
                raise runtime_closed()
            pool = self.pools.get(ctx.key)
            if pool is not None and (pool.store is store or pool.store == store):
                self.pools.move_to_end(ctx.key)
                return pool, ()
            # None yet, or connected to a store the tenant was moved away from: never reused.
            evicted: list[Any] = pool.drain() if pool is not None else []
            pool = self.pools[ctx.key] = IdleConnections(self.max_idle, store, self.max_connections)
            self.pools.move_to_end(ctx.key)
            while len(self.pools) > self.max_tenants:
                evicted += self.pools.popitem(last=False)[1].drain()
            return pool, evicted

    def drain(self) -> list[Any]:
        """Close for good (the store's close()): every idle connection, for the caller to close."""
        with self._lock:
            pools, self.pools, self.closed = list(self.pools.values()), OrderedDict(), True
        return [conn for pool in pools for conn in pool.drain()]
