"""The routed context store: conversation history of one tenant, in that
tenant's schema (pooled: shared database; dedicated: its own database).

Two ways to reach it (``tenant_runtime.gateway`` decides per tenant):

* **per-tenant logins**: connections log in as the tenant role with the
  password from the tenant's secret (never from the registry record), pooled
  per tenant (``tenant_runtime.logins``). The option for dedicated tenants. The password
  rotates (Secrets Manager, single-user): a refused login is retried with the
  secret's AWSCURRENT read again, then its AWSPENDING, so new connections open
  throughout a rotation; open ones are unaffected (a password is checked at login).
* **shared pool**: one bounded pool per process logged in as the platform's
  gateway role, which may only switch to tenant roles; every transaction
  begins with ``SET LOCAL ROLE`` to the tenant's role.

Either way every unit of work is one transaction (``tenant_runtime.transaction``)
that starts with ``SET LOCAL app.tenant_id = <id>`` (and the role too for
the gateway, and ``statement_timeout`` when set), sent with its BEGIN as one
query (one round trip; the connections are in autocommit mode so that psycopg
sends no BEGIN of its own), and ends with COMMIT: every setting ends with the
transaction, so a connection returned to a pool carries no tenant and no role,
and a query outside a tenant transaction sees zero rows (FORCE RLS,
``current_setting('app.tenant_id', true)`` is NULL or ''). Nothing lives in the
session, so the shared pool is safe behind PgBouncer in transaction mode.

Every operation is written once, as a generator of steps (``Statement``: SQL
run in the tenant's transaction; ``Compute``: sealing or opening content, which
may need KMS on a cache miss), and driven by this module's ``ContextStore``
(sync) or ``tenant_runtime.aio.AsyncContextStore`` (asyncio).

Pagination is newest-first keyset on ``seq`` (an identity column) with an opaque
cursor ``(tenant, conversation, seq)``: page n+1 is ``seq < last seq of page n``.
Pages can never overlap (seq strictly decreases) and every message committed
before the first page was read appears exactly once, whatever is inserted
meanwhile: new messages get larger seq values (they belong above page 1, where
``history(cursor=page.head_cursor)`` picks them up), and a transaction that took a
smaller seq but committed late can only land in a range not yet read. An
oldest-first ``seq > cursor`` walk would instead skip such late commits.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import datetime
from functools import lru_cache, partial
from typing import Any, Literal, NamedTuple

import psycopg
from psycopg import sql
from pydantic import BaseModel

from tenant_runtime import cursor as cursor_codec
from tenant_runtime import prevalidated
from tenant_runtime.context import TenantContext, check_writable, verified
from tenant_runtime.crypto import Envelope
from tenant_runtime.documents import (
    LOCK_ITEMS_SQL,
    SUMMARY_SOURCE,
    Document,
    DocumentPage,
    NewDocument,
    ReindexProgress,
    ReindexResult,
    Summary,
    check_json_text,
    check_limit,
    check_stored_text,
    item_locks,
    not_unicode,
)
from tenant_runtime.errors import InvalidRequest, RegistryUnavailable, StoreMoved, WritesFrozen
from tenant_runtime.hibernation import DatabaseWaker
from tenant_runtime.logins import (
    LOGIN,
    ROLE_LIMIT_SQL,
    CheckoutStep,
    IdleConnections,
    LoginRefused,
    Pause,
    ReadLimit,
    StoreSecret,
    TenantLogins,
    Waiter,
    WaitTurn,
    acquisition,
    role_full,
)
from tenant_runtime.registry import ReindexMarker, marked_reindex
from tenant_runtime.search import SearchOperations, SearchResult, Suggestions
from tenant_runtime.tables import CONVERSATIONS, MESSAGES
from tenant_runtime.transaction import (
    STORE_FAILURES,
    begin,
    guarded,
    held,
    refused_input,
    reset_session,
    schema_statement,
    scoped,
    store_error,
    store_gone,
    store_moved,
    write_errors_as_moved,
)

log = logging.getLogger(__name__)

Role = Literal["system", "user", "assistant", "tool"]
MAX_CONTENT = 1 << 20
MAX_METADATA = 64 << 10
MAX_PAGE = 500
ROLES = frozenset(Role.__args__)  # type: ignore[attr-defined]
_STR = frozenset((str,))
# ``json.dumps(value)``'s text from one C encoder made once, where json.dumps makes
# one per call (~110 Python bytecodes of a warm append). Without the circular-reference
# bookkeeping: a circular value ends in RecursionError, refused like anything unserialisable;
# NaN and infinity (allow_nan False) too, which jsonb refuses.
_METADATA_JSON = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, json.JSONEncoder().default, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, False,
) if json.encoder.c_make_encoder is not None else None  # type: ignore[attr-defined]


class Message(BaseModel):
    conversation_id: str
    seq: int
    role: Role
    content: str
    metadata: dict[str, Any]
    created_at: datetime


_build_message = prevalidated.builder(Message)


class Conversation(BaseModel):
    conversation_id: str
    created_at: datetime
    updated_at: datetime


class ConversationPage(BaseModel):
    conversations: list[Conversation]  # by conversation_id
    next_cursor: str | None  # None after the last page


class Page(BaseModel):
    messages: list[Message]  # newest first
    next_cursor: str | None  # older messages; None at the beginning of the conversation
    head_cursor: str | None  # pass as cursor= later to get what arrived since this page


# -- cursors -------------------------------------------------------------------

MAX_SEQ = 2**63 - 1  # the messages' seq is a bigint: a cursor past it names no position


def encode_cursor(tenant_id: str, conversation_id: str, before: int | None, after: int) -> str:
    return cursor_codec.encode("history", {"t": tenant_id, "c": conversation_id, "b": before, "a": after})


def encode_list_cursor(tenant_id: str, after: str) -> str:
    return cursor_codec.encode("conversations", {"t": tenant_id, "l": after})


def decode_list_cursor(cursor: str, tenant_id: str) -> str:
    """The conversation id a list_conversations() cursor continues after;
    refuses another tenant's cursor (403) and anything else not one (400)."""
    after = cursor_codec.open_cursor(cursor, "conversations", tenant_id, ("l",))["l"]
    if not after:
        raise InvalidRequest("invalid cursor: pass a cursor returned by list_conversations()")
    return after


def decode_cursor(cursor: str, tenant_id: str, conversation_id: str) -> tuple[int | None, int]:
    """(before, after) seq bounds of a cursor; refuses another tenant's (403) or
    another conversation's (400) cursor and anything else not a history() one."""
    data = cursor_codec.open_cursor(cursor, "history", tenant_id, ("c",))
    before, after = data.get("b"), data.get("a")
    if not (type(after) is int and 0 <= after < MAX_SEQ
            and (before is None or (type(before) is int and after < before <= MAX_SEQ))):
        raise InvalidRequest("invalid cursor: pass a cursor returned by history()")
    if data["c"] != conversation_id:
        raise InvalidRequest("cursor belongs to another conversation")
    return before, after


# -- operations, written once for both drivers ------------------------------------

class Statement(NamedTuple):  # immutable, and made several times faster than a frozen dataclass
    """SQL to run in the tenant's transaction; the driver sends back the row
    (``one``), the rows (``all``) or the row count (``rowcount``)."""

    query: sql.Composable | bytes
    params: Mapping[str, Any] | Sequence[Any]
    fetch: Literal["one", "all", "rowcount"]
    # Item locks (``documents.item_locks``) taken first, in the same transaction.
    locks: Sequence[int] = ()
    # psycopg's ``prepare``: True for a statement every call of its kind sends (the
    # append's), prepared at its first run on a login instead of its sixth (psycopg's
    # threshold), so a fresh login's first appends are not parsed again each;
    # without effect on the shared pool's logins, which never prepare (PgBouncer).
    prepare: bool | None = None


class Compute(NamedTuple):
    """Work on content (sealing, opening) that needs KMS only on a cache miss:
    the async driver runs it on the loop when it can, else on its executor."""

    fn: Callable[..., Any]
    args: tuple


Step = Statement | Compute
Operation = Generator[Step, Any, Any]


def advance(operation: Operation, result: Any, error: Exception | None = None) -> tuple[bool, Any]:
    """Send ``result`` to ``operation`` (or raise ``error``, the failure of
    its last step, inside it, so it can undo what it made before re-raising):
    (True, its return value) once it is done, else (False, its next step)."""
    try:
        return False, (operation.throw(error) if error is not None else operation.send(result))
    except StopIteration as done:
        return True, done.value


class StoreOperations(SearchOperations):
    """The store's API as operations: validation, SQL and results, no I/O."""

    envelope: Envelope

    @staticmethod
    def _statement_step(query: sql.Composable, params: Mapping[str, Any] | Sequence[Any],
                        fetch: Literal["one", "all", "rowcount"], locks: Sequence[int] = ()) -> Statement:
        return Statement(query, params, fetch, locks)

    @staticmethod
    def _compute_step(fn: Callable[..., Any], *args: Any) -> Compute:
        return Compute(fn, args)

    @staticmethod
    def _table(ctx: TenantContext, table: str) -> sql.Composed:
        return sql.Identifier(ctx.resources.store.schema_name, table)

    @staticmethod
    def _sql(ctx: TenantContext, template: str, **tables: str) -> bytes:
        """``template`` over the tenant's tables (``{name}`` = ``tables[name]``), rendered once per schema."""
        return schema_statement(template, ctx.resources.store.schema_name, **tables)

    def _append(self, ctx: TenantContext, conversation_id: str, role: str, content: str,
                metadata: dict[str, Any] | None) -> Operation:
        """The append as an operation (the async driver's); ``ContextStore.append``
        runs the same three steps directly."""
        ctx = verified(ctx)  # first: a context the resolution did not issue reaches nothing
        body, meta, meta_json = _append_input(ctx, conversation_id, role, content, metadata)
        sealed = yield Compute(self.envelope.seal_for, (ctx, conversation_id, body))  # ctx: verified above
        row = yield self._append_statement(ctx, conversation_id, role, sealed, meta_json)
        return _appended(conversation_id, role, content, meta, row)

    def _append_statement(self, ctx: TenantContext, conversation_id: str, role: str, sealed: bytes,
                          meta_json: str) -> Statement:
        """Upsert the conversation and insert the sealed message; the row gives (seq, created_at)."""
        return Statement(*_append_query(ctx, conversation_id, role, sealed, meta_json), "one", (), True)

    def _history(self, ctx: TenantContext, conversation_id: str, limit: int, cursor: str | None) -> Operation:
        ctx = verified(ctx)
        _check_conversation(conversation_id)
        check_limit(limit, MAX_PAGE)
        before, after = decode_cursor(cursor, ctx.key, conversation_id) if cursor else (None, 0)
        rows = yield Statement(
            self._sql(ctx, "SELECT seq, role, content, metadata, created_at FROM {msg} "
                      "WHERE tenant_id = %(t)s AND conversation_id = %(c)s AND seq > %(a)s "
                      "AND seq < coalesce(%(b)s::bigint, 9223372036854775807) "
                      "ORDER BY seq DESC LIMIT %(n)s", msg=MESSAGES),
            {"t": ctx.key, "c": conversation_id, "a": after, "b": before, "n": limit + 1}, "all")
        more = len(rows) > limit
        rows = rows[:limit]
        contents = yield Compute(self.envelope.decrypt_many, (ctx, conversation_id, [bytes(row[2]) for row in rows]))
        # Mappings the Page validates into Messages in one pydantic (Rust) call: measured 2-3x faster
        # for a page of 50 than a Message per row, and faster still than model_construct.
        messages = [{"conversation_id": conversation_id, "seq": seq, "role": role, "content": content.decode(),
                     "metadata": meta, "created_at": created}
                    for (seq, role, _, meta, created), content in zip(rows, contents, strict=True)]
        encode = partial(encode_cursor, ctx.key, conversation_id)
        return Page(
            messages=messages,
            next_cursor=encode(rows[-1][0], after) if more else None,
            # Only a read from the top of its range knows the newest seq.
            head_cursor=encode(None, rows[0][0] if rows else after) if before is None else None,
        )

    def _list_conversations(self, ctx: TenantContext, limit: int, cursor: str | None) -> Operation:
        ctx = verified(ctx)
        check_limit(limit, MAX_PAGE)
        after = decode_list_cursor(cursor, ctx.key) if cursor else ""
        rows = yield Statement(
            sql.SQL("SELECT conversation_id, created_at, updated_at FROM {conv} "
                    "WHERE tenant_id = %(t)s AND conversation_id > %(a)s "
                    "ORDER BY conversation_id LIMIT %(n)s").format(conv=self._table(ctx, CONVERSATIONS)),
            {"t": ctx.key, "a": after, "n": limit + 1}, "all")
        more = len(rows) > limit
        rows = rows[:limit]
        return ConversationPage(
            conversations=[Conversation(conversation_id=c, created_at=cr, updated_at=up) for c, cr, up in rows],
            next_cursor=encode_list_cursor(ctx.key, rows[-1][0]) if more else None)

    def _delete_conversation(self, ctx: TenantContext, conversation_id: str) -> Operation:
        ctx = verified(ctx)
        check_writable(ctx)
        _check_conversation(conversation_id)
        # Its summary first (the foreign key would cascade to it), with the summary's document frequencies.
        deleted = yield Statement(self._delete_item_sql(ctx, SUMMARY_SOURCE, sql.SQL(
            "DELETE FROM {conv} WHERE tenant_id = %(t)s AND conversation_id = %(d)s").format(
                conv=self._table(ctx, CONVERSATIONS))), {"t": ctx.key, "kind": "summary", "d": conversation_id},
            "rowcount", item_locks(ctx.key, "summary", [conversation_id]))
        return deleted > 0


# What a store refuses a call on a stale record with (a driver's ``_relocated`` asks the registry).
REFUSED = (StoreMoved, LoginRefused)


def relocated(ctx: TenantContext, fresh: TenantContext, refused: StoreMoved | LoginRefused) -> StoreMoved:
    """What a call ``ctx``'s store refused raises once its tenant was read from
    the registry again (``fresh``): a StoreMoved as it is; a refused login as a
    StoreMoved when the registry names another store now (the record the call
    used was stale), else raised as it is (a StoreUnavailable)."""
    if not isinstance(refused, LoginRefused):
        return refused
    if fresh.resources.store == ctx.resources.store:
        raise refused
    return StoreMoved(f"store of tenant {ctx.key!r} refused the login and the registry names another store now "
                      f"(moved): {refused}")


# What a caller's own SQL meets on a store its tenant left while a connection to it was still
# open (a move's ``--finalize`` dropped the schema, its tables and the role): no table, no schema,
# no role. An application's own bug fails the same way, so it is a StoreMoved only once the
# registry, read again, names another store (``left``).
GONE = (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedObject,
        psycopg.errors.InvalidAuthorizationSpecification)
# ``GONE``, and what a caller's own write meets on a store whose writes a move revoked from the
# tenant's role (``REVOKE``, nothing else: no read-only transaction): in the freeze before the
# switch (the registry still names the store, its record the freeze) and on the old store after
# it until the finalize (the registry names the new one). A role's own missing grant fails the
# same way: ``left`` decides on the record read again.
STALE = (*GONE, psycopg.errors.InsufficientPrivilege)


def left(ctx: TenantContext, fresh: TenantContext | RegistryUnavailable,
         exc: Exception) -> StoreMoved | WritesFrozen | None:
    """What a caller's block that failed with ``exc`` (one of ``STALE``) raises
    instead once its tenant was read from the registry again (``fresh``): a
    StoreMoved when the registry names another store now; a WritesFrozen (503,
    retry in a second) for a refused privilege while the record says the move
    freezes the tenant's writes; None: ``exc`` as it is. ``fresh`` a registry
    read that failed: None too, the failure logged and noted on ``exc``
    (``__notes__``): the caller's error is what happened, the re-read only an
    attempt to explain it, so its failure must not take the error's place."""
    if isinstance(fresh, RegistryUnavailable):
        log.warning("tenant %r: the registry could not be read again after the store refused the caller's "
                    "statement (%s): %s", ctx.key, type(exc).__name__, fresh)
        exc.add_note(f"tenant_runtime: the registry read again after this error failed: {fresh}")
        return None
    if fresh.resources.store != ctx.resources.store:
        return StoreMoved(f"store of tenant {ctx.key!r} refused the transaction's statement or lost what it "
                          f"named and the registry names another store now (moved; retry the whole "
                          f"transaction): {exc}".strip())
    move = fresh.record.move
    if isinstance(exc, psycopg.errors.InsufficientPrivilege) and move is not None and move.writes_frozen:
        return WritesFrozen(ctx.tenant_id)
    return None


# -- the sync driver ----------------------------------------------------------------

class ContextStore(StoreOperations):
    """The context store for threads. ``gateway``: the shared pool
    (``tenant_runtime.gateway.SharedPool``) for the tenants it serves; the
    others, dedicated ones included, log in as their own role. ``waker``:
    starts a hibernated tenant's database before its store is used
    (``tenant_runtime.hibernation``); None: hibernation is not looked at.
    ``objects``: the tenant's S3 prefix (``tenant_runtime.objects.ObjectAccess``)
    for document bodies over ``LARGE_BODY``; None: such bodies are refused.
    ``max_tenant_connections``: connections this process opens on one tenant's
    own login at most (None: its role's CONNECTION LIMIT, read at its first
    login; never more than that); a request past it waits
    ``tenant_connection_wait`` seconds for one, then StoreUnavailable (503)."""

    def __init__(self, envelope: Envelope, secret_client_for: Callable[[TenantContext], Any],
                 max_idle_per_tenant: int = 4, max_tenants: int = 256, secret_ttl: float = 300.0,
                 connect_timeout: int = 5, gateway: Any | None = None,
                 statement_timeout: float | None = None, waker: DatabaseWaker | None = None,
                 reresolve: Callable[[TenantContext], TenantContext] | None = None,
                 objects: Any | None = None, max_tenant_connections: int | None = None,
                 tenant_connection_wait: float = 10.0) -> None:
        self.envelope, self.objects = envelope, objects  # objects: ObjectAccess, for large document bodies
        self.logins = TenantLogins(secret_client_for, max_idle_per_tenant, max_tenants, secret_ttl, connect_timeout,
                                   max_tenant_connections, tenant_connection_wait)
        self.gateway, self.statement_timeout, self.waker = gateway, statement_timeout, waker
        # A context read from the registry again (cache bypassed), for a write
        # the old store of a moved tenant refused.
        self.reresolve = reresolve

    def transaction(self, ctx: TenantContext) -> AbstractContextManager[psycopg.Connection]:
        """A connection inside one transaction scoped to ``ctx``'s tenant;
        database failures inside map to StoreTimeout / StoreUnavailable. Always
        on the tenant's own login, never the shared pool's: the gateway may
        become every pooled tenant's role and PostgreSQL checks SET ROLE
        (``set_config('role', ...)``, in a DO block too) against the login, so
        a statement of the caller's could leave the tenant's role for another's."""
        return self._caller_transaction(verified(ctx))  # ctx checked now

    @contextmanager
    def _caller_transaction(self, ctx: TenantContext) -> Iterator[psycopg.Connection]:
        """``transaction``'s block, its connection ``guarded``. Refused on entry by
        a store its tenant was moved away from, a StoreMoved (503) once the
        registry was read again, as a read's (``_run``): the block is the
        caller's code, which the caller's retry runs again, not this. The
        block's statements failing on a store dropped under an open connection,
        or refused a write on one a move froze (``STALE``): a StoreMoved likewise
        once the registry names another store, a WritesFrozen while it names
        this one frozen (``left``)."""
        refused = None
        try:
            with ExitStack() as entered:
                try:
                    cur = entered.enter_context(self._transaction(ctx, caller=True))
                except REFUSED as exc:
                    refused = exc
                else:
                    yield entered.enter_context(guarded(cur.connection))
        except STALE as exc:
            if (moved := self._left(ctx, exc)) is None:
                raise
            raise moved from exc
        if refused is not None:  # (None too when the block's psycopg.Rollback was swallowed)
            raise self._relocated(ctx, refused)[1]

    def _left(self, ctx: TenantContext, exc: Exception) -> StoreMoved | WritesFrozen | None:
        """``left``'s error for a caller's block that failed with ``exc``, the
        tenant's secret and connections forgotten for a StoreMoved; None: ``exc``
        stands. Weak evidence (a bug of the caller's looks the same): the
        registry is read again only when ``ctx``'s record was not read just now
        (``patient``)."""
        if self.reresolve is None:
            return None
        try:
            fresh: TenantContext | RegistryUnavailable = verified(self.reresolve(ctx, True))
        except RegistryUnavailable as failure:
            fresh = failure
        moved = left(ctx, fresh, exc)
        if isinstance(moved, StoreMoved):
            self.forget(ctx)
        return moved

    def _scoped_cursor(self, ctx: TenantContext, caller: bool = False) -> Iterator[psycopg.Cursor]:
        """The cursor that ran the scope statement, inside the tenant's transaction
        (a generator: ``_transaction`` as a context manager, driven by hand in ``_execute``).
        ``caller``: the block runs a caller's own SQL: on the tenant's own login, never
        through the shared pool, and its session reset after it (``reset_session``)."""
        # One context manager deep, not five (the error mapping, the login's
        # checkout and the tenant scope used to be one each): on a warm append
        # their per-call overhead was a large part of the client's own work.
        tenant_id = ctx.key
        try:
            if not caller and self.gateway is not None and self.gateway.serves(ctx):
                with self.gateway.connection(ctx) as (conn, role):
                    yield from scoped(conn, tenant_id, role, self.statement_timeout)
                return
            if self.waker is not None and ctx.record.hibernation is not None:  # no call for a tenant never hibernated
                self.waker.ensure_awake(ctx)  # TenantWaking (503, retry) until a hibernated database is up
            pool, evicted = self.logins.idle(ctx)
            for old in evicted:
                old.close()
            conn = pool.take()  # one of the tenant's idle connections; None: log in; a Waiter: at its cap
            reused = conn is not None and conn.__class__ is not Waiter
            if not reused:
                conn, reused = self._acquire(ctx, pool, conn)
            try:
                while True:
                    try:
                        cur = begin(conn, tenant_id, None, self.statement_timeout)
                        break
                    except psycopg.OperationalError:
                        if not reused:  # a fresh login failed too (``begin``: retried once)
                            raise
                    conn.close()
                    conn, reused = self._login(ctx), False
                yield from held(conn, cur)  # the caller's statements: never run again
            finally:
                if caller:
                    reset_session(conn)
                if not pool.keep(conn):
                    conn.close()
                    pool.release()
        except STORE_FAILURES as exc:
            raise store_error(tenant_id, exc) from None
        except psycopg.DataError as exc:
            if (refused := refused_input(tenant_id, exc)) is None:
                raise
            raise refused from None

    _transaction = contextmanager(_scoped_cursor)

    def _acquire(self, ctx: TenantContext, pool: IdleConnections,
                 got: Waiter | None) -> tuple[psycopg.Connection, bool]:
        """``logins.acquisition`` (the cap's rules), its steps run here: (a connection, reused)."""
        steps = acquisition(ctx, pool, got, self.logins.wait, Waiter)
        done, step = advance(steps, None)
        while not done:
            try:
                result = self._checkout_step(ctx, step)
            except BaseException as exc:  # noqa: BLE001 - raised inside the acquisition, which re-raises it
                done, step = advance(steps, None, exc)
            else:
                done, step = advance(steps, result)
        return step

    def _checkout_step(self, ctx: TenantContext, step: CheckoutStep) -> Any:
        if step is LOGIN:
            return self._login(ctx)
        if isinstance(step, WaitTurn):
            return step.waiter.wait(step.timeout)
        if isinstance(step, ReadLimit):
            return step.conn.execute(ROLE_LIMIT_SQL).fetchone()[0]
        if isinstance(step, Pause):
            return time.sleep(step.seconds)
        return step.conn.close()

    def _login(self, ctx: TenantContext) -> psycopg.Connection:
        secret = self.logins.credentials(ctx)
        try:
            return psycopg.connect(**self.logins.connect_kwargs(secret, ctx.resources.store))
        except psycopg.OperationalError as exc:
            if role_full(exc):  # raised as it is: no password to try again
                raise
            return self._login_after_refusal(ctx, secret, exc)

    def _login_after_refusal(self, ctx: TenantContext, refused: StoreSecret,
                             exc: psycopg.OperationalError) -> psycopg.Connection:
        for candidate in self.logins.rotated(ctx, refused):
            try:
                conn = psycopg.connect(**self.logins.connect_kwargs(candidate, ctx.resources.store))
            except psycopg.OperationalError as again:
                exc = again
                continue
            self.logins.remember(ctx, candidate)
            return conn
        raise self.logins.login_failed(ctx, exc) from None

    def _run(self, ctx: TenantContext, operation: Operation) -> Any:
        """Run a read operation; refused by a store its tenant was moved away from,
        a StoreMoved (503) once the registry was read again, so that the caller's
        retry resolves the store the registry names now."""
        ctx = verified(ctx)
        try:  # = read_errors_as_moved, without a context manager's per-call cost
            return self._drive(ctx, operation)
        except psycopg.errors.UndefinedTable as exc:
            refused: StoreMoved | LoginRefused = store_gone(ctx.key, exc)
        except REFUSED as exc:
            refused = exc
        raise self._relocated(ctx, refused)[1]

    def _drive(self, ctx: TenantContext, operation: Operation) -> Any:
        """Run ``operation``'s steps; ``ctx``: verified by the caller, once for
        all its statements (``_statement`` does not check it again)."""
        done, step = advance(operation, None)
        while not done:
            try:
                result = step.fn(*step.args) if isinstance(step, Compute) else self._statement(ctx, step)
            except Exception as exc:  # noqa: BLE001 - raised inside the operation, which re-raises it
                done, step = advance(operation, None, exc)
            else:
                done, step = advance(operation, result)
        return step

    def _write(self, ctx: TenantContext, make: Callable[[TenantContext], Operation]) -> Any:
        """Run a write operation (``_moved_retry``)."""
        return self._moved_retry(ctx, self._drive_made, make)

    def _drive_made(self, ctx: TenantContext, make: Callable[[TenantContext], Operation]) -> Any:
        return self._drive(ctx, make(ctx))

    def _moved_retry(self, ctx: TenantContext, write: Callable[..., Any], *args: Any) -> Any:
        """``write(ctx, *args)``, ``ctx`` verified first; when a stale record routed it
        to a moved tenant's old store (StoreMoved), forget what this process
        cached about the tenant's store and retry once on the store the registry
        names now."""
        ctx = verified(ctx)  # before its tenant id is read: anything else is UntrustedContext
        try:  # = write_errors_as_moved, without a context manager's per-call cost
            return write(ctx, *args)
        except psycopg.errors.InsufficientPrivilege as exc:
            moved: StoreMoved | LoginRefused = store_moved(ctx.key, exc)
        except psycopg.errors.UndefinedTable as exc:
            moved = store_gone(ctx.key, exc)
        except REFUSED as exc:
            moved = exc
        fresh, _ = self._relocated(ctx, moved, patient=isinstance(moved, LoginRefused))
        with write_errors_as_moved(fresh.key):
            return write(fresh, *args)

    def _relocated(self, ctx: TenantContext, refused: StoreMoved | LoginRefused,
                   patient: bool = True) -> tuple[TenantContext, StoreMoved]:
        """After ``ctx``'s store refused a call: its tenant read from the registry
        again (``RegistryReader.refresh``; ``patient``: not if its record was
        read just now) and its cached secret and connections forgotten, the
        context to retry on and the StoreMoved to raise instead (``relocated``,
        which raises a login refused by the store the registry still names)."""
        if self.reresolve is None:
            raise refused
        fresh = verified(self.reresolve(ctx, patient))
        moved = relocated(ctx, fresh, refused)
        self.forget(ctx)
        return fresh, moved

    def forget(self, ctx: TenantContext) -> None:
        """Drop the tenant's cached secret and idle connections (its store moved)."""
        for conn in self.logins.forget(ctx):
            conn.close()

    def _statement(self, ctx: TenantContext, step: Statement) -> Any:
        """``step`` in its own transaction; ``ctx``: verified by the caller."""
        return self._execute(ctx, *step)

    def _execute(self, ctx: TenantContext, query: sql.Composable | bytes, params: Mapping[str, Any] | Sequence[Any],
                 fetch: Literal["one", "all", "rowcount"], locks: Sequence[int] = (),
                 prepare: bool | None = None) -> Any:
        """A ``Statement``'s fields run in their own transaction (the sync append
        makes no Statement); ``ctx``: verified by the caller. The transaction's
        generator driven by hand: ``with self._transaction(ctx)`` made a
        contextlib wrapper and two more frames per statement."""
        steps = self._scoped_cursor(ctx)
        cur = next(steps)
        try:
            if locks:
                cur.execute(LOCK_ITEMS_SQL, (list(locks),))
            cur.execute(query, params, prepare=prepare)
            result = cur.rowcount if fetch == "rowcount" else (cur.fetchone() if fetch == "one" else cur.fetchall())
        except BaseException as exc:
            try:
                steps.throw(exc)  # rolled back, the connection returned; re-raised (mapped if a database failure)
            except StopIteration:
                pass  # swallowed by the transaction (psycopg.Rollback): still the statement's failure
            raise
        next(steps, None)  # COMMIT (a failure mapped like the statement's), the connection returned
        return result

    def close(self) -> None:
        for conn in self.logins.drain():
            conn.close()
        if self.gateway is not None:
            self.gateway.close()

    # -- API ---------------------------------------------------------------------

    def append(self, ctx: TenantContext, conversation_id: str, role: str, content: str,
               metadata: dict[str, Any] | None = None) -> Message:
        return self._moved_retry(ctx, self._append_now, conversation_id, role, content, metadata)

    def _append_now(self, ctx: TenantContext, conversation_id: str, role: str, content: str,
                    metadata: dict[str, Any] | None) -> Message:
        """``_append``'s steps run directly: driving the generator cost about a
        third of the sync append's own client work. ``ctx``: verified by the caller."""
        body, meta, meta_json = _append_input(ctx, conversation_id, role, content, metadata)
        sealed = self.envelope.seal_for(ctx, conversation_id, body)
        row = self._execute(ctx, *_append_query(ctx, conversation_id, role, sealed, meta_json), "one", (), True)
        return _appended(conversation_id, role, content, meta, row)

    def history(self, ctx: TenantContext, conversation_id: str, limit: int = 50,
                cursor: str | None = None) -> Page:
        """Newest-first page of at most ``limit`` messages. ``cursor``: a
        ``next_cursor`` (older messages) or a ``head_cursor`` (what arrived since)."""
        return self._run(ctx, self._history(ctx, conversation_id, limit, cursor))

    def list_conversations(self, ctx: TenantContext, limit: int = 50, cursor: str | None = None) -> ConversationPage:
        """The tenant's conversations by id, ``limit`` at a time (keyset on the
        id: stable while conversations are added or deleted)."""
        return self._run(ctx, self._list_conversations(ctx, limit, cursor))

    def delete_conversation(self, ctx: TenantContext, conversation_id: str) -> bool:
        """Delete a conversation and its messages; False when there was none."""
        return self._write(ctx, lambda c: self._delete_conversation(c, conversation_id))

    # -- documents and search (tenant_runtime.documents) ---------------------------

    def put_document(self, ctx: TenantContext, doc_id: str, title: str, body: str,
                     metadata: dict[str, Any] | None = None, source: str | None = None) -> Document:
        """Create or replace a document and its index entries (one transaction)."""
        return self._write(ctx, lambda c: self._put_document(c, doc_id, title, body, metadata, source))

    def put_documents(self, ctx: TenantContext, documents: Sequence[NewDocument | Mapping[str, Any]]) -> list[Document]:
        """Create or replace up to ``MAX_BATCH`` documents (``NewDocument`` or
        mappings of its fields) and their index entries in one transaction:
        all or none; bulk loading is several times faster than one by one."""
        return self._write(ctx, lambda c: self._put_documents(c, documents))

    def put_document_from_upload(self, ctx: TenantContext, doc_id: str, title: str, key: str,
                                 metadata: dict[str, Any] | None = None, source: str | None = None) -> Document:
        """Create or replace a document whose body is the UTF-8 text object
        ``key`` uploaded through ``objects.presign_upload`` (the tenant's
        own prefix only: another tenant's key is a TenantMismatch); the
        document then owns the object (``delete_document`` deletes it)."""
        return self._write(ctx, lambda c: self._put_document_from_upload(c, doc_id, title, key, metadata, source))

    def get_document(self, ctx: TenantContext, doc_id: str) -> Document | None:
        return self._run(ctx, self._get_document(ctx, doc_id))

    def list_documents(self, ctx: TenantContext, limit: int = 50, cursor: str | None = None) -> DocumentPage:
        """The tenant's documents by id (keyset on the id)."""
        return self._run(ctx, self._list_documents(ctx, limit, cursor))

    def delete_document(self, ctx: TenantContext, doc_id: str) -> bool:
        return self._write(ctx, lambda c: self._delete_document(c, doc_id))

    def search(self, ctx: TenantContext, query: str, *, filters: dict[str, Any] | None = None,
               facets: list[str] | None = None, limit: int = 10, offset: int = 0, cursor: str | None = None,
               fuzzy: bool = False, include_summaries: bool = False) -> SearchResult:
        """BM25 over the tenant's blind index. ``filters``: metadata the hits
        contain (JSON containment); ``facets``: metadata fields to count values
        of over all matches; ``offset`` or ``cursor`` (``next_cursor``) paging;
        ``fuzzy``: character trigrams too (typos, partial words);
        ``include_summaries``: conversation summaries ranked with the
        documents (``SearchHit.kind``)."""
        return self._run(ctx, self._search(ctx, query, filters, facets, limit, offset, cursor, fuzzy,
                                           include_summaries))

    def put_summary(self, ctx: TenantContext, conversation_id: str, text: str) -> Summary:
        """Create or replace a conversation's summary (sealed, indexed; it goes with the conversation)."""
        return self._write(ctx, lambda c: self._put_summary(c, conversation_id, text))

    def get_summary(self, ctx: TenantContext, conversation_id: str) -> Summary | None:
        return self._run(ctx, self._get_summary(ctx, conversation_id))

    def suggest(self, ctx: TenantContext, prefix: str, limit: int = 10) -> Suggestions:
        """Title words completing ``prefix``'s last word, commonest first (a list,
        flagged ``analyzer_mismatch`` as a ``SearchResult`` is)."""
        return self._run(ctx, self._suggest(ctx, prefix, limit))

    def unindexed(self, ctx: TenantContext) -> int:
        """How many documents and summaries are in no search index (what
        ``reindex(if_unindexed=True)`` would rebuild; search refuses while any is)."""
        return self._run(ctx, self._unindexed(ctx))

    def index_analyzers(self, ctx: TenantContext) -> list[str]:
        """The analyzer identity each live search key's index was built with,
        oldest first (``analyzer.LEGACY_IDENTITY`` for a key from before
        identities); several while a reindex is unfinished, none before the
        store's first document or summary (its first writer records its own).
        What `tenantctl search reindex --outdated` compares with its analyzer."""
        return self._run(ctx, self._index_analyzers(ctx))

    def reindex(self, ctx: TenantContext, if_unindexed: bool = False,
                progress: ReindexProgress | None = None,
                marker: ReindexMarker | None = None) -> ReindexResult | None:
        """Rotate the tenant's search key and re-hash every document under it;
        ``if_unindexed``: only when some item is in no index (else None);
        ``progress(kind, done, total)`` after each batch; ``marker``
        (tenantctl's): the store is marked unfinished in the registry meanwhile
        (``marked_reindex``); without one nothing records it there."""
        if marker is None:
            return self._write(ctx, lambda c: self._reindex(c, if_unindexed, progress))
        if if_unindexed and not self.unindexed(ctx):
            return None  # nothing to mark: no reindex (writes never leave an item unindexed)
        with marked_reindex(marker, ctx):
            return self._write(ctx, lambda c: self._reindex(c, False, progress))


def _append_input(ctx: TenantContext, conversation_id: str, role: str, content: str,
                  metadata: dict[str, Any] | None) -> tuple[bytes, dict[str, Any], str]:
    """An append's checks, before anything is sealed or sent: the tenant takes
    writes, the conversation id, the role, the sizes. (content as bytes,
    metadata, metadata as JSON)."""
    check_writable(ctx)
    _check_conversation(conversation_id)
    if not isinstance(role, str) or role not in ROLES:  # a list is no role (nor hashable)
        raise InvalidRequest(f"role must be one of {', '.join(Role.__args__)}")  # type: ignore[attr-defined]
    if not isinstance(content, str):
        raise InvalidRequest("content must be a string")
    try:
        body = content.encode()
    except UnicodeEncodeError:
        raise not_unicode("content") from None
    if len(body) > MAX_CONTENT:
        raise InvalidRequest(f"content is {len(body)} bytes; the limit is {MAX_CONTENT}")
    meta = {} if metadata is None else metadata
    # Before the write: a stored non-object is no Message, and every page of its conversation failed on it.
    if not isinstance(meta, dict) or not {*map(type, meta)} <= _STR:  # (a generator: several times slower)
        raise InvalidRequest("metadata must be a JSON object (string keys)")
    try:
        meta_json = "".join(_METADATA_JSON(meta, 0)) if _METADATA_JSON is not None else json.dumps(
            meta, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise InvalidRequest("metadata must be JSON-serialisable") from None
    if len(meta_json) > MAX_METADATA:
        raise InvalidRequest(f"metadata is {len(meta_json)} bytes of JSON; the limit is {MAX_METADATA}")
    check_json_text(meta, meta_json, "metadata")
    return body, meta, meta_json


@lru_cache(maxsize=4096)
def _append_sql(schema: str) -> bytes:
    """The append's statement over ``schema``'s tables (one str argument: the cache's fastest key)."""
    return schema_statement(
        "WITH c AS (INSERT INTO {conv} (tenant_id, conversation_id) VALUES (%s, %s) "
        "ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET updated_at = now() RETURNING 1) "
        "INSERT INTO {msg} (tenant_id, conversation_id, role, content, metadata) "
        "SELECT %s, %s, %s, %s, %s::jsonb FROM c RETURNING seq, created_at", schema, conv=CONVERSATIONS, msg=MESSAGES)


def _append_query(ctx: TenantContext, conversation_id: str, role: str, sealed: bytes,
                  meta_json: str) -> tuple[bytes, tuple]:
    """(query, parameters): upsert the conversation and insert the sealed message."""
    # Positional parameters and the metadata as JSON text cast by the server: psycopg
    # reorders a mapping and dumps a ``Jsonb`` in Python, a tuple of str / bytes in C.
    key = ctx.key
    return _append_sql(ctx.resources.store.schema_name), (key, conversation_id, key, conversation_id, role, sealed,
                                                          meta_json)


def _appended(conversation_id: str, role: str, content: str, meta: dict[str, Any], row: tuple) -> Message:
    """The appended message, from the INSERT's (seq, created_at). ``_append_input``
    checked the caller's values and the database gave the row's, so when they are
    what validation keeps as is (exact types), the Message is built without
    validating them again (``prevalidated``); anything else is validated."""
    seq, created = row
    if (type(conversation_id) is str and type(role) is str and type(content) is str and type(seq) is int
            and type(created) is datetime):
        # The metadata copied, as validation copies it: the caller's dict is not the Message's.
        return _build_message({"conversation_id": conversation_id, "seq": seq, "role": role, "content": content,
                               "metadata": dict(meta), "created_at": created})
    return Message(conversation_id=conversation_id, seq=seq, role=role, content=content, metadata=meta,
                   created_at=created)


def _check_conversation(conversation_id: str) -> None:
    if not isinstance(conversation_id, str) or not 1 <= len(conversation_id) <= 200:
        raise InvalidRequest("conversation_id must be 1..200 characters")
    check_stored_text(conversation_id, "conversation_id")
