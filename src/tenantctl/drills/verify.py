"""Compare a restored target with the backup's manifest: per-table row counts
and checksums, object count, sizes and ETags, and a scratch instance's
posture (not public, the tenant's key, its security groups and subnet group,
tags). Nothing compared = not verified."""

from __future__ import annotations

from tenant_runtime.tables import ADDED_TABLES, INDEX_COLUMNS, RETIRED_TABLES
from tenantctl.drills.context import DrillContext
from tenantctl.drills.models import BackupManifest, Check, RestoreResult
from tenantctl.drills.objects import verify_objects
from tenantctl.drills.tables import table_checks
from tenantctl.models import TenantRecord
from tenantctl.naming import OwnerNames


def compare_tables(expected: dict, actual: dict, retired: frozenset[str] = frozenset(),
                   added: frozenset[str] = frozenset(ADDED_TABLES)) -> list[Check]:
    """``retired``: tables the schema template drops (a backup of an earlier
    layout, re-applied in place); their rows are not expected back. ``added``:
    tables a backup from before them lacks, which the template creates empty."""
    checks = []
    for name in sorted(set(expected) | set(actual)):
        want, got = expected.get(name), actual.get(name)
        if not want and got and got.rows == 0 and name in added:
            checks.append(Check(name=f"table {name}: added", expected="absent (a backup from before it)",
                                actual="0 rows: created empty by the schema template", ok=True))
            continue
        if want and not got and name in retired:
            checks.append(Check(name=f"table {name}: retired", expected=f"{want.rows} rows (earlier index layout)",
                                actual="dropped by the schema template; the index is rebuilt from the items "
                                       "(tenantctl search reindex)", ok=True))
            continue
        checks.append(Check(name=f"table {name}: rows", expected=str(want.rows) if want else "absent",
                            actual=str(got.rows) if got else "absent",
                            ok=bool(want and got and want.rows == got.rows)))
        checks.append(Check(name=f"table {name}: checksum", expected=want.checksum if want else "absent",
                            actual=got.checksum if got else "absent",
                            ok=bool(want and got and want.checksum == got.checksum)))
    return checks


def verify(ctx: DrillContext, record: TenantRecord, manifest: BackupManifest, result: RestoreResult) -> list[Check]:
    # A backup of the earlier index layout: its items are compared without the
    # index columns added since (NULL until reindex; absent in a scratch copy).
    earlier = frozenset(manifest.tables) & frozenset(RETIRED_TABLES)
    with ctx.connect(result.host, result.port, result.database) as conn:
        actual = table_checks(conn, result.schema_name, OwnerNames(record.tenant_id, manifest.workspace).key,
                              without=INDEX_COLUMNS if earlier else None)
    checks = compare_tables(manifest.tables, actual, retired=earlier)
    if not manifest.tables:
        checks.append(Check(name="tables", expected="at least one table in the backup", actual="none", ok=False))
    checks += verify_objects(ctx.s3, record.resources.bucket, result.object_prefix, manifest.objects)
    if result.scratch_instance:
        from tenantctl.drills.rds import instance_checks

        checks += instance_checks(ctx, record, result.scratch_instance)
    return checks
