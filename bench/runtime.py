"""Routed context-store access (tenant_runtime) against the floor: the same SQL
issued directly with psycopg, measured in the same run on a fresh sandbox with
a tenant provisioned by the real operation; plus KMS calls per 1,000 messages.

    python bench/runtime.py               # 2,000 appends, 1,000 history pages
    python bench/runtime.py --n 300       # quick run

Routed = what a request pays: verify the JWT and resolve the tenant (registry
cache hit), then ``store.append`` (seal with the tenant's data key, pooled
connection as the tenant role, one transaction with SET LOCAL app.tenant_id,
upsert conversation + insert message) or ``store.history`` (page of 50, opened
and decoded). Floor = a psycopg connection as the same role, the same
transaction and statements with the plaintext bytes, no token, no encryption,
no models. Both run interleaved, one call each in turn, so drift hits both.

KMS calls are counted on every botocore call the process makes (wrapping
``BaseClient._make_api_call``), for workloads of 1,000 messages, each on a fresh
runtime (another process, cold caches): writes in conversations of 20 messages,
in one-message conversations (context items), in one long conversation, and
reads of the first workload.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter

from common import bench_sandbox

JWT_KEY = "bench-runtime-secret-0123456789abcdef"
PAGE = 50
HISTORY_LEN = 200


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def count_aws_calls() -> Counter:
    """Counter of (service, operation) for every AWS call from here on."""
    from botocore.client import BaseClient

    calls: Counter = Counter()
    original = BaseClient._make_api_call

    def counted(self, operation_name, api_params):
        calls[(self.meta.service_model.service_name, operation_name)] += 1
        return original(self, operation_name, api_params)

    BaseClient._make_api_call = counted
    return calls


def kms_calls(calls: Counter) -> int:
    return sum(n for (service, _), n in calls.items() if service == "kms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="appends per side (history pages: n/2)")
    args = parser.parse_args()

    import jwt
    import psycopg
    from psycopg import sql
    from psycopg.types.json import Jsonb

    from tenant_runtime import JWTSettings, TenantRuntime
    from tenantctl.models import TenantSpec
    from tenantctl.operations.provision import provision

    with bench_sandbox("runtime") as (endpoints, ws, _):
        print("provisioning tenant `bench` (platform stack first) ...", file=sys.stderr)
        record, _ = provision(ws, TenantSpec(id="bench"))
        tid, res = record.tenant_id, record.resources
        table = ws.ensure_platform()["registry_table"]

        calls = count_aws_calls()
        settings = JWTSettings(key=JWT_KEY, algorithms=("HS256",), audience="bench")
        token = jwt.encode({"tenant_id": tid, "aud": "bench", "exp": time.time() + 3600}, JWT_KEY, "HS256")

        def new_runtime() -> TenantRuntime:
            return TenantRuntime(settings, table, endpoint_url=endpoints.aws_endpoint_url, region=endpoints.region)

        rt = new_runtime()

        # The floor: the same role, credentials from the same secret, the same SQL.
        import json

        secret = json.loads(rt.clients.client(rt.resolve(token, tid), "secretsmanager").get_secret_value(
            SecretId=res.store.secret_arn)["SecretString"])
        floor = psycopg.connect(host=secret["host"], port=secret["port"], dbname=secret["dbname"],
                                user=secret["username"], password=secret["password"])
        conv_t, msg_t = (sql.Identifier(res.store.schema_name, t) for t in ("conversations", "messages"))
        insert = sql.SQL(
            "WITH c AS (INSERT INTO {conv} (tenant_id, conversation_id) VALUES (%(t)s, %(c)s) "
            "ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET updated_at = now() RETURNING 1) "
            "INSERT INTO {msg} (tenant_id, conversation_id, role, content, metadata) "
            "SELECT %(t)s, %(c)s, %(r)s, %(b)s, %(m)s FROM c RETURNING seq, created_at").format(conv=conv_t, msg=msg_t)
        select = sql.SQL(
            "SELECT seq, role, content, metadata, created_at FROM {msg} "
            "WHERE tenant_id = %(t)s AND conversation_id = %(c)s AND seq > %(a)s "
            "AND seq < coalesce(%(b)s::bigint, 9223372036854775807) ORDER BY seq DESC LIMIT %(n)s").format(msg=msg_t)

        def floor_append(conv: str, text: str) -> None:
            with floor.transaction():
                floor.execute("SELECT set_config('app.tenant_id', %s, true)", (tid,))
                floor.execute(insert, {"t": tid, "c": conv, "r": "user", "b": text.encode(), "m": Jsonb({"i": 1})}).fetchone()

        def floor_history(conv: str) -> None:
            with floor.transaction():
                floor.execute("SELECT set_config('app.tenant_id', %s, true)", (tid,))
                floor.execute(select, {"t": tid, "c": conv, "a": 0, "b": None, "n": PAGE + 1}).fetchall()

        def routed_append(conv: str, text: str) -> None:
            rt.store.append(rt.resolve(token, tid), conv, "user", text, {"i": 1})

        def routed_history(conv: str) -> None:
            rt.store.history(rt.resolve(token, tid), conv, limit=PAGE)

        text = "What did the quarterly report say about churn in the APAC region? " * 6  # ~400 bytes
        for i in range(HISTORY_LEN):  # warm-up (pools, caches, plans) and the conversations history reads
            floor_append("hist-floor", text)
            routed_append("hist-routed", text)
            floor_history("hist-floor")
            routed_history("hist-routed")

        timings: dict[str, list[float]] = {k: [] for k in ("floor append", "routed append", "floor history", "routed history")}

        def timed(label: str, fn, *fn_args) -> None:
            start = time.perf_counter()
            fn(*fn_args)
            timings[label].append(time.perf_counter() - start)

        print(f"timing {args.n} appends and {args.n // 2} history pages per side ...", file=sys.stderr)
        for i in range(args.n):
            conv = f"c{i // 20}"  # conversations of 20 messages
            timed("floor append", floor_append, "f" + conv, text)
            timed("routed append", routed_append, "r" + conv, text)
        for i in range(args.n // 2):
            timed("floor history", floor_history, "hist-floor")
            timed("routed history", routed_history, "hist-routed")

        print()
        print(f"{'operation':<10}{'floor p50':>11}{'p99':>9}{'routed p50':>12}{'p99':>9}{'ratio p50':>11}{'p99':>7}")
        for op in ("append", "history"):
            f, r = timings[f"floor {op}"], timings[f"routed {op}"]
            fp50, fp99, rp50, rp99 = pct(f, .5) * 1e3, pct(f, .99) * 1e3, pct(r, .5) * 1e3, pct(r, .99) * 1e3
            print(f"{op:<10}{fp50:9.2f}ms{fp99:7.2f}ms{rp50:10.2f}ms{rp99:7.2f}ms{rp50 / fp50:10.2f}x{rp99 / fp99:6.2f}x")
        print(f"(append: ~{len(text)} bytes of content; history: newest page of {PAGE} from a conversation of "
              f"{HISTORY_LEN} messages; routed means {statistics.mean(timings['routed append']) * 1e3:.2f} / "
              f"{statistics.mean(timings['routed history']) * 1e3:.2f} ms)")

        # KMS calls per 1,000 messages.
        cache = rt.envelope.cache
        print()
        print(f"data-key cache: max_age={cache.max_age:g}s max_messages={cache.max_messages} "
              f"max_entries={cache.max_entries}")
        print(f"{'workload (1,000 messages, each on a fresh runtime)':<52}{'KMS calls':>10}")

        def kms_for(label: str, fn) -> None:
            fresh = new_runtime()
            ctx = fresh.resolve(token, tid)
            before = kms_calls(calls)
            fn(fresh, ctx)
            print(f"{label:<52}{kms_calls(calls) - before:>10}")
            fresh.close()

        def write_short(r, ctx):
            for i in range(1000):
                r.store.append(ctx, f"kms-short-{i // 20}", "user", text)

        def write_items(r, ctx):
            for i in range(1000):
                r.store.append(ctx, f"kms-item-{i}", "tool", text)

        def write_long(r, ctx):
            for i in range(1000):
                r.store.append(ctx, "kms-long", "user", text)

        def read_short(r, ctx):
            for c in range(50):
                assert len(r.store.history(ctx, f"kms-short-{c}", limit=PAGE).messages) == 20

        kms_for("append, 50 conversations of 20 messages", write_short)
        kms_for("append, 1,000 one-message conversations", write_items)
        kms_for("append, one conversation", write_long)
        kms_for("history of the 50 conversations, cold cache", read_short)
        by_op = Counter({op: n for (service, op), n in calls.items() if service == "kms"})
        print(f"(KMS operations in this run: {dict(by_op)})")
        rt.close()
        floor.close()


if __name__ == "__main__":
    main()
