"""One tenant transaction: BEGIN and the statement every unit of work begins
with (transaction-local tenant, role for a gateway login, statement timeout)
in one round trip, then the block, then COMMIT; the schema-qualified
statements; and what a database failure becomes for the caller
(``StoreTimeout``, ``StoreUnavailable``, ``StoreMoved``). Shared by the sync
and async drivers and by tenantctl's operations on a tenant's store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import sql
from psycopg.errors import error_from_result
from psycopg.generators import execute as _results

from tenant_runtime.errors import InvalidRequest, StoreMoved, StoreTimeout, StoreUnavailable

_OK, _IDLE = psycopg.pq.ConnStatus.OK, psycopg.pq.TransactionStatus.IDLE
_COMMAND_OK = psycopg.pq.ExecStatus.COMMAND_OK
_ENDED_INSIDE = "the tenant transaction was ended inside its block; commit and rollback belong to the block's end"
_INTRANS = psycopg.pq.TransactionStatus.INTRANS
_TUPLES_OK = psycopg.pq.ExecStatus.TUPLES_OK
# DISCARD ALL but DEALLOCATE ALL (and SET SESSION AUTHORIZATION DEFAULT, which a login never changes).
_RESET_SESSION = (b"CLOSE ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); RESET ALL; "
                  b"DISCARD PLANS; DISCARD TEMP; DISCARD SEQUENCES")
# Command tags of statements that end a transaction or begin one (inside the tenant's, only after
# ending it). Not "ROLLBACK": ROLLBACK TO SAVEPOINT answers with it too; a whole ROLLBACK shows as
# the transaction gone (IDLE) or, followed by a BEGIN, as that BEGIN's tag.
_CONTROL_TAGS = frozenset({"BEGIN", "START TRANSACTION", "COMMIT", "PREPARE TRANSACTION", "COMMIT PREPARED",
                           "ROLLBACK PREPARED"})


def _scope_settings(tenant_id: str, role: str | None,
                    statement_timeout: float | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The transaction-local settings of a tenant transaction: (names, values)."""
    names: tuple[str, ...] = ("app.tenant_id",)
    values: tuple[str, ...] = (tenant_id,)
    if role is not None:  # first: refused unless the login may become it
        names, values = ("role", *names), (role, *values)
    if statement_timeout is not None:
        names, values = (*names, "statement_timeout"), (*values, str(max(1, int(statement_timeout * 1000))))
    return names, values


@lru_cache(maxsize=4096)
def begin_statement(tenant_id: str, role: str | None = None, statement_timeout: float | None = None) -> bytes:
    """``BEGIN`` and the transaction-local settings as one query without
    parameters, the first round trip of every tenant transaction: psycopg sends
    a query without parameters over the simple protocol, which runs several
    statements in one message (a query with parameters takes the extended
    protocol, one statement per round trip). ``SET LOCAL`` (= ``set_config(...,
    true)``), not ``SELECT set_config``: a utility statement the server neither
    plans nor answers with a row, as cheap to run unprepared as the prepared
    SELECT was. The values are literals quoted as ``psycopg.sql.Literal`` quotes
    them (``E''`` when a backslash needs it, whatever
    ``standard_conforming_strings``); the names are this module's constants.
    Made once per tenant and shape."""
    names, values = _scope_settings(tenant_id, role, statement_timeout)
    return (sql.SQL("BEGIN; ") + sql.SQL("; ").join(
        sql.SQL("SET LOCAL {} = {}").format(sql.SQL(name), sql.Literal(value))
        for name, value in zip(names, values, strict=True))).as_bytes(None)


@lru_cache(maxsize=4096)
def schema_statement(template: str, schema: str, **tables: str) -> bytes:
    """``template`` with each ``{name}`` replaced by the quoted table ``schema.tables[name]``,
    rendered once per schema (the quoting is libpq's, done in Python: the same bytes)."""
    return sql.SQL(template).format(**{name: sql.Identifier(schema, table) for name, table in tables.items()}
                                    ).as_bytes(None)


def begin(conn: psycopg.Connection, tenant_id: str, role: str | None = None,
          statement_timeout: float | None = None) -> psycopg.Cursor:
    """Begin a transaction scoped to ``tenant_id`` (and, for a gateway login, to
    the tenant ``role``) in one round trip (``begin_statement``); every setting
    ends with it (``SET LOCAL``). ``conn``: in autocommit mode (psycopg would send a BEGIN of
    its own first), outside a transaction. A cursor for the transaction's own
    statements (a cursor per ``conn.execute`` costs more client work than the
    statement's parameters). End it with ``held``.

    The query goes to libpq as psycopg sends its own BEGIN and COMMIT (``send_query``,
    awaited by the connection's ``wait``: interruptible, a lost connection an
    OperationalError, a refused setting the server's error), not through a
    cursor: its execute's parameter, prepared-statement and result bookkeeping,
    none of which a fixed query without parameters needs, was about a tenth of
    a warm append's client work.

    An idle connection the server closed meanwhile (restart, database
    recreated, idle timeout, terminated) fails here, before anything of the
    caller's was sent: the drivers run ``begin`` once more on a fresh login
    after a connection failure of a reused connection here, and never once
    ``held`` ran the caller's statements (a write whose COMMIT is unknown
    must not be replayed)."""
    pgconn = conn.pgconn
    try:
        with conn.lock:
            pgconn.send_query(begin_statement(tenant_id, role, statement_timeout))
            _check_answers(conn, conn.wait(_results(pgconn)))
    except BaseException as exc:
        _roll_back(conn)  # BEGIN ran and the scope failed (a refused role): not left open
        if _refuses_role(role, exc):
            raise _scope_refused(tenant_id, role, exc) from None
        raise
    return conn.cursor()


def _refuses_role(role: str | None, exc: BaseException) -> bool:
    """``exc`` is the server refusing the scope's ``SET LOCAL role``: the login is
    no member of it (InsufficientPrivilege) or it does not exist (22023)."""
    return role is not None and isinstance(
        exc, (psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidParameterValue))


def _scope_refused(tenant_id: str, role: str | None, exc: BaseException) -> StoreMoved:
    """A refused tenant role at BEGIN, before any statement of the caller's: the
    record that named this store and role is stale (the tenant moved off the
    shared database, or was deprovisioned) or the gateway's grant was undone. A
    StoreMoved (503), on a read as on a write, which the sync runtime's writes
    retry once on the record read again; not psycopg's error (a 500)."""
    return StoreMoved(f"store of tenant {tenant_id!r} refused its role {role!r} (moved?): {exc}".strip())


def _check_answers(conn: psycopg.Connection | psycopg.AsyncConnection, results: list[psycopg.pq.abc.PGresult],
                   *also: psycopg.pq.ExecStatus) -> None:
    """The server's answers to one of this module's fixed queries, ``begin_statement`` or
    ``_RESET_SESSION`` (one per statement; ``also``: statuses besides COMMAND_OK its
    statements answer with): the first failure raised, as psycopg raises it
    (``psycopg.errors``' class of its SQLSTATE)."""
    for result in results:
        if result.status != _COMMAND_OK and result.status not in also:
            if result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                raise error_from_result(result, encoding=conn.info.encoding)
            raise psycopg.InterfaceError("unexpected answer to the tenant scope: "
                                         f"{psycopg.pq.ExecStatus(result.status).name}")


def held(conn: psycopg.Connection, cur: psycopg.Cursor) -> Iterator[psycopg.Cursor]:
    """The block of a transaction ``begin`` began: yields ``cur``, then
    COMMIT, or ROLLBACK when the block raised (a ``psycopg.Rollback`` is
    swallowed, as psycopg's own transaction block swallows it). A block that
    ended the transaction itself (``conn.commit()``) is refused at its end:
    what ran after that ran outside the tenant's scope, where FORCE RLS saw no
    tenant."""
    try:
        yield cur
    except BaseException as exc:
        _roll_back(conn)
        if isinstance(exc, psycopg.Rollback) and exc.transaction is None:
            return
        raise
    if conn.pgconn.transaction_status == _IDLE:
        raise psycopg.ProgrammingError(_ENDED_INSIDE)
    conn.commit()  # a failed transaction's COMMIT is a ROLLBACK (PostgreSQL's answer)


def _tags(cur: psycopg.Cursor | psycopg.AsyncCursor) -> list[str]:
    """The command tag of each statement the cursor's last execute ran (several:
    a query of several statements), the cursor left on its last result."""
    tags = [cur.statusmessage or ""]
    while cur.nextset():
        tags.append(cur.statusmessage or "")
    return tags


def _refuse_control(cur: psycopg.Cursor | psycopg.AsyncCursor, tags: list[str]) -> None:
    """Raise when the statements just run ended the tenant transaction (and maybe
    began another, no longer scoped to the tenant)."""
    ended = cur.connection.info.transaction_status != _INTRANS
    if ended or _CONTROL_TAGS.intersection(tags):
        ran = "; ".join(t for t in tags if t)
        raise psycopg.ProgrammingError(
            f"transaction control in a tenant transaction's block (ran: {ran}): {_ENDED_INSIDE}; what ran after "
            "it ran with no tenant, or as the login (raise psycopg.Rollback to roll back; savepoints are fine)")


class ScopedCursor(psycopg.Cursor):
    """The cursor class of a connection handed to a caller inside a tenant
    transaction (``guarded``): a statement that ends or restarts the
    transaction is refused as soon as it has run (the block then rolls back)."""

    def execute(self, *args: Any, **kwargs: Any) -> ScopedCursor:
        super().execute(*args, **kwargs)
        tags = _tags(self)
        if len(tags) > 1:
            self.set_result(0)
        _refuse_control(self, tags)
        return self

    def executemany(self, *args: Any, **kwargs: Any) -> None:
        super().executemany(*args, **kwargs)
        _refuse_control(self, [self.statusmessage or ""])


class AsyncScopedCursor(psycopg.AsyncCursor):
    """``ScopedCursor`` for an async connection."""

    async def execute(self, *args: Any, **kwargs: Any) -> AsyncScopedCursor:
        await super().execute(*args, **kwargs)
        tags = _tags(self)
        if len(tags) > 1:
            await self.set_result(0)
        _refuse_control(self, tags)
        return self

    async def executemany(self, *args: Any, **kwargs: Any) -> None:
        await super().executemany(*args, **kwargs)
        _refuse_control(self, [self.statusmessage or ""])


@contextmanager
def guarded(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """``conn``, inside a tenant transaction, for a caller's own statements: its
    cursors (``conn.execute``'s too) refuse transaction control until the block ends."""
    factory, conn.cursor_factory = conn.cursor_factory, ScopedCursor
    try:
        yield conn
    finally:
        conn.cursor_factory = factory


@asynccontextmanager
async def aguarded(conn: psycopg.AsyncConnection) -> AsyncIterator[psycopg.AsyncConnection]:
    """``guarded`` for an async connection."""
    factory, conn.cursor_factory = conn.cursor_factory, AsyncScopedCursor
    try:
        yield conn
    finally:
        conn.cursor_factory = factory


def reset_session(conn: psycopg.Connection) -> None:
    """After a block that handed ``conn`` (a tenant's own login: a caller's SQL
    never rides the shared pool) to a caller, before the login is pooled again,
    one round trip: what the caller's statements may have changed in the session,
    not the transaction, and COMMIT keeps (a cursor WITH HOLD and the rows it read,
    LISTEN, a session advisory lock, a session SET — ``statement_timeout``,
    ``default_transaction_read_only`` — that the runtime's own next transaction on
    the login would run under, a temporary table). ``DISCARD ALL`` but its
    ``DEALLOCATE ALL``: the login's prepared statements (the append's) stay. A
    connection it cannot run on is closed (never pooled)."""
    pgconn = conn.pgconn
    if pgconn.status != _OK or pgconn.transaction_status != _IDLE:
        return  # broken or in a failed state: not pooled again anyway
    try:
        with conn.lock:
            pgconn.send_query(_RESET_SESSION)
            _check_answers(conn, conn.wait(_results(pgconn)), _TUPLES_OK)  # the unlock's row
    except psycopg.Error:
        conn.close()


async def areset_session(conn: psycopg.AsyncConnection) -> None:
    """``reset_session`` on an async connection."""
    pgconn = conn.pgconn
    if pgconn.status != _OK or pgconn.transaction_status != _IDLE:
        return
    try:
        async with conn.lock:
            pgconn.send_query(_RESET_SESSION)
            _check_answers(conn, await conn.wait(_results(pgconn)), _TUPLES_OK)
    except psycopg.Error:
        await conn.close()


def _roll_back(conn: psycopg.Connection) -> None:
    """ROLLBACK after a failure, when there is a transaction and a connection
    to roll it back on; a failure of the rollback itself is left out (the
    block's is the one raised; a connection in a transaction is not pooled)."""
    pgconn = conn.pgconn
    if pgconn.status == _OK and pgconn.transaction_status != _IDLE:
        try:
            conn.rollback()
        except psycopg.Error:
            pass


def scoped(conn: psycopg.Connection, tenant_id: str, role: str | None = None,
           statement_timeout: float | None = None) -> Iterator[psycopg.Cursor]:
    """One transaction scoped to ``tenant_id`` (``begin``, then ``held``):
    BEGIN and the scope in one round trip, the block, COMMIT. A generator for
    ``yield from`` inside another context manager (one layer less per call);
    as a context manager: ``tenant_transaction``. A connection not in
    autocommit mode is switched to it for the transaction only (psycopg
    refuses while a transaction of the caller's own is open)."""
    if conn.autocommit:
        yield from held(conn, begin(conn, tenant_id, role, statement_timeout))
        return
    conn.autocommit = True
    try:
        yield from held(conn, begin(conn, tenant_id, role, statement_timeout))
    finally:
        if conn.pgconn.transaction_status == _IDLE:  # not on a broken connection (psycopg would refuse)
            conn.autocommit = False


tenant_transaction = contextmanager(scoped)


async def abegin(conn: psycopg.AsyncConnection, tenant_id: str, role: str | None = None,
                 statement_timeout: float | None = None) -> psycopg.AsyncCursor:
    """``begin`` on an async connection."""
    pgconn = conn.pgconn
    try:
        async with conn.lock:
            pgconn.send_query(begin_statement(tenant_id, role, statement_timeout))
            _check_answers(conn, await conn.wait(_results(pgconn)))
    except BaseException as exc:
        await _aroll_back(conn)
        if _refuses_role(role, exc):
            raise _scope_refused(tenant_id, role, exc) from None
        raise
    return conn.cursor()


@asynccontextmanager
async def aheld(conn: psycopg.AsyncConnection, cur: psycopg.AsyncCursor) -> AsyncIterator[psycopg.AsyncCursor]:
    """``held`` on an async connection, as an async context manager."""
    try:
        yield cur
    except BaseException as exc:
        await _aroll_back(conn)
        if isinstance(exc, psycopg.Rollback) and exc.transaction is None:
            return
        raise
    if conn.pgconn.transaction_status == _IDLE:
        raise psycopg.ProgrammingError(_ENDED_INSIDE)
    await conn.commit()


async def _aroll_back(conn: psycopg.AsyncConnection) -> None:
    """``_roll_back`` on an async connection."""
    pgconn = conn.pgconn
    if pgconn.status == _OK and pgconn.transaction_status != _IDLE:
        try:
            await conn.rollback()
        except psycopg.Error:
            pass


STORE_FAILURES = (psycopg.errors.QueryCanceled, psycopg.OperationalError)  # what store_error maps


def store_error(tenant_id: str, exc: Exception) -> StoreTimeout | StoreUnavailable:
    """A database failure (one of ``STORE_FAILURES``) as a runtime error: a
    cancelled or timed-out query is a StoreTimeout (503, nothing committed), a
    lost connection StoreUnavailable."""
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return StoreTimeout(f"store query of tenant {tenant_id!r} cancelled: {exc}".strip())
    return StoreUnavailable(f"store of tenant {tenant_id!r} failed: {exc}".strip())


def refused_input(tenant_id: str, exc: psycopg.DataError) -> InvalidRequest | None:
    """InvalidRequest (400) when ``exc`` is input PostgreSQL cannot hold: a NUL
    in a text parameter (psycopg refuses it before sending: no SQLSTATE) or a
    ``\\u0000`` in jsonb (untranslatable character). The statement failed whole,
    so nothing of it was written. None for any other data error: a statement's
    own bug, raised as it is."""
    if exc.sqlstate is None or isinstance(exc, psycopg.errors.UntranslatableCharacter):
        return InvalidRequest(f"store of tenant {tenant_id!r} cannot hold the input: "
                              "a NUL character (\\x00), which PostgreSQL text and jsonb refuse")
    return None


def store_moved(tenant_id: str, exc: psycopg.errors.InsufficientPrivilege) -> StoreMoved:
    """The tenant role always may write its own tables, except on a store a move
    retired (its write rights revoked at the switch): a refusal of the store's
    own write means the record used is stale: fail closed."""
    return StoreMoved(f"store of tenant {tenant_id!r} refused the write (moved?): {exc}".strip())


@contextmanager
def store_errors(tenant_id: str) -> Iterator[None]:
    """``store_error`` around a block."""
    try:
        yield
    except STORE_FAILURES as exc:
        raise store_error(tenant_id, exc) from None
    except psycopg.DataError as exc:
        if (refused := refused_input(tenant_id, exc)) is None:
            raise
        raise refused from None


def store_gone(tenant_id: str, exc: psycopg.errors.UndefinedTable) -> StoreMoved:
    """The store's own tables always exist in the schema the record names, unless
    the tenant left it (deprovisioned, or moved and its old store dropped) after
    the context was resolved: the record used is stale, as ``store_moved``."""
    return StoreMoved(f"store of tenant {tenant_id!r} has no tables (deprovisioned or moved?): {exc}".strip())


@contextmanager
def read_errors_as_moved(tenant_id: str) -> Iterator[None]:
    """The store's own statements (never a caller's own SQL) with their missing
    tables (``UndefinedTable``) raised as ``store_gone``'s StoreMoved."""
    try:
        yield
    except psycopg.errors.UndefinedTable as exc:
        raise store_gone(tenant_id, exc) from None


@contextmanager
def write_errors_as_moved(tenant_id: str) -> Iterator[None]:
    """The store's own writes with a refused write (``InsufficientPrivilege``) raised
    as ``store_moved``'s StoreMoved, missing tables as ``read_errors_as_moved`` does."""
    with read_errors_as_moved(tenant_id):
        try:
            yield
        except psycopg.errors.InsufficientPrivilege as exc:
            raise store_moved(tenant_id, exc) from None
