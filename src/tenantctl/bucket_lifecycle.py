"""Lifecycle rules of a cell's shared bucket.

S3 holds ONE lifecycle configuration per bucket, of at most ``MAX_RULES`` rules.

**Retention classes** (what tenants use): the cell's platform stack declares
the whole configuration once: one rule per class of its menu
(``CellSpec.retention``), matching objects under ``tenants/`` that carry the
object tag ``tenantctl-class=<class>``, plus one rule aborting incomplete
multipart uploads under ``tenants/`` (S3 cannot filter that action by tag).
A tenant's spec picks classes from the menu; the runtime tags what it uploads
(``TenantResources.lifecycle_classes``). Provisioning a tenant writes no
lifecycle configuration at all, and the rule count does not grow with tenants.

**Per-tenant rules** (legacy, before cells): each tenant owned 3 rules whose id
carries its id AND whose filter lies under its prefix (the id alone would let
`acme` claim `acme-corp`'s rules), merged read-modify-write into the one
configuration by ``infra.providers.prefix_lifecycle``. That provider now only
runs to remove such rules when a tenant applied before cells is next applied
(its resource is no longer declared); the model stays here for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tenant_runtime.objects import CLASS_TAG  # the tag the runtime's uploads carry: one definition
from tenantctl.models import S3_MAX_LIFECYCLE_RULES as MAX_RULES  # S3's per-bucket limit
from tenantctl.models import RetentionMenu
from tenantctl.naming import resource_name

TENANTS_PREFIX = "tenants/"  # every tenant prefix is tenants/<id>/
TMP, ARCHIVE = "tmp", "archive"  # the runtime's retention argument; TenantResources.lifecycle_classes keys


def tmp_class(days: int) -> str:
    return f"tmp-{days}d"


def archive_class(transition_days: int, expiry_days: int) -> str:
    return f"archive-{transition_days}d-{expiry_days}d"


def tenant_classes(temp_upload_days: int, archive_transition_days: int, archive_expiry_days: int) -> dict[str, str]:
    """The tag values of the classes a tenant's lifecycle spec picks."""
    return {TMP: tmp_class(temp_upload_days), ARCHIVE: archive_class(archive_transition_days, archive_expiry_days)}


@dataclass(frozen=True)
class ClassRule:
    """One rule of a cell's configuration, independent of API spelling."""

    id: str
    tag: str | None  # the class tag value it matches (None: the whole tenants/ prefix)
    expiration_days: int | None = None
    glacier_after_days: int | None = None
    abort_multipart_days: int | None = None

    def s3(self) -> dict[str, Any]:
        """In the S3 API's shape (PutBucketLifecycleConfiguration)."""
        rule: dict[str, Any] = {"ID": self.id, "Status": "Enabled"}
        if self.tag is None:
            rule["Filter"] = {"Prefix": TENANTS_PREFIX}
        else:
            rule["Filter"] = {"And": {"Prefix": TENANTS_PREFIX, "Tags": [{"Key": CLASS_TAG, "Value": self.tag}]}}
        if self.glacier_after_days is not None:
            rule["Transitions"] = [{"Days": self.glacier_after_days, "StorageClass": "GLACIER"}]
        if self.expiration_days is not None:
            rule["Expiration"] = {"Days": self.expiration_days}
        if self.abort_multipart_days is not None:
            rule["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": self.abort_multipart_days}
        return rule


def cell_rules(menu: RetentionMenu, abort_multipart_days: int) -> list[ClassRule]:
    """A cell's whole configuration: a rule per retention class, and the abort rule."""
    rules = [ClassRule(id=f"tenantctl-class-{tmp_class(d)}", tag=tmp_class(d), expiration_days=d)
             for d in menu.temp_upload_days]
    rules += [ClassRule(id=f"tenantctl-class-{archive_class(a.transition_days, a.expiry_days)}",
                        tag=archive_class(a.transition_days, a.expiry_days), expiration_days=a.expiry_days,
                        glacier_after_days=a.transition_days) for a in menu.archive]
    rules.append(ClassRule(id="tenantctl-abort-multipart", tag=None, abort_multipart_days=abort_multipart_days))
    if len(rules) > MAX_RULES:
        raise ValueError(f"{len(rules)} lifecycle rules: S3 allows {MAX_RULES} per bucket")
    return rules


# -- per-tenant rules (legacy) ------------------------------------------------------


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
