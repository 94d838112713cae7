"""TenantStorage: the tenant's prefix in its cell's shared bucket.

It declares no lifecycle rule: the cell's bucket holds one rule per retention
class (infra.components.platform_bucket), and the tenant's objects carry the
class tag its spec picks. Tenants applied before cells owned three rules
through a PrefixLifecycleRules child; that child is no longer declared, so
their next apply deletes it (which removes those rules from the bucket)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from tenantctl import naming


@dataclass
class TenantStorageArgs:
    tenant_id: str
    bucket: pulumi.Input[str]


class TenantStorage(pulumi.ComponentResource):
    def __init__(self, name: str, args: TenantStorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:s3:TenantStorage", name, None, opts)
        self.prefix = naming.s3_prefix(args.tenant_id)
        self.bucket = pulumi.Output.from_input(args.bucket)
        self.register_outputs({"bucket": self.bucket, "prefix": self.prefix})
