"""Tenants for the drill tests, built from real parts on the sandbox.

``make_tenant`` stands in for provisioning (KMS key, versioned shared-bucket
prefix, context-store schema from the real SQL template, registry record) and
``retire_tenant`` for deprovisioning (schema and role dropped, key scheduled for
deletion, tombstone with retain_until), doing exactly what
tenantctl.operations.provision / deprovision leave behind; once the LocalEngine
provisions end to end they become calls to those operations.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import boto3
import psycopg
from psycopg import sql

from tenantctl import naming
from tenantctl.drills.context import DrillContext
from tenantctl.models import StoreConnection, TenantRecord, TenantResources, TenantSpec, Tier
from tenantctl.registry import RegistryWriter
from tenantctl.templates import render


@dataclass
class DrillEnv:
    s3: object
    kms: object
    registry: RegistryWriter
    ctx: DrillContext
    admin: dict
    bucket: str
    run: str

    def admin_conn(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(dbname=dbname, autocommit=True, **self.admin)


def open_env(sandbox) -> DrillEnv:
    def client(name):
        return boto3.client(name, endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)

    run = uuid.uuid4().hex[:6]
    info = psycopg.conninfo.conninfo_to_dict(sandbox.postgres_dsn)
    admin = {"host": info.get("host") or "127.0.0.1", "port": int(info.get("port") or 5432),
             "user": info.get("user") or "postgres", "password": info.get("password") or ""}
    dynamodb = client("dynamodb")
    table = f"drill-registry-{run}"
    dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                          AttributeDefinitions=[{"AttributeName": "tenant_id", "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": "tenant_id", "KeyType": "HASH"}])
    s3, kms = client("s3"), client("kms")
    bucket = f"drill-shared-{run}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    registry = RegistryWriter(table, client=dynamodb)
    ctx = DrillContext(s3=s3, kms=kms, admin_user=admin["user"], admin_password=admin["password"],
                       registry=registry, pg_bin_dir=getattr(sandbox, "pg_bin_dir", None), is_sandbox=True)
    return DrillEnv(s3=s3, kms=kms, registry=registry, ctx=ctx, admin=admin, bucket=bucket, run=run)


def apply_schema(conn: psycopg.Connection, tenant_id: str) -> None:
    role = naming.db_role_name(tenant_id)
    conn.execute(render("tenant_schema.sql.j2", role=sql.Identifier(role).as_string(conn),
                        role_literal=sql.Literal(role).as_string(conn),
                        schema=sql.Identifier(naming.schema_name(tenant_id)).as_string(conn),
                        tenant_literal=sql.Literal(tenant_id).as_string(conn)))


def make_tenant(env: DrillEnv, tenant_id: str, tier: Tier = Tier.pooled) -> TenantRecord:
    key = env.kms.create_key(Description=f"drill test {tenant_id}")["KeyMetadata"]
    database = naming.database_name(tenant_id) if tier is Tier.dedicated else "postgres"
    if tier is Tier.dedicated:
        with env.admin_conn() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    with env.admin_conn(database) as conn:
        apply_schema(conn, tenant_id)
    store = StoreConnection(endpoint=env.admin["host"], port=env.admin["port"], database=database,
                            schema_name=naming.schema_name(tenant_id), role=naming.db_role_name(tenant_id),
                            secret_arn=f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{naming.secret_name(tenant_id)}")
    resources = TenantResources(
        tenant_id=tenant_id, tier=tier, region="us-east-1", store=store, kms_key_arn=key["Arn"],
        kms_alias=naming.kms_alias(tenant_id), bucket=env.bucket, prefix=naming.s3_prefix(tenant_id),
        queue_url=f"https://sqs/{naming.queue_name(tenant_id)}", dlq_url=f"https://sqs/{naming.dlq_name(tenant_id)}",
        role_arn=f"arn:aws:iam::123456789012:role/{naming.iam_role_name(tenant_id)}",
    )
    spec = TenantSpec(id=tenant_id, tier=tier)
    held = env.registry.acquire(spec, "provision")
    return env.registry.mark_active(held, resources, spec, "test", "h")


def write_history(env: DrillEnv, record: TenantRecord, conversations: int = 3, messages: int = 5,
                  objects: int = 4) -> None:
    """Conversation history through the tenant role (RLS on), and objects, some overwritten."""
    res = record.resources
    schema = res.store.schema_name
    with env.admin_conn(res.store.database) as conn, conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(res.store.role)))
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (record.tenant_id,))
        for c in range(conversations):
            conn.execute(sql.SQL("INSERT INTO {} (conversation_id) VALUES (%s)").format(
                sql.Identifier(schema, "conversations")), (f"c{c}",))
            for m in range(messages):
                conn.execute(sql.SQL("INSERT INTO {} (conversation_id, role, content, metadata) "
                                     "VALUES (%s, 'user', %s, %s)").format(sql.Identifier(schema, "messages")),
                             (f"c{c}", uuid.uuid4().bytes * 8, psycopg.types.json.Jsonb({"n": m})))
        conn.execute(sql.SQL("INSERT INTO {} (item_id, kind, content) VALUES ('doc', 'doc', %s)").format(
            sql.Identifier(schema, "context_items")), (b"context" * 50,))
    for i in range(objects):
        env.s3.put_object(Bucket=res.bucket, Key=f"{res.prefix}uploads/{i}.txt", Body=f"v1 {i}".encode() * 100)
    for i in range(min(2, objects)):  # a newer version: the manifest must point at it
        env.s3.put_object(Bucket=res.bucket, Key=f"{res.prefix}uploads/{i}.txt", Body=f"v2 {i}".encode() * 90)


def rows(env: DrillEnv, database: str, schema: str) -> dict[str, list[tuple]]:
    """Every row of every context-store table, sorted: the direct comparison."""
    out = {}
    with env.admin_conn(database) as conn:
        for table, order in (("conversations", "conversation_id"), ("messages", "conversation_id, seq"),
                             ("context_items", "item_id")):
            out[table] = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY " + order).format(
                sql.Identifier(schema, table))).fetchall()
    return out


def retire_tenant(env: DrillEnv, record: TenantRecord, retention_days: int = 14) -> TenantRecord:
    """What deprovision (without --purge-data) leaves: objects kept, schema and
    role dropped, key pending deletion, a tombstone with retain_until."""
    res = record.resources
    with env.admin_conn(res.store.database) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(res.store.schema_name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(res.store.role)))
    env.kms.schedule_key_deletion(KeyId=res.kms_key_arn.rsplit("/", 1)[-1], PendingWindowInDays=7)
    held = env.registry.lock_for(record.tenant_id, "deprovision")
    return env.registry.mark_deprovisioned(held, retention_days)


def drop_tenant(env: DrillEnv, record: TenantRecord) -> None:
    store = record.resources.store
    with env.admin_conn() as conn:
        if record.tier is Tier.dedicated:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(store.database)))
    with env.admin_conn(store.database if record.tier is Tier.pooled else "postgres") as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(store.schema_name)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(store.role)))


def scratch_databases(env: DrillEnv) -> list[str]:
    with env.admin_conn() as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'drill\\_%'")]
