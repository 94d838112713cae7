"""AWS posture of one tenant, read from the live resources:

- ``kms-rotation``: automatic rotation of the tenant key is on;
- ``kms-key-policy``: the key policy names only the platform admin and the
  tenant role, never ``*``, and grants use of the key to the tenant role only;
- ``queue-encryption`` / ``dlq-encryption``: SSE-KMS with the tenant's key;
- ``bucket-public-access``: the shared bucket's public access block has all
  four flags on and its policy allows nobody unconditionally;
- ``bucket-encryption``: default SSE-KMS on the shared bucket;
- ``tags``: key, queues, role and secret carry tenant/tier/owner/managed-by;
- ``role-trust``: only the runtime principal may assume the tenant role, and
  only with the session tag ``tenant_id=<id>`` (judged with ``iam_eval``);
- ``role-policy-scope``: no managed policies; the inline policy passes the
  ``iam-scope`` rule and ``iam_eval`` allows the tenant's own prefix but denies
  prefix twins (``<id>-x/``, ``<id>x/``), other tenants and bucket-wide listing;
- ``rds-posture`` (dedicated): encrypted with the tenant key, not public,
  deletion protection on, backups kept at least 7 days.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

from tenantctl import naming
from tenantctl.checks import iam_eval
from tenantctl.checks.results import CheckResult, run_each
from tenantctl.models import TenantStatus
from tenantctl.policy import MIN_BACKUP_RETENTION_DAYS, REQUIRED_TAGS, PlannedResource, check

AREA = "aws"
USE_ACTIONS = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom")


def _doc(value: Any) -> dict:
    if isinstance(value, dict):
        return value
    text = str(value)
    try:
        return json.loads(text)
    except ValueError:
        return json.loads(unquote(text))  # IAM hands documents out URL-encoded


def _principals(stmt: dict) -> list[str]:
    spec = stmt.get("Principal")
    if spec == "*":
        return ["*"]
    out: list[str] = []
    for values in (spec or {}).values():
        out += values if isinstance(values, list) else [values]
    return out


class _AwsChecks:
    def __init__(self, record: Any, platform: dict[str, Any], clients: Callable[..., Any]) -> None:
        self.record, self.res, self.tid = record, record.resources, record.tenant_id
        self.platform = platform
        self._client = lambda service: clients(service, region=record.region)

    @property
    def role_name(self) -> str:
        return self.res.role_arn.rsplit("/", 1)[-1]

    # -- KMS -----------------------------------------------------------------------------
    def kms_rotation(self) -> tuple[bool, str]:
        on = self._client("kms").get_key_rotation_status(KeyId=self.res.kms_key_arn)["KeyRotationEnabled"]
        return on, "automatic rotation on" if on else f"rotation is off for {self.res.kms_key_arn}"

    def kms_key_policy(self) -> tuple[bool, str]:
        doc = _doc(self._client("kms").get_key_policy(KeyId=self.res.kms_key_arn, PolicyName="default")["Policy"])
        admin, role = self.platform.get("admin_role_arn"), self.res.role_arn
        problems = []
        for stmt in doc.get("Statement", []):
            if stmt.get("Effect") != "Allow":
                continue
            for principal in _principals(stmt):
                if principal not in (admin, role):
                    problems.append(f"statement {stmt.get('Sid', '?')} allows {principal}")
            if any(iam_eval.statement_applies({**stmt, "Principal": "*"}, iam_eval.Request(action=a, principal="x"))
                   for a in USE_ACTIONS):
                users = [p for p in _principals(stmt) if p not in (admin, role)]
                if users:
                    problems.append(f"key use granted to {', '.join(users)}")
        return not problems, "; ".join(dict.fromkeys(problems)) or f"principals: admin {admin}, tenant role {role}"

    # -- SQS -----------------------------------------------------------------------------
    def _queue_key(self, url: str) -> tuple[bool, str]:
        attrs = self._client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["KmsMasterKeyId"])
        key = attrs.get("Attributes", {}).get("KmsMasterKeyId")
        if not key:
            return False, f"{url}: no SSE-KMS key"
        arn = self._client("kms").describe_key(KeyId=key)["KeyMetadata"]["Arn"]
        if arn != self.res.kms_key_arn:
            return False, f"{url}: encrypted with {arn}, not the tenant key"
        return True, f"SSE-KMS with {arn}"

    def queue_encryption(self) -> tuple[bool, str]:
        return self._queue_key(self.res.queue_url)

    def dlq_encryption(self) -> tuple[bool, str]:
        return self._queue_key(self.res.dlq_url)

    # -- S3 ------------------------------------------------------------------------------
    def bucket_public_access(self) -> tuple[bool, str]:
        from botocore.exceptions import ClientError

        s3, bucket = self._client("s3"), self.res.bucket
        try:
            block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "NoSuchPublicAccessBlockConfiguration":
                return False, f"bucket {bucket} has no public access block"
            raise
        off = [k for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
               if not block.get(k)]
        if off:
            return False, f"bucket {bucket}: {', '.join(off)} off"
        try:
            policy = _doc(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "NoSuchBucketPolicy":
                raise
            policy = {}
        public = [s.get("Sid", "?") for s in policy.get("Statement", [])
                  if s.get("Effect") == "Allow" and "*" in _principals(s) and not s.get("Condition")]
        if public:
            return False, f"bucket {bucket}: policy statement(s) {', '.join(public)} allow everyone"
        return True, f"bucket {bucket}: all four public access blocks on"

    def bucket_encryption(self) -> tuple[bool, str]:
        from botocore.exceptions import ClientError

        try:
            rules = self._client("s3").get_bucket_encryption(Bucket=self.res.bucket)[
                "ServerSideEncryptionConfiguration"]["Rules"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ServerSideEncryptionConfigurationNotFoundError":
                return False, f"bucket {self.res.bucket} has no default encryption"
            raise
        algorithms = [r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules]
        ok = any(a in ("aws:kms", "aws:kms:dsse") for a in algorithms)
        return ok, f"bucket {self.res.bucket}: default SSE {', '.join(map(str, algorithms))}"

    # -- tags ------------------------------------------------------------------------------
    def _tag_sets(self) -> dict[str, dict[str, str]]:
        kms, sqs = self._client("kms"), self._client("sqs")
        key_tags = kms.list_resource_tags(KeyId=self.res.kms_key_arn).get("Tags", [])
        role_tags = self._client("iam").list_role_tags(RoleName=self.role_name).get("Tags", [])
        secret_tags = self._client("secretsmanager").describe_secret(
            SecretId=self.res.store.secret_arn).get("Tags", [])
        return {
            "kms key": {t["TagKey"]: t["TagValue"] for t in key_tags},
            "queue": sqs.list_queue_tags(QueueUrl=self.res.queue_url).get("Tags", {}),
            "dlq": sqs.list_queue_tags(QueueUrl=self.res.dlq_url).get("Tags", {}),
            "role": {t["Key"]: t["Value"] for t in role_tags},
            "secret": {t["Key"]: t["Value"] for t in secret_tags},
        }

    def tags(self) -> tuple[bool, str]:
        problems = []
        for what, tags in self._tag_sets().items():
            missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
            if missing:
                problems.append(f"{what}: missing {', '.join(missing)}")
            elif (tags["tenant"] != self.tid or tags["tier"] != self.record.tier.value
                  or tags["managed-by"] != "tenantctl"):
                problems.append(f"{what}: tagged tenant={tags['tenant']} tier={tags['tier']} "
                                f"managed-by={tags['managed-by']}")
        return not problems, "; ".join(problems) or "key, queue, dlq, role, secret tagged"

    # -- IAM -------------------------------------------------------------------------------
    def role_trust(self) -> tuple[bool, str]:
        from tenant_runtime.credentials import SESSION_TAG

        doc = _doc(self._client("iam").get_role(RoleName=self.role_name)["Role"]["AssumeRolePolicyDocument"])
        runtime, role = self.platform.get("runtime_principal_arn"), self.res.role_arn
        problems = [f"statement {s.get('Sid', '?')} trusts {p}" for s in doc.get("Statement", [])
                    if s.get("Effect") == "Allow" for p in _principals(s) if p != runtime]
        # A suspended tenant's role may not be assumed at all (no session is renewed).
        suspended = self.record.status is TenantStatus.suspended
        probes = [
            (f"{SESSION_TAG}={self.tid}", iam_eval.assume_role(role, runtime, {SESSION_TAG: self.tid}), not suspended),
            ("no session tag", iam_eval.assume_role(role, runtime), False),
            (f"{SESSION_TAG}={self.tid}-x", iam_eval.assume_role(role, runtime, {SESSION_TAG: f"{self.tid}-x"}), False),
            ("an extra session tag", iam_eval.assume_role(role, runtime, {SESSION_TAG: self.tid, "tier": "x"}), False),
            ("a principal of another account",
             iam_eval.assume_role(role, "arn:aws:iam::000000000000:role/elsewhere", {SESSION_TAG: self.tid}), False),
        ]
        for what, requests, expected in probes:
            if iam_eval.allows_all([doc], requests) != expected:
                problems.append(f"assume with {what} is {'denied' if expected else 'allowed'}")
        if suspended:
            return not problems, "; ".join(problems) or "suspended: nobody may assume it"
        return not problems, "; ".join(problems) or f"only {runtime}, only with {SESSION_TAG}={self.tid}"

    def role_policy_scope(self) -> tuple[bool, str]:
        iam = self._client("iam")
        attached = [p["PolicyArn"]
                    for p in iam.list_attached_role_policies(RoleName=self.role_name)["AttachedPolicies"]]
        docs = [_doc(iam.get_role_policy(RoleName=self.role_name, PolicyName=name)["PolicyDocument"])
                for name in iam.list_role_policies(RoleName=self.role_name)["PolicyNames"]]
        problems = [f"managed policy {arn} attached" for arn in attached]
        if not docs:
            problems.append("no inline policy")
        alias = PlannedResource(type="aws:kms/alias:Alias", name="alias",
                                inputs={"name": naming.kms_alias(self.tid), "targetKeyId": self.res.kms_key_arn})
        planned = [PlannedResource(type="aws:iam/rolePolicy:RolePolicy", name=f"{self.role_name}/{i}",
                                   inputs={"policy": json.dumps(d)}) for i, d in enumerate(docs)]
        problems += [v.message for v in check(planned + [alias], self.tid, rules=["iam-scope"])]
        bucket, own = self.res.bucket, naming.s3_prefix(self.tid)
        allowed = [iam_eval.s3_object("s3:GetObject", bucket, f"{own}probe"),
                   iam_eval.s3_object("s3:PutObject", bucket, f"{own}uploads/probe"),
                   iam_eval.s3_list(bucket, own)]
        denied = [iam_eval.s3_list(bucket, ""), iam_eval.s3_list(bucket, "tenants/")]
        for other in (f"tenants/{self.tid}-x/", f"tenants/{self.tid}x/", f"tenants/{self.tid}", "tenants/other/"):
            denied += [iam_eval.s3_object("s3:GetObject", bucket, f"{other}probe"),
                       iam_eval.s3_object("s3:PutObject", bucket, f"{other}probe"), iam_eval.s3_list(bucket, other)]
        problems += [f"{r.action} {r.resource} {r.context or ''} is denied" for r in allowed
                     if not iam_eval.evaluate(docs, r).allowed]
        problems += [f"{r.action} {r.resource} {r.context or ''} is allowed" for r in denied
                     if iam_eval.evaluate(docs, r).allowed]
        return not problems, "; ".join(problems) or f"objects and listing confined to {own}; no managed policies"

    # -- RDS (dedicated) ----------------------------------------------------------------------
    def rds_posture(self) -> tuple[bool, str]:
        ident = naming.rds_identifier(self.tid)
        db = self._client("rds").describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]
        problems = []
        if not db.get("StorageEncrypted"):
            problems.append("storage not encrypted")
        elif db.get("KmsKeyId") and db["KmsKeyId"] != self.res.kms_key_arn:
            problems.append(f"encrypted with {db['KmsKeyId']}, not the tenant key")
        if db.get("PubliclyAccessible"):
            problems.append("publicly accessible")
        if not db.get("DeletionProtection"):
            problems.append("deletion protection off")
        if int(db.get("BackupRetentionPeriod") or 0) < MIN_BACKUP_RETENTION_DAYS:
            problems.append(f"backup retention {db.get('BackupRetentionPeriod')} < {MIN_BACKUP_RETENTION_DAYS} days")
        return not problems, "; ".join(problems) or f"{ident}: encrypted, private, protected, backups kept"


NAMES = ("kms-rotation", "kms-key-policy", "queue-encryption", "dlq-encryption", "bucket-public-access",
         "bucket-encryption", "tags", "role-trust", "role-policy-scope")


def aws_checks(record: Any, platform: dict[str, Any], clients: Callable[..., Any]) -> Iterator[CheckResult]:
    """``clients(service, region=)``: the target's AWS clients (``Workspace.client``)."""
    checks = _AwsChecks(record, platform, clients)
    names = list(NAMES) + (["rds-posture"] if record.tier.value == "dedicated" else [])
    yield from run_each(AREA, [(name, getattr(checks, name.replace("-", "_"))) for name in names])
