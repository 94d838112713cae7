"""S3: buckets (found by name) and the bucket-level settings Pulumi models as
their own resources (public access block, policy, versioning, default
encryption, ownership controls, server access logging, lifecycle
configuration), each keyed by its bucket and put idempotently."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tenantctl.engines.local.handlers.base import (
    Context,
    Desired,
    Handler,
    as_int,
    exists,
    ignore_missing,
    managed_tags,
    read_or_none,
)


class BucketHandler(Handler):
    type = "aws:s3/bucket:Bucket"
    replace_on = ("bucket", "bucketPrefix")

    def _name(self, d: Desired) -> str:
        return d.physical_name("bucket")

    def find(self, ctx: Context, d: Desired) -> str | None:
        name = self._name(d)
        return name if exists(lambda: ctx.client("s3").head_bucket(Bucket=name), "404") else None

    def make(self, ctx: Context, d: Desired) -> str:
        args: dict[str, Any] = {"Bucket": self._name(d)}
        if ctx.region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": ctx.region}
        ctx.client("s3").create_bucket(**args)
        return self._name(d)

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        s3, name = ctx.client("s3"), rid or self._name(d)
        if self.find(ctx, d) is None:
            return None
        tagging = read_or_none(lambda: s3.get_bucket_tagging(Bucket=name), "NoSuchTagSet") or {}
        return {"tags": managed_tags(d, {t["Key"]: t["Value"] for t in tagging.get("TagSet", [])})}

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        s3 = ctx.client("s3")
        if d.tags():
            s3.put_bucket_tagging(Bucket=rid, Tagging={"TagSet": d.tag_list()})
        elif olds:
            s3.delete_bucket_tagging(Bucket=rid)
        return {"bucket": rid, "arn": ctx.arn("s3", rid, account=""), "region": ctx.region,
                "bucketDomainName": f"{rid}.s3.amazonaws.com",
                "bucketRegionalDomainName": f"{rid}.s3.{ctx.region}.amazonaws.com", "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        s3 = ctx.client("s3")
        if d.get("forceDestroy"):
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=rid):
                batch = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                         for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
                if batch:
                    s3.delete_objects(Bucket=rid, Delete={"Objects": batch, "Quiet": True})
        ignore_missing(lambda: s3.delete_bucket(Bucket=rid))


Getter = Callable[[Any, str, Desired], "dict[str, Any] | None"]


class BucketSettingHandler(Handler):
    """A setting of one bucket: id = the bucket; put is idempotent, so there is nothing to find."""

    replace_on = ("bucket",)

    def __init__(self, type_: str, put: Callable[[Any, str, Desired], Any], clear: Callable[[Any, str], Any],
                 get: Getter) -> None:
        self.type = type_
        self._put, self._clear, self._get = put, clear, get

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        return self._get(ctx.client("s3"), rid or d.get("bucket"), d)

    def find(self, ctx: Context, d: Desired) -> str | None:
        return d.get("bucket")

    def make(self, ctx: Context, d: Desired) -> str:
        return d.get("bucket")

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        self._put(ctx.client("s3"), rid, d)
        return {}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: self._clear(ctx.client("s3"), rid))


PUBLIC_ACCESS_KEYS = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")


def _camel(key: str) -> str:
    return key[0].lower() + key[1:]


def _public_access_block(s3, bucket: str, d: Desired) -> None:
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        k: bool(d.get(_camel(k), False)) for k in PUBLIC_ACCESS_KEYS})


def _get_public_access_block(s3, bucket: str, d: Desired) -> dict[str, Any] | None:
    got = read_or_none(lambda: s3.get_public_access_block(Bucket=bucket))
    if got is None:
        return None
    config = got["PublicAccessBlockConfiguration"]
    return {_camel(k): bool(config.get(k, False)) for k in PUBLIC_ACCESS_KEYS}


def _versioning(s3, bucket: str, d: Desired) -> None:
    status = (d.get("versioningConfiguration") or {}).get("status", "Enabled")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})


def _get_versioning(s3, bucket: str, d: Desired) -> dict[str, Any] | None:
    got = read_or_none(lambda: s3.get_bucket_versioning(Bucket=bucket))
    if got is None:
        return None
    return {"versioningConfiguration": {**(d.get("versioningConfiguration") or {}), "status": got.get("Status")}}


def _encryption(s3, bucket: str, d: Desired) -> None:
    rules = []
    for rule in d.get("rules", []):
        default = rule.get("applyServerSideEncryptionByDefault") or {}
        by_default = {"SSEAlgorithm": default.get("sseAlgorithm", "aws:kms")}
        if default.get("kmsMasterKeyId"):
            by_default["KMSMasterKeyID"] = default["kmsMasterKeyId"]
        rules.append({"ApplyServerSideEncryptionByDefault": by_default,
                      "BucketKeyEnabled": bool(rule.get("bucketKeyEnabled", False))})
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": rules})


def _get_encryption(s3, bucket: str, d: Desired) -> dict[str, Any] | None:
    got = read_or_none(lambda: s3.get_bucket_encryption(Bucket=bucket),
                       "ServerSideEncryptionConfigurationNotFoundError")
    if got is None:
        return None
    rules = []
    declared = d.get("rules") or []
    for i, rule in enumerate(got["ServerSideEncryptionConfiguration"].get("Rules", [])):
        default = rule.get("ApplyServerSideEncryptionByDefault") or {}
        by_default = {"sseAlgorithm": default.get("SSEAlgorithm")}
        if default.get("KMSMasterKeyID"):
            by_default["kmsMasterKeyId"] = default["KMSMasterKeyID"]
        read = {"applyServerSideEncryptionByDefault": by_default}
        bucket_key = bool(rule.get("BucketKeyEnabled", False))
        # Off is what a rule that does not declare it gets (AES256 has no bucket key): not drift.
        if bucket_key or (i < len(declared) and "bucketKeyEnabled" in declared[i]):
            read["bucketKeyEnabled"] = bucket_key
        rules.append(read)
    return {"rules": rules}


def _ownership(s3, bucket: str, d: Desired) -> None:
    rule = d.get("rule") or {}
    s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls={"Rules": [
        {"ObjectOwnership": rule.get("objectOwnership", "BucketOwnerEnforced")}]})


def _get_ownership(s3, bucket: str, d: Desired) -> dict[str, Any] | None:
    got = read_or_none(lambda: s3.get_bucket_ownership_controls(Bucket=bucket), "OwnershipControlsNotFoundError")
    if got is None:
        return None
    rules = got["OwnershipControls"].get("Rules") or [{}]
    return {"rule": {**(d.get("rule") or {}), "objectOwnership": rules[0].get("ObjectOwnership")}}


def _logging(s3, bucket: str, d: Desired) -> None:
    s3.put_bucket_logging(Bucket=bucket, BucketLoggingStatus={"LoggingEnabled": {
        "TargetBucket": d.get("targetBucket"), "TargetPrefix": d.get("targetPrefix", "")}})


def _get_logging(s3, bucket: str, d: Desired) -> dict[str, Any] | None:
    enabled = (read_or_none(lambda: s3.get_bucket_logging(Bucket=bucket)) or {}).get("LoggingEnabled")
    if not enabled:
        return None
    return {"targetBucket": enabled.get("TargetBucket"), "targetPrefix": enabled.get("TargetPrefix", "")}


def _get_lifecycle(s3, bucket: str, d: Desired) -> dict[str, Any] | None:
    got = read_or_none(lambda: s3.get_bucket_lifecycle_configuration(Bucket=bucket),
                       "NoSuchLifecycleConfiguration")
    if got is None:
        return None
    live = {r.get("ID", ""): r for r in got.get("Rules", [])}
    declared = {r["id"]: r for r in d.get("rules") or []}
    # In the program's shape and the declared order (S3 keeps its own): a rule
    # read back as it was put is the declared one, so only a changed field differs.
    rules = [declared[rid] if lifecycle_rules({"rules": [declared[rid]]}) == [live[rid]] else _program_rule(live[rid])
             for rid in declared if rid in live]
    return {"rules": rules + [_program_rule(live[rid]) for rid in sorted(live) if rid not in declared]}


def _program_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """An S3 lifecycle rule in pulumi-aws's shape (``lifecycle_rules`` the other way)."""
    where = rule.get("Filter") or {}
    if "And" in where:
        both = where["And"]
        tags = {t["Key"]: t["Value"] for t in both.get("Tags", [])}
        where = {"and": {"prefix": both.get("Prefix", ""), "tags": tags}}
    elif "Tag" in where:
        where = {"tag": {"key": where["Tag"]["Key"], "value": where["Tag"]["Value"]}}
    else:
        where = {"prefix": where.get("Prefix", rule.get("Prefix", ""))}
    out: dict[str, Any] = {"id": rule.get("ID", ""), "status": rule.get("Status"), "filter": where}
    if rule.get("Transitions"):
        out["transitions"] = [{"days": t.get("Days"), "storageClass": t.get("StorageClass")}
                              for t in rule["Transitions"]]
    for key, field, inner in (("expiration", "Expiration", "Days"),
                              ("noncurrentVersionExpiration", "NoncurrentVersionExpiration", "NoncurrentDays"),
                              ("abortIncompleteMultipartUpload", "AbortIncompleteMultipartUpload",
                               "DaysAfterInitiation")):
        if (rule.get(field) or {}).get(inner) is not None:
            out[key] = {inner[0].lower() + inner[1:]: rule[field][inner]}
    return out


def _sandbox_policy(d: Desired) -> dict[str, Any] | None:
    """The declared policy, less the Deny statements moto cannot evaluate: moto
    (5.2) skips condition operators other than StringEquals, so a conditional
    Deny such as the TLS-only ``Bool aws:SecureTransport=false`` statement would
    deny every object request on the sandbox (which speaks plain HTTP). The
    declared policy itself is unchanged (checked by tenantctl.policy). None: no
    statement left."""
    policy = json.loads(d.get("policy"))
    statements = policy.get("Statement", [])
    statements = [statements] if isinstance(statements, dict) else statements
    kept = [s for s in statements
            if not (s.get("Effect") == "Deny" and set(s.get("Condition") or {}) - {"StringEquals"})]
    return {**policy, "Statement": kept} if kept else None


def _policy(s3, bucket: str, d: Desired) -> None:
    policy = _sandbox_policy(d)
    if policy is not None:
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    else:
        ignore_missing(lambda: s3.delete_bucket_policy(Bucket=bucket))


def lifecycle_rules(d: Desired) -> list[dict[str, Any]]:
    """pulumi-aws's BucketLifecycleConfiguration rules (camelCase) in the S3 API's shape."""
    out = []
    for rule in d.get("rules", []):
        s3_rule: dict[str, Any] = {"ID": rule["id"], "Status": rule.get("status", "Enabled")}
        where = rule.get("filter") or {}
        if where.get("and"):
            both = where["and"]
            s3_rule["Filter"] = {"And": {"Prefix": both.get("prefix", ""),
                                         "Tags": [{"Key": k, "Value": v} for k, v in (both.get("tags") or {}).items()]}}
        elif where.get("tag"):
            s3_rule["Filter"] = {"Tag": {"Key": where["tag"]["key"], "Value": where["tag"]["value"]}}
        else:
            s3_rule["Filter"] = {"Prefix": where.get("prefix", "")}
        if rule.get("transitions"):
            s3_rule["Transitions"] = [{"Days": as_int(t["days"]), "StorageClass": t["storageClass"]}
                                      for t in rule["transitions"]]
        if (rule.get("expiration") or {}).get("days") is not None:
            s3_rule["Expiration"] = {"Days": as_int(rule["expiration"]["days"])}
        if (rule.get("noncurrentVersionExpiration") or {}).get("noncurrentDays") is not None:
            s3_rule["NoncurrentVersionExpiration"] = {
                "NoncurrentDays": as_int(rule["noncurrentVersionExpiration"]["noncurrentDays"])}
        if (rule.get("abortIncompleteMultipartUpload") or {}).get("daysAfterInitiation") is not None:
            s3_rule["AbortIncompleteMultipartUpload"] = {
                "DaysAfterInitiation": as_int(rule["abortIncompleteMultipartUpload"]["daysAfterInitiation"])}
        out.append(s3_rule)
    return out


def _lifecycle(s3, bucket: str, d: Desired) -> None:
    """A bucket's whole lifecycle configuration: a cell bucket's retention
    classes (tenantctl.bucket_lifecycle), the access-log bucket's expiry."""
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": lifecycle_rules(d)})


def _get_policy(s3, bucket: str, d: Desired) -> dict[str, Any] | None:
    got = read_or_none(lambda: s3.get_bucket_policy(Bucket=bucket))
    live = json.loads(got["Policy"]) if got else None
    # What was put is the sandbox's cut of the declared policy: that is "no drift".
    return {"policy": d.get("policy") if live == _sandbox_policy(d) else live}


HANDLERS = (
    BucketHandler(),
    BucketSettingHandler("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", _public_access_block,
                         lambda s3, b: s3.delete_public_access_block(Bucket=b), _get_public_access_block),
    BucketSettingHandler("aws:s3/bucketPolicy:BucketPolicy", _policy,
                         lambda s3, b: s3.delete_bucket_policy(Bucket=b), _get_policy),
    # Versioning cannot be switched off once on: deleting the resource suspends it (as Pulumi does).
    BucketSettingHandler("aws:s3/bucketVersioning:BucketVersioning", _versioning,
                         lambda s3, b: s3.put_bucket_versioning(
                             Bucket=b, VersioningConfiguration={"Status": "Suspended"}),
                         _get_versioning),
    BucketSettingHandler("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                         _encryption, lambda s3, b: s3.delete_bucket_encryption(Bucket=b), _get_encryption),
    BucketSettingHandler("aws:s3/bucketOwnershipControls:BucketOwnershipControls", _ownership,
                         lambda s3, b: s3.delete_bucket_ownership_controls(Bucket=b), _get_ownership),
    BucketSettingHandler("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", _lifecycle,
                         lambda s3, b: s3.delete_bucket_lifecycle(Bucket=b), _get_lifecycle),
    BucketSettingHandler("aws:s3/bucketLogging:BucketLogging", _logging,
                         lambda s3, b: s3.put_bucket_logging(Bucket=b, BucketLoggingStatus={}), _get_logging),
)
