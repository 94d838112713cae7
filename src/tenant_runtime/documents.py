"""Per-tenant documents and search, in the tenant's own store.

Documents (``documents``): title and body sealed together with the tenant's
envelope (bound to the document id), metadata in clear JSON (filters and
facets run on it in SQL), an optional source link. The search index is
blind (``tenant_runtime.blind_index``) and lives in the item's own row:
``terms``, its hashed terms as int8 (``term_id``), and ``tfs``, their
frequencies in the same order (a title prefix's negated: ``UNCOUNTED_KINDS``;
the layout of a tsvector; no index: under
forced RLS none could serve ``&&``, ``ITEM_FILTER_SQL``). Ranking is BM25
computed in SQL over the matching rows (document
frequency counted among them, document lengths from ``length``). A write is
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
the same search key; ``search(include_summaries=True)`` ranks them with the
documents, each hit saying its ``kind``.

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
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from itertools import compress
from typing import Any, Literal

from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ValidationError

from tenant_runtime import analyzer
from tenant_runtime import cursor as cursor_codec
from tenant_runtime.blind_index import TERM_ID_SQL, document_scope, summary_scope
from tenant_runtime.context import TenantContext, check_writable, verified
from tenant_runtime.errors import DecryptionFailed, IndexIncomplete, InvalidRequest, StoreUnavailable, TenantMismatch
from tenant_runtime.search_keys import KEY_TRIES, SearchKey, SearchKeyOperations
from tenant_runtime.tables import CONVERSATIONS, DOCUMENTS, SEARCH_KEYS, SEARCH_STATS, SEARCH_VOCAB, SUMMARIES

MAX_DOCUMENT = 1 << 20  # the sealed row's JSON (title + body, or title + beginning + pointer), bytes
LARGE_BODY = 256 << 10  # bodies above this many bytes of UTF-8 go to S3
MAX_BODY = 8 << 20  # an S3 body: read whole to index it
MAX_DOC_METADATA = 64 << 10
MAX_RESULTS = 100
MAX_QUERY = 1_000
REINDEX_BATCH = 200
MAX_BATCH = 500  # documents per put_documents call
SNIPPET = 160
HIGHLIGHT_SCAN = 4_000
BM25_K1, BM25_B = 1.2, 0.75
FUZZY_SIMILARITY = 0.5  # share of a query word's trigrams a vocabulary word must have
FUZZY_WEIGHT = 0.8  # a fuzzy match counts less than the word itself
FUZZY_WORDS = 20  # vocabulary words per query word at most
FUZZY_IDX = 1_000_000  # query term numbers from here on: fuzzy words (below: the query's own words)
# Term kinds whose document frequency no query reads: title prefixes (suggestions
# rank by the items' own frequencies). An item stores their frequency negated, so
# neither its write nor its delete counts them in search_stats (a third of a write's
# count rows); an item from before keeps them positive, counted both ways.
UNCOUNTED_KINDS = ("p:",)
# What an item write returns after its own columns, for search_stats: the item's key
# version, terms, frequencies and length before the write (NULL: no item). What it
# wrote is counted in Python (``_new_counts``): the statement writes all of its items or none.
STATS_RETURNING = 4
# A score as ranked: rounded to 9 decimals (float sums of the same terms in
# another order tie, then doc_id decides), as an int8 of billionths: rounding
# a float8 per matching item costs a fraction of rounding a numeric.
NANO_SCORE_SQL = "round(({}) * 1e9)::int8"
# The items a query reads: under the tenant's forced RLS, PostgreSQL uses no
# index for && or @> (neither operator is leakproof, so neither may run before
# the policy's own condition), and every item of the tenant is read. Quals run
# in the order written: the metadata filter (a small jsonb) first, so an item
# it drops never has its terms array read and compared. (Scored row by row
# (``_scored_sql``), an item needs no && at all.)
ITEM_FILTER_SQL = "i.metadata @> %(f)s AND i.terms && (SELECT terms FROM qt)"


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
    """A document to write (``put_documents``)."""

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


class SearchHit(BaseModel):
    doc_id: str  # a summary's: its conversation id
    kind: Literal["document", "summary"] = "document"
    score: float
    title: str
    snippet: str  # part of the body around the first match
    matches: list[tuple[int, int]]  # [start, end) of matched words in ``snippet``
    metadata: dict[str, Any]
    source: str | None


class SearchResult(BaseModel):
    hits: list[SearchHit]  # best first (score, then doc_id)
    total: int  # documents matching the query and filters
    facets: dict[str, dict[str, int]]  # field -> value -> count, over all matches
    next_cursor: str | None


class ReindexResult(BaseModel):
    key_version: int
    documents: int
    summaries: int = 0


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


def _searched_kinds(summaries: bool) -> list[str]:
    """The item kinds a search reads: documents, and summaries when asked."""
    return [src.kind for src in SOURCES if summaries or src is DOCUMENT_SOURCE]


def _check_id(value: str, what: str = "doc_id") -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= 200:
        raise InvalidRequest(f"{what} must be 1..200 characters")


def _check_fields(title: str, metadata: dict[str, Any] | None, source: str | None) -> dict[str, Any]:
    """The document's metadata ({} for None) once title, metadata and source are valid."""
    if not isinstance(title, str):
        raise InvalidRequest("title must be a string")
    meta = metadata or {}
    if not isinstance(meta, dict):
        raise InvalidRequest("metadata must be a JSON object")
    _json_size(meta, "metadata", MAX_DOC_METADATA)
    if source is not None and (not isinstance(source, str) or len(source) > 2_000):
        raise InvalidRequest("source must be a link of at most 2000 characters")
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
    try:
        return NewDocument.model_validate({**value, "metadata": meta}, strict=True)
    except ValidationError as exc:
        raise InvalidRequest(f"invalid document: {exc.errors()[0]['msg']}") from None


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


def _json_size(value: Any, what: str, limit: int) -> None:
    try:
        size = len(json.dumps(value))
    except (TypeError, ValueError):
        raise InvalidRequest(f"{what} must be JSON-serialisable") from None
    if size > limit:
        raise InvalidRequest(f"{what} is {size} bytes of JSON; the limit is {limit}")


def _page_limit(limit: int, most: int) -> None:
    if not 1 <= limit <= most:
        raise InvalidRequest(f"limit must be between 1 and {most}")


def _decode(cursor: str, tenant_id: str, fields: tuple[str, ...], what: str) -> dict[str, Any]:
    try:
        data = cursor_codec.decode(cursor)
        if not all(isinstance(data[f], str) for f in ("t", *fields)):
            raise ValueError
    except (ValueError, KeyError):
        raise InvalidRequest(f"invalid cursor: pass a cursor returned by {what}()") from None
    if data["t"] != tenant_id:
        raise TenantMismatch(tenant_id, data["t"], "cursor")
    return data


def highlight(body: str, matched: Callable[[str], bool]) -> tuple[str, list[tuple[int, int]]]:
    """A snippet of ``body`` (NFKC) around its first token whose term is
    ``matched``, and the spans of every such token inside it."""
    text = analyzer.nfkc(body)
    hits: list[tuple[int, int]] = []
    start, end = 0, min(len(text), SNIPPET)
    # Only the beginning is analysed (long bodies cost no more than this), and
    # only up to the snippet's end (tokens come in order of their offsets).
    for t in analyzer.iter_tokens(text[:HIGHLIGHT_SCAN], index=True):
        if hits and t.start >= end:
            break
        if matched(t.term):
            if not hits:
                start = max(0, t.start - SNIPPET // 4)
                if start:  # begin at a word boundary
                    space = text.rfind(" ", 0, start)
                    start = space + 1 if space >= start - 20 else start
                end = min(len(text), start + SNIPPET)
            hits.append((t.start, t.end))
    return text[start:end], [(s - start, e - start) for s, e in hits if s >= start and e <= end]


def _bm25_tf_sql(tf: sql.Composable, length: sql.Composable) -> sql.Composed:
    """BM25's term-frequency factor of an item (``s``: the stats CTE, avgdl),
    in float8 throughout (a bare 0.75 is numeric: several times slower per row)."""
    return sql.SQL("{tf} * {k1p1}::float8 / ({tf} + {k1}::float8 * (1 - {b}::float8 + {b}::float8 * {length} "
                   "/ s.avgdl))").format(tf=tf, length=length, k1=sql.Literal(BM25_K1),
                                         k1p1=sql.Literal(BM25_K1 + 1), b=sql.Literal(BM25_B))


def _direct_score_sql(version: int, term: int, weight: float, idf: sql.Composable) -> sql.Composed:
    """One query term's share of item ``i``'s score (``weight`` < 1: a fuzzy
    match): found by a binary search (``width_bucket``) in its sorted terms
    under its own key version, else 0."""
    # As a quoted int8: a bare -9223372036854775808 would be parsed as minus an overflowing int8.
    hashed = sql.SQL("{}::int8").format(sql.Literal(str(term)))
    pos = sql.SQL("width_bucket({}, i.terms)").format(hashed)
    # weight * idf * tf factor: the order the grouped scoring (``_scored_sql``) multiplies in.
    return sql.SQL("CASE WHEN i.key_version = {v} AND i.terms[{pos}] = {t} THEN {w}::float8 * {idf} * {bm25} "
                   "ELSE 0 END").format(v=sql.Literal(version), pos=pos, t=hashed, w=sql.Literal(weight), idf=idf,
                                        bm25=_bm25_tf_sql(sql.SQL("i.tfs[{}]").format(pos), sql.SQL("i.length")))


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
            "grams": [hasher(g) for g, _ in pairs], "words": [hasher(w) for _, w in pairs]}, "all")
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
                     items: list[tuple[str, analyzer.Analysed]], kind: str) -> Any:
        """``_index_write`` under the newest search key; ``head`` writes only
        under ``_newest_key_sql``, true while that key (version and sealed digest) is
        still the store's newest: a key made since (a reindex, also one after a
        restore that reused the version number) sends it round again."""
        for _ in range(KEY_TRIES):
            key = (yield from self._search_keys(ctx, create=True))[-1]
            rows = yield from self._index_write(ctx, head, params, key, items, kind)
            if rows:
                return rows
            self._forget_keys(ctx)
        raise StoreUnavailable(f"search key of tenant {ctx.key!r} kept changing: retry")

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
        contents, analysed = [], []
        for d, pointer in entries:
            sealed_body = {"body": d.body} if pointer is None else {"body": d.body[:HIGHLIGHT_SCAN], "s3": pointer}
            contents.append((document_scope(d.doc_id), _sealable({"title": d.title, **sealed_body}, "document")))
            analysed.append((d.doc_id, analyzer.index_terms(d.title, d.body)))
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
            "s": [d.source for d, _ in entries], "n": [a.length for _, a in analysed], "k": new_keys},
            analysed, "document")
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
        content = _sealable({"body": text}, "summary")
        analysed = analyzer.index_terms("", text)
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
        rows = yield from self._keyed_write(ctx, head, {"d": conversation_id, "c": sealed, "n": analysed.length},
                                            [(conversation_id, analysed)], "summary")
        _, created, updated = rows[0]
        return Summary(conversation_id=conversation_id, text=text, created_at=created, updated_at=updated)

    def _reindex(self, ctx: TenantContext, if_unindexed: bool = False) -> Any:
        """A new search key; every document and summary re-hashed under it
        (batches, each one statement per item, an item changed meanwhile is
        left to its writer, who already used the new key); then the old keys go.
        ``if_unindexed``: only when some item is in no index at all (a store
        from before the one-row index, upgraded or restored); else None."""
        ctx = verified(ctx)
        check_writable(ctx)
        if if_unindexed:
            row = yield self._statement_step(
                sql.SQL("SELECT (SELECT count(*) FROM {docs} WHERE tenant_id = %(t)s AND terms IS NULL) "
                        "+ (SELECT count(*) FROM {sums} WHERE tenant_id = %(t)s AND terms IS NULL)").format(
                    docs=self._table(ctx, DOCUMENTS), sums=self._table(ctx, SUMMARIES)), {"t": ctx.key}, "one")
            if not row[0]:
                return None
        self._forget_keys(ctx)
        keys = yield from self._search_keys(ctx, create=False)
        # The next version number; after a restore it may be one a running process
        # caches for another key: the key's sealed digest tells them apart.
        key = yield from self._add_search_key(ctx, (keys[-1].version if keys else 0) + 1)
        version = key.version
        done = {}
        for src in SOURCES:
            done[src.kind] = yield from self._reindex_source(ctx, src, key)
        yield self._statement_step(
            sql.SQL("DELETE FROM {keys} k WHERE tenant_id = %s AND version < %s AND NOT EXISTS "
                    "(SELECT 1 FROM {docs} d WHERE d.tenant_id = k.tenant_id AND d.key_version = k.version) "
                    "AND NOT EXISTS (SELECT 1 FROM {sums} s WHERE s.tenant_id = k.tenant_id "
                    "AND s.key_version = k.version)").format(
                keys=self._table(ctx, SEARCH_KEYS), docs=self._table(ctx, DOCUMENTS),
                sums=self._table(ctx, SUMMARIES)), (ctx.key, version), "rowcount")
        # The vocabulary and counts of keys gone go too (the new key's were rebuilt from the items).
        for table in (SEARCH_VOCAB, SEARCH_STATS):
            yield self._statement_step(
                sql.SQL("DELETE FROM {table} v WHERE tenant_id = %s AND NOT EXISTS (SELECT 1 FROM {keys} k "
                        "WHERE k.tenant_id = v.tenant_id AND k.version = v.key_version)").format(
                    table=self._table(ctx, table), keys=self._table(ctx, SEARCH_KEYS)), (ctx.key,), "rowcount")
        self._forget_keys(ctx)
        return ReindexResult(key_version=version, documents=done["document"], summaries=done["summary"])

    def _reindex_source(self, ctx: TenantContext, src: _Source, key: SearchKey) -> Any:
        table, ident = self._table(ctx, src.table), sql.Identifier(src.id_column)
        head = sql.SQL("UPDATE {table} SET key_version = %(v)s, length = %(n)s, terms = %(ft)s::int8[], "
                       "tfs = %(ftf)s::int4[] WHERE tenant_id = %(t)s "
                       "AND {id} = %(d)s AND content = %(c)s RETURNING {id} AS doc_id, {stats}").format(
            table=table, id=ident, stats=self._stats_returning(
                sql.SQL("{} o WHERE o.tenant_id = %(t)s AND o.{} = %(d)s").format(table, ident)))
        done, after = 0, ""
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
                analysed = analyzer.index_terms(data.get("title", ""), body)
                written = yield from self._index_write(ctx, head, {"d": item_id, "c": blob, "n": analysed.length},
                                                       key, [(item_id, analysed)], src.kind)
                done += len(written)
            after = rows[-1][0]

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
        raw = yield self._compute_step(self._objects().read_body, ctx, pointer["key"], MAX_BODY)
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
        _page_limit(limit, MAX_RESULTS)
        after = _decode(cursor, ctx.key, ("l",), "list_documents")["l"] if cursor else ""
        rows = yield self._statement_step(
            sql.SQL("SELECT doc_id, content, metadata, source, updated_at FROM {} WHERE tenant_id = %s "
                    "AND doc_id > %s ORDER BY doc_id LIMIT %s").format(self._table(ctx, DOCUMENTS)),
            (ctx.key, after, limit + 1), "all")
        more, rows = len(rows) > limit, rows[:limit]
        opened = yield self._compute_step(self._open_documents, ctx, [(r[0], bytes(r[1])) for r in rows])
        return DocumentPage(
            documents=[DocumentSummary(doc_id=r[0], title=t, metadata=r[2], source=r[3], updated_at=r[4])
                       for r, (t, _) in zip(rows, opened, strict=True)],
            next_cursor=cursor_codec.encode({"t": ctx.key, "l": rows[-1][0]}) if more else None)

    def _delete_document(self, ctx: TenantContext, doc_id: str) -> Any:
        """The row (its index terms are in it), then its body
        object: a failure between the two leaves an unreferenced object, never
        a row pointing at nothing."""
        ctx = verified(ctx)
        check_writable(ctx)
        _check_id(doc_id)
        deleted = yield self._statement_step(
            self._delete_item_sql(ctx, DOCUMENT_SOURCE, sql.SQL("SELECT body_key FROM d")),
            {"t": ctx.key, "kind": "document", "d": doc_id}, "all")
        for (body_key,) in deleted:
            if body_key:
                yield self._compute_step(self._objects().delete_body, ctx, body_key)
        return bool(deleted)

    # -- search --------------------------------------------------------------------

    def _search(self, ctx: TenantContext, query: str, filters: dict[str, Any] | None, facets: list[str] | None,
                limit: int, offset: int, cursor: str | None, fuzzy: bool, include_summaries: bool = False) -> Any:
        ctx = verified(ctx)
        if not isinstance(query, str) or not 1 <= len(query) <= MAX_QUERY:
            raise InvalidRequest(f"query must be 1..{MAX_QUERY} characters")
        _page_limit(limit, MAX_RESULTS)
        if not isinstance(offset, int) or offset < 0 or (cursor and offset):
            raise InvalidRequest("offset must be >= 0, and 0 with a cursor")
        filters, facets = filters or {}, list(facets or [])
        if not isinstance(filters, dict) or not all(isinstance(f, str) for f in facets):
            raise InvalidRequest("filters must be a JSON object and facets a list of field names")
        _json_size(filters, "filters", MAX_DOC_METADATA)
        words = analyzer.query_terms(query)
        if not words:
            raise InvalidRequest("query has no searchable words")
        qgrams = analyzer.query_grams(query) if fuzzy else []
        summaries = bool(include_summaries)
        # Summaries are in the fingerprint only when asked: a documents-only cursor stays what it was.
        bound = [query, filters, fuzzy, *(["summaries"] if summaries else [])]
        fingerprint = hashlib.sha256(json.dumps(bound, sort_keys=True).encode()).hexdigest()[:16]
        after_score, after_doc, after_kind = None, "", ""
        if cursor:
            data = _decode(cursor, ctx.key, ("q", "s", "d"), "search")
            if data["q"] != fingerprint:
                raise InvalidRequest("cursor belongs to another query")
            try:
                # A cursor without a kind is from before summaries: it names a document.
                after_score, after_doc, after_kind = Decimal(data["s"]), data["d"], str(data.get("k", "document"))
            except InvalidOperation:
                raise InvalidRequest("invalid cursor: pass a cursor returned by search()") from None

        def run(keys: list[SearchKey]) -> Any:
            q = [(i, k.version, k.hasher.id(term), 1.0) for i, term in enumerate(words) for k in keys]
            counted = all(k.counted for k in keys)
            if qgrams:
                found, held = yield from self._fuzzy_terms(ctx, qgrams, keys, q,
                                                           _searched_kinds(summaries) if counted else None)
                q = [r for r in q if (r[1], r[2]) in held]
                q += [(FUZZY_IDX + n, ver, term, w) for n, (ver, term, w) in enumerate(found)]
            rows = yield self._statement_step(self._search_sql(ctx, summaries, counted, q if counted else None,
                                                               bool(filters)), {
                "t": ctx.key, "idx": [r[0] for r in q], "ver": [r[1] for r in q], "term": [r[2] for r in q],
                "w": [r[3] for r in q], "f": Jsonb(filters), "facets": facets, "cs": after_score, "cd": after_doc,
                "ck": after_kind, "n": limit + 1, "o": offset, **self._key_params(keys)}, "all")
            fuzzy_words = {(r[1], r[2]) for r in q if r[0] >= FUZZY_IDX}
            return (rows, keys, fuzzy_words), rows[0][8]  # hashed under exactly the live keys

        answer = yield from self._with_live_keys(ctx, run)
        if answer is None:
            return SearchResult(hits=[], total=0, facets={}, next_cursor=None)
        rows, keys, fuzzy_words = answer
        if rows[0][9]:  # an answer now could miss hits: say so rather than answer
            raise IndexIncomplete(ctx.key, rows[0][9])
        total, facet_counts = rows[0][0], rows[0][1]
        page = [r for r in rows if r[3] is not None]
        more, page = len(page) > limit, page[:limit]
        scope = {src.kind: src.scope for src in SOURCES}
        opened = yield self._compute_step(self._open_contents, ctx, [(scope[r[2]](r[3]), bytes(r[5])) for r in page])
        plain = {t[2:] for t in words}
        matched: Callable[[str], bool] = plain.__contains__
        if fuzzy_words:  # known by their blind terms only: a token matches when its term hashes to one

            def matched(term: str) -> bool:
                return term in plain or any((k.version, k.hasher.id("w:" + term)) in fuzzy_words for k in keys)

        hits = []
        for (_, _, kind, doc_id, score, _, meta, source, _, _), data in zip(page, opened, strict=True):
            snippet, matches = highlight(data["body"], matched)
            hits.append(SearchHit(doc_id=doc_id, kind=kind, score=float(score), title=data.get("title", ""),
                                  snippet=snippet, matches=matches, metadata=meta, source=source))
        next_cursor = cursor_codec.encode({"t": ctx.key, "q": fingerprint, "s": str(page[-1][4]),
                                           "d": page[-1][3], "k": page[-1][2]}) if more else None
        return SearchResult(hits=hits, total=total, facets=facet_counts, next_cursor=next_cursor)

    def _search_sql(self, ctx: TenantContext, summaries: bool, counted: bool,
                    direct: list[tuple[int, int, int, float]] | None = None, filtered: bool = True) -> sql.Composed:
        """BM25 over the items' blind terms: every item of the tenant is read
        (``ITEM_FILTER_SQL``: no index serves && under forced RLS), those
        holding a query term kept, each query term's frequency read from the row
        (``tfs`` at the term's position), idf from how many of them hold it,
        length normalisation from their lengths; total and facets from the
        scored items (one row each); one row per hit of the page (or one empty
        row), each carrying the total and the facet counts. The
        items are the documents, and with ``summaries`` the conversation
        summaries too (kind, id): one ranking, one idf, over both.

        ``counted`` (every live key's document frequencies are in
        search_stats): idf is read from there, and only the items the filters
        keep are read and scored; else idf is counted among every item holding
        a query term, filtered or not (a key from before search_stats).

        Every step is a MATERIALIZED CTE computed once: the planner, which
        cannot estimate the unnested query terms, otherwise re-ran the
        corpus statistics once per hit. The sealed content is read for the
        returned page alone.

        ``direct`` (with ``counted``: the query's (idx, key version, term,
        weight) as in ``%(term)b``, fuzzy words included): each matching item is scored in its
        own row by one expression per query term (``_direct_score_sql``)
        instead of a row per (item, term) grouped back per item: the same
        scores, without the per-row unnest, join and grouping that cost
        two thirds of the statement. ``filtered``: the metadata filter is
        not empty (an empty one, which every item passes, is left out)."""
        columns = "doc_id, metadata, length, content, source, key_version, terms, tfs"
        items = [sql.SQL("SELECT 'document'::text AS kind, " + columns + " FROM {} WHERE tenant_id = %(t)s").format(
            self._table(ctx, DOCUMENTS))]
        if summaries:
            items.append(sql.SQL("SELECT 'summary', conversation_id, '{{}}'::jsonb, length, content, NULL, "
                                 "key_version, terms, tfs FROM {} WHERE tenant_id = %(t)s").format(
                self._table(ctx, SUMMARIES)))
        kinds = _searched_kinds(summaries)
        stats, df = self._corpus_sql(ctx, kinds, sql.SQL(" UNION ALL ").join(items), counted)
        return sql.SQL(
            "WITH q AS MATERIALIZED (SELECT * FROM unnest(%(idx)b::int[], %(ver)b::int[], %(term)b::int8[], "
            "  %(w)b::float8[]) AS e(idx, key_version, term, w)), "
            "qt AS MATERIALIZED (SELECT array_agg(DISTINCT term) AS terms FROM q), "
            "{scored}"
            # A cursor's score (9 decimals) in the same units.
            "cs AS (SELECT (%(cs)s::numeric * 1000000000)::int8 AS nano), "
            "page AS MATERIALIZED (SELECT kind, doc_id, score FROM scored WHERE %(cs)s::numeric IS NULL "
            "  OR score < (SELECT nano FROM cs) OR (score = (SELECT nano FROM cs) "
            "  AND (doc_id, kind) > (%(cd)s::text, %(ck)s::text)) "
            "  ORDER BY score DESC, doc_id, kind LIMIT %(n)s OFFSET %(o)s), "
            # The page's sealed rows, each read once (by the primary key, the page's ids as one array).
            "sealed AS MATERIALIZED (SELECT d.kind, d.doc_id, d.content, d.metadata, d.source FROM ({items}) d "
            "  WHERE d.doc_id = ANY((SELECT array_agg(doc_id) FROM page)::text[])), "
            "summary AS (SELECT (SELECT count(*) FROM scored) AS total, "
            "  (SELECT coalesce(jsonb_object_agg(k, vals), '{{}}') FROM (SELECT k, jsonb_object_agg(v, c) AS vals "
            "   FROM (SELECT f.k, m.metadata ->> f.k AS v, count(*) AS c FROM scored m "
            "         CROSS JOIN unnest(%(facets)s::text[]) AS f(k) WHERE m.metadata ? f.k GROUP BY 1, 2) x "
            "   GROUP BY k) y) AS facets, "
            "  {live} AS live, "
            # Items the index does not cover (a store from before it): the partial index finds them, or none.
            "  (SELECT count(*) FROM ({items}) i WHERE i.terms IS NULL) AS unindexed) "
            "SELECT m.total, m.facets, p.kind, p.doc_id, round(p.score::numeric / 1000000000, 9), d.content, "
            "d.metadata, d.source, m.live, "
            "m.unindexed "
            "FROM summary m LEFT JOIN (page p JOIN sealed d USING (kind, doc_id)) ON true "
            "ORDER BY p.score DESC, p.doc_id, p.kind").format(
            items=sql.SQL(" UNION ALL ").join(items), live=self._keys_live_sql(ctx),
            scored=self._scored_sql(sql.SQL(" UNION ALL ").join(items), stats, df,
                                    direct if counted else None, counted, filtered))

    def _fuzzy_terms(self, ctx: TenantContext, qgrams: list[tuple[int, str, int]], keys: list[SearchKey],
                     own: list[tuple[int, int, int, float]], kinds: list[str] | None) -> Any:
        """The vocabulary words a fuzzy query also searches, (key version,
        term, weight): per query word, at most ``FUZZY_WORDS`` words sharing
        enough of its trigrams, best first, weighted by that share; none of
        ``own`` (the query's own terms, as in ``_search``'s ``q``). And which
        of ``own`` (key version, term) the search should score. A statement of
        its own: the search after it knows every term it scores
        (``_direct_score_sql``).

        With ``kinds`` (every live key's document frequencies are kept): only
        terms some item of those kinds holds. A term no item holds adds
        nothing to any score (its idf is taken as 0), but scoring it still
        costs a binary search in every item; a typo, which a fuzzy query
        is for, is such a term."""
        g = [(qi, k.version, k.hasher(gram), n) for qi, gram, n in qgrams for k in keys]
        held = sql.SQL("true")
        if kinds is not None:
            held = sql.SQL("EXISTS (SELECT FROM {stats} st WHERE st.tenant_id = %(t)s AND st.kind = ANY({kinds}) "
                           "AND st.key_version = x.key_version AND st.term = x.term AND st.items > 0)").format(
                stats=self._table(ctx, SEARCH_STATS), kinds=sql.Literal(kinds))
        rows = yield self._statement_step(sql.SQL(
            "SELECT * FROM (SELECT key_version, term, {fw} * max(sim) AS w FROM (SELECT *, row_number() OVER "
            "  (PARTITION BY qi ORDER BY sim DESC, term) AS r FROM (SELECT g.qi, v.key_version, {term_id} AS term, "
            "  count(*)::float8 / max(g.n) AS sim FROM unnest(%(gqi)b::int[], %(gver)b::int[], %(gram)b::bytea[], "
            "  %(gn)b::int[]) AS g(qi, key_version, gram, n) JOIN {vocab} v ON v.tenant_id = %(t)s "
            "  AND v.key_version = g.key_version AND v.gram = g.gram "
            "  GROUP BY g.qi, v.key_version, v.term HAVING count(*)::float8 / max(g.n) >= {sim}) cand) c "
            "  WHERE r <= {fn} GROUP BY key_version, term "
            # The query's own terms, weight NULL.
            "  UNION ALL SELECT *, NULL FROM unnest(%(over)b::int[], %(oterm)b::int8[])) x "
            "WHERE {held} ORDER BY key_version, term, w").format(
            term_id=sql.SQL(TERM_ID_SQL.format("v.term")), vocab=self._table(ctx, SEARCH_VOCAB), held=held,
            sim=sql.Literal(FUZZY_SIMILARITY), fw=sql.Literal(FUZZY_WEIGHT), fn=sql.Literal(FUZZY_WORDS)),
            {"t": ctx.key, "gqi": [r[0] for r in g], "gver": [r[1] for r in g], "gram": [r[2] for r in g],
             "gn": [r[3] for r in g], "over": [r[1] for r in own], "oterm": [r[2] for r in own]}, "all")
        held_own = {(ver, term) for ver, term, w in rows if w is None}
        exact = {(r[1], r[2]) for r in own}
        return [(ver, term, w) for ver, term, w in rows if w is not None and (ver, term) not in exact], held_own

    @staticmethod
    def _scored_sql(items: sql.Composable, stats: sql.Composable, df: sql.Composable,
                    direct: list[tuple[int, int, int, float]] | None, counted: bool,
                    filtered: bool = True) -> sql.Composed:
        """CTEs ``stats``, ``df`` and ``scored`` (kind, doc_id, metadata, score:
        one row per matching item the filters keep, which total and facets count)."""
        if direct is not None:
            # Uncorrelated subqueries (each idf read once); a term the index has no count
            # of adds nothing, as the join with df leaves it out below.
            score = sql.SQL(" + ").join(
                _direct_score_sql(ver, term, w, sql.SQL("coalesce((SELECT idf FROM df WHERE idx = {}), 0)").format(
                    sql.Literal(idx))) for idx, ver, term, w in direct) if direct else sql.SQL("0::float8")
            return sql.SQL(
                "{stats}{df}"
                "scored AS MATERIALIZED (SELECT kind, doc_id, metadata, {nanos} AS score FROM ("
                "  SELECT i.kind, i.doc_id, i.metadata, {score} AS raw FROM ({items}) i CROSS JOIN stats s "
                # OFFSET 0: the subquery stays one, its score computed once per row. Only
                # the metadata filter before it: raw > 0 below says what && would (a
                # binary search per query term costs less than && comparing every term
                # of the item with the query's: 14-18% of a fuzzy statement's CPU).
                "  WHERE " + ("i.metadata @> %(f)s" if filtered else "true") + " OFFSET 0) r "
                # > 0: the item holds a query term under its own key version (an item under
                # another live key can share a hash with the query's terms under this one).
                "  WHERE raw > 0), ").format(stats=stats, df=df, score=score, items=items,
                                             nanos=sql.SQL(NANO_SCORE_SQL.format("raw")))
        return sql.SQL(
            # The items holding any query term (one scan of the tenant's rows; with counted, those
            # the filters keep), each read once; each term's frequency at its position in the
            # item's sorted terms (a binary search).
            "qa AS MATERIALIZED (SELECT array_agg(idx) AS idx, array_agg(key_version) AS ver, array_agg(term) AS term, "
            "  array_agg(w) AS w FROM q), "
            "hits AS MATERIALIZED (SELECT i.kind, i.doc_id, i.length, i.metadata, i.tfs[p.pos] AS tf, x.idx, x.w "
            "  FROM qa CROSS JOIN ({items}) i "
            "  CROSS JOIN LATERAL unnest(qa.idx, qa.ver, qa.term, qa.w) AS x(idx, key_version, term, w) "
            "  CROSS JOIN LATERAL (SELECT width_bucket(x.term, i.terms)) AS p(pos) "
            "  WHERE " + (ITEM_FILTER_SQL if counted else "i.terms && (SELECT terms FROM qt)")
            + " AND x.key_version = i.key_version AND i.terms[p.pos] = x.term), "
            "{stats}{df}"
            # From the hits alone (they carry length and metadata): no join the planner could misjudge;
            # one row per item the filters keep, which total and facets count.
            "scored AS MATERIALIZED (SELECT h.kind, h.doc_id, any_value(h.metadata) AS metadata, "
            "  {nanos} AS score "
            "  FROM hits h JOIN df USING (idx) CROSS JOIN stats s WHERE h.metadata @> %(f)s "
            "  GROUP BY h.kind, h.doc_id), ").format(
                items=items, stats=stats, df=df,
                nanos=sql.SQL(NANO_SCORE_SQL.format("sum(h.w * df.idf * {bm25})")).format(
                    bm25=_bm25_tf_sql(sql.SQL("h.tf"), sql.SQL("h.length"))))

    def _corpus_sql(self, ctx: TenantContext, kinds: list[str], items: sql.Composable,
                    counted: bool) -> tuple[sql.Composed, sql.Composed]:
        """CTEs ``stats`` (n, avgdl: the searched items' count and average
        length) and ``df`` (idf by query term idx, after ``q`` and ``hits``):
        read from search_stats when ``counted``, else counted over the items."""
        if not counted:  # a scan of every item's length; idf among the hits (every item holding a term)
            return sql.SQL(
                "stats AS MATERIALIZED (SELECT count(*)::float8 AS n, greatest(coalesce(avg(length), 1), 1)::float8 "
                "  AS avgdl FROM ({items}) i), ").format(items=items), sql.SQL(
                "df AS MATERIALIZED (SELECT idx, ln(1 + (s.n - count(*) + 0.5) / (count(*) + 0.5)) AS idf "
                "  FROM hits CROSS JOIN stats s GROUP BY idx, s.n), ")
        table = self._table(ctx, SEARCH_STATS)
        # The corpus rows of every key version; each query term's counts looked up by the
        # primary key (the terms outer: the planner would otherwise read every count of the
        # tenant and probe the terms for each).
        return sql.SQL(
            "stats AS MATERIALIZED (SELECT coalesce(sum(items), 0)::float8 AS n, greatest(coalesce("
            "  sum(length)::float8 / nullif(sum(items), 0), 1), 1) AS avgdl FROM {stats} WHERE tenant_id = %(t)s "
            "  AND kind = ANY({corpus}) AND term = 0), ").format(
            stats=table, corpus=sql.Literal(["#" + kind for kind in kinds])), sql.SQL(
            "df AS MATERIALIZED (SELECT c.idx, ln(1 + (s.n - c.n + 0.5) / (c.n + 0.5)) AS idf FROM (SELECT q.idx, "
            "  sum(k.n)::float8 AS n FROM q CROSS JOIN LATERAL (SELECT sum(st.items) AS n FROM {stats} st "
            "  WHERE st.tenant_id = %(t)s AND st.kind = ANY({kinds}) AND st.key_version = q.key_version "
            "  AND st.term = q.term) k GROUP BY q.idx HAVING sum(k.n) > 0) c CROSS JOIN stats s), ").format(
            stats=table, kinds=sql.Literal(kinds))

    def _suggest(self, ctx: TenantContext, prefix: str, limit: int) -> Any:
        """Title words starting with ``prefix``'s last word: the blind prefix
        finds the documents (those with the most title words holding it first:
        its frequency, negated or not), their decrypted titles give the words."""
        ctx = verified(ctx)
        _page_limit(limit, MAX_RESULTS)
        term = analyzer.prefix_term(prefix) if isinstance(prefix, str) else None
        if term is None:
            return []

        def run(keys: list[SearchKey]) -> Any:
            rows = yield self._statement_step(
                sql.SQL("SELECT l.live, m.doc_id, m.content FROM (SELECT {live} AS live) l LEFT JOIN ("
                        "  SELECT d.doc_id, d.content FROM {docs} d "
                        "  JOIN unnest(%(kv)s::int[], %(q)b::int8[]) AS q(v, term) ON d.key_version = q.v "
                        "  CROSS JOIN LATERAL array_position(d.terms, q.term) AS p(pos) "
                        "  WHERE d.tenant_id = %(t)s AND d.terms && %(q)b::int8[] AND p.pos IS NOT NULL "
                        "  ORDER BY abs(d.tfs[p.pos]) DESC, d.doc_id LIMIT 50) m ON true").format(
                    live=self._keys_live_sql(ctx), docs=self._table(ctx, DOCUMENTS)),
                {"t": ctx.key, "q": [k.hasher.id(term) for k in keys], **self._key_params(keys)}, "all")
            return [r[1:] for r in rows if r[1] is not None], rows[0][0]

        rows = yield from self._with_live_keys(ctx, run)
        if rows is None:
            return []
        opened = yield self._compute_step(self._open_documents, ctx, [(r[0], bytes(r[1])) for r in rows])
        stem = term[2:]
        seen: dict[str, int] = {}
        for title, _ in opened:
            for tok in analyzer.tokens(title):
                if tok.surface.startswith(stem):
                    seen[tok.surface] = seen.get(tok.surface, 0) + 1
        return sorted(seen, key=lambda w: (-seen[w], w))[:limit]
