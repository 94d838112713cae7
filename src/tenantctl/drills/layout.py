"""What marks a backup as the operator's: the folder under an owner's prefix it
lives in and the ``purpose`` of its KMS encryption context. The tenant role's
policy (infra.components.tenant_role) denies both to the tenant, so nothing a
restore reads can have been written or sealed by the tenant's own workload."""

BACKUPS = "backups/"  # <prefix>backups/<backup-id>/ (drill reports and scratch restores under it too)
BACKUP_PURPOSE = "backup"  # kms:EncryptionContext:purpose of every backup data key
