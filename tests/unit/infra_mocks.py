"""Run the infra/ program under Pulumi mocks and record what it declares.

``RecordingMocks`` answers like the AWS provider would for the outputs the
program reads (ids, ARNs, URLs, RDS endpoint and managed secret), answers the
platform StackReference from a given outputs dict, and records every resource
as a ``tenantctl.policy.PlannedResource``. ``run_program`` resets Pulumi's
process-global runtime state, so several programs run in one pytest process.
With ``preview=True`` it plays a first preview: no resource exists yet, so every
output the program did not set itself is unknown (``policy.UNKNOWN`` in the
recorded inputs of whatever uses it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from tenantctl.naming import partition_of
from tenantctl.policy import PlannedResource, planned_resource

ACCOUNT = "123456789012"
REGION = "us-east-1"


def _hex(name: str, n: int = 8) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:n]


def platform_outputs(account: str = ACCOUNT, region: str = REGION) -> dict[str, Any]:
    """What a platform stack exports (the same keys infra.program.build_platform returns)."""
    p = partition_of(region)
    root = f"arn:{p}:iam::{account}:root"
    bucket = f"tenantctl-shared-{account}-{region}"
    return {
        "region": region, "account_id": account, "vpc_id": "vpc-shared", "vpc_cidr": "10.0.0.0/16",
        "private_subnet_ids": ["subnet-a", "subnet-b"], "db_endpoint": f"shared.x.{region}.rds.amazonaws.com",
        "db_port": 5432, "db_name": "tenantctl",
        "db_admin_secret_arn": f"arn:{p}:secretsmanager:{region}:{account}:secret:rds!db-shared-AbCdEf",
        "db_security_group_id": "sg-shared-db", "pooled_clients_security_group_id": "sg-pooled-clients",
        "bucket": bucket, "bucket_arn": f"arn:{p}:s3:::{bucket}",
        "logs_bucket": f"tenantctl-logs-{account}-{region}",
        "platform_key_arn": f"arn:{p}:kms:{region}:{account}:key/platform", "registry_table": "tenantctl-registry",
        "admin_role_arn": root, "runtime_principal_arn": root, "revocation_table": "tenantctl-revocations",
        "gateway_role": "tenantctl_gateway",
        "gateway_secret_arn": f"arn:{p}:secretsmanager:{region}:{account}:secret:tenantctl/platform/gateway-AbCdEf",
        "flow_logs_role_arn": f"arn:{p}:iam::{account}:role/tenantctl-flow-logs-{region}",
        "db_monitoring_role_arn": f"arn:{p}:iam::{account}:role/tenantctl-rds-monitoring-{region}",
        "rotation_function_arn": f"arn:{p}:lambda:{region}:{account}:function:tenantctl-platform-rot",
        "rotation_role_arn": f"arn:{p}:iam::{account}:role/serverlessrepo-tenantctl-platform-rot-role",
    }


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, platform: dict[str, Any] | None = None, account: str = ACCOUNT, region: str = REGION,
                 preview: bool = False, stacks: dict[str, dict[str, Any]] | None = None) -> None:
        self.platform = platform if platform is not None else platform_outputs(account, region)
        self.stacks = stacks or {}  # other referenced stacks' outputs by name (default: ``platform``)
        self.account, self.region = account, region
        self.preview = preview
        self.resources: list[PlannedResource] = []  # custom resources: what gets created
        self.components: list[PlannedResource] = []
        self.calls: list[str] = []
        self.imports: dict[str, str] = {}  # logical name -> the id its import_ option names

    def types(self) -> set[str]:
        return {r.type for r in self.resources}

    def of_type(self, typ: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.type == typ]

    def _computed(self, typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        a, r, p = self.account, self.region, partition_of(self.region)
        physical = inputs.get("name") or name
        rid = f"{name}-{_hex(name)}"
        match typ:
            case "aws:kms/key:Key":
                key_id = f"{_hex(name, 8)}-{_hex(name + 'k', 4)}-4000-8000-{_hex(name + 'y', 12)}"
                return key_id, {"arn": f"arn:{p}:kms:{r}:{a}:key/{key_id}", "keyId": key_id}
            case "aws:kms/alias:Alias":
                return physical, {"arn": f"arn:{p}:kms:{r}:{a}:{physical}", "targetKeyArn": inputs.get("targetKeyId")}
            case "aws:s3/bucket:Bucket":
                bucket = inputs.get("bucket") or name
                return bucket, {"bucket": bucket, "arn": f"arn:{p}:s3:::{bucket}"}
            case "aws:sqs/queue:Queue":
                return f"https://sqs.{r}.amazonaws.com/{a}/{physical}", {
                    "arn": f"arn:{p}:sqs:{r}:{a}:{physical}", "url": f"https://sqs.{r}.amazonaws.com/{a}/{physical}"}
            case "aws:iam/role:Role":
                return physical, {"arn": f"arn:{p}:iam::{a}:role/{physical}", "name": physical}
            case "aws:secretsmanager/secret:Secret":
                return f"arn:{p}:secretsmanager:{r}:{a}:secret:{physical}-{_hex(name, 6)}", {
                    "arn": f"arn:{p}:secretsmanager:{r}:{a}:secret:{physical}-{_hex(name, 6)}"}
            case "aws:rds/instance:Instance":
                ident = inputs.get("identifier") or name
                return ident, {"address": f"{ident}.c{_hex(name)}.{r}.rds.amazonaws.com", "port": 5432,
                               "arn": f"arn:{p}:rds:{r}:{a}:db:{ident}",
                               "masterUserSecrets": [{"secretArn":
                                                      f"arn:{p}:secretsmanager:{r}:{a}:secret:rds!db-{_hex(name)}-Xy",
                                                      "kmsKeyId": inputs.get("masterUserSecretKmsKeyId", ""),
                                                      "secretStatus": "active"}]}
            case "aws:dynamodb/table:Table":
                return physical, {"arn": f"arn:{p}:dynamodb:{r}:{a}:table/{physical}", "name": physical}
            case "aws:sns/topic:Topic":
                return f"arn:{p}:sns:{r}:{a}:{physical}", {"arn": f"arn:{p}:sns:{r}:{a}:{physical}"}
            case "aws:rds/subnetGroup:SubnetGroup" | "aws:rds/parameterGroup:ParameterGroup":
                return physical, {"name": physical}
            case "aws:cloudwatch/logGroup:LogGroup":
                return physical, {"arn": f"arn:{p}:logs:{r}:{a}:log-group:{physical}"}
            case "aws:serverlessrepository/cloudFormationStack:CloudFormationStack":
                function = inputs["parameters"]["functionName"]
                return f"arn:{p}:cloudformation:{r}:{a}:stack/serverlessrepo-{physical}/{_hex(name)}", {
                    "outputs": {"RotationLambdaARN": f"arn:{p}:lambda:{r}:{a}:function:{function}"}}
        return rid, {}

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict]:
        planned = (planned_resource(args.typ, args.name, dict(args.inputs)) if self.preview
                   else PlannedResource(type=args.typ, name=args.name, inputs=dict(args.inputs)))
        if args.custom is False:  # ReadResource (the StackReference) leaves it None
            self.components.append(planned)
            return f"{args.name}-component", {}
        self.resources.append(planned)
        if args.resource_id:
            self.imports[args.name] = args.resource_id
        if args.typ == "pulumi:pulumi:StackReference":
            outputs = self.stacks.get(args.inputs["name"], self.platform)
            return args.inputs["name"], {"name": args.inputs["name"], "outputs": outputs,
                                         "secretOutputNames": []}
        if self.preview:
            return "", dict(args.inputs)  # an empty id and the missing outputs are unknown
        rid, computed = self._computed(args.typ, args.name, args.inputs)
        return rid, {**args.inputs, "id": rid, **computed}

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict, list]:
        self.calls.append(args.token)
        a, r, p = self.account, self.region, partition_of(self.region)
        match args.token:
            case "aws:index/getCallerIdentity:getCallerIdentity":
                return {"accountId": a, "arn": f"arn:{p}:iam::{a}:user/ci", "id": a, "userId": "AIDA"}, []
            case "aws:index/getAvailabilityZones:getAvailabilityZones":
                names = [f"{r}{z}" for z in "abc"]
                return {"names": names, "zoneIds": [f"use1-az{i}" for i in range(1, 4)], "id": r, "region": r}, []
            case "aws:index/getRegion:getRegion":
                return {"name": r, "region": r, "id": r, "endpoint": f"ec2.{r}.amazonaws.com"}, []
            case "aws:lambda/getFunction:getFunction":
                name = args.args["functionName"].rsplit(":", 1)[-1]
                return {"arn": args.args["functionName"], "functionName": name,
                        "role": f"arn:{p}:iam::{a}:role/serverlessrepo-{name}-role"}, []
        raise NotImplementedError(f"mock has no answer for invoke {args.token}")


def _ensure_event_loop() -> None:
    """Pulumi's sync helpers ask for the thread's current loop, which an async
    test run earlier in the same process (asyncio.run) may have left unset."""
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


def run_program(stack: str, config: dict[str, Any], mocks: RecordingMocks) -> dict[str, Any]:
    """Run infra.program.build(stack) with ``config`` (full keys, e.g. "tenantctl:tenant")
    under ``mocks``; return the resolved stack outputs."""
    from infra.program import build

    _ensure_event_loop()
    pulumi_settings.ROOT.set(None)  # set_mocks only creates a root Stack when none exists
    set_all_config({k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()})
    pulumi.runtime.set_mocks(mocks, project="tenantctl", stack=stack, preview=mocks.preview)
    pulumi_settings.SETTINGS.outputs.clear()
    outputs: dict[str, Any] = {}

    def program() -> None:
        outputs.update(_sync_await(pulumi.Output.all(**build(stack)).future()) or {})  # None: unknown in a preview

    _sync_await(run_pulumi_func(program))
    return outputs


def tenant_config(spec: dict[str, Any], region: str = REGION) -> dict[str, Any]:
    return {"aws:region": region, "tenantctl:tenant": spec, "tenantctl:platformStack": "platform"}


def platform_config(spec: dict[str, Any] | None = None, region: str = REGION) -> dict[str, Any]:
    return {"aws:region": region, "tenantctl:platform": spec or {}}
