"""Backup / restore drills: per-tenant encrypted backups under the tenant's own
prefix, restores into scratch targets, verification against the backup-time
manifest, and RTO/RPO reports kept as drill history.

One module per concern: ``envelope`` (streamed KMS envelope encryption),
``pgtools`` (pg_dump / pg_restore), ``tables`` (row counts and checksums),
``objects`` (prefix manifest and restore), ``rds`` (snapshots on AWS),
``backup`` (also the final backup `deprovision` takes), ``restore``,
``revive`` (restore after deprovision: re-provision, restore, verify) with
``rekey`` (restored ciphertext moved to the new tenant key), ``verify``,
``run`` (the drill), ``report`` and ``history``.
"""
