"""`tenantctl move` of a tenant with N MB of context rows, pooled -> dedicated
and back, while a writer appends through the runtime throughout.

    python bench/move.py                 # 10 and 100 MB
    python bench/move.py --mb 10 100 1000
    python bench/move.py --cells --objects 500   # pooled, to a second cell of the region and back
    python bench/move.py --regions --objects 500 # pooled, to a cell of another region (new key) and back

Per size and direction: the total time of the move (prepare + copy + freeze +
switch), the initial copy, the write freeze as the move recorded it (from the
freezing phase being written to the switch) and as the writer saw it (the
longest run of refused writes: 503 / StoreMoved, retried every 20 ms), and the
freeze as a fraction of the copy time: the floor an offline move (freeze for
the whole copy) cannot go below is 1.0. Every acknowledged write is checked to
be in the final store. ``--cells``: the tenant stays pooled and moves to a
second cell of the same account and region (added by the bench) and back,
with ``--objects`` objects under its prefix copied between the cells' buckets.
``--regions``: the same, to a cell of another region (eu-central-1, added by
the bench, within the tenant's residency) and back: the tenant built again
under a new key each way, its rows (sealed, as the runtime seals them)
relayed and re-wrapped.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from common import bench_sandbox

ROW_BYTES = 4096
OTHER_REGION = "eu-central-1"


class Writer(threading.Thread):
    def __init__(self, runtime, tenant_id: str) -> None:
        super().__init__(daemon=True)
        self.runtime, self.tenant_id = runtime, tenant_id
        self.acked: list[int] = []
        self.refused_since: float | None = None
        self.longest_refusal = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        from tenant_runtime.errors import StoreUnavailable, WritesFrozen

        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                msg = self.runtime.store.append(self.runtime.context(self.tenant_id), "live", "user", f"w{n}")
            except (WritesFrozen, StoreUnavailable):
                self.refused_since = self.refused_since or time.monotonic()
                time.sleep(0.02)
                continue
            if self.refused_since is not None:
                self.longest_refusal = max(self.longest_refusal, time.monotonic() - self.refused_since)
                self.refused_since = None
            self.acked.append(msg.seq)
            time.sleep(0.01)


def load(ws, record, mb: int, sealed: bool = False) -> None:
    """``mb`` of message rows; ``sealed``: each under the tenant's key, as the
    runtime seals them (a move to another key opens every one)."""
    load_rows(ws, record, mb * 1024 * 1024 // ROW_BYTES, sealed)


def load_rows(ws, record, rows: int, sealed: bool = False) -> None:
    """``rows`` message rows of ROW_BYTES in one conversation (see ``load``)."""
    import psycopg
    from psycopg import sql

    from tenant_runtime.crypto import Envelope
    from tenantctl.drills.context import context_from_workspace

    ctx, store = context_from_workspace(ws), record.resources.store
    kms, envelope = ws.clients_for(record)("kms"), Envelope(lambda _ctx: None)

    def content() -> bytes:
        if not sealed:
            return os.urandom(ROW_BYTES)
        return envelope.seal(lambda: kms, record.tenant_id, record.resources.kms_key_arn, "bulk",
                             os.urandom(ROW_BYTES))

    with psycopg.connect(host=store.endpoint, port=store.port, dbname=store.database, user=ctx.admin_user,
                         password=ctx.admin_password, autocommit=True) as admin, admin.transaction():
        admin.execute("SELECT set_config('app.tenant_id', %s, true)", (record.tenant_id,))
        admin.execute(sql.SQL("INSERT INTO {} (tenant_id, conversation_id) VALUES (%s, 'bulk')").format(
            sql.Identifier(store.schema_name, "conversations")), (record.tenant_id,))
        with admin.cursor().copy(sql.SQL("COPY {} (tenant_id, conversation_id, role, content) FROM STDIN")
                                 .format(sql.Identifier(store.schema_name, "messages"))) as copy:
            for _ in range(rows):
                copy.write_row((record.tenant_id, "bulk", "user", content()))


def put_objects(ws, record, n: int) -> None:
    """``n`` small objects under the tenant's prefix, SSE-KMS under its key, as the runtime writes them."""
    s3, res = ws.clients_for(record)("s3"), record.resources
    for i in range(n):
        s3.put_object(Bucket=res.bucket, Key=f"{res.prefix}documents/bench-{i}", Body=os.urandom(1024),
                      ServerSideEncryption="aws:kms", SSEKMSKeyId=res.kms_key_arn)


def stored_seqs(ws, record) -> set[int]:
    import psycopg

    from tenantctl.drills.context import context_from_workspace

    ctx, store = context_from_workspace(ws), record.resources.store
    with psycopg.connect(host=store.endpoint, port=store.port, dbname=store.database, user=ctx.admin_user,
                         password=ctx.admin_password, autocommit=True) as conn:
        return {r[0] for r in conn.execute(f'SELECT seq FROM "{store.schema_name}".messages '
                                           "WHERE conversation_id = 'live'")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, nargs="+", default=[10, 100], help="MB of message rows (default 10 100)")
    parser.add_argument("--cells", action="store_true", help="move between two cells of the region, not tiers")
    parser.add_argument("--regions", action="store_true", help="move to a cell of another region (a new key) and "
                                                                   "back, not tiers")
    parser.add_argument("--objects", type=int, default=200, help="with --cells/--regions: objects under the prefix")
    args = parser.parse_args()

    from tenant_runtime import JWTSettings, TenantRuntime
    from tenantctl.models import TenantSpec, Tier
    from tenantctl.operations.move import move
    from tenantctl.operations.provision import provision

    with bench_sandbox("move") as (endpoints, ws, _project):
        table = ws.ensure_platform()["registry_table"]
        runtime = TenantRuntime(JWTSettings(key="x" * 32, algorithms=("HS256",)), table, registry_ttl=1.0,
                                endpoint_url=endpoints.aws_endpoint_url, region=endpoints.region)
        moves: list[dict] = [{"tier": Tier.dedicated}, {"tier": Tier.pooled}]
        if args.cells:
            from tenantctl.operations import cell as cells

            cells.add(ws, "benchb", {"region": endpoints.region, "max_pooled_tenants": 100})
            moves = [{"cell": "benchb"}, {"cell": "default"}]
        residency = [endpoints.region, OTHER_REGION] if args.regions else []
        if args.regions:
            from tenantctl.operations import cell as cells

            cells.add(ws, "benchr", {"region": OTHER_REGION, "max_pooled_tenants": 100})
            moves = [{"cell": "benchr"}, {"cell": "default"}]
        across = args.cells or args.regions
        print("| MB | move | total s | copy s | freeze s (recorded) | longest refused run s (writer) "
              "| freeze / copy | writes acked |")
        print("|---|---|---|---|---|---|---|---|")
        for mb in args.mb:
            tid = f"bench-{mb}"
            print(f"provisioning {tid} and loading {mb} MB ...", file=sys.stderr)
            record, _ = provision(ws, TenantSpec(id=tid, cell="default" if across else None, residency=residency))
            load(ws, record, mb, sealed=args.regions)
            if across:
                put_objects(ws, record, args.objects)
            writer = Writer(runtime, tid)
            writer.start()
            for target in moves:
                start = time.perf_counter()
                result = move(ws, tid, **target, progress=lambda line: print(line, file=sys.stderr))
                total = time.perf_counter() - start
                time.sleep(1.5)  # writes on the new store
                move(ws, tid, finalize=True)
                what = (f"cell {result.from_cell} -> {result.to_cell}, {result.objects_copied} objects"
                        if across else f"{result.from_tier.value} -> {result.to_tier.value}")
                print(f"| {mb} | {what} | {total:.1f} "
                      f"| {result.copy_seconds:.1f} | {result.freeze_seconds:.2f} | {writer.longest_refusal:.2f} "
                      f"| {result.freeze_seconds / result.copy_seconds:.3f} | {len(writer.acked)} |", flush=True)
                writer.longest_refusal = 0.0
            writer.stop.set()
            writer.join(10)
            missing = set(writer.acked) - stored_seqs(ws, ws.registry.require(tid))
            print(f"{tid}: {len(writer.acked)} acknowledged writes, {len(missing)} missing from the final store",
                  file=sys.stderr)
            if missing:
                sys.exit(1)
        runtime.close()


if __name__ == "__main__":
    main()
