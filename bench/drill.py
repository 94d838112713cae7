"""Backup and restore throughput of `tenantctl drill` against plain pg_dump /
pg_restore of the same schema, per compression method, measured in the same
run on a fresh sandbox.

    python bench/drill.py                      # a few hundred MB of rows (default 300), 3 rounds
    python bench/drill.py --mb 20 --rounds 3   # quick run

The tenant is made by the real provision operation (LocalEngine on a sandbox
of its own, in a temporary directory), its schema filled with message rows.
Ours: pg_dump (custom format, ``--compress`` as `drill backup --compress`)
streamed through AES-GCM envelope encryption into an S3 multipart upload (moto
server), and back: S3 -> decrypt -> pg_restore into a scratch database. Floors:
pg_dump -Fc to a local file (default gzip) and pg_dump -Fc -Z0 (none), plus
lz4 when this pg_dump has it, then pg_restore -d from that file; for zstd,
which tenantctl applies to the dump's stream itself, pg_dump -Fc -Z0 through
the drill's own zstd compressor (same level and threads) into the file, and
back through zstandard's decompressor into pg_restore.
Every method's four runs (floor dump, drill backup, floor restore, drill
restore) repeat ``--rounds`` times, floor and drill alternating first; min
and median per run. Message content is random (ciphertext in real life), so
compression does not flatter either side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

from common import bench_sandbox, in_turn, timed

ROW_BYTES = 4096
TENANT = "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="MB of message rows to load (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every method, both sides (default 3)")
    args = parser.parse_args()

    import psycopg
    import zstandard
    from psycopg import sql

    from tenantctl.drills.backup import backup
    from tenantctl.drills.compression import Compression, supported
    from tenantctl.drills.context import context_from_workspace
    from tenantctl.drills.pgtools import find_tools, pg_env
    from tenantctl.drills.restore import cleanup, restore
    from tenantctl.drills.tables import server_major
    from tenantctl.drills.verify import verify
    from tenantctl.models import TenantSpec
    from tenantctl.operations.provision import provision

    with bench_sandbox("drill") as (endpoints, ws, project):
        print("provisioning tenant 'bench' (LocalEngine) ...", file=sys.stderr)
        record, _ = provision(ws, TenantSpec(id=TENANT))
        res = record.resources
        store = res.store
        ctx = context_from_workspace(ws)

        rows = args.mb * 1024 * 1024 // ROW_BYTES
        print(f"loading {rows} messages of {ROW_BYTES} random bytes (~{args.mb} MB) ...", file=sys.stderr)
        admin = psycopg.connect(host=store.endpoint, port=store.port, dbname=store.database, user=ctx.admin_user,
                                password=ctx.admin_password, autocommit=True)
        with admin.transaction():
            admin.execute("SELECT set_config('app.tenant_id', %s, true)", (TENANT,))
            admin.execute(sql.SQL("INSERT INTO {} (tenant_id, conversation_id) VALUES (%s, 'c')").format(
                sql.Identifier(store.schema_name, "conversations")), (TENANT,))
            with admin.cursor().copy(sql.SQL("COPY {} (tenant_id, conversation_id, role, content) FROM STDIN")
                                     .format(sql.Identifier(store.schema_name, "messages"))) as copy:
                for _ in range(rows):
                    copy.write_row((TENANT, "c", "user", os.urandom(ROW_BYTES)))
        admin.execute("CHECKPOINT")
        for i in range(20):
            ctx.s3.put_object(Bucket=res.bucket, Key=f"{res.prefix}uploads/{i}", Body=os.urandom(64 * 1024))

        tools = find_tools(server_major(admin), ctx.pg_bin_dir)
        env = pg_env(ctx.admin_user, ctx.admin_password, TENANT)
        host, port = store.endpoint, str(store.port)
        methods = supported(tools)
        dump_file = project / "plain.dump"

        def floor_dump(method: str) -> None:
            compression = Compression.parse(method)
            cmd = [str(tools / "pg_dump"), "-Fc", *(["--compress=0"] if compression.streamed else
                                                   compression.pg_dump_args()),
                   f"--schema={store.schema_name}", "-h", host, "-p", port, "-d", store.database]
            if not compression.streamed:
                subprocess.run([*cmd, "-f", str(dump_file)], env=env, check=True)
                return
            with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE) as proc, dump_file.open("wb") as out:
                compressed = compression.compressing(proc.stdout)  # the drill's own compressor and settings
                while chunk := compressed.read(1 << 20):
                    out.write(chunk)
            assert proc.returncode == 0

        def floor_restore(method: str) -> None:
            admin.execute("CREATE DATABASE bench_plain")
            cmd = [str(tools / "pg_restore"), "--no-owner", "--no-acl", "--exit-on-error",
                   "--single-transaction", "-h", host, "-p", port, "-d", "bench_plain"]
            try:
                if not Compression.parse(method).streamed:
                    subprocess.run([*cmd, str(dump_file)], env=env, check=True)
                    return
                with dump_file.open("rb") as src, subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE) as proc:
                    zstandard.ZstdDecompressor().copy_stream(src, proc.stdin)
                    proc.stdin.close()
                assert proc.returncode == 0
            finally:
                admin.execute("DROP DATABASE bench_plain WITH (FORCE)")

        times: dict[tuple[str, str], list[float]] = {}
        sizes: dict[str, tuple[int, int]] = {}
        failed: list[str] = []
        print(f"{args.rounds} rounds of {', '.join(methods)} (this pg_dump's methods) ...", file=sys.stderr)
        def ours(method: str) -> None:
            manifest, secs = timed(lambda: backup(ctx, record, compression=Compression(method)))
            times.setdefault(("drill backup", method), []).append(secs)
            result, secs = timed(lambda: restore(ctx, record, manifest))
            times.setdefault(("drill restore (scratch)", method), []).append(secs)
            failed.extend(c.name for c in verify(ctx, record, manifest, result) if not c.ok)  # reported, not timed
            cleanup(ctx, record, result)
            sizes[method] = (manifest.dump.plaintext_bytes, sizes.get(method, (0, 0))[1])

        def plain(method: str) -> None:
            times.setdefault(("pg_dump -Fc (floor)", method), []).append(timed(lambda: floor_dump(method))[1])
            sizes[method] = (sizes.get(method, (0, 0))[0], dump_file.stat().st_size)
            times.setdefault(("pg_restore (floor)", method), []).append(timed(lambda: floor_restore(method))[1])

        for r in range(args.rounds):
            for method in methods:
                for side in in_turn((plain, ours), r):
                    side(method)
        dump_file.unlink()
        admin.close()

        print(f"verification {'FAILED: ' + ', '.join(sorted(set(failed))) if failed else 'passed'} "
              f"({args.rounds * len(methods)} restores); rows: ~{args.mb} MB of random bytes")
        for method in methods:
            ours_bytes, plain_bytes = sizes[method]
            print(f"{method}: drill dump {ours_bytes / 2**20:.1f} MiB, pg_dump file {plain_bytes / 2**20:.1f} MiB "
                  "(bytea goes out as hex: uncompressed, random rows take twice their size)")
        print(f"{'':26}{'method':>8}{'min s':>8}{'median s':>10}{'rows MiB/s':>11}{'x floor (min/median)':>24}")
        for step, floor_step in (("drill backup", "pg_dump -Fc (floor)"),
                                 ("drill restore (scratch)", "pg_restore (floor)")):
            for method in methods:
                for name in (floor_step, step):
                    secs, floor = times[(name, method)], times[(floor_step, method)]
                    print(f"{name:26}{method:>8}{min(secs):8.2f}{statistics.median(secs):10.2f}"
                          f"{args.mb / statistics.median(secs):11.1f}{min(secs) / min(floor):13.2f} / "
                          f"{statistics.median(secs) / statistics.median(floor):.2f}")
        for other in (m for m in ("none", "zstd") if m in methods):
            for step in ("drill backup", "drill restore (scratch)"):
                gzip, then = (statistics.median(times[(step, m)]) for m in ("gzip", other))
                print(f"{step}: --compress {other} / gzip (median time): {then / gzip:.2f}x")


if __name__ == "__main__":
    main()
