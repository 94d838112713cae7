"""PrefixLifecycleRules (legacy): one tenant's lifecycle rules inside a shared bucket.

No program declares it any more (a cell's bucket holds one rule per retention
class, see tenantctl.bucket_lifecycle). It stays registered so that a tenant
applied before cells, whose state still holds one, gets it deleted on its next
apply: the delete below removes that tenant's three rules and nobody else's.

S3 holds ONE lifecycle configuration per bucket, so a per-tenant
BucketLifecycleConfiguration resource would overwrite every other tenant's.
This provider merges read-modify-write: it replaces only the rules the tenant
owns (the model is tenantctl.bucket_lifecycle) and leaves the rest.
Concurrent writers (parallel `apply` workers, CI shards on other machines)
take turns through a lock (`_bucket_lock`): without it two read-modify-writes
interleave and one tenant's rules are lost. The 1,000
rules-per-bucket limit is refused here before S3 is asked. ``read`` returns
the tenant's rules as they are in the bucket (a rule removed or changed out of
band is drift; the update that follows writes the tenant's rules back).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from infra.providers._diff import diff_inputs, public
from tenantctl.bucket_lifecycle import MAX_RULES, others_rules, owned, read_rules

KIND = "prefix-lifecycle"


class LifecycleLimitExceeded(RuntimeError):
    pass


def _integral(value: Any) -> Any:
    """Pulumi numbers arrive as floats; S3's Days fields must be ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def _s3(region: str):
    from tenantctl import aws  # bounded backoff with jitter; endpoint from AWS_ENDPOINT_URL on the sandbox

    return aws.client("s3", region=region)


LOCK_KEY = "tenantctl/locks/lifecycle-configuration"  # outside every tenants/<id>/ prefix
LOCK_STALE_SECONDS = 60  # a read-modify-write takes milliseconds: an older lock is a dead writer's
LOCK_WAIT_SECONDS = 180


@contextmanager
def _local_lock(bucket: str) -> Iterator[None]:
    """Writers on this machine (parallel `apply` workers) take turns on a file lock."""
    import fcntl
    import tempfile

    path = Path(tempfile.gettempdir()) / f"tenantctl-lifecycle-{bucket}.lock"
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def _bucket_lock(s3, bucket: str) -> Iterator[None]:
    """Writers anywhere (CI shards on other machines) take turns on a lock
    object created with If-None-Match: * (one creator wins), removed by version
    id afterwards (no delete markers pile up in a versioned bucket); one older
    than LOCK_STALE_SECONDS is a dead writer's and is removed. Where object
    writes are refused (403), the local lock alone serialises. (On the sandbox
    the LocalEngine leaves the TLS-only deny out of the policy it puts, since
    moto would apply it without its aws:SecureTransport condition.)"""
    from botocore.exceptions import ClientError

    def remove(version_id: str | None) -> None:
        s3.delete_object(Bucket=bucket, Key=LOCK_KEY, **({"VersionId": version_id} if version_id else {}))

    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    with _local_lock(bucket):
        while True:
            try:
                taken = s3.put_object(Bucket=bucket, Key=LOCK_KEY, Body=b"", IfNoneMatch="*")
                break
            except ClientError as exc:
                code = exc.response["Error"]["Code"]
                if code in ("403", "AccessDenied", "Forbidden"):
                    taken = None
                    break
                if code not in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                    raise
            try:
                head = s3.head_object(Bucket=bucket, Key=LOCK_KEY)
            except ClientError:
                continue  # released in between: try again at once
            if (datetime.now(UTC) - head["LastModified"]).total_seconds() > LOCK_STALE_SECONDS:
                remove(head.get("VersionId"))
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"s3://{bucket}/{LOCK_KEY} held for over {LOCK_WAIT_SECONDS} s by another writer")
            time.sleep(random.uniform(0.05, 0.25))
        try:
            yield
        finally:
            if taken is not None:
                remove(taken.get("VersionId"))


# A fleet refresh reads every tenant's rules from the one shared configuration:
# reads of a bucket within READ_TTL_SECONDS share one GetBucketLifecycleConfiguration
# (hundreds of rules each time) instead of one per tenant; this process's writes
# drop the bucket's entry, and a read only ever keeps the tenant's own rules.
READ_TTL_SECONDS = 5.0
_READS: dict[tuple[str, str], tuple[float, list[dict[str, Any]]]] = {}
_READS_LOCK = threading.Lock()


def _live_rules(region: str, bucket: str) -> list[dict[str, Any]]:
    key = (region, bucket)
    with _READS_LOCK:
        hit = _READS.get(key)
        if hit is not None and time.monotonic() - hit[0] < READ_TTL_SECONDS:
            return hit[1]
    rules = read_rules(_s3(region), bucket)
    with _READS_LOCK:
        _READS[key] = (time.monotonic(), rules)
    return rules


def _write_rules(props: dict[str, Any], own: list[dict[str, Any]]) -> None:
    s3 = _s3(props["region"])
    with _READS_LOCK:
        _READS.pop((props["region"], props["bucket"]), None)
    with _bucket_lock(s3, props["bucket"]):
        others = others_rules(s3, props["bucket"], props["tenant_id"], props["prefix"])
        rules = others + _integral(own)
        if len(rules) > MAX_RULES:
            raise LifecycleLimitExceeded(
                f"bucket {props['bucket']} would hold {len(rules)} lifecycle rules (S3 allows {MAX_RULES}): "
                "tenants are not sharded across buckets; nothing was written (the provision preflight "
                "normally refuses this tenant first: see tenantctl.preflight)")
        if rules:
            s3.put_bucket_lifecycle_configuration(Bucket=props["bucket"], LifecycleConfiguration={"Rules": rules})
        else:
            s3.delete_bucket_lifecycle(Bucket=props["bucket"])


class PrefixLifecycleProvider(ResourceProvider):
    REPLACE_ON = ("bucket", "tenant_id", "prefix", "region")

    def create(self, props: dict[str, Any]) -> CreateResult:
        _write_rules(props, props["rules"])
        return CreateResult(f"{props['bucket']}/{props['prefix']}", public(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_inputs(olds, news, self.REPLACE_ON)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        _write_rules(news, news["rules"])
        return UpdateResult(public(news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        from botocore.exceptions import ClientError

        try:
            rules = _live_rules(props["region"], props["bucket"])
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchBucket", "404"):
                return ReadResult(None, {})
            raise
        own = [r for r in rules if owned(r, props["tenant_id"], props["prefix"])]
        order = [r.get("ID") for r in props.get("rules", [])]  # the declared order; the bucket's is not drift
        own.sort(key=lambda r: order.index(r["ID"]) if r.get("ID") in order else len(order))
        return ReadResult(id_ or f"{props['bucket']}/{props['prefix']}", {**public(props), "rules": own})

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
