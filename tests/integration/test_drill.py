"""Backup / restore drills on tenants made by the real provision operation
(LocalEngine on the sandbox: moto server + real PostgreSQL) and retired by the
real deprovision operation; real pg_dump / pg_restore."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import socket
from datetime import timedelta

import pytest
from fault_tools import Cli, listed, slot_drift, write_record
from faults import (
    FAULT_AFTER_ENV,
    FAULT_EXIT_CODE,
    FAULT_POINT_ENV,
    FAULT_THROTTLE_ENV,
    FAULT_THROTTLE_FILE_ENV,
    SharedTokenBucket,
)
from psycopg import sql
from tenant_data import (
    Sandbox,
    conversation,
    history,
    message_text,
    objects,
    put_objects,
    rows,
    scratch_databases,
    write_history,
)

from tenant_runtime.models import Hibernation
from tenant_runtime.tables import TABLES as STORE_TABLES
from tenantctl import inventory, naming
from tenantctl.aws import THROTTLE_ATTEMPTS_ENV
from tenantctl.drills import envelope, store
from tenantctl.drills.backup import backup
from tenantctl.drills.compression import METHODS, Compression, CompressionUnsupported, supported
from tenantctl.drills.context import DrillContext, context_from_workspace
from tenantctl.drills.history import latest_verdicts, list_reports
from tenantctl.drills.models import BackupIndex, Target, Verdict
from tenantctl.drills.pgtools import find_tools
from tenantctl.drills.report import render_markdown
from tenantctl.drills.restore import cleanup, restore
from tenantctl.drills.run import drill
from tenantctl.drills.scope import workspace_view
from tenantctl.drills.tables import server_major
from tenantctl.drills.verify import verify
from tenantctl.engines.local.state import StateFile
from tenantctl.errors import Conflict, InvalidInput, KeyUnusable, NotFound
from tenantctl.models import TenantRecord, TenantStatus, Tier, utcnow
from tenantctl.operations.audit import audit
from tenantctl.operations.deprovision import deprovision, purged_prefixes
from tenantctl.operations.revive import revive
from tenantctl.registry import new_lock

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def box(sandbox) -> Sandbox:
    return Sandbox(sandbox)


@pytest.fixture(scope="module")
def ctx(workspace) -> DrillContext:
    workspace.ensure_platform()  # when a test runs alone, nothing else has brought it up
    return context_from_workspace(workspace)


DEDICATED = "ded"  # one dedicated tenant for the logical and the RDS snapshot tests: each costs a VPC (quota 5)


@pytest.fixture(scope="module", autouse=True)
def free_vpcs(workspace):
    """Dedicated tenants this module left active at the end (its shared one, a revived one) are
    deprovisioned: the session's sandbox is shared, and its VPC quota with it."""
    yield
    left, _ = workspace.registry.list(limit=None, tier=Tier.dedicated, status=TenantStatus.active,
                                      where=lambda r: r.tenant_id.startswith("dr-"))
    for record in left:
        deprovision(workspace, record.tenant_id, final_backup=False)


@pytest.fixture
def tenant(provision_tenant, box, workspace):
    """tenant(name, tier=..., conversations=, messages=, objects=) -> the active
    record of `dr-<name>`, provisioned for real and carrying history + objects."""

    def make(name: str, tier: Tier = Tier.pooled, conversations: int = 3, messages: int = 5, objects: int = 4):
        tenant_id = f"dr-{name}"
        fresh = workspace.registry.get(tenant_id) is None
        record = provision_tenant(tenant_id, tier=tier.value)
        if fresh:  # a tenant shared by several tests gets its data once
            write_history(box, record, conversations, messages)
            put_objects(box, record, objects)
        return workspace.registry.require(record.tenant_id)

    return make


def failing(report) -> str:
    return " | ".join(report.reasons)


def latest(ctx, record):
    """The newest backup's manifest, opened with the tenant's key."""
    return store.load_manifest(ctx.s3, ctx.kms, record, store.latest_backup(ctx.s3, record).backup_id)


def test_drill_restores_a_copy_that_matches_the_tenant(ctx, box, tenant, tenantctl_cli, tmp_path):
    record = tenant("a")
    res = record.resources
    before = len(scratch_databases(box))
    report = drill(ctx, record)
    assert report.verdict is Verdict.passed, failing(report)
    assert report.backup_kind == "pg_dump-schema" and report.cleaned_up
    names = {c.name for c in report.checks}
    assert {"table messages: rows", "table messages: checksum", "objects: keys, sizes, ETags"} <= names
    messages = next(c for c in report.checks if c.name == "table messages: rows")
    assert messages.expected == messages.actual == "15"
    assert report.object_count == 4 and report.rto_seconds is not None and report.rpo_seconds is not None
    assert len(scratch_databases(box)) == before  # scratch database dropped
    manifest = latest(ctx, record)
    assert manifest.backup_id == report.backup_id and manifest.reason == "manual"
    assert manifest.spec["id"] == record.tenant_id  # what a restore after deprovision re-provisions

    # Restore again and keep the copy: every row and object equals the live tenant's.
    result = restore(ctx, record, manifest)
    try:
        assert result.database.startswith("drill_") and result.database != res.store.database
        assert rows(box, result.database, res.store.schema_name) == rows(box, res.store.database, res.store.schema_name)
        s3 = box.client("s3")
        for entry in manifest.objects:
            live = s3.get_object(Bucket=res.bucket, Key=res.prefix + entry.key)["Body"].read()
            copy = s3.get_object(Bucket=res.bucket, Key=result.object_prefix + entry.key)["Body"].read()
            assert copy == live
        assert objects(box, record)["uploads/0.txt"].startswith(b"v2")
    finally:
        cleanup(ctx, record, result)

    assert [r.drill_id for r in list_reports(ctx.s3, record)] == [report.drill_id]
    assert latest_verdicts([record], s3=ctx.s3)[record.tenant_id].verdict == "pass"
    markdown = render_markdown(report)
    assert "**PASS**" in markdown and "table messages: checksum" in markdown

    # --markdown into directories that do not exist yet: made before the drill, not an error after it.
    out = tmp_path / "reports" / "nightly" / "drill.md"
    ran = tenantctl_cli("drill", "run", record.tenant_id, "--backup", report.backup_id, "--markdown", str(out))
    assert ran.returncode == 0, ran.stderr
    assert f"tenant `{record.tenant_id}`" in out.read_text() and "**PASS**" in out.read_text()


def scratch_instances(box, record) -> list[str]:
    return [i["DBInstanceIdentifier"] for i in box.client("rds").describe_db_instances()["DBInstances"]
            if i["DBInstanceIdentifier"].startswith(f"drill-{record.tenant_id}")]


def test_dedicated_drills_on_the_sandbox_take_both_paths(ctx, box, tenant):
    """A logical dump into a scratch database (rows verified) and the snapshot
    into a scratch instance (posture verified on what moto's RDS reports),
    both removed afterwards."""
    record = tenant(DEDICATED, Tier.dedicated, conversations=2, messages=3, objects=1)
    assert record.resources.store.database == naming.database_name(record.tenant_id)
    report = drill(ctx, record)
    assert report.verdict is Verdict.passed, failing(report)
    assert report.backup_kind == "logical (sandbox)"
    assert "logical (sandbox)" in render_markdown(report)
    checks = {c.name: c for c in report.checks}
    assert checks["table messages: rows"].ok and checks["table messages: rows"].actual == "6"
    posture = [f"scratch instance: {what}" for what in ("not public", "the tenant's key", "security groups",
                                                        "subnet group", "tags", "deleted afterwards")]
    assert all(checks[name].ok for name in posture), [checks.get(n) for n in posture]
    assert checks["scratch instance: the tenant's key"].actual == record.resources.kms_key_arn
    assert checks["scratch instance: deleted afterwards"].actual == "gone"
    assert report.cleaned_up and scratch_instances(box, record) == []
    assert latest(ctx, record).snapshot.instance == naming.rds_identifier(record.tenant_id)

    # The checks can fail: a scratch instance made public behind the drill's back.
    result = restore(ctx, record, latest(ctx, record))
    try:
        assert result.scratch_instance in scratch_instances(box, record)
        box.client("rds").modify_db_instance(DBInstanceIdentifier=result.scratch_instance, PubliclyAccessible=True,
                                             ApplyImmediately=True)
        found = {c.name: c for c in verify(ctx, record, latest(ctx, record), result)}
        assert not found["scratch instance: not public"].ok and found["table messages: checksum"].ok
    finally:
        assert all(c.ok for c in cleanup(ctx, record, result))
    assert scratch_instances(box, record) == []

    # Limits for CI: any restore takes longer than 0 s; a day-old RPO limit holds for a fresh backup.
    limited = drill(ctx, record, backup_id="latest", max_rto=0.0, max_rpo=86400)
    assert limited.verdict is Verdict.failed and all(c.ok for c in limited.checks)
    assert [r for r in limited.reasons if "exceeds" in r] == [f"RTO {limited.rto_seconds:.1f}s exceeds --max-rto 0s"]


def test_a_corrupted_backup_fails_the_drill_with_a_clear_verdict(ctx, box, tenant):
    record = tenant("corrupt")
    manifest = backup(ctx, record)
    res = record.resources
    s3 = box.client("s3")
    blob = bytearray(s3.get_object(Bucket=res.bucket, Key=manifest.dump.key)["Body"].read())
    blob[len(blob) // 2] ^= 0x01
    s3.put_object(Bucket=res.bucket, Key=manifest.dump.key, Body=bytes(blob))
    before = scratch_databases(box)
    report = drill(ctx, record, backup_id=manifest.backup_id)
    assert report.verdict is Verdict.failed
    assert "failed AES-GCM authentication" in failing(report)
    assert scratch_databases(box) == before
    assert "**FAIL**" in render_markdown(report) and "AES-GCM" in render_markdown(report)
    assert latest_verdicts([record], s3=ctx.s3)[record.tenant_id].verdict == "fail"


def test_a_changed_row_after_restore_fails_verification(ctx, box, tenant):
    """The checksums see content, not just counts: a restored row changed behind
    the drill's back makes the verdict fail."""
    record = tenant("tamper")
    manifest = backup(ctx, record)
    result = restore(ctx, record, manifest)
    try:
        with box.admin(result.database) as conn:
            conn.execute(sql.SQL("UPDATE {} SET metadata = '{{\"n\": 99}}' "
                                 "WHERE seq = (SELECT min(seq) FROM {})").format(
                sql.Identifier(result.schema_name, "messages"), sql.Identifier(result.schema_name, "messages")))
        checks = {c.name: c for c in verify(ctx, record, manifest, result)}
        assert checks["table messages: rows"].ok and not checks["table messages: checksum"].ok
        assert checks["table conversations: checksum"].ok
    finally:
        cleanup(ctx, record, result)


def test_a_tenant_cannot_restore_another_tenants_backup(ctx, box, tenant):
    a, b = tenant("iso-a"), tenant("iso-b")
    assert a.resources.bucket == b.resources.bucket  # one shared bucket: only prefix and key separate them
    bucket = a.resources.bucket
    s3 = box.client("s3")
    theirs = backup(ctx, b)
    with pytest.raises(NotFound):
        drill(ctx, a, backup_id=theirs.backup_id)  # only A's prefix is ever read
    # B's backup copied into A's prefix is refused before any decryption: its index names B.
    src, dst = store.backup_dir(b, theirs.backup_id), store.backup_dir(a, theirs.backup_id)
    for name in (store.DUMP, store.MANIFEST, store.INDEX):
        s3.copy_object(Bucket=bucket, Key=dst + name, CopySource={"Bucket": bucket, "Key": src + name})
    report = drill(ctx, a, backup_id=theirs.backup_id)
    assert report.verdict is Verdict.failed and f"names tenant {b.tenant_id!r}" in failing(report)
    # Even with its index rewritten to name A it stays closed: A's key and encryption
    # context cannot open B's data key, so neither its manifest nor its dump opens.
    index = store.backup_index(s3, b, theirs.backup_id).model_copy(update={"tenant_id": a.tenant_id})
    s3.put_object(Bucket=bucket, Key=dst + store.INDEX, Body=index.model_dump_json().encode())
    report = drill(ctx, a, backup_id=theirs.backup_id)
    assert report.verdict is Verdict.failed
    assert report.key_unusable and "KMS refused to decrypt the backup's data key" in failing(report)


def test_everything_a_backup_writes_is_under_the_tenants_key(ctx, box, tenant, tenantctl_cli):
    """Dump and manifest: sealed with a data key of the tenant key and stored
    SSE-KMS under it; only the index is in clear, and it holds no tenant data.
    History lists backups from the indexes without a KMS call."""
    record = tenant("shred", conversations=2, messages=2, objects=2)
    res = record.resources
    backup(ctx, record)  # an older one: history lists the newest first
    manifest = backup(ctx, record)
    s3 = box.client("s3")
    where = store.backup_dir(record, manifest.backup_id)
    stored = {o["Key"][len(where):] for o in s3.list_objects_v2(Bucket=res.bucket, Prefix=where)["Contents"]}
    assert stored == {store.DUMP, store.MANIFEST, store.INDEX}
    for name in (store.DUMP, store.MANIFEST):
        head = s3.head_object(Bucket=res.bucket, Key=where + name)
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == res.kms_key_arn, name
    sealed = s3.get_object(Bucket=res.bucket, Key=where + store.MANIFEST)["Body"].read()
    for secret in (b"messages", b"uploads/0.txt", manifest.tables["messages"].checksum.encode(),
                   manifest.dump.sha256.encode(), res.store.secret_arn.encode()):
        assert secret not in sealed
    index = json.loads(s3.get_object(Bucket=res.bucket, Key=where + store.INDEX)["Body"].read())
    assert set(index) == {"format", "backup_id", "tenant_id", "kind", "reason", "started_at", "finished_at",
                          "key_arn", "encrypted_data_key", "manifest_nonce", "stored_bytes", "spec", "workspace"}
    assert "messages" not in json.dumps(index) and "uploads/" not in json.dumps(index)
    # Another tenant's key opens none of it.
    other = tenant("shred-other")
    stranger = record.model_copy(update={"resources": res.model_copy(update={"kms_key_arn":
                                                                              other.resources.kms_key_arn})})
    with pytest.raises(KeyUnusable, match="KMS refused"):
        store.load_manifest(ctx.s3, ctx.kms, stranger, manifest.backup_id)
    # Listing needs no key: history works with KMS out of the way.
    calls = []
    ctx.kms.meta.events.register("before-call.kms", lambda **kw: calls.append(kw["model"].name))
    assert [i.backup_id for i in store.list_backups(ctx.s3, record)][-1] == manifest.backup_id and calls == []
    listed = json.loads(tenantctl_cli("drill", "history", record.tenant_id, "--json").stdout)
    # Newest first, as `drills` and the tables are.
    assert listed["backups"][0]["backup_id"] == manifest.backup_id and len(listed["backups"]) > 1
    assert listed["backups"][0]["stored_bytes"] == manifest.dump.stored_bytes
    finished = [b["finished_at"] for b in listed["backups"]]
    assert finished == sorted(finished, reverse=True)


def test_a_backup_of_the_earlier_layout_is_still_restored(ctx, box, tenant):
    """Format 1 (before manifests were sealed): manifest.json in clear, no index."""
    record = tenant("shred")
    manifest = backup(ctx, record)
    s3, where = box.client("s3"), store.backup_dir(record, manifest.backup_id)
    for name in (store.INDEX, store.MANIFEST):
        s3.delete_object(Bucket=record.resources.bucket, Key=where + name)
    legacy = manifest.model_copy(update={"format": 1})
    s3.put_object(Bucket=record.resources.bucket, Key=where + store.LEGACY_MANIFEST, Body=legacy.model_dump_json())
    index = store.backup_index(s3, record, manifest.backup_id)
    assert index.format == 1 and index.encrypted_data_key is None and index.kind == manifest.kind
    report = drill(ctx, record, backup_id=manifest.backup_id)
    assert report.verdict is Verdict.passed, failing(report)


def test_the_dump_compression_is_chosen_recorded_and_restored_or_refused(ctx, box, tenant, tenantctl_cli):
    """--compress: each method the sandbox's pg_dump has, and zstd, which
    tenantctl applies to the dump's stream itself (the embedded build has no
    zstd), is recorded in the manifest and restores to an equal copy; a method
    pg_dump lacks (lz4 in the embedded build) is refused with exit 3 before
    anything is written, for a backup, a drill and a restore of a dump that
    names it."""
    record = tenant("shred")
    res = record.resources
    with ctx.connect(res.store.endpoint, res.store.port, res.store.database) as conn:
        tools = find_tools(server_major(conn), ctx.pg_bin_dir)
    methods = supported(tools)
    gzip = backup(ctx, record)
    assert gzip.compression == "gzip"  # the default, recorded
    assert "zstd" in methods and gzip.stream_compression is None
    stored = {}
    for method in (m for m in methods if m != "gzip"):
        report = drill(ctx, record, compression=Compression(method))
        assert report.verdict is Verdict.passed, (method, failing(report))
        manifest = store.load_manifest(ctx.s3, ctx.kms, record, report.backup_id)
        assert manifest.compression == method
        assert manifest.stream_compression == ("zstd" if method == "zstd" else None)
        stored[method] = manifest.dump.plaintext_bytes
    # Really uncompressed: the same rows take more bytes than gzip's, and than zstd's.
    assert stored["none"] > max(gzip.dump.plaintext_bytes, stored["zstd"])

    lacking = [m for m in METHODS if m not in methods]
    if not lacking:
        pytest.skip(f"this pg_dump supports every method ({', '.join(methods)}): nothing to refuse")
    backups, drills = len(store.list_backups(ctx.s3, record)), len(list_reports(ctx.s3, record))
    for args in (["backup", record.tenant_id], ["run", record.tenant_id]):
        run = tenantctl_cli("drill", *args, "--compress", f"{lacking[0]}:1", "--json")
        assert run.returncode == 3, (args, run.stdout, run.stderr)
        refused = json.loads(run.stdout)["error"]
        assert refused["code"] == 3 and f"--compress {lacking[0]}:1" in refused["message"]
        assert f"they support: {', '.join(methods)}" in refused["message"], refused["message"]
        # Refused before any work or progress: no "dumping (zstd:1)..." line for a dump that never starts.
        assert "dumping" not in run.stderr and "backing up" not in run.stderr, run.stderr
    assert len(store.list_backups(ctx.s3, record)) == backups and len(list_reports(ctx.s3, record)) == drills
    scratch = scratch_databases(box)
    with pytest.raises(CompressionUnsupported, match=f"cannot restore a dump compressed with --compress {lacking[0]}"):
        restore(ctx, record, gzip.model_copy(update={"compression": lacking[0]}))
    assert scratch_databases(box) == scratch  # refused before the scratch database was made
    backups = len(store.list_backups(ctx.s3, record))
    with pytest.raises(CompressionUnsupported, match="cannot restore a dump compressed"):
        restore(ctx, record, gzip.model_copy(update={"compression": lacking[0]}),
                target=Target.in_place, yes=True, overwrite=True)
    # Refused before the before-overwrite backup: nothing written for a restore that can't run.
    assert len(store.list_backups(ctx.s3, record)) == backups


def test_drills_refuse_a_tenant_another_run_holds_or_mid_deprovision(ctx, tenant, workspace, tenantctl_cli):
    """A backup, a drill and a scratch restore of a tenant whose lock another live run holds (an
    in-place restore here) are a conflict naming the holder (exit 5; nothing written or recorded),
    not a failed drill (exit 9); `drill run --all` skips it saying why; this process's own lock (a
    deprovision's final backup) lets its backup through. A tenant left `deprovisioning` is
    mid-operation: exit 5, as docs/drills.md says."""
    from tenantctl.drills.run import drill_each
    from tenantctl.models import TenantLock

    record = tenant("held")
    tid = record.tenant_id
    backup(ctx, record)  # one for the scratch restore
    backups, drills = len(store.list_backups(ctx.s3, record)), len(list_reports(ctx.s3, record))
    other = TenantLock(operation="drill-restore", owner="qa", host=socket.gethostname(), pid=os.getppid())
    listed = workspace.registry.save(workspace.registry.require(tid), lock=other)
    try:
        for args in (["backup", tid], ["run", tid], ["restore", tid]):
            run = tenantctl_cli("drill", *args, "--json")
            assert run.returncode == 5, (args, run.stdout, run.stderr)
            assert "locked by a running drill-restore" in json.loads(run.stdout)["error"]["message"], run.stdout
        # Deprovisioned and locked: the lock is the refusal (exit 5, the holder named), before the revive's checks.
        held = workspace.registry.require(tid)
        workspace.registry.save(held, status=TenantStatus.deprovisioned, retain_until=utcnow() + timedelta(days=1))
        try:
            tomb = tenantctl_cli("drill", "restore", tid, "--target", "in-place", "--yes", "--json")
        finally:
            workspace.registry.save(workspace.registry.require(tid), status=TenantStatus.active, retain_until=None)
        assert tomb.returncode == 5, (tomb.stdout, tomb.stderr)
        assert "locked by a running drill-restore (owner qa" in json.loads(tomb.stdout)["error"]["message"], tomb.stdout
        skipped, refused = [], []
        sweep = drill_each([(listed, None)], lambda r, scope: drill(ctx, r), refused.append,
                           lambda r, why: skipped.append((r.tenant_id, why)))
        assert (sweep.drills, sweep.failed, refused) == ([], [], []) and skipped[0][0] == tid, (skipped, refused)
        assert [s.tenant_id for s in sweep.skipped] == [tid] and sweep.exit_code() == 0
        assert "locked by a running drill-restore" in skipped[0][1]
    finally:
        workspace.registry.save(workspace.registry.require(tid), lock=None)
    assert (len(store.list_backups(ctx.s3, record)), len(list_reports(ctx.s3, record))) == (backups, drills)
    with workspace.registry.hold(tid, "deprovision"):  # its own run's lock
        assert backup(ctx, workspace.registry.require(tid), reason="final").reason == "final"
    workspace.registry.save(workspace.registry.require(tid), status=TenantStatus.deprovisioning)
    try:
        stuck = tenantctl_cli("drill", "backup", tid, "--json")
    finally:
        workspace.registry.save(workspace.registry.require(tid), status=TenantStatus.active)
    assert stuck.returncode == 5, (stuck.stdout, stuck.stderr)
    assert "deprovisioning" in json.loads(stuck.stdout)["error"]["message"]


def test_a_scratch_drill_reads_the_registry_once_for_the_lock(ctx, tenant, workspace):
    """A drill taking its own backup leaves the lock check to that backup (one GetItem, not two); one of a
    named backup checks it itself (the restore would read it otherwise unchecked)."""
    record = tenant("held")
    reads = []
    count = lambda **kw: reads.append(1)  # noqa: E731
    ctx.registry.client.meta.events.register("before-call.dynamodb.GetItem", count)
    try:
        fresh = drill(ctx, record)
        fresh_reads = len(reads)
        reads.clear()
        named = drill(ctx, record, backup_id=fresh.backup_id)
    finally:
        ctx.registry.client.meta.events.unregister("before-call.dynamodb.GetItem", count)
    assert fresh.verdict is Verdict.passed and named.verdict is Verdict.passed, (failing(fresh), failing(named))
    assert (fresh_reads, len(reads)) == (1, 1)


def test_in_place_restores_a_live_tenant_only_with_yes_into_empty_tables(ctx, box, tenant, workspace, tenantctl_cli):
    record = tenant("inplace")
    res = record.resources
    written = history(box, record)
    live_rows = rows(box, res.store.database, res.store.schema_name)
    manifest = backup(ctx, record)
    with pytest.raises(InvalidInput, match="--yes"):
        restore(ctx, record, manifest, target=Target.in_place)
    drills_before = list_reports(ctx.s3, record)
    with pytest.raises(Conflict, match=r"is not empty: refused \(context_items: 1 rows"):
        drill(ctx, record, backup_id=manifest.backup_id, target=Target.in_place, yes=True)
    refused = tenantctl_cli("drill", "restore", record.tenant_id, "--backup", manifest.backup_id,
                            "--target", "in-place", "--yes")
    assert refused.returncode == 5 and "is not empty: refused" in refused.stderr, refused
    # A conflict is not a drill: no failed drill in the history, nothing in the record.
    assert list_reports(ctx.s3, record) == drills_before
    after = workspace.registry.require(record.tenant_id)
    assert after.lock is None and after.last_error is None and after.version == record.version

    # The data is lost (tables emptied, an upload deleted); the tables provisioning made are an empty target.
    with box.admin(res.store.database) as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(
            sql.Identifier(res.store.schema_name, t) for t in STORE_TABLES)))
    box.client("s3").delete_object(Bucket=res.bucket, Key=res.prefix + "uploads/3.txt")
    report = drill(ctx, record, backup_id=manifest.backup_id, target=Target.in_place, yes=True)
    assert report.verdict is Verdict.passed, failing(report)
    assert rows(box, res.store.database, res.store.schema_name) == live_rows
    assert history(box, record) == written  # the runtime reads it again, as the tenant role under RLS
    assert set(objects(box, record)) == {o.key for o in manifest.objects if o.key.startswith("uploads/")}
    assert workspace.registry.require(record.tenant_id).status is TenantStatus.active


def test_a_key_pending_deletion_is_reported(ctx, box, tenant, tenantctl_cli):
    record = tenant("pending")
    backup(ctx, record)
    box.client("kms").schedule_key_deletion(KeyId=record.resources.kms_key_arn.rsplit("/", 1)[-1],
                                            PendingWindowInDays=7)
    with pytest.raises(KeyUnusable, match="pending deletion"):
        backup(ctx, record)
    report = drill(ctx, record, backup_id="latest")
    assert report.verdict is Verdict.failed
    assert report.key_unusable and "is pending deletion (deleted on " in failing(report)
    for args in (["run", record.tenant_id], ["restore", record.tenant_id]):
        run = tenantctl_cli("drill", *args)
        assert run.returncode == 10, (args, run.stdout, run.stderr)  # documented: 10, the key is unusable


def test_overwrite_backs_the_live_tenant_up_first(ctx, box, tenant, workspace, monkeypatch):
    """... with one admin connection to the maintenance database for the dump
    check before the backup and the restore after it."""
    record = tenant("overwrite", conversations=2, messages=3)
    res = record.resources
    manifest = backup(ctx, record)
    at_backup = rows(box, res.store.database, res.store.schema_name)
    write_history(box, record, conversations=1, messages=4, context_items=0)  # written after the backup
    live = rows(box, res.store.database, res.store.schema_name)
    assert len(live["messages"]) == len(at_backup["messages"]) + 4

    # As a reindex after the backup recorded it: the restored store holds the backup's index, so it goes.
    workspace.registry.save(workspace.registry.require(record.tenant_id), search_analyzers={"": "v1"})
    opened: list[str] = []
    connect = ctx.connect
    monkeypatch.setattr(ctx, "connect", lambda host, port, database, **kw: (
        opened.append(database), connect(host, port, database, **kw))[1])
    report = drill(ctx, record, backup_id=manifest.backup_id, target=Target.in_place, yes=True, overwrite=True)
    monkeypatch.undo()
    assert report.verdict is Verdict.passed, failing(report)
    assert workspace.registry.require(record.tenant_id).search_analyzers == {}
    assert opened.count("postgres") == 1, opened
    assert rows(box, res.store.database, res.store.schema_name) == at_backup
    [note] = [n for n in report.notes if "backed up before being overwritten" in n]
    kept = store.load_manifest(ctx.s3, ctx.kms, record, re.search(r"backup (\S+) \(", note).group(1))
    assert kept.reason == "before-overwrite" and kept.tables["messages"].rows == len(live["messages"])
    assert workspace.registry.require(record.tenant_id).lock is None
    with pytest.raises(InvalidInput, match="'--target in-place' only"):
        restore(ctx, record, manifest, overwrite=True)


def test_an_overwrite_that_fails_leaves_the_live_tenant_as_it_was(ctx, box, tenant):
    """A backup whose dump fails authentication, restored --overwrite: the live
    schema is put back with its rows (not left empty), nothing set aside is left."""
    record = tenant("overwrite", conversations=2, messages=3)
    res = record.resources
    manifest = backup(ctx, record)
    s3 = box.client("s3")
    blob = bytearray(s3.get_object(Bucket=res.bucket, Key=manifest.dump.key)["Body"].read())
    blob[len(blob) // 2] ^= 0x01
    s3.put_object(Bucket=res.bucket, Key=manifest.dump.key, Body=bytes(blob))
    live, read = rows(box, res.store.database, res.store.schema_name), history(box, record)
    assert live["messages"]

    report = drill(ctx, record, backup_id=manifest.backup_id, target=Target.in_place, yes=True, overwrite=True)
    assert report.verdict is Verdict.failed and "AES-GCM" in failing(report)
    assert rows(box, res.store.database, res.store.schema_name) == live
    [note] = [n for n in report.notes if "backed up before being overwritten" in n]  # as when it passes
    kept = store.load_manifest(ctx.s3, ctx.kms, record, re.search(r"backup (\S+) \(", note).group(1))
    assert kept.reason == "before-overwrite" and kept.tables["messages"].rows == len(live["messages"])
    assert history(box, record) == read  # the tenant role still reads it through the runtime
    with box.admin(res.store.database) as conn:
        schemas = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                                              (res.store.schema_name + "%",))]
    assert schemas == [res.store.schema_name]


@pytest.mark.parametrize("tier", [Tier.pooled, Tier.dedicated])
def test_restore_after_deprovision_brings_the_tenant_back(ctx, box, tenant, workspace, tier, sandbox):
    record = tenant(f"revive-{tier.value}", tier)
    # Recorded as hibernating (its instance's state is the runtime's and `resume`'s business, not this test's):
    # the flag goes with the store, and one an older tenantctl left on the tombstone goes at the revive.
    sleeping = Hibernation(db_instance=naming.rds_identifier(record.tenant_id), region=record.region)
    record = workspace.registry.save(record, hibernation=sleeping)
    assert (record.hibernation == sleeping) is (tier is Tier.dedicated)  # a pooled store has no instance to stop
    res = record.resources
    written = history(box, record)
    live_rows = rows(box, res.store.database, res.store.schema_name)
    live_objects = objects(box, record)
    kms, s3 = box.client("kms"), box.client("s3")

    tomb, _, details = deprovision(workspace, record.tenant_id)
    assert tomb.status is TenantStatus.deprovisioned and tomb.retain_until is not None
    assert tomb.hibernation is None
    write_record(sandbox, tomb.model_copy(update={"hibernation": sleeping}))
    final = store.load_manifest(s3, ctx.kms, tomb, details["final_backup"])
    assert final.reason == "final" and final.tables["messages"].rows == 15
    assert kms.describe_key(KeyId=res.kms_key_arn)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    with box.admin() as conn:  # the schema (dedicated: the whole database) is gone
        database_left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (res.store.database,)).fetchone()
        assert (database_left is None) is (tier is Tier.dedicated)
    if tier is Tier.pooled:
        with box.admin(res.store.database) as conn:
            assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                (res.store.schema_name,)).fetchone() is None
    s3.put_object(Bucket=res.bucket, Key=res.prefix + "uploads/after-deprovision.txt", Body=b"later")

    report = drill(ctx, tomb, backup_id="latest", target=Target.in_place, yes=True,
                   restorer=functools.partial(revive, workspace))
    assert report.verdict is Verdict.passed, failing(report)
    assert report.backup_id == final.backup_id and report.rto_seconds > 0
    assert any("re-provisioned" in n for n in report.notes), report.notes
    if tier is Tier.dedicated:  # the first deprovision's final snapshot, set aside for the next one
        assert any(f"tenantctl-{record.tenant_id}-final-" in n for n in report.notes), report.notes

    back = workspace.registry.require(record.tenant_id)
    assert back.status is TenantStatus.active and back.retain_until is None and back.lock is None
    assert back.hibernation is None
    new = back.resources
    # Everything the engine destroyed is there again; the key is a new one (the old stack's key is gone).
    assert new.kms_key_arn != res.kms_key_arn
    assert kms.describe_key(KeyId=naming.kms_alias(record.tenant_id))["KeyMetadata"]["Arn"] == new.kms_key_arn
    assert kms.describe_key(KeyId=new.kms_key_arn)["KeyMetadata"]["KeyState"] == "Enabled"
    assert kms.describe_key(KeyId=res.kms_key_arn)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    box.client("sqs").get_queue_attributes(QueueUrl=new.queue_url, AttributeNames=["QueueArn"])
    box.client("iam").get_role(RoleName=naming.iam_role_name(record.tenant_id))
    alarms = box.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"tenantctl-{record.tenant_id}-")["MetricAlarms"]
    assert len(alarms) == (4 if tier is Tier.dedicated else 2)

    # The data: rows as they were (message content re-sealed under the new key), read by the runtime again.
    now_rows = rows(box, new.store.database, new.store.schema_name)
    assert now_rows["conversations"] == live_rows["conversations"]
    assert now_rows["context_items"] == live_rows["context_items"]
    content = 4  # tenant_id, conversation_id, seq, role, *content*, metadata, created_at
    assert [r[:content] + r[content + 1:] for r in now_rows["messages"]] == \
        [r[:content] + r[content + 1:] for r in live_rows["messages"]]
    assert all(a[content] != b[content] for a, b in zip(now_rows["messages"], live_rows["messages"], strict=True))
    assert history(box, back) == written
    # Objects: the backup's versions, the later upload gone (a delete marker), SSE-KMS under the new key.
    assert objects(box, back) == live_objects
    for key in live_objects:
        head = s3.head_object(Bucket=new.bucket, Key=new.prefix + key)
        assert head["SSEKMSKeyId"].rsplit("/", 1)[-1] == new.kms_key_arn.rsplit("/", 1)[-1]

    # A new backup chain under the new key, and the next drill of the live tenant passes.
    after = latest(ctx, back)
    assert after.reason == "after-restore" and after.key_arn == new.kms_key_arn
    assert drill(ctx, back).verdict is Verdict.passed

    # Deprovisioned again without a final backup; past the retention window nothing is restored.
    backups = len(store.list_backups(s3, back))
    again, _, details = deprovision(workspace, record.tenant_id, final_backup=False)
    assert details["final_backup"] is None and len(store.list_backups(s3, again)) == backups
    if tier is Tier.dedicated:
        snapshots = {snap["DBSnapshotIdentifier"] for snap in box.client("rds").describe_db_snapshots()["DBSnapshots"]}
        final = f"tenantctl-{record.tenant_id}-final"
        assert final in snapshots and any(name.startswith(final + "-") for name in snapshots)
    expired = again.model_copy(update={"retain_until": again.retain_until.replace(year=2000)})
    with pytest.raises(InvalidInput, match="retention window ended"):
        revive(workspace, ctx, expired, store.backup_index(s3, again, after.backup_id), target=Target.in_place,
               yes=True)


def key_state(box, key_arn: str) -> str:
    return box.client("kms").describe_key(KeyId=key_arn)["KeyMetadata"]["KeyState"]


def promise_other_rows(ctx, record, backup_id: str) -> BackupIndex:
    """The backup's manifest sealed again (as an operator holding the key
    could) promising another messages checksum than its dump holds: a restore
    of it cannot verify. ``record``: the backup's owner (a workspace's view)."""
    manifest = store.load_manifest(ctx.s3, ctx.kms, record, backup_id)
    messages = manifest.tables["messages"].model_copy(update={"checksum": "12345"})
    manifest = manifest.model_copy(update={"tables": {**manifest.tables, "messages": messages}})
    index = store.backup_index(ctx.s3, record, backup_id)
    context = envelope.encryption_context(record.tenant_id, backup_id, manifest.workspace)
    plain = envelope.open_data_key(ctx.kms, record.resources.kms_key_arn, index.encrypted_data_key, context)
    return store.put_backup(ctx.s3, record, manifest, envelope.DataKey(plain, index.encrypted_data_key, b""))


def test_a_restore_after_deprovision_that_cannot_verify_leaves_the_tenant_deprovisioned(ctx, box, tenant, workspace):
    record = tenant("revive-bad", conversations=1, messages=2, objects=1)
    tomb, _, details = deprovision(workspace, record.tenant_id)
    index = promise_other_rows(ctx, tomb, details["final_backup"])
    report = drill(ctx, tomb, backup_id=index.backup_id, target=Target.in_place, yes=True,
                   restorer=functools.partial(revive, workspace))
    assert report.verdict is Verdict.failed
    assert any("stays deprovisioned" in n for n in report.notes), report.notes
    still = workspace.registry.require(record.tenant_id)
    assert still.status is TenantStatus.deprovisioned and still.lock is None
    assert "verification failed" in still.last_error
    # The backup's key stays usable for another attempt.
    assert key_state(box, tomb.resources.kms_key_arn) == "Enabled"
    assert workspace.engine.holds_resources(tomb.current_stack)  # the copy, kept for inspection
    with pytest.raises(Conflict, match="kept for inspection"):  # a re-run neither overwrites nor removes it
        revive(workspace, ctx, workspace.registry.require(record.tenant_id), index, target=Target.in_place,
               yes=True)
    assert workspace.engine.holds_resources(tomb.current_stack)
    named = [f for f in audit(workspace).findings if f.tenant_id == record.tenant_id and f.kind == "unclaimed"]
    assert named and all(f"`tenantctl deprovision {record.tenant_id}` removes it" in f.detail for f in named), named
    # A deprovision of the tombstone removes what that revive created; then there is nothing left to remove.
    _, _, removed = deprovision(workspace, record.tenant_id)
    assert removed["revive_leftovers_removed"] > 0 and not workspace.engine.holds_resources(tomb.current_stack)
    assert key_state(box, tomb.resources.kms_key_arn) == "PendingDeletion"
    with pytest.raises(Conflict, match="already deprovisioned"):
        deprovision(workspace, record.tenant_id)


def test_a_tombstones_purge_erases_what_its_deprovision_kept(ctx, box, tenant, workspace, sandbox, project, tmp_path):
    """An erasure asked for after a deprovision that kept the tenant's objects and its final backup:
    `deprovision ID --purge-data` on the tombstone asks first (refused without a terminal, nothing
    deleted), then deletes every object version under its prefixes, backups included, under its lock;
    the tenant stays a tombstone. Run again it purges nothing (exit 0); without --purge-data there is
    nothing to do: exit 5, as before."""
    record = tenant("purge-later", conversations=1, messages=2, objects=1)
    tid = record.tenant_id
    tomb, _, details = deprovision(workspace, tid)
    s3 = box.client("s3")

    def kept() -> list[str]:
        return [v["Key"] for prefix in purged_prefixes(tomb)
                for page in s3.get_paginator("list_object_versions").paginate(Bucket=tomb.resources.bucket,
                                                                             Prefix=prefix)
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]

    before = kept()
    assert details["final_backup"] and any(details["final_backup"] in key for key in before), before
    cli = Cli.create(sandbox, tmp_path)
    asked = cli("deprovision", tid, "--purge-data", cwd=project)
    assert asked.returncode == 13 and "it can never be restored" in asked.stdout + asked.stderr, asked
    assert kept() == before
    purged = cli("deprovision", tid, "--purge-data", "--yes", "--json", cwd=project)
    assert purged.returncode == 0, purged
    assert (purged.json()["purged_objects"], purged.json()["revive_leftovers_removed"]) == (len(before), 0), purged
    assert kept() == []
    after = workspace.registry.require(tid)
    assert (after.status, after.lock) == (TenantStatus.deprovisioned, None)
    again = cli("deprovision", tid, "--purge-data", "--yes", cwd=project)
    assert again.returncode == 0 and "0 objects purged" in again.stdout, again
    plain = cli("deprovision", tid, "--yes", cwd=project)
    assert plain.returncode == 5 and "already deprovisioned" in plain.stderr, plain


def test_a_revive_killed_anywhere_counts_its_slot_only_with_its_tombstone(ctx, tenant, workspace, sandbox, project,
                                                                         tmp_path):
    """A revive takes its cell's slot in one transaction with its first write of the tombstone (the lock,
    marked as holding the slot), which the recount counts: killed just before it, nothing is taken; killed
    in its up, the locked tombstone holds the slot; the cell's counter always equals a recount of its records.
    A live holder's lock refuses a revive (exit 5, naming it); a dead one's is taken over by the re-run, as
    provision and move take theirs over. `unlock` gives a killed revive up: the lock and the slot with its
    mark go back in one write. A revive that fails while its slot's give-back fails too keeps its own error
    (warning how to give the slot back: `unlock`, locked or not). The last re-run brings the tenant back."""
    record = tenant("revive-kill", conversations=1, messages=2, objects=1)
    tid, cell = record.tenant_id, record.cell
    deprovision(workspace, tid)
    cli = Cli.create(sandbox, tmp_path)
    restore = ("drill", "restore", tid, "--target", "in-place", "--yes")
    drift = slot_drift(workspace, cell)

    def killed(step: str) -> TenantRecord:
        run = cli(*restore, env={FAULT_AFTER_ENV: step}, cwd=project)
        assert run.returncode == FAULT_EXIT_CODE, run
        assert slot_drift(workspace, cell) == drift, step
        return workspace.registry.require(tid)

    assert killed("revive:locking").lock is None  # before the first write
    tomb = killed("2")  # at the up's 2nd resource write
    assert tomb.status is TenantStatus.deprovisioned and tomb.lock is not None and tomb.reviving
    live = workspace.registry.save(tomb, lock=new_lock("drill-restore"))  # this test's process: alive
    refused = cli(*restore, "--json", cwd=project)
    assert refused.returncode == 5 and f"pid {os.getpid()}" in refused.stdout, refused
    workspace.registry.save(live, lock=tomb.lock)

    given_up = cli("unlock", tid, cwd=project)
    assert given_up.returncode == 0 and f"pooled slot of cell {cell} given back" in given_up.stdout, given_up
    tomb = workspace.registry.require(tid)
    assert tomb.lock is None and not tomb.reviving and slot_drift(workspace, cell) == drift

    assert killed("2").reviving  # a slot taken again
    # The re-run takes the dead lock over; the backup's key throttled, it fails at its manifest, and its
    # slot's give-back (a TransactWriteItems) is throttled as well.
    state, rules = tmp_path / "throttle.json", {"kms.Decrypt": 0.001, "dynamodb.TransactWriteItems": 0.001}
    for rule, rate in rules.items():
        SharedTokenBucket(state).take(rule, rate)  # the burst taken: every such call is throttled
    failed = cli(*restore, "--json", cwd=project, env={
        FAULT_THROTTLE_ENV: ",".join(f"{rule}={rate}" for rule, rate in rules.items()),
        FAULT_THROTTLE_FILE_ENV: str(state), THROTTLE_ATTEMPTS_ENV: "1"})
    assert failed.returncode == 9, failed  # its own failure: the drill's verdict, with its reason
    [reason] = failed.json()["reasons"]
    assert "could not decrypt the backup's data key" in reason and "registry" not in reason, reason
    assert "lock cleared" in failed.stderr and f"`tenantctl unlock {tid}` gives it back" in failed.stderr, failed
    tomb = workspace.registry.require(tid)
    assert tomb.lock is None and tomb.reviving and slot_drift(workspace, cell) == drift  # the slot, counted
    given_up = cli("unlock", tid, cwd=project)
    assert given_up.returncode == 0 and "not locked" in given_up.stdout and "given back" in given_up.stdout
    assert not workspace.registry.require(tid).reviving and slot_drift(workspace, cell) == drift

    again = cli(*restore, "--json", cwd=project)
    assert again.returncode == 0, again
    assert workspace.registry.require(tid).status is TenantStatus.active
    assert slot_drift(workspace, cell) == drift


def assert_nothing_of_the_revive_left(workspace, tomb: TenantRecord, drift) -> None:
    """A given-up revive's tombstone: no resource in its stack, no stack file, nothing live tagged for it
    (its old key pending deletion again: the tail of a deletion), its slot given back with its mark."""
    tid = tomb.tenant_id
    assert not workspace.engine.holds_resources(tomb.current_stack)
    assert not (workspace.stacks_dir / f"Pulumi.{tomb.current_stack}.yaml").exists()
    clients = workspace.cell_clients(tomb.cell)
    live = [t.arn for t in inventory.scan(clients, [tomb.region], tenant=tid)  # snapshots: kept by design
            if not t.retained and inventory.is_live(clients, t)]
    assert live == [], live
    now = workspace.registry.require(tid)
    assert now.status is TenantStatus.deprovisioned and now.lock is None and not now.reviving
    assert slot_drift(workspace, tomb.cell) == drift


@pytest.mark.parametrize("tier", [Tier.pooled, Tier.dedicated])
def test_a_given_up_revive_leaves_nothing_it_created(ctx, box, tenant, workspace, sandbox, project, tmp_path, tier):
    """What a revive's up created goes with its give-up: failed after its up (its objects' restore
    throttled), or killed in its up and then `unlock`ed — no stack state, no stack file, nothing live
    tagged for the tombstone (its old key pending deletion again). A re-run after each converges. A
    dedicated tenant's destroy takes its final snapshot's name: the deprovision's is set aside first."""
    record = tenant(f"revive-gone-{tier.value}", tier, conversations=1, messages=2, objects=1)
    tid, cell = record.tenant_id, record.cell
    tomb, _, _ = deprovision(workspace, tid)
    cli = Cli.create(sandbox, tmp_path)
    restore = ("drill", "restore", tid, "--target", "in-place", "--yes")
    drift = slot_drift(workspace, cell)

    state, rule = tmp_path / "throttle.json", "s3.CopyObject"
    SharedTokenBucket(state).take(rule, 0.001)  # the burst taken: every such call is throttled
    failed = cli(*restore, "--json", cwd=project, env={FAULT_THROTTLE_ENV: f"{rule}=0.001",
                                                      FAULT_THROTTLE_FILE_ENV: str(state), THROTTLE_ATTEMPTS_ENV: "1"})
    assert failed.returncode not in (0, FAULT_EXIT_CODE) and "CopyObject" in failed.stdout + failed.stderr, failed
    # The failure says what its give-up removed, as `unlock` does.
    assert f"note: tenant {tid!r}: revive given up, still deprovisioned: " in failed.stderr, failed.stderr
    assert "its revive created destroyed; old key scheduled for deletion again" in failed.stderr, failed.stderr
    assert_nothing_of_the_revive_left(workspace, tomb, drift)

    killed = cli(*restore, env={FAULT_AFTER_ENV: "4"}, cwd=project)
    assert killed.returncode == FAULT_EXIT_CODE, killed
    assert workspace.engine.holds_resources(tomb.current_stack)  # what the killed up made, till its give-up
    given_up = cli("unlock", tid, cwd=project)
    assert given_up.returncode == 0 and "its revive created destroyed" in given_up.stdout, given_up
    assert_nothing_of_the_revive_left(workspace, tomb, drift)

    again = cli(*restore, "--json", cwd=project)
    assert again.returncode == 0, again
    assert workspace.registry.require(tid).status is TenantStatus.active
    assert slot_drift(workspace, cell) == drift
    if tier is Tier.dedicated:  # the deprovision's final snapshot and the given-up revive's, both set aside
        final = f"tenantctl-{tid}-final"
        names = {s["DBSnapshotIdentifier"] for s in box.client("rds").describe_db_snapshots()["DBSnapshots"]}
        assert final not in names and len({n for n in names if n.startswith(final + "-")}) == 2, names


def test_a_killed_revives_rerun_adopts_the_key_its_up_made_never_the_old_one(ctx, box, tenant, workspace, sandbox,
                                                                            project, tmp_path):
    """The old key carries the urn tag the engine finds a half-created key by, and the re-run enables it
    before its up: killed just after its new key is made (not yet in the stack's state), the re-run adopts
    that new key, re-keys onto it and schedules the old one's deletion (before: it adopted the old key,
    re-keyed nothing, scheduled nothing, and the new key was left live, claimed by nothing)."""
    record = tenant("revive-rekey", conversations=1, messages=2, objects=1)
    tid, written = record.tenant_id, history(box, record)
    tomb, _, _ = deprovision(workspace, tid)
    old, cli = tomb.resources.kms_key_arn, Cli.create(sandbox, tmp_path)
    restore = ("drill", "restore", tid, "--target", "in-place", "--yes")
    killed = cli(*restore, env={FAULT_AFTER_ENV: "2", FAULT_POINT_ENV: "unrecorded"}, cwd=project)
    assert killed.returncode == FAULT_EXIT_CODE, killed
    state = StateFile(workspace.engine.state_root, tomb.current_stack).load()
    assert [r.status for r in state.resources if r.type == "aws:kms/key:Key"] == ["creating"], state

    again = cli(*restore, "--json", cwd=project)
    assert again.returncode == 0, again
    back = workspace.registry.require(tid)
    kms = box.client("kms")
    of_stack = {k["KeyId"]: key_state(box, k["KeyId"]) for k in listed(kms, "list_keys", "Keys")
                if any(t["TagKey"] == "tenantctl:urn" and t["TagValue"].startswith(f"urn:pulumi:{tid}::")
                       for t in kms.list_resource_tags(KeyId=k["KeyId"])["Tags"])}
    old_id, new_id = old.rsplit("/", 1)[-1], back.resources.kms_key_arn.rsplit("/", 1)[-1]
    assert of_stack == {new_id: "Enabled", old_id: "PendingDeletion"}, (of_stack, new_id)  # no key left unclaimed
    assert any(n.startswith("re-keyed to the new key") for n in again.json()["notes"]), again.json()["notes"]
    assert history(box, back) == written  # read by the runtime, under the new key


def test_restore_after_deprovision_brings_the_workspaces_back_with_their_data(ctx, box, provision_tenant, workspace,
                                                                            tenantctl_cli):
    """Workspace ``ops`` (9 messages written through tenant_runtime, an object
    under its key) comes back with its tenant: its final backup restored into
    the re-provisioned workspace under its old key, verified, re-keyed to its
    new key. Its final backup, made under that earlier key, is then refused on
    the live workspace naming the key (exit 10). Deprovisioned again with a
    workspace backup that cannot verify: the tenant comes back, the drill
    fails, the workspace's old key stays enabled for another attempt."""
    tid = "dr-revive-ws"
    record = provision_tenant(tid, workspaces=[{"name": "ops"}])
    was, s3 = record.workspaces["ops"], box.client("s3")
    written = conversation(box, record, "ops", "ops-1", [message_text(1, n) for n in range(9)])
    s3.put_object(Bucket=record.resources.bucket, Key=f"{was.prefix}uploads/ops.txt", Body=b"ops' object",
                  ServerSideEncryption="aws:kms", SSEKMSKeyId=was.kms_key_arn)
    _, _, details = deprovision(workspace, tid)
    final = details["workspace_final_backups"]["ops"]

    run = tenantctl_cli("drill", "restore", tid, "--target", "in-place", "--yes", "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    checks = {c["name"]: (c["actual"], c["ok"]) for c in report["checks"]}
    assert checks["workspace ops: table messages: rows"] == ("9", True), report["checks"]
    assert any(n.startswith(f"workspace ops: backup {final} restored and verified; re-keyed") for n in report["notes"])
    back = workspace.registry.require(tid)
    now = back.workspaces["ops"]
    assert back.status is TenantStatus.active and now.kms_key_arn != was.kms_key_arn
    assert (key_state(box, was.kms_key_arn), key_state(box, now.kms_key_arn)) == ("PendingDeletion", "Enabled")
    assert conversation(box, back, "ops", "ops-1") == written  # read by the runtime, under the new key
    head = s3.head_object(Bucket=back.resources.bucket, Key=f"{now.prefix}uploads/ops.txt")
    assert head["SSEKMSKeyId"].rsplit("/", 1)[-1] == now.kms_key_arn.rsplit("/", 1)[-1]
    after = store.latest_backup(s3, workspace_view(back, "ops"))
    assert (after.reason, after.key_arn) == ("after-restore", now.kms_key_arn)

    refused = tenantctl_cli("drill", "restore", tid, "--workspace", "ops", "--backup", final, "--json")
    assert refused.returncode == 10, refused.stdout + refused.stderr
    [reason] = json.loads(refused.stdout)["reasons"]
    assert f"made under an earlier key of workspace ops of {tid}, {was.kms_key_arn} (PendingDeletion" in reason
    assert f"`tenantctl workspace remove {tid} ops --yes`" in reason and "tampered" not in reason

    tomb, _, details = deprovision(workspace, tid)
    promise_other_rows(ctx, workspace_view(tomb, "ops"), details["workspace_final_backups"]["ops"])
    report = drill(ctx, tomb, backup_id="latest", target=Target.in_place, yes=True,
                   restorer=functools.partial(revive, workspace))
    assert [c.name for c in report.checks if not c.ok] == ["workspace ops: table messages: checksum"]
    assert report.verdict is Verdict.failed
    assert any("workspace ops: restored copy" in n and "try again" in n for n in report.notes), report.notes
    assert workspace.registry.require(tid).status is TenantStatus.active  # its own data verified: it is back
    assert key_state(box, now.kms_key_arn) == "Enabled"  # the workspace's old key, for another attempt
    assert key_state(box, tomb.resources.kms_key_arn) == "PendingDeletion"
    deprovision(workspace, tid, final_backup=False)


def test_dedicated_on_aws_uses_rds_snapshots(ctx, box, tenant):
    """The AWS path against moto's RDS, on the instance the LocalEngine created
    for a dedicated tenant: snapshot backup with checksums from the database,
    restore into a scratch instance, scratch removed on clean-up. (moto's
    instances accept no connections, so verification is not run here.)"""
    record = tenant(DEDICATED, Tier.dedicated, conversations=2, messages=3, objects=1)
    rds = box.client("rds")
    instance = naming.rds_identifier(record.tenant_id)
    assert rds.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"]
    aws = dataclasses.replace(ctx, rds=rds, is_sandbox=False)
    manifest = backup(aws, record)
    assert manifest.kind == "rds-snapshot" and manifest.dump is None
    assert manifest.tables["messages"].rows == 6 and len(manifest.objects) == 1
    snaps = rds.describe_db_snapshots(DBSnapshotIdentifier=manifest.snapshot.identifier)["DBSnapshots"]
    assert snaps[0]["DBInstanceIdentifier"] == instance
    assert latest(ctx, record).snapshot == manifest.snapshot

    result = restore(aws, record, manifest)
    assert result.scratch_instance.startswith("drill-") and result.scratch_instance != instance
    restored = rds.describe_db_instances(DBInstanceIdentifier=result.scratch_instance)["DBInstances"][0]
    assert restored["DBInstanceStatus"] == "available"
    with pytest.raises(InvalidInput, match="RDS snapshot"):
        restore(aws, record, manifest, target=Target.in_place, yes=True)
    cleanup(aws, record, result)
    left = [i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]]
    assert result.scratch_instance not in left and instance in left
