"""What exists in the account tagged ``managed-by=tenantctl``, whoever's state
knows it: the refresh's orphans (tagged as a tenant's, unknown to its state) and
the audit's unclaimed resources (tagged for a tenant no record names) both come
from here, and so does removing one.

One Resource Groups Tagging API scan per region covers every service tenantctl
tags except IAM, which that API does not cover: roles named ``tenantctl-...``
are listed and their tags read one by one. A key pending deletion or a secret
in its recovery window is not live (``is_live``): it is the tail of a deletion,
not a leftover.

The ``tenant`` tag alone never makes a resource a tenant's to remove: anyone
can edit a tag. One whose name is another tenant's, or whose urn tag names a
stack not the tenant's, is ``foreign`` to it: reported, never removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from tenantctl import naming
from tenantctl.engines.local.handlers.base import URN_TAG, urn_tag
from tenantctl.errors import InvalidInput
from tenantctl.naming import region_of_arn, stack_tenant, tenant_ids_in

MANAGED_BY = {"Key": "managed-by", "Values": ["tenantctl"]}
ROLE_PREFIX = "tenantctl-"
# Kinds whose leftovers tenantctl removes when it repairs; anything else (a
# database, a bucket, a VPC...) is reported and left to a person.
REMOVABLE = ("sqs", "sns", "cloudwatch:alarm", "kms:key", "secretsmanager:secret", "iam:role",
             "ec2:security-group", "ec2:security-group-rule", "iam:role-policy", "iam:role-policy-attachment",
             "kms:grant", "sqs:queue-policy", "secretsmanager:resource-policy", "sns:subscription",
             "sns:topic-policy")
# Snapshots are data kept on purpose (RDS's automated ones, drill backups, the final snapshot of a
# deleted store), each carrying its instance's tags: no stack declares one, so neither a refresh
# (an orphan) nor an audit (a deprovisioned tenant's leftover) counts them.
RETAINED_KINDS = ("rds:snapshot", "rds:cluster-snapshot")
# CloudFormation tags what a stack creates with the stack's ARN (and passes the stack's own tags on):
# a rotation function and its role belong to the stack that made them, not to no one.
CLOUDFORMATION_STACK_TAG = "aws:cloudformation:stack-id"
KEY_DELETION_DAYS = 30  # a removed key is only scheduled for deletion: the window is the undo
SECRET_RECOVERY_DAYS = 7

Clients = Callable[..., Any]  # (service, region=None) -> boto3 client: Workspace.client


def urn_stack(urn: str) -> str | None:
    """The stack a Pulumi urn names (None: not a urn)."""
    return urn.split(":", 2)[2].split("::", 1)[0] if urn.startswith("urn:pulumi:") else None


class Tagged(BaseModel):
    """One tagged resource, by ARN."""

    model_config = ConfigDict(frozen=True)

    arn: str
    region: str
    tags: dict[str, str]

    @property
    def service(self) -> str:
        return self.arn.split(":")[2]

    def _split(self) -> tuple[str, str]:
        """(resource type, resource name) of the ARN's last part: ``key/abc``, ``alarm:x``, or a bare name."""
        resource = self.arn.split(":", 5)[5] if self.arn.count(":") >= 5 else ""
        cuts = [i for i in (resource.find("/"), resource.find(":")) if i >= 0]
        if self.service in ("sqs", "sns", "s3") or not cuts:
            return "", resource
        return resource[:min(cuts)], resource[min(cuts) + 1:]

    @property
    def kind(self) -> str:
        """``sqs``, ``kms:key``, ``ec2:security-group``, ``rds:db``... (service, then the ARN's resource type)."""
        typ = self._split()[0]
        return f"{self.service}:{typ}" if typ else self.service

    @property
    def name(self) -> str:
        return self._split()[1]

    @property
    def urn(self) -> str | None:
        return self.tags.get(URN_TAG)

    @property
    def urn_stack(self) -> str | None:
        """The stack its urn tag names (None without one, or when the tag holds a long urn's hash)."""
        return urn_stack(self.urn or "")

    @property
    def tenant(self) -> str | None:
        """The tenant it is tagged for: its ``tenant`` tag, else the stack in its urn tag."""
        return self.tags.get("tenant") or self.urn_stack

    def foreign(self, tenant_id: str) -> str | None:
        """Why it is not ``tenant_id``'s own whatever its ``tenant`` tag says, or None: its urn tag
        names a stack other than the tenant's (another tenant's, a cell's; ``acme.k1`` is acme's), or
        its name is another tenant's. A key's name is its id, a VPC's or a security group's too:
        for those only the urn tag can tell (the LocalEngine writes one, the PulumiEngine does not)."""
        stack = self.urn_stack
        if stack is not None and (stack_tenant(stack) or ("",))[0] != tenant_id:
            return f"its {URN_TAG} tag names stack {stack}"
        others = tenant_ids_in(self.name, tenant_id)
        if others:
            return f"its name belongs to tenant {', '.join(sorted(others))}"
        return None

    @property
    def owner_arn(self) -> str | None:
        """The CloudFormation stack that created it (and deletes it with itself), if one did."""
        return self.tags.get(CLOUDFORMATION_STACK_TAG) or None

    @property
    def retained(self) -> bool:
        return self.kind in RETAINED_KINDS

    @property
    def removable(self) -> bool:
        return self.kind in REMOVABLE or self.service in REMOVABLE

    def describe(self) -> str:
        return f"{self.kind} {self.name}"


class UnmanagedRule(Tagged):
    """An ingress rule in one of a stack's own security groups whose rules are
    resources of their own, that no rule resource of the stack declares: added
    out of band. Neither engine sees it as drift (the group declares no inline
    rules, so its live ones are not compared), yet it opens the database."""

    group_id: str
    admits: str  # "tcp 5432 from 0.0.0.0/0"

    @property
    def rule_id(self) -> str:
        return self.arn.rsplit("/", 1)[1]

    @property
    def name(self) -> str:
        return f"{self.rule_id} ({self.admits} into {self.group_id})"


SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"


def _admits(rule: dict[str, Any]) -> str:
    protocol = str(rule.get("IpProtocol"))
    ports = "" if protocol == "-1" else (f" {rule.get('FromPort')}" if rule.get("FromPort") == rule.get("ToPort")
                                         else f" {rule.get('FromPort')}-{rule.get('ToPort')}")
    source = ((rule.get("ReferencedGroupInfo") or {}).get("GroupId") or rule.get("CidrIpv4")
              or rule.get("CidrIpv6") or rule.get("PrefixListId") or "?")
    return f"{'all traffic' if protocol == '-1' else protocol}{ports} from {source}"


def unmanaged_rules(clients: Clients, region: str, stack: Iterable[tuple[str, str]]) -> list[UnmanagedRule]:
    """The ingress rules added out of band to the groups of ``stack`` ((type, ARN)
    of each resource its state knows) whose rules the stack declares as rule
    resources: a group one of the stack's rule resources is in. One call; none
    for a stack without both a group and a rule (a pooled tenant's)."""
    stack = list(stack)
    groups = {arn.rsplit("/", 1)[1] for typ, arn in stack if typ == SECURITY_GROUP and arn}
    declared = {arn.rsplit("/", 1)[1] for typ, arn in stack if typ == INGRESS_RULE and arn}
    if not groups or not declared:
        return []
    live = [rule for page in clients("ec2", region).get_paginator("describe_security_group_rules").paginate(
        Filters=[{"Name": "group-id", "Values": sorted(groups)}]) for rule in page["SecurityGroupRules"]]
    managed = {r["GroupId"] for r in live if r["SecurityGroupRuleId"] in declared}
    return [UnmanagedRule(arn=r.get("SecurityGroupRuleArn") or naming.arn(region, "ec2", r.get("GroupOwnerId", ""),
                                                                           f"security-group-rule/{r['SecurityGroupRuleId']}"),
                          region=region, tags={t["Key"]: t["Value"] for t in r.get("Tags", [])},
                          group_id=r["GroupId"], admits=_admits(r))
            for r in live if not r.get("IsEgress") and r["GroupId"] in managed
            and r["SecurityGroupRuleId"] not in declared]


class AddedOutOfBand(Tagged):
    """Something added to one of a stack's own resources behind its back (a policy on its
    role, a grant on its key...): never another tenant's, whatever its names say."""

    def foreign(self, tenant_id: str) -> str | None:
        return None  # on the stack's own resource: taking it off never touches another's


class UnmanagedRolePolicy(AddedOutOfBand):
    """A grant on one of a stack's own roles that the stack does not declare: an
    inline policy none of its role policy resources is, or any attached managed
    policy (no stack attaches one). Neither engine sees it as drift (a role's
    live policies are not among its compared properties), yet it widens what the
    role reaches. Its ``arn`` is the role's (an inline policy has none), or the
    managed policy's."""

    role_name: str
    policy: str  # the inline policy's name, or the attached policy's ARN
    attached: bool = False

    @property
    def kind(self) -> str:
        return "iam:role-policy-attachment" if self.attached else "iam:role-policy"

    @property
    def name(self) -> str:
        return f"{self.policy} (on role {self.role_name})"


ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ROLE_POLICY_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"


def unmanaged_role_policies(clients: Clients, stack: Iterable[tuple[str, str, str]]) -> list[UnmanagedRolePolicy]:
    """The policies put on or attached to the roles of ``stack`` ((type, ARN, id) of
    each resource its state knows) out of band: inline ones no role policy
    resource of the stack is (its id is ``role:name``), attached ones when the
    stack declares no attachment. Two calls per role. Nothing when the engine
    named no ids (the declared policies cannot be told)."""
    stack = list(stack)
    roles = {arn: rid for typ, arn, rid in stack if typ == ROLE and arn and rid}
    declared = {rid for typ, _, rid in stack if typ == ROLE_POLICY}
    if not roles or "" in declared:
        return []
    attachments = any(typ == ROLE_POLICY_ATTACHMENT for typ, _, _ in stack)
    iam, found = clients("iam"), []
    for arn, role in sorted(roles.items()):
        try:
            for page in iam.get_paginator("list_role_policies").paginate(RoleName=role):
                found += [UnmanagedRolePolicy(arn=arn, region="global", tags={}, role_name=role, policy=name)
                          for name in page["PolicyNames"] if f"{role}:{name}" not in declared]
            if attachments:
                continue
            for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=role):
                found += [UnmanagedRolePolicy(arn=a["PolicyArn"], region="global", tags={}, role_name=role,
                                              policy=a["PolicyArn"], attached=True) for a in page["AttachedPolicies"]]
        except iam.exceptions.NoSuchEntityException:
            continue  # deleted out of band meanwhile: its own drift, and nothing is granted through it
    return found


class UnmanagedAccess(AddedOutOfBand):
    """Access to one of a stack's own keys, queues, secrets or topics that the stack does
    not declare: a KMS grant none of its grant resources is (an AWS service's own
    grant aside: RDS makes one for a store it encrypts), a queue's or a
    secret's resource policy (no stack declares one), a topic's subscription none
    of its subscription resources is, or a topic policy letting in a principal
    outside the topic's account. None is a property either engine compares, yet
    each hands the resource (or what the topic publishes) to whoever it names.
    ``arn``: the key's, queue's, secret's or topic's."""

    what: str  # "kms:grant", "sqs:queue-policy", "secretsmanager:resource-policy", "sns:subscription", ...
    label: str  # what it lets whom, as the reports name it
    target: str  # the grant's id; the queue's URL; the secret's ARN; the subscription's ARN; the topic's ARN

    @property
    def kind(self) -> str:
        return self.what

    @property
    def name(self) -> str:
        return self.label


class SubscriptionDrift(Tagged):
    """Where one of a stack's alarm topics (``arn``: the topic's) differs from its cell's declared
    ``alarm_subscriptions`` by one endpoint: drift the repair's up settles, never an orphan (so
    never removed as one)."""

    protocol: str
    endpoint: str
    resource: str  # the TopicSubscription resource the stack holds, or will
    subscription: str = ""  # its ARN (or ``PendingConfirmation``) when the topic has it

    @property
    def removable(self) -> bool:
        return False

    def describe(self) -> str:
        return f"{self.protocol} {self.endpoint} to topic {self.arn.rsplit(':', 1)[-1]}"


class DeclaredSubscription(SubscriptionDrift):
    """A subscription of its cell's ``alarm_subscriptions`` that one of the stack's alarm topics
    should have and the stack holds no resource for (the cell's list grew, no `apply` since):
    missing (``subscription`` empty: drift, the repair subscribes it), or subscribed already (by
    hand, by an earlier partial run): declared, so not unmanaged; the next up adopts it (Subscribe
    answers the existing subscription). A subscription the stack holds that is gone is the
    engine's own drift (deleted out of band)."""


class UndeclaredSubscription(SubscriptionDrift):
    """A subscription the stack holds a resource for (one of its alarm topics') whose endpoint its
    cell's ``alarm_subscriptions`` no longer declares (the cell's list shrank, no `apply` since):
    drift, the repair's up deletes it (the program declares it no more)."""

    subscription: str  # its ARN: the topic has it


KEY = "aws:kms/key:Key"
GRANT = "aws:kms/grant:Grant"
QUEUE = "aws:sqs/queue:Queue"
SECRET = "aws:secretsmanager/secret:Secret"
TOPIC = "aws:sns/topic:Topic"
SUBSCRIPTION = "aws:sns/topicSubscription:TopicSubscription"


def _grants_out_of_band(kms: Any, key_arn: str, region: str, declared: set[str]) -> list[UnmanagedAccess]:
    from tenantctl.checks.aws_posture import service_grant

    grants = [g for page in kms.get_paginator("list_grants").paginate(KeyId=key_arn) for g in page["Grants"]]
    return [UnmanagedAccess(arn=key_arn, region=region, tags={}, what="kms:grant", target=g["GrantId"],
                            label=f"{g['GrantId']} on key {key_arn.rsplit('/', 1)[-1]} "
                                  f"({g.get('GranteePrincipal')}: {', '.join(g.get('Operations') or [])})")
            for g in grants if g["GrantId"] not in declared and not service_grant(g)]


def _topic_access(sns: Any, arn: str, region: str, subscribed: dict[str, str],
                  declared: dict[tuple[str, str], str | None] | None) -> list[Tagged]:
    """``subscribed``: the stack's subscription resources' names by their ARNs; ``declared``: its
    cell's (protocol, endpoint) pairs, each with the resource the stack would hold it as when it
    holds none (None: it holds one; ``declared`` None: not judged)."""
    from tenantctl.checks.aws_posture import topic_outsiders
    from tenantctl.checks.reads import confirmed, topic_subscriptions
    from tenantctl.naming import account_of_arn

    name = arn.rsplit(":", 1)[-1]
    listed = topic_subscriptions(sns, arn)
    there = {(s.get("Protocol"), s.get("Endpoint")): s["SubscriptionArn"] for s in listed}
    wanted = declared or {}
    found: list[Tagged] = [
        UnmanagedAccess(arn=arn, region=region, tags={}, what="sns:subscription", target=s["SubscriptionArn"],
                        label=f"{s['SubscriptionArn'].rsplit(':', 1)[-1]} to topic {name} "
                              f"({s.get('Protocol')} {s.get('Endpoint')})")
        for s in confirmed(listed)
        if s["SubscriptionArn"] not in subscribed and (s.get("Protocol"), s.get("Endpoint")) not in wanted]
    found += [DeclaredSubscription(arn=arn, region=region, tags={}, protocol=protocol, endpoint=endpoint,
                                   resource=resource, subscription=there.get((protocol, endpoint), ""))
              for (protocol, endpoint), resource in wanted.items() if resource is not None]
    if declared is not None:  # as `check`'s topic-access judges them: confirmed ones
        found += [UndeclaredSubscription(
            arn=arn, region=region, tags={}, protocol=s.get("Protocol"), endpoint=s.get("Endpoint"),
            subscription=s["SubscriptionArn"], resource=subscribed[s["SubscriptionArn"]])
            for s in confirmed(listed)
            if s["SubscriptionArn"] in subscribed and (s.get("Protocol"), s.get("Endpoint")) not in declared]
    outsiders = topic_outsiders(sns.get_topic_attributes(TopicArn=arn)["Attributes"].get("Policy"),
                                account_of_arn(arn))
    if outsiders:
        found.append(UnmanagedAccess(arn=arn, region=region, tags={}, what="sns:topic-policy", target=arn,
                                     label=f"policy of topic {name} (letting in {', '.join(outsiders)})"))
    return found


def _policy_of(what: str, arn: str, region: str, target: str, noun: str, policy: str | None) -> list[UnmanagedAccess]:
    from tenantctl.checks.aws_posture import policy_principals

    if not policy:
        return []
    return [UnmanagedAccess(arn=arn, region=region, tags={}, what=what, target=target,
                            label=f"policy of {noun} (naming {policy_principals(policy)})")]


def unmanaged_access(clients: Clients, region: str, stack: Iterable[tuple[str, str, str, str]],
                     subscriptions: Iterable[tuple[str, str]] | None = None, held: Iterable[tuple[str, str]] = ()
                     ) -> list[Tagged]:
    """The grants on the keys of ``stack`` ((type, ARN, id, name) of each resource its state
    knows) that none of its grant resources is (id ``<key id>:<grant id>``), the
    resource policies of its queues and secrets, its topics' subscriptions none of
    its subscription resources is (id: the subscription's ARN) nor of its cell's declared
    ``subscriptions`` ((protocol, endpoint) each), and their policies letting in another
    account; and each declared subscription a topic's stack holds no resource for
    (``DeclaredSubscription``) and each it holds one for that is declared no more
    (``UndeclaredSubscription``) (``subscriptions`` None: neither judged, a cell's own stack or a
    move's; ``held``: (id, name) of each of the stack's subscription resources, those deleted out
    of band and those a preview's plan deletes included: the stack's own, never unmanaged).
    One call per key, queue and secret, two per topic. No grant is judged when the
    engine named no grant ids."""
    from botocore.exceptions import ClientError

    from tenantctl.naming import alarm_subscription_resource

    stack = list(stack)
    declared = {rid.rsplit(":", 1)[-1] for typ, _, rid, _ in stack if typ == GRANT}
    held = list(held)
    owned = [(rid, name) for typ, _, rid, name in stack if typ == SUBSCRIPTION]
    subscribed = {rid: name for rid, name in [*held, *owned] if rid}  # by id: the subscription's ARN
    names = {name for _, name in held}
    wanted = list(subscriptions or ())
    found: list[Tagged] = []
    for typ, arn, rid, name in stack:
        where = region_of_arn(arn) or region  # its own region: a tenant's stacks may span two
        try:
            if typ == KEY and arn and "" not in declared:
                found += _grants_out_of_band(clients("kms", where), arn, where, declared)
            elif typ == QUEUE and rid:
                attributes = clients("sqs", where).get_queue_attributes(QueueUrl=rid, AttributeNames=["Policy"])
                found += _policy_of("sqs:queue-policy", arn or rid, where, rid, f"queue {rid.rsplit('/', 1)[-1]}",
                                    attributes.get("Attributes", {}).get("Policy"))
            elif typ == SECRET and arn:
                policy = clients("secretsmanager", where).get_resource_policy(SecretId=arn).get("ResourcePolicy")
                found += _policy_of("secretsmanager:resource-policy", arn, where, arn,
                                    f"secret {arn.rsplit(':', 1)[-1]}", policy)
            elif typ == TOPIC and arn:
                resources = {pair: alarm_subscription_resource(name, *pair) for pair in wanted}
                found += _topic_access(clients("sns", where), arn, where, subscribed,
                                       {pair: None if r in names else r for pair, r in resources.items()}
                                       if subscriptions is not None else None)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if "NotFound" in code or "NonExistent" in code or "InvalidState" in code:
                continue  # deleted (or its key disabled) out of band: its own drift, which the refresh names
            raise
    return found


def record_roles(records: Iterable[Any]) -> set[str]:
    """The roles ``records`` name (each tenant's and its workspaces'): a scan's ``claimed``."""
    return {owner.role_arn for r in records if r.resources is not None
            for owner in (r.resources, *r.resources.workspaces.values())}


def unknown(resources: Iterable[Tagged], arns: set[str], urns: set[str]) -> list[Tagged]:
    """The resources known neither by ARN (theirs, or their owner's: ``Tagged.owner_arn``) nor by
    the urn tag of one of ``urns``."""
    tags = urns | {urn_tag(u) for u in urns}
    return [r for r in resources if r.arn not in arns and not (r.owner_arn and r.owner_arn in arns)
            and not (r.urn and r.urn in tags)]


def _roles(clients: Clients, tenant: str | None, claimed: set[str]) -> Iterable[Tagged]:
    iam = clients("iam")
    prefix = f"{ROLE_PREFIX}{tenant}-" if tenant else ROLE_PREFIX
    for page in iam.get_paginator("list_roles").paginate():
        for role in page["Roles"]:
            if not role["RoleName"].startswith(prefix) or role["Arn"] in claimed:
                continue
            tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=role["RoleName"]).get("Tags", [])}
            if tags.get("managed-by") == "tenantctl":
                yield Tagged(arn=role["Arn"], region="global", tags=tags)


def scan(clients: Clients, regions: Iterable[str], tenant: str | None = None,
         claimed: Iterable[str] = ()) -> list[Tagged]:
    """Every resource tagged ``managed-by=tenantctl`` in ``regions`` (and IAM),
    only ``tenant``'s when given. IAM lists no tags: each role's are read with a
    call of its own, so roles in ``claimed`` (ARNs a caller already accounts
    for, e.g. the registry's tenant roles) are left out rather than read."""
    filters = [MANAGED_BY] + ([{"Key": "tenant", "Values": [tenant]}] if tenant else [])
    found: dict[str, Tagged] = {}
    regions = sorted(set(regions))
    for region in regions:
        pages = clients("resourcegroupstaggingapi", region).get_paginator("get_resources").paginate(
            TagFilters=filters, ResourcesPerPage=100)
        for page in pages:
            for item in page.get("ResourceTagMappingList", []):
                tags = {t["Key"]: t["Value"] for t in item.get("Tags", [])}
                found[item["ResourceARN"]] = Tagged(arn=item["ResourceARN"], region=region, tags=tags)
    if regions:
        found.update({r.arn: r for r in _roles(clients, tenant, set(claimed))})
    return sorted(found.values(), key=lambda r: r.arn)


def secrets_pending_deletion(clients: Clients, regions: Iterable[str]) -> set[str]:
    """The ARNs of the secrets in their recovery window in ``regions``: ListSecrets' pages (100
    secrets each) tell what ``is_live`` asks one DescribeSecret per secret for."""
    return {secret["ARN"] for region in sorted(set(regions))
            for page in clients("secretsmanager", region).get_paginator("list_secrets").paginate(
                IncludePlannedDeletion=True, Filters=[{"Key": "tag-key", "Values": [MANAGED_BY["Key"]]}])
            for secret in page["SecretList"] if secret.get("DeletedDate")}


def is_live(clients: Clients, resource: Tagged) -> bool:
    """False for the tail of a deletion: a key pending deletion, a secret in its recovery window."""
    from botocore.exceptions import ClientError

    try:
        if resource.kind == "kms:key":
            state = clients("kms", resource.region).describe_key(KeyId=resource.arn)["KeyMetadata"]["KeyState"]
            return state not in ("PendingDeletion", "PendingReplicaDeletion")
        if resource.kind == "secretsmanager:secret":
            described = clients("secretsmanager", resource.region).describe_secret(SecretId=resource.arn)
            return not described.get("DeletedDate")
    except ClientError as exc:
        if "NotFound" in exc.response["Error"]["Code"]:
            return False
        raise
    return True


def remove(clients: Clients, resource: Tagged) -> str:
    """Remove a leftover nothing claims; returns what was done. Keys and secrets
    are scheduled for deletion (their window is the undo), never deleted at once."""
    region = resource.region
    # What was added to a stack's own resource first: its ARN is that resource's (a queue's...).
    if isinstance(resource, UnmanagedRolePolicy):
        iam = clients("iam")
        if resource.attached:
            iam.detach_role_policy(RoleName=resource.role_name, PolicyArn=resource.policy)
            return "detached"
        iam.delete_role_policy(RoleName=resource.role_name, PolicyName=resource.policy)
        return "deleted"
    if isinstance(resource, UnmanagedAccess):
        if resource.what == "kms:grant":
            clients("kms", region).revoke_grant(KeyId=resource.arn, GrantId=resource.target)
            return "revoked"
        if resource.what == "sns:subscription":
            clients("sns", region).unsubscribe(SubscriptionArn=resource.target)
            return "unsubscribed"
        if resource.what == "sns:topic-policy":  # what a topic made without one has: SNS removes none
            from tenantctl.checks.reads import default_topic_policy

            clients("sns", region).set_topic_attributes(TopicArn=resource.target, AttributeName="Policy",
                                                        AttributeValue=default_topic_policy(resource.target))
            return "reset"
        if resource.what == "sqs:queue-policy":
            clients("sqs", region).set_queue_attributes(QueueUrl=resource.target, Attributes={"Policy": ""})
        else:
            clients("secretsmanager", region).delete_resource_policy(SecretId=resource.target)
        return "removed"
    if isinstance(resource, UnmanagedRule):
        clients("ec2", region).revoke_security_group_ingress(GroupId=resource.group_id,
                                                             SecurityGroupRuleIds=[resource.rule_id])
        return "revoked"
    if resource.service == "sqs":
        sqs = clients("sqs", region)
        sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=resource.name)["QueueUrl"])
        return "deleted"
    if resource.service == "sns":
        clients("sns", region).delete_topic(TopicArn=resource.arn)
        return "deleted"
    if resource.kind == "cloudwatch:alarm":
        clients("cloudwatch", region).delete_alarms(AlarmNames=[resource.name])
        return "deleted"
    if resource.kind == "kms:key":  # by id: the sandbox's moto resolves no key ARN here (AWS takes either)
        clients("kms", region).schedule_key_deletion(KeyId=resource.name, PendingWindowInDays=KEY_DELETION_DAYS)
        return f"scheduled for deletion in {KEY_DELETION_DAYS} days"
    if resource.kind == "secretsmanager:secret":
        clients("secretsmanager", region).delete_secret(SecretId=resource.arn,
                                                        RecoveryWindowInDays=SECRET_RECOVERY_DAYS)
        return f"scheduled for deletion in {SECRET_RECOVERY_DAYS} days"
    if resource.kind == "iam:role":
        iam = clients("iam")
        for name in iam.list_role_policies(RoleName=resource.name)["PolicyNames"]:
            iam.delete_role_policy(RoleName=resource.name, PolicyName=name)
        for attached in iam.list_attached_role_policies(RoleName=resource.name)["AttachedPolicies"]:
            iam.detach_role_policy(RoleName=resource.name, PolicyArn=attached["PolicyArn"])
        iam.delete_role(RoleName=resource.name)
        return "deleted"
    if resource.kind == "ec2:security-group":
        clients("ec2", region).delete_security_group(GroupId=resource.name)
        return "deleted"
    raise InvalidInput(f"{resource.describe()} ({resource.arn}) is not removed by tenantctl: remove it by hand")
