"""Data for really provisioned tenants (``provision_tenant``), written the way
the product writes it:

* conversation history through tenant_runtime's ContextStore: the tenant role's
  credentials from the tenant's secret, RLS on, content envelope-encrypted with
  the tenant's KMS key;
* context items as the database admin into the provisioned schema (the runtime
  has no API for them), with ``app.tenant_id`` set as the policies require;
* objects under the tenant prefix with SSE-KMS under the tenant key, as the
  runtime's pre-signed uploads demand, some overwritten (noncurrent versions).

Reads for comparisons go straight to PostgreSQL and S3.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import boto3
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from tenant_runtime.context import TenantContext, from_registry
from tenant_runtime.crypto import Envelope
from tenant_runtime.registry import RegistryReader
from tenant_runtime.store import ContextStore
from tenantctl.models import TenantRecord

CONTEXT_TABLES = {"conversations": "conversation_id", "messages": "conversation_id, seq",
                  "context_items": "item_id", "documents": "doc_id", "search_keys": "version",
                  "search_vocab": "key_version, gram, term",
                  "search_stats": "kind, key_version, term"}
# Queries a restored tenant must answer as before (documents written by write_history).
QUERIES = ("report", "conversation message", "repotr")


@dataclass
class Sandbox:
    """Clients and admin connections on the session's sandbox."""

    endpoints: object

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoints.aws_endpoint_url, region_name=self.endpoints.region)

    def admin(self, database: str | None = None, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.endpoints.pg_dsn(database), autocommit=autocommit)

    def store(self) -> ContextStore:
        """A fresh ContextStore (its secret and pool caches start empty)."""
        kms, secrets = self.client("kms"), self.client("secretsmanager")
        return ContextStore(Envelope(lambda _ctx: kms), lambda _ctx: secrets)


def tenant_context(box: Sandbox, record: TenantRecord, workspace: str | None = None) -> TenantContext:
    """The tenant's (or its workspace's) context as the runtime resolves it: from its registry record."""
    from infra.program import REGISTRY_TABLE

    return from_registry(RegistryReader(REGISTRY_TABLE, client=box.client("dynamodb")), record.tenant_id,
                         workspace=workspace)


def message_text(conversation: int, n: int) -> str:
    return f"conversation {conversation} message {n}: " + uuid.uuid5(uuid.NAMESPACE_URL, f"{conversation}/{n}").hex * 4


def write_history(box: Sandbox, record: TenantRecord, conversations: int = 3, messages: int = 5,
                  context_items: int = 1, item_bytes: int = 350) -> None:
    store = box.store()
    try:
        ctx = tenant_context(box, record)
        for c in range(conversations):
            for m in range(messages):
                store.append(ctx, f"c{c}", "user" if m % 2 == 0 else "assistant", message_text(c, m), {"n": m})
            store.put_document(ctx, f"doc-{c}", f"Report {c}", message_text(c, 0), {"c": c})
    finally:
        store.close()
    res = record.resources.store
    with box.admin(res.database) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (record.tenant_id,))
        for i in range(context_items):
            conn.execute(sql.SQL("INSERT INTO {} (item_id, kind, content, metadata) VALUES (%s, 'doc', %s, %s)").format(
                sql.Identifier(res.schema_name, "context_items")), (f"doc-{i}", b"c" * item_bytes, Jsonb({"i": i})))


def put_objects(box: Sandbox, record: TenantRecord, count: int = 4, overwrite: int = 2, size: int = 300,
                folder: str = "uploads") -> None:
    """``count`` objects, the first ``overwrite`` written twice (the manifest must name the newer version)."""
    res = record.resources
    s3 = box.client("s3")
    sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": res.kms_key_arn}
    for i in range(count):
        s3.put_object(Bucket=res.bucket, Key=f"{res.prefix}{folder}/{i}.txt", Body=(f"v1 {i} ".encode() * size)[:size],
                      **sse)
    for i in range(min(overwrite, count)):
        s3.put_object(Bucket=res.bucket, Key=f"{res.prefix}{folder}/{i}.txt", Body=(f"v2 {i} ".encode() * size)[:size],
                      **sse)


def rows(box: Sandbox, database: str, schema: str) -> dict[str, list[tuple]]:
    """Every row of every context-store table, sorted: the direct comparison."""
    out = {}
    with box.admin(database) as conn:
        for table, order in CONTEXT_TABLES.items():
            out[table] = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY " + order).format(
                sql.Identifier(schema, table))).fetchall()
    return out


def history(box: Sandbox, record: TenantRecord) -> dict[str, list[tuple[str, str]]]:
    """Every conversation's messages as tenant_runtime reads them (decrypted),
    oldest first, and the search answers to QUERIES (``search:`` keys)."""
    store = box.store()
    try:
        ctx = tenant_context(box, record)
        with box.admin(record.resources.store.database) as conn, conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (record.tenant_id,))
            conversations = [r[0] for r in conn.execute(sql.SQL("SELECT conversation_id FROM {} ORDER BY 1").format(
                sql.Identifier(record.resources.store.schema_name, "conversations")))]
        answers = {f"search:{q}": [(h.doc_id, h.title, h.score) for h in store.search(ctx, q, fuzzy=True).hits]
                   for q in QUERIES}
        return answers | {c: [(m.role, m.content) for m in reversed(store.history(ctx, c, limit=500).messages)]
                          for c in conversations}
    finally:
        store.close()


def conversation(box: Sandbox, record: TenantRecord, workspace: str, conversation_id: str,
                 append: list[str] = ()) -> list[str]:
    """``append`` added to one conversation of the workspace through tenant_runtime, then
    the whole conversation as it reads it (decrypted, oldest first)."""
    store = box.store()
    try:
        ctx = tenant_context(box, record, workspace)
        for text in append:
            store.append(ctx, conversation_id, "user", text)
        return [m.content for m in reversed(store.history(ctx, conversation_id, limit=500).messages)]
    finally:
        store.close()


def objects(box: Sandbox, record: TenantRecord, folder: str = "uploads/") -> dict[str, bytes]:
    res = record.resources
    s3 = box.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=res.bucket, Prefix=res.prefix + folder)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k[len(res.prefix):]: s3.get_object(Bucket=res.bucket, Key=k)["Body"].read() for k in keys}


def scratch_databases(box: Sandbox) -> list[str]:
    with box.admin() as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'drill\\_%'")]
