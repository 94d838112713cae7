"""Backup / restore drills on the sandbox: moto server + real PostgreSQL, real pg_dump/pg_restore."""

from __future__ import annotations

import pytest
from psycopg import sql

from tenantctl.drills import store
from tenantctl.drills.backup import backup
from tenantctl.drills.errors import KeyUnusable
from tenantctl.drills.history import latest_verdicts, list_reports
from tenantctl.drills.models import Target, Verdict
from tenantctl.drills.report import render_markdown
from tenantctl.drills.restore import cleanup, restore
from tenantctl.drills.run import drill
from tenantctl.errors import InvalidInput, NotFound
from tenantctl.models import TenantStatus, Tier

from drill_tenants import (
    drop_tenant, make_tenant, open_env, retire_tenant, rows, scratch_databases, write_history,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(sandbox):
    return open_env(sandbox)


@pytest.fixture
def tenant(env, request):
    made = []

    def make(name: str, tier: Tier = Tier.pooled, **load):
        record = make_tenant(env, f"d{env.run}-{name}", tier)
        write_history(env, record, **load)
        made.append(record)
        return env.registry.require(record.tenant_id)

    yield make
    for record in made:
        drop_tenant(env, record)


def failing(report) -> str:
    return " | ".join(report.reasons)


def test_drill_restores_a_copy_that_matches_the_tenant(env, tenant):
    record = tenant("a")
    before = len(scratch_databases(env))
    report = drill(env.ctx, record)
    assert report.verdict is Verdict.passed, failing(report)
    assert report.backup_kind == "pg_dump-schema" and report.cleaned_up
    names = {c.name for c in report.checks}
    assert {"table messages: rows", "table messages: checksum", "objects: keys, sizes, ETags"} <= names
    messages = next(c for c in report.checks if c.name == "table messages: rows")
    assert messages.expected == messages.actual == "15"
    assert report.object_count == 4 and report.rto_seconds is not None and report.rpo_seconds is not None
    assert len(scratch_databases(env)) == before  # scratch database dropped
    assert store.list_manifests(env.s3, record)[-1].backup_id == report.backup_id

    # Restore again and keep the copy: every row and object equals the live tenant's.
    manifest = store.latest_manifest(env.s3, record)
    result = restore(env.ctx, record, manifest)
    try:
        res = record.resources
        assert result.database.startswith("drill_") and result.database != res.store.database
        assert rows(env, result.database, res.store.schema_name) == rows(env, res.store.database, res.store.schema_name)
        for entry in manifest.objects:
            live = env.s3.get_object(Bucket=res.bucket, Key=res.prefix + entry.key)["Body"].read()
            copy = env.s3.get_object(Bucket=res.bucket, Key=result.object_prefix + entry.key)["Body"].read()
            assert copy == live
        assert env.s3.get_object(Bucket=res.bucket, Key=res.prefix + "uploads/0.txt")["Body"].read().startswith(b"v2")
    finally:
        cleanup(env.ctx, record, result)

    history = list_reports(env.s3, record)
    assert [r.drill_id for r in history] == [report.drill_id]
    verdicts = latest_verdicts([record], s3=env.s3)
    assert verdicts[record.tenant_id].verdict == "pass"
    markdown = render_markdown(report)
    assert "**PASS**" in markdown and "table messages: checksum" in markdown


def test_dedicated_tenant_gets_a_logical_backup_on_the_sandbox(env, tenant):
    record = tenant("ded", Tier.dedicated, conversations=2, messages=3, objects=1)
    report = drill(env.ctx, record)
    assert report.verdict is Verdict.passed, failing(report)
    assert report.backup_kind == "logical (sandbox)"
    assert "logical (sandbox)" in render_markdown(report)
    # Limits for CI: any restore takes longer than 0 s; a day-old RPO limit holds for a fresh backup.
    limited = drill(env.ctx, record, backup_id="latest", max_rto=0.0, max_rpo=86400)
    assert limited.verdict is Verdict.failed and all(c.ok for c in limited.checks)
    assert [r for r in limited.reasons if "exceeds" in r] == [f"RTO {limited.rto_seconds:.1f}s exceeds --max-rto 0s"]


def test_a_corrupted_backup_fails_the_drill_with_a_clear_verdict(env, tenant):
    record = tenant("corrupt")
    manifest = backup(env.ctx, record)
    res = record.resources
    blob = bytearray(env.s3.get_object(Bucket=res.bucket, Key=manifest.dump.key)["Body"].read())
    blob[len(blob) // 2] ^= 0x01
    env.s3.put_object(Bucket=res.bucket, Key=manifest.dump.key, Body=bytes(blob))
    before = scratch_databases(env)
    report = drill(env.ctx, record, backup_id=manifest.backup_id)
    assert report.verdict is Verdict.failed
    assert "failed AES-GCM authentication" in failing(report)
    assert scratch_databases(env) == before
    assert "**FAIL**" in render_markdown(report) and "AES-GCM" in render_markdown(report)
    assert latest_verdicts([record], s3=env.s3)[record.tenant_id].verdict == "fail"


def test_a_changed_row_after_restore_fails_verification(env, tenant):
    """The checksums see content, not just counts: a restored row changed behind
    the drill's back makes the verdict fail."""
    record = tenant("tamper")
    manifest = backup(env.ctx, record)
    result = restore(env.ctx, record, manifest)
    try:
        with env.admin_conn(result.database) as conn:
            conn.execute(sql.SQL("UPDATE {} SET metadata = '{{\"n\": 99}}' WHERE seq = 1").format(
                sql.Identifier(result.schema_name, "messages")))
        from tenantctl.drills.verify import verify

        checks = {c.name: c for c in verify(env.ctx, record, manifest, result)}
        assert checks["table messages: rows"].ok and not checks["table messages: checksum"].ok
        assert checks["table conversations: checksum"].ok
    finally:
        cleanup(env.ctx, record, result)


def test_a_tenant_cannot_restore_another_tenants_backup(env, tenant):
    a, b = tenant("iso-a"), tenant("iso-b")
    theirs = backup(env.ctx, b)
    with pytest.raises(NotFound):
        drill(env.ctx, a, backup_id=theirs.backup_id)  # only A's prefix is ever read
    # Even B's backup copied into A's prefix, its manifest rewritten to name A, stays closed:
    # A's key and encryption context cannot open B's data key.
    src, dst = store.backup_dir(b, theirs.backup_id), store.backup_dir(a, theirs.backup_id)
    dump_key = dst + "db.dump.enc"
    env.s3.copy_object(Bucket=env.bucket, Key=dump_key, CopySource={"Bucket": env.bucket, "Key": src + "db.dump.enc"})
    forged = theirs.model_copy(update={"tenant_id": a.tenant_id, "record": a,
                                       "dump": theirs.dump.model_copy(update={"key": dump_key})})
    store.put_manifest(env.s3, a, forged)
    report = drill(env.ctx, a, backup_id=theirs.backup_id)
    assert report.verdict is Verdict.failed
    assert report.key_unusable and "KMS refused to decrypt the backup's data key" in failing(report)
    # The unmodified copy is refused before any decryption.
    env.s3.copy_object(Bucket=env.bucket, Key=dst + "manifest.json",
                       CopySource={"Bucket": env.bucket, "Key": src + "manifest.json"})
    report = drill(env.ctx, a, backup_id=theirs.backup_id)
    assert report.verdict is Verdict.failed and f"names tenant {b.tenant_id!r}" in failing(report)


def test_in_place_needs_yes_and_an_empty_target(env, tenant):
    record = tenant("inplace")
    manifest = backup(env.ctx, record)
    with pytest.raises(InvalidInput, match="--yes"):
        restore(env.ctx, record, manifest, target=Target.in_place)
    report = drill(env.ctx, record, backup_id=manifest.backup_id, target=Target.in_place, yes=True)
    assert report.verdict is Verdict.failed and "is not empty: refused" in failing(report)
    assert env.registry.require(record.tenant_id).lock is None  # the in-place lock was released


def test_a_key_pending_deletion_is_reported(env, tenant):
    record = tenant("pending")
    backup(env.ctx, record)
    env.kms.schedule_key_deletion(KeyId=record.resources.kms_key_arn.rsplit("/", 1)[-1], PendingWindowInDays=7)
    with pytest.raises(KeyUnusable, match="pending deletion"):
        backup(env.ctx, record)
    report = drill(env.ctx, record, backup_id="latest")
    assert report.verdict is Verdict.failed
    assert report.key_unusable and "is pending deletion (deleted on " in failing(report)


def test_restore_after_deprovision_brings_the_tenant_back(env, tenant):
    record = tenant("revive")
    res = record.resources
    live_rows = rows(env, res.store.database, res.store.schema_name)
    manifest = backup(env.ctx, record)
    env.s3.put_object(Bucket=res.bucket, Key=res.prefix + "uploads/after-backup.txt", Body=b"later")
    tomb = retire_tenant(env, record)
    assert tomb.status is TenantStatus.deprovisioned and tomb.retain_until is not None

    report = drill(env.ctx, tomb, backup_id=manifest.backup_id, target=Target.in_place, yes=True)
    assert report.verdict is Verdict.passed, failing(report)

    back = env.registry.require(record.tenant_id)
    assert back.status is TenantStatus.active and back.retain_until is None and back.resources == res
    assert env.kms.describe_key(KeyId=res.kms_key_arn)["KeyMetadata"]["KeyState"] == "Enabled"
    assert rows(env, res.store.database, res.store.schema_name) == live_rows
    keys = {o["Key"][len(res.prefix):] for o in env.s3.list_objects_v2(Bucket=res.bucket, Prefix=res.prefix + "uploads/")["Contents"]}
    assert keys == {o.key for o in manifest.objects}  # the object written after the backup is gone
    # The tenant role works again, under its RLS policy.
    with env.admin_conn(res.store.database) as conn, conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(res.store.role)))
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (record.tenant_id,))
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(res.store.schema_name, "messages"))).fetchone()[0] == 15
    # Past the retention window nothing is restored.
    again = retire_tenant(env, back, retention_days=0)
    with pytest.raises(InvalidInput, match="retention window ended"):
        restore(env.ctx, again.model_copy(update={"retain_until": again.retain_until.replace(year=2000)}),
                manifest, target=Target.in_place, yes=True)


def test_dedicated_on_aws_uses_rds_snapshots(env, tenant, sandbox):
    """The AWS path against moto's RDS: snapshot backup with checksums from the
    instance, restore into a scratch instance, scratch removed on clean-up.
    (moto's instances accept no connections, so verification is not run here.)"""
    import dataclasses

    import boto3

    from tenantctl import naming

    record = tenant("rds", Tier.dedicated, conversations=1, messages=2, objects=1)
    rds = boto3.client("rds", endpoint_url=sandbox.aws_endpoint_url, region_name=sandbox.region)
    instance = naming.rds_identifier(record.tenant_id)
    rds.create_db_instance(DBInstanceIdentifier=instance, Engine="postgres", DBInstanceClass="db.t4g.micro",
                           AllocatedStorage=20, MasterUsername="admin_user", MasterUserPassword="x" * 12)
    ctx = dataclasses.replace(env.ctx, rds=rds, is_sandbox=False)
    try:
        manifest = backup(ctx, record)
        assert manifest.kind == "rds-snapshot" and manifest.dump is None
        assert manifest.tables["messages"].rows == 2 and len(manifest.objects) == 1
        snaps = rds.describe_db_snapshots(DBSnapshotIdentifier=manifest.snapshot.identifier)["DBSnapshots"]
        assert snaps[0]["DBInstanceIdentifier"] == instance
        assert store.latest_manifest(env.s3, record).snapshot == manifest.snapshot

        result = restore(ctx, record, manifest)
        assert result.scratch_instance.startswith("drill-") and result.scratch_instance != instance
        restored = rds.describe_db_instances(DBInstanceIdentifier=result.scratch_instance)["DBInstances"][0]
        assert restored["DBInstanceStatus"] == "available"
        with pytest.raises(InvalidInput, match="RDS snapshot"):
            restore(ctx, record, manifest, target=Target.in_place, yes=True)
        cleanup(ctx, record, result)
        left = [i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]]
        assert result.scratch_instance not in left and instance in left
    finally:
        rds.delete_db_instance(DBInstanceIdentifier=instance, SkipFinalSnapshot=True)
