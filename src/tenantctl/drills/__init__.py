"""Backup / restore drills: per-tenant encrypted backups under the tenant's own
prefix, restores into scratch targets, verification against the backup-time
manifest, and RTO/RPO reports kept as drill history.

Drills never provision: bringing a deprovisioned tenant back is a lifecycle
operation (``tenantctl.operations.revive``) that uses ``restore_logical`` and
``rekey`` from here. ``rds`` is the AWS snapshot path of dedicated tenants.
"""
