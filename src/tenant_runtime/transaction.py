"""One tenant transaction: the statement every unit of work begins with
(transaction-local tenant, role for a gateway login, statement timeout), the
schema-qualified statements, and what a database failure becomes for the
caller (``StoreTimeout``, ``StoreUnavailable``, ``StoreMoved``). Shared by the
sync and async drivers and by tenantctl's operations on a tenant's store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import psycopg
from psycopg import sql

from tenant_runtime.errors import InvalidRequest, StoreMoved, StoreTimeout, StoreUnavailable


@lru_cache(maxsize=4096)
def scope_statement(tenant_id: str, role: str | None = None,
                    statement_timeout: float | None = None) -> tuple[bytes, tuple]:
    """The first statement of every tenant transaction, one round trip:
    transaction-local tenant (and role for a gateway login, and statement
    timeout when set). Made once per tenant and shape (immutable)."""
    names: tuple[str, ...] = ("app.tenant_id",)
    values: tuple[str, ...] = (tenant_id,)
    if role is not None:  # = SET LOCAL ROLE, first: refused unless the login may become it
        names, values = ("role", *names), (role, *values)
    if statement_timeout is not None:
        names, values = (*names, "statement_timeout"), (*values, str(max(1, int(statement_timeout * 1000))))
    return _scope_query(names), values


@lru_cache(maxsize=8)
def _scope_query(names: tuple[str, ...]) -> bytes:
    # Composing costs more than the rest of a warm append's client work: once per shape.
    return (sql.SQL("SELECT ") + sql.SQL(", ").join(
        sql.SQL("set_config({}, %s, true)").format(sql.Literal(name)) for name in names)).as_bytes(None)


@lru_cache(maxsize=4096)
def schema_statement(template: str, schema: str, **tables: str) -> bytes:
    """``template`` with each ``{name}`` replaced by the quoted table ``schema.tables[name]``,
    rendered once per schema (the quoting is libpq's, done in Python: the same bytes)."""
    return sql.SQL(template).format(**{name: sql.Identifier(schema, table) for name, table in tables.items()}
                                    ).as_bytes(None)


def scoped(conn: psycopg.Connection, tenant_id: str, role: str | None = None,
           statement_timeout: float | None = None) -> Iterator[psycopg.Cursor]:
    """One transaction scoped to ``tenant_id`` (and, for a gateway login, to the
    tenant ``role``); every setting ends with it. Yields the cursor that ran the
    scope statement, for the transaction's own statements (a cursor per
    ``conn.execute`` costs more client work than the statement's parameters).
    A generator for ``yield from`` inside another context manager (one layer
    less per call); as a context manager: ``tenant_transaction``."""
    with psycopg.Transaction(conn):  # = conn.transaction() (never in pipeline mode), one layer less
        cur = conn.cursor()
        cur.execute(*scope_statement(tenant_id, role, statement_timeout))
        yield cur


tenant_transaction = contextmanager(scoped)


STORE_FAILURES = (psycopg.errors.QueryCanceled, psycopg.OperationalError)  # what store_error maps


def may_retry_on_a_fresh_login(reused: bool, begun: bool) -> bool:
    """After a connection failure: an idle connection the server closed
    meanwhile (restart, database recreated, idle timeout, terminated) fails on
    the transaction's first round trips (BEGIN, the scope statement), before
    anything of the caller's was sent: once on a fresh login is safe. Never
    once the caller's statements went out (a write whose COMMIT is unknown
    must not be replayed), nor after a fresh login failed."""
    return reused and not begun


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


@contextmanager
def moved_store(tenant_id: str) -> Iterator[None]:
    """``store_moved`` around the store's own writes."""
    try:
        yield
    except psycopg.errors.InsufficientPrivilege as exc:
        raise store_moved(tenant_id, exc) from None
