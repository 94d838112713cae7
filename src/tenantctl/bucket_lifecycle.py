"""A tenant's lifecycle rules inside the shared bucket's one lifecycle configuration.

S3 holds ONE lifecycle configuration per bucket, of at most ``MAX_RULES``
rules, so tenants' rules live side by side in it: each tenant owns the rules
whose id carries its id AND whose filter lies under its prefix (the id alone
would let `acme` claim `acme-corp`'s rules). The provider that writes them
(infra.providers.prefix_lifecycle) and the provision preflight that counts
them both read the model from here.
"""

from __future__ import annotations

from typing import Any

from tenantctl.naming import resource_name

MAX_RULES = 1000  # S3's per-bucket limit


def tenant_rules(tenant_id: str, prefix: str, temp_upload_days: int, abort_multipart_days: int,
                 archive_transition_days: int, archive_expiry_days: int) -> list[dict[str, Any]]:
    """The tenant's rules in the S3 API's shape (PutBucketLifecycleConfiguration)."""
    return [
        {"ID": resource_name(tenant_id, "tmp-expiry"), "Status": "Enabled",
         "Filter": {"Prefix": prefix + "uploads/tmp/"}, "Expiration": {"Days": temp_upload_days}},
        {"ID": resource_name(tenant_id, "abort-multipart"), "Status": "Enabled", "Filter": {"Prefix": prefix},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": abort_multipart_days}},
        {"ID": resource_name(tenant_id, "archive"), "Status": "Enabled", "Filter": {"Prefix": prefix + "archive/"},
         "Transitions": [{"Days": archive_transition_days, "StorageClass": "GLACIER"}],
         "Expiration": {"Days": archive_expiry_days}},
    ]


def owned(rule: dict[str, Any], tenant_id: str, prefix: str) -> bool:
    rule_prefix = (rule.get("Filter") or {}).get("Prefix", rule.get("Prefix", ""))
    return str(rule.get("ID", "")).startswith(f"tenantctl-{tenant_id}-") and rule_prefix.startswith(prefix)


def read_rules(s3: Any, bucket: str) -> list[dict[str, Any]]:
    """The bucket's rules ([] when it has no lifecycle configuration)."""
    from botocore.exceptions import ClientError

    try:
        return s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchLifecycleConfiguration":
            return []
        raise


def others_rules(s3: Any, bucket: str, tenant_id: str, prefix: str) -> list[dict[str, Any]]:
    """Every rule of the bucket that is not this tenant's."""
    return [r for r in read_rules(s3, bucket) if not owned(r, tenant_id, prefix)]
