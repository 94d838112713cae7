"""Searching a tenant's documents (and, when asked, its conversation
summaries) over the blind index ``tenant_runtime.documents`` writes: the
query's words hashed under every live search key, BM25 computed in SQL over the
matching rows (idf from ``search_stats``, lengths from ``length``), filters and
facets on the clear metadata, keyset pages by (score, id), fuzzy words from the
tenant's blind vocabulary (trigrams), snippets highlighted after decryption,
and title-word suggestions from the blind title prefixes.

Under forced RLS no index serves ``&&`` or ``@>`` (neither is leakproof): every
item of the tenant is read (``ITEM_FILTER_SQL``), the metadata filter first.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from tenant_runtime import analyzer
from tenant_runtime import cursor as cursor_codec
from tenant_runtime.blind_index import TERM_ID_SQL
from tenant_runtime.context import TenantContext, verified
from tenant_runtime.documents import (
    DOCUMENT_SOURCE,
    HIGHLIGHT_SCAN,
    MAX_DOC_METADATA,
    MAX_RESULTS,
    SOURCES,
    DocumentOperations,
    check_json_size,
    check_limit,
    check_stored_text,
)
from tenant_runtime.errors import IndexIncomplete, InvalidRequest
from tenant_runtime.search_keys import SearchKey
from tenant_runtime.tables import DOCUMENTS, SEARCH_STATS, SEARCH_VOCAB, SUMMARIES

MAX_QUERY = 1_000
MAX_FACETS = 100
MAX_OFFSET = 2**31 - 1  # PostgreSQL's OFFSET is an int8; past this no tenant has a page
MAX_SCORE_DIGITS = 9  # a cursor's score in nanos is an int8 (NANO_SCORE_SQL): 10**9 and past it, no score
SNIPPET = 160
BM25_K1, BM25_B = 1.2, 0.75
FUZZY_SIMILARITY = 0.5  # share of a query word's trigrams a vocabulary word must have
FUZZY_WEIGHT = 0.8  # a fuzzy match counts less than the word itself
FUZZY_WORDS = 20  # vocabulary words per query word at most
FUZZY_IDX = 1_000_000  # query term numbers from here on: fuzzy words (below: the query's own words)
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
# A cursor's corpus statistics in place of the store's (``_Snapshot``).
SNAPSHOT_FUZZY_WORDS = 60  # a fuzzy query's found words a cursor carries at most (a cursor of ~3 KB)
_FUZZY_WORD = struct.Struct("<iqdd")  # key version, term, weight, idf
SNAPSHOT_STATS_SQL = sql.SQL("stats AS MATERIALIZED (SELECT %(sn)s::float8 AS n, %(sa)s::float8 AS avgdl), ")
SNAPSHOT_DF_SQL = sql.SQL("df AS MATERIALIZED (SELECT * FROM unnest(%(sidx)s::int[], %(sidf)s::float8[]) "
                          "AS d(idx, idf)), ")


@dataclass(frozen=True)
class _Snapshot:
    """The corpus statistics a search's first page ranked with, carried by its
    cursor: every write changes them (the item count, the average length, the
    idf of the terms it holds) and so every score, and a page after a write
    ranked with the new ones would skip or repeat most of the first page's
    order (a keyset on scores that all moved). Ranked with the first page's,
    every item that did not change keeps its score and its place; a written
    one ranks where its new content puts it in that order. ``fuzzy``: the
    words a fuzzy query found then, (key version, term, weight), in the order
    their idf is numbered (``FUZZY_IDX`` on): packed, 28 bytes each with its
    idf, and at most ``SNAPSHOT_FUZZY_WORDS`` of them (``fits``)."""

    n: float
    avgdl: float
    idf: dict[int, float]  # query term number -> idf; none: no item held it
    fuzzy: list[tuple[int, int, float]]

    def fits(self) -> bool:
        """Small enough for a cursor (a URL's query string): else the pages after the first rank live."""
        return len(self.fuzzy) <= SNAPSHOT_FUZZY_WORDS

    def encode(self) -> list[Any]:
        packed = b"".join(_FUZZY_WORD.pack(ver, term, w, self.idf.get(FUZZY_IDX + k, -1.0))
                          for k, (ver, term, w) in enumerate(self.fuzzy))
        return [self.n, self.avgdl, [[i, v] for i, v in self.idf.items() if i < FUZZY_IDX],
                base64.urlsafe_b64encode(packed).decode()]

    @classmethod
    def decode(cls, value: Any, words: int) -> _Snapshot:
        """ValueError or TypeError for anything ``encode`` did not write for a query of ``words`` words."""
        n, avgdl, own, packed = value
        n, avgdl, idf = float(n), float(avgdl), {int(i): float(v) for i, v in own}
        raw = base64.urlsafe_b64decode(packed)
        if not all(0 <= i < words for i in idf) or len(raw) % _FUZZY_WORD.size or (
                len(raw) // _FUZZY_WORD.size > SNAPSHOT_FUZZY_WORDS):
            raise ValueError("not a search's statistics")
        fuzzy = []
        for k, (ver, term, w, found) in enumerate(_FUZZY_WORD.iter_unpack(raw)):
            if not 0 < w <= 1:  # FUZZY_WEIGHT times a share (NaN fails too)
                raise ValueError("not a search's statistics")
            fuzzy.append((ver, term, w))
            if found != -1:  # -1: no item held it
                idf[FUZZY_IDX + k] = found
        # As the statement computes them (greatest(avg, 1), ln(1 + a positive)): no NaN, no
        # infinity, no zero length a forged cursor could make the statement fail on.
        if not (0 <= n < math.inf and 1 <= avgdl < math.inf and all(0 < v < math.inf for v in idf.values())):
            raise ValueError("not a search's statistics")
        return cls(n=n, avgdl=avgdl, idf=idf, fuzzy=fuzzy)

    def params(self) -> dict[str, Any]:
        return {"sn": self.n, "sa": self.avgdl, "sidx": list(self.idf), "sidf": list(self.idf.values())}


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
    facets: dict[str, dict[str, int]]  # field -> value -> count, over all matches; every field asked ({}: none)
    next_cursor: str | None
    # Part of the index was built by an analyzer other than the one the query was cut with
    # (a reindex to another analyzer under way, or one this runtime cannot reproduce):
    # hits may be missing until ``tenantctl search reindex``.
    analyzer_mismatch: bool = False


class Suggestions(list[str]):
    """What ``suggest`` answers: the words, commonest first (a list, as it always
    was), and ``analyzer_mismatch`` as ``SearchResult`` says it: part of the
    index was built by an analyzer other than the one the prefix was cut with,
    so completions may be missing until ``tenantctl search reindex``."""

    def __init__(self, words: Iterable[str] = (), analyzer_mismatch: bool = False) -> None:
        super().__init__(words)
        self.analyzer_mismatch = analyzer_mismatch


def _mismatch(keys: list[SearchKey], prof: analyzer.Profile) -> bool:
    """Some live key's index was built by another analyzer than ``prof``, the one the query was cut with."""
    return any(k.analyzer != prof.identity for k in keys)


def _searched_kinds(summaries: bool) -> list[str]:
    """The item kinds a search reads: documents, and summaries when asked."""
    return [src.kind for src in SOURCES if summaries or src is DOCUMENT_SOURCE]


def highlight(body: str, matched: Callable[[str], bool],
              prof: analyzer.Profile | None = None) -> tuple[str, list[tuple[int, int]]]:
    """A snippet of ``body`` (NFKC) around its first token whose term is
    ``matched`` (cut by ``prof``), and the spans of every such token inside it."""
    text = analyzer.nfkc(body)
    hits: list[tuple[int, int]] = []
    start, end = 0, min(len(text), SNIPPET)
    # Only the beginning is analysed (long bodies cost no more than this), and
    # only up to the snippet's end (tokens come in order of their offsets).
    for t in analyzer.iter_tokens(text[:HIGHLIGHT_SCAN], index=True, prof=prof):
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


class SearchOperations(DocumentOperations):
    """Search and suggestions as store operations (mixed into the store drivers):
    they open the documents' sealed rows as ``DocumentOperations`` does."""

    def _search(self, ctx: TenantContext, query: str, filters: dict[str, Any] | None, facets: list[str] | None,
                limit: int, offset: int, cursor: str | None, fuzzy: bool, include_summaries: bool = False) -> Any:
        ctx = verified(ctx)
        if not isinstance(query, str) or not 1 <= len(query) <= MAX_QUERY:
            raise InvalidRequest(f"query must be 1..{MAX_QUERY} characters")
        check_limit(limit, MAX_RESULTS)
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET or (
                cursor and offset):
            raise InvalidRequest(f"offset must be 0..{MAX_OFFSET}, and 0 with a cursor")
        if isinstance(facets, str):  # one name, not a list of them: never its characters
            raise InvalidRequest("facets must be a list of field names, e.g. [\"team\"]")
        filters, facets = filters or {}, list(facets or [])
        if not isinstance(filters, dict) or not all(isinstance(f, str) for f in facets):
            raise InvalidRequest("filters must be a JSON object and facets a list of field names")
        if len(facets) > MAX_FACETS:  # each is counted over every match: 10,000 names took seconds
            raise InvalidRequest(f"at most {MAX_FACETS} facets")
        check_json_size(filters, "filters", MAX_DOC_METADATA)
        for name in facets:
            check_stored_text(name, "a facet")
        # Checked as this runtime cuts the query, before any I/O; cut again below
        # when the store's index records another analyzer (``_query_profile``).
        prof = analyzer.current()
        words = analyzer.query_terms(query, prof)
        if not words:
            raise InvalidRequest("query has no searchable words")
        summaries = bool(include_summaries)
        # Summaries are in the fingerprint only when asked: a documents-only cursor stays what it was.
        bound = [query, filters, fuzzy, *(["summaries"] if summaries else [])]
        fingerprint = hashlib.sha256(json.dumps(bound, sort_keys=True).encode()).hexdigest()[:16]
        after_score, after_doc, after_kind, snapshot = None, "", "", None
        if cursor:
            data = cursor_codec.open_cursor(cursor, "search", ctx.key, ("q", "s", "d", "k"))
            if data["q"] != fingerprint:
                raise InvalidRequest("cursor belongs to another query")
            try:
                after_score, after_doc, after_kind = Decimal(data["s"]), data["d"], data["k"]
                if not (after_score.is_finite() and after_score.adjusted() < MAX_SCORE_DIGITS):  # no arithmetic
                    raise ValueError(after_score)  # the SQL takes it in nanos as a bigint
                # A cursor without statistics had too many fuzzy words to carry: ranked by the live ones.
                snapshot = _Snapshot.decode(data["st"], len(words)) if "st" in data else None
            except (InvalidOperation, ValueError, TypeError):
                raise InvalidRequest("invalid cursor: pass a cursor returned by search()") from None
        recorded = yield from self._query_profile(ctx)
        if recorded != prof:
            prof, words = recorded, analyzer.query_terms(query, recorded)
            if not words:
                raise InvalidRequest("query has no searchable words")
            if snapshot is not None and not all(i < len(words) for i in snapshot.idf if i < FUZZY_IDX):
                raise InvalidRequest("invalid cursor: pass a cursor returned by search()")
        qgrams = analyzer.query_grams(query, prof) if fuzzy else []

        def run(keys: list[SearchKey]) -> Any:
            q = [(i, k.version, k.hasher.id(term), 1.0) for i, term in enumerate(words) for k in keys]
            counted = all(k.counted for k in keys)
            found: list[tuple[int, int, float]] = []
            if snapshot is not None:  # the first page's fuzzy words (their idf is in the snapshot)
                found = snapshot.fuzzy
            elif qgrams:
                found, held = yield from self._fuzzy_terms(ctx, qgrams, keys, q,
                                                           _searched_kinds(summaries) if counted else None)
                q = [r for r in q if (r[1], r[2]) in held]
            q += [(FUZZY_IDX + n, ver, term, w) for n, (ver, term, w) in enumerate(found)]
            rows = yield self._statement_step(self._search_sql(ctx, summaries, counted, q if counted else None,
                                                               bool(filters), snapshot is not None), {
                "t": ctx.key, "idx": [r[0] for r in q], "ver": [r[1] for r in q], "term": [r[2] for r in q],
                "w": [r[3] for r in q], "f": Jsonb(filters), "facets": facets, "cs": after_score, "cd": after_doc,
                "ck": after_kind, "n": limit + 1, "o": offset, **self._key_params(keys),
                **(snapshot.params() if snapshot is not None else {})}, "all")
            fuzzy_words = {(r[1], r[2]) for r in q if r[0] >= FUZZY_IDX}
            mismatch = _mismatch(keys, prof)
            return (rows, keys, fuzzy_words, found, mismatch), rows[0][8]  # hashed under exactly the live keys

        answer = yield from self._with_live_keys(ctx, run)
        if answer is None:
            return SearchResult(hits=[], total=0, facets={name: {} for name in facets}, next_cursor=None)
        rows, keys, fuzzy_words, found, mismatch = answer
        if rows[0][9]:  # an answer now could miss hits: say so rather than answer
            raise IndexIncomplete(ctx.key, rows[0][9])
        # Every facet asked for is in the answer: one no match has is empty, not missing.
        total, facet_counts = rows[0][0], {name: rows[0][1].get(name, {}) for name in facets}
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
        for (_, _, kind, doc_id, score, _, meta, source, *_), data in zip(page, opened, strict=True):
            snippet, matches = highlight(data["body"], matched, prof)
            hits.append(SearchHit(doc_id=doc_id, kind=kind, score=float(score), title=data.get("title", ""),
                                  snippet=snippet, matches=matches, metadata=meta, source=source))
        if more:  # the next pages rank with this page's statistics (a cursor's own, passed on)
            stats = snapshot or _Snapshot(n=rows[0][10], avgdl=rows[0][11], idf=dict(zip(
                rows[0][12] or [], rows[0][13] or [], strict=True)), fuzzy=found)
            next_cursor = cursor_codec.encode("search", {
                "t": ctx.key, "q": fingerprint, "s": str(page[-1][4]), "d": page[-1][3], "k": page[-1][2],
                **({"st": stats.encode()} if stats.fits() else {})})
        else:
            next_cursor = None
        return SearchResult(hits=hits, total=total, facets=facet_counts, next_cursor=next_cursor,
                            analyzer_mismatch=mismatch)

    def _search_sql(self, ctx: TenantContext, summaries: bool, counted: bool,
                    direct: list[tuple[int, int, int, float]] | None = None, filtered: bool = True,
                    snapshot: bool = False) -> sql.Composed:
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
        not empty (an empty one, which every item passes, is left out).
        ``snapshot``: the corpus statistics and idf are a cursor's
        (``_Snapshot``), not the store's: the first page's order stands."""
        columns = "doc_id, metadata, length, content, source, key_version, terms, tfs"
        items = [sql.SQL("SELECT 'document'::text AS kind, " + columns + " FROM {} WHERE tenant_id = %(t)s").format(
            self._table(ctx, DOCUMENTS))]
        if summaries:
            items.append(sql.SQL("SELECT 'summary', conversation_id, '{{}}'::jsonb, length, content, NULL, "
                                 "key_version, terms, tfs FROM {} WHERE tenant_id = %(t)s").format(
                self._table(ctx, SUMMARIES)))
        kinds = _searched_kinds(summaries)
        stats, df = (SNAPSHOT_STATS_SQL, SNAPSHOT_DF_SQL) if snapshot else self._corpus_sql(
            ctx, kinds, sql.SQL(" UNION ALL ").join(items), counted)
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
            "   FROM (SELECT f.k, e.v, count(*) AS c FROM scored m "
            "         CROSS JOIN unnest(%(facets)s::text[]) AS f(k) "
            # An array's elements are its values (once per item), what a filter {"k": [v]} finds;
            # anything else is one value, as text (->>'s). A JSON null has no value to count
            # (and jsonb_object_agg refuses a NULL key).
            "         CROSS JOIN LATERAL (SELECT DISTINCT v FROM jsonb_array_elements_text(CASE jsonb_typeof("
            "           m.metadata -> f.k) WHEN 'array' THEN m.metadata -> f.k ELSE jsonb_build_array("
            "           m.metadata -> f.k) END) AS a(v) WHERE v IS NOT NULL) e "
            "         GROUP BY 1, 2) x "
            "   GROUP BY k) y) AS facets, "
            "  {live} AS live, "
            # Items the index does not cover (a store from before it): the partial index finds them, or none.
            "  (SELECT count(*) FROM ({items}) i WHERE i.terms IS NULL) AS unindexed, "
            # What the next pages rank with (``_Snapshot``).
            "  (SELECT n FROM stats) AS sn, (SELECT avgdl FROM stats) AS sa, "
            "  (SELECT array_agg(idx ORDER BY idx) FROM df) AS sidx, (SELECT array_agg(idf ORDER BY idx) FROM df) "
            "  AS sidf) "
            "SELECT m.total, m.facets, p.kind, p.doc_id, round(p.score::numeric / 1000000000, 9), d.content, "
            "d.metadata, d.source, m.live, "
            "m.unindexed, m.sn, m.sa, m.sidx, m.sidf "
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

    def _query_profile(self, ctx: TenantContext) -> Any:
        """The analysis a query is cut with: the one the newest search key's
        index records (what writes use), when this runtime reproduces it, else
        its own (the answer is then flagged: ``SearchResult.analyzer_mismatch``).
        The keys come from the cache the statement then checks: no statement
        of its own, most of the time."""
        keys = yield from self._search_keys(ctx, create=False)
        return (analyzer.profile(keys[-1].analyzer) if keys else None) or analyzer.current()

    def _suggest(self, ctx: TenantContext, prefix: str, limit: int) -> Any:
        """Title words starting with ``prefix``'s last word: the blind prefix
        finds the documents (those with the most title words holding it first:
        its frequency, negated or not), their decrypted titles give the words;
        flagged as a search is (``Suggestions.analyzer_mismatch``)."""
        ctx = verified(ctx)
        check_limit(limit, MAX_RESULTS)
        if not isinstance(prefix, str):
            raise InvalidRequest("prefix must be a string")
        if analyzer.prefix_term(prefix) is None:
            return Suggestions()
        prof = yield from self._query_profile(ctx)
        term = analyzer.prefix_term(prefix, prof)
        if term is None:
            return Suggestions()

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
            return ([r[1:] for r in rows if r[1] is not None], _mismatch(keys, prof)), rows[0][0]

        answer = yield from self._with_live_keys(ctx, run)
        if answer is None:
            return Suggestions()
        rows, mismatch = answer
        opened = yield self._compute_step(self._open_documents, ctx, [(r[0], bytes(r[1])) for r in rows])
        # The whole last word: the blind prefix found the documents by its first MAX_PREFIX characters only.
        stem = analyzer.normalise(prefix, prof).split()[-1]
        seen: dict[str, int] = {}
        for title, _ in opened:
            text = analyzer.nfkc(title)
            for tok in analyzer.tokens(text, prof=prof):
                if tok.surface.startswith(stem):
                    # The word as the title writes it (casefolded): its accents too, which the terms fold.
                    word = text[tok.start:tok.end].casefold()
                    seen[word] = seen.get(word, 0) + 1
        return Suggestions(sorted(seen, key=lambda w: (-seen[w], w))[:limit], mismatch)
