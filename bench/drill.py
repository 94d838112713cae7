"""Backup and restore throughput of `tenantctl drill` against plain pg_dump /
pg_restore of the same schema, measured in the same run on a fresh sandbox.

    python bench/drill.py            # a few hundred MB of rows (default 300)
    python bench/drill.py --mb 20    # quick run

The tenant is made by the real provision operation (LocalEngine on a sandbox
of its own, in a temporary directory), its schema filled with message rows.
Ours: pg_dump (custom format) streamed through AES-GCM envelope encryption
into an S3 multipart upload (moto server), and back: S3 -> decrypt ->
pg_restore into a scratch database. Baseline: pg_dump -Fc to a local file,
pg_restore -d from that file. Message content is random (ciphertext in real
life), so compression does not flatter either side.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from common import bench_sandbox, timed

ROW_BYTES = 4096
TENANT = "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="MB of message rows to load (default 300)")
    args = parser.parse_args()

    import psycopg
    from psycopg import sql

    from tenantctl.drills.backup import backup
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

        # Baseline: plain pg_dump -Fc of the schema to a file, pg_restore into a fresh database.
        dump_file = project / "plain.dump"
        _, base_dump = timed(lambda: subprocess.run(
            [str(tools / "pg_dump"), "-Fc", f"--schema={store.schema_name}", "-h", host, "-p", port,
             "-d", store.database, "-f", str(dump_file)], env=env, check=True))
        admin.execute("CREATE DATABASE bench_plain")
        _, base_restore = timed(lambda: subprocess.run(
            [str(tools / "pg_restore"), "--no-owner", "--no-acl", "--exit-on-error", "--single-transaction",
             "-h", host, "-p", port, "-d", "bench_plain", str(dump_file)], env=env, check=True))
        admin.execute("DROP DATABASE bench_plain WITH (FORCE)")
        dump_file.unlink()

        # Ours: the drill's backup and (scratch) restore; verification is reported, not timed.
        manifest, ours_dump = timed(lambda: backup(ctx, record))
        result, ours_restore = timed(lambda: restore(ctx, record, manifest))
        checks, verify_secs = timed(lambda: verify(ctx, record, manifest, result))
        cleanup(ctx, record, result)
        admin.close()

        mb = manifest.dump.plaintext_bytes / 1024 / 1024
        print(f"dump size: {mb:.1f} MiB plaintext, {manifest.dump.stored_bytes / 1024 / 1024:.1f} MiB stored "
              f"encrypted; verification {'passed' if all(c.ok for c in checks) else 'FAILED'} "
              f"({len(checks)} checks, {verify_secs:.2f} s)")
        print(f"{'':28}{'seconds':>9}{'MiB/s':>9}")
        for name, secs in (("pg_dump -Fc (baseline)", base_dump), ("drill backup", ours_dump),
                           ("pg_restore (baseline)", base_restore), ("drill restore (scratch)", ours_restore)):
            print(f"{name:28}{secs:9.2f}{mb / secs:9.1f}")
        print(f"backup  throughput ratio (drill / plain): {base_dump / ours_dump:.2f}x  "
              f"(time overhead {ours_dump / base_dump:.2f}x)")
        print(f"restore throughput ratio (drill / plain): {base_restore / ours_restore:.2f}x  "
              f"(time overhead {ours_restore / base_restore:.2f}x)")


if __name__ == "__main__":
    main()
