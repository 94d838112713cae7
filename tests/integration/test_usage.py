"""Usage on the sandbox: tenants carrying different amounts of data, measured by
tenantctl.usage, must match what was written and what direct counts say.

Tenants are set up in two steps so the first can later become
`tenantctl.operations.provision`: ``provision_slice`` creates a tenant's
resources (shared versioned bucket prefix, queue + DLQ, KMS key, context-store
schema from the real SQL template) and returns its TenantRecord;
``write_load`` then writes data through nothing but that record.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta

import boto3
import psycopg
import pytest
from psycopg import sql

from tenantctl import naming
from tenantctl.cost import load_prices
from tenantctl.models import (
    PlatformSpec, StoreConnection, TenantRecord, TenantResources, TenantSpec, TenantStatus, Tier, utcnow,
)
from tenantctl.registry import RegistryWriter
from tenantctl.report import build_report, latest_drill_verdicts, render_html
from tenantctl.templates import render
from tenantctl.usage import UsageClients, admin_connector, measure, measure_all

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class Load:
    """What a test tenant carries."""

    objects: int = 0
    object_size: int = 0
    overwritten: int = 0          # objects written twice: one noncurrent version each
    glacier: int = 0              # extra objects stored as GLACIER
    conversations: int = 0
    messages_per_conversation: int = 0
    context_items: int = 0
    queued: int = 0
    dead: int = 0                 # messages sitting in the DLQ


LOADS = {
    "small": (Tier.pooled, Load(objects=3, object_size=1000, conversations=1, messages_per_conversation=2,
                                context_items=1, queued=1)),
    "big": (Tier.pooled, Load(objects=25, object_size=40_000, overwritten=5, glacier=2, conversations=6,
                              messages_per_conversation=30, context_items=40, queued=7, dead=3)),
    "ded": (Tier.dedicated, Load(objects=4, object_size=5000, conversations=2, messages_per_conversation=5,
                                 context_items=3)),
    "empty": (Tier.pooled, Load()),
}


# -- sandbox access ----------------------------------------------------------------
@dataclass
class Parts:
    s3: object
    sqs: object
    kms: object
    secrets: object
    dynamodb: object
    admin: dict          # host, port, user, password of the PostgreSQL admin
    bucket: str
    admin_secret_arn: str

    def admin_conn(self, dbname: str = "postgres", autocommit: bool = False) -> psycopg.Connection:
        return psycopg.connect(dbname=dbname, autocommit=autocommit, **self.admin)


def _admin_of(sandbox) -> dict:
    # The sandbox's PostgreSQL superuser, as the platform's admin secret would hold it.
    info = psycopg.conninfo.conninfo_to_dict(sandbox.postgres_dsn)
    return {"host": info.get("host", "127.0.0.1"), "port": int(info.get("port", 5432)),
            "user": info.get("user", "postgres"), "password": info.get("password", "")}


@pytest.fixture(scope="module")
def parts(sandbox):
    def client(name):
        return boto3.client(name, endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)

    p = Parts(s3=client("s3"), sqs=client("sqs"), kms=client("kms"), secrets=client("secretsmanager"),
              dynamodb=client("dynamodb"), admin=_admin_of(sandbox), bucket=f"usage-shared-{RUN}",
              admin_secret_arn="")
    p.s3.create_bucket(Bucket=p.bucket)
    p.s3.put_bucket_versioning(Bucket=p.bucket, VersioningConfiguration={"Status": "Enabled"})
    p.admin_secret_arn = p.secrets.create_secret(
        Name=f"usage-test-{RUN}/db-admin",
        SecretString=json.dumps({"username": p.admin["user"], "password": p.admin["password"]}),
    )["ARN"]
    return p


@pytest.fixture(scope="module")
def clients(parts) -> UsageClients:
    return UsageClients(s3=parts.s3, sqs=parts.sqs, admin_connect=admin_connector(parts.secrets, parts.admin_secret_arn))


# -- tenant set-up -----------------------------------------------------------------
def apply_schema(conn: psycopg.Connection, tenant_id: str) -> None:
    """The real context-store template, identifiers quoted by psycopg.sql."""
    def ident(name):
        return sql.Identifier(name).as_string(conn)

    def lit(value):
        return sql.Literal(value).as_string(conn)

    role = naming.db_role_name(tenant_id)
    conn.execute(render("tenant_schema.sql.j2", role=ident(role), role_literal=lit(role),
                        schema=ident(naming.schema_name(tenant_id)), tenant_literal=lit(tenant_id)))


def provision_slice(parts: Parts, tenant_id: str, tier: Tier) -> TenantRecord:
    """Today: the tenant's resources made directly on the sandbox. Later:
    `tenantctl.operations.provision(ws, TenantSpec(id=tenant_id, tier=tier))`."""
    key = parts.kms.create_key(Description=f"usage test {tenant_id}")["KeyMetadata"]
    queue = parts.sqs.create_queue(QueueName=naming.queue_name(tenant_id))["QueueUrl"]
    dlq = parts.sqs.create_queue(QueueName=naming.dlq_name(tenant_id))["QueueUrl"]
    if tier is Tier.dedicated:
        database = naming.database_name(tenant_id)
        with parts.admin_conn(autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    else:
        database = "postgres"
    with parts.admin_conn(database) as conn:
        apply_schema(conn, tenant_id)
    store = StoreConnection(endpoint=parts.admin["host"], port=parts.admin["port"], database=database,
                            schema_name=naming.schema_name(tenant_id), role=naming.db_role_name(tenant_id),
                            secret_arn=f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{naming.secret_name(tenant_id)}")
    resources = TenantResources(
        tenant_id=tenant_id, tier=tier, region="us-east-1", store=store, kms_key_arn=key["Arn"],
        kms_alias=naming.kms_alias(tenant_id), bucket=parts.bucket, prefix=naming.s3_prefix(tenant_id),
        queue_url=queue, dlq_url=dlq, role_arn=f"arn:aws:iam::123456789012:role/{naming.iam_role_name(tenant_id)}",
    )
    return TenantRecord(tenant_id=tenant_id, tier=tier, status=TenantStatus.active, region="us-east-1",
                        resources=resources)


def write_load(parts: Parts, record: TenantRecord, load: Load) -> None:
    res = record.resources
    for i in range(load.objects):
        parts.s3.put_object(Bucket=res.bucket, Key=f"{res.prefix}docs/{i:04d}.bin", Body=b"x" * load.object_size)
    for i in range(load.overwritten):  # same size again: the first write becomes noncurrent
        parts.s3.put_object(Bucket=res.bucket, Key=f"{res.prefix}docs/{i:04d}.bin", Body=b"y" * load.object_size)
    for i in range(load.glacier):
        parts.s3.put_object(Bucket=res.bucket, Key=f"{res.prefix}archive/{i:04d}.bin",
                            Body=b"z" * load.object_size, StorageClass="GLACIER")
    for i in range(load.queued):
        parts.sqs.send_message(QueueUrl=res.queue_url, MessageBody=f"job {i}")
    for i in range(load.dead):
        parts.sqs.send_message(QueueUrl=res.dlq_url, MessageBody=f"dead {i}")
    schema = res.store.schema_name
    with parts.admin_conn(res.store.database) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (record.tenant_id,))
        for c in range(load.conversations):
            conn.execute(sql.SQL("INSERT INTO {} (conversation_id) VALUES (%s)").format(
                sql.Identifier(schema, "conversations")), (f"c{c}",))
            for m in range(load.messages_per_conversation):
                conn.execute(sql.SQL("INSERT INTO {} (conversation_id, role, content) VALUES (%s, 'user', %s)").format(
                    sql.Identifier(schema, "messages")), (f"c{c}", b"m" * 200))
        for i in range(load.context_items):
            conn.execute(sql.SQL("INSERT INTO {} (item_id, kind, content) VALUES (%s, 'doc', %s)").format(
                sql.Identifier(schema, "context_items")), (f"i{i}", b"d" * 500))


@pytest.fixture(scope="module")
def tenants(parts) -> dict[str, tuple[TenantRecord, Load]]:
    out = {}
    for name, (tier, load) in LOADS.items():
        record = provision_slice(parts, f"u{RUN}-{name}", tier)
        write_load(parts, record, load)
        out[name] = (record, load)
    yield out
    with parts.admin_conn(autocommit=True) as conn:
        for record, _ in out.values():
            store = record.resources.store
            if record.tier is Tier.dedicated:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(store.database)))
            else:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(store.schema_name)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(store.role)))


# -- direct counts -----------------------------------------------------------------
def direct_current_objects(parts: Parts, record: TenantRecord) -> tuple[int, int]:
    count = size = 0
    for page in parts.s3.get_paginator("list_objects_v2").paginate(Bucket=parts.bucket, Prefix=record.resources.prefix):
        for obj in page.get("Contents", []):
            count += 1
            size += obj["Size"]
    return count, size


def direct_db(parts: Parts, record: TenantRecord) -> dict:
    store = record.resources.store
    with parts.admin_conn(store.database) as conn:
        sizes = [conn.execute("SELECT pg_total_relation_size(to_regclass(%s))",
                              (f"{store.schema_name}.{t}",)).fetchone()[0]
                 for t in ("conversations", "messages", "context_items")]
        database = conn.execute("SELECT pg_database_size(%s)", (store.database,)).fetchone()[0]
        writes = [conn.execute(sql.SQL("SELECT max({}) FROM {}").format(
            sql.Identifier(column), sql.Identifier(store.schema_name, table))).fetchone()[0]
            for table, column in (("messages", "created_at"), ("context_items", "created_at"),
                                  ("conversations", "updated_at"))]
    return {"schema_bytes": sum(sizes), "database_bytes": database, "writes": [w for w in writes if w]}


# -- tests ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(LOADS))
def test_usage_matches_what_was_written_and_direct_counts(parts, clients, tenants, name):
    record, load = tenants[name]
    usage = measure(record, clients, idle_days=30)
    assert usage.errors == []

    objects = usage.objects
    current = load.objects + load.glacier
    assert (objects.current_objects, objects.current_bytes) == (current, current * load.object_size)
    assert (objects.current_objects, objects.current_bytes) == direct_current_objects(parts, record)
    assert (objects.noncurrent_versions, objects.noncurrent_bytes) == (load.overwritten, load.overwritten * load.object_size)
    assert objects.bytes_by_class.get("GLACIER", 0) == load.glacier * load.object_size
    assert sum(objects.bytes_by_class.values()) == objects.current_bytes + objects.noncurrent_bytes

    db = usage.db
    assert db.rows == {"conversations": load.conversations,
                       "messages": load.conversations * load.messages_per_conversation,
                       "context_items": load.context_items}
    direct = direct_db(parts, record)
    if record.tier is Tier.dedicated:
        assert db.scope == "database" and db.size_bytes == direct["database_bytes"]
    else:
        assert db.scope == "schema" and db.size_bytes == direct["schema_bytes"]

    assert (usage.queues.visible, usage.queues.dlq_visible) == (load.queued, load.dead)
    if load.objects:
        newest_object = max(v["LastModified"] for page in parts.s3.get_paginator("list_object_versions").paginate(
            Bucket=parts.bucket, Prefix=record.resources.prefix) for v in page.get("Versions", []))
        assert usage.last_activity == max([newest_object, *direct["writes"]])
    else:
        assert usage.last_activity is None
    assert usage.idle is False  # everything was created just now


def test_bigger_tenants_measure_bigger(clients, tenants):
    small, big = (measure(tenants[n][0], clients) for n in ("small", "big"))
    assert big.db.size_bytes > small.db.size_bytes
    assert big.objects.current_bytes > small.objects.current_bytes


def test_idle_tenants_are_flagged_by_last_activity_or_age(clients, tenants):
    record, _ = tenants["empty"]
    old = record.model_copy(update={"created_at": utcnow() - timedelta(days=40)})
    assert measure(old, clients, idle_days=30).idle is True
    assert measure(old, clients, idle_days=60).idle is False
    busy, _ = tenants["big"]
    later = utcnow() + timedelta(days=31)
    assert measure(busy, clients, idle_days=30, now=later).idle is True
    assert measure(busy, clients, idle_days=30).idle is False


def test_a_broken_part_is_reported_and_the_rest_still_measured(parts, clients, tenants):
    record, load = tenants["small"]
    gone = record.model_copy(update={"resources": record.resources.model_copy(
        update={"queue_url": record.resources.queue_url.replace("-jobs", "-missing")})})
    usage = measure(gone, clients)
    assert usage.queues is None and len(usage.errors) == 1 and usage.errors[0].startswith("queues:")
    assert usage.objects.current_objects == load.objects and usage.db.rows["context_items"] == load.context_items


def test_measure_all_walks_the_registry_and_skips_tombstones(parts, clients, tenants):
    table = f"usage-registry-{RUN}"
    parts.dynamodb.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "tenant_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "tenant_id", "KeyType": "HASH"}],
    )
    registry = RegistryWriter(table, client=parts.dynamodb)
    for record, _ in tenants.values():
        spec = TenantSpec(id=record.tenant_id, tier=record.tier)
        registry.mark_active(registry.acquire(spec, "provision"), record.resources, spec, "test", "h")
    registry.mark_deprovisioned(registry.acquire(TenantSpec(id=f"u{RUN}-gone"), "provision"), retention_days=30)
    try:
        usages = list(measure_all(registry.iter_all(), clients, idle_days=30))
        assert sorted(u.tenant_id for u in usages) == sorted(r.tenant_id for r, _ in tenants.values())
        assert all(not u.errors for u in usages)
    finally:
        parts.dynamodb.delete_table(TableName=table)


def test_report_html_carries_each_tenants_figures_and_drill_verdicts(parts, clients, tenants):
    from tenantctl.drills.history import save_report
    from tenantctl.drills.models import DrillReport, Verdict

    drilled = provision_slice(parts, f"u{RUN}-drilled", Tier.pooled)
    write_load(parts, drilled, Load(objects=1, object_size=10, conversations=1, messages_per_conversation=1))
    now = utcnow()
    save_report(parts.s3, drilled, DrillReport(
        drill_id=f"{now:%Y%m%dT%H%M%S}-x", tenant_id=drilled.tenant_id, tier="pooled", kind="restore",
        started_at=now, finished_at=now, rto_seconds=12.5, verdict=Verdict.passed, reasons=["all counts match"]))
    records = [r for r, _ in tenants.values()] + [drilled]
    try:
        usages = [measure(r, clients) for r in records]
        data = build_report(usages, {}, load_prices(), PlatformSpec(), idle_days=30,
                            drills=latest_drill_verdicts(records, s3=parts.s3))
        html = render_html(data)
    finally:
        with parts.admin_conn(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(drilled.resources.store.schema_name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(drilled.resources.store.role)))
    big = next(row for row in data.rows if row.usage.tenant_id.endswith("-big"))
    assert f'data-tenant="{big.usage.tenant_id}"' in html
    assert f"${big.cost.total:.2f}" in html
    assert html.count("no drill yet") == len(tenants)
    assert "all counts match" in html and 'class="verdict-pass"' in html


def test_a_dedicated_instance_is_read_with_its_own_rds_master_secret(parts, sandbox, tenants):
    """On AWS a dedicated tenant's DB admin is its instance's RDS-managed master
    secret; the platform's admin (here a role that does not exist) is not used."""
    record, load = tenants["ded"]
    rds = boto3.client("rds", endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)
    instance = rds.create_db_instance(
        DBInstanceIdentifier=naming.rds_identifier(record.tenant_id), DBInstanceClass="db.t4g.micro",
        Engine="postgres", MasterUsername="master", ManageMasterUserPassword=True, AllocatedStorage=20,
    )["DBInstance"]
    parts.secrets.put_secret_value(SecretId=instance["MasterUserSecret"]["SecretArn"], SecretString=json.dumps(
        {"username": parts.admin["user"], "password": parts.admin["password"]}))
    wrong = parts.secrets.create_secret(Name=f"usage-test-{RUN}/wrong-admin",
                                        SecretString=json.dumps({"username": "no_such_admin", "password": "x"}))["ARN"]
    try:
        clients = UsageClients(s3=parts.s3, sqs=parts.sqs, admin_connect=admin_connector(parts.secrets, wrong, rds=rds))
        dedicated = measure(record, clients)
        assert dedicated.errors == [] and dedicated.db.rows["context_items"] == load.context_items
        pooled = measure(tenants["small"][0], clients)
        assert pooled.db is None and pooled.errors[0].startswith("db:") and "no_such_admin" in pooled.errors[0]
    finally:
        rds.delete_db_instance(DBInstanceIdentifier=instance["DBInstanceIdentifier"], SkipFinalSnapshot=True)
