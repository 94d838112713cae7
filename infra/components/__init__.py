"""One ComponentResource per concern. Platform: PrivateNetwork (the shared
VPC), PostgresInstance (the shared database), SharedBucket, RegistryTable,
TenantKey (the platform key). Tenant: TenantKey, TenantRole, TenantSecret,
TenantQueue, TenantStorage, TenantDatabase (which reuses PrivateNetwork and
PostgresInstance for the dedicated tier), TenantAlarms, TenantWorkspace (one per
workspace of the tenant: the tenant's components again under the workspace's names)."""
