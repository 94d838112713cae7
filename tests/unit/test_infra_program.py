"""The infra/ program under Pulumi mocks: what each stack declares and exports."""

import hashlib

import pytest
from infra_mocks import RecordingMocks, platform_config, platform_outputs, run_program, tenant_config

from infra.program import build_platform  # noqa: F401  (import check: the program loads)
from infra.providers import PROVIDERS
from tenantctl import naming, policy
from tenantctl.models import CellSpec, TenantResources, TenantSpec

TENANT_TYPES = {
    "pulumi:pulumi:StackReference", "aws:kms/key:Key", "aws:kms/alias:Alias", "aws:iam/role:Role",
    "aws:iam/rolePolicy:RolePolicy", "aws:secretsmanager/secret:Secret", "aws:sqs/queue:Queue",
    "aws:sns/topic:Topic", "aws:cloudwatch/metricAlarm:MetricAlarm",
    "pulumi-python:dynamic:Resource", "aws:kms/grant:Grant", "aws:secretsmanager/secretRotation:SecretRotation",
}
NETWORK_TYPES = {
    "aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/routeTable:RouteTable",
    "aws:ec2/routeTableAssociation:RouteTableAssociation", "aws:ec2/vpcEndpoint:VpcEndpoint",
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup", "aws:ec2/defaultNetworkAcl:DefaultNetworkAcl",
    "aws:ec2/flowLog:FlowLog", "aws:cloudwatch/logGroup:LogGroup",
    "aws:ec2/securityGroup:SecurityGroup", "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
    "aws:rds/subnetGroup:SubnetGroup", "aws:rds/parameterGroup:ParameterGroup", "aws:rds/instance:Instance",
    "aws:serverlessrepository/cloudFormationStack:CloudFormationStack", "pulumi-python:dynamic:Resource",
}
DEDICATED_EXTRA = NETWORK_TYPES
PLATFORM_TYPES = NETWORK_TYPES | {
    "aws:kms/key:Key", "aws:kms/alias:Alias", "aws:s3/bucket:Bucket",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "aws:s3/bucketPolicy:BucketPolicy",
    "aws:s3/bucketVersioning:BucketVersioning", "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketLogging:BucketLogging", "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
    "aws:dynamodb/table:Table", "aws:secretsmanager/secret:Secret", "aws:iam/role:Role",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:kms/grant:Grant", "aws:secretsmanager/secretRotation:SecretRotation",  # the gateway's password rotates
}
ROLE_ARN = "arn:aws:iam::123456789012:role/tenantctl-runtime"
PLATFORM_OUTPUTS = {
    "cell", "region", "account_id", "vpc_id", "vpc_cidr", "private_subnet_ids", "db_endpoint", "db_port", "db_name",
    "db_admin_secret_arn", "db_security_group_id", "pooled_clients_security_group_id", "bucket", "bucket_arn",
    "platform_key_arn", "registry_table",
    "admin_role_arn", "runtime_principal_arn", "revocation_table", "gateway_role", "gateway_secret_arn",
    "logs_bucket", "flow_logs_role_arn", "db_monitoring_role_arn", "rotation_function_arn", "rotation_role_arn",
    "db_connection_limit",
}


def run_tenant(spec: dict):
    mocks = RecordingMocks()
    return run_program(spec["id"], tenant_config(spec), mocks), mocks


@pytest.fixture(scope="module")
def pooled():
    return run_tenant({"id": "acme", "owner": "team-a", "queue": {"delay_seconds": 30}})


@pytest.fixture(scope="module")
def dedicated():
    return run_tenant({"id": "globex", "tier": "dedicated", "owner": "team-g"})


@pytest.fixture(scope="module")
def platform():
    mocks = RecordingMocks()
    return run_program("platform", platform_config({"owner": "ops"}), mocks), mocks


def test_pooled_resource_types(pooled):
    # No network resource: its workloads run in the cell's pooled-clients group.
    assert pooled[1].types() == TENANT_TYPES


def test_dedicated_resource_types(dedicated):
    assert dedicated[1].types() == TENANT_TYPES | DEDICATED_EXTRA


def test_platform_resource_types(platform):
    assert platform[1].types() == PLATFORM_TYPES


@pytest.mark.parametrize("stack", ["pooled", "dedicated"])
def test_tenant_outputs_are_exactly_tenant_resources(stack, request):
    outputs, _ = request.getfixturevalue(stack)
    # `workspaces` only when the tenant has some: the outputs of one without stay as they were.
    assert set(outputs) == set(TenantResources.model_fields) - {"workspaces"}
    resources = TenantResources.model_validate(outputs)
    assert resources.prefix == f"tenants/{resources.tenant_id}/"
    assert resources.store.secret_arn.split(":secret:")[1].startswith(f"tenantctl/{resources.tenant_id}/db")


def test_store_points_at_the_right_database(pooled, dedicated):
    shared = platform_outputs()
    assert pooled[0]["store"]["endpoint"] == shared["db_endpoint"]
    assert pooled[0]["store"]["database"] == shared["db_name"]
    [instance] = dedicated[1].of_type("aws:rds/instance:Instance")
    assert dedicated[0]["store"]["endpoint"].startswith(instance.inputs["identifier"])
    assert dedicated[0]["store"]["database"] == instance.inputs["dbName"] == "tenant_globex"


def test_platform_outputs(platform):
    outputs, _ = platform
    assert set(outputs) == PLATFORM_OUTPUTS
    assert len(outputs["private_subnet_ids"]) == 2


def test_the_platform_makes_the_runtime_a_role_of_its_own(platform):
    """Tenant roles trust the runtime principal: a dedicated role, never the
    account root; only its runners may become it, and it may only assume
    tenant roles and read the registry."""
    import json

    from infra.components.runtime_role import runtime_access_document, runtime_trust_document

    outputs, mocks = platform
    [role] = [r for r in mocks.of_type("aws:iam/role:Role") if r.inputs["name"] == "tenantctl-runtime"]
    assert role.inputs["name"] == "tenantctl-runtime"
    assert outputs["runtime_principal_arn"].endswith(":role/tenantctl-runtime")
    assert not outputs["runtime_principal_arn"].endswith(":root")
    assert json.loads(role.inputs["assumeRolePolicy"]) == runtime_trust_document(["ecs-tasks.amazonaws.com"])
    [access] = [r for r in mocks.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == "runtime-access"]
    doc = json.loads(access.inputs["policy"])
    by_sid = {stmt["Sid"]: stmt for stmt in doc["Statement"]}
    account = outputs["runtime_principal_arn"].split(":")[4]
    assert doc == runtime_access_document(by_sid["ReadRegistry"]["Resource"], by_sid["ReadRevocations"]["Resource"],
                                          by_sid["ReadGatewaySecret"]["Resource"],
                                          by_sid["OpenGatewaySecret"]["Resource"], "us-east-1", account)
    assert by_sid["ReadRegistry"]["Resource"].endswith(":table/tenantctl-registry")
    assert by_sid["AssumeTenantRoles"]["Resource"] == "arn:aws:iam::*:role/tenantctl-*-app"
    assert by_sid["AssumeDatabaseWakers"]["Resource"] == "arn:aws:iam::*:role/tenantctl-cell-*-waker"
    # It wakes hibernated tenants' databases of its account (tenant_runtime.hibernation's two calls).
    assert by_sid["WakeTenantDatabases"] == {"Sid": "WakeTenantDatabases", "Effect": "Allow",
                                             "Action": ["rds:DescribeDBInstances", "rds:StartDBInstance"],
                                             "Resource": f"arn:aws:rds:*:{account}:db:tenantctl-*"}
    # ... and never a cell's shared instance, which that pattern also matches.
    assert by_sid["NeverSharedDatabases"] == {"Sid": "NeverSharedDatabases", "Effect": "Deny",
                                              "Action": ["rds:DescribeDBInstances", "rds:StartDBInstance"],
                                              "Resource": [f"arn:aws:rds:*:{account}:db:tenantctl-platform",
                                                           f"arn:aws:rds:*:{account}:db:tenantctl-cell-*"]}
    # A runtime role that may do more is refused by the gate on the platform stack: another
    # service, or an instance that is no tenant's.
    for extra in ({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"},
                  {"Effect": "Allow", "Action": "rds:StartDBInstance", "Resource": f"arn:aws:rds:*:{account}:db:*"}):
        wider = json.dumps({**doc, "Statement": doc["Statement"] + [extra]})
        tampered = [r.model_copy(update={"inputs": {**r.inputs, "policy": wider}}) if r is access else r
                    for r in mocks.resources]
        assert [v.rule for v in policy.check(tampered, "platform", platform=True)] == ["iam-scope"], extra
    assert policy.check(mocks.resources, "platform", platform=True) == []


def test_a_named_runtime_principal_is_used_as_is():
    mocks = RecordingMocks()
    outputs = run_program("platform", platform_config({"runtime_principal_arn": "arn:aws:iam::123456789012:role/svc"}),
                          mocks)
    assert outputs["runtime_principal_arn"] == "arn:aws:iam::123456789012:role/svc"
    # only the cell's AWS service roles (flow-log delivery, RDS monitoring)
    assert {r.inputs["name"] for r in mocks.of_type("aws:iam/role:Role")} == {
        "tenantctl-flow-logs-us-east-1", "tenantctl-rds-monitoring-us-east-1"}


@pytest.mark.parametrize(("stack", "tenant_id", "is_platform"),
                         [("pooled", "acme", False), ("dedicated", "globex", False), ("platform", "platform", True)])
def test_generated_stacks_pass_every_policy_rule(stack, tenant_id, is_platform, request):
    _, mocks = request.getfixturevalue(stack)
    assert policy.check(mocks.resources, tenant_id, platform=is_platform) == []


def test_alarms_per_tier(pooled, dedicated):
    def metrics(mocks):
        return sorted(a.inputs["metricName"] for a in mocks.of_type("aws:cloudwatch/metricAlarm:MetricAlarm"))

    assert metrics(pooled[1]) == ["ApproximateAgeOfOldestMessage", "ApproximateNumberOfMessagesVisible"]
    assert metrics(dedicated[1]) == ["ApproximateAgeOfOldestMessage", "ApproximateNumberOfMessagesVisible",
                                     "CPUUtilization", "FreeStorageSpace"]
    [topic] = pooled[1].of_type("aws:sns/topic:Topic")
    assert topic.inputs["name"] == "tenantctl-acme-alarms"


def test_queue_delay_and_redrive_follow_the_spec(pooled):
    queues = {q.inputs["name"]: q.inputs for q in pooled[1].of_type("aws:sqs/queue:Queue")}
    assert queues["tenantctl-acme-jobs"]["delaySeconds"] == 30
    assert '"maxReceiveCount": 5' in queues["tenantctl-acme-jobs"]["redrivePolicy"]
    assert "tenantctl-acme-jobs-dlq" in queues["tenantctl-acme-jobs"]["redrivePolicy"]


def test_dynamic_resources_name_their_provider(pooled, platform):
    kinds = {r.inputs["kind"] for r in pooled[1].of_type("pulumi-python:dynamic:Resource")}
    platform_kinds = {r.inputs["kind"] for r in platform[1].of_type("pulumi-python:dynamic:Resource")}
    assert kinds == {"tenant-schema"}
    # the platform's and a dedicated tenant's instance revoke PUBLIC's defaults (database-acl); the legacy
    # per-tenant lifecycle provider stays registered: pre-cell tenants' state deletes through it.
    assert kinds | platform_kinds | {"prefix-lifecycle"} == set(PROVIDERS) == {
        "tenant-schema", "prefix-lifecycle", "gateway-role", "database-acl"}


def test_a_tenant_declares_no_lifecycle_rule_and_records_its_retention_classes(pooled):
    outputs, mocks = pooled
    assert not mocks.of_type("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    assert outputs["lifecycle_classes"] == {"tmp": "tmp-7d", "archive": "archive-30d-365d"}


def test_a_cell_declares_one_rule_per_retention_class_whatever_its_tenant_count(platform):
    [config] = [r for r in platform[1].of_type("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
                if "access-logs" not in r.name]  # the cell bucket's, not its log bucket's
    rules = {r["id"]: r for r in config.inputs["rules"]}
    menu = CellSpec().retention
    assert len(rules) == len(menu.temp_upload_days) + len(menu.archive) + 1
    tmp = rules["tenantctl-class-tmp-7d"]
    assert tmp["filter"]["and"] == {"prefix": "tenants/", "tags": {"tenantctl-class": "tmp-7d"}}
    assert tmp["expiration"]["days"] == 7
    archive = rules["tenantctl-class-archive-30d-365d"]
    assert archive["transitions"] == [{"days": 30, "storageClass": "GLACIER"}] and archive["expiration"]["days"] == 365
    # S3 cannot filter AbortIncompleteMultipartUpload by tag: one prefix rule for the whole cell.
    assert rules["tenantctl-abort-multipart"]["filter"] == {"prefix": "tenants/"}
    assert rules["tenantctl-abort-multipart"]["abortIncompleteMultipartUpload"]["daysAfterInitiation"] == 1


def test_a_cells_database_admits_its_pooled_tenants_by_one_rule_whatever_their_count(platform):
    """One rule per pooled tenant stopped a cell at a security group's 60 rules."""
    outputs, mocks = platform
    [clients] = [g for g in mocks.of_type("aws:ec2/securityGroup:SecurityGroup") if g.name == "pooled-clients"]
    rules = mocks.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    # mock ids are "<resource name>-<hash>"
    into_db = sorted(r.inputs["referencedSecurityGroupId"].rsplit("-", 1)[0] for r in rules
                     if r.inputs["securityGroupId"].startswith("shared-db-"))
    assert into_db == ["pooled-clients", "shared-sg"]  # and the rotation function's group
    assert outputs["pooled_clients_security_group_id"].startswith("pooled-clients-")
    assert {e["cidrBlocks"][0] for e in clients.inputs["egress"]} == {"10.0.0.0/16"}
    assert not clients.inputs["ingress"]


def test_another_cell_has_names_of_its_own_and_no_registry():
    mocks = RecordingMocks(account="222222222222", region="eu-west-1")
    runtime = "arn:aws:iam::123456789012:role/tenantctl-runtime"  # the home cell's, written in by `cell add`
    outputs = run_program("cell-eu1", platform_config({"name": "eu1", "region": "eu-west-1",
                                                       "runtime_principal_arn": runtime}, region="eu-west-1"), mocks)
    assert outputs["cell"] == "eu1" and "registry_table" not in outputs and "revocation_table" not in outputs
    assert not mocks.of_type("aws:dynamodb/table:Table")
    assert outputs["runtime_principal_arn"] == runtime
    roles = {r.inputs["name"] for r in mocks.of_type("aws:iam/role:Role")}
    assert "tenantctl-runtime" not in roles and "tenantctl-flow-logs-eu-west-1" not in roles  # the home's names
    assert all(len(name) <= 64 for name in roles)
    # Its own shared-pool login and log bucket: one PostgreSQL server and one account may hold several cells.
    assert outputs["gateway_role"] == "tenantctl_gateway_eu1"
    assert outputs["logs_bucket"] == "tenantctl-logs-eu1-222222222222-eu-west-1"
    assert outputs["bucket"] == "tenantctl-cell-eu1-222222222222-eu-west-1"
    assert outputs["db_name"] == "tenantctl_cell_eu1"
    [instance] = mocks.of_type("aws:rds/instance:Instance")
    assert instance.inputs["identifier"] == "tenantctl-cell-eu1"
    [alias] = mocks.of_type("aws:kms/alias:Alias")
    assert alias.inputs["name"] == "alias/tenantctl/cell-eu1"
    # A cell's stack passes the gate as a platform stack named after it.
    assert policy.check(mocks.resources, "cell-eu1", platform=True) == []


def test_a_cell_of_another_account_lets_the_runtime_wake_its_tenants_and_nothing_else():
    """The home runtime role may start tenant instances of its own account only; a
    cell of another account has a waker role the runtime assumes there, trusting the
    home runtime and allowed exactly the two wake calls on that account's tenant
    instances. A cell of the home account needs none."""
    import json

    from infra.components.runtime_role import waker_access_document, waker_trust_document

    config = {"name": "eu1", "region": "eu-west-1", "runtime_principal_arn": ROLE_ARN}
    mocks = RecordingMocks(account="222222222222", region="eu-west-1")
    outputs = run_program("cell-eu1", platform_config({**config, "account_role_arn": "arn:aws:iam::222222222222:"
                                                       "role/tenantctl-cell"}, region="eu-west-1"), mocks)
    [role] = [r for r in mocks.of_type("aws:iam/role:Role") if r.inputs["name"] == "tenantctl-cell-eu1-waker"]
    assert outputs["waker_role_arn"] == "arn:aws:iam::222222222222:role/tenantctl-cell-eu1-waker"
    assert json.loads(role.inputs["assumeRolePolicy"]) == waker_trust_document(ROLE_ARN)
    [access] = [r for r in mocks.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == "waker-access"]
    doc = json.loads(access.inputs["policy"])
    assert doc == waker_access_document("eu-west-1", "222222222222")
    assert doc["Statement"][0]["Resource"] == "arn:aws:rds:*:222222222222:db:tenantctl-*"
    assert doc["Statement"][1]["Effect"] == "Deny" and doc["Statement"][1]["Resource"] == [
        "arn:aws:rds:*:222222222222:db:tenantctl-platform", "arn:aws:rds:*:222222222222:db:tenantctl-cell-*"]
    assert policy.check(mocks.resources, "cell-eu1", platform=True) == []
    # A waker that may do more is refused by the gate: another action, or an instance that is no tenant's.
    for extra in ({"Effect": "Allow", "Action": "rds:StopDBInstance", "Resource": "arn:aws:rds:*:2:db:tenantctl-*"},
                  {"Effect": "Allow", "Action": "rds:StartDBInstance", "Resource": "arn:aws:rds:*:2:db:billing"}):
        wider = json.dumps({**doc, "Statement": doc["Statement"] + [extra]})
        tampered = [r.model_copy(update={"inputs": {**r.inputs, "policy": wider}}) if r is access else r
                    for r in mocks.resources]
        assert [v.rule for v in policy.check(tampered, "cell-eu1", platform=True)] == ["iam-scope"], extra
    home_account = RecordingMocks(region="eu-west-1")
    assert "waker_role_arn" not in run_program("cell-eu1", platform_config(config, region="eu-west-1"), home_account)
    assert not [r for r in home_account.of_type("aws:iam/role:Role") if r.inputs["name"].endswith("-waker")]


@pytest.mark.parametrize(("owns", "adopted"), [(True, False), (True, True), (False, False)])
def test_one_cell_per_account_and_region_declares_the_rds_os_metrics_group(owns, adopted):
    """RDS fixes the group's name, so two cells of one account and region
    cannot both create it (`cell add` picks the first); a cell that took it
    over from a removed one imports it instead of creating it."""
    mocks = RecordingMocks(account="222222222222", region="eu-west-1")
    run_program("cell-eu1", platform_config({"name": "eu1", "region": "eu-west-1", "os_metrics_group": owns,
                                             "os_metrics_adopted": adopted, "runtime_principal_arn": ROLE_ARN},
                                            region="eu-west-1"), mocks)
    groups = {g.inputs["name"]: g.name for g in mocks.of_type("aws:cloudwatch/logGroup:LogGroup")}
    assert ("RDSOSMetrics" in groups) is owns
    assert ({n: i for n, i in mocks.imports.items() if i == "RDSOSMetrics"}
            == ({groups["RDSOSMetrics"]: "RDSOSMetrics"} if adopted else {}))


def test_a_cell_outside_home_needs_the_homes_runtime_principal():
    with pytest.raises(ValueError, match="runtime_principal_arn is required"):
        run_program("cell-eu1", platform_config({"name": "eu1", "region": "eu-west-1"}, region="eu-west-1"),
                    RecordingMocks(region="eu-west-1"))


def test_a_cell_stack_must_hold_its_own_cell():
    with pytest.raises(ValueError, match="named after it"):
        run_program("cell-eu1", platform_config({"name": "eu2", "region": "eu-west-1"}, region="eu-west-1"),
                    RecordingMocks(region="eu-west-1"))


def test_the_schema_provider_gets_the_cells_role_only_in_another_account():
    role = "arn:aws:iam::222222222222:role/tenantctl-cell"
    _, mocks = run_tenant({"id": "acme"})
    [schema] = mocks.of_type("pulumi-python:dynamic:Resource")
    assert "account_role_arn" not in schema.inputs  # unchanged inputs for stacks applied before cells
    config = {**tenant_config({"id": "acme", "cell": "eu1"}), "aws:assumeRoles": [{"roleArn": role}]}
    mocks = RecordingMocks()
    run_program("acme", config, mocks)
    [schema] = mocks.of_type("pulumi-python:dynamic:Resource")
    assert schema.inputs["account_role_arn"] == role


def test_only_pooled_tenants_grant_their_role_to_the_gateway(pooled, dedicated, platform):
    def schema_inputs(mocks):
        [schema] = [r for r in mocks.of_type("pulumi-python:dynamic:Resource") if r.inputs["kind"] == "tenant-schema"]
        return schema.inputs

    assert schema_inputs(pooled[1])["gateway_role"] == platform_outputs()["gateway_role"] == "tenantctl_gateway"
    assert schema_inputs(dedicated[1]).get("gateway_role") is None  # per-tenant logins
    [gateway] = [r for r in platform[1].of_type("pulumi-python:dynamic:Resource") if r.inputs["kind"] == "gateway-role"]
    assert gateway.inputs["role"] == platform[0]["gateway_role"] and gateway.inputs["database"] == "tenantctl"
    tables = {t.inputs["name"]: t.inputs for t in platform[1].of_type("aws:dynamodb/table:Table")}
    assert tables["tenantctl-revocations"]["ttl"] == {"attributeName": "expires_at", "enabled": True}


def test_logins_are_bounded_where_neighbours_share_the_server_and_closed_while_suspended():
    """Each schema resource (the tenant's, its workspaces') carries its role's
    CONNECTION LIMIT and LOGIN: the cell's default for a pooled store (a cell
    exporting none: the built-in 10), none on a dedicated server unless the
    tenant sets one, the tenant's own when set; NOLOGIN for a suspended tenant,
    pooled or dedicated; a move keeps the pooled bound on both stores."""
    def logins(spec):
        _, mocks = run_tenant(spec)
        return {r.inputs["role"]: (r.inputs["connection_limit"], r.inputs["login"])
                for r in mocks.of_type("pulumi-python:dynamic:Resource") if r.inputs["kind"] == "tenant-schema"}

    ws = [{"name": "legal"}]
    assert logins({"id": "acme", "workspaces": ws}) == {
        "tenant_acme_app": (10, True), "tenant_acme__ws_legal_app": (10, True)}
    assert logins({"id": "acme", "workspaces": ws, "suspended": True, "db_connection_limit": 3}) == {
        "tenant_acme_app": (3, False), "tenant_acme__ws_legal_app": (3, False)}
    assert logins({"id": "acme", "tier": "dedicated", "suspended": True}) == {"tenant_acme_app": (-1, False)}
    assert logins({"id": "acme", "tier": "dedicated", "db_connection_limit": 40}) == {"tenant_acme_app": (40, True)}
    _, mocks = run_tenant({"id": "acme", "tier": "dedicated", "store_generation": 1,
                           "retiring": {"tier": "pooled", "generation": 0}})
    stores = [(r.inputs["connection_limit"], r.inputs["login"]) for r in mocks.of_type("pulumi-python:dynamic:Resource")
              if r.inputs["kind"] == "tenant-schema"]
    assert stores == [(10, True), (10, True)]


def test_prefix_twins_stay_apart():
    _, corp = run_tenant({"id": "acme-corp"})
    assert policy.check(corp.resources, "acme-corp") == []
    found = policy.check(corp.resources, "acme", rules=["no-foreign-reference"])
    assert found and all(v.rule == "no-foreign-reference" for v in found)


def test_stack_must_be_named_after_the_tenant():
    with pytest.raises(ValueError, match="named after the tenant"):
        run_program("other", tenant_config({"id": "acme"}), RecordingMocks())
    for stack in ("acme-k1", "other.k1", "acme.k0", "acme.x"):
        with pytest.raises(ValueError, match="named after the tenant"):
            run_program(stack, tenant_config({"id": "acme"}), RecordingMocks())


def test_a_second_stack_of_the_tenant_builds_it_again_with_its_generations_role():
    mocks = RecordingMocks()
    outputs = run_program("acme.k1", tenant_config({"id": "acme"}), mocks)
    [role] = mocks.of_type("aws:iam/role:Role")
    assert role.inputs["name"] == "tenantctl-acme.k1-app"
    assert outputs["role_arn"].endswith(":role/tenantctl-acme.k1-app")
    # Every other name is the tenant's own (per account and region), and every rule holds.
    assert {q.inputs["name"] for q in mocks.of_type("aws:sqs/queue:Queue")} == {"tenantctl-acme-jobs",
                                                                                "tenantctl-acme-jobs-dlq"}
    assert policy.check(mocks.resources, "acme") == []


def test_a_second_stack_gives_each_workspace_a_role_of_its_generation():
    """IAM names are per account: a move to another region of the account
    builds every role again beside the old one, the workspaces' included."""
    mocks = RecordingMocks()
    outputs = run_program("acme.k1", tenant_config({"id": "acme", "workspaces": [{"name": "legal"}]}), mocks)
    assert {r.inputs["name"] for r in mocks.of_type("aws:iam/role:Role")} == {"tenantctl-acme.k1-app",
                                                                              "tenantctl-acme--legal.k1-app"}
    assert outputs["workspaces"]["legal"]["role_arn"].endswith(":role/tenantctl-acme--legal.k1-app")
    assert policy.check(mocks.resources, "acme") == []


def test_bad_spec_is_refused_naming_the_rule():
    with pytest.raises(ValueError, match="reserved"):
        run_program("admin", tenant_config({"id": "admin"}), RecordingMocks())


def test_the_local_engine_puts_exactly_the_rules_a_cell_declares(platform):
    from tenantctl.bucket_lifecycle import cell_rules
    from tenantctl.engines.local.handlers.base import Desired
    from tenantctl.engines.local.handlers.s3 import lifecycle_rules

    [config] = [r for r in platform[1].of_type("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
                if "access-logs" not in r.name]  # the cell bucket's, not its log bucket's
    put = lifecycle_rules(Desired("urn", config.type, config.name, config.inputs))
    assert put == [r.s3() for r in cell_rules(CellSpec().retention, CellSpec().abort_multipart_days)]


@pytest.fixture(scope="module")
def with_workspaces():
    return run_tenant({"id": "acme", "workspaces": [{"name": "legal", "owner": "legal-dept"}, {"name": "finance"}]})


def test_each_workspace_gets_its_own_key_role_queues_secret_and_schema(with_workspaces):
    import json

    from infra.components.tenant_role import access_document
    from tenant_runtime.credentials import SESSION_TAG
    from tenantctl.naming import OwnerNames

    outputs, mocks = with_workspaces
    resources = TenantResources.model_validate(outputs)
    assert set(resources.workspaces) == {"legal", "finance"}
    # The tenant's own components again, under the workspace's name.
    assert {c.type for c in mocks.components if c.name == "acme--legal"} == {
        "tenantctl:workspace:TenantWorkspace", "tenantctl:kms:TenantKey", "tenantctl:iam:TenantRole",
        "tenantctl:iam:TenantRoleAccess", "tenantctl:secretsmanager:TenantSecret", "tenantctl:sqs:TenantQueue",
        "tenantctl:secretsmanager:SecretRotationSchedule", "tenantctl:cloudwatch:TenantAlarms"}
    for ws in ("legal", "finance"):
        names, out = OwnerNames("acme", ws), resources.workspaces[ws]
        assert (out.store.schema_name, out.store.role, out.kms_alias, out.prefix) == (
            names.schema, names.db_role, names.kms_alias, names.s3_prefix)
        assert out.store.endpoint == resources.store.endpoint and out.store.database == resources.store.database
        [alias] = [a for a in mocks.of_type("aws:kms/alias:Alias") if a.inputs["name"] == names.kms_alias]
        assert alias.inputs["targetKeyId"] != resources.kms_key_arn
        assert out.kms_key_arn == alias.inputs["targetKeyId"]
        queues = {q.inputs["name"]: q for q in mocks.of_type("aws:sqs/queue:Queue")}
        assert queues[names.queue].inputs["kmsMasterKeyId"] == out.kms_key_arn
        assert queues[names.dlq].inputs["kmsMasterKeyId"] == out.kms_key_arn
        [role] = [r for r in mocks.of_type("aws:iam/role:Role") if r.inputs["name"] == names.iam_role]
        trust = json.loads(role.inputs["assumeRolePolicy"])
        assert trust["Statement"][0]["Condition"]["StringEquals"] == {f"aws:RequestTag/{SESSION_TAG}": f"acme/{ws}"}
        [access] = [p for p in mocks.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == f"acme--{ws}-access"]
        doc = json.loads(access.inputs["policy"])
        queue_arns = [f"arn:aws:sqs:us-east-1:123456789012:{q}" for q in (names.queue, names.dlq)]
        assert doc == access_document("acme", platform_outputs()["bucket_arn"], queue_arns, out.kms_key_arn,
                                      out.store.secret_arn, workspace=ws)
        [secret] = [s for s in mocks.of_type("aws:secretsmanager/secret:Secret") if s.inputs["name"] == names.secret]
        assert secret.inputs["kmsKeyId"] == out.kms_key_arn
        [schema] = [s for s in mocks.of_type("pulumi-python:dynamic:Resource")
                    if s.inputs.get("schema") == names.schema]
        # Its RLS key is `<id>/<ws>`: no tenant-level setting of app.tenant_id reads it.
        assert (schema.inputs["role"], schema.inputs["tenant_id"]) == (names.db_role, f"acme/{ws}")
        assert schema.inputs["gateway_role"] == platform_outputs()["gateway_role"]
        tags = secret.inputs["tags"]
        assert (tags["tenant"], tags["workspace"]) == ("acme", ws)
        alarms = {a.inputs["name"]: a for a in mocks.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
        assert alarms[f"tenantctl-acme--{ws}-dlq-depth"].inputs["dimensions"] == {"QueueName": names.dlq}
    assert policy.check(mocks.resources, "acme") == []


def test_neither_the_tenant_role_nor_a_sibling_reaches_a_workspaces_prefix(with_workspaces):
    import json

    from tenantctl.checks.iam_eval import evaluate, s3_list, s3_object

    _, mocks = with_workspaces
    bucket = platform_outputs()["bucket"]
    docs = {p.name: [json.loads(p.inputs["policy"])] for p in mocks.of_type("aws:iam/rolePolicy:RolePolicy")}
    own = {"acme-access": "tenants/acme/", "acme--legal-access": "tenants/acme--legal/",
           "acme--finance-access": "tenants/acme--finance/"}
    for name, prefix in own.items():
        for other in set(own.values()) - {prefix}:
            assert not evaluate(docs[name], s3_object("s3:GetObject", bucket, f"{other}f")).allowed, (name, other)
            assert not evaluate(docs[name], s3_list(bucket, other)).allowed, (name, other)
        assert evaluate(docs[name], s3_object("s3:GetObject", bucket, f"{prefix}f")).allowed


def test_a_dedicated_tenants_workspace_lives_in_the_tenants_own_database():
    outputs, mocks = run_tenant({"id": "globex", "tier": "dedicated", "workspaces": [{"name": "rnd"}]})
    resources = TenantResources.model_validate(outputs)
    assert resources.workspaces["rnd"].store.endpoint == resources.store.endpoint
    assert resources.workspaces["rnd"].store.endpoint.startswith("tenantctl-globex.")
    assert policy.check(mocks.resources, "globex") == []


def test_a_retired_stack_only_denies_its_role_sends_to_its_queues(pooled):
    """A move's finalize applies the stack it leaves ``retired`` before forwarding
    its queues: that up changes the role's access policy and nothing else (the
    old store stays read-only, the key and queues as they are), and the policy
    denies SendMessage on both queues while the role still drains them."""
    import json

    from infra.components.tenant_role import access_document
    from tenantctl.checks.iam_eval import Decision, Request, evaluate

    retired = run_tenant({"id": "acme", "owner": "team-a", "queue": {"delay_seconds": 30}, "retired": True})
    assert retired[0] == pooled[0]
    before, after = ({(r.type, r.name): r.inputs for r in mocks.resources} for mocks in (pooled[1], retired[1]))
    assert before.keys() == after.keys()
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {("aws:iam/rolePolicy:RolePolicy", "acme-access")}
    doc = json.loads(after["aws:iam/rolePolicy:RolePolicy", "acme-access"]["policy"])
    out = TenantResources.model_validate(retired[0])
    queue_arns = [f"arn:aws:sqs:us-east-1:123456789012:{q}" for q in (naming.OwnerNames("acme").queue,
                                                                     naming.OwnerNames("acme").dlq)]
    assert doc == access_document("acme", platform_outputs()["bucket_arn"], queue_arns, out.kms_key_arn,
                                  out.store.secret_arn, sends=False)
    for arn in queue_arns:
        assert evaluate([doc], Request("sqs:SendMessage", arn)) is Decision.explicit_deny
        for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"):
            assert evaluate([doc], Request(action, arn)).allowed
    live = json.loads(before["aws:iam/rolePolicy:RolePolicy", "acme-access"]["policy"])
    assert evaluate([live], Request("sqs:SendMessage", queue_arns[0])).allowed
    # Written to the stack file, and hashed, only when true: every other spec is as before.
    spec = TenantSpec(id="acme")
    assert "retired" not in spec.desired()
    assert spec.content_hash() != spec.model_copy(update={"retired": True}).content_hash()


def test_a_retired_stack_denies_each_workspace_roles_sends_to_its_own_queues(with_workspaces):
    """A workspace has its own queues and role: retiring the stack a move
    leaves denies that role's sends too (a stale runtime acting for the
    workspace cannot enqueue on queues about to be forwarded and destroyed),
    and changes nothing but the roles' access policies."""
    import json

    from tenantctl.checks.iam_eval import Decision, Request, evaluate
    from tenantctl.naming import OwnerNames

    live_outputs, live = with_workspaces
    retired_outputs, retired = run_tenant({"id": "acme", "retired": True, "workspaces": [
        {"name": "legal", "owner": "legal-dept"}, {"name": "finance"}]})
    assert retired_outputs == live_outputs
    before, after = ({(r.type, r.name): r.inputs for r in mocks.resources} for mocks in (live, retired))
    assert before.keys() == after.keys()
    policy_type = "aws:iam/rolePolicy:RolePolicy"
    assert {key for key in before if before[key] != after[key]} == {
        (policy_type, name) for name in ("acme-access", "acme--legal-access", "acme--finance-access")}
    for ws in ("legal", "finance"):
        names = OwnerNames("acme", ws)
        doc = json.loads(after[policy_type, f"acme--{ws}-access"]["policy"])
        for arn in (f"arn:aws:sqs:us-east-1:123456789012:{q}" for q in (names.queue, names.dlq)):
            assert evaluate([doc], Request("sqs:SendMessage", arn)) is Decision.explicit_deny, (ws, arn)
            assert evaluate([doc], Request("sqs:ReceiveMessage", arn)).allowed  # still drained
            live_doc = json.loads(before[policy_type, f"acme--{ws}-access"]["policy"])
            assert evaluate([live_doc], Request("sqs:SendMessage", arn)).allowed


def test_a_retiring_cell_lifts_its_databases_protection_and_lets_its_buckets_go():
    """What `cell remove` applies right before its destroy: RDS refuses to delete
    a protected instance and S3 a bucket that holds objects. The final snapshot
    stays; the gate names the lifted protection (the removal waives exactly that rule)."""
    config = {"name": "eu1", "region": "eu-west-1", "runtime_principal_arn": ROLE_ARN}
    for retiring in (False, True):
        mocks = RecordingMocks(account="222222222222", region="eu-west-1")
        run_program("cell-eu1", platform_config({**config, "retiring": retiring}, region="eu-west-1"), mocks)
        [instance] = mocks.of_type("aws:rds/instance:Instance")
        assert instance.inputs["deletionProtection"] is not retiring
        assert instance.inputs["skipFinalSnapshot"] is False and instance.inputs["finalSnapshotIdentifier"]
        buckets = mocks.of_type("aws:s3/bucket:Bucket")
        assert len(buckets) == 2 and all(b.inputs["forceDestroy"] is retiring for b in buckets)
        assert [v.rule for v in policy.check(mocks.resources, "cell-eu1", platform=True)] == (
            ["deletion-protection"] if retiring else [])


def test_every_alarm_topic_subscribes_its_cells_endpoints_and_no_other(pooled):
    """The cell's alarm subscriptions (laid over the tenant's config by the engines) reach
    the tenant's topic and each workspace's; a tenant of a cell without has none."""
    assert pooled[1].of_type("aws:sns/topicSubscription:TopicSubscription") == []
    queue, hook = "arn:aws:sqs:us-east-1:999999999999:ops-alarms", "https://events.pager.example/sns"
    config = {**tenant_config({"id": "acme", "workspaces": [{"name": "legal"}]}),
              "tenantctl:alarmSubscriptions": [{"protocol": "sqs", "endpoint": queue},
                                               {"protocol": "https", "endpoint": hook}]}
    mocks = RecordingMocks()
    run_program("acme", config, mocks)
    subs = mocks.of_type("aws:sns/topicSubscription:TopicSubscription")
    topics = {t.inputs["name"] for t in mocks.of_type("aws:sns/topic:Topic")}
    assert topics == {"tenantctl-acme-alarms", "tenantctl-acme--legal-alarms"}
    assert sorted((s.inputs["protocol"], s.inputs["endpoint"]) for s in subs) == [("https", hook)] * 2 + [
        ("sqs", queue)] * 2
    # Named as refresh expects a stack holding each (naming.alarm_subscription_resource), the names kept.
    assert sorted(s.name for s in subs) == sorted(
        naming.alarm_subscription_resource(t.name, p, e) for t in mocks.of_type("aws:sns/topic:Topic")
        for p, e in (("sqs", queue), ("https", hook)))
    assert "acme-to-" + hashlib.sha256(f"sqs:{queue}".encode()).hexdigest()[:10] in {s.name for s in subs}
    assert all(s.inputs.get("endpointAutoConfirms") == (s.inputs["protocol"] == "https") or
               (s.inputs["protocol"] == "sqs" and "endpointAutoConfirms" not in s.inputs) for s in subs)
    with pytest.raises(Exception, match="refused"):
        run_program("acme", {**config, "tenantctl:alarmSubscriptions": [{"protocol": "email", "endpoint": "a@b.c"}]},
                    RecordingMocks())
