"""Tenants for the runtime integration tests, built from real parts on the sandbox.

Stands in for provisioning until the LocalEngine provisions end to end: per
tenant a KMS key, a Secrets Manager secret with the store credentials, an SQS
queue + DLQ, a prefix in a shared bucket, the context-store schema from the real
SQL template (run as the admin, then ALTER ROLE ... PASSWORD) and an active
registry record written by tenantctl's RegistryWriter. Swap ``make_tenant`` for
``tenantctl.operations.provision`` when that works on the sandbox.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass, field

import boto3
import jwt
import psycopg
from psycopg import sql

from tenantctl import naming
from tenantctl.models import StoreConnection, TenantRecord, TenantResources, TenantSpec, Tier
from tenantctl.registry import RegistryWriter
from tenantctl.templates import render

JWT_SECRET = "runtime-integration-secret-0123456789"


@dataclass
class RuntimeEnv:
    sandbox: object
    run: str
    registry_table: str
    bucket: str
    registry: RegistryWriter
    tenants: dict[str, TenantRecord] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.sandbox.aws_endpoint_url, region_name=self.sandbox.region)

    def admin(self, database: str | None = None) -> psycopg.Connection:
        return psycopg.connect(self.sandbox.pg_dsn(database), autocommit=True)

    def connect_as(self, tenant_id: str, database: str | None = None) -> psycopg.Connection:
        """A raw connection as the tenant's role: what a buggy app would hold."""
        store = self.tenants[tenant_id].resources.store
        return psycopg.connect(host=self.sandbox.pg_host, port=self.sandbox.pg_port,
                               dbname=database or store.database, user=store.role,
                               password=self.passwords[tenant_id])

    def token(self, tenant_id: str, **claims) -> str:
        body = {"sub": f"user-of-{tenant_id}", "tenant_id": tenant_id, "aud": "runtime-tests",
                "exp": time.time() + 600, **claims}
        return jwt.encode(body, JWT_SECRET, algorithm="HS256")


def open_env(sandbox) -> RuntimeEnv:
    run = uuid.uuid4().hex[:6]
    dynamodb = boto3.client("dynamodb", endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)
    table = f"runtime-registry-{run}"
    dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                          AttributeDefinitions=[{"AttributeName": "tenant_id", "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": "tenant_id", "KeyType": "HASH"}])
    env = RuntimeEnv(sandbox=sandbox, run=run, registry_table=table, bucket=f"runtime-shared-{run}",
                     registry=RegistryWriter(table, client=dynamodb))
    env.client("s3").create_bucket(Bucket=env.bucket)
    return env


def apply_schema(conn: psycopg.Connection, tenant_id: str, password: str) -> None:
    """The real template, rendered with psycopg.sql quoting, run as the admin."""
    role = naming.db_role_name(tenant_id)
    conn.execute(render("tenant_schema.sql.j2", role=sql.Identifier(role).as_string(conn),
                        role_literal=sql.Literal(role).as_string(conn),
                        schema=sql.Identifier(naming.schema_name(tenant_id)).as_string(conn),
                        tenant_literal=sql.Literal(tenant_id).as_string(conn)))
    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))


def make_tenant(env: RuntimeEnv, tenant_id: str, tier: Tier = Tier.pooled) -> TenantRecord:
    sandbox = env.sandbox
    database = naming.database_name(tenant_id) if tier is Tier.dedicated else sandbox.pg_database
    if tier is Tier.dedicated:
        with env.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    password = secrets.token_urlsafe(24)
    with env.admin(database) as conn:
        apply_schema(conn, tenant_id, password)
    kms, sqs = env.client("kms"), env.client("sqs")
    key_arn = kms.create_key(Description=f"runtime test {tenant_id}",
                             Tags=[{"TagKey": "tenant", "TagValue": tenant_id}])["KeyMetadata"]["Arn"]
    secret_arn = env.client("secretsmanager").create_secret(
        Name=naming.secret_name(tenant_id), KmsKeyId=key_arn, SecretString=json.dumps({
            "username": naming.db_role_name(tenant_id), "password": password, "host": sandbox.pg_host,
            "port": sandbox.pg_port, "dbname": database, "schema": naming.schema_name(tenant_id)}))["ARN"]
    dlq_url = sqs.create_queue(QueueName=naming.dlq_name(tenant_id),
                               Attributes={"KmsMasterKeyId": key_arn})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(QueueName=naming.queue_name(tenant_id), Attributes={
        "KmsMasterKeyId": key_arn,
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})})["QueueUrl"]
    store = StoreConnection(endpoint=sandbox.pg_host, port=sandbox.pg_port, database=database,
                            schema_name=naming.schema_name(tenant_id), role=naming.db_role_name(tenant_id),
                            secret_arn=secret_arn)
    resources = TenantResources(
        tenant_id=tenant_id, tier=tier, region=sandbox.region, store=store, kms_key_arn=key_arn,
        kms_alias=naming.kms_alias(tenant_id), bucket=env.bucket, prefix=naming.s3_prefix(tenant_id),
        queue_url=queue_url, dlq_url=dlq_url,
        role_arn=f"arn:aws:iam::123456789012:role/{naming.iam_role_name(tenant_id)}")
    spec = TenantSpec(id=tenant_id, tier=tier)
    record = env.registry.mark_active(env.registry.acquire(spec, "provision"), resources, spec, "test", "h")
    env.tenants[tenant_id], env.passwords[tenant_id] = record, password
    return record


def drop_tenants(env: RuntimeEnv) -> None:
    with env.admin() as conn:
        for tenant_id, record in env.tenants.items():
            store = record.resources.store
            if record.tier is Tier.dedicated:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(store.database)))
            else:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(store.schema_name)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(store.role)))


# -- fixtures (import them into a test module: `from runtime_tenants import runtime_env, runtime`) --

import pytest  # noqa: E402

from tenant_runtime import JWTSettings, TenantRuntime  # noqa: E402


@pytest.fixture(scope="module")
def runtime_env(sandbox):
    """Two pooled tenants `a` and `b` (same database, prefix twins avoided by the
    run suffix) and one dedicated tenant `d`; keys of ``env.ids``."""
    env = open_env(sandbox)
    env.ids = {"a": f"acme-{env.run}", "b": f"beta-{env.run}", "d": f"dedi-{env.run}"}
    try:
        make_tenant(env, env.ids["a"])
        make_tenant(env, env.ids["b"])
        make_tenant(env, env.ids["d"], Tier.dedicated)
        yield env
    finally:
        drop_tenants(env)


@pytest.fixture(scope="module")
def runtime(runtime_env):
    rt = TenantRuntime(JWTSettings(key=JWT_SECRET, algorithms=("HS256",), audience="runtime-tests"),
                       runtime_env.registry_table, endpoint_url=runtime_env.sandbox.aws_endpoint_url,
                       region=runtime_env.sandbox.region)
    yield rt
    rt.close()
