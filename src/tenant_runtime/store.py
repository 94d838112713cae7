"""The routed context store: conversation history of one tenant, in that
tenant's schema (pooled: shared database; dedicated: its own database).

Every connection logs in as the tenant role with the password from the tenant's
secret (never from the registry record). Every unit of work is one transaction
that starts with ``set_config('app.tenant_id', <id>, true)`` (= SET LOCAL): the
setting ends with the transaction, so a connection returned to a pool carries
no tenant, and a query outside a tenant transaction sees zero rows (FORCE RLS,
``current_setting('app.tenant_id', true)`` is NULL or ''). Pools are per tenant
role; ``tenant_transaction(..., role=...)`` also serves a shared gateway login
that switches role per transaction (SET LOCAL ROLE), which leaks nothing either.

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
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tenant_runtime import cursor as cursor_codec
from tenant_runtime.cache import TTLCache
from tenant_runtime.context import TenantContext
from tenant_runtime.crypto import Envelope
from tenant_runtime.errors import InvalidRequest, StoreUnavailable, TenantMismatch
from tenant_runtime.hibernation import DatabaseWaker

Role = Literal["system", "user", "assistant", "tool"]
MAX_CONTENT = 1 << 20
MAX_METADATA = 64 << 10
MAX_PAGE = 500

# The store's tables, in every tenant schema (templates/tenant_schema.sql.j2
# creates them; checks, drills and usage read them by these names).
CONVERSATIONS = "conversations"
MESSAGES = "messages"
CONTEXT_ITEMS = "context_items"
TABLES = (CONVERSATIONS, MESSAGES, CONTEXT_ITEMS)


class StoreSecret(BaseModel):
    """The tenant secret's JSON (Secrets Manager, ARN in StoreConnection.secret_arn)."""

    model_config = ConfigDict(frozen=True)

    username: str
    password: str = Field(repr=False)
    host: str
    port: int = 5432
    dbname: str
    schema_: str = Field(alias="schema")


class Message(BaseModel):
    conversation_id: str
    seq: int
    role: Role
    content: str
    metadata: dict[str, Any]
    created_at: datetime


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

def encode_cursor(tenant_id: str, conversation_id: str, before: int | None, after: int) -> str:
    return cursor_codec.encode({"t": tenant_id, "c": conversation_id, "b": before, "a": after})


def encode_list_cursor(tenant_id: str, after: str) -> str:
    return cursor_codec.encode({"t": tenant_id, "l": after})


def decode_list_cursor(cursor: str, tenant_id: str) -> str:
    """The conversation id a list_conversations() cursor continues after;
    refuses another tenant's cursor (403) and anything malformed (400)."""
    try:
        data = cursor_codec.decode(cursor)
        owner, after = data["t"], data["l"]
        if not (isinstance(owner, str) and isinstance(after, str) and after):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise InvalidRequest("invalid cursor: pass a cursor returned by list_conversations()") from None
    if owner != tenant_id:
        raise TenantMismatch(tenant_id, owner, "cursor")
    return after


def decode_cursor(cursor: str, tenant_id: str, conversation_id: str) -> tuple[int | None, int]:
    """(before, after) seq bounds of a cursor; refuses another tenant's (403) or
    another conversation's (400) cursor and anything malformed."""
    try:
        data = cursor_codec.decode(cursor)
        owner, conv, before, after = data["t"], data["c"], data["b"], data["a"]
        if not (isinstance(owner, str) and isinstance(conv, str) and type(after) is int and after >= 0
                and (before is None or (type(before) is int and before > after))):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise InvalidRequest("invalid cursor: pass a cursor returned by history()") from None
    if owner != tenant_id:
        raise TenantMismatch(tenant_id, owner, "cursor")
    if conv != conversation_id:
        raise InvalidRequest("cursor belongs to another conversation")
    return before, after


# -- connections -----------------------------------------------------------------

@contextmanager
def tenant_transaction(conn: psycopg.Connection, tenant_id: str,
                       role: str | None = None) -> Iterator[psycopg.Connection]:
    """One transaction scoped to ``tenant_id`` (and, for a gateway login, to the
    tenant ``role``); both settings end with it."""
    with conn.transaction():
        if role is not None:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        yield conn


class _Pool:
    """Idle connections of one tenant role (bounded); broken or mid-transaction
    connections are closed instead of reused."""

    def __init__(self, connect: Callable[[], psycopg.Connection], max_idle: int) -> None:
        self.connect, self.max_idle = connect, max_idle
        self.idle: list[psycopg.Connection] = []
        self.lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self.lock:
            conn = self.idle.pop() if self.idle else None
        if conn is None:
            conn = self.connect()
        try:
            yield conn
        finally:
            clean = not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            with self.lock:
                if clean and len(self.idle) < self.max_idle:
                    self.idle.append(conn)
                    conn = None
            if conn is not None:
                conn.close()

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


class ContextStore:
    """``waker``: starts a hibernated tenant's database before its store is used
    (``tenant_runtime.hibernation``); None: hibernation is not looked at."""

    def __init__(self, envelope: Envelope, secret_client_for: Callable[[TenantContext], Any],
                 max_idle_per_tenant: int = 4, max_tenants: int = 256, secret_ttl: float = 300.0,
                 connect_timeout: int = 5, waker: DatabaseWaker | None = None) -> None:
        self.envelope = envelope
        self.secret_client_for = secret_client_for
        self.waker = waker
        self.max_idle, self.max_tenants, self.connect_timeout = max_idle_per_tenant, max_tenants, connect_timeout
        self._secrets: TTLCache[StoreSecret] = TTLCache(max_tenants, secret_ttl)
        self._pools: OrderedDict[str, _Pool] = OrderedDict()
        self._lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------

    def _secret(self, ctx: TenantContext) -> StoreSecret:
        store = ctx.resources.store
        hit, secret = self._secrets.get(store.secret_arn)
        if hit and secret is not None:
            return secret
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            raw = self.secret_client_for(ctx).get_secret_value(SecretId=store.secret_arn)["SecretString"]
            secret = StoreSecret.model_validate_json(raw)
        except (ClientError, BotoCoreError, KeyError, ValidationError) as exc:
            raise StoreUnavailable(f"store secret of tenant {ctx.tenant_id!r} unusable: {exc}") from None
        # The secret must name this tenant's role and schema: a secret pointing
        # elsewhere is refused rather than followed.
        if (secret.username, secret.schema_, secret.dbname) != (store.role, store.schema_name, store.database):
            raise TenantMismatch(ctx.tenant_id, f"{secret.dbname}/{secret.schema_}/{secret.username}", "store secret")
        self._secrets.put(store.secret_arn, secret)
        return secret

    def _pool(self, ctx: TenantContext) -> _Pool:
        if self.waker is not None:
            self.waker.ensure_awake(ctx)  # TenantWaking (503, retry) until a hibernated database is up
        with self._lock:
            pool = self._pools.get(ctx.tenant_id)
            if pool is not None:
                self._pools.move_to_end(ctx.tenant_id)
                return pool
        self._secret(ctx)  # fail early (and with the mismatch) when the secret is unusable

        def connect() -> psycopg.Connection:
            secret = self._secret(ctx)  # cached; re-read after a failed login (rotated password)
            try:
                return psycopg.connect(host=secret.host, port=secret.port, dbname=secret.dbname,
                                       user=secret.username, password=secret.password,
                                       connect_timeout=self.connect_timeout, application_name="tenant_runtime")
            except psycopg.OperationalError as exc:
                self._secrets.pop(ctx.resources.store.secret_arn)  # rotated password: re-read next time
                raise StoreUnavailable(f"store of tenant {ctx.tenant_id!r} unreachable: {exc}") from None

        with self._lock:
            pool = self._pools.setdefault(ctx.tenant_id, _Pool(connect, self.max_idle))
            while len(self._pools) > self.max_tenants:
                self._pools.popitem(last=False)[1].close()
            return pool

    @contextmanager
    def transaction(self, ctx: TenantContext) -> Iterator[psycopg.Connection]:
        with self._pool(ctx).connection() as conn, tenant_transaction(conn, ctx.tenant_id) as tx:
            yield tx

    def _table(self, ctx: TenantContext, table: str) -> sql.Composed:
        return sql.Identifier(ctx.resources.store.schema_name, table)

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            pool.close()

    # -- API ---------------------------------------------------------------------

    def append(self, ctx: TenantContext, conversation_id: str, role: str, content: str,
               metadata: dict[str, Any] | None = None) -> Message:
        _check_conversation(conversation_id)
        if role not in Role.__args__:  # type: ignore[attr-defined]
            raise InvalidRequest(f"role must be one of {', '.join(Role.__args__)}")  # type: ignore[attr-defined]
        body = content.encode()
        if len(body) > MAX_CONTENT:
            raise InvalidRequest(f"content is {len(body)} bytes; the limit is {MAX_CONTENT}")
        meta = metadata or {}
        try:
            meta_size = len(json.dumps(meta))
        except (TypeError, ValueError):
            raise InvalidRequest("metadata must be JSON-serialisable") from None
        if meta_size > MAX_METADATA:
            raise InvalidRequest(f"metadata is {meta_size} bytes of JSON; the limit is {MAX_METADATA}")
        sealed = self.envelope.encrypt(ctx, conversation_id, body)
        with self.transaction(ctx) as conn:
            seq, created = conn.execute(
                sql.SQL("WITH c AS (INSERT INTO {conv} (tenant_id, conversation_id) VALUES (%(t)s, %(c)s) "
                        "ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET updated_at = now() RETURNING 1) "
                        "INSERT INTO {msg} (tenant_id, conversation_id, role, content, metadata) "
                        "SELECT %(t)s, %(c)s, %(r)s, %(b)s, %(m)s FROM c RETURNING seq, created_at").format(
                    conv=self._table(ctx, CONVERSATIONS), msg=self._table(ctx, MESSAGES)),
                {"t": ctx.tenant_id, "c": conversation_id, "r": role, "b": sealed, "m": Jsonb(meta)},
            ).fetchone()
        return Message(conversation_id=conversation_id, seq=seq, role=role, content=content,
                       metadata=meta, created_at=created)

    def history(self, ctx: TenantContext, conversation_id: str, limit: int = 50,
                cursor: str | None = None) -> Page:
        """Newest-first page of at most ``limit`` messages. ``cursor``: a
        ``next_cursor`` (older messages) or a ``head_cursor`` (what arrived since)."""
        _check_conversation(conversation_id)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
        before, after = decode_cursor(cursor, ctx.tenant_id, conversation_id) if cursor else (None, 0)
        with self.transaction(ctx) as conn:
            rows = conn.execute(
                sql.SQL("SELECT seq, role, content, metadata, created_at FROM {msg} "
                        "WHERE tenant_id = %(t)s AND conversation_id = %(c)s AND seq > %(a)s "
                        "AND seq < coalesce(%(b)s::bigint, 9223372036854775807) "
                        "ORDER BY seq DESC LIMIT %(n)s").format(msg=self._table(ctx, MESSAGES)),
                {"t": ctx.tenant_id, "c": conversation_id, "a": after, "b": before, "n": limit + 1},
            ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        contents = self.envelope.decrypt_many(ctx, conversation_id, [bytes(row[2]) for row in rows])
        # Rows typed by PostgreSQL: built without re-validation.
        messages = [Message.model_construct(conversation_id=conversation_id, seq=seq, role=role,
                                            content=content.decode(), metadata=meta, created_at=created)
                    for (seq, role, _, meta, created), content in zip(rows, contents, strict=True)]
        encode = partial(encode_cursor, ctx.tenant_id, conversation_id)
        return Page(
            messages=messages,
            next_cursor=encode(rows[-1][0], after) if more else None,
            # Only a read from the top of its range knows the newest seq.
            head_cursor=encode(None, rows[0][0] if rows else after) if before is None else None,
        )

    def list_conversations(self, ctx: TenantContext, limit: int = 50, cursor: str | None = None) -> ConversationPage:
        """The tenant's conversations by id, ``limit`` at a time (keyset on the
        id: stable while conversations are added or deleted)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
        after = decode_list_cursor(cursor, ctx.tenant_id) if cursor else ""
        with self.transaction(ctx) as conn:
            rows = conn.execute(
                sql.SQL("SELECT conversation_id, created_at, updated_at FROM {conv} "
                        "WHERE tenant_id = %(t)s AND conversation_id > %(a)s "
                        "ORDER BY conversation_id LIMIT %(n)s").format(conv=self._table(ctx, CONVERSATIONS)),
                {"t": ctx.tenant_id, "a": after, "n": limit + 1},
            ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return ConversationPage(
            conversations=[Conversation(conversation_id=c, created_at=cr, updated_at=up) for c, cr, up in rows],
            next_cursor=encode_list_cursor(ctx.tenant_id, rows[-1][0]) if more else None)

    def delete_conversation(self, ctx: TenantContext, conversation_id: str) -> bool:
        """Delete a conversation and its messages; False when there was none."""
        _check_conversation(conversation_id)
        with self.transaction(ctx) as conn:
            cur = conn.execute(
                sql.SQL("DELETE FROM {conv} WHERE tenant_id = %s AND conversation_id = %s").format(
                    conv=self._table(ctx, CONVERSATIONS)), (ctx.tenant_id, conversation_id))
            return cur.rowcount > 0


def _check_conversation(conversation_id: str) -> None:
    if not isinstance(conversation_id, str) or not 1 <= len(conversation_id) <= 200:
        raise InvalidRequest("conversation_id must be 1..200 characters")
