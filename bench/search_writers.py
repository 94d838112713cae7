"""What concurrent writers of one tenant pay for the kept search counts
(``search_stats``: every write updates the tenant's corpus row and the
counts of its terms, so two writers' transactions queue on those rows).

    python bench/search_writers.py                    # 3,000 documents per configuration
    python bench/search_writers.py --docs 1000 --batch 1

Configurations, each on fresh documents (bench/search.py's corpus), in
``--batch`` documents per ``put_documents`` call: one writer thread on
tenant A; two threads on A (the same stats rows); two threads on A and B
(two tenants: no shared row), the control that carries the same CPU and
GIL contention without the lock. Documents/s per configuration, over
``--rounds`` rounds (min and median)."""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from typing import Any

from common import bench_sandbox
from search import JWT_KEY, corpus


def write(rt: Any, ctx: Any, docs: list[tuple], batch: int) -> None:
    for i in range(0, len(docs), batch):
        rt.store.put_documents(ctx, [{"doc_id": d[0], "title": d[1], "body": d[2], "metadata": d[3]}
                                     for d in docs[i:i + batch]])


def rate(rt: Any, jobs: list[tuple[Any, list[tuple]]], batch: int) -> float:
    """Documents/s of the jobs (context, documents) run at once, a thread each."""
    threads = [threading.Thread(target=write, args=(rt, ctx, docs, batch)) for ctx, docs in jobs]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(len(docs) for _, docs in jobs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=3_000, help="documents per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args()

    from tenant_runtime import JWTSettings, TenantRuntime
    from tenantctl.models import TenantSpec
    from tenantctl.operations.provision import provision

    n = args.docs
    docs = corpus(n * 3 * args.rounds + 200)
    with bench_sandbox("search-writers") as (endpoints, ws, _):
        records = [provision(ws, TenantSpec(id=name))[0] for name in ("writers-a", "writers-b")]
        rt = TenantRuntime(JWTSettings(key=JWT_KEY, algorithms=("HS256",)), ws.ensure_platform()["registry_table"],
                           endpoint_url=endpoints.aws_endpoint_url, region=endpoints.region)
        a, b = (rt.context(r.tenant_id) for r in records)
        for ctx in (a, b):  # keys made, caches warm, the commonest words counted already
            write(rt, ctx, docs[:100], 100)
        fresh = iter(docs[200:])
        rates: dict[str, list[float]] = {"1 writer, tenant A": [], "2 writers, tenant A": [],
                                         "2 writers, A and B (control)": []}
        for _ in range(args.rounds):
            take = [[next(fresh) for _ in range(n // 2)] for _ in range(6)]
            configs = {"1 writer, tenant A": [(a, take[0] + take[1])],
                       "2 writers, tenant A": [(a, take[2]), (a, take[3])],
                       "2 writers, A and B (control)": [(a, take[4]), (b, take[5])]}
            for name, jobs in configs.items():
                rates[name].append(rate(rt, jobs, args.batch))
            print(f"  round done: {', '.join(f'{k} {v[-1]:.0f}' for k, v in rates.items())}", file=sys.stderr)
        print(f"\n{n} documents per configuration and round, batches of {args.batch}, {args.rounds} rounds")
        print("documents/s                        min    median")
        for name, samples in rates.items():
            print(f"  {name:<30} {min(samples):7.0f} {statistics.median(samples):8.0f}")
        rt.close()


if __name__ == "__main__":
    sys.exit(main())
