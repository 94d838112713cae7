"""Where a search's time goes: the statement (with its EXPLAIN (ANALYZE,
BUFFERS)), opening the page's sealed rows, highlighting, the rest in Python.

    python bench/search_profile.py                  # 10,000 documents (bench/search.py's corpus)
    python bench/search_profile.py --docs 2000 --runs 10
    python bench/search_profile.py --profile-writes   # cProfile of the write loop too

One tenant, the documents written in batches of 100, then each query run
``--runs`` times (after one warm-up); medians per part, and the plan of the
last run's statement, as the tenant (RLS on). A fuzzy query makes two
statements (its words in the vocabulary, then the search): "statement" is
both, the plan the search's."""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from common import bench_sandbox
from search import JWT_KEY, corpus

# (query, filters, fuzzy); the fuzzy query is "report" with a letter dropped, as bench/search.py's.
QUERIES = {"single-term": ("report", None, False), "multi-term": ("report security 東京", None, False),
           "filtered+faceted": ("report security", {"lang": "en", "cat": "finance"}, False),
           "fuzzy": ("rport", None, True)}


def timing(parts: dict[str, list[float]], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            parts[name][-1] += (time.perf_counter() - start) * 1000

    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--profile-writes", action="store_true",
                        help="cProfile the writes after the first 200 documents (caches warm), top 25 by own time")
    args = parser.parse_args()

    import psycopg
    from psycopg import sql

    from tenant_runtime import JWTSettings, TenantRuntime, documents
    from tenantctl.models import TenantSpec
    from tenantctl.operations.provision import provision

    docs = corpus(args.docs)
    with bench_sandbox("search-profile") as (endpoints, ws, _):
        record, _ = provision(ws, TenantSpec(id="bench-profile"))
        rt = TenantRuntime(JWTSettings(key=JWT_KEY, algorithms=("HS256",)), ws.ensure_platform()["registry_table"],
                           endpoint_url=endpoints.aws_endpoint_url, region=endpoints.region)
        ctx = rt.context(record.tenant_id)
        profile = cProfile.Profile()
        for i in range(0, len(docs), 100):
            if args.profile_writes and i == 200:
                profile.enable()
            rt.store.put_documents(ctx, [{"doc_id": d[0], "title": d[1], "body": d[2], "metadata": d[3]}
                                         for d in docs[i:i + 100]])
        profile.disable()
        if args.profile_writes:
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        store = record.resources.store
        # As the admin: the tenant's role does not own its tables, and ANALYZE skips them for it.
        with psycopg.connect(endpoints.pg_dsn(store.database), autocommit=True) as admin:
            admin.execute(sql.SQL("ANALYZE {}, {}").format(*(sql.Identifier(store.schema_name, t) for t in (
                "documents", "search_vocab"))))

        parts: dict[str, list[float]] = defaultdict(list)
        last: list[Any] = []
        statement = rt.store._statement

        def recorded(c: Any, step: Any) -> Any:
            last[:] = [step]
            return statement(c, step)

        rt.store._statement = timing(parts, "sql", recorded)
        rt.store._open_contents = timing(parts, "open", rt.store._open_contents)
        documents.highlight = timing(parts, "highlight", documents.highlight)
        for kind, (query, filters, fuzzy) in QUERIES.items():
            parts.clear()
            for run in range(args.runs + 1):
                for name in ("sql", "open", "highlight"):
                    parts[name].append(0.0)
                start = time.perf_counter()
                result = rt.store.search(ctx, query, filters=filters, facets=["cat"], limit=10, fuzzy=fuzzy)
                parts["total"].append((time.perf_counter() - start) * 1000)
                if run == 0:  # the warm-up: caches filled
                    for samples in parts.values():
                        samples.pop()
            med = {name: statistics.median(samples) for name, samples in parts.items()}
            rest = med["total"] - med["sql"] - med["open"] - med["highlight"]
            print(f"\n== {kind} {query!r} {filters or ''}: {result.total} matches, {args.runs} runs, median ms: "
                  f"total {med['total']:.1f}, statement {med['sql']:.1f}, opening the page {med['open']:.1f}, "
                  f"highlights {med['highlight']:.1f}, other Python {rest:.1f}")
            step = last[0]
            with rt.store.transaction(ctx) as conn:
                plan = conn.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + step.query, step.params).fetchall()
            print("\n".join(r[0] for r in plan))
        rt.close()


if __name__ == "__main__":
    sys.exit(main())
