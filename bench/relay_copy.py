"""Rows/s of the row relay (``tenantctl.transfer.row_relay``, a move to another key):
its initial ``copy`` and a ``catch_up`` of changed rows, on the sandbox.

    python bench/relay_copy.py                          # 20,000 and 100,000 message rows
    python bench/relay_copy.py --rows 20000 --profile   # and where the time goes (cProfile)
    git show fixes:src/tenantctl/transfer/row_relay.py > /tmp/before.py
    python bench/relay_copy.py --before /tmp/before.py  # that relay too, interleaved with this one

Per size, one tenant with ``--rows`` sealed messages of 4 KB (as
bench/move.py loads them); per relay, a fresh target schema beside the
source's (same database, the source's tables ``LIKE ... INCLUDING ALL``),
the capture installed, the copy timed, then ``--changed`` of the rows updated
(each a changelog entry) and the catch-up timed. The re-wrap is the move's
``Rewrapper`` (KMS per data key, each blob re-sealed locally), from the
tenant's key to itself.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import pstats
import sys
import time
from types import ModuleType

from common import bench_sandbox, in_turn
from move import load_rows


def module_at(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("row_relay_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(fn, profile: bool) -> tuple[int, float, str]:
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    value = fn()
    seconds = time.perf_counter() - start
    report = ""
    if profiler is not None:
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
        report = out.getvalue()
    return value, seconds, report


def run(relay_module: ModuleType, src, dst, source, target, rewrap, changed: int, profile: bool) -> dict:
    from psycopg import sql

    from tenant_runtime.tables import TABLES

    dst.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema_name)))
    dst.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(target.schema_name)))
    for table in TABLES:
        dst.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
            sql.Identifier(target.schema_name, table), sql.Identifier(source.schema_name, table)))
    relay_module.install(src, source)
    try:
        relay = relay_module.Relay(src, source, dst, target, rewrap)
        rows, copy_s, copy_profile = timed(relay.copy, profile)
        src.execute(sql.SQL("UPDATE {} SET role = role WHERE seq IN (SELECT seq FROM {} ORDER BY random() LIMIT %s)")
                    .format(*[sql.Identifier(source.schema_name, "messages")] * 2), (changed,))
        keys, catch_s, catch_profile = timed(relay.catch_up, profile)
    finally:
        relay_module.remove(src, source)
    return {"rows": rows, "copy_s": copy_s, "keys": keys, "catch_s": catch_s,
            "profile": copy_profile + catch_profile}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--changed", type=int, default=2_000, help="rows changed before the catch-up")
    parser.add_argument("--before", help="another row_relay.py to measure interleaved with this one")
    parser.add_argument("--profile", action="store_true", help="cProfile each copy and catch-up (slower)")
    args = parser.parse_args()

    import psycopg

    from tenantctl.models import TenantSpec
    from tenantctl.operations.provision import provision
    from tenantctl.transfer import row_relay
    from tenantctl.transfer.rewrap import KmsKey, Rewrapper

    relays = [("this", row_relay)] + ([("before", module_at(args.before))] if args.before else [])
    with bench_sandbox("relay") as (endpoints, ws, _project):
        ws.ensure_platform()
        print("| rows | relay | copy s | copy rows/s | catch-up keys | catch-up s | catch-up keys/s |")
        print("|---|---|---|---|---|---|---|")
        for i, n in enumerate(args.rows):
            tid = f"relay-{n}"
            print(f"provisioning {tid} and loading {n} rows ...", file=sys.stderr)
            record, _ = provision(ws, TenantSpec(id=tid))
            load_rows(ws, record, n, sealed=True)
            source = record.resources.store
            target = source.model_copy(update={"schema_name": f"{source.schema_name}_relay"})
            key = KmsKey(ws.clients_for(record)("kms"), record.resources.kms_key_arn)
            dsn = endpoints.pg_dsn(source.database)
            with psycopg.connect(dsn, autocommit=True) as src, psycopg.connect(dsn, autocommit=True) as dst:
                for name, module in in_turn(relays, i):
                    rewrap = Rewrapper(tid, key, key).rewrap_column
                    r = run(module, src, dst, source, target, rewrap, args.changed, args.profile)
                    print(f"| {n} | {name} | {r['copy_s']:.1f} | {r['rows'] / r['copy_s']:.0f} | {r['keys']} "
                          f"| {r['catch_s']:.2f} | {r['keys'] / max(r['catch_s'], 1e-9):.0f} |", flush=True)
                    if args.profile:
                        print(r["profile"], file=sys.stderr)


if __name__ == "__main__":
    main()
