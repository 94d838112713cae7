"""The async API: ``AsyncTenantRuntime`` for asyncio applications.

Same rules, same code: resolution, the store's operations and the services are
the sync implementations, driven so that the event loop never waits on I/O:

* PostgreSQL through psycopg's async connections (``AsyncContextStore``: the
  store's operations with an async driver; per-tenant logins or the shared
  pool as ``psycopg_pool.AsyncConnectionPool``).
* AWS through a bounded thread pool (``Offloader``, ``io_workers`` threads).
  Work that is usually served from a cache — token verification, the registry
  record, the revocation list, sealing/opening content with a cached data key
  — runs on the loop, and is handed to the pool only when it would make a
  network call (``tenant_runtime.blocking``). Pre-signing, SQS and anything
  uncached run on the pool.

Why threads and not aioboto3/aiobotocore: aiobotocore pins botocore to a
narrow range (3.10 wants botocore < 1.43.118; boto3 1.44 is current), so an
application would have to hold its boto3 back for the runtime's sake; and
the runtime's AWS calls are rare (cached) or single calls, where a bounded
thread pool costs one hop, keeps one set of clients, retries and assume-role
credentials for both APIs, and cannot starve the loop's default executor.
A task cancelled while its AWS call runs gets CancelledError at once; the
thread finishes that one call and its result is dropped.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import psycopg

from tenant_runtime.auth import Addressed, JWTSettings, TenantResolver
from tenant_runtime.blocking import WouldBlock, blocking_allowed, inline
from tenant_runtime.context import TenantContext, verified
from tenant_runtime.documents import (
    LOCK_ITEMS_SQL,
    Document,
    DocumentPage,
    NewDocument,
    ReindexProgress,
    ReindexResult,
    Summary,
)
from tenant_runtime.errors import RegistryUnavailable, StoreMoved, WritesFrozen, runtime_closed
from tenant_runtime.gateway import Gateway, PoolBase
from tenant_runtime.jobs import Job, JobMessage
from tenant_runtime.logins import (
    LOGIN,
    ROLE_LIMIT_SQL,
    CheckoutStep,
    IdleConnections,
    LoginRefused,
    Pause,
    ReadLimit,
    TenantLogins,
    WaitTurn,
    acquisition,
    role_full,
)
from tenant_runtime.objects import PresignedUpload
from tenant_runtime.runtime import TenantRuntime
from tenant_runtime.search import SearchResult, Suggestions
from tenant_runtime.store import (
    REFUSED,
    STALE,
    Compute,
    ConversationPage,
    Message,
    Operation,
    Page,
    Statement,
    StoreOperations,
    advance,
    left,
    relocated,
)
from tenant_runtime.transaction import (
    abegin,
    aguarded,
    aheld,
    areset_session,
    read_errors_as_moved,
    store_errors,
    write_errors_as_moved,
)

T = TypeVar("T")


def _allowed(fn: Callable[..., T], args: tuple) -> T:
    with blocking_allowed():
        return fn(*args)


class Offloader:
    """A bounded thread pool for blocking calls, and the inline-first policy."""

    def __init__(self, max_workers: int = 8) -> None:
        self.executor = ThreadPoolExecutor(max_workers, thread_name_prefix="tenant-runtime-io")
        self.offloaded = 0  # calls handed to the pool, for tests and metrics
        self.closed = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the pool (the runtime's error once it is closed, not the executor's RuntimeError)."""
        if self.closed:
            raise runtime_closed()
        self.offloaded += 1
        return await asyncio.get_running_loop().run_in_executor(self.executor, _allowed, fn, args)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the loop when it needs nothing but cached state,
        else (it reached ``may_block()``, having changed nothing) on the pool."""
        try:
            with inline():
                return fn(*args)
        except WouldBlock:
            pass
        return await self.run(fn, *args)

    def close(self) -> None:
        self.closed = True
        self.executor.shutdown(wait=False, cancel_futures=True)


_DEFAULT: Offloader | None = None


def default_offloader() -> Offloader:
    """The process's offloader for resolvers given without one (the middleware
    over a sync ``TenantResolver``)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Offloader()
    return _DEFAULT


class AsyncTenantResolver:
    """``TenantResolver`` for the event loop."""

    def __init__(self, resolver: TenantResolver, offload: Offloader | None = None) -> None:
        self.resolver, self.offload = resolver, offload or default_offloader()

    @classmethod
    def of(cls, resolver: TenantResolver | AsyncTenantResolver) -> AsyncTenantResolver:
        return resolver if isinstance(resolver, AsyncTenantResolver) else cls(resolver)

    async def resolve(self, token: str, addressed_tenant: Addressed = None,
                      workspace: str | None = None) -> TenantContext:
        return await self.offload.call(self.resolver.resolve, token, addressed_tenant, workspace)

    async def resolve_header(self, authorization: str | None, addressed_tenant: Addressed = None,
                             workspace: str | None = None) -> TenantContext:
        return await self.offload.call(self.resolver.resolve_header, authorization, addressed_tenant, workspace)


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class AsyncWaiter:
    """``logins.Waiter`` for a task: granted from any thread, woken on its loop."""

    __slots__ = ("granted", "conn", "_loop", "_future")

    def __init__(self) -> None:
        self.granted, self.conn = False, None
        self._loop = asyncio.get_running_loop()
        self._future = self._loop.create_future()

    def grant(self, conn: Any | None) -> None:  # under the pool's lock
        self.granted, self.conn = True, conn
        self._loop.call_soon_threadsafe(_wake, self._future)

    async def wait(self, timeout: float) -> None:
        await asyncio.wait((self._future,), timeout=timeout)


class AsyncSharedPool(PoolBase):
    """The shared pool for the event loop (``psycopg_pool.AsyncConnectionPool``)."""

    def __init__(self, settings: Gateway, secret_client: Callable[[], Any], offload: Offloader) -> None:
        super().__init__(settings, secret_client)
        self.offload = offload
        self._opening: asyncio.Lock | None = None

    async def serves(self, ctx: TenantContext) -> bool:
        return await self.offload.call(self.login.serves, ctx)

    async def _kwargs(self) -> dict[str, Any]:
        return await self.offload.call(self.login.connect_kwargs)

    async def pool(self) -> Any:
        if self._pool is None:
            self._opening = self._opening or asyncio.Lock()
            async with self._opening:
                if self._closed:
                    raise runtime_closed()
                if self._pool is None:
                    from psycopg_pool import AsyncConnectionPool

                    s = self.settings
                    pool = AsyncConnectionPool(kwargs=self._kwargs, min_size=s.min_size, max_size=s.max_size,
                                               max_idle=s.max_idle, timeout=s.timeout,
                                               check=AsyncConnectionPool.check_connection,  # as the sync pool's
                                               name="tenant_runtime_gateway", open=False)
                    await pool.open()
                    self._pool = pool
        return self._pool

    @asynccontextmanager
    async def connection(self, ctx: TenantContext) -> AsyncIterator[tuple[Any, str]]:
        from psycopg_pool import PoolTimeout

        pool = await self.pool()
        try:
            async with pool.connection() as conn:
                yield conn, ctx.resources.store.role
        except PoolTimeout as exc:
            raise self.exhausted(exc) from None

    async def close(self) -> None:
        pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            await pool.close()


class AsyncContextStore(StoreOperations):
    """The context store for the event loop: the sync store's operations,
    driven over psycopg's async connections (``waker``: see ContextStore)."""

    def __init__(self, envelope: Any, logins: TenantLogins, offload: Offloader,
                 gateway: AsyncSharedPool | None = None, statement_timeout: float | None = None,
                 waker: Any | None = None, objects: Any | None = None,
                 reresolve: Callable[[TenantContext], TenantContext] | None = None) -> None:
        self.envelope, self.logins, self.offload, self.objects = envelope, logins, offload, objects
        self.gateway, self.statement_timeout, self.waker = gateway, statement_timeout, waker
        self.reresolve = reresolve

    @asynccontextmanager
    async def transaction(self, ctx: TenantContext) -> AsyncIterator[psycopg.AsyncConnection]:
        """An async connection inside one transaction scoped to ``ctx``'s tenant,
        on the tenant's own login as ContextStore.transaction says (an idle
        connection the server closed: see ContextStore._scoped_cursor; refused on
        entry: see ContextStore._caller_transaction)."""
        ctx, refused = verified(ctx), None
        try:
            async with AsyncExitStack() as entered:
                try:
                    cur = await entered.enter_async_context(self._transaction(ctx, caller=True))
                except REFUSED as exc:
                    refused = exc
                else:
                    yield await entered.enter_async_context(aguarded(cur.connection))
        except STALE as exc:  # see ContextStore._caller_transaction
            if (moved := await self._left(ctx, exc)) is None:
                raise
            raise moved from exc
        if refused is not None:  # see ContextStore._caller_transaction
            raise (await self._relocated(ctx, refused))[1]

    async def _left(self, ctx: TenantContext, exc: Exception) -> StoreMoved | WritesFrozen | None:
        """See ContextStore._left."""
        if self.reresolve is None:
            return None
        try:
            fresh: TenantContext | RegistryUnavailable = verified(
                await self.offload.call(self.reresolve, ctx, True))
        except RegistryUnavailable as failure:
            fresh = failure
        moved = left(ctx, fresh, exc)
        if isinstance(moved, StoreMoved):
            await self._forget(ctx)
        return moved

    @asynccontextmanager
    async def _transaction(self, ctx: TenantContext, caller: bool = False) -> AsyncIterator[psycopg.AsyncCursor]:
        """The cursor that ran the scope statement, inside the tenant's transaction;
        ``ctx``: verified by the caller. One cursor for the transaction's statements
        (``conn.execute`` makes one per statement). ``caller``: as ContextStore._scoped_cursor's."""
        with store_errors(ctx.key):
            if not caller and self.gateway is not None and await self.gateway.serves(ctx):
                async with self.gateway.connection(ctx) as (conn, role):
                    cur = await abegin(conn, ctx.key, role, self.statement_timeout)
                    async with aheld(conn, cur):
                        yield cur
                return
            pool, conn = await self._checkout(ctx)
            reused = conn is not None and conn.__class__ is not AsyncWaiter
            if not reused:
                conn, reused = await self._acquire(ctx, pool, conn)
            try:
                while True:
                    try:
                        cur = await abegin(conn, ctx.key, None, self.statement_timeout)
                        break
                    except psycopg.OperationalError:
                        if not reused:  # a fresh login failed too (``begin``: retried once)
                            raise
                    await conn.close()
                    conn, reused = await self._connect(ctx), False
                async with aheld(conn, cur):  # the caller's statements: never run again
                    yield cur
            finally:
                if caller:
                    await areset_session(conn)
                if not pool.keep(conn):
                    try:
                        await conn.close()
                    finally:  # its slot, also when the task is cancelled while it closes
                        pool.release()

    async def _checkout(self, ctx: TenantContext) -> tuple[IdleConnections, Any | None]:
        """The pool to return a connection to, and one of its idle connections
        (None: a slot to log in with; an AsyncWaiter: at the tenant's cap)."""
        if self.waker is not None:  # see ContextStore: TenantWaking until a hibernated database is up
            await self.offload.call(self.waker.ensure_awake, ctx)
        pool, evicted = self.logins.idle(ctx)
        for old in evicted:
            await old.close()
        return pool, pool.take(AsyncWaiter)

    async def _acquire(self, ctx: TenantContext, pool: IdleConnections,
                       got: AsyncWaiter | None) -> tuple[psycopg.AsyncConnection, bool]:
        """See ContextStore._acquire."""
        steps = acquisition(ctx, pool, got, self.logins.wait, AsyncWaiter)
        done, step = advance(steps, None)
        while not done:
            try:
                result = await self._checkout_step(ctx, step)
            except BaseException as exc:  # noqa: BLE001 - raised inside the acquisition (cancelled too)
                done, step = advance(steps, None, exc)
            else:
                done, step = advance(steps, result)
        return step

    async def _checkout_step(self, ctx: TenantContext, step: CheckoutStep) -> Any:
        if step is LOGIN:
            return await self._connect(ctx)
        if isinstance(step, WaitTurn):
            return await step.waiter.wait(step.timeout)
        if isinstance(step, ReadLimit):
            return (await (await step.conn.execute(ROLE_LIMIT_SQL)).fetchone())[0]
        if isinstance(step, Pause):
            return await asyncio.sleep(step.seconds)
        return await step.conn.close()

    async def _connect(self, ctx: TenantContext) -> psycopg.AsyncConnection:
        secret = await self.offload.call(self.logins.credentials, ctx)
        try:
            return await psycopg.AsyncConnection.connect(**self.logins.connect_kwargs(secret, ctx.resources.store))
        except psycopg.OperationalError as exc:
            if role_full(exc):  # raised as it is: no password to try again
                raise
            error = exc
        # A rotated password (TenantLogins.rotated): AWSCURRENT read again, then AWSPENDING.
        for candidate in await self.offload.call(self.logins.rotated, ctx, secret):
            try:
                kwargs = self.logins.connect_kwargs(candidate, ctx.resources.store)
                conn = await psycopg.AsyncConnection.connect(**kwargs)
            except psycopg.OperationalError as again:
                error = again
                continue
            self.logins.remember(ctx, candidate)
            return conn
        raise self.logins.login_failed(ctx, error) from None

    async def _run(self, ctx: TenantContext, operation: Operation) -> Any:
        """See ContextStore._run."""
        ctx = verified(ctx)
        try:
            with read_errors_as_moved(ctx.key):
                return await self._drive(ctx, operation)
        except REFUSED as exc:
            refused = exc
        raise (await self._relocated(ctx, refused))[1]

    async def _drive(self, ctx: TenantContext, operation: Operation) -> Any:
        """Run ``operation``'s steps; ``ctx``: verified by the caller, once for all
        its statements (see ContextStore._drive)."""
        done, step = advance(operation, None)
        while not done:
            try:
                result = await (self.offload.call(step.fn, *step.args) if isinstance(step, Compute)
                                else self._statement(ctx, step))
            except Exception as exc:  # noqa: BLE001 - raised inside the operation (see ContextStore._run)
                done, step = advance(operation, None, exc)
            else:
                done, step = advance(operation, result)
        return step

    async def _write(self, ctx: TenantContext, make: Callable[[TenantContext], Operation]) -> Any:
        """See ContextStore._write: a write refused by a moved tenant's old
        store is retried once on the store the registry names now."""
        ctx = verified(ctx)
        try:
            with write_errors_as_moved(ctx.key):
                return await self._drive(ctx, make(ctx))
        except REFUSED as exc:
            moved = exc
        fresh, _ = await self._relocated(ctx, moved, patient=isinstance(moved, LoginRefused))
        with write_errors_as_moved(fresh.key):
            return await self._drive(fresh, make(fresh))

    async def _relocated(self, ctx: TenantContext, refused: StoreMoved | LoginRefused,
                         patient: bool = True) -> tuple[TenantContext, StoreMoved]:
        """See ContextStore._relocated."""
        if self.reresolve is None:
            raise refused
        fresh = verified(await self.offload.call(self.reresolve, ctx, patient))
        moved = relocated(ctx, fresh, refused)
        await self._forget(ctx)
        return fresh, moved

    async def _forget(self, ctx: TenantContext) -> None:
        """See ContextStore.forget."""
        for conn in self.logins.forget(ctx):
            await conn.close()

    async def _statement(self, ctx: TenantContext, step: Statement) -> Any:
        async with self._transaction(ctx) as cur:  # ctx: verified by the operation
            if step.locks:
                await cur.execute(LOCK_ITEMS_SQL, (list(step.locks),))
            await cur.execute(step.query, step.params, prepare=step.prepare)
            if step.fetch == "rowcount":
                return cur.rowcount
            return await (cur.fetchone() if step.fetch == "one" else cur.fetchall())

    async def close(self) -> None:
        for conn in self.logins.drain():
            await conn.close()
        if self.gateway is not None:
            await self.gateway.close()

    # -- API (see ContextStore) -------------------------------------------------

    async def append(self, ctx: TenantContext, conversation_id: str, role: str, content: str,
                     metadata: dict[str, Any] | None = None) -> Message:
        return await self._write(ctx, lambda c: self._append(c, conversation_id, role, content, metadata))

    async def history(self, ctx: TenantContext, conversation_id: str, limit: int = 50,
                      cursor: str | None = None) -> Page:
        return await self._run(ctx, self._history(ctx, conversation_id, limit, cursor))

    async def list_conversations(self, ctx: TenantContext, limit: int = 50,
                                 cursor: str | None = None) -> ConversationPage:
        return await self._run(ctx, self._list_conversations(ctx, limit, cursor))

    async def delete_conversation(self, ctx: TenantContext, conversation_id: str) -> bool:
        return await self._write(ctx, lambda c: self._delete_conversation(c, conversation_id))

    async def put_document(self, ctx: TenantContext, doc_id: str, title: str, body: str,
                           metadata: dict[str, Any] | None = None, source: str | None = None) -> Document:
        return await self._write(ctx, lambda c: self._put_document(c, doc_id, title, body, metadata, source))

    async def put_documents(self, ctx: TenantContext,
                            documents: Sequence[NewDocument | Mapping[str, Any]]) -> list[Document]:
        return await self._write(ctx, lambda c: self._put_documents(c, documents))

    async def put_document_from_upload(self, ctx: TenantContext, doc_id: str, title: str, key: str,
                                       metadata: dict[str, Any] | None = None,
                                       source: str | None = None) -> Document:
        return await self._write(ctx, lambda c: self._put_document_from_upload(c, doc_id, title, key, metadata,
                                                                                source))

    async def get_document(self, ctx: TenantContext, doc_id: str) -> Document | None:
        return await self._run(ctx, self._get_document(ctx, doc_id))

    async def list_documents(self, ctx: TenantContext, limit: int = 50, cursor: str | None = None) -> DocumentPage:
        return await self._run(ctx, self._list_documents(ctx, limit, cursor))

    async def delete_document(self, ctx: TenantContext, doc_id: str) -> bool:
        return await self._write(ctx, lambda c: self._delete_document(c, doc_id))

    async def search(self, ctx: TenantContext, query: str, *, filters: dict[str, Any] | None = None,
                     facets: list[str] | None = None, limit: int = 10, offset: int = 0, cursor: str | None = None,
                     fuzzy: bool = False, include_summaries: bool = False) -> SearchResult:
        return await self._run(ctx, self._search(ctx, query, filters, facets, limit, offset, cursor, fuzzy,
                                                 include_summaries))

    async def put_summary(self, ctx: TenantContext, conversation_id: str, text: str) -> Summary:
        return await self._write(ctx, lambda c: self._put_summary(c, conversation_id, text))

    async def get_summary(self, ctx: TenantContext, conversation_id: str) -> Summary | None:
        return await self._run(ctx, self._get_summary(ctx, conversation_id))

    async def suggest(self, ctx: TenantContext, prefix: str, limit: int = 10) -> Suggestions:
        return await self._run(ctx, self._suggest(ctx, prefix, limit))

    async def unindexed(self, ctx: TenantContext) -> int:
        return await self._run(ctx, self._unindexed(ctx))

    async def index_analyzers(self, ctx: TenantContext) -> list[str]:
        return await self._run(ctx, self._index_analyzers(ctx))

    async def reindex(self, ctx: TenantContext, if_unindexed: bool = False,
                      progress: ReindexProgress | None = None) -> ReindexResult | None:
        return await self._write(ctx, lambda c: self._reindex(c, if_unindexed, progress))


class AsyncObjectAccess:
    """``ObjectAccess`` on the pool (signing may refresh credentials; multipart
    uploads call S3)."""

    def __init__(self, objects: Any, offload: Offloader) -> None:
        self.objects, self.offload = objects, offload

    async def presign_upload(self, ctx: TenantContext, filename: str, size: int,
                             content_type: str) -> PresignedUpload:
        return await self.offload.run(self.objects.presign_upload, ctx, filename, size, content_type)

    async def complete_multipart(self, ctx: TenantContext, key: str, upload_id: str, etags: list[str]) -> None:
        await self.offload.run(self.objects.complete_multipart, ctx, key, upload_id, etags)

    async def presign_download(self, ctx: TenantContext, key: str) -> str:
        return await self.offload.run(self.objects.presign_download, ctx, key)


class AsyncJobQueue:
    """``JobQueue`` on the pool; ``work`` takes a sync or an async handler (an
    async one runs on the loop). A long poll (``wait_seconds``) holds one pool
    thread for its duration: size ``io_workers`` for the workers you run."""

    def __init__(self, jobs: Any, offload: Offloader) -> None:
        self.jobs, self.offload = jobs, offload

    async def schedule(self, ctx: TenantContext, job: Job, delay: int = 0) -> str:
        return await self.offload.run(self.jobs.schedule, ctx, job, delay)

    async def work(self, ctx: TenantContext, handler: Callable[[Job, JobMessage], Any], max_messages: int = 10,
                   wait_seconds: int = 0) -> dict[str, int]:
        if inspect.iscoroutinefunction(handler):
            loop, coroutine = asyncio.get_running_loop(), handler

            def handler(job: Job, message: JobMessage) -> Any:  # noqa: F811 - runs on a pool thread
                return asyncio.run_coroutine_threadsafe(coroutine(job, message), loop).result()

        return await self.offload.run(self.jobs.work, ctx, handler, max_messages, wait_seconds)


class AsyncTenantRuntime:
    """``TenantRuntime`` for asyncio: the same settings (and ``io_workers``,
    the AWS thread pool's size); ``await runtime.resolve(...)``, ``await
    runtime.store.append(...)``; ``await runtime.aclose()`` at shutdown (or
    ``async with``)."""

    def __init__(self, jwt: JWTSettings, registry_table: str | None = None, *, gateway: Gateway | None = None,
                 io_workers: int = 8, **settings: Any) -> None:
        self.sync = TenantRuntime(jwt, registry_table, **settings)
        self.offload = Offloader(io_workers)
        self.clients, self.registry, self.envelope = self.sync.clients, self.sync.registry, self.sync.envelope
        self.revocations = self.sync.revocations
        self.resolver = AsyncTenantResolver(self.sync.resolver, self.offload)
        shared = AsyncSharedPool(gateway, lambda: self.sync.platform_client("secretsmanager"),
                                 self.offload) if gateway else None
        cap = self.sync.store.logins
        logins = TenantLogins(lambda ctx: self.clients.client(ctx, "secretsmanager"),
                              max_connections=cap.max_connections, wait=cap.wait)
        self.store = AsyncContextStore(self.envelope, logins, self.offload, shared, self.sync.store.statement_timeout,
                                       self.sync.waker, self.sync.objects, reresolve=self.sync._reresolve)
        self.objects = AsyncObjectAccess(self.sync.objects, self.offload)
        self.jobs = AsyncJobQueue(self.sync.jobs, self.offload)

    async def resolve(self, token: str, addressed_tenant: Addressed = None,
                      workspace: str | None = None) -> TenantContext:
        return await self.resolver.resolve(token, addressed_tenant, workspace)

    async def context(self, tenant_id: str, workspace: str | None = None) -> TenantContext:
        """See ``TenantRuntime.context`` (workers, maintenance)."""
        return await self.offload.call(self.sync.context, tenant_id, workspace)

    async def aclose(self) -> None:
        await self.store.close()
        self.sync.close()
        self.offload.close()

    async def __aenter__(self) -> AsyncTenantRuntime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
