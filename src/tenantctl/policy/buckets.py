"""S3 buckets: public access blocked, default SSE-KMS encryption (SSE-S3 for a
log target), server access logging to another bucket."""

from __future__ import annotations

import json
from typing import Any

from tenantctl.policy.plan import UNKNOWN, Plan, as_doc, as_list, known, rule

_PUBLIC_ACLS = ("public-read", "public-read-write", "authenticated-read")
_BLOCK_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def _public_statement(stmt: dict) -> bool:
    """An Allow to everyone without a condition narrowing it."""
    if stmt.get("Effect") != "Allow" or stmt.get("Condition"):
        return False
    principal = stmt.get("Principal")
    if isinstance(principal, dict):
        principal = principal.get("AWS")
    return principal == "*" or (isinstance(principal, list) and "*" in principal)


def _bucket_key(value: Any) -> str:
    # A bucket named by an output not known yet pairs with settings whose bucket is unknown too.
    return str(value) if known(value) else UNKNOWN


@rule("bucket-public-access")
def _bucket_public_access(plan: Plan):
    """Every bucket any stack declares: the four public-access-block flags on,
    no public ACL, no bucket policy granting everyone, TLS-only. A policy
    document still unknown at preview time is judged on the next apply."""
    blocks = {_bucket_key(b.inputs.get("bucket")): b.inputs
              for b in plan.of("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")}
    policies = {_bucket_key(p.inputs.get("bucket")): p.inputs.get("policy")
                for p in plan.of("aws:s3/bucketPolicy:BucketPolicy")}
    acls = {_bucket_key(a.inputs.get("bucket")): a.inputs.get("acl")
            for a in plan.of("aws:s3/bucketAclV2:BucketAclV2", "aws:s3/bucketAcl:BucketAcl")}
    for b in plan.of("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"):
        name = _bucket_key(b.inputs.get("bucket"))
        block = blocks.get(name)
        if block is not None and any(block.get(f) == UNKNOWN for f in _BLOCK_FLAGS):
            plan.unknown(b, "public access block")
        elif (block is None and plan.complete) or (block is not None and
                                                     not all(block.get(f) is True for f in _BLOCK_FLAGS)):
            yield b.name, "public access not fully blocked"
        for acl in (b.inputs.get("acl"), acls.get(name)):
            if acl in _PUBLIC_ACLS:
                yield b.name, f"public ACL {acl!r}"
            elif acl == UNKNOWN:
                plan.unknown(b, "acl")
        policy = policies.get(name)
        if policy == UNKNOWN:
            plan.unknown(b, "bucket policy")
            continue
        if policy is None and not plan.complete:
            continue
        statements = as_list(as_doc(policy).get("Statement"))
        if any(_public_statement(s) for s in statements):
            yield b.name, "bucket policy allows everyone (Principal \"*\")"
        tls = any(s.get("Effect") == "Deny" and "aws:SecureTransport" in json.dumps(s.get("Condition", {}))
                  for s in statements)
        if not tls:
            yield b.name, "no TLS-only (aws:SecureTransport) deny statement"


def _logging_targets(plan: Plan) -> set[str]:
    """Buckets receiving another bucket's server access logs."""
    return {_bucket_key(r.inputs.get("targetBucket")) for r in plan.of(*_BUCKET_LOGGING)
            if _bucket_key(r.inputs.get("targetBucket")) != _bucket_key(r.inputs.get("bucket"))}


_BUCKET_LOGGING = ("aws:s3/bucketLogging:BucketLogging", "aws:s3/bucketLoggingV2:BucketLoggingV2")
_BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")


@rule("bucket-encryption")
def _bucket_encryption(plan: Plan):
    """Default SSE-KMS; SSE-S3 only on a bucket that receives server access logs
    (S3 log delivery cannot write into a bucket whose default is SSE-KMS)."""
    sse = {_bucket_key(e.inputs.get("bucket")): e.inputs for e in plan.of(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2")}
    targets = _logging_targets(plan)
    for b in plan.of(*_BUCKETS):
        name = _bucket_key(b.inputs.get("bucket"))
        config = sse.get(name)
        if config is None and not plan.complete:
            continue
        config = config or {}
        if config.get("rules") == UNKNOWN:
            plan.unknown(b, "encryption rules")
            continue
        algorithms = [((r or {}).get("applyServerSideEncryptionByDefault") or {}).get("sseAlgorithm")
                      for r in as_list(config.get("rules"))]
        if any(a in ("aws:kms", "aws:kms:dsse") for a in algorithms):
            continue
        if UNKNOWN in algorithms:
            plan.unknown(b, "encryption algorithm")
        elif "AES256" in algorithms and name in targets and name != UNKNOWN:
            continue  # a log target: S3 log delivery cannot write under SSE-KMS
        elif "AES256" in algorithms and not plan.complete:
            continue  # its logging may be registered later: the preview judged the whole set
        else:
            yield b.name, "no default SSE-KMS encryption"


@rule("bucket-access-logging")
def _bucket_access_logging(plan: Plan):
    """Every bucket's server access logs go to another bucket; a bucket receiving
    logs does not log itself (log delivery would log its own writes)."""
    logged = {_bucket_key(r.inputs.get("bucket")): r.inputs for r in plan.of(*_BUCKET_LOGGING)}
    targets = _logging_targets(plan)
    for b in plan.of(*_BUCKETS):
        name = _bucket_key(b.inputs.get("bucket"))
        if name in targets and name != UNKNOWN:
            continue
        target = (logged.get(name) or {}).get("targetBucket")
        if target == UNKNOWN:
            plan.unknown(b, "access log target")
        elif not target and plan.complete:  # (an up judging resources as they come: registered later)
            yield b.name, "no server access logging"
        elif target == name:
            yield b.name, "access logs delivered into the bucket itself"
