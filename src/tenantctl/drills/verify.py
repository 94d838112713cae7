"""Compare a restored target with the backup's manifest: per-table row counts
and checksums, object count, sizes and ETags, and a scratch instance's
posture (not public, the tenant's key, its security groups and subnet group,
tags). Nothing compared = not verified."""

from __future__ import annotations

from tenantctl.drills.context import DrillContext
from tenantctl.drills.models import BackupManifest, Check, RestoreResult
from tenantctl.drills.objects import verify_objects
from tenantctl.drills.tables import table_checks
from tenantctl.models import TenantRecord
from tenantctl.naming import OwnerNames


def compare_tables(expected: dict, actual: dict) -> list[Check]:
    checks = []
    for name in sorted(set(expected) | set(actual)):
        want, got = expected.get(name), actual.get(name)
        checks.append(Check(name=f"table {name}: rows", expected=str(want.rows) if want else "absent",
                            actual=str(got.rows) if got else "absent",
                            ok=bool(want and got and want.rows == got.rows)))
        checks.append(Check(name=f"table {name}: checksum", expected=want.checksum if want else "absent",
                            actual=got.checksum if got else "absent",
                            ok=bool(want and got and want.checksum == got.checksum)))
    return checks


def verify(ctx: DrillContext, record: TenantRecord, manifest: BackupManifest, result: RestoreResult) -> list[Check]:
    with ctx.connect(result.host, result.port, result.database) as conn:
        actual = table_checks(conn, result.schema_name, OwnerNames(record.tenant_id, manifest.workspace).key)
    checks = compare_tables(manifest.tables, actual)
    if not manifest.tables:
        checks.append(Check(name="tables", expected="at least one table in the backup", actual="none", ok=False))
    checks += verify_objects(ctx.s3, record.resources.bucket, result.object_prefix, manifest.objects)
    if result.scratch_instance:
        from tenantctl.drills.rds import instance_checks

        checks += instance_checks(ctx, record, result.scratch_instance)
    return checks
