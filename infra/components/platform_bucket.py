"""SharedBucket: the bucket a cell's tenant prefixes live in. Public access
blocked, TLS-only bucket policy, ACLs disabled, versioning, SSE-KMS by default
with the cell's platform key (the runtime writes each tenant's objects with
that tenant's own key), the cell's whole lifecycle configuration: one rule per
retention class, declared once here (tenantctl.bucket_lifecycle), and server
access logging into a bucket of its own (logs kept a year).

The access-log bucket is locked down the same way except for its default
encryption: S3 log delivery cannot write into a bucket whose default is
SSE-KMS, so it is SSE-S3 (the gate's ``bucket-encryption`` rule allows that
for a logging target only). Its policy lets the S3 logging service write
this account's shared bucket's logs, and nothing else.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from tenantctl.bucket_lifecycle import CLASS_TAG, TENANTS_PREFIX, ClassRule

ACCESS_LOG_PREFIX = "s3-access/"
ACCESS_LOG_DAYS = 365


@dataclass
class SharedBucketArgs:
    bucket_name: str
    logs_bucket_name: str
    account_id: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    tags: dict[str, str]
    lifecycle_rules: Sequence[ClassRule] = field(default_factory=list)
    # Only while `tenantctl cell remove` destroys the cell: S3 deletes no bucket that holds objects.
    force_destroy: bool = False


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


def _deny_insecure_transport(bucket_arn: pulumi.Input[str]) -> dict[str, Any]:
    return {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": [bucket_arn, pulumi.Output.concat(bucket_arn, "/*")],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}


def tls_only_policy(bucket_arn: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": [_deny_insecure_transport(bucket_arn)]})


def access_logs_policy(logs_bucket_arn: pulumi.Input[str], source_bucket_arn: pulumi.Input[str],
                       account: pulumi.Input[str]) -> pulumi.Output[str]:
    """TLS only; the S3 logging service may put the source bucket's logs, for this account."""
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": [
        _deny_insecure_transport(logs_bucket_arn),
        {"Sid": "S3ServerAccessLogs", "Effect": "Allow", "Principal": {"Service": "logging.s3.amazonaws.com"},
         "Action": "s3:PutObject", "Resource": pulumi.Output.concat(logs_bucket_arn, "/", ACCESS_LOG_PREFIX, "*"),
         "Condition": {"StringEquals": {"aws:SourceAccount": account},
                       "ArnLike": {"aws:SourceArn": source_bucket_arn}}},
    ]})


def _locked_bucket(name: str, bucket_name: str, sse: dict[str, Any], policy: Any, tags: dict[str, str],
                   parent: pulumi.Resource, force_destroy: bool) -> tuple[aws.s3.Bucket, aws.s3.BucketPolicy]:
    """A bucket with every public path closed, ACLs disabled, versioning and the given default encryption.
    ``policy``: the bucket ARN -> its policy document."""
    child = pulumi.ResourceOptions(parent=parent)
    bucket = aws.s3.Bucket(f"{name}-bucket", bucket=bucket_name, force_destroy=force_destroy, tags=tags, opts=child)
    block = aws.s3.BucketPublicAccessBlock(
        f"{name}-public-access", bucket=bucket.bucket, block_public_acls=True, block_public_policy=True,
        ignore_public_acls=True, restrict_public_buckets=True, opts=child)
    # After the block: S3 refuses policies while a public-policy check is pending.
    bucket_policy = aws.s3.BucketPolicy(f"{name}-policy", bucket=bucket.bucket, policy=policy(bucket.arn),
                                        opts=pulumi.ResourceOptions(parent=parent, depends_on=[block]))
    aws.s3.BucketOwnershipControls(f"{name}-ownership", bucket=bucket.bucket,
                                   rule={"object_ownership": "BucketOwnerEnforced"}, opts=child)
    aws.s3.BucketVersioning(f"{name}-versioning", bucket=bucket.bucket,
                            versioning_configuration={"status": "Enabled"}, opts=child)
    aws.s3.BucketServerSideEncryptionConfiguration(f"{name}-sse", bucket=bucket.bucket, rules=[sse], opts=child)
    return bucket, bucket_policy


class SharedBucket(pulumi.ComponentResource):
    bucket: pulumi.Output[str]
    arn: pulumi.Output[str]

    def __init__(self, name: str, args: SharedBucketArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:s3:SharedBucket", name, None, opts)
        bucket, _ = _locked_bucket(
            name, args.bucket_name,
            {"apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms",
                                                         "kms_master_key_id": args.kms_key_arn},
             "bucket_key_enabled": True},
            tls_only_policy, args.tags, self, args.force_destroy)
        logs, logs_policy = _locked_bucket(
            f"{name}-access-logs", args.logs_bucket_name,
            {"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}},
            lambda arn: access_logs_policy(arn, bucket.arn, args.account_id), args.tags, self, args.force_destroy)
        if args.lifecycle_rules:
            # The whole configuration, owned here: a tenant never writes lifecycle rules.
            aws.s3.BucketLifecycleConfiguration(f"{name}-lifecycle", bucket=bucket.bucket,
                                                rules=[lifecycle_rule(r) for r in args.lifecycle_rules],
                                                opts=pulumi.ResourceOptions(parent=self))
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-access-logs-lifecycle", bucket=logs.bucket, rules=[{
                "id": "expire-access-logs", "status": "Enabled", "filter": {"prefix": ACCESS_LOG_PREFIX},
                "expiration": {"days": ACCESS_LOG_DAYS},
                "noncurrent_version_expiration": {"noncurrent_days": 30},
                "abort_incomplete_multipart_upload": {"days_after_initiation": 1}}],
            opts=pulumi.ResourceOptions(parent=self))
        # After the log bucket's policy: S3 checks the logging service may write there.
        aws.s3.BucketLogging(f"{name}-logging", bucket=bucket.bucket, target_bucket=logs.bucket,
                             target_prefix=ACCESS_LOG_PREFIX,
                             opts=pulumi.ResourceOptions(parent=self, depends_on=[logs_policy]))
        self.bucket = bucket.bucket
        self.arn = bucket.arn
        self.logs_bucket = logs.bucket
        self.register_outputs({"bucket": self.bucket, "arn": self.arn, "logs_bucket": self.logs_bucket})
