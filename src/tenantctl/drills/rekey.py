"""Move a restored tenant's ciphertext from its old KMS key to its new one.

A tenant restored after deprovision is re-provisioned with a new key (the old
one was scheduled for deletion, and the destroyed stack no longer owns it).
Its restored data is still sealed under the old key, which tenant_runtime no
longer uses, so:

* messages, documents, summaries and the search key (``SEALED``): tenant_runtime's
  envelope format (``tenant_runtime.crypto``): each blob is opened with the old
  key and sealed again with the new one, same encryption context
  ``{tenant_id, conversation_id}`` (for documents and the search key, their
  scope in that slot). The index's terms are HMACs under the search key,
  which is the same key re-sealed: they need nothing. The data key is bound
  into the blob's AES-GCM associated data, so a KMS ReEncrypt of the data key
  alone would not do. Blobs not in that format are left as they are.
* objects under the prefix stored with SSE-KMS under the old key are copied
  onto themselves with the new key (a new version each; the old versions stay,
  as on any versioned-bucket overwrite).
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from tenant_runtime.tables import SEALED
from tenantctl.drills.context import DrillContext
from tenantctl.drills.objects import COPY_LIMIT, object_manifest
from tenantctl.models import TenantResources

BATCH = 500


def rekey_store(ctx: DrillContext, tenant_id: str, old: TenantResources, new: TenantResources) -> tuple[int, int]:
    """(re-sealed, left alone) counts over every sealed table (messages,
    documents, summaries, search keys); one transaction, read as the admin with
    ``app.tenant_id`` set (FORCE RLS admits exactly the tenant's rows)."""
    from tenant_runtime.crypto import MAGIC, Envelope

    envelope = Envelope(lambda _ctx: ctx.kms)
    kms = lambda: ctx.kms  # noqa: E731 - the operator's client: the keys are named explicitly below
    store = new.store
    resealed = skipped = 0
    with ctx.connect(store.endpoint, store.port, store.database) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        for table_name, keys, column, scope_of in SEALED:
            table = sql.Identifier(store.schema_name, table_name)
            key_cols = sql.SQL(", ").join(map(sql.Identifier, keys))
            update = sql.SQL("UPDATE {} SET {} = %s WHERE tenant_id = %s AND ({}) = ({})").format(
                table, sql.Identifier(column), key_cols, sql.SQL(", ").join(sql.Placeholder() * len(keys)))
            pending: list[tuple[Any, ...]] = []

            def flush(update: sql.Composed = update, pending: list = pending) -> None:
                if pending:
                    conn.cursor().executemany(update, pending)
                    pending.clear()

            with conn.cursor(name="tenantctl_rekey") as cur:
                cur.itersize = BATCH
                cur.execute(sql.SQL("SELECT {}, {} FROM {} ORDER BY {}").format(
                    key_cols, sql.Identifier(column), table, key_cols))
                for *key, content in cur:
                    blob = bytes(content)
                    if blob[:len(MAGIC)] != MAGIC:
                        skipped += 1
                        continue
                    scope = scope_of(tuple(key))
                    [plain] = envelope.open(kms, tenant_id, old.kms_key_arn, scope, [blob])
                    sealed = envelope.seal(kms, tenant_id, new.kms_key_arn, scope, plain)
                    pending.append((sealed, tenant_id, *key))
                    resealed += 1
                    if len(pending) >= BATCH:
                        flush()
            flush()
    return resealed, skipped


def _key_matches(found: str | None, key_arn: str) -> bool:
    return bool(found) and (found == key_arn or found.rsplit("/", 1)[-1] == key_arn.rsplit("/", 1)[-1])


def rekey_objects(s3: Any, bucket: str, prefix: str, old_key_arn: str, new_key_arn: str) -> int:
    """Copy every current object under ``prefix`` (backups/ excluded) that is
    SSE-KMS encrypted under the old key onto itself under the new key."""
    moved = 0
    for entry in object_manifest(s3, bucket, prefix):
        key = prefix + entry.key
        head = s3.head_object(Bucket=bucket, Key=key)
        if head.get("ServerSideEncryption") != "aws:kms" or not _key_matches(head.get("SSEKMSKeyId"), old_key_arn):
            continue
        source = {"Bucket": bucket, "Key": key}
        if entry.version_id:
            source["VersionId"] = entry.version_id
        extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": new_key_arn}
        if entry.size <= COPY_LIMIT:
            s3.copy_object(Bucket=bucket, Key=key, CopySource=source, MetadataDirective="COPY", **extra)
        else:
            s3.copy(source, bucket, key, ExtraArgs=extra)
        moved += 1
    return moved
