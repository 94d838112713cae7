"""AWS posture of one tenant, read from the live resources:

- ``kms-key-state``: the tenant key is Enabled (a disabled or pending-deletion
  key fails, naming its state: the tenant's data cannot be read or written);
- ``kms-rotation``: automatic rotation of the tenant key is on;
- ``kms-alias``: the tenant's alias (the registry record's ``kms_alias``) names
  the tenant's key, not another tenant's (whatever encrypts by alias would use it);
- ``kms-key-policy``: the key policy names only the platform admin and the
  tenant role, never ``*``, and grants use of the key to the tenant role only;
  AWS services only as CloudWatch (for the tenant's own alarms) and CloudWatch
  Logs (for the tenant's own log groups), each confined by its condition;
- ``kms-grants``: every grant on the tenant key lets a principal of the tenant's
  account only decrypt and make data keys for one of the tenant's own DB
  secrets (the rotation function's, pinned by the secret's encryption
  context), or is an AWS service's; a grant is as good as a key-policy
  statement, and the key policy alone does not show it;
- ``kms-key-policy-matches-role``: the key policy grants the tenant role
  exactly the KMS actions of the role's IAM policy (within one account either
  one alone suffices, so any difference widens the role);
- ``queue-encryption`` / ``dlq-encryption``: SSE-KMS with the tenant's key;
- ``queue-policy``: neither queue has a queue policy (the stack declares
  none: only the tenant role, through its own policy, reaches them);
- ``bucket-public-access``: the shared bucket's public access block has all
  four flags on and its policy allows nobody unconditionally;
- ``bucket-policy``: no statement of the shared bucket's policy allows a
  principal (another account, another tenant's role, anyone) the tenant's
  objects or their listing, whatever its condition (the declared policy only
  denies: in one account a bucket policy's Allow alone reaches past the
  tenant role's own scope); an AWS service's statement aside;
- ``bucket-encryption``: default SSE-KMS on the shared bucket;
- ``bucket-access-logging``: the shared bucket's server access logs go to
  another bucket;
- ``secret-rotation``: the DB secret rotates automatically (at most every
  90 days) with the rotation function of the tenant's network;
- ``secret-policy``: the DB secret has no resource policy (the stack declares
  none; one could hand its password to any principal);

While a move within the tenant's stack is open (``move_sides``) its stack is
applied for the move's target from ``preparing`` on and for its origin again by a
rollback, each before the record follows: the secret's rotation function, the
tier tag and the key policy's service statements may be either side's (never
any other's).
- ``alarm-topic-encryption``: the alarm topic is encrypted with the tenant key;
- ``topic-access``: the alarm topic has no subscription but the declared
  ``alarm_subscriptions`` of the cell its stack is applied in (``Workspace.stack_cell``:
  mid-move the target's once the move applied its spec, as `refresh` judges it;
  matched by protocol and endpoint: another
  one mails the alarms, and what they name, anywhere; one the stack holds that the
  cell's list dropped, no `apply` since, too: `refresh` names it as drift), has each of those (one
  missing, the cell's list grown with no `apply` since or unsubscribed out of
  band, leaves the operators blind to the tenant's alarms; a declared one pending
  confirmation counts as there; not judged while a move between cells is open,
  whose stack may be either cell's) and its policy lets in no principal outside
  the tenant's account (AWS's default, which the stack leaves, pins the caller's
  account);
- ``tags``: key, queues, role and secret carry tenant/tier/owner/managed-by
  (a workspace's also ``workspace=<ws>``; the tenant's no ``workspace`` tag);
- ``role-trust``: only the runtime principal may assume the tenant role, and
  only with the session tag ``tenant_id=<id>`` (judged with ``iam_eval``); a
  trust naming an account root (so any principal of the account with
  sts:AssumeRole), or a platform whose runtime principal is one, fails;
- ``role-policy-scope``: no managed policies; the inline policy passes the
  ``iam-scope`` rule and ``iam_eval`` allows the tenant's own prefix but denies
  prefix twins (``<id>-x/``, ``<id>x/``), other tenants and bucket-wide listing;
- ``rds-posture`` (dedicated): encrypted with the tenant key, not public,
  deletion protection on, backups kept at least 7 days.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace
from functools import cached_property, partial
from typing import Any
from urllib.parse import unquote

from tenantctl import naming
from tenantctl.checks import iam_eval
from tenantctl.checks.reads import LiveReads
from tenantctl.checks.results import CheckResult, run_each
from tenantctl.models import TenantStatus
from tenantctl.policy import (
    MAX_ROTATION_DAYS,
    MIN_BACKUP_RETENTION_DAYS,
    REQUIRED_TAGS,
    PlannedResource,
    check,
    key_use_actions,
    role_key_actions,
)

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


# Condition keys that confine a service principal's use of the key to resources.
_SCOPE_KEYS = ("aws:sourcearn", "kms:encryptioncontext:aws:logs:arn")


def _scope_arns(stmt: dict) -> list[str]:
    return [str(v) for op in (stmt.get("Condition") or {}).values() if isinstance(op, dict)
            for k, vals in op.items() if k.lower() in _SCOPE_KEYS for v in (vals if isinstance(vals, list) else [vals])]


def _is_account(principal: str) -> bool:
    """An account (root ARN, bare id) or everyone: a principal that delegates, not the runtime's own."""
    return principal == "*" or principal.endswith(":root") or principal.isdigit()


def _principals(stmt: dict) -> list[str]:
    spec = stmt.get("Principal")
    if spec == "*":
        return ["*"]
    out: list[str] = []
    for values in (spec or {}).values():
        out += values if isinstance(values, list) else [values]
    return out


_SERVICE_SUFFIXES = tuple(f".{domain}" for domain in naming.SERVICE_DOMAINS)


def service_grant(grant: dict[str, Any]) -> bool:
    """A grant an AWS service made for itself (RDS for a store it encrypts, EBS for a volume):
    its grantee a service principal (``GranteeServicePrincipal``, or ``GranteePrincipal`` as
    ListGrants shows a service's: ``rds.<region>.amazonaws.com``, of its partition's domain:
    ``rds.cn-north-1.amazonaws.com.cn`` in China) or a session of AWS's own infrastructure roles
    (``assumed-role/aws:...``)."""
    grantee = str(grant.get("GranteePrincipal", ""))
    # No IAM name holds a colon (so "aws:..." is AWS's); one may end in ".amazonaws.com": not an ARN, then.
    return (bool(grant.get("GranteeServicePrincipal"))
            or (not grantee.startswith("arn:") and grantee.endswith(_SERVICE_SUFFIXES))
            or ":assumed-role/aws:" in grantee)


def policy_principals(policy: Any) -> str:
    """The principals a resource policy's statements name, for a report (``*`` for everyone)."""
    named = sorted({p for stmt in _doc(policy).get("Statement", []) for p in _principals(stmt)})
    return ", ".join(named) or "no principal"


# Condition keys pinning the caller's (or the publishing resource's) account.
_ACCOUNT_KEYS = ("aws:sourceowner", "aws:sourceaccount", "aws:principalaccount")


def _pinned_accounts(stmt: dict) -> set[str]:
    return {str(v) for op, keys in (stmt.get("Condition") or {}).items() if op.lower() == "stringequals"
            and isinstance(keys, dict) for k, vals in keys.items() if k.lower() in _ACCOUNT_KEYS
            for v in (vals if isinstance(vals, list) else [vals])}


def topic_outsiders(policy: Any, account: str | None) -> list[str]:
    """The principals outside ``account`` a topic policy's Allow statements let in (``*``: anyone),
    sorted: none for a statement pinning the caller's account to ``account`` (AWS's default does)."""
    statements = _doc(policy).get("Statement", []) if policy else []
    found: set[str] = set()
    for stmt in [statements] if isinstance(statements, dict) else statements:
        if stmt.get("Effect") != "Allow" or _pinned_accounts(stmt) == {account}:
            continue
        found |= {p for p in _principals(stmt) if p != account and naming.account_of_arn(p) != account}
    return sorted(found)


def move_sides(record: Any) -> list[tuple[str, str]]:
    """The (tier, cell) the tenant's stack may be applied for: its record's, and
    while a move within its stack is open (a move to another account or region
    builds a stack of its own) the move's origin and target."""
    sides = [(record.tier.value, record.cell)]
    move = record.move
    if move is not None and move.to_stack is None:
        sides += [(move.from_tier.value, move.from_cell), (move.to_tier.value, move.to_cell)]
    return list(dict.fromkeys(sides))


class _AwsChecks:
    """The checks of one owner of resources: the tenant, or (``workspace``) one of its
    workspaces, whose ``record`` is then its view (``tenantctl.drills.scope``);
    ``platforms``: the outputs of each cell of ``move_sides`` (default: ``platform``'s)."""

    def __init__(self, record: Any, platform: dict[str, Any], clients: Callable[..., Any], reads: LiveReads,
                 workspace: str | None = None, platforms: dict[str, dict[str, Any]] | None = None,
                 subscriptions: Collection[tuple[str, str]] = ()) -> None:
        self.record, self.res, self.tid = record, record.resources, record.tenant_id
        self.subscriptions = set(subscriptions)  # its stack's cell's alarm_subscriptions: (protocol, endpoint)
        self.workspace = workspace
        self.names = naming.OwnerNames(record.tenant_id, workspace)
        # The session tag value its role's trust requires, and the stem of its alarms' names.
        self.subject = self.names.key
        self.stem = self.tid if workspace is None else naming.ws_stem(self.tid, workspace)
        self.platform = platform
        self.sides = move_sides(record)
        self.platforms = platforms or {record.cell: platform}
        self._client = lambda service: clients(service, region=record.region)
        self.reads = reads

    @property
    def role_name(self) -> str:
        return self.res.role_arn.rsplit("/", 1)[-1]

    # -- KMS -----------------------------------------------------------------------------
    def kms_key_state(self) -> tuple[bool, str]:
        meta = self.reads.key_metadata()
        state, when = meta.get("KeyState", "Unknown"), meta.get("DeletionDate")
        detail = f"{self.res.kms_key_arn} is {state}" + (f" (deleted on {when:%Y-%m-%d})" if when else "")
        return state == "Enabled", detail

    def kms_alias(self) -> tuple[bool, str]:
        target = self.reads.alias_target()
        if target != self.res.kms_key_arn:
            return False, f"{self.res.kms_alias} names {target}, not the tenant key {self.res.kms_key_arn}"
        return True, f"{self.res.kms_alias} names the tenant key"

    def kms_rotation(self) -> tuple[bool, str]:
        on = self.reads.key_rotation()
        return on, "automatic rotation on" if on else f"rotation is off for {self.res.kms_key_arn}"

    def _key_policy(self) -> dict:
        return _doc(self.reads.key_policy())

    def _service_scope(self) -> dict[str, set[str]]:
        """The resources each AWS service may use the tenant key for: its alarms, its log groups."""
        region, account = self.record.region, self.platform.get("account_id")
        tiers = {tier for tier, _ in self.sides}  # a store being moved to or from a dedicated one declares its logs
        alarms = {naming.arn(region, "cloudwatch", account, f"alarm:{n}")
                  for tier in tiers for n in naming.alarm_names(self.stem, tier == "dedicated")}
        groups = {naming.arn(region, "logs", account, f"log-group:{g}") for g in naming.own_log_groups(self.tid)}
        return {naming.service_principal("cloudwatch", region): alarms,
                naming.service_principal("logs", region): groups if "dedicated" in tiers else set()}

    def _service_statement_ok(self, stmt: dict) -> bool:
        spec = stmt.get("Principal")
        services = (spec or {}).get("Service") if isinstance(spec, dict) else None
        if not services or set(spec) != {"Service"}:
            return False
        scope, arns = self._service_scope(), _scope_arns(stmt)
        return bool(arns) and all(s in scope and set(arns) <= scope[s]
                                  for s in (services if isinstance(services, list) else [services]))

    def kms_key_policy(self) -> tuple[bool, str]:
        doc = self._key_policy()
        admin, role = self.platform.get("admin_role_arn"), self.res.role_arn
        problems = []
        for stmt in doc.get("Statement", []):
            if stmt.get("Effect") != "Allow" or self._service_statement_ok(stmt):
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

    def kms_grants(self) -> tuple[bool, str]:
        account = str(self.platform.get("account_id"))
        problems, secrets = [], 0
        for grant in self.reads.key_grants():
            grantee, ops = str(grant.get("GranteePrincipal", "")), set(grant.get("Operations") or [])
            if service_grant(grant):
                continue
            context = (grant.get("Constraints") or {}).get("EncryptionContextSubset") or {}
            secret = str(context.get("SecretARN", ""))
            in_account_role = naming.account_of_arn(grantee) == account and ":iam:" in grantee and ":role/" in grantee
            if (in_account_role and ops <= {"Decrypt", "GenerateDataKey"} and set(context) == {"SecretARN"}
                    and naming.owns_secret(self.tid, secret)):
                secrets += 1
                continue
            what = f" for {secret}" if secret else ""
            problems.append(f"grant {grant.get('GrantId', '?')} lets {grantee} {', '.join(sorted(ops))}{what}")
        return not problems, "; ".join(problems) or f"{secrets} grant(s), each for a DB secret of the tenant's only"

    def kms_key_policy_matches_role(self) -> tuple[bool, str]:
        granted = key_use_actions(self._key_policy())
        role = role_key_actions(self._role_policies())
        if granted == role:
            return True, f"key policy and role policy both grant {', '.join(sorted(role))}"
        return False, (f"key policy grants {', '.join(sorted(granted)) or 'nothing'}; role policy "
                       f"{', '.join(sorted(role)) or 'nothing'}")

    def secret_rotation(self) -> tuple[bool, str]:
        secret = self.reads.secret()
        days = (secret.get("RotationRules") or {}).get("AutomaticallyAfterDays")
        function = secret.get("RotationLambdaARN") or ""
        expected = list(dict.fromkeys(
            str(self.platforms.get(cell, {}).get("rotation_function_arn")) if tier == "pooled"
            else f":function:{naming.rotation_function_name(self.tid)}" for tier, cell in self.sides))
        problems = []
        if not secret.get("RotationEnabled"):
            problems.append("rotation is off")
        if not function or not any(function.endswith(each) for each in expected):
            problems.append(f"rotated by {function or 'no function'}, not {' or '.join(expected)}")
        if days is None or int(days) > MAX_ROTATION_DAYS:
            problems.append(f"rotated every {days} days (> {MAX_ROTATION_DAYS})" if days else "no rotation period")
        return not problems, "; ".join(problems) or f"rotated every {days} days by {function}"

    def secret_policy(self) -> tuple[bool, str]:
        policy = self.reads.secret_policy()
        if not policy:
            return True, f"{self.res.store.secret_arn}: no resource policy"
        return False, f"{self.res.store.secret_arn}: resource policy naming {policy_principals(policy)}"

    @property
    def _topic_arn(self) -> str:
        # A workspace's own alarms publish to its own topic.
        topic = naming.resource_name(naming.ws_stem(self.tid, self.workspace) if self.workspace else self.tid, "alarms")
        return naming.arn(self.record.region, "sns", self.platform.get("account_id"), topic)

    def alarm_topic_encryption(self) -> tuple[bool, str]:
        return self._tenant_key_encrypts(self._topic_arn, self.reads.topic_key(self._topic_arn))

    def topic_access(self) -> tuple[bool, str]:
        from tenantctl.checks.reads import confirmed

        arn = self._topic_arn
        account = naming.account_of_arn(arn)
        listed = self.reads.topic_subscriptions(arn)
        subs = confirmed(listed)
        problems = [f"subscription {sub.get('Protocol')} {sub.get('Endpoint')} (not its cell's alarm_subscriptions: "
                    f"`tenantctl apply --refresh` or `tenantctl provision {self.tid}` removes it)"
                    for sub in subs if (sub.get("Protocol"), sub.get("Endpoint")) not in self.subscriptions]
        there = {(sub.get("Protocol"), sub.get("Endpoint")) for sub in listed}
        missing = [f"{p} {e}" for p, e in sorted(self.subscriptions - there)]
        if missing and len({cell for _, cell in self.sides}) == 1:
            problems.append(f"declared subscription(s) missing: {', '.join(missing)} (its cell's "
                            f"alarm_subscriptions: `tenantctl apply --refresh` or `tenantctl provision {self.tid}` "
                            "subscribes it)")
        outsiders = topic_outsiders(self.reads.topic_policy(arn), account)
        if outsiders:
            problems.append(f"policy lets in {', '.join(outsiders)}")
        declared = f"{len(subs)} declared subscription(s)" if subs else "no subscription"
        return not problems, f"{arn}: {'; '.join(problems) or f'{declared}, policy confined to {account}'}"

    def _tenant_key_encrypts(self, what: str, key: str | None) -> tuple[bool, str]:
        """``key`` (an id, alias or ARN, as services report it) is the tenant's."""
        if not key:
            return False, f"{what}: no SSE-KMS key"
        arn = self.reads.key_arn(key)
        if arn != self.res.kms_key_arn:
            return False, f"{what}: encrypted with {arn}, not the tenant key"
        return True, f"{what}: SSE-KMS with {arn}"

    # -- SQS -----------------------------------------------------------------------------
    def _queue_key(self, url: str) -> tuple[bool, str]:
        return self._tenant_key_encrypts(url, self.reads.queue_attributes(url).get("KmsMasterKeyId"))

    def queue_encryption(self) -> tuple[bool, str]:
        return self._queue_key(self.res.queue_url)

    def dlq_encryption(self) -> tuple[bool, str]:
        return self._queue_key(self.res.dlq_url)

    def queue_policy(self) -> tuple[bool, str]:
        problems = []
        for url in (self.res.queue_url, self.res.dlq_url):
            policy = self.reads.queue_attributes(url).get("Policy")
            if policy:
                problems.append(f"{url}: queue policy naming {policy_principals(policy)}")
        return not problems, "; ".join(problems) or "no queue policy on the queue or its DLQ"

    # -- S3 ------------------------------------------------------------------------------
    @cached_property
    def _bucket_policy(self) -> dict:
        from botocore.exceptions import ClientError

        try:
            return _doc(self._client("s3").get_bucket_policy(Bucket=self.res.bucket)["Policy"])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "NoSuchBucketPolicy":
                raise
            return {}

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
        policy = self._bucket_policy
        public = [s.get("Sid", "?") for s in policy.get("Statement", [])
                  if s.get("Effect") == "Allow" and "*" in _principals(s) and not s.get("Condition")]
        if public:
            return False, f"bucket {bucket}: policy statement(s) {', '.join(public)} allow everyone"
        return True, f"bucket {bucket}: all four public access blocks on"

    def bucket_policy(self) -> tuple[bool, str]:
        bucket, prefix, region = self.res.bucket, self.res.prefix, self.record.region
        probes = [iam_eval.s3_object(a, bucket, f"{prefix}probe", region=region)
                  for a in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")]
        probes.append(iam_eval.s3_list(bucket, prefix, region=region))
        probes = [replace(p, principal="x") for p in probes]
        problems = []
        for stmt in self._bucket_policy.get("Statement", []):
            spec = stmt.get("Principal")
            if stmt.get("Effect") != "Allow" or (isinstance(spec, dict) and set(spec) == {"Service"}):
                continue
            # Its condition aside: whoever it names reaches the tenant's objects when it holds.
            bare = {k: v for k, v in stmt.items() if k != "Condition"} | {"Principal": "*"}
            try:
                reaches = any(iam_eval.statement_applies(bare, probe) for probe in probes)
            except iam_eval.Unsupported as exc:
                reaches, why = True, f" (not judged: {exc})"
            else:
                why = ""
            if reaches:
                problems.append(f"statement {stmt.get('Sid', '?')} allows {', '.join(_principals(stmt))} "
                                f"{prefix}{why}")
        return not problems, "; ".join(problems) or f"bucket {bucket}: no statement allows anyone {prefix}"

    def bucket_access_logging(self) -> tuple[bool, str]:
        status = self._client("s3").get_bucket_logging(Bucket=self.res.bucket).get("LoggingEnabled") or {}
        target = status.get("TargetBucket")
        if not target:
            return False, f"bucket {self.res.bucket}: server access logging off"
        if target == self.res.bucket:
            return False, f"bucket {self.res.bucket} logs into itself"
        return True, f"bucket {self.res.bucket}: access logs to {target}/{status.get('TargetPrefix', '')}"

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
        reads = self.reads
        role_tags, secret_tags = reads.role_tags(), reads.secret().get("Tags", [])
        return {
            "kms key": {t["TagKey"]: t["TagValue"] for t in reads.key_tags()},
            "queue": reads.queue_tags(self.res.queue_url),
            "dlq": reads.queue_tags(self.res.dlq_url),
            "role": {t["Key"]: t["Value"] for t in role_tags},
            "secret": {t["Key"]: t["Value"] for t in secret_tags},
        }

    def tags(self) -> tuple[bool, str]:
        problems, tiers = [], {tier for tier, _ in self.sides}
        for what, tags in self._tag_sets().items():
            missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
            if missing:
                problems.append(f"{what}: missing {', '.join(missing)}")
            elif (tags["tenant"], tags["managed-by"]) != (self.tid, "tenantctl") or tags["tier"] not in tiers:
                problems.append(f"{what}: tagged tenant={tags['tenant']} tier={tags['tier']} "
                                f"managed-by={tags['managed-by']}")
            # A workspace's resources name it; the tenant's own name none (a cost or
            # access rule keyed on the tag would otherwise count or admit the wrong owner).
            if tags.get("workspace") != self.workspace:
                problems.append(f"{what}: tagged workspace={tags.get('workspace')}")
        return not problems, "; ".join(problems) or "key, queue, dlq, role, secret tagged"

    # -- IAM -------------------------------------------------------------------------------
    def role_trust(self) -> tuple[bool, str]:
        from tenant_runtime.credentials import SESSION_TAG

        doc = _doc(self.reads.trust_policy())
        runtime, role, region = self.platform.get("runtime_principal_arn"), self.res.role_arn, self.record.region
        account = role.split(":")[4]
        trusted = [p for s in doc.get("Statement", []) if s.get("Effect") == "Allow" for p in _principals(s)]
        problems = [f"trusts the account root {p}: any principal of the account allowed sts:AssumeRole could "
                    "become this tenant" for p in trusted if _is_account(p)]
        problems += [f"trusts {p}, not the runtime principal" for p in trusted if p != runtime and not _is_account(p)]
        if runtime is None or _is_account(runtime):
            problems.append(f"the platform's runtime principal is {runtime or 'unset'}, not a role of the runtime's "
                            "own: apply the platform stack again (it creates tenantctl-runtime)")
        # How the runtime calls: as a session of its role (or as the user it names).
        caller, me = runtime or "", self.subject
        if ":role/" in caller:
            # (a session name holds no "/": a workspace's key has one)
            session = f"tenant-{me}".replace("/", ".")
            # (in the runtime's partition, which its ARN says: its cell's, not the tenant's)
            partition, runtime_account = naming.partition_of_arn(caller), naming.account_of_arn(caller)
            caller = f"arn:{partition}:sts::{runtime_account}:assumed-role/{caller.rsplit('/', 1)[-1]}/{session}"
        # A suspended tenant's role may not be assumed at all (no session is renewed).
        suspended = self.record.status is TenantStatus.suspended
        probes = [
            (f"{SESSION_TAG}={me}", iam_eval.assume_role(role, caller, {SESSION_TAG: me}), not suspended),
            ("another principal of the account",
             iam_eval.assume_role(role, naming.arn(region, "iam", account, "user/intruder"), {SESSION_TAG: me}), False),
            ("no session tag", iam_eval.assume_role(role, caller), False),
            (f"{SESSION_TAG}={me}-x", iam_eval.assume_role(role, caller, {SESSION_TAG: f"{me}-x"}), False),
            ("an extra session tag", iam_eval.assume_role(role, caller, {SESSION_TAG: me, "tier": "x"}), False),
            ("a principal of another account",
             iam_eval.assume_role(role, naming.arn(region, "iam", "000000000000", "role/elsewhere"), {SESSION_TAG: me}),
             False),
        ]
        for what, requests, expected in probes:
            if iam_eval.allows_all([doc], requests) != expected:
                problems.append(f"assume with {what} is {'denied' if expected else 'allowed'}")
        if suspended:
            return not problems, "; ".join(problems) or "suspended: nobody may assume it"
        return not problems, "; ".join(problems) or f"only {runtime}, only with {SESSION_TAG}={me}"

    def _role_policies(self) -> list[dict]:
        return [_doc(self.reads.role_policy(name)) for name in self.reads.role_policy_names()]

    def role_policy_scope(self) -> tuple[bool, str]:
        attached = self.reads.attached_policies()
        docs = self._role_policies()
        problems = [f"managed policy {arn} attached" for arn in attached]
        if not docs:
            problems.append("no inline policy")
        alias = PlannedResource(type="aws:kms/alias:Alias", name="alias",
                                inputs={"name": self.names.kms_alias, "targetKeyId": self.res.kms_key_arn})
        planned = [PlannedResource(type="aws:iam/rolePolicy:RolePolicy", name=f"{self.role_name}/{i}",
                                   inputs={"policy": json.dumps(d)}) for i, d in enumerate(docs)]
        problems += [v.message for v in check(planned + [alias], self.tid, rules=["iam-scope"])]
        bucket, own = self.res.bucket, self.names.s3_prefix
        obj = partial(iam_eval.s3_object, bucket=bucket, region=self.record.region)
        listing = partial(iam_eval.s3_list, bucket, region=self.record.region)
        allowed = [obj("s3:GetObject", key=f"{own}probe"), obj("s3:PutObject", key=f"{own}uploads/probe"), listing(own)]
        denied = [listing(""), listing("tenants/")]
        stem, tenant_prefix = own.rstrip("/"), naming.s3_prefix(self.tid)
        # Its twins, another tenant's, and (for a workspace) its tenant's own prefix.
        others = [f"{stem}-x/", f"{stem}x/", stem, "tenants/other/"] + ([tenant_prefix] if own != tenant_prefix else [])
        for other in others:
            denied += [obj("s3:GetObject", key=f"{other}probe"), obj("s3:PutObject", key=f"{other}probe"),
                       listing(other)]
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


NAMES = ("kms-key-state", "kms-alias", "kms-rotation", "kms-key-policy", "kms-grants", "kms-key-policy-matches-role",
         "queue-encryption", "dlq-encryption", "queue-policy", "bucket-public-access", "bucket-policy",
         "bucket-encryption", "bucket-access-logging", "secret-rotation", "secret-policy", "alarm-topic-encryption",
         "topic-access", "tags", "role-trust", "role-policy-scope")


# What a workspace has of its own (the bucket and database instance are its tenant's).
WORKSPACE_NAMES = ("kms-key-state", "kms-alias", "kms-rotation", "kms-key-policy", "kms-grants",
                   "kms-key-policy-matches-role", "queue-encryption", "dlq-encryption", "queue-policy",
                   "secret-rotation", "secret-policy", "alarm-topic-encryption", "topic-access", "tags", "role-trust",
                   "role-policy-scope")


def workspace_aws_checks(view: Any, workspace: str, platform: dict[str, Any], clients: Callable[..., Any],
                         area: str, platforms: dict[str, dict[str, Any]] | None = None,
                         applied: list[Any] | None = None, subscriptions: Collection[tuple[str, str]] = ()
                         ) -> Iterator[CheckResult]:
    """The tenant's checks of what a workspace has of its own, on its resources (``view``: its record's view);
    ``applied``: as ``aws_checks``' ``reads``, what the up that just ran established."""
    from tenantctl.checks.reads import AppliedReads

    reads = LiveReads(view, clients) if applied is None else AppliedReads(view, clients, applied)
    checks = _AwsChecks(view, platform, clients, reads, workspace=workspace, platforms=platforms,
                        subscriptions=subscriptions)
    yield from run_each(area, [(name, getattr(checks, name.replace("-", "_"))) for name in WORKSPACE_NAMES])


def aws_checks(record: Any, platform: dict[str, Any], clients: Callable[..., Any],
               reads: LiveReads | None = None, platforms: dict[str, dict[str, Any]] | None = None,
               subscriptions: Collection[tuple[str, str]] = ()) -> Iterator[CheckResult]:
    """``clients(service, region=)``: the target's AWS clients (``Workspace.client``); ``reads``: where the
    tenant resources' settings come from (default: live, each read once); ``subscriptions``: its cell's
    alarm subscriptions, (protocol, endpoint) each."""
    checks = _AwsChecks(record, platform, clients, reads or LiveReads(record, clients), platforms=platforms,
                        subscriptions=subscriptions)
    names = list(NAMES) + (["rds-posture"] if record.tier.value == "dedicated" else [])
    yield from run_each(AREA, [(name, getattr(checks, name.replace("-", "_"))) for name in names])
