"""Each isolation rule catches a deliberately broken resource set."""

import json

import pytest
from infra_mocks import RecordingMocks, platform_config, run_program, tenant_config

from tenantctl.policy import RULES, UNKNOWN, PlannedResource, check, judge


@pytest.fixture(scope="module")
def pooled():
    mocks = RecordingMocks()
    run_program("acme", tenant_config({"id": "acme"}), mocks)
    return mocks.resources


@pytest.fixture(scope="module")
def dedicated():
    mocks = RecordingMocks()
    run_program("globex", tenant_config({"id": "globex", "tier": "dedicated"}), mocks)
    return mocks.resources


@pytest.fixture(scope="module")
def platform():
    mocks = RecordingMocks()
    run_program("platform", platform_config(), mocks)
    return mocks.resources


def broken(resources, typ, mutate, name=None):
    """A copy of ``resources`` where the first matching resource's inputs went through ``mutate``."""
    out, done = [], False
    for r in resources:
        if not done and r.type == typ and (name is None or name in r.name):
            inputs = json.loads(json.dumps(r.inputs))
            mutate(inputs)
            r, done = PlannedResource(type=r.type, name=r.name, inputs=inputs), True
        out.append(r)
    assert done, f"no {typ} {name or ''} to break"
    return out


def rules_hit(resources, tenant_id="acme", platform=False):
    return {v.rule for v in check(resources, tenant_id, platform=platform)}


def test_clean_sets_pass(pooled, dedicated, platform):
    assert check(pooled, "acme") == []
    assert check(dedicated, "globex") == []
    assert check(platform, "platform", platform=True) == []


def test_tenant_tag(pooled):
    assert rules_hit(broken(pooled, "aws:sqs/queue:Queue", lambda i: i["tags"].pop("tenant"))) == {"tenant-tag"}
    assert rules_hit(broken(pooled, "aws:iam/role:Role", lambda i: i.pop("tags"))) == {"tenant-tag"}
    wrong = broken(pooled, "aws:kms/key:Key", lambda i: i["tags"].update(tenant="globex"))
    assert "tenant-tag" in rules_hit(wrong)


def test_kms_rotation(pooled):
    assert rules_hit(broken(pooled, "aws:kms/key:Key", lambda i: i.update(enableKeyRotation=False))) == {"kms-rotation"}


def test_queue_encryption(pooled):
    queue = "aws:sqs/queue:Queue"
    assert rules_hit(broken(pooled, queue, lambda i: i.pop("kmsMasterKeyId"), "dlq")) == {"queue-encryption"}
    other = "arn:aws:kms:us-east-1:123456789012:key/someone-elses"
    assert rules_hit(broken(pooled, queue, lambda i: i.update(kmsMasterKeyId=other), "queue")) == {"queue-encryption"}


def test_lifecycle_scope(pooled, platform):
    # A tenant declaring a bucket's lifecycle configuration would replace its whole cell's rules.
    [config] = [r for r in platform if r.type.startswith("aws:s3/bucketLifecycleConfiguration")
              and "access-logs" not in r.name]  # the cell bucket's, not its log bucket's
    assert rules_hit(pooled + [config]) == {"lifecycle-scope"}
    assert check(platform, "platform", platform=True, rules=["lifecycle-scope"]) == []
    # Legacy per-tenant rules (still deleted through their provider) stay under the tenant's prefix.
    legacy = PlannedResource(type="pulumi-python:dynamic:Resource", name="acme-lifecycle", inputs={
        "kind": "prefix-lifecycle", "tenant_id": "acme",
        "rules": [{"ID": "tenantctl-acme-archive", "Filter": {"Prefix": "tenants/"}}]})
    assert rules_hit(pooled + [legacy]) == {"lifecycle-scope"}


def _edit_policy(edit):
    def mutate(inputs):
        doc = json.loads(inputs["policy"])
        edit(doc["Statement"])
        inputs["policy"] = json.dumps(doc)
    return mutate


@pytest.mark.parametrize("edit", [
    pytest.param(lambda s: s[0].update(Resource="*"), id="wildcard-on-s3"),
    pytest.param(lambda s: s[0].update(Resource="arn:aws:s3:::tenantctl-shared-123456789012-us-east-1/*"),
                 id="whole-bucket"),
    pytest.param(lambda s: s[1].pop("Condition"), id="list-without-prefix-condition"),
    pytest.param(lambda s: s[3].update(Resource="arn:aws:kms:us-east-1:123456789012:key/*"), id="any-key"),
    pytest.param(lambda s: s.append({"Effect": "Allow", "Action": "dynamodb:GetItem",
                                     "Resource": "arn:aws:dynamodb:us-east-1:123456789012:table/tenantctl-registry"}),
                 id="foreign-service"),
])
def test_iam_scope(pooled, edit):
    assert rules_hit(broken(pooled, "aws:iam/rolePolicy:RolePolicy", _edit_policy(edit))) == {"iam-scope"}


@pytest.mark.parametrize("mutate, rule", [
    pytest.param(lambda i: i.update(storageEncrypted=False), "rds-encryption", id="unencrypted"),
    pytest.param(lambda i: i.update(kmsKeyId="arn:aws:kms:us-east-1:123456789012:key/other"), "rds-encryption",
                 id="someone-elses-key"),
    pytest.param(lambda i: i.update(publiclyAccessible=True), "public-database", id="public"),
    pytest.param(lambda i: i.pop("publiclyAccessible"), "public-database", id="public-by-default"),
    pytest.param(lambda i: i.update(deletionProtection=False), "deletion-protection", id="no-deletion-protection"),
    pytest.param(lambda i: i.update(skipFinalSnapshot=True), "deletion-protection", id="no-final-snapshot"),
    pytest.param(lambda i: i.update(backupRetentionPeriod=3), "backup-retention", id="short-backups"),
    pytest.param(lambda i: i.update(backupRetentionPeriod=0), "backup-retention", id="no-backups"),
])
def test_rds_rules(dedicated, mutate, rule):
    assert rules_hit(broken(dedicated, "aws:rds/instance:Instance", mutate), "globex") == {rule}


def test_backup_retention_of_seven_days_passes(dedicated):
    assert check(broken(dedicated, "aws:rds/instance:Instance", lambda i: i.update(backupRetentionPeriod=7)),
                 "globex") == []


def test_deletion_protection_off_in_the_spec_is_caught():
    mocks = RecordingMocks()
    run_program("globex", tenant_config({"id": "globex", "tier": "dedicated",
                                         "dedicated": {"deletion_protection": False}}), mocks)
    assert rules_hit(mocks.resources, "globex") == {"deletion-protection"}


def test_short_backup_retention_in_the_spec_is_caught_on_the_instance():
    mocks = RecordingMocks()
    run_program("globex", tenant_config({"id": "globex", "tier": "dedicated", "backup": {"retention_days": 3}}), mocks)
    assert rules_hit(mocks.resources, "globex") == {"backup-retention"}


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_no_open_ingress(dedicated, cidr):
    key = "cidrBlocks" if ":" not in cidr else "ipv6CidrBlocks"
    res = broken(dedicated, "aws:ec2/securityGroup:SecurityGroup", lambda i: i["ingress"][0].update({key: [cidr]}),
                 "endpoints")
    assert rules_hit(res, "globex") == {"no-open-ingress"}


@pytest.mark.parametrize("ref", [
    "arn:aws:sqs:us-east-1:123456789012:tenantctl-acme-corp-jobs",
    "arn:aws:s3:::tenantctl-shared-123456789012-us-east-1/tenants/acme-corp/*",
    "alias/tenantctl/acme-corp",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:tenantctl/acme-corp/db-AbCdEf",
])
def test_no_foreign_reference(pooled, ref):
    res = broken(pooled, "aws:secretsmanager/secret:Secret", lambda i: i.update(description=ref))
    assert rules_hit(res) == {"no-foreign-reference"}


@pytest.mark.parametrize("ref", [
    "arn:aws:lambda:eu-west-1:222222222222:function:tenantctl-cell-eua-rot",
    "arn:aws:rds:eu-west-1:222222222222:snapshot:tenantctl-cell-eua-final",
])
def test_a_cells_shared_names_are_not_another_tenant(pooled, ref):
    # A pooled tenant of a cell names the cell's rotation function and database.
    res = broken(pooled, "aws:secretsmanager/secret:Secret", lambda i: i.update(description=ref))
    assert rules_hit(res) == set()


def test_foreign_schema_in_a_dynamic_resource(pooled):
    res = broken(pooled, "pulumi-python:dynamic:Resource", lambda i: i.update(schema="tenant_globex"), "schema")
    assert rules_hit(res) == {"no-foreign-reference"}


def test_bucket_public_access(platform):
    res = broken(platform, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
                 lambda i: i.update(blockPublicPolicy=False))
    assert rules_hit(res, "platform", platform=True) == {"bucket-public-access"}
    no_tls = [r for r in platform if r.type != "aws:s3/bucketPolicy:BucketPolicy"]
    assert rules_hit(no_tls, "platform", platform=True) == {"bucket-public-access"}
    no_block = [r for r in platform if r.type != "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"]
    assert rules_hit(no_block, "platform", platform=True) == {"bucket-public-access"}


def test_public_acl_and_public_policy(platform):
    acl = broken(platform, "aws:s3/bucket:Bucket", lambda i: i.update(acl="public-read"))
    assert rules_hit(acl, "platform", platform=True) == {"bucket-public-access"}

    def everyone(inputs):
        doc = json.loads(inputs["policy"])
        doc["Statement"].append({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                 "Resource": "arn:aws:s3:::x/*"})
        inputs["policy"] = json.dumps(doc)
    found = check(broken(platform, "aws:s3/bucketPolicy:BucketPolicy", everyone), "platform", platform=True)
    expected = [("bucket-public-access", 'bucket policy allows everyone (Principal "*")')]
    assert [(v.rule, v.message) for v in found] == expected


def test_a_tenant_stack_bucket_is_judged_too(pooled):
    """Tenants have no bucket of their own today; one added to the program
    without the block and encryption is refused all the same."""
    rogue = PlannedResource(type="aws:s3/bucket:Bucket", name="acme-files",
                            inputs={"bucket": "acme-files", "tags": {"tenant": "acme", "tier": "pooled",
                                                                     "owner": "o", "managed-by": "tenantctl"}})
    assert rules_hit(pooled + [rogue]) == {"bucket-public-access", "bucket-encryption", "bucket-access-logging"}


def test_bucket_encryption(platform):
    res = [r for r in platform if "ServerSideEncryption" not in r.type]
    assert rules_hit(res, "platform", platform=True) == {"bucket-encryption"}
    aes = broken(platform, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                 lambda i: i["rules"][0]["applyServerSideEncryptionByDefault"].update(sseAlgorithm="AES256"),
                 "shared-sse")
    assert rules_hit(aes, "platform", platform=True) == {"bucket-encryption"}


TAGS = {"tenant": "acme", "tier": "pooled", "owner": "o", "managed-by": "tenantctl"}


@pytest.mark.parametrize("resource", [
    PlannedResource(type="aws:ec2/securityGroupRule:SecurityGroupRule", name="open",
                    inputs={"type": "ingress", "fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0"]}),
    PlannedResource(type="aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", name="open",
                    inputs={"fromPort": 443, "toPort": 443, "cidrIpv6": "::/0", "tags": TAGS}),
], ids=["securityGroupRule", "securityGroupIngressRule"])
def test_open_ingress_as_separate_rule_resources(pooled, resource):
    assert rules_hit(pooled + [resource]) == {"no-open-ingress"}


def test_egress_to_anywhere_is_not_ingress(pooled):
    egress = PlannedResource(type="aws:ec2/securityGroupRule:SecurityGroupRule", name="out",
                             inputs={"type": "egress", "fromPort": 443, "cidrBlocks": ["0.0.0.0/0"]})
    assert check(pooled + [egress], "acme") == []


def test_every_rule_is_named_and_tested():
    assert set(RULES) == {"tenant-tag", "kms-rotation", "queue-encryption", "lifecycle-scope", "iam-scope",
                          "rds-encryption", "public-database", "deletion-protection", "backup-retention",
                          "no-open-ingress", "no-foreign-reference", "bucket-public-access", "bucket-encryption",
                          # the security scanners' findings (below)
                          "vpc-endpoint-policy", "secret-rotation", "vpc-flow-logs", "rds-hardening",
                          "shared-db-multi-az", "alarm-topic-encryption", "default-security-group",
                          "db-ingress-from-groups", "database-public-privileges", "bucket-access-logging",
                          "key-policy-matches-role"}


def test_an_unknown_value_is_not_judged_but_recorded(pooled):
    unknown = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
    res = broken(pooled, "aws:iam/rolePolicy:RolePolicy", lambda i: i.update(policy=unknown))
    judgment = judge(res, "acme")
    assert judgment.violations == []
    expected = [("iam-scope", "policy unknown until apply"), ("no-foreign-reference", "inputs unknown until apply"),
                ("key-policy-matches-role", "policy unknown until apply")]
    assert [(u.rule, u.message) for u in judgment.unjudged] == expected


@pytest.mark.parametrize("typ, mutate, rule, field", [
    ("aws:sqs/queue:Queue", lambda i: i.update(kmsMasterKeyId=UNKNOWN), "queue-encryption", "kmsMasterKeyId"),
    ("aws:kms/alias:Alias", lambda i: i.update(targetKeyId=UNKNOWN), "queue-encryption", "kmsMasterKeyId"),
    ("aws:ec2/securityGroup:SecurityGroup", lambda i: i.update(ingress=[{"fromPort": 5432, "cidrBlocks": [UNKNOWN]}]),
     "no-open-ingress", "ingress CIDR"),
    ("aws:sqs/queue:Queue", lambda i: i["tags"].update(tenant=UNKNOWN), "tenant-tag", "tags"),
])
def test_unknowns_the_rules_need_are_recorded_never_passed(dedicated, typ, mutate, rule, field):
    judgment = judge(broken(dedicated, typ, mutate), "globex")
    assert (rule, f"{field} unknown until apply") in {(u.rule, u.message) for u in judgment.unjudged}
    assert rule not in {v.rule for v in judgment.violations}


def test_a_dedicated_database_without_the_tenants_key_is_refused(dedicated):
    """No kmsKeyId at all is known: the AWS-managed key, not the tenant's."""
    assert "rds-encryption" in rules_hit(broken(dedicated, "aws:rds/instance:Instance", lambda i: i.pop("kmsKeyId")),
                                         "globex")


# -- the security scanners' findings: each a rule the generated program passes ----------------

def _without(resources, typ, name=None):
    out = [r for r in resources if not (r.type == typ and (name is None or name in r.name))]
    assert len(out) < len(resources), f"no {typ} {name or ''} to remove"
    return out


AWS_DEFAULT_ENDPOINT_POLICY = json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*",
                                                         "Resource": "*"}]})


@pytest.mark.parametrize("name, mutate", [
    pytest.param("s3", lambda i: i.pop("policy"), id="s3-without-policy"),
    pytest.param("s3", lambda i: i.update(policy=AWS_DEFAULT_ENDPOINT_POLICY), id="s3-aws-default"),
    pytest.param("s3", _edit_policy(lambda s: s[0].update(Resource="*")), id="s3-every-bucket"),
    pytest.param("s3", _edit_policy(lambda s: s[0].pop("Condition")), id="s3-any-account"),
    pytest.param("kms", _edit_policy(lambda s: s[0].pop("Condition")), id="interface-any-account"),
    pytest.param("sqs", _edit_policy(lambda s: s[0].update(Action="*")), id="interface-every-action"),
])
def test_vpc_endpoint_policy(platform, name, mutate):
    res = broken(platform, "aws:ec2/vpcEndpoint:VpcEndpoint", mutate, f"shared-{name}")
    assert rules_hit(res, "platform", platform=True) == {"vpc-endpoint-policy"}


def test_secret_rotation(pooled):
    assert rules_hit(_without(pooled, "aws:secretsmanager/secretRotation:SecretRotation")) == {"secret-rotation"}
    yearly = broken(pooled, "aws:secretsmanager/secretRotation:SecretRotation",
                    lambda i: i.update(rotationRules={"automaticallyAfterDays": 365}))
    assert [v.message for v in check(yearly, "acme", rules=["secret-rotation"])] == ["rotated every 365 days (> 90)"]
    # A preview: the schedule names a secret ARN not known yet, paired by count.
    preview = broken(pooled, "aws:secretsmanager/secretRotation:SecretRotation",
                     lambda i: i.update(secretId="04da6b54-80e4-46f7-96ec-b56ff0331ba9"))
    assert check(preview, "acme") == []


@pytest.mark.parametrize("mutate", [
    pytest.param(None, id="no-flow-log"),
    pytest.param(lambda i: i.update(trafficType="REJECT"), id="rejected-traffic-only"),
])
def test_vpc_flow_logs(dedicated, mutate):
    res = (_without(dedicated, "aws:ec2/flowLog:FlowLog") if mutate is None
           else broken(dedicated, "aws:ec2/flowLog:FlowLog", mutate))
    assert rules_hit(res, "globex") == {"vpc-flow-logs"}


@pytest.mark.parametrize("mutate, message", [
    pytest.param(lambda i: i.update(iamDatabaseAuthenticationEnabled=False), "IAM database authentication is off",
                 id="no-iam-auth"),
    pytest.param(lambda i: i.update(enabledCloudwatchLogsExports=[]), "log exports [] lack postgresql",
                 id="no-log-exports"),
    pytest.param(lambda i: i.update(monitoringInterval=0), "enhanced monitoring is off", id="no-monitoring"),
    pytest.param(lambda i: i.update(parameterGroupName="default.postgres16"),
                 "default parameter group (rds.force_ssl not pinned)", id="default-parameter-group"),
])
def test_rds_hardening(dedicated, mutate, message):
    res = broken(dedicated, "aws:rds/instance:Instance", mutate)
    assert [(v.rule, v.message) for v in check(res, "globex")] == [("rds-hardening", message)]


def test_rds_parameter_group_must_force_ssl(dedicated):
    def unpin(inputs):
        inputs["parameters"] = [p for p in inputs["parameters"] if p["name"] != "rds.force_ssl"]
    found = check(broken(dedicated, "aws:rds/parameterGroup:ParameterGroup", unpin), "globex")
    assert [(v.rule, v.message.split(" does ")[1]) for v in found] == [("rds-hardening", "not pin rds.force_ssl=1")]


def test_shared_database_multi_az(platform, dedicated):
    single = broken(platform, "aws:rds/instance:Instance", lambda i: i.update(multiAz=False))
    assert rules_hit(single, "platform", platform=True) == {"shared-db-multi-az"}
    # A dedicated tenant chooses (`--single-az`): only its own tenant depends on it.
    assert check(broken(dedicated, "aws:rds/instance:Instance", lambda i: i.update(multiAz=False)), "globex") == []


def test_shared_database_multi_az_in_the_platform_spec():
    from tenantctl.models import CellSpec
    from tenantctl.policy import check_spec

    assert check_spec(CellSpec()) == []
    [v] = check_spec(CellSpec(db_multi_az=False))
    assert (v.rule, v.resource) == ("shared-db-multi-az", "stacks/Pulumi.platform.yaml")


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda i: i.pop("kmsMasterKeyId"), id="unencrypted"),
    pytest.param(lambda i: i.update(kmsMasterKeyId="arn:aws:kms:us-east-1:123456789012:key/other"), id="foreign-key"),
])
def test_alarm_topic_encryption(pooled, mutate):
    assert rules_hit(broken(pooled, "aws:sns/topic:Topic", mutate)) == {"alarm-topic-encryption"}


def test_default_security_group(dedicated):
    missing = _without(dedicated, "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert rules_hit(missing, "globex") == {"default-security-group"}
    egress = broken(dedicated, "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup", lambda i: i.update(
        egress=[{"protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["0.0.0.0/0"]}]))
    assert rules_hit(egress, "globex") == {"default-security-group"}


def test_db_ingress_from_groups(dedicated, platform):
    vpc_range = broken(dedicated, "aws:ec2/securityGroup:SecurityGroup", lambda i: i.update(
        ingress=[{"protocol": "tcp", "fromPort": 5432, "toPort": 5432, "cidrBlocks": ["10.42.0.0/16"]}]), "pg-db")
    assert rules_hit(vpc_range, "globex") == {"db-ingress-from-groups"}
    # the cell's one rule admitting its pooled tenants, turned into an address range
    rule_resource = broken(platform, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", lambda i: (
        i.pop("referencedSecurityGroupId"), i.update(cidrIpv4="10.0.0.0/16")), "db-client-1")
    assert rules_hit(rule_resource, "platform", platform=True) == {"db-ingress-from-groups"}


def test_database_public_privileges(platform, dedicated):
    assert rules_hit(_without(platform, "pulumi-python:dynamic:Resource", "acl"), "platform", platform=True) == {
        "database-public-privileges"}
    assert rules_hit(_without(dedicated, "pulumi-python:dynamic:Resource", "acl"), "globex") == {
        "database-public-privileges"}


def test_bucket_access_logging(platform):
    # Without logging the log bucket receives nothing, so its SSE-S3 default is refused too.
    found = check(_without(platform, "aws:s3/bucketLogging:BucketLogging"), "platform", platform=True)
    assert {(v.rule, v.resource) for v in found} == {("bucket-access-logging", "shared-bucket"),
                                                    ("bucket-access-logging", "shared-access-logs-bucket"),
                                                    ("bucket-encryption", "shared-access-logs-bucket")}
    into_itself = broken(platform, "aws:s3/bucketLogging:BucketLogging",
                         lambda i: i.update(targetBucket=i["bucket"]))
    assert {(v.rule, v.resource, v.message) for v in check(into_itself, "platform", platform=True)} == {
        ("bucket-access-logging", "shared-bucket", "access logs delivered into the bucket itself"),
        ("bucket-access-logging", "shared-access-logs-bucket", "no server access logging"),
        ("bucket-encryption", "shared-access-logs-bucket", "no default SSE-KMS encryption")}


def test_key_policy_grants_the_role_exactly_its_iam_policy(pooled):
    def widen(inputs):
        doc = json.loads(inputs["policy"])
        use = next(s for s in doc["Statement"] if s["Sid"] == "TenantUse")
        use["Action"] = use["Action"] + ["kms:ReEncrypt*"]
        inputs["policy"] = json.dumps(doc)
    found = check(broken(pooled, "aws:kms/key:Key", widen), "acme")
    assert [(v.rule, v.message) for v in found] == [
        ("key-policy-matches-role", "key policy and role policy grant different KMS actions: "
                                    "key policy adds kms:reencrypt*")]


@pytest.mark.parametrize("stack, tenant_id", [("pooled", "acme"), ("dedicated", "globex"), ("platform", "platform")])
def test_the_findings_rules_judged_resource_by_resource_pass_the_program(stack, tenant_id, request):
    """The apply pass and CrossGuard judge each resource as it is registered
    (companions may come later): the generated program raises nothing then."""
    from tenantctl.policy import ResolvedJudge

    judge_up = ResolvedJudge(tenant_id, platform=stack == "platform")
    assert [v for r in request.getfixturevalue(stack) for v in judge_up(r)] == []


def test_a_widened_key_policy_is_refused_at_first_create(pooled):
    """On a first create both documents name ARNs the preview cannot see; judged
    resource by resource with resolved values, the role policy (registered after
    the key) completes the comparison."""
    from tenantctl.policy import ResolvedJudge

    def widen(inputs):
        doc = json.loads(inputs["policy"])
        next(s for s in doc["Statement"] if s["Sid"] == "TenantUse")["Action"].append("kms:ReEncrypt*")
        inputs["policy"] = json.dumps(doc)
    judge_up = ResolvedJudge("acme")
    found = [v for r in broken(pooled, "aws:kms/key:Key", widen) for v in judge_up(r)]
    assert [(v.rule, v.resource) for v in found] == [("key-policy-matches-role", "acme-key")]


def test_judged_resource_by_resource_each_strings_owners_are_read_once(pooled, monkeypatch):
    """The up judges the plan again at each registration: the owners of a
    string already read (names, ARNs, documents) are not parsed again."""
    from tenantctl import naming
    from tenantctl.policy import ResolvedJudge

    forget = getattr(naming.tenant_ids_in, "cache_clear", lambda: None)
    forget()
    parsed = []
    finditer = naming._TOKEN.findall
    monkeypatch.setattr(naming, "_TOKEN", type("Counted", (), {"findall": staticmethod(
        lambda text: parsed.append(text) or finditer(text))}))
    judge_up = ResolvedJudge("acme")
    for r in pooled:
        judge_up(r)
    assert parsed and len(parsed) == len(set(parsed))
    forget()  # its entries were read through the counting stand-in
