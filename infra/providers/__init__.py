"""Dynamic providers: the work Pulumi's AWS provider cannot do.

Each resource passes an input ``kind``; the LocalEngine looks the provider up
here and calls the very same create/diff/update/delete with the props dict,
instead of unpickling the ``__provider`` Pulumi stores.
"""

from infra.providers.database_acl import KIND as DATABASE_ACL
from infra.providers.database_acl import DatabaseAclProvider
from infra.providers.gateway_role import KIND as GATEWAY_ROLE
from infra.providers.gateway_role import GatewayRoleProvider
from infra.providers.prefix_lifecycle import KIND as PREFIX_LIFECYCLE
from infra.providers.prefix_lifecycle import PrefixLifecycleProvider
from infra.providers.tenant_schema import KIND as TENANT_SCHEMA
from infra.providers.tenant_schema import TenantSchemaProvider

PROVIDERS = {
    TENANT_SCHEMA: TenantSchemaProvider,
    PREFIX_LIFECYCLE: PrefixLifecycleProvider,
    DATABASE_ACL: DatabaseAclProvider,
    GATEWAY_ROLE: GatewayRoleProvider,
}

__all__ = ["DATABASE_ACL", "GATEWAY_ROLE", "PROVIDERS", "PREFIX_LIFECYCLE", "TENANT_SCHEMA", "DatabaseAclProvider",
           "GatewayRoleProvider", "PrefixLifecycleProvider", "TenantSchemaProvider"]
