"""PrefixLifecycleRules: one tenant's lifecycle rules inside a shared bucket.

S3 holds ONE lifecycle configuration per bucket, so a per-tenant
BucketLifecycleConfiguration resource would overwrite every other tenant's.
This provider merges read-modify-write: it replaces only the rules it owns
(ids `tenantctl-<id>-...` filtered under tenants/<id>/) and leaves the rest.
Concurrent writers are serialised by the caller (see the README); the 1,000
rules-per-bucket limit is refused here before S3 is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

from infra.providers._diff import diff_inputs

KIND = "prefix-lifecycle"
MAX_RULES = 1000  # S3's per-bucket limit


class LifecycleLimitExceeded(RuntimeError):
    pass


def tenant_rules(tenant_id: str, prefix: str, temp_upload_days: int, abort_multipart_days: int,
                 archive_transition_days: int, archive_expiry_days: int) -> list[dict[str, Any]]:
    """The tenant's rules in the S3 API's shape (PutBucketLifecycleConfiguration)."""
    rid = f"tenantctl-{tenant_id}-"
    return [
        {"ID": rid + "tmp-expiry", "Status": "Enabled", "Filter": {"Prefix": prefix + "uploads/tmp/"},
         "Expiration": {"Days": temp_upload_days}},
        {"ID": rid + "abort-multipart", "Status": "Enabled", "Filter": {"Prefix": prefix},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": abort_multipart_days}},
        {"ID": rid + "archive", "Status": "Enabled", "Filter": {"Prefix": prefix + "archive/"},
         "Transitions": [{"Days": archive_transition_days, "StorageClass": "GLACIER"}],
         "Expiration": {"Days": archive_expiry_days}},
    ]


def _integral(value: Any) -> Any:
    """Pulumi numbers arrive as floats; S3's Days fields must be ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def _owned(rule: dict[str, Any], tenant_id: str, prefix: str) -> bool:
    # Both id and filter must match: `tenantctl-acme-...` alone would also
    # match tenant acme-corp's ids, `tenants/acme/` cannot.
    rule_prefix = (rule.get("Filter") or {}).get("Prefix", rule.get("Prefix", ""))
    return str(rule.get("ID", "")).startswith(f"tenantctl-{tenant_id}-") and rule_prefix.startswith(prefix)


def _s3(region: str):
    import boto3  # endpoint from AWS_ENDPOINT_URL on the sandbox

    return boto3.client("s3", region_name=region)


def _read_rules(s3, bucket: str) -> list[dict[str, Any]]:
    from botocore.exceptions import ClientError

    try:
        return s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchLifecycleConfiguration":
            return []
        raise


def _write_rules(props: dict[str, Any], own: list[dict[str, Any]]) -> None:
    s3 = _s3(props["region"])
    others = [r for r in _read_rules(s3, props["bucket"]) if not _owned(r, props["tenant_id"], props["prefix"])]
    rules = others + _integral(own)
    if len(rules) > MAX_RULES:
        raise LifecycleLimitExceeded(
            f"bucket {props['bucket']} would hold {len(rules)} lifecycle rules (S3 allows {MAX_RULES}): "
            "add a shared bucket shard before provisioning more tenants")
    if rules:
        s3.put_bucket_lifecycle_configuration(Bucket=props["bucket"], LifecycleConfiguration={"Rules": rules})
    else:
        s3.delete_bucket_lifecycle(Bucket=props["bucket"])


class PrefixLifecycleProvider(ResourceProvider):
    REPLACE_ON = ("bucket", "tenant_id", "prefix", "region")

    def create(self, props: dict[str, Any]) -> CreateResult:
        _write_rules(props, props["rules"])
        return CreateResult(f"{props['bucket']}/{props['prefix']}", {k: v for k, v in props.items() if not k.startswith("__")})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_inputs(olds, news, self.REPLACE_ON)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        _write_rules(news, news["rules"])
        return UpdateResult({k: v for k, v in news.items() if not k.startswith("__")})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _write_rules(props, [])


@dataclass
class PrefixLifecycleArgs:
    tenant_id: str
    region: str
    bucket: pulumi.Input[str]
    prefix: str
    rules: list[dict[str, Any]]


class PrefixLifecycleRules(pulumi.dynamic.Resource):
    bucket: pulumi.Output[str]
    prefix: pulumi.Output[str]

    def __init__(self, name: str, args: PrefixLifecycleArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {"kind": KIND, "tenant_id": args.tenant_id, "region": args.region, "bucket": args.bucket,
                 "prefix": args.prefix, "rules": args.rules}
        super().__init__(PrefixLifecycleProvider(), name, props, opts)
