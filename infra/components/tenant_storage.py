"""TenantStorage: the tenant's prefix in the shared bucket and its lifecycle
rules (merged into the bucket's single lifecycle configuration)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from infra.providers.prefix_lifecycle import PrefixLifecycleArgs, PrefixLifecycleRules
from tenantctl import naming
from tenantctl.bucket_lifecycle import tenant_rules
from tenantctl.models import LifecycleSpec


@dataclass
class TenantStorageArgs:
    tenant_id: str
    region: str
    bucket: pulumi.Input[str]
    lifecycle: LifecycleSpec


class TenantStorage(pulumi.ComponentResource):
    def __init__(self, name: str, args: TenantStorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:s3:TenantStorage", name, None, opts)
        self.prefix = naming.s3_prefix(args.tenant_id)
        lc = args.lifecycle
        rules = tenant_rules(args.tenant_id, self.prefix, lc.temp_upload_days, lc.abort_multipart_days,
                             lc.archive_transition_days, lc.archive_expiry_days)
        PrefixLifecycleRules(f"{name}-lifecycle", PrefixLifecycleArgs(
            tenant_id=args.tenant_id, region=args.region, bucket=args.bucket, prefix=self.prefix, rules=rules),
            opts=pulumi.ResourceOptions(parent=self))
        self.bucket = pulumi.Output.from_input(args.bucket)
        self.register_outputs({"bucket": self.bucket, "prefix": self.prefix})
