"""Per-tenant documents and their search index, in the tenant's own store.

Documents (``documents``): title and body sealed together with the tenant's
envelope (bound to the document id), metadata in clear JSON (filters and
facets run on it in SQL), an optional source link. The search index is
blind (``tenant_runtime.blind_index``) and lives in the item's own row:
``terms``, its hashed terms as int8 (``term_id``), and ``tfs``, their
frequencies in the same order (a title prefix's negated: ``UNCOUNTED_KINDS``;
the layout of a tsvector; no index: under
forced RLS none could serve ``&&``). Searching it: ``tenant_runtime.search``. A write is
one row per item, so a document and its index are one statement, one
transaction. ``terms`` NULL: an item of a store from before this layout,
found again once ``reindex`` ran.

Large bodies (over ``LARGE_BODY`` bytes) live in the tenant's S3 prefix
(``tenant_runtime.objects``: SSE-KMS under the tenant's key): the sealed row
keeps the title, the body's beginning (for highlights) and a pointer (key
relative to the prefix, size, SHA-256); ``get_document`` fetches and checks
the body, ``delete_document`` deletes the object, the index is built from the
whole body. ``put_document_from_upload`` makes a document of an object
uploaded through ``presign_upload``.

Conversation summaries (``summaries``) are indexed the same way, under
the same search key.

Operations are written once as step generators (``tenant_runtime.store``) and
mixed into both drivers (``ContextStore``, ``AsyncContextStore``).

Search key versions: a document is indexed under exactly one version (the
newest when it was written); a query is hashed under every live version, so
``reindex`` (a new key, every document re-hashed in batches, then the old key
dropped) never leaves a window where documents cannot be found. Keys are
told apart by version and sealed digest (``tenant_runtime.search_keys``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import compress
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, ValidationError

from tenant_runtime import analyzer
from tenant_runtime import cursor as cursor_codec
from tenant_runtime.blind_index import document_scope, summary_scope
from tenant_runtime.context import TenantContext, check_writable, verified
from tenant_runtime.errors import AnalyzerUnavailable, DecryptionFailed, InvalidRequest, StoreUnavailable
from tenant_runtime.search_keys import KEY_TRIES, SearchKey, SearchKeyOperations
from tenant_runtime.tables import (
    CONVERSATIONS,
    DOCUMENTS,
    SEARCH_ANALYZERS,
    SEARCH_KEYS,
    SEARCH_STATS,
    SEARCH_VOCAB,
    SUMMARIES,
)

MAX_DOCUMENT = 1 << 20  # the sealed row's JSON (title + body, or title + beginning + pointer), bytes
LARGE_BODY = 256 << 10  # bodies above this many bytes of UTF-8 go to S3
MAX_BODY = 8 << 20  # an S3 body: read whole to index it
MAX_DOC_METADATA = 64 << 10
MAX_RESULTS = 100
REINDEX_BATCH = 200
MAX_BATCH = 500  # documents per put_documents call
HIGHLIGHT_SCAN = 4_000  # a body's beginning searched for highlights (a large body's kept in its row)
# Term kinds whose document frequency no query reads: title prefixes (suggestions
# rank by the items' own frequencies). An item stores their frequency negated, so
# neither its write nor its delete counts them in search_stats (a third of a write's
# count rows); an item from before keeps them positive, counted both ways.
UNCOUNTED_KINDS = ("p:",)
# Taken before an item's write, in the write's transaction (``item_locks``): the
# write's statement then starts after any other write of the same items committed,
# and reads them as they are (see ``item_locks``).
LOCK_ITEMS_SQL = "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::int8[]) AS u(k)"
ITEM_LOCK_BUCKETS = 16  # advisory locks a write takes at most
# What an item write returns after its own columns, for search_stats: the item's key
# version, terms, frequencies and length before the write (NULL: no item). What it
# wrote is counted in Python (``_new_counts``): the statement writes all of its items or none.
STATS_RETURNING = 4
# Items to write as an analyzer profile cuts them: ((id, analysis) of each, the params of their lengths).
Analyse = Callable[[analyzer.Profile], tuple[list[tuple[str, analyzer.Analysed]], dict[str, Any]]]
# A reindex's progress: (item kind, items re-hashed so far, items it found to re-hash).
ReindexProgress = Callable[[str, int, int], None]


class Document(BaseModel):
    doc_id: str
    title: str
    body: str
    metadata: dict[str, Any]
    source: str | None
    created_at: datetime
    updated_at: datetime
    body_key: str | None = None  # the S3 key of a large body (presign_download gives it to a browser)


class NewDocument(BaseModel):
    """A document to write (``put_documents``); a field it has not is refused
    (a misspelt ``metadata`` would otherwise be dropped without a word)."""

    model_config = ConfigDict(extra="forbid")

    doc_id: str
    title: str
    body: str
    metadata: dict[str, Any] | None = None
    source: str | None = None


class Summary(BaseModel):
    conversation_id: str
    text: str
    created_at: datetime
    updated_at: datetime


class DocumentSummary(BaseModel):
    doc_id: str
    title: str
    metadata: dict[str, Any]
    source: str | None
    updated_at: datetime


class DocumentPage(BaseModel):
    documents: list[DocumentSummary]  # by doc_id
    next_cursor: str | None


class ReindexResult(BaseModel):
    key_version: int
    documents: int
    summaries: int = 0
    analyzer: str = ""  # the analyzer the index was rebuilt with (``analyzer.identity``), recorded with its key


@dataclass(frozen=True)
class _Source:
    """What the index covers: a table of sealed items, each row holding its terms."""

    kind: str
    table: str
    id_column: str
    scope: Callable[[str], str]


DOCUMENT_SOURCE = _Source("document", DOCUMENTS, "doc_id", document_scope)
SUMMARY_SOURCE = _Source("summary", SUMMARIES, "conversation_id", summary_scope)
SOURCES = (DOCUMENT_SOURCE, SUMMARY_SOURCE)


def item_locks(tenant_key: str, kind: str, ids: Sequence[str]) -> list[int]:
    """The transaction-level advisory locks of a write of these items, sorted
    (writers take them in one order: no deadlock). A write counts in
    search_stats what it replaced as its statement's snapshot shows it; without
    the lock a concurrent write of the same item, committed after that snapshot
    was taken, is replaced uncounted (its terms counted twice, or another
    version's subtracted). One lock per bucket of ids (``ITEM_LOCK_BUCKETS``
    per tenant and kind), not per id: advisory locks take slots of the
    server's shared lock table (64 per connection by default), which a batch
    of 500 locks would exhaust for every tenant of the database. Two writes
    of one item always share its bucket; writes of different items of a tenant
    may wait for each other (large batches already take turns on the counts).
    Keys are hashes of (tenant, kind, bucket): a collision, or another tenant
    of the database guessing them, only makes a write wait."""
    buckets = {int.from_bytes(hashlib.sha256(item.encode()).digest()[:4], "big") % ITEM_LOCK_BUCKETS
               for item in ids}
    digests = (hashlib.sha256(f"{tenant_key}\0{kind}\0{b}".encode()).digest() for b in buckets)
    return sorted(int.from_bytes(d[:8], "big", signed=True) for d in digests)


def check_text(value: str, what: str) -> None:
    """``value`` (a str) is text the store can hold: no lone surrogate (what a
    JSON ``"\\ud800"`` decodes to), which UTF-8, and so PostgreSQL, cannot encode."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise not_unicode(what) from None


def check_stored_text(value: str, what: str) -> None:
    """``value`` is text PostgreSQL can hold in a text column: valid Unicode, no NUL."""
    check_text(value, what)
    if "\x00" in value:
        raise holds_nul(what)


def check_json_text(value: Any, text: str, what: str) -> None:
    """``value``, whose ASCII JSON is ``text``, holds no lone surrogate and no
    NUL (jsonb refuses both). Only JSON that escapes a surrogate (a pair, an
    emoji, is fine) is encoded again to tell which, and only JSON holding
    ``\\u0000`` is searched for a NUL's escape (an escaped backslash before
    ``u0000`` is text): the common case costs two substring tests."""
    if "\\ud" in text:
        check_text(json.dumps(value, ensure_ascii=False), what)
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise holds_nul(what)


# ``\u0000`` after an even number of backslashes (each pair an escaped backslash): a NUL's escape.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def holds_nul(what: str) -> InvalidRequest:
    """The refusal of text holding a NUL, before any I/O (PostgreSQL would refuse it after)."""
    return InvalidRequest(f"{what} holds a NUL character (\\x00), which PostgreSQL text and jsonb refuse")


def not_unicode(what: str) -> InvalidRequest:
    """The refusal of text holding a lone surrogate (``check_text``)."""
    return InvalidRequest(f"{what} is not valid Unicode: a lone surrogate (U+D800..U+DFFF)")


def _check_id(value: str, what: str = "doc_id") -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= 200:
        raise InvalidRequest(f"{what} must be 1..200 characters")
    check_stored_text(value, what)


def _check_fields(title: str, metadata: dict[str, Any] | None, source: str | None) -> dict[str, Any]:
    """The document's metadata ({} for None) once title, metadata and source are valid."""
    if not isinstance(title, str):
        raise InvalidRequest("title must be a string")
    meta = metadata or {}
    if not isinstance(meta, dict):
        raise InvalidRequest("metadata must be a JSON object")
    check_json_size(meta, "metadata", MAX_DOC_METADATA)
    if source is not None and (not isinstance(source, str) or len(source) > 2_000):
        raise InvalidRequest("source must be a link of at most 2000 characters")
    check_text(title, "title")
    if source is not None:
        check_stored_text(source, "source")
    return meta


def _new_document(value: NewDocument | Mapping[str, Any]) -> NewDocument:
    """A checked document to write (metadata {} for None)."""
    if isinstance(value, NewDocument):
        value = value.model_dump()
    if not isinstance(value, Mapping):
        raise InvalidRequest("each document must be an object with doc_id, title, body, metadata, source")
    _check_id(value.get("doc_id"))
    meta = _check_fields(value.get("title"), value.get("metadata"), value.get("source"))
    if not isinstance(value.get("body"), str):
        raise InvalidRequest("body must be a string")
    check_text(value["body"], "body")
    try:
        return NewDocument.model_validate({**value, "metadata": meta}, strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(map(str, error["loc"]))
        raise InvalidRequest(f"invalid document: {error['msg']}" + (f" ({field!r})" if field else "")) from None


def _int_array(values: list[int]) -> str:
    """Integers in PostgreSQL's text form of an array: for a batch's ~10,000
    terms a third of the time psycopg takes to dump the list element by element."""
    return "{" + ",".join(map(str, values)) + "}"


def _new_counts(terms: list[int], analysed: list[analyzer.Analysed]) -> dict[str, Any]:
    """What a write of these items adds to search_stats (``_stats_sql``): how
    many of them hold each counted term (an item's terms are distinct), their number
    and total length. Counted here rather than by unnesting every written
    item's terms in the statement, which took most of a batch's statement."""
    held = Counter(terms)
    return {"nt": _int_array(list(held)), "nn": _int_array(list(held.values())), "ni": len(analysed),
            "nl": sum(a.length for a in analysed)}


def _pointer(rel: str, data: bytes) -> dict[str, Any]:
    return {"key": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _sealable(content: dict[str, Any], what: str) -> bytes:
    data = json.dumps(content).encode()
    if len(data) > MAX_DOCUMENT:
        raise InvalidRequest(f"{what} is {len(data)} bytes; the limit is {MAX_DOCUMENT}")
    return data


def check_json_size(value: Any, what: str, limit: int) -> None:
    """``value`` is JSON jsonb can hold (no NaN or infinity, no lone surrogate) of at most ``limit``."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{what} must be JSON-serialisable (finite numbers)") from None
    size = len(text)
    check_json_text(value, text, what)
    if size > limit:
        raise InvalidRequest(f"{what} is {size} bytes of JSON; the limit is {limit}")


def check_limit(limit: int, most: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        raise InvalidRequest(f"limit must be between 1 and {most}")


class DocumentOperations(SearchKeyOperations):
    """Documents and search as store operations (mixed into the store drivers)."""

    envelope: Any
    objects: Any = None  # tenant_runtime.objects.ObjectAccess: large bodies
    _table: Callable[[TenantContext, str], sql.Composed]

    # -- writing ---------------------------------------------------------------------

    def _index_write(self, ctx: TenantContext, head: sql.Composable, params: dict[str, Any], key: SearchKey,
                     items: list[tuple[str, analyzer.Analysed]], kind: str = "document") -> Any:
        """One statement: ``head`` (a CTE named ``d`` writing the items' rows
        with their terms, returning each one's id as doc_id), then the items'
        words added to the vocabulary; returns the rows of ``d``. ``items``:
        (id, analysis) of every item ``head`` may write, in order; ``head``
        reads item i's terms and frequencies as ``%(ft)s::int8[]`` and
        ``%(ftf)s::int4[]`` sliced ``[lo[i]:hi[i]]`` (all of them for one item),
        and returns ``STATS_RETURNING`` columns last (``_stats_sql``), which
        keep the document frequencies of ``kind`` and are not returned. It
        writes every item or none (``_new_counts``)."""
        hasher = key.hasher
        terms: list[int] = []
        tfs: list[int] = []
        counted: list[int] = []
        lo: list[int] = []
        hi: list[int] = []
        new_words: set[tuple[str, str]] = set()
        for _, analysed in items:
            lo.append(len(terms) + 1)
            ids = hasher.ids(analysed.counts)
            freqs = [-tf if term.startswith(UNCOUNTED_KINDS) else tf for term, tf in analysed.counts.items()]
            # Sorted by term: a query finds a term's position by binary search
            # (width_bucket). Positions sorted by id, then both lists taken in
            # that order (map, in C): no (id, tf) tuple built and compared per term.
            order = sorted(range(len(ids)), key=ids.__getitem__)
            terms += map(ids.__getitem__, order)
            tfs += map(freqs.__getitem__, order)
            counted += compress(ids, map((0).__lt__, freqs))
            hi.append(len(terms))
            # Only words this process has not yet written under this key: after
            # a few hundred documents nearly every word is known, and its ~6
            # trigram rows would only be probed and skipped (ON CONFLICT) again.
            new_words |= analysed.words - hasher.written
        pairs = sorted({pair for surface, term in new_words for pair in analyzer.vocabulary_pairs(surface, term)})
        query = sql.SQL(
            "WITH d AS ({head}), "
            "voc AS (INSERT INTO {vocab} (tenant_id, key_version, gram, term) "
            "  SELECT DISTINCT %(t)s, %(v)s, u.gram, u.term FROM unnest(%(grams)b::bytea[], %(words)b::bytea[]) "
            "  AS u(gram, term) WHERE EXISTS (SELECT FROM d) ON CONFLICT DO NOTHING), "
            "{stats} SELECT * FROM d").format(head=head, vocab=self._table(ctx, SEARCH_VOCAB),
                                              stats=self._stats_sql(ctx, written=True))
        rows = yield self._statement_step(query, {
            **params, **_new_counts(counted, [a for _, a in items]), "t": ctx.key, "kind": kind, "v": key.version,
            "vd": key.digest, "ft": _int_array(terms), "ftf": _int_array(tfs),
            "lo": lo, "hi": hi,
            "grams": [hasher(g) for g, _ in pairs], "words": [hasher(w) for _, w in pairs]}, "all",
            item_locks(ctx.key, kind, [item for item, _ in items]))
        if rows:  # committed (each statement is its transaction)
            hasher.wrote(new_words)
        return [r[:-STATS_RETURNING] for r in rows]

    def _stats_sql(self, ctx: TenantContext, written: bool = False) -> sql.Composed:
        """CTE ``st``: the changes to search_stats for ``%(kind)s`` (each
        term's document count, and the corpus row of each key version: kind
        '#' + kind, term 0, its indexed items and their total length) of the
        items CTE ``d`` replaced or deleted (columns s_okv, s_oterms, s_otfs,
        s_olen: before; a term whose frequency is negative is not counted,
        ``UNCOUNTED_KINDS``) and, ``written``, of those it wrote under ``%(v)s``, counted
        in Python (``_new_counts``: ``%(nt)s`` terms held by ``%(nn)s`` items,
        ``%(ni)s`` items of total length ``%(nl)s``) and added only if ``d``
        wrote. Rows are locked in (kind, version, term) order: concurrent
        writers wait for each other, never in a cycle."""
        new = (" UNION ALL SELECT %(kind)s, %(v)s, u.term, u.n, 0 FROM unnest(%(nt)s::int8[], %(nn)s::int[]) "
               "    AS u(term, n) WHERE EXISTS (SELECT FROM d) "
               "    UNION ALL SELECT '#' || %(kind)s, %(v)s, 0, %(ni)s::int, %(nl)s::int WHERE EXISTS (SELECT FROM d)"
               if written else "")
        return sql.SQL(
            "st AS (INSERT INTO {stats} AS s (tenant_id, kind, key_version, term, items, length) "
            "  SELECT %(t)s, c.kind, c.kv, c.term, sum(c.n)::int, sum(c.len) FROM ("
            "    SELECT %(kind)s AS kind, d.s_okv AS kv, x.term, -1 AS n, 0 AS len "
            "    FROM d CROSS JOIN LATERAL unnest(d.s_oterms, d.s_otfs) AS x(term, tf) WHERE x.tf > 0 "
            "    UNION ALL SELECT '#' || %(kind)s, d.s_okv, 0, -1, -d.s_olen FROM d WHERE d.s_oterms IS NOT NULL"
            + new + ") c "
            "  GROUP BY c.kind, c.kv, c.term HAVING sum(c.n) <> 0 OR sum(c.len) <> 0 ORDER BY c.kind, c.kv, c.term "
            "  ON CONFLICT (tenant_id, kind, key_version, term) "
            "  DO UPDATE SET items = s.items + EXCLUDED.items, length = s.length + EXCLUDED.length) "
        ).format(stats=self._table(ctx, SEARCH_STATS))

    def _delete_item_sql(self, ctx: TenantContext, src: _Source, tail: sql.Composable) -> sql.Composed:
        """Item ``%(d)s`` of ``src`` deleted (CTE ``d``, every column) with its
        document frequencies (``%(kind)s``), then ``tail`` (reading ``d``, or
        a statement of its own)."""
        return sql.SQL(
            "WITH d AS (DELETE FROM {table} WHERE tenant_id = %(t)s AND {id} = %(d)s RETURNING *, "
            "key_version AS s_okv, terms AS s_oterms, tfs AS s_otfs, length AS s_olen), "
            "{stats}{tail}").format(table=self._table(ctx, src.table), id=sql.Identifier(src.id_column),
                                    stats=self._stats_sql(ctx), tail=tail)

    @staticmethod
    def _stats_returning(old: sql.Composable) -> sql.Composed:
        """The ``STATS_RETURNING`` columns of a write's RETURNING; ``old``: a
        FROM clause finding the item as it was (the statement's snapshot)."""
        return sql.SQL("(SELECT o.key_version FROM {old}) AS s_okv, (SELECT o.terms FROM {old}) AS s_oterms, "
                       "(SELECT o.tfs FROM {old}) AS s_otfs, (SELECT o.length FROM {old}) AS s_olen").format(old=old)

    def _keyed_write(self, ctx: TenantContext, head: sql.Composable, params: dict[str, Any],
                     analyse: Analyse, kind: str) -> Any:
        """``_index_write`` under the newest search key, of the items as
        ``analyse`` cuts them with that key's analyzer (``_key_profile``);
        ``head`` writes only under ``_newest_key_sql``, true while that key
        (version and sealed digest) is still the store's newest: a key made
        since (a reindex, also one after a restore that reused the version
        number) sends it round again, analysed again if its analyzer differs."""
        analysed: dict[analyzer.Profile, tuple[list[tuple[str, analyzer.Analysed]], dict[str, Any]]] = {}
        for _ in range(KEY_TRIES):
            key = (yield from self._search_keys(ctx, create=True))[-1]
            prof = self._key_profile(ctx, key)
            if prof not in analysed:
                analysed[prof] = analyse(prof)
            items, lengths = analysed[prof]
            rows = yield from self._index_write(ctx, head, {**params, **lengths}, key, items, kind)
            if rows:
                return rows
            self._forget_keys(ctx)
        raise StoreUnavailable(f"search key of tenant {ctx.key!r} kept changing: retry")

    @staticmethod
    def _key_profile(ctx: TenantContext, key: SearchKey) -> analyzer.Profile:
        """The analysis that reproduces the index under ``key`` (its recorded
        analyzer, which may not be this runtime's own: an index built without
        the Japanese extra is written as bigrams by a runtime that has it);
        AnalyzerUnavailable when this runtime cannot reproduce it: writing
        terms cut otherwise would mix them into the index unseen."""
        prof = analyzer.profile(key.analyzer)
        if prof is None:
            raise AnalyzerUnavailable(ctx.tenant_id, ctx.key, key.analyzer, analyzer.identity())
        return prof

    def _objects(self) -> Any:
        if self.objects is None:
            raise InvalidRequest(f"bodies over {LARGE_BODY} bytes need object storage: build the store with objects")
        return self.objects

    def _put_document(self, ctx: TenantContext, doc_id: str, title: str, body: str,
                      metadata: dict[str, Any] | None, source: str | None) -> Any:
        [written] = yield from self._put_documents(ctx, [{"doc_id": doc_id, "title": title, "body": body,
                                                          "metadata": metadata, "source": source}])
        return written

    def _put_documents(self, ctx: TenantContext, documents: Sequence[NewDocument | Mapping[str, Any]]) -> Any:
        """Create or replace documents in one statement (one transaction):
        every document is checked before anything is written, large bodies go
        to S3 first and are deleted again when the statement fails."""
        ctx = verified(ctx)
        check_writable(ctx)
        if not isinstance(documents, Sequence) or not 1 <= len(documents) <= MAX_BATCH:
            raise InvalidRequest(f"documents must be a list of 1..{MAX_BATCH} documents")
        new = [_new_document(d) for d in documents]
        if len({d.doc_id for d in new}) < len(new):
            raise InvalidRequest("documents must have distinct doc_ids")
        sizes = {d.doc_id: len(d.body.encode()) for d in new}
        for d in new:
            if sizes[d.doc_id] > MAX_BODY:
                raise InvalidRequest(f"body of {d.doc_id!r} is {sizes[d.doc_id]} bytes; the limit is {MAX_BODY}")
        large = [d for d in new if sizes[d.doc_id] > LARGE_BODY]
        objects = self._objects() if large else None
        pointers: dict[str, dict[str, Any]] = {}
        try:
            for d in large:
                data = d.body.encode()
                pointers[d.doc_id] = _pointer((yield self._compute_step(objects.put_body, ctx, data)), data)
            return (yield from self._write_documents(ctx, [(d, pointers.get(d.doc_id)) for d in new]))
        except Exception:  # the rows were not written: neither are the objects
            for pointer in pointers.values():
                yield self._compute_step(objects.delete_body, ctx, pointer["key"])
            raise

    def _put_document_from_upload(self, ctx: TenantContext, doc_id: str, title: str, key: str,
                                  metadata: dict[str, Any] | None, source: str | None) -> Any:
        """A document whose body is an object uploaded through
        ``presign_upload`` (UTF-8 text, SSE-KMS under the tenant's key): read
        once to index it; the row keeps the pointer and owns the object."""
        ctx = verified(ctx)
        check_writable(ctx)
        _check_id(doc_id)
        meta = _check_fields(title, metadata, source)
        objects = self._objects()
        rel = objects.upload_key(ctx, key)  # another tenant's key: TenantMismatch, before any S3 call
        owner = yield self._statement_step(
            sql.SQL("SELECT doc_id FROM {} WHERE tenant_id = %s AND body_key = %s AND doc_id <> %s").format(
                self._table(ctx, DOCUMENTS)), (ctx.key, rel, doc_id), "one")
        if owner is not None:
            raise InvalidRequest(f"{key!r} is already the body of document {owner[0]!r}")
        data = yield self._compute_step(objects.read_body, ctx, rel, MAX_BODY)
        try:
            body = data.decode()
        except UnicodeDecodeError:
            raise InvalidRequest(f"{key!r} is not UTF-8 text") from None
        new = NewDocument.model_construct(doc_id=doc_id, title=title, body=body, metadata=meta, source=source)
        [written] = yield from self._write_documents(ctx, [(new, _pointer(rel, data))])
        return written

    def _write_documents(self, ctx: TenantContext, entries: list[tuple[NewDocument, dict[str, Any] | None]]) -> Any:
        """The rows (each body inline, or its beginning and its S3 pointer)
        with their terms in one statement; objects of replaced bodies go after."""
        contents = []
        for d, pointer in entries:
            sealed_body = {"body": d.body} if pointer is None else {"body": d.body[:HIGHLIGHT_SCAN], "s3": pointer}
            contents.append((document_scope(d.doc_id), _sealable({"title": d.title, **sealed_body}, "document")))

        def analyse(prof: analyzer.Profile) -> tuple[list[tuple[str, analyzer.Analysed]], dict[str, Any]]:
            analysed = [(d.doc_id, analyzer.index_terms(d.title, d.body, prof)) for d, _ in entries]
            return analysed, {"n": [a.length for _, a in analysed]}

        sealed = yield self._compute_step(self._seal_contents, ctx, contents)
        docs = self._table(ctx, DOCUMENTS)
        head = sql.SQL(
            "INSERT INTO {docs} AS n (tenant_id, doc_id, content, metadata, source, length, key_version, body_key, "
            "  terms, tfs) "
            "SELECT %(t)s, i.doc_id, i.content, i.metadata, i.source, i.length, %(v)s, i.body_key, "
            "  (%(ft)s::int8[])[i.lo:i.hi], (%(ftf)s::int4[])[i.lo:i.hi] "
            "FROM unnest(%(d)s::text[], %(c)b::bytea[], %(m)s::jsonb[], %(s)s::text[], %(n)s::int[], "
            "  %(k)s::text[], %(lo)b::int[], %(hi)b::int[]) AS i(doc_id, content, metadata, source, length, body_key, "
            "  lo, hi) "
            "WHERE {newest} "
            "ON CONFLICT (tenant_id, doc_id) DO UPDATE "
            "SET content = EXCLUDED.content, metadata = EXCLUDED.metadata, source = EXCLUDED.source, "
            "length = EXCLUDED.length, key_version = EXCLUDED.key_version, body_key = EXCLUDED.body_key, "
            "terms = EXCLUDED.terms, tfs = EXCLUDED.tfs, updated_at = now() "
            # The statement's snapshot: the body key before this write.
            "RETURNING n.doc_id, n.created_at, n.updated_at, "
            "(SELECT o.body_key FROM {docs} o WHERE o.tenant_id = %(t)s AND o.doc_id = n.doc_id), {stats}").format(
            docs=docs, newest=self._newest_key_sql(ctx), stats=self._stats_returning(
                sql.SQL("{} o WHERE o.tenant_id = %(t)s AND o.doc_id = n.doc_id").format(docs)))
        new_keys = [pointer["key"] if pointer else None for _, pointer in entries]
        rows = yield from self._keyed_write(ctx, head, {
            "d": [d.doc_id for d, _ in entries], "c": sealed, "m": [Jsonb(d.metadata) for d, _ in entries],
            "s": [d.source for d, _ in entries], "k": new_keys}, analyse, "document")
        written = {r[0]: r[1:] for r in rows}
        out = []
        for (d, _), new_key in zip(entries, new_keys, strict=True):
            created, updated, old_key = written[d.doc_id]
            if old_key and old_key != new_key:
                yield self._compute_step(self._objects().delete_body, ctx, old_key)
            out.append(Document(doc_id=d.doc_id, title=d.title, body=d.body, metadata=d.metadata, source=d.source,
                                created_at=created, updated_at=updated,
                                body_key=ctx.resources.prefix + new_key if new_key else None))
        return out

    def _seal_contents(self, ctx: TenantContext, contents: list[tuple[str, bytes]]) -> list[bytes]:
        return [self.envelope.encrypt(ctx, scope, content) for scope, content in contents]

    def _put_summary(self, ctx: TenantContext, conversation_id: str, text: str) -> Any:
        ctx = verified(ctx)
        check_writable(ctx)
        _check_id(conversation_id, "conversation_id")
        if not isinstance(text, str) or not text:
            raise InvalidRequest("summary must be a non-empty string")
        check_text(text, "summary")
        content = _sealable({"body": text}, "summary")

        def analyse(prof: analyzer.Profile) -> tuple[list[tuple[str, analyzer.Analysed]], dict[str, Any]]:
            analysed = analyzer.index_terms("", text, prof)
            return [(conversation_id, analysed)], {"n": analysed.length}

        found = yield self._statement_step(
            sql.SQL("SELECT 1 FROM {} WHERE tenant_id = %s AND conversation_id = %s").format(
                self._table(ctx, CONVERSATIONS)), (ctx.key, conversation_id), "one")
        if found is None:  # checked before sealing: no KMS call for a summary that is refused
            raise InvalidRequest(f"no conversation {conversation_id!r} to summarise")
        sealed = yield self._compute_step(self.envelope.encrypt, ctx, summary_scope(conversation_id), content)
        head = sql.SQL(
            "INSERT INTO {sums} (tenant_id, conversation_id, content, length, key_version, terms, tfs) "
            "SELECT %(t)s, %(d)s, %(c)s, %(n)s, %(v)s, %(ft)s::int8[], %(ftf)s::int4[] WHERE {newest} "
            "ON CONFLICT (tenant_id, conversation_id) DO UPDATE "
            "SET content = EXCLUDED.content, length = EXCLUDED.length, key_version = EXCLUDED.key_version, "
            "terms = EXCLUDED.terms, tfs = EXCLUDED.tfs, updated_at = now() "
            "RETURNING conversation_id AS doc_id, created_at, updated_at, {stats}").format(
            sums=self._table(ctx, SUMMARIES), newest=self._newest_key_sql(ctx), stats=self._stats_returning(
                sql.SQL("{} o WHERE o.tenant_id = %(t)s AND o.conversation_id = %(d)s").format(
                    self._table(ctx, SUMMARIES))))
        rows = yield from self._keyed_write(ctx, head, {"d": conversation_id, "c": sealed}, analyse, "summary")
        _, created, updated = rows[0]
        return Summary(conversation_id=conversation_id, text=text, created_at=created, updated_at=updated)

    def _unindexed(self, ctx: TenantContext) -> Any:
        ctx = verified(ctx)
        return (yield from self._count_unindexed(ctx))

    def _count_unindexed(self, ctx: TenantContext) -> Any:
        """How many documents and summaries are in no search index (``terms`` NULL)."""
        row = yield self._statement_step(
            sql.SQL("SELECT (SELECT count(*) FROM {docs} WHERE tenant_id = %(t)s AND terms IS NULL) "
                    "+ (SELECT count(*) FROM {sums} WHERE tenant_id = %(t)s AND terms IS NULL)").format(
                docs=self._table(ctx, DOCUMENTS), sums=self._table(ctx, SUMMARIES)), {"t": ctx.key}, "one")
        return row[0]

    def _reindex(self, ctx: TenantContext, if_unindexed: bool = False,
                 progress: ReindexProgress | None = None) -> Any:
        """A new search key (or the newest, made by a reindex that stopped half
        way: its items still under older keys); every document and summary re-hashed under it
        (batches, each one statement per item, an item changed meanwhile is
        left to its writer, who already used the new key); then the old keys go.
        ``if_unindexed``: only when some item is in no index at all (a store
        from before the one-row index, upgraded or restored); else None.
        ``progress(kind, done, total)``: after each batch of items of a kind."""
        ctx = verified(ctx)
        check_writable(ctx)
        if if_unindexed and not (yield from self._count_unindexed(ctx)):
            return None
        self._forget_keys(ctx)
        keys = yield from self._search_keys(ctx, create=False)
        prof = analyzer.current()  # the index is rebuilt with this runtime's own analyzer
        if len(keys) > 1 and keys[-1].counted and keys[-1].analyzer == prof.identity:
            # A reindex stopped half way made the newest key: finish it (the items
            # still under older keys) rather than re-hash every item under yet another.
            # Not one of another analyzer: its items would mix two analyses.
            key = keys[-1]
        else:
            # The next version number; after a restore it may be one a running process
            # caches for another key: the key's sealed digest tells them apart.
            key = yield from self._add_search_key(ctx, (keys[-1].version if keys else 0) + 1,
                                                  identity=prof.identity)
        version = key.version
        done = {}
        for src in SOURCES:
            done[src.kind] = yield from self._reindex_source(ctx, src, key, prof, progress)
        yield self._statement_step(
            sql.SQL("DELETE FROM {keys} k WHERE tenant_id = %s AND version < %s AND NOT EXISTS "
                    "(SELECT 1 FROM {docs} d WHERE d.tenant_id = k.tenant_id AND d.key_version = k.version) "
                    "AND NOT EXISTS (SELECT 1 FROM {sums} s WHERE s.tenant_id = k.tenant_id "
                    "AND s.key_version = k.version)").format(
                keys=self._table(ctx, SEARCH_KEYS), docs=self._table(ctx, DOCUMENTS),
                sums=self._table(ctx, SUMMARIES)), (ctx.key, version), "rowcount")
        # The vocabulary and counts of keys gone go too (the new key's were rebuilt from the items).
        for table in (SEARCH_VOCAB, SEARCH_STATS, SEARCH_ANALYZERS):
            yield self._statement_step(
                sql.SQL("DELETE FROM {table} v WHERE tenant_id = %s AND NOT EXISTS (SELECT 1 FROM {keys} k "
                        "WHERE k.tenant_id = v.tenant_id AND k.version = v.key_version)").format(
                    table=self._table(ctx, table), keys=self._table(ctx, SEARCH_KEYS)), (ctx.key,), "rowcount")
        self._forget_keys(ctx)
        return ReindexResult(key_version=version, documents=done["document"], summaries=done["summary"],
                             analyzer=prof.identity)

    def _reindex_source(self, ctx: TenantContext, src: _Source, key: SearchKey, prof: analyzer.Profile,
                        progress: ReindexProgress | None = None) -> Any:
        table, ident = self._table(ctx, src.table), sql.Identifier(src.id_column)
        head = sql.SQL("UPDATE {table} SET key_version = %(v)s, length = %(n)s, terms = %(ft)s::int8[], "
                       "tfs = %(ftf)s::int4[] WHERE tenant_id = %(t)s "
                       "AND {id} = %(d)s AND content = %(c)s RETURNING {id} AS doc_id, {stats}").format(
            table=table, id=ident, stats=self._stats_returning(
                sql.SQL("{} o WHERE o.tenant_id = %(t)s AND o.{} = %(d)s").format(table, ident)))
        done, after = 0, ""
        if progress is not None:
            total = (yield self._statement_step(
                sql.SQL("SELECT count(*) FROM {table} WHERE tenant_id = %s AND key_version < %s").format(
                    table=table), (ctx.key, key.version), "one"))[0]
        while True:
            rows = yield self._statement_step(
                sql.SQL("SELECT {id}, content FROM {table} WHERE tenant_id = %s AND {id} > %s AND key_version < %s "
                        "ORDER BY {id} LIMIT %s").format(id=ident, table=table),
                (ctx.key, after, key.version, REINDEX_BATCH), "all")
            if not rows:
                return done
            opened = yield self._compute_step(self._open_contents, ctx, [(src.scope(r[0]), bytes(r[1])) for r in rows])
            for (item_id, blob), data in zip(rows, opened, strict=True):
                body = yield from self._whole_body(ctx, data)
                analysed = analyzer.index_terms(data.get("title", ""), body, prof)
                written = yield from self._index_write(ctx, head, {"d": item_id, "c": blob, "n": analysed.length},
                                                       key, [(item_id, analysed)], src.kind)
                done += len(written)
            after = rows[-1][0]
            if progress is not None:
                progress(src.kind, done, total)

    # -- reading -------------------------------------------------------------------

    def _open_contents(self, ctx: TenantContext, rows: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
        """Sealed rows as their JSON, each opened under its (scope, blob)."""
        return [json.loads(self.envelope.decrypt(ctx, scope, blob)) for scope, blob in rows]

    def _open_documents(self, ctx: TenantContext, rows: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
        """(title, body) of (doc_id, blob) rows; a large body's beginning only."""
        opened = self._open_contents(ctx, [(document_scope(doc_id), blob) for doc_id, blob in rows])
        return [(data["title"], data["body"]) for data in opened]

    def _whole_body(self, ctx: TenantContext, data: dict[str, Any]) -> Any:
        """An opened row's whole body: inline, or fetched from S3 and checked
        against the pointer sealed in the row."""
        pointer = data.get("s3")
        if pointer is None:
            return data["body"]
        try:
            raw = yield self._compute_step(self._objects().read_body, ctx, pointer["key"], MAX_BODY)
        except InvalidRequest as exc:  # not under the tenant's key, too large: not the object the row sealed
            raise DecryptionFailed(f"the body object {pointer['key']!r} changed since it was indexed: {exc}") from None
        if len(raw) != pointer["size"] or hashlib.sha256(raw).hexdigest() != pointer["sha256"]:
            raise DecryptionFailed(f"the body object {pointer['key']!r} changed since it was indexed")
        return raw.decode()

    def _get_document(self, ctx: TenantContext, doc_id: str) -> Any:
        ctx = verified(ctx)
        _check_id(doc_id)
        row = yield self._statement_step(
            sql.SQL("SELECT content, metadata, source, created_at, updated_at FROM {} "
                    "WHERE tenant_id = %s AND doc_id = %s").format(self._table(ctx, DOCUMENTS)),
            (ctx.key, doc_id), "one")
        if row is None:
            return None
        [data] = yield self._compute_step(self._open_contents, ctx, [(document_scope(doc_id), bytes(row[0]))])
        body = yield from self._whole_body(ctx, data)
        pointer = data.get("s3")
        return Document(doc_id=doc_id, title=data["title"], body=body, metadata=row[1], source=row[2],
                        created_at=row[3], updated_at=row[4],
                        body_key=ctx.resources.prefix + pointer["key"] if pointer else None)

    def _get_summary(self, ctx: TenantContext, conversation_id: str) -> Any:
        ctx = verified(ctx)
        _check_id(conversation_id, "conversation_id")
        row = yield self._statement_step(
            sql.SQL("SELECT content, created_at, updated_at FROM {} WHERE tenant_id = %s "
                    "AND conversation_id = %s").format(self._table(ctx, SUMMARIES)), (ctx.key, conversation_id),
            "one")
        if row is None:
            return None
        [data] = yield self._compute_step(self._open_contents, ctx, [(summary_scope(conversation_id), bytes(row[0]))])
        return Summary(conversation_id=conversation_id, text=data["body"], created_at=row[1], updated_at=row[2])

    def _list_documents(self, ctx: TenantContext, limit: int, cursor: str | None) -> Any:
        ctx = verified(ctx)
        check_limit(limit, MAX_RESULTS)
        after = cursor_codec.open_cursor(cursor, "documents", ctx.key, ("l",))["l"] if cursor else ""
        rows = yield self._statement_step(
            sql.SQL("SELECT doc_id, content, metadata, source, updated_at FROM {} WHERE tenant_id = %s "
                    "AND doc_id > %s ORDER BY doc_id LIMIT %s").format(self._table(ctx, DOCUMENTS)),
            (ctx.key, after, limit + 1), "all")
        more, rows = len(rows) > limit, rows[:limit]
        opened = yield self._compute_step(self._open_documents, ctx, [(r[0], bytes(r[1])) for r in rows])
        return DocumentPage(
            documents=[DocumentSummary(doc_id=r[0], title=t, metadata=r[2], source=r[3], updated_at=r[4])
                       for r, (t, _) in zip(rows, opened, strict=True)],
            next_cursor=cursor_codec.encode("documents", {"t": ctx.key, "l": rows[-1][0]}) if more else None)

    def _delete_document(self, ctx: TenantContext, doc_id: str) -> Any:
        """The row (its index terms are in it), then its body
        object: a failure between the two leaves an unreferenced object, never
        a row pointing at nothing."""
        ctx = verified(ctx)
        check_writable(ctx)
        _check_id(doc_id)
        deleted = yield self._statement_step(
            self._delete_item_sql(ctx, DOCUMENT_SOURCE, sql.SQL("SELECT body_key FROM d")),
            {"t": ctx.key, "kind": "document", "d": doc_id}, "all", item_locks(ctx.key, "document", [doc_id]))
        for (body_key,) in deleted:
            if body_key:
                yield self._compute_step(self._objects().delete_body, ctx, body_key)
        return bool(deleted)
