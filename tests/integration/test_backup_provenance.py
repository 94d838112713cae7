"""A backup is restored only as what it claims to be: its owner's schema, its
own dump. What a forged manifest could make a restore do: drop and refill
another tenant's schema as the database admin (the tenant role may no longer
plant one at all: tests/unit/test_iam_eval.py; these are the restore's own
refusals, for a backup planted otherwise). Pooled prefix twins on the sandbox,
the CLI's `drill restore --target in-place --overwrite`, real pg_dump."""

from __future__ import annotations

import io

import pytest
from tenant_data import Sandbox

from tenant_runtime.models import TenantRecord
from tenantctl import naming
from tenantctl.drills import envelope, store
from tenantctl.drills.backup import backup
from tenantctl.drills.context import DrillContext, context_from_workspace
from tenantctl.drills.models import BackupManifest

pytestmark = pytest.mark.integration

OWNER, NEIGHBOUR = "qx-bk", "qx-bk2"  # prefix twins, pooled in the same database
FORGED = "99991231T235959999Z-"  # sorts after every real backup: what `latest` would pick


@pytest.fixture(scope="module")
def box(sandbox) -> Sandbox:
    return Sandbox(sandbox)


@pytest.fixture(scope="module")
def ctx(workspace) -> DrillContext:
    workspace.ensure_platform()
    return context_from_workspace(workspace)


@pytest.fixture(scope="module")
def tenants(provision_tenant, box) -> dict[str, TenantRecord]:
    records = {t: provision_tenant(t) for t in (OWNER, NEIGHBOUR)}
    res = records[NEIGHBOUR].resources
    with box.admin(res.store.database) as conn:
        conn.execute(f"INSERT INTO {res.store.schema_name}.conversations (tenant_id, conversation_id) "
                     "VALUES (%s, 'the-neighbours-own')", (NEIGHBOUR,))
    return records


def neighbour_rows(box: Sandbox, record: TenantRecord) -> list[tuple]:
    store_conn = record.resources.store
    with box.admin(store_conn.database) as conn:
        return conn.execute(f"SELECT conversation_id FROM {store_conn.schema_name}.conversations").fetchall()


def plant(ctx: DrillContext, record: TenantRecord, suffix: str, **changes) -> str:
    """A real backup of ``record`` copied under a new id with ``changes`` to its
    manifest: dump and manifest sealed and stored exactly as tenantctl does."""
    real = backup(ctx, record)
    backup_id = FORGED + suffix
    bucket, key_arn = record.resources.bucket, record.resources.kms_key_arn
    real_context = envelope.encryption_context(record.tenant_id, real.backup_id)
    plaintext = b"".join(envelope.decrypt_stream(
        ctx.s3.get_object(Bucket=bucket, Key=real.dump.key)["Body"],
        envelope.open_data_key(ctx.kms, key_arn, real.dump.encrypted_data_key, real_context),
        bytes.fromhex(real.dump.nonce_prefix), real_context, real.dump.key))
    context = envelope.encryption_context(record.tenant_id, backup_id, changes.get("workspace"))
    key = envelope.new_data_key(ctx.kms, key_arn, context)
    sealed = b"".join(envelope.encrypt_stream(io.BytesIO(plaintext), key, context))
    dump_key = store.backup_dir(record, backup_id) + store.DUMP
    ctx.s3.put_object(Bucket=bucket, Key=dump_key, Body=sealed)
    dump = {**real.dump.model_dump(), "key": dump_key, "encrypted_data_key": key.encrypted_b64,
            "nonce_prefix": key.nonce_prefix.hex(), "stored_bytes": len(sealed)}
    manifest = BackupManifest.model_validate({**real.model_dump(), "backup_id": backup_id, "dump": dump, **changes})
    store.put_backup(ctx.s3, record, manifest, key)
    return backup_id


def test_a_manifest_naming_the_neighbours_schema_is_refused_and_the_neighbour_keeps_its_rows(
        ctx, box, tenants, tenantctl_cli):
    owner, neighbour = tenants[OWNER], tenants[NEIGHBOUR]
    backup_id = plant(ctx, owner, "schema", schema_name=naming.schema_name(NEIGHBOUR))
    assert store.latest_backup(ctx.s3, owner).backup_id == backup_id
    done = tenantctl_cli("drill", "restore", OWNER, "--target", "in-place", "--overwrite", "--yes")
    assert done.returncode == 9, done.stdout + done.stderr
    assert f"names schema {naming.schema_name(NEIGHBOUR)!r}, not its owner's" in done.stdout
    assert neighbour_rows(box, neighbour) == [("the-neighbours-own",)]


def test_a_manifest_whose_dump_lies_elsewhere_is_refused(ctx, box, tenants, tenantctl_cli):
    owner = tenants[OWNER]
    elsewhere = store.backup_dir(tenants[NEIGHBOUR], "20260101T000000000Z-000000") + store.DUMP
    backup_id = plant(ctx, owner, "dump")
    manifest = store.load_manifest(ctx.s3, ctx.kms, owner, backup_id)  # re-sealed, its dump elsewhere
    key = envelope.new_data_key(ctx.kms, owner.resources.kms_key_arn,
                                envelope.encryption_context(OWNER, backup_id))
    store.put_backup(ctx.s3, owner, manifest.model_copy(update={
        "dump": manifest.dump.model_copy(update={"key": elsewhere})}), key)
    done = tenantctl_cli("drill", "restore", OWNER, "--backup", backup_id, "--target", "scratch")
    assert done.returncode == 9, done.stdout + done.stderr
    assert f"names dump {elsewhere!r}" in done.stdout


def test_a_real_backup_still_restores_in_place(ctx, box, tenants, tenantctl_cli):
    owner = tenants[OWNER]
    real = backup(ctx, owner)
    done = tenantctl_cli("drill", "restore", OWNER, "--backup", real.backup_id, "--target", "in-place",
                         "--overwrite", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert neighbour_rows(box, tenants[NEIGHBOUR]) == [("the-neighbours-own",)]


def test_a_workspace_backup_under_the_tenants_own_prefix_is_refused(ctx, box, tenants, tenantctl_cli):
    """A backup says whose it is by where it lies: one under the tenant's prefix
    claiming a workspace (index and manifest alike) is not restored over that
    workspace's schema."""
    owner = tenants[OWNER]
    backup_id = plant(ctx, owner, "workspace", workspace="hr",
                      schema_name=naming.OwnerNames(OWNER, "hr").schema)
    done = tenantctl_cli("drill", "restore", OWNER, "--backup", backup_id, "--target", "scratch")
    assert done.returncode == 9, done.stdout + done.stderr
    assert f"it lies under {naming.s3_prefix(OWNER)!r}: refused" in done.stdout
