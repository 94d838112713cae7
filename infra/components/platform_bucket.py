"""SharedBucket: the bucket a cell's tenant prefixes live in. Public access
blocked, TLS-only bucket policy, versioning, SSE-KMS by default with the
cell's platform key (the runtime writes each tenant's objects with that
tenant's own key), and the cell's whole lifecycle configuration: one rule per
retention class, declared once here (tenantctl.bucket_lifecycle)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from tenantctl.bucket_lifecycle import CLASS_TAG, TENANTS_PREFIX, ClassRule


@dataclass
class SharedBucketArgs:
    bucket_name: str
    kms_key_arn: pulumi.Input[str]
    tags: dict[str, str]
    lifecycle_rules: Sequence[ClassRule] = field(default_factory=list)


def lifecycle_rule(rule: ClassRule) -> aws.s3.BucketLifecycleConfigurationRuleArgs:
    """One retention-class rule as pulumi-aws declares it."""
    if rule.tag is None:
        where = aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=TENANTS_PREFIX)
    else:
        tagged = aws.s3.BucketLifecycleConfigurationRuleFilterAndArgs(prefix=TENANTS_PREFIX, tags={CLASS_TAG: rule.tag})
        where = aws.s3.BucketLifecycleConfigurationRuleFilterArgs(and_=tagged)
    return aws.s3.BucketLifecycleConfigurationRuleArgs(
        id=rule.id, status="Enabled", filter=where,
        expiration=(aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=rule.expiration_days)
                    if rule.expiration_days is not None else None),
        transitions=([aws.s3.BucketLifecycleConfigurationRuleTransitionArgs(days=rule.glacier_after_days,
                                                                             storage_class="GLACIER")]
                     if rule.glacier_after_days is not None else None),
        abort_incomplete_multipart_upload=(
            aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                days_after_initiation=rule.abort_multipart_days) if rule.abort_multipart_days is not None else None))


def tls_only_policy(bucket_arn: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [bucket_arn, pulumi.Output.concat(bucket_arn, "/*")],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }]})


class SharedBucket(pulumi.ComponentResource):
    bucket: pulumi.Output[str]
    arn: pulumi.Output[str]

    def __init__(self, name: str, args: SharedBucketArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:s3:SharedBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(f"{name}-bucket", bucket=args.bucket_name, force_destroy=False,
                               tags=args.tags, opts=child)
        block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access", bucket=bucket.bucket, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=child)
        # After the block: S3 refuses policies while a public-policy check is pending.
        aws.s3.BucketPolicy(f"{name}-policy", bucket=bucket.bucket, policy=tls_only_policy(bucket.arn),
                            opts=pulumi.ResourceOptions(parent=self, depends_on=[block]))
        aws.s3.BucketVersioning(f"{name}-versioning", bucket=bucket.bucket,
                                versioning_configuration={"status": "Enabled"}, opts=child)
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-sse", bucket=bucket.bucket,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms",
                                                                 "kms_master_key_id": args.kms_key_arn},
                    "bucket_key_enabled": True}],
            opts=child)
        if args.lifecycle_rules:
            # The whole configuration, owned here: a tenant never writes lifecycle rules.
            aws.s3.BucketLifecycleConfiguration(f"{name}-lifecycle", bucket=bucket.bucket,
                                                rules=[lifecycle_rule(r) for r in args.lifecycle_rules], opts=child)
        self.bucket = bucket.bucket
        self.arn = bucket.arn
        self.register_outputs({"bucket": self.bucket, "arn": self.arn})
