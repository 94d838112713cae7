"""The tenant's search keys as the store operations use them: read, unsealed,
cached, and checked against the store by every statement that hashes with them.

A key is identified by its version *and* the SHA-256 of its sealed row
(``sealed``, as PostgreSQL's ``sha256()`` computes it): version numbers can
repeat — a restore brings back an older ``search_keys`` table, a reindex then
makes the next number, which a running process may still cache for another
key — while a new key's sealed form never does (a fresh random key under a
fresh data key and nonce). Items carry only the version: the one statement
that writes them checks (version, digest) against the newest key row, so an
item's version always names the key it was hashed under. Re-sealing a key
(re-wrap, re-key) changes its digest: caches read it again, nothing else.

Each key's row in ``search_analyzers`` names the analyzer its index was built
with (``tenant_runtime.analyzer.identity``), written with the key and never
changed: read and cached with the keys, so comparing it costs a write or a
search nothing more (a new analyzer comes only with a new key, which the
statements' key checks already notice).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

from tenant_runtime import analyzer
from tenant_runtime.blind_index import SEARCH_KEY_SCOPE, TermHasher, new_search_key
from tenant_runtime.cache import TTLCache
from tenant_runtime.context import TenantContext
from tenant_runtime.errors import StoreUnavailable
from tenant_runtime.tables import SEARCH_ANALYZERS, SEARCH_KEYS, SEARCH_STATS

KEY_CACHE_TENANTS, KEY_CACHE_TTL = 1_000, 300.0
KEY_TRIES = 3  # a statement sent round again after the keys changed under it, at most


class SearchKey(NamedTuple):
    version: int
    digest: bytes  # SHA-256 of the sealed key row
    hasher: TermHasher  # the unsealed key
    counted: bool = True  # its document frequencies kept in search_stats since it was made
    analyzer: str = analyzer.LEGACY_IDENTITY  # what cut the terms indexed under it (search_analyzers)


def sealed_digest(sealed: bytes) -> bytes:
    """What ``sha256(sealed)`` gives in SQL for the same row."""
    return hashlib.sha256(sealed).digest()


class SearchKeyOperations:
    """The search key part of the store operations (mixed into DocumentOperations)."""

    envelope: Any
    _table: Callable[[TenantContext, str], sql.Composed]

    def _cached_keys(self, ctx: TenantContext) -> list[SearchKey] | None:
        """The tenant's search keys as last unsealed, while the tenant's KMS key
        was checked Enabled within the envelope's ``recheck_after``: a key
        disabled or scheduled for deletion stops search as fast as it stops
        decryption. Statements that use them verify they are still the live
        ones (``keys_live_sql``, ``newest_key_sql``), else they are read again."""
        cache = self.__dict__.get("_search_key_cache")
        if cache is None or not self.envelope.cache.key_checked(ctx.resources.kms_key_arn):
            return None
        hit, keys = cache.get((ctx.key, ctx.resources.kms_key_arn))
        return keys if hit else None

    def _forget_keys(self, ctx: TenantContext) -> None:
        cache = self.__dict__.get("_search_key_cache")
        if cache is not None:
            cache.pop((ctx.key, ctx.resources.kms_key_arn))

    def _search_keys(self, ctx: TenantContext, create: bool) -> Any:
        """The tenant's live search keys, oldest first; with ``create``, the
        first one is made when there is none."""
        cached = self._cached_keys(ctx)
        if cached:
            return cached
        rows, recorded = yield from self._key_rows(ctx)
        if not rows and create:
            yield from self._add_search_key(ctx, 1, conflict_ok=True)
            # ours, or a racing writer's
            rows = yield self._statement_step(self._keys_select(ctx, recorded), (ctx.key,), "all")
        keys = yield self._compute_step(self.envelope.decrypt_many, ctx, SEARCH_KEY_SCOPE,
                                        [bytes(r[1]) for r in rows])
        found = [SearchKey(r[0], sealed_digest(bytes(r[1])), TermHasher(k), r[2], r[3] or analyzer.LEGACY_IDENTITY)
                 for r, k in zip(rows, keys, strict=True)]
        if found:
            self.__dict__.setdefault("_search_key_cache", TTLCache(KEY_CACHE_TENANTS, KEY_CACHE_TTL)).put(
                (ctx.key, ctx.resources.kms_key_arn), found)
        return found

    def _key_rows(self, ctx: TenantContext) -> Any:
        """The store's key rows (``_keys_select``), as sealed, and the expression that read their analyzer."""
        recorded = sql.SQL("(SELECT a.analyzer FROM {} a WHERE a.tenant_id = k.tenant_id "
                           "AND a.key_version = k.version)").format(self._table(ctx, SEARCH_ANALYZERS))
        try:
            rows = yield self._statement_step(self._keys_select(ctx, recorded), (ctx.key,), "all")
        except psycopg.errors.UndefinedTable as exc:
            if not _no_analyzer_table(exc):
                raise
            # A store whose schema predates the table (the template not run again
            # since): its index was built before identities were, as a missing row says.
            recorded = sql.SQL("NULL::text")
            rows = yield self._statement_step(self._keys_select(ctx, recorded), (ctx.key,), "all")
        return rows, recorded

    def _index_analyzers(self, ctx: TenantContext) -> Any:
        """The analyzer of each live search key, oldest first, read from the store
        (not the cache) and unsealing nothing: no KMS call."""
        rows, _ = yield from self._key_rows(ctx)
        return [r[3] or analyzer.LEGACY_IDENTITY for r in rows]

    def _keys_select(self, ctx: TenantContext, recorded: sql.Composable) -> sql.Composed:
        """The store's keys, oldest first: version, sealed, counted, ``recorded`` (their analyzer)."""
        return sql.SQL(
            "SELECT k.version, k.sealed, EXISTS (SELECT FROM {stats} s WHERE s.tenant_id = k.tenant_id "
            "AND s.kind = '' AND s.key_version = k.version), {recorded} FROM {keys} k WHERE k.tenant_id = %s "
            "ORDER BY k.version").format(keys=self._table(ctx, SEARCH_KEYS), stats=self._table(ctx, SEARCH_STATS),
                                         recorded=recorded)

    def _add_search_key(self, ctx: TenantContext, version: int, conflict_ok: bool = False,
                        identity: str | None = None) -> Any:
        """A new random key row at ``version``, marked counted (search_stats)
        and its analyzer recorded (``identity``, this runtime's by default) in
        the same statement; returns it (unsealed, to hash with). A row left
        for the version by a key gone (restored over) is replaced."""
        key = new_search_key()
        identity = identity or analyzer.identity()
        sealed = yield self._compute_step(self.envelope.encrypt, ctx, SEARCH_KEY_SCOPE, key)
        try:
            yield from self._insert_search_key(ctx, version, conflict_ok, sealed, identity)
        except psycopg.errors.UndefinedTable as exc:
            if not _no_analyzer_table(exc):
                raise
            # A key without its analyzer would read as one from before identities: refused.
            raise StoreUnavailable(
                f"store of tenant {ctx.key!r} has no search_analyzers table (its schema predates this "
                f"runtime): run `tenantctl apply` (or `tenantctl provision {ctx.tenant_id}`) to update it"
            ) from None
        return SearchKey(version, sealed_digest(sealed), TermHasher(key), analyzer=identity)

    def _insert_search_key(self, ctx: TenantContext, version: int, conflict_ok: bool, sealed: bytes,
                           identity: str) -> Any:
        yield self._statement_step(
            sql.SQL("WITH k AS (INSERT INTO {keys} (tenant_id, version, sealed) VALUES (%(t)s, %(v)s, %(s)s)"
                    + (" ON CONFLICT DO NOTHING" if conflict_ok else "") + " RETURNING version), "
                    "a AS (INSERT INTO {analyzers} (tenant_id, key_version, analyzer) SELECT %(t)s, version, %(a)s "
                    "FROM k ON CONFLICT (tenant_id, key_version) DO UPDATE SET analyzer = EXCLUDED.analyzer, "
                    "created_at = now()) "
                    "INSERT INTO {stats} (tenant_id, kind, key_version, term, items) "
                    "SELECT %(t)s, '', version, 0, 0 FROM k").format(
                keys=self._table(ctx, SEARCH_KEYS), stats=self._table(ctx, SEARCH_STATS),
                analyzers=self._table(ctx, SEARCH_ANALYZERS)),
            {"t": ctx.key, "v": version, "s": sealed, "a": identity}, "rowcount")

    def _with_live_keys(self, ctx: TenantContext, run: Callable[[list[SearchKey]], Any]) -> Any:
        """``run(keys)`` (a step generator returning (answer, live)) under the
        tenant's keys until ``live`` says they were still exactly the store's
        keys when its statement ran; None when the tenant has no key yet."""
        for _ in range(KEY_TRIES):
            keys = yield from self._search_keys(ctx, create=False)
            if not keys:
                return None
            answer, live = yield from run(keys)
            if live:
                return answer
            self._forget_keys(ctx)
        raise StoreUnavailable(f"search key of tenant {ctx.key!r} kept changing: retry")

    def _keys_live_sql(self, ctx: TenantContext) -> sql.Composed:
        """A boolean SQL expression: the store's key rows are exactly
        ``%(kv)s`` / ``%(kd)s`` (``key_params``), versions and digests."""
        return sql.SQL(
            "(SELECT coalesce(array_agg(version ORDER BY version) = %(kv)s::int[] "
            "AND array_agg(sha256(sealed) ORDER BY version) = %(kd)s::bytea[], false) "
            "FROM {} WHERE tenant_id = %(t)s)").format(self._table(ctx, SEARCH_KEYS))

    def _newest_key_sql(self, ctx: TenantContext) -> sql.Composed:
        """A boolean SQL expression: ``%(v)s`` / ``%(vd)s`` are the store's newest key row."""
        return sql.SQL(
            "(%(v)s::int, %(vd)s::bytea) = (SELECT version, sha256(sealed) FROM {} WHERE tenant_id = %(t)s "
            "ORDER BY version DESC LIMIT 1)").format(self._table(ctx, SEARCH_KEYS))

    @staticmethod
    def _key_params(keys: list[SearchKey]) -> dict[str, Any]:
        return {"kv": [k.version for k in keys], "kd": [k.digest for k in keys]}


def _no_analyzer_table(exc: psycopg.errors.UndefinedTable) -> bool:
    """``exc`` is about the store's missing ``search_analyzers`` (not another table): the
    relation's name, which the server's message holds in any language (its quotes vary)."""
    return f".{SEARCH_ANALYZERS}" in (exc.diag.message_primary or "")
