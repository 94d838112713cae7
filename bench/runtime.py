"""Routed context-store access (tenant_runtime) against the floor: the same SQL
issued directly with psycopg, measured in the same run on a fresh sandbox with
a tenant provisioned by the real operation; plus KMS calls per 1,000 messages;
plus the async API and the shared pool, each against its own floor.

    python bench/runtime.py               # 2,000 appends, 1,000 history pages; async; shared pool, 1,000 tenants
    python bench/runtime.py --n 300 --tenants 200 --rounds 3   # quick run
    python bench/runtime.py --cases shared    # one case (sync, bytecodes, jwt, kms, lowrate, async, shared)
    python bench/runtime.py --cases bytecodes # Python bytecodes per append, both sides

Async = ``AsyncTenantRuntime`` (resolve + store call on the event loop, the
tenant's own login) against a psycopg ``AsyncConnection`` as the same role
running the same transaction (and Python bytecodes per append on each side,
the event loop's own work included). Shared pool = ``TenantRuntime(gateway=...)``
serving ``--tenants`` pooled tenants round-robin from ``--threads`` threads
through a pool of ``--pool`` gateway connections, against a psycopg_pool of the
same size as the gateway doing ``SET LOCAL ROLE`` + tenant + the same INSERT
(no token, no encryption), and that floor again with the runtime pool's
checkout check (its cost); plus the connections each side holds. Both are
interleaved in ``--rounds`` rounds (floor and routed alternate first); the
p50 of each round is reported as min and median over rounds.

Routed = what a request pays: verify the JWT and resolve the tenant (registry
cache hit), then ``store.append`` (seal with the tenant's data key, pooled
connection as the tenant role, one transaction with SET LOCAL app.tenant_id,
upsert conversation + insert message) or ``store.history`` (page of 50, opened
and decoded). Floor = a psycopg connection as the same role, the same
transaction and statements with the plaintext bytes, no token, no encryption,
no models. Both run interleaved, one call each in turn, the first side
alternating (the second call of a pair ran measurably slower on a loaded
machine), so drift and order hit both; in ``--rounds`` rounds, each round's
p50 reported and their min and median.

KMS calls are counted on every botocore call the process makes (wrapping
``BaseClient._make_api_call``), for workloads of 1,000 messages, each on a fresh
runtime (another process, cold caches): writes in conversations of 20 messages,
in one-message conversations (context items), in one long conversation, and
reads of the first workload. Those run as fast as they can (a burst: the best
case for a data key that lives 300 s). ``lowrate``: 1,000 appends at 1, 10 and
100 messages/s per tenant, each on a fresh runtime whose data-key cache runs on
a simulated clock advanced 1/rate s per message (no sleeping for minutes):
data keys renewed at their age limit and the key-state rechecks both show.

``bytecodes``: the client work of a warm append, counted and timed without
the database's share: Python bytecodes per append (``sys.settrace`` opcode
events, the fewest of 5 batches of 100; ``BENCH_FUNCTIONS=1`` lists them per
function) and process CPU time per append (batches alternating), for the floor,
the routed side and a leaner floor (the INSERT rendered once with positional
parameters and the metadata as JSON text, as the runtime sends it; one cursor).

The merged floor: the leaner floor with the runtime's round trips, BEGIN and
the tenant scope as one query without parameters (psycopg's simple protocol
runs both in one round trip) on an autocommit connection, then the INSERT,
then COMMIT: three round trips where the other floors make four. ``sync`` and
``bytecodes`` print it beside the others, and the round trips each side makes
per append (the server's ReadyForQuery messages in libpq's protocol trace).

``jwt``: every request carries a fresh RS256 token (its own ``jti``, so the
verified-token cache never hits): what the signature check costs a request.
Floor: PyJWT's ``jwt.decode`` of the same tokens with the same public key,
then the direct psycopg append. Tokens are signed beforehand, outside the
timing (the caller's identity provider signs them), and the sides alternate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from common import bench_sandbox, in_turn

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


def statements(schema: str):
    """The store's INSERT (upsert conversation + message) and newest-page SELECT, for the floors."""
    from psycopg import sql

    conv_t, msg_t = (sql.Identifier(schema, t) for t in ("conversations", "messages"))
    insert = sql.SQL(
        "WITH c AS (INSERT INTO {conv} (tenant_id, conversation_id) VALUES (%(t)s, %(c)s) "
        "ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET updated_at = now() RETURNING 1) "
        "INSERT INTO {msg} (tenant_id, conversation_id, role, content, metadata) "
        "SELECT %(t)s, %(c)s, %(r)s, %(b)s, %(m)s FROM c RETURNING seq, created_at").format(conv=conv_t, msg=msg_t)
    select = sql.SQL(
        "SELECT seq, role, content, metadata, created_at FROM {msg} "
        "WHERE tenant_id = %(t)s AND conversation_id = %(c)s AND seq > %(a)s "
        "AND seq < coalesce(%(b)s::bigint, 9223372036854775807) ORDER BY seq DESC LIMIT %(n)s").format(msg=msg_t)
    return insert, select


def positional_insert(schema: str):
    """The store's INSERT as the runtime sends it: positional parameters, the metadata as JSON text."""
    from psycopg import sql

    return sql.SQL(
        "WITH c AS (INSERT INTO {conv} (tenant_id, conversation_id) VALUES (%s, %s) "
        "ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET updated_at = now() RETURNING 1) "
        "INSERT INTO {msg} (tenant_id, conversation_id, role, content, metadata) "
        "SELECT %s, %s, %s, %s, %s::jsonb FROM c RETURNING seq, created_at").format(
            conv=sql.Identifier(schema, "conversations"), msg=sql.Identifier(schema, "messages"))


def rounds_table(title: str, samples: dict[str, list[list[float]]], ops: tuple[str, ...]) -> None:
    """min / median over rounds of each round's p50, floor vs routed, in ms."""
    print()
    print(title)
    print(f"{'operation':<12}{'floor p50 min':>15}{'median':>9}{'routed p50 min':>16}{'median':>9}{'ratio':>8}")
    for op in ops:
        f = [pct(r, .5) * 1e3 for r in samples[f"floor {op}"]]
        r = [pct(x, .5) * 1e3 for x in samples[f"routed {op}"]]
        fm, rm = statistics.median(f), statistics.median(r)
        print(f"{op:<12}{min(f):13.3f}ms{fm:7.3f}ms{min(r):14.3f}ms{rm:7.3f}ms{rm / fm:7.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="appends per side (history pages: n/2)")
    parser.add_argument("--cases", default="sync,bytecodes,jwt,kms,lowrate,async,shared", help="which cases to run")
    parser.add_argument("--rounds", type=int, default=5, help="sync / async / shared: interleaved rounds")
    parser.add_argument("--tenants", type=int, default=1000, help="shared: pooled tenants active in the process")
    parser.add_argument("--threads", type=int, default=8, help="shared: request threads")
    parser.add_argument("--pool", type=int, default=10, help="shared: gateway connections per process")
    args = parser.parse_args()
    cases = set(args.cases.split(","))

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

        def new_runtime(**options) -> TenantRuntime:
            return TenantRuntime(settings, table, endpoint_url=endpoints.aws_endpoint_url, region=endpoints.region,
                                 **options)

        rt = new_runtime()

        # The floor: the same role, credentials from the same secret, the same SQL.
        import json

        secret = json.loads(rt.clients.client(rt.resolve(token, tid), "secretsmanager").get_secret_value(
            SecretId=res.store.secret_arn)["SecretString"])
        floor = psycopg.connect(host=secret["host"], port=secret["port"], dbname=secret["dbname"],
                                user=secret["username"], password=secret["password"])
        insert, select = statements(res.store.schema_name)

        def floor_append(conv: str, text: str) -> None:
            with floor.transaction():
                floor.execute("SELECT set_config('app.tenant_id', %s, true)", (tid,))
                floor.execute(insert, {"t": tid, "c": conv, "r": "user", "b": text.encode(),
                                       "m": Jsonb({"i": 1})}).fetchone()

        insert_rendered = positional_insert(res.store.schema_name).as_bytes(floor)

        def lean_floor_append(conv: str, text: str) -> None:
            """The floor with the least client work psycopg allows: the INSERT rendered
            once with positional parameters and the metadata as JSON text (as the
            runtime does), one cursor, no contextlib layer."""
            with psycopg.Transaction(floor):
                cur = floor.cursor()
                cur.execute(b"SELECT set_config('app.tenant_id', %s, true)", (tid,))
                cur.execute(insert_rendered, (tid, conv, tid, conv, "user", text.encode(),
                                              json.dumps({"i": 1}))).fetchone()

        # The leaner floor with the runtime's round trips: BEGIN and the scope as one query
        # without parameters (psycopg's simple protocol: several statements, one round trip)
        # on an autocommit connection, so that psycopg sends no BEGIN of its own.
        merged = psycopg.connect(host=secret["host"], port=secret["port"], dbname=secret["dbname"],
                                 user=secret["username"], password=secret["password"], autocommit=True)
        begin_scope = sql.SQL("BEGIN; SET LOCAL app.tenant_id = {}").format(tid).as_bytes(merged)  # the runtime's

        def merged_floor_append(conv: str, text: str) -> None:
            """The leaner floor, BEGIN and the scope in one round trip: three round trips, as routed."""
            cur = merged.cursor()
            cur.execute(begin_scope, prepare=False)
            try:
                cur.execute(insert_rendered, (tid, conv, tid, conv, "user", text.encode(),
                                              json.dumps({"i": 1}))).fetchone()
            except BaseException:
                merged.rollback()
                raise
            merged.commit()

        def floor_history(conv: str) -> None:
            with floor.transaction():
                floor.execute("SELECT set_config('app.tenant_id', %s, true)", (tid,))
                floor.execute(select, {"t": tid, "c": conv, "a": 0, "b": None, "n": PAGE + 1}).fetchall()

        def routed_append(conv: str, text: str) -> None:
            rt.store.append(rt.resolve(token, tid), conv, "user", text, {"i": 1})

        def routed_history(conv: str) -> None:
            rt.store.history(rt.resolve(token, tid), conv, limit=PAGE)

        text = "What did the quarterly report say about churn in the APAC region? " * 6  # ~400 bytes
        for _ in range(HISTORY_LEN):  # warm-up (pools, caches, plans) and the conversations history reads
            floor_append("hist-floor", text)
            routed_append("hist-routed", text)
            lean_floor_append("hist-lean", text)
            merged_floor_append("hist-merged", text)
            floor_history("hist-floor")
            routed_history("hist-routed")

        leaner = {"lean": lean_floor_append, "merged": merged_floor_append}
        if "sync" in cases or "bytecodes" in cases:
            routed_conns = list(rt.store.logins.pools[tid].idle)  # the tenant's login(s) routed appends use
            trips = {side: round_trips_per_call(conns, fn, f"trips-{side}", text) for side, fn, conns in (
                ("floor", floor_append, [floor]), ("lean floor", lean_floor_append, [floor]),
                ("merged floor", merged_floor_append, [merged]), ("routed", routed_append, routed_conns))}
            print()
            print("round trips per append (libpq protocol trace: the server's ReadyForQuery messages, 20 appends): "
                  + ", ".join(f"{side} {n:g}" for side, n in trips.items()))
        if "sync" in cases:
            sync_case(floor_append, routed_append, floor_history, routed_history, text, args, leaner)
        if "bytecodes" in cases:
            bytecodes_case(floor_append, routed_append, text, leaner)

        if "kms" in cases:
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
                for _ in range(1000):
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
        if "lowrate" in cases:
            lowrate_case(new_runtime, token, tid, text)
        if "jwt" in cases:
            jwt_case(endpoints, table, tid, floor_append, text, args.n)
        rt.close()
        floor.close()
        merged.close()
        if "async" in cases:
            import asyncio

            asyncio.run(async_case(endpoints, table, settings, token, tid, secret, text, args))
        if "shared" in cases:
            shared_case(endpoints, ws, table, text, args)


def sync_case(floor_append, routed_append, floor_history, routed_history, text: str, args,
              leaner: dict | None = None) -> None:
    """``--rounds`` rounds of ``--n`` appends and n/2 history pages per side,
    one call of each side in turn (the first side alternating): each round's
    p50 and p99, then min / median of the rounds' p50. ``leaner``: more append
    floors in the same turns, by name (the leaner floor, its statement rendered
    once as the runtime caches its own; the merged floor, that with BEGIN and
    the scope in one round trip as the runtime sends them), each one's ratio
    printed beside."""
    leaner = leaner or {}
    samples: dict[str, list[list[float]]] = {
        k: [] for k in ("floor append", "routed append", "floor history", "routed history",
                        *(f"{name} append" for name in leaner))}
    print(f"timing {args.rounds} rounds of {args.n} appends and {args.n // 2} history pages per side ...",
          file=sys.stderr)
    print()
    print(f"{'round':<6}{'operation':<10}{'floor p50':>11}{'p99':>9}{'routed p50':>12}{'p99':>9}{'ratio p50':>11}")
    for rnd in range(args.rounds):
        timings: dict[str, list[float]] = {k: [] for k in samples}

        def timed(label: str, fn, *fn_args, timings=timings) -> None:
            start = time.perf_counter()
            fn(*fn_args)
            timings[label].append(time.perf_counter() - start)

        for i in range(args.n):
            conv = f"r{rnd}-c{i // 20}"  # conversations of 20 messages
            sides = (("floor append", floor_append, "f"), ("routed append", routed_append, "r"))
            sides += tuple((f"{name} append", fn, name[0]) for name, fn in leaner.items())
            for label, fn, prefix in in_turn(sides, i + rnd):
                timed(label, fn, prefix + conv, text)
        for i in range(args.n // 2):
            pair = (("floor history", floor_history, "hist-floor"), ("routed history", routed_history, "hist-routed"))
            for label, fn, conv in in_turn(pair, i + rnd):
                timed(label, fn, conv)
        for op in ("append", "history"):
            f, r = timings[f"floor {op}"], timings[f"routed {op}"]
            samples[f"floor {op}"].append(f)
            samples[f"routed {op}"].append(r)
            print(f"{rnd + 1:<6}{op:<10}{pct(f, .5) * 1e3:9.3f}ms{pct(f, .99) * 1e3:7.2f}ms"
                  f"{pct(r, .5) * 1e3:10.3f}ms{pct(r, .99) * 1e3:7.2f}ms{pct(r, .5) / pct(f, .5):10.2f}x")
        for name in leaner:
            samples[f"{name} append"].append(timings[f"{name} append"])
    rounds_table(f"sync: p50 over {args.rounds} interleaved rounds (append: ~{len(text)} bytes of content; history: "
                 f"newest page of {PAGE} from a conversation of {HISTORY_LEN} messages)", samples,
                 ("append", "history"))
    routed = statistics.median(pct(r, .5) * 1e3 for r in samples["routed append"])
    titles = {"lean": "the leaner floor (statement rendered once, one cursor)",
              "merged": "the merged floor (the leaner one, BEGIN + scope in one query)"}
    for name in leaner:
        p50s = [pct(r, .5) * 1e3 for r in samples[f"{name} append"]]
        print(f"{'append vs ' + titles.get(name, name):<76}"
              f"{min(p50s):.3f}ms / {statistics.median(p50s):.3f}ms{routed / statistics.median(p50s):7.2f}x")


def round_trips_per_call(conns, fn, *fn_args, n: int = 20) -> float:
    """Round trips per call of ``fn`` on ``conns`` (the connections it may use):
    the server's ReadyForQuery messages in libpq's protocol trace, one per
    round trip outside pipeline mode."""
    import tempfile

    from psycopg import pq

    with tempfile.TemporaryFile(mode="w+") as out:
        for conn in conns:
            conn.pgconn.trace(out.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            for _ in range(n):
                fn(*fn_args)
        finally:
            for conn in conns:
                conn.pgconn.untrace()
        out.seek(0)
        return sum(line.split("\t")[2:3] == ["ReadyForQuery"] for line in out) / n


def bytecodes_per_call(fn, *fn_args, n: int = 100, batches: int = 5) -> tuple[float, Counter]:
    """Python bytecodes ``fn`` executes per call (``sys.settrace`` opcode
    events, deterministic where timings are noise) and per (file, function):
    the fewest of ``batches`` batches of ``n`` calls, so that a cache refresh
    falling in one batch (the registry's 30 s, the key state's 60 s) is left out."""
    counted = []
    for _ in range(batches):
        with opcodes_counted() as counts:
            for _ in range(n):
                fn(*fn_args)
        counted.append(counts)
    return per_call(counted, n)


async def async_bytecodes_per_call(fn, *fn_args, n: int = 100, batches: int = 5) -> float:
    """``bytecodes_per_call`` for a coroutine function, awaited on the running loop
    (the loop's own Python work between the awaits counted too, on both sides)."""
    counted = []
    for _ in range(batches):
        with opcodes_counted() as counts:
            for _ in range(n):
                await fn(*fn_args)
        counted.append(counts)
    return per_call(counted, n)[0]


@contextmanager
def opcodes_counted() -> Iterator[Counter]:
    """A Counter of the opcode events per (file, function) executed inside the block."""
    counts: Counter = Counter()

    def tracer(frame, event, _arg):
        if event == "call":
            frame.f_trace_opcodes, frame.f_trace_lines = True, False
        elif event == "opcode":
            counts[frame.f_code.co_filename, frame.f_code.co_name] += 1
        return tracer

    sys.settrace(tracer)
    try:
        yield counts
    finally:
        sys.settrace(None)


def per_call(counted: list[Counter], n: int) -> tuple[float, Counter]:
    """The fewest batch's bytecodes per call, in all and per (file, function)."""
    best = min(counted, key=lambda c: sum(c.values()))
    return sum(best.values()) / n, Counter({k: v / n for k, v in best.items()})


def cpu_per_call(sides: dict[str, tuple], n: int = 200, batches: int = 10) -> dict[str, list[float]]:
    """Process CPU time per call of each side (``time.process_time``: the
    client's own work and its system calls, not the wait for the database, so
    much less sensitive to a loaded machine than wall time), in ``batches``
    batches of ``n`` calls, the sides alternating batch by batch."""
    per_call: dict[str, list[float]] = {side: [] for side in sides}
    order = list(sides)
    for batch in range(batches):
        for side in in_turn(order, batch):
            fn, *fn_args = sides[side]
            start = time.process_time()
            for _ in range(n):
                fn(*fn_args)
            per_call[side].append((time.process_time() - start) / n)
    return per_call


def bytecodes_case(floor_append, routed_append, text: str, leaner: dict) -> None:
    """Client work per append, counted (bytecodes) and timed (process CPU time), both sides
    (resolve included on the routed side); and the same for the leaner floors, which the
    ratio is not taken against (see ``lean_floor_append``, ``merged_floor_append``)."""
    floor, _ = bytecodes_per_call(floor_append, "bc-floor", text)
    lean = {name: bytecodes_per_call(fn, f"bc-{name}", text)[0] for name, fn in leaner.items()}
    routed, by_function = bytecodes_per_call(routed_append, "bc-routed", text)
    print()
    print(f"Python bytecodes per append (warm, fewest of 5 batches of 100): floor {floor:,.0f}, "
          f"routed {routed:,.0f} ({routed - floor:+,.0f}, {routed / floor:.2f}x)")
    files: Counter = Counter()
    for (name, _), count in by_function.items():
        files[name.split("site-packages/")[-1].split("/src/")[-1].split("/rt/")[-1]] += count
    for name, count in files.most_common(8):
        print(f"  {count:8,.0f}  {name}")
    if os.environ.get("BENCH_FUNCTIONS"):
        for (name, fn), count in by_function.most_common(200):
            print(f"  {count:8,.1f}  {name.split('/')[-1]}:{fn}")
    cpu = cpu_per_call({"floor": (floor_append, "cpu-floor", text), "routed": (routed_append, "cpu-routed", text),
                        **{name: (fn, f"cpu-{name}", text) for name, fn in leaner.items()}})
    f, r = (sorted(cpu[side]) for side in ("floor", "routed"))
    print(f"process CPU per append (10 alternating batches of 200; min / median): floor {f[0] * 1e6:.1f} / "
          f"{statistics.median(f) * 1e6:.1f} us, routed {r[0] * 1e6:.1f} / {statistics.median(r) * 1e6:.1f} us "
          f"(extra {(r[0] - f[0]) * 1e6:+.1f} / {(statistics.median(r) - statistics.median(f)) * 1e6:+.1f} us)")
    titles = {"lean": "leaner floor (INSERT rendered once, positional, JSON text, one cursor, psycopg.Transaction)",
              "merged": "merged floor (the leaner one, BEGIN + scope in one query, autocommit connection)"}
    for name in leaner:
        lf = sorted(cpu[name])
        print(f"{titles.get(name, name)}: {lean[name]:,.0f} bytecodes (routed {routed - lean[name]:+,.0f}), "
              f"process CPU {lf[0] * 1e6:.1f} / {statistics.median(lf) * 1e6:.1f} us")


def lowrate_case(new_runtime, token: str, tid: str, text: str) -> None:
    """KMS calls per 1,000 appends at a steady rate per tenant, on a simulated clock."""
    from tenant_runtime.crypto import DataKeyCache

    print()
    print(f"{'1,000 appends at a steady rate, fresh runtime':<48}{'KMS calls':>10}{'data keys':>11}"
          f"{'key checks':>12}{'simulated s':>13}{'bound':>7}")
    for rate in (1, 10, 100):
        now = [0.0]
        cache = DataKeyCache(clock=lambda now=now: now[0])  # the runtime's defaults, on the simulated clock
        rt = new_runtime(key_cache=cache)
        ctx = rt.resolve(token, tid)
        for i in range(1000):
            rt.store.append(ctx, f"lowrate-{rate}-{i // 20}", "user", text)
            now[0] += 1 / rate
        env = rt.envelope
        # The fewest calls that keep both bounds: a data key per max_age and a
        # key-state check per recheck_after of use, from the first message to the last.
        last = 999 / rate
        bound = int(last // cache.max_age) + 1 + int(last // cache.recheck_after) + 1
        print(f"{f'{rate} message(s)/s per tenant':<48}{env.kms_calls:>10}{env.kms_calls - env.key_checks:>11}"
              f"{env.key_checks:>12}{now[0]:>13.0f}{bound:>7}")
        rt.close()
    print(f"(data key max age {cache.max_age:g} s, key state rechecked after {cache.recheck_after:g} s; bound = "
          "the fewest KMS calls any process keeping both bounds makes, with a KMS that does not refuse a disabled "
          "key's GenerateDataKey, as the sandbox's does not)")


def jwt_case(endpoints, table, tid: str, floor_append, text: str, n: int) -> None:
    """A fresh RS256 token per request, routed vs PyJWT's decode + the direct append."""
    import uuid

    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tenant_runtime import JWTSettings, TenantRuntime

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    settings = JWTSettings(key=public_pem, algorithms=("RS256",), audience="bench")
    rt = TenantRuntime(settings, table, endpoint_url=endpoints.aws_endpoint_url, region=endpoints.region)
    public = jwt.algorithms.RSAAlgorithm.from_jwk(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    print(f"jwt: signing {2 * n} RS256 tokens (outside the timing) ...", file=sys.stderr)
    tokens = [jwt.encode({"tenant_id": tid, "aud": "bench", "exp": time.time() + 3600, "jti": uuid.uuid4().hex},
                         private, "RS256") for _ in range(2 * n + 100)]

    def floor(token: str, conv: str) -> None:
        claims = jwt.decode(token, public, algorithms=["RS256"], audience="bench", options={"require": ["exp"]})
        if claims["tenant_id"] == tid:
            floor_append(conv, text)

    def routed(token: str, conv: str) -> None:
        rt.store.append(rt.resolve(token, tid), conv, "user", text, {"i": 1})

    for _ in range(50):  # warm-up: registry read, data key, pool, plans
        floor(tokens.pop(), "jwt-warm-f")
        routed(tokens.pop(), "jwt-warm-r")
    timings: dict[str, list[float]] = {"floor": [], "routed": []}
    for i in range(n):
        pair = (("floor", floor), ("routed", routed))
        for side, fn in in_turn(pair, i):
            token = tokens.pop()
            start = time.perf_counter()
            fn(token, f"jwt-{side}-{i // 20}")
            timings[side].append(time.perf_counter() - start)
    f, r = timings["floor"], timings["routed"]
    print()
    print(f"fresh RS256 token per request ({n} appends per side, alternating; verified-token cache never hits)")
    print(f"{'':<28}{'floor p50':>11}{'p99':>9}{'routed p50':>12}{'p99':>9}{'ratio p50':>11}{'p99':>7}")
    fp50, fp99, rp50, rp99 = pct(f, .5) * 1e3, pct(f, .99) * 1e3, pct(r, .5) * 1e3, pct(r, .99) * 1e3
    print(f"{'verify + append':<28}{fp50:9.2f}ms{fp99:7.2f}ms{rp50:10.2f}ms{rp99:7.2f}ms{rp50 / fp50:10.2f}x"
          f"{rp99 / fp99:6.2f}x")
    rt.close()


async def async_case(endpoints, table, settings, token, tid, secret, text, args) -> None:
    """AsyncTenantRuntime (its own login) vs an AsyncConnection as the same role."""
    import psycopg
    from psycopg.types.json import Jsonb

    from tenant_runtime.aio import AsyncTenantRuntime

    art = AsyncTenantRuntime(settings, table, endpoint_url=endpoints.aws_endpoint_url, region=endpoints.region)
    floor = await psycopg.AsyncConnection.connect(host=secret["host"], port=secret["port"], dbname=secret["dbname"],
                                                  user=secret["username"], password=secret["password"])
    ctx = await art.resolve(token, tid)
    insert, select = statements(ctx.resources.store.schema_name)

    async def floor_append(conv: str) -> None:
        async with floor.transaction():
            await floor.execute("SELECT set_config('app.tenant_id', %s, true)", (tid,))
            await (await floor.execute(insert, {"t": tid, "c": conv, "r": "user", "b": text.encode(),
                                                "m": Jsonb({"i": 1})})).fetchone()

    async def floor_history(conv: str) -> None:
        async with floor.transaction():
            await floor.execute("SELECT set_config('app.tenant_id', %s, true)", (tid,))
            await (await floor.execute(select, {"t": tid, "c": conv, "a": 0, "b": None, "n": PAGE + 1})).fetchall()

    async def routed_append(conv: str) -> None:
        await art.store.append(await art.resolve(token, tid), conv, "user", text, {"i": 1})

    async def routed_history(conv: str) -> None:
        await art.store.history(await art.resolve(token, tid), conv, limit=PAGE)

    for _ in range(HISTORY_LEN):  # warm-up, and the conversations the history reads page through
        await floor_append("async-hist-floor")
        await routed_append("async-hist-routed")
    samples: dict[str, list[list[float]]] = {f"{side} {op}": [] for side in ("floor", "routed")
                                             for op in ("append", "history")}
    per_round = max(50, args.n // args.rounds)
    print(f"async: {args.rounds} rounds of {per_round} appends and {per_round // 2} history pages per side ...",
          file=sys.stderr)
    for r in range(args.rounds):
        for op, floor_fn, routed_fn, count in (("append", floor_append, routed_append, per_round),
                                               ("history", floor_history, routed_history, per_round // 2)):
            f, g = [], []
            for i in range(count):
                pairs = ((f, floor_fn, "async-"), (g, routed_fn, "async-"))
                for bucket, fn, prefix in in_turn(pairs, r + i):
                    conv = f"{prefix}hist-{'floor' if fn is floor_fn else 'routed'}" if op == "history" \
                        else f"{prefix}c{r}-{i // 20}"
                    start = time.perf_counter()
                    await fn(conv)
                    bucket.append(time.perf_counter() - start)
            samples[f"floor {op}"].append(f)
            samples[f"routed {op}"].append(g)
    rounds_table(f"async (asyncio, one task; calls handed to the I/O pool, warm-up included: "
                 f"{art.offload.offloaded})", samples, ("append", "history"))
    floor_bc = await async_bytecodes_per_call(floor_append, "async-bc-floor")
    routed_bc = await async_bytecodes_per_call(routed_append, "async-bc-routed")
    print(f"async: Python bytecodes per append (warm, the loop's included, fewest of 5 batches of 100): "
          f"floor {floor_bc:,.0f}, routed {routed_bc:,.0f} ({routed_bc - floor_bc:+,.0f}, {routed_bc / floor_bc:.2f}x)")
    await floor.close()
    await art.aclose()


def bench_tenants(ws, endpoints, count: int) -> list[str]:
    """``count`` pooled tenants made the way the provisioning floor makes them:
    the tenant schema SQL (gateway grant included) and a registry record; one
    KMS key for all of them (their data keys still differ: one per tenant)."""
    import psycopg

    from tenant_runtime.registry import record_to_item
    from tenantctl import naming
    from tenantctl.models import StoreConnection, TenantRecord, TenantResources, TenantStatus, Tier
    from tenantctl.tenant_schema_sql import schema_script

    platform = ws.ensure_platform()
    key = ws.client("kms").create_key(Description="bench: the shared-pool tenants")["KeyMetadata"]["Arn"]
    ddb, ids = ws.client("dynamodb"), [f"pool-{i:04d}" for i in range(count)]
    with psycopg.connect(endpoints.pg_dsn(platform["db_name"]), autocommit=True) as conn:
        for tid in ids:
            role, schema = naming.db_role_name(tid), naming.schema_name(tid)
            conn.execute(schema_script(conn, tenant_id=tid, role=role, schema=schema,
                                       gateway_role=platform["gateway_role"]))
            store = StoreConnection(endpoint=platform["db_endpoint"], port=int(platform["db_port"]),
                                    database=platform["db_name"], schema_name=schema, role=role,
                                    secret_arn=f"unused:{tid}")
            resources = TenantResources(
                tenant_id=tid, tier=Tier.pooled, region=endpoints.region, store=store, kms_key_arn=key,
                kms_alias=naming.kms_alias(tid), bucket=platform["bucket"], prefix=naming.s3_prefix(tid),
                queue_url="unused", dlq_url="unused", role_arn="unused")
            ddb.put_item(TableName=platform["registry_table"], Item=record_to_item(TenantRecord(
                tenant_id=tid, tier=Tier.pooled, status=TenantStatus.active, region=endpoints.region,
                resources=resources)))
    return ids


def shared_case(endpoints, ws, table, text, args) -> None:
    """--tenants pooled tenants through the shared pool vs a gateway psycopg_pool floor."""
    import json
    import threading

    import jwt
    import psycopg
    from psycopg.types.json import Jsonb
    from psycopg_pool import ConnectionPool

    from tenant_runtime import Gateway, JWTSettings, TenantRuntime
    from tenant_runtime.crypto import DataKeyCache
    from tenantctl import naming

    print(f"shared: making {args.tenants} pooled tenants ...", file=sys.stderr)
    ids = bench_tenants(ws, endpoints, args.tenants)
    platform = ws.platform_outputs()
    settings = JWTSettings(key=JWT_KEY, algorithms=("HS256",))
    tokens = {tid: jwt.encode({"tenant_id": tid, "exp": time.time() + 7200}, JWT_KEY, "HS256") for tid in ids}
    rt = TenantRuntime(settings, table, endpoint_url=endpoints.aws_endpoint_url, region=endpoints.region,
                       gateway=Gateway(secret_arn=platform["gateway_secret_arn"], max_size=args.pool),
                       key_cache=DataKeyCache(max_entries=2 * args.tenants))
    gw = json.loads(ws.client("secretsmanager").get_secret_value(
        SecretId=platform["gateway_secret_arn"])["SecretString"])
    login = {"host": gw["host"], "port": gw["port"], "dbname": gw["dbname"], "user": gw["username"],
             "password": gw["password"], "prepare_threshold": None}
    floor = ConnectionPool(kwargs={**login, "application_name": "bench_floor"}, min_size=args.pool,
                           max_size=args.pool)
    # The floor again with the check the runtime's pool runs on every checkout: what that round trip costs.
    checked = ConnectionPool(kwargs={**login, "application_name": "bench_checked"}, min_size=args.pool,
                             max_size=args.pool, check=ConnectionPool.check_connection)
    statements_of = {tid: statements(naming.schema_name(tid))[0] for tid in ids}

    def pool_append(pool: ConnectionPool, tid: str, conv: str) -> None:
        with pool.connection() as conn, conn.transaction():
            conn.execute("SELECT set_config('role', %s, true), set_config('app.tenant_id', %s, true)",
                         (naming.db_role_name(tid), tid))
            conn.execute(statements_of[tid], {"t": tid, "c": conv, "r": "user", "b": text.encode(),
                                              "m": Jsonb({"i": 1})}).fetchone()

    def floor_append(tid: str, conv: str) -> None:
        pool_append(floor, tid, conv)

    def checked_append(tid: str, conv: str) -> None:
        pool_append(checked, tid, conv)

    def routed_append(tid: str, conv: str) -> None:
        rt.store.append(rt.resolve(tokens[tid], tid), conv, "user", text, {"i": 1})

    held: dict[str, int] = {"routed": 0, "floor": 0, "checked": 0}
    names = {"routed": "tenant_runtime_gateway", "floor": "bench_floor", "checked": "bench_checked"}

    def run(side: str, fn, ops_per_thread: int, offset: int) -> list[float]:
        latencies: list[float] = []
        lock = threading.Lock()

        def worker(w: int) -> None:
            mine = []
            for i in range(ops_per_thread):
                tid = ids[(offset + w * ops_per_thread + i) % len(ids)]
                start = time.perf_counter()
                fn(tid, f"c{i % 5}")
                mine.append(time.perf_counter() - start)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.threads)]
        for t in threads:
            t.start()
        with psycopg.connect(endpoints.pg_dsn(), autocommit=True) as admin:
            while any(t.is_alive() for t in threads):
                n = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                  (names[side],)).fetchone()[0]
                held[side] = max(held[side], n)
                time.sleep(0.05)
        return latencies

    print("shared: warm-up (every tenant once: registry read, data key) ...", file=sys.stderr)
    per_thread = -(-len(ids) // args.threads)
    run("routed", routed_append, per_thread, 0)
    run("floor", floor_append, per_thread, 0)
    run("checked", checked_append, per_thread, 0)
    samples: dict[str, list[list[float]]] = {"floor append": [], "routed append": [], "checked append": []}
    per_round = max(1, args.n // args.rounds // args.threads)
    print(f"shared: {args.rounds} rounds x {args.threads} threads x {per_round} appends per side ...", file=sys.stderr)
    for r in range(args.rounds):
        order = (("floor", floor_append), ("checked", checked_append), ("routed", routed_append))
        for side, fn in in_turn(order, r):
            samples[f"{side} append"].append(run(side, fn, per_round, r * 7919))
    rounds_table(f"shared pool: {len(ids)} pooled tenants active in one process, {args.threads} threads, "
                 f"pool of {args.pool}", samples, ("append",))
    p50s = {side: [pct(r, .5) * 1e3 for r in samples[f"{side} append"]] for side in ("floor", "checked")}
    floor_p50, checked_p50 = (statistics.median(p50s[side]) for side in ("floor", "checked"))
    print(f"the floor with the checkout check: p50 min {min(p50s['checked']):.3f} ms, median {checked_p50:.3f} ms: "
          f"{checked_p50 - floor_p50:+.3f} ms over the floor's median")
    print(f"connections held (max seen in pg_stat_activity): routed {held['routed']}, floor {held['floor']} "
          f"(per-tenant logins: at least one per active tenant, {len(ids)}; "
          f"the sandbox allows max_connections=200)")
    rt.close()
    floor.close()
    checked.close()


if __name__ == "__main__":
    main()
