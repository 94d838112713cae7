"""Per-tenant blind-index search (tenant_runtime documents/search) against an
unencrypted PostgreSQL full-text floor on the same documents, in the same run.

    python bench/search.py                    # 10,000 documents
    python bench/search.py --docs 100000      # the large size
    python bench/search.py --docs 2000 --rounds 3 --queries 20   # quick run
    python bench/search.py --batch 1          # one document per call on both sides

Corpus: generated, deterministic (seeded): 70% English-like documents (words
drawn Zipf-like from 3,000 synthetic words plus common English ones), 30%
Japanese (sentences from a small vocabulary), each with a title, a 40-120 word
body and metadata {"lang", "cat"} (8 categories).

Routed = ``TenantRuntime.store`` as the tenant: ``put_documents`` in batches
of ``--batch`` (``put_document`` one by one with ``--batch 1``: analysis, HMAC
of every term, sealing, one statement writing each document's row with its
hashed terms) and ``search`` (BM25 over the rows' blind terms, every row of
the tenant read: no index serves it under RLS; facets, decrypting the hits,
highlights). Floor = a table in the same database with the plaintext and a
``tsvector`` (GIN) built from the *same* analysed terms (``to_tsvector('simple',
...)``, so Japanese is segmented the same way), ranked by ``ts_rank``, the
same filter and facet counts in SQL, no encryption, no highlights, as the
admin (no RLS), written in the same batches (one transaction of ``--batch``
inserts; with ``--batch 1`` one autocommitted insert per document).
Fuzzy: ours looks the query word's trigrams up in the tenant's (blind)
vocabulary, then searches the up to 20 words sharing most of them; the floor
does the same work with pg_trgm: a table of the corpus's words (from
``ts_stat``, built once after indexing, timed apart: ours keeps its
vocabulary on every write) under a trigram GIN index, the up to 20 words most
similar to the query word (``%``, pg_trgm's default threshold 0.3), then the
full-text query over the word and them.

Indexing: the documents go in ``--rounds`` chunks, floor and routed
alternating which goes first; throughput per chunk, min and median reported.
Queries: ``--rounds`` rounds of ``--queries`` queries per kind, one floor and
one routed call in turn; p50/p95 per round, min and median over rounds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

from common import bench_sandbox, in_turn

JWT_KEY = "bench-search-secret-0123456789abcdef"
COMMON = ("report search index tenant data key cloud storage query result customer invoice contract policy "
          "security backup restore region network server database document meeting budget project").split()
JA_WORDS = ("東京 京都 大阪 会議 予算 契約 請求書 顧客 検索 索引 暗号 鍵 管理 報告 計画 地域 保存 復元 資料 担当 "
            "開発 運用 障害 対応 確認 変更 承認 申請 提出 完了").split()
JA_GLUE = ("の", "を", "は", "が", "に", "で", "と")
CATS = ("finance", "legal", "ops", "sales", "hr", "eng", "support", "misc")


def corpus(n: int, seed: int = 7) -> list[tuple[str, str, str, dict]]:
    rng = random.Random(seed)
    syll = ["ka", "to", "ri", "men", "sa", "lo", "ne", "dra", "vi", "po", "ter", "qu", "es", "an", "ul", "fo"]
    vocab = sorted({"".join(rng.choice(syll) for _ in range(rng.randint(2, 4))) for _ in range(3500)})[:3000]
    vocab = COMMON + vocab
    weights = [1.0 / (i + 1) ** 0.9 for i in range(len(vocab))]
    docs = []
    for i in range(n):
        if rng.random() < 0.7:
            words = rng.choices(vocab, weights, k=rng.randint(40, 120))
            title = " ".join(rng.choices(vocab, weights, k=4)).capitalize()
            body, lang = " ".join(words) + ".", "en"
        else:
            parts = [rng.choice(JA_WORDS) + rng.choice(JA_GLUE) for _ in range(rng.randint(20, 60))]
            title = "".join(rng.choices(JA_WORDS, k=2))
            body, lang = "".join(parts) + "。", "ja"
        docs.append((f"doc-{i:06d}", title, body, {"lang": lang, "cat": rng.choice(CATS)}))
    return docs


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queries", type=int, default=40, help="queries per kind per round and side")
    parser.add_argument("--batch", type=int, default=100, help="documents per write call, both sides")
    args = parser.parse_args()

    import psycopg
    from psycopg import sql
    from psycopg.types.json import Jsonb

    from tenant_runtime import JWTSettings, TenantRuntime, analyzer
    from tenantctl.models import TenantSpec
    from tenantctl.operations.provision import provision

    docs = corpus(args.docs)
    with bench_sandbox("search") as (endpoints, ws, _):
        print("provisioning tenant `bench-search` ...", file=sys.stderr)
        record, _ = provision(ws, TenantSpec(id="bench-search"))
        tid, store = record.tenant_id, record.resources.store
        rt = TenantRuntime(JWTSettings(key=JWT_KEY, algorithms=("HS256",)), ws.ensure_platform()["registry_table"],
                           endpoint_url=endpoints.aws_endpoint_url, region=endpoints.region)
        ctx = rt.context(tid)
        admin = psycopg.connect(endpoints.pg_dsn(store.database), autocommit=True)
        admin.execute("CREATE SCHEMA IF NOT EXISTS bench_floor")
        admin.execute("CREATE TABLE bench_floor.docs (doc_id text PRIMARY KEY, title text, body text, "
                      "metadata jsonb, tsv tsvector)")
        admin.execute("CREATE INDEX ON bench_floor.docs USING gin (tsv)")

        def floor_put(batch: list[tuple]) -> None:
            rows = [(doc_id, title, body, Jsonb(meta),
                     " ".join(t.term for t in analyzer.tokens(title + " " + title + " " + body, index=True)))
                    for doc_id, title, body, meta in batch]
            with admin.transaction(), admin.cursor() as cur:
                cur.executemany("INSERT INTO bench_floor.docs VALUES (%s, %s, %s, %s, to_tsvector('simple', %s))",
                                rows)

        def routed_put(batch: list[tuple]) -> None:
            if len(batch) == 1:
                rt.store.put_document(ctx, *batch[0])
            else:
                rt.store.put_documents(ctx, [{"doc_id": d[0], "title": d[1], "body": d[2], "metadata": d[3]}
                                             for d in batch])

        # -- indexing, in interleaved chunks ---------------------------------------------
        chunk = max(1, len(docs) // args.rounds)
        rates: dict[str, list[float]] = {"floor": [], "routed": []}
        for r in range(args.rounds):
            part = docs[r * chunk:(r + 1) * chunk] if r < args.rounds - 1 else docs[r * chunk:]
            for side in in_turn(("floor", "routed"), r):
                put = floor_put if side == "floor" else routed_put
                start = time.perf_counter()
                for i in range(0, len(part), args.batch):
                    put(part[i:i + args.batch])
                rates[side].append(len(part) / (time.perf_counter() - start))
            print(f"  indexed {min(len(docs), (r + 1) * chunk)}/{len(docs)}", file=sys.stderr)
        start = time.perf_counter()
        admin.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        admin.execute("CREATE TABLE bench_floor.words AS SELECT word FROM ts_stat('SELECT tsv FROM bench_floor.docs')")
        admin.execute("CREATE INDEX ON bench_floor.words USING gin (word gin_trgm_ops)")
        words_built = time.perf_counter() - start
        admin.execute("ANALYZE bench_floor.docs, bench_floor.words")
        admin.execute(sql.SQL("ANALYZE {}, {}").format(*(sql.Identifier(store.schema_name, t) for t in (
            "documents", "search_vocab"))))

        # -- queries ---------------------------------------------------------------------------
        rng = random.Random(11)
        en_words = [w for w in COMMON]
        kinds = {
            "single-term": lambda: ({"q": rng.choice(en_words)}, {}),
            "multi-term": lambda: ({"q": f"{rng.choice(en_words)} {rng.choice(en_words)} {rng.choice(JA_WORDS)}"}, {}),
            "filtered+faceted": lambda: ({"q": f"{rng.choice(en_words)} {rng.choice(en_words)}"},
                                         {"filters": {"lang": "en", "cat": rng.choice(CATS)}}),
            "fuzzy": lambda: ({"q": typo(rng, rng.choice(en_words))}, {"fuzzy": True}),
        }
        # Fuzzy: each query word and the 20 corpus words most like it (pg_trgm), any of them.
        similar = ("(SELECT to_tsquery('simple', string_agg(quote_literal(w), ' | ')) FROM ("
                   "  SELECT unnest(%(w)s::text[]) UNION SELECT x.word FROM unnest(%(w)s::text[]) AS qw(word) "
                   "  CROSS JOIN LATERAL (SELECT word FROM bench_floor.words WHERE word %% qw.word "
                   "  ORDER BY similarity(word, qw.word) DESC, word LIMIT 20) x) a(w))")
        floor_sql = ("WITH m AS (SELECT doc_id, title, body, metadata, ts_rank(tsv, q) AS r FROM bench_floor.docs, "
                     "  {tsq} AS fq(q) WHERE tsv @@ q AND metadata @> %(f)s) "
                     "SELECT (SELECT count(*) FROM m), (SELECT jsonb_object_agg(v, c) FROM ("
                     # The facet as the store counts one: an array's elements, else the value.
                     "  SELECT e.v, count(*) c FROM m CROSS JOIN LATERAL (SELECT DISTINCT v FROM "
                     "  jsonb_array_elements_text(CASE jsonb_typeof(metadata->'cat') WHEN 'array' THEN metadata->'cat' "
                     "  ELSE jsonb_build_array(metadata->'cat') END) AS a(v) WHERE v IS NOT NULL) e GROUP BY 1) x), "
                     "  (SELECT jsonb_agg(t) FROM (SELECT doc_id, title, body FROM m ORDER BY r DESC LIMIT 10) t)")

        plain_sql, fuzzy_sql = floor_sql.format(tsq="to_tsquery('simple', %(q)s)"), floor_sql.format(tsq=similar)

        def floor_query(q: str, opts: dict) -> None:
            words = [t.term for t in analyzer.tokens(q)]
            tsq = " | ".join("'" + w.replace("'", "''") + "'" for w in words)
            admin.execute(fuzzy_sql if opts.get("fuzzy") else plain_sql,
                          {"q": tsq, "w": words, "f": Jsonb(opts.get("filters", {}))}).fetchone()

        def routed_query(q: str, opts: dict) -> None:
            rt.store.search(ctx, q, facets=["cat"], limit=10, **opts)

        results = {}
        for kind, make in kinds.items():
            p50s: dict[str, list[float]] = {"floor": [], "routed": []}
            p95s: dict[str, list[float]] = {"floor": [], "routed": []}
            for r in range(args.rounds):
                samples: dict[str, list[float]] = {"floor": [], "routed": []}
                for i in range(args.queries):
                    query, opts = make()
                    order = (("floor", floor_query), ("routed", routed_query))
                    for side, fn in in_turn(order, i + r):
                        start = time.perf_counter()
                        fn(query["q"], opts)
                        samples[side].append((time.perf_counter() - start) * 1000)
                for side in samples:
                    p50s[side].append(pct(samples[side], 0.5))
                    p95s[side].append(pct(samples[side], 0.95))
            results[kind] = (p50s, p95s)

        print(f"\n{args.docs} documents ({sum(d[3]['lang'] == 'ja' for d in docs)} Japanese), "
              f"{args.rounds} rounds, batches of {args.batch}")
        print("\nindexing (docs/s, per chunk)      min       median")
        for side in ("floor", "routed"):
            print(f"  {side:<30} {min(rates[side]):8.0f} {statistics.median(rates[side]):10.0f}")
        ratio = statistics.median(rates["routed"]) / statistics.median(rates["floor"])
        print(f"  routed / floor (median): {ratio:.2f}x  (goal >= 0.5x)")
        print(f"  floor's fuzzy word table (pg_trgm), built once after indexing: {words_built:.2f} s")
        print("\nquery latency (ms)     floor p50 min/med  p95 med   routed p50 min/med  p95 med   p50 ratio")
        for kind, (p50s, p95s) in results.items():
            f50, r50 = statistics.median(p50s["floor"]), statistics.median(p50s["routed"])
            print(f"  {kind:<18} {min(p50s['floor']):8.2f} {f50:8.2f} {statistics.median(p95s['floor']):8.2f}"
                  f"   {min(p50s['routed']):8.2f} {r50:8.2f} {statistics.median(p95s['routed']):8.2f}"
                  f"   {r50 / f50:6.2f}x")
        sizes = admin.execute(
            "SELECT pg_total_relation_size('bench_floor.docs'), pg_total_relation_size(%s)",
            (f"{store.schema_name}.documents",)).fetchone()
        print(f"\nsize: floor {sizes[0] / 2**20:.1f} MiB, routed (documents with terms) {sizes[1] / 2**20:.1f} MiB")
        print(json.dumps({"docs": args.docs, "index_rates": rates}), file=sys.stderr)
        rt.close()
        admin.close()


def typo(rng: random.Random, word: str) -> str:
    i = rng.randrange(1, len(word) - 1)
    return word[:i] + word[i + 1:]  # one letter dropped


if __name__ == "__main__":
    main()
