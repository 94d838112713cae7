"""RDS instances: encryption, no public access, deletion protection and
backups, hardening (IAM auth, log exports, monitoring, a TLS-forcing
parameter group), a multi-AZ shared instance, PUBLIC stripped of its grants."""

from __future__ import annotations

from collections.abc import Iterator

from tenantctl.policy.plan import (
    MIN_BACKUP_RETENTION_DAYS,
    REQUIRED_DB_LOG_EXPORTS,
    REQUIRED_DB_PARAMETERS,
    UNKNOWN,
    Plan,
    PlannedResource,
    as_list,
    known,
    rule,
)


def _instances(plan: Plan) -> Iterator[PlannedResource]:
    return plan.of("aws:rds/instance:Instance")


@rule("rds-encryption")
def _rds_encryption(plan: Plan):
    for r in _instances(plan):
        i = r.inputs
        if i.get("storageEncrypted") is not True:
            yield r.name, "storage not encrypted"
        elif not plan.platform and not plan.owns_key(r, "kmsKeyId", i.get("kmsKeyId") or ""):
            yield r.name, "dedicated storage not encrypted with this tenant's key"


@rule("public-database")
def _public_database(plan: Plan):
    for r in _instances(plan):
        if r.inputs.get("publiclyAccessible") is not False:
            yield r.name, "instance may be publicly accessible (publiclyAccessible must be false)"


@rule("deletion-protection")
def _deletion_protection(plan: Plan):
    for r in _instances(plan):
        if r.inputs.get("deletionProtection") is not True:
            yield r.name, "deletion protection is off"
        if r.inputs.get("skipFinalSnapshot") is True:
            yield r.name, "final snapshot skipped"


@rule("backup-retention")
def _backup_retention(plan: Plan):
    for r in _instances(plan):
        days = r.inputs.get("backupRetentionPeriod")
        if days == UNKNOWN:
            plan.unknown(r, "backupRetentionPeriod")
            continue
        if days is None:
            continue
        if int(days or 0) < MIN_BACKUP_RETENTION_DAYS:
            yield r.name, f"backup retention {days or 0} < {MIN_BACKUP_RETENTION_DAYS} days"


@rule("rds-hardening")
def _rds_hardening(plan: Plan):
    """IAM database authentication, log exports, enhanced monitoring, and a
    parameter group of its own that forces TLS."""
    groups = {str(g.inputs.get("name")): g.inputs for g in plan.of("aws:rds/parameterGroup:ParameterGroup")}
    for r in _instances(plan):
        i = r.inputs
        if i.get("iamDatabaseAuthenticationEnabled") is not True:
            yield r.name, "IAM database authentication is off"
        exports = as_list(i.get("enabledCloudwatchLogsExports"))
        if UNKNOWN not in exports and not set(REQUIRED_DB_LOG_EXPORTS) <= set(exports):
            yield r.name, f"log exports {sorted(exports)} lack {', '.join(REQUIRED_DB_LOG_EXPORTS)}"
        if not i.get("monitoringInterval") or not i.get("monitoringRoleArn"):
            yield r.name, "enhanced monitoring is off"
        name = i.get("parameterGroupName")
        if name == UNKNOWN:
            plan.unknown(r, "parameterGroupName")
        elif not name or str(name).startswith("default."):
            yield r.name, "default parameter group (rds.force_ssl not pinned)"
        elif name != UNKNOWN and str(name) in groups:
            pinned = {p.get("name"): str(p.get("value")) for p in as_list(groups[str(name)].get("parameters"))}
            for param, value in REQUIRED_DB_PARAMETERS.items():
                if pinned.get(param) != value:
                    yield r.name, f"parameter group {name} does not pin {param}={value}"


@rule("shared-db-multi-az")
def _shared_db_multi_az(plan: Plan):
    if not plan.platform:
        return
    for r in _instances(plan):
        if r.inputs.get("multiAz") is not True:
            yield r.name, "the shared database is single-AZ: every pooled tenant depends on it"


@rule("database-public-privileges")
def _database_public_privileges(plan: Plan):
    """Each instance's database strips PUBLIC of CONNECT and TEMPORARY (PostgreSQL
    grants both to PUBLIC on every new database)."""
    revoked = {str(r.inputs.get("database")) for r in plan.dynamic("database-acl")}
    if not plan.complete:  # the ACL comes after its instance in an up
        return
    for r in _instances(plan):
        database = r.inputs.get("dbName")
        if known(database) and str(database) not in revoked:
            yield r.name, f"PUBLIC keeps CONNECT and TEMPORARY on {database}"
