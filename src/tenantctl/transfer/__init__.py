"""What a move carries from a tenant's old place to its new one, a module per
kind of thing: ``store_sync`` one store following another by logical
replication (the write freeze, the comparison), ``row_relay`` the trigger relay
between stores of different keys (every sealed column re-wrapped on the way),
``rewrap`` a tenant's sealed blobs carried to a key of another account or
region, ``prefix_sync`` a prefix's objects kept in step between two buckets,
``queue_forward`` the jobs left in the old queues, ``backup_carry`` the
backups, made readable under the new key. The moves themselves (phases,
registry record, rollback) are ``tenantctl.operations.move*``."""
