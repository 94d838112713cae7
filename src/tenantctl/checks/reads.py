"""Where the AWS posture checks get a tenant resource's settings from.

``LiveReads``: the live resources, each read once per check run (`tenantctl
check` and every check that has no apply behind it).

``AppliedReads``: after a provision, the settings the up itself just wrote or
read live (its creates, updates and replacements, and with a refresh every
resource the refresh read), as the engine recorded them (``UpResult.applied``);
anything else is read live. The checks judge those settings exactly as they
judge live ones: only where a value comes from changes. What an up does not
establish is always read live: the role's inline and managed policy *lists*
(a put writes one policy; it does not say there is no other) unless the up
made the role itself, whatever the up left alone, and everything outside the tenant's own resources (the cell's
bucket, network, database).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tenantctl.naming import account_of_arn

KEY, ROLE, QUEUE, GRANT = "aws:kms/key:Key", "aws:iam/role:Role", "aws:sqs/queue:Queue", "aws:kms/grant:Grant"
ALIAS, SUBSCRIPTION = "aws:kms/alias:Alias", "aws:sns/topicSubscription:TopicSubscription"
ROLE_POLICY, ATTACHMENT = "aws:iam/rolePolicy:RolePolicy", "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
SECRET, ROTATION, TOPIC = ("aws:secretsmanager/secret:Secret", "aws:secretsmanager/secretRotation:SecretRotation",
                           "aws:sns/topic:Topic")


# The policy AWS gives a topic made without one, as the alarm topic is (no stack declares a
# topic policy): the topic's account may use it, nobody else. A repair puts it back (SNS has no
# call removing a topic's policy).
_TOPIC_ACTIONS = ["SNS:GetTopicAttributes", "SNS:SetTopicAttributes", "SNS:AddPermission", "SNS:RemovePermission",
                  "SNS:DeleteTopic", "SNS:Subscribe", "SNS:ListSubscriptionsByTopic", "SNS:Publish"]


def default_topic_policy(arn: str) -> str:
    return json.dumps({"Version": "2008-10-17", "Id": "__default_policy_ID", "Statement": [{
        "Sid": "__default_statement_ID", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": _TOPIC_ACTIONS,
        "Resource": arn, "Condition": {"StringEquals": {"AWS:SourceOwner": account_of_arn(arn)}}}]})


PENDING = "PendingConfirmation"  # a subscription's ARN while it waits for its endpoint to confirm it


def topic_subscriptions(sns: Any, arn: str) -> list[dict[str, Any]]:
    """The topic's subscriptions (SubscriptionArn, Protocol, Endpoint), those pending confirmation
    (``PENDING``) included: no message reaches one yet, and none can be unsubscribed; confirmed, it
    is listed with its ARN. `check` and `refresh` judge the confirmed ones, and count a declared
    endpoint subscribed either way."""
    return [s for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=arn)
            for s in page["Subscriptions"]]


def confirmed(subscriptions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in subscriptions if s.get("SubscriptionArn") != PENDING]


def _tag_pairs(tags: dict[str, Any], key: str = "Key", value: str = "Value") -> list[dict[str, str]]:
    return [{key: k, value: str(v)} for k, v in (tags or {}).items()]


class LiveReads:
    def __init__(self, record: Any, clients: Callable[..., Any]) -> None:
        self.res = record.resources
        self._client = lambda service: clients(service, region=record.region)
        self._done: dict[tuple, Any] = {}

    def _once(self, key: tuple, read: Callable[[], Any]) -> Any:
        if key not in self._done:
            self._done[key] = read()
        return self._done[key]

    @property
    def role_name(self) -> str:
        return self.res.role_arn.rsplit("/", 1)[-1]

    # -- KMS -------------------------------------------------------------------
    def key_metadata(self, key_id: str | None = None) -> dict[str, Any]:
        key_id = key_id or self.res.kms_key_arn
        return self._once(("key", key_id), lambda: self._client("kms").describe_key(KeyId=key_id)["KeyMetadata"])

    def key_arn(self, key_id: str) -> str:
        """The ARN of ``key_id`` (an id, alias or ARN, as services report it)."""
        if key_id == self.res.kms_key_arn:  # the tenant key's own ARN names it: nothing to resolve
            return key_id
        return self.key_metadata(key_id)["Arn"]

    def alias_target(self) -> str:
        """The ARN of the key the tenant's alias names."""
        return self.key_metadata(self.res.kms_alias)["Arn"]

    def key_rotation(self) -> bool:
        return self._once(("rotation",), lambda: self._client("kms").get_key_rotation_status(
            KeyId=self.res.kms_key_arn)["KeyRotationEnabled"])

    def key_policy(self) -> str:
        return self._once(("key-policy",), lambda: self._client("kms").get_key_policy(
            KeyId=self.res.kms_key_arn, PolicyName="default")["Policy"])

    def key_tags(self) -> list[dict[str, str]]:
        return self._once(("key-tags",), lambda: self._client("kms").list_resource_tags(
            KeyId=self.res.kms_key_arn).get("Tags", []))

    def key_grants(self) -> list[dict[str, Any]]:
        """The key's grants: GranteePrincipal, Operations, Constraints."""
        return self._once(("key-grants",), lambda: [grant for page in self._client("kms").get_paginator(
            "list_grants").paginate(KeyId=self.res.kms_key_arn) for grant in page["Grants"]])

    # -- SQS -------------------------------------------------------------------
    def queue_attributes(self, url: str) -> dict[str, str]:
        """KmsMasterKeyId, QueueArn and Policy (absent: none)."""
        return self._once(("queue", url), lambda: self._client("sqs").get_queue_attributes(
            QueueUrl=url, AttributeNames=["KmsMasterKeyId", "QueueArn", "Policy"]).get("Attributes", {}))

    def queue_tags(self, url: str) -> dict[str, str]:
        return self._once(("queue-tags", url), lambda: self._client("sqs").list_queue_tags(
            QueueUrl=url).get("Tags", {}))

    # -- Secrets Manager, SNS --------------------------------------------------
    def secret(self) -> dict[str, Any]:
        """RotationEnabled, RotationRules, RotationLambdaARN, Tags."""
        return self._once(("secret",), lambda: self._client("secretsmanager").describe_secret(
            SecretId=self.res.store.secret_arn))

    def secret_policy(self) -> str | None:
        """The DB secret's resource policy, None without one."""
        return self._once(("secret-policy",), lambda: self._client("secretsmanager").get_resource_policy(
            SecretId=self.res.store.secret_arn).get("ResourcePolicy"))

    def _topic_attributes(self, arn: str) -> dict[str, str]:
        return self._once(("topic", arn), lambda: self._client("sns").get_topic_attributes(
            TopicArn=arn)["Attributes"])

    def topic_key(self, arn: str) -> str | None:
        return self._topic_attributes(arn).get("KmsMasterKeyId")

    def topic_policy(self, arn: str) -> str | None:
        return self._topic_attributes(arn).get("Policy")

    def topic_subscriptions(self, arn: str) -> list[dict[str, Any]]:
        """Pending ones included (``topic_subscriptions``)."""
        return self._once(("topic-subscriptions", arn), lambda: topic_subscriptions(self._client("sns"), arn))

    # -- IAM -------------------------------------------------------------------
    def trust_policy(self) -> Any:
        return self._once(("role",), lambda: self._client("iam").get_role(
            RoleName=self.role_name)["Role"]["AssumeRolePolicyDocument"])

    def role_tags(self) -> list[dict[str, str]]:
        return self._once(("role-tags",), lambda: self._client("iam").list_role_tags(
            RoleName=self.role_name).get("Tags", []))

    def role_policy_names(self) -> list[str]:
        return self._once(("role-policies",), lambda: self._client("iam").list_role_policies(
            RoleName=self.role_name)["PolicyNames"])

    def role_policy(self, name: str) -> Any:
        return self._once(("role-policy", name), lambda: self._client("iam").get_role_policy(
            RoleName=self.role_name, PolicyName=name)["PolicyDocument"])

    def attached_policies(self) -> list[str]:
        return self._once(("attached",), lambda: [p["PolicyArn"] for p in self._client(
            "iam").list_attached_role_policies(RoleName=self.role_name)["AttachedPolicies"]])


class AppliedReads(LiveReads):
    """``applied``: the resources the up established (``UpResult.applied``), as (type, inputs, outputs)."""

    def __init__(self, record: Any, clients: Callable[..., Any], applied: list[Any]) -> None:
        super().__init__(record, clients)
        self.applied = applied

    def _find(self, typ: str, key: str, value: str, side: str = "outputs") -> dict[str, Any] | None:
        """The established resource of ``typ`` whose ``side`` (inputs/outputs) has ``key`` == ``value``."""
        for r in self.applied:
            if r.type == typ and str(getattr(r, side).get(key)) == value:
                return r
        return None

    def key_metadata(self, key_id: str | None = None) -> dict[str, Any]:
        key = self._find(KEY, "arn", key_id or self.res.kms_key_arn)
        if key is None or not key.inputs.get("isEnabled", True):
            return super().key_metadata(key_id)
        # Made or brought back to Enabled by this up (configure enables a disabled or pending-deletion key).
        return {"Arn": key.outputs["arn"], "KeyId": key.outputs.get("keyId"), "KeyState": "Enabled"}

    def alias_target(self) -> str:
        alias = self._find(ALIAS, "name", self.res.kms_alias, "inputs")  # made or pointed again by this up
        return str(alias.inputs.get("targetKeyId")) if alias is not None else super().alias_target()

    def key_rotation(self) -> bool:
        key = self._find(KEY, "arn", self.res.kms_key_arn)
        return bool(key.inputs.get("enableKeyRotation")) if key is not None else super().key_rotation()

    def key_policy(self) -> str:
        key = self._find(KEY, "arn", self.res.kms_key_arn)
        return key.inputs["policy"] if key is not None and key.inputs.get("policy") else super().key_policy()

    def key_tags(self) -> list[dict[str, str]]:
        key = self._find(KEY, "arn", self.res.kms_key_arn)
        return _tag_pairs(key.inputs.get("tags"), "TagKey", "TagValue") if key is not None else super().key_tags()

    def key_grants(self) -> list[dict[str, Any]]:
        from tenantctl.engines.local.handlers.kms import grant_constraints  # the inputs' shape, either engine's

        key = self._find(KEY, "arn", self.res.kms_key_arn)
        if key is None or not key.made:  # a grant made says nothing of others already there: listed live
            return super().key_grants()
        # A key this up made holds exactly the grants the up made on it.
        return [{"GranteePrincipal": g.inputs.get("granteePrincipal"), "Operations": list(g.inputs.get("operations")),
                 "Constraints": grant_constraints(g.inputs.get("constraints"))}
                for g in self.applied if g.type == GRANT and g.inputs.get("keyId") == self.res.kms_key_arn]

    def queue_attributes(self, url: str) -> dict[str, str]:
        queue = self._find(QUEUE, "url", url)
        if queue is None or (not queue.made and not queue.inputs.get("policy")):
            return super().queue_attributes(url)  # a policy put out of band stays until one is declared
        return {"QueueArn": queue.outputs["arn"], **({"KmsMasterKeyId": queue.inputs["kmsMasterKeyId"]}
                                                     if queue.inputs.get("kmsMasterKeyId") else {}),
                **({"Policy": queue.inputs["policy"]} if queue.inputs.get("policy") else {})}

    def queue_tags(self, url: str) -> dict[str, str]:
        queue = self._find(QUEUE, "url", url)
        return dict(queue.inputs.get("tags") or {}) if queue is not None else super().queue_tags(url)

    def secret(self) -> dict[str, Any]:
        arn = self.res.store.secret_arn
        secret, rotation = self._find(SECRET, "arn", arn), self._find(ROTATION, "secretId", arn, "inputs")
        if secret is None or rotation is None:
            return super().secret()
        days = (rotation.inputs.get("rotationRules") or {}).get("automaticallyAfterDays")
        return {"ARN": arn, "Tags": _tag_pairs(secret.inputs.get("tags")), "RotationEnabled": True,
                "RotationLambdaARN": rotation.inputs.get("rotationLambdaArn"),
                "RotationRules": {"AutomaticallyAfterDays": int(days)} if days else {}}

    def secret_policy(self) -> str | None:
        secret = self._find(SECRET, "arn", self.res.store.secret_arn)
        # A secret this up made has no resource policy (the stack declares none); another is read.
        return None if secret is not None and secret.made else super().secret_policy()

    def topic_key(self, arn: str) -> str | None:
        topic = self._find(TOPIC, "arn", arn)
        return topic.inputs.get("kmsMasterKeyId") if topic is not None else super().topic_key(arn)

    def _made_topic(self, arn: str) -> bool:
        topic = self._find(TOPIC, "arn", arn)
        return topic is not None and topic.made

    def topic_policy(self, arn: str) -> str | None:
        # A topic this up made has AWS's default policy (the stack declares none); another is read.
        return default_topic_policy(arn) if self._made_topic(arn) else super().topic_policy(arn)

    def topic_subscriptions(self, arn: str) -> list[dict[str, Any]]:
        # A topic this up made has the subscriptions this up made on it (its cell's), no other.
        if not self._made_topic(arn):
            return super().topic_subscriptions(arn)
        return [{"Protocol": r.inputs.get("protocol"), "Endpoint": r.inputs.get("endpoint")}
                for r in self.applied if r.type == SUBSCRIPTION and r.inputs.get("topic") == arn]

    def trust_policy(self) -> Any:
        role = self._find(ROLE, "arn", self.res.role_arn)
        return role.inputs["assumeRolePolicy"] if role is not None else super().trust_policy()

    def role_tags(self) -> list[dict[str, str]]:
        role = self._find(ROLE, "arn", self.res.role_arn)
        return _tag_pairs(role.inputs.get("tags")) if role is not None else super().role_tags()

    def _made_role(self) -> bool:
        role = self._find(ROLE, "arn", self.res.role_arn)
        return role is not None and role.made

    def role_policy_names(self) -> list[str]:
        if not self._made_role():  # a put says nothing of policies already there: listed live
            return super().role_policy_names()
        # A role this up made holds exactly the inline policies the up put on it.
        return [str(r.outputs.get("name")) for r in self.applied
                if r.type == ROLE_POLICY and r.inputs.get("role") == self.role_name]

    def attached_policies(self) -> list[str]:
        if not self._made_role():
            return super().attached_policies()
        return [str(r.inputs.get("policyArn")) for r in self.applied
                if r.type == ATTACHMENT and r.inputs.get("role") == self.role_name]

    def role_policy(self, name: str) -> Any:
        put = self._find(ROLE_POLICY, "name", name)
        if put is None or put.inputs.get("role") != self.role_name:
            return super().role_policy(name)
        return put.inputs["policy"]


# The cell's shared resources (bucket, network, database, the gateway secret's
# policy) as a pooled tenant's post-provision check reads them: the same read
# with the same arguments within CELL_READ_TTL seconds in this process is
# answered from its last live answer. Provisioning N tenants of a cell in a row
# then reads them once, not N times. Only the post-provision check of a pooled
# tenant uses it (the up changed none of them); `tenantctl check` always reads live.
CELL_READ_TTL = 60.0
# Each service's memoized operations (None: all).
CELL_SERVICES: dict[str, tuple[str, ...] | None] = {"s3": None, "ec2": None, "rds": None}
# The gateway checks' own: its secret's policy, not its password (read fresh: a rotated one fails
# the login), nor a tenant's or workspace's secret's policy (only the gateway checks get these).
GATEWAY_SECRET_READS: dict[str, tuple[str, ...] | None] = {"secretsmanager": ("get_resource_policy",)}
_cell_reads: dict[tuple, tuple[float, Any, Exception | None]] = {}


class _MemoClient:
    def __init__(self, client: Any, scope: tuple, ops: tuple[str, ...] | None) -> None:
        self._client, self._scope, self._ops = client, scope, ops

    def __getattr__(self, op: str) -> Any:
        import time

        call = getattr(self._client, op)
        if self._ops is not None and op not in self._ops:
            return call

        def memo(**kwargs: Any) -> Any:
            key = (*self._scope, op, json.dumps(kwargs, sort_keys=True, default=str))
            hit = _cell_reads.get(key)
            if hit is None or time.monotonic() - hit[0] >= CELL_READ_TTL:
                from botocore.exceptions import ClientError

                try:
                    hit = (time.monotonic(), call(**kwargs), None)
                except ClientError as exc:  # an answer too ("no bucket policy"): the checks read its code
                    hit = (time.monotonic(), None, exc)
                _cell_reads[key] = hit
            if hit[2] is not None:
                raise hit[2]
            return hit[1]

        return memo


def cell_reads_memoized(clients: Callable[..., Any], scope: tuple,
                        services: dict[str, tuple[str, ...] | None] = CELL_SERVICES) -> Callable[..., Any]:
    """``clients`` whose reads of ``services`` (s3 / ec2 / rds) are memoized (``scope``: the cell's
    account and region)."""
    def client(service: str, **kwargs: Any) -> Any:
        made = clients(service, **kwargs)
        return (_MemoClient(made, (*scope, service, kwargs.get("region")), services[service])
                if service in services else made)

    return client
