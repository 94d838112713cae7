"""The CrossGuard policy pack in policy/: the same rules as the gate, judged by
pulumi-policy's own analyzer on each resource as `up` registers it.

The Pulumi CLI starts the pack (its ``__main__.py``) and calls the analyzer's
gRPC methods: ``GetAnalyzerInfo``, ``Configure`` (the enforcement levels of
``--policy-pack-config``), then ``Analyze`` for each resource registration
with its inputs (pkg/resource/deploy/step_generator.go), unknowns included
during a preview. These tests make the same calls: to the pack started as the
CLI starts it, and to pulumi-policy's servicer in-process with the inputs the
real program registers, in its registration order.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from infra_mocks import RecordingMocks, run_program, tenant_config
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import EnforcementLevel
from pulumi_policy.policy import _PolicyAnalyzerServicer

from tenantctl.crossguard import PACK_NAME, pack_dir, plain, policies, stack_of
from tenantctl.policy import RULES, UNKNOWN, PlannedResource

FOREIGN_KEY = "arn:aws:kms:us-east-1:123456789012:key/someone-else"


def program(spec: dict[str, Any]) -> list[PlannedResource]:
    mocks = RecordingMocks()
    run_program(spec["id"], tenant_config(spec), mocks)
    return mocks.resources


def request(stack: str, r: PlannedResource) -> analyzer_pb2.AnalyzeRequest:
    props = struct_pb2.Struct()
    json_format.ParseDict(json.loads(json.dumps(r.inputs)), props)
    return analyzer_pb2.AnalyzeRequest(type=r.type, properties=props, name=r.name,
                                       urn=f"urn:pulumi:{stack}::tenantctl::{r.type}::{r.name}")


def analyzer(disabled: tuple[str, ...] = ()) -> _PolicyAnalyzerServicer:
    """pulumi-policy's servicer with the pack's policies, configured as the CLI
    configures it from a `--policy-pack-config` file."""
    servicer = _PolicyAnalyzerServicer(PACK_NAME, "0.0.1", policies(), EnforcementLevel.MANDATORY)
    config = analyzer_pb2.ConfigureAnalyzerRequest()
    for rule in disabled:
        config.policyConfig[rule].CopyFrom(analyzer_pb2.PolicyConfig(enforcementLevel=analyzer_pb2.DISABLED))
    servicer.Configure(config, None)
    return servicer


def analyze_all(servicer: Any, stack: str, resources: list[PlannedResource]) -> list[tuple[str, str, str, int]]:
    found = []
    for r in resources:
        for d in servicer.Analyze(request(stack, r), None).diagnostics:
            found.append((d.policyName, r.name, d.message, d.enforcementLevel))
    return found


def edited(resources: list[PlannedResource], typ: str, **inputs: Any) -> list[PlannedResource]:
    return [PlannedResource(type=r.type, name=r.name, inputs={**r.inputs, **inputs}) if r.type == typ else r
            for r in resources]


def test_the_program_passes_the_pack_resource_by_resource() -> None:
    assert analyze_all(analyzer(), "acme", program({"id": "acme"})) == []
    assert analyze_all(analyzer(), "globex", program({"id": "globex", "tier": "dedicated"})) == []
    # A workspace's key is registered (with its alias) before what it encrypts.
    assert analyze_all(analyzer(), "acme", program({"id": "acme", "workspaces": [{"name": "legal"}]})) == []


def test_the_pack_refuses_what_only_the_up_can_see() -> None:
    """A queue encrypted with someone else's key: at preview its key is an
    unknown ARN, at up the pack sees it (and the tenant's alias, registered
    before the queue) and reports a mandatory violation naming the rule."""
    found = analyze_all(analyzer(), "acme", edited(program({"id": "acme"}), "aws:sqs/queue:Queue",
                                                   kmsMasterKeyId=FOREIGN_KEY))
    assert {(rule, name) for rule, name, _, _ in found} == {("queue-encryption", "acme-queue"),
                                                           ("queue-encryption", "acme-dlq")}
    assert all(level == analyzer_pb2.MANDATORY for *_, level in found)
    assert all(message.endswith(f"queue encrypted with {FOREIGN_KEY!r}, not this tenant's key")
               for _, _, message, _ in found)


def test_unknowns_during_a_preview_are_left_to_the_gate() -> None:
    resources = edited(program({"id": "acme"}), "aws:sqs/queue:Queue", kmsMasterKeyId=UNKNOWN)
    assert analyze_all(analyzer(), "acme", resources) == []


def test_a_waived_rule_is_disabled_through_the_packs_config() -> None:
    """Deprovision lifts deletion protection on a dedicated database right before
    destroying it: tenantctl disables that one rule in the pack's config."""
    resources = edited(program({"id": "globex", "tier": "dedicated"}), "aws:rds/instance:Instance",
                       deletionProtection=False)
    assert [rule for rule, *_ in analyze_all(analyzer(), "globex", resources)] == ["deletion-protection"]
    assert analyze_all(analyzer(disabled=("deletion-protection",)), "globex", resources) == []


def test_the_platform_stack_is_judged_as_the_platform() -> None:
    key = PlannedResource(type="aws:rds/instance:Instance", name="shared-db", inputs={
        "storageEncrypted": True, "publiclyAccessible": False, "deletionProtection": True,
        "backupRetentionPeriod": 14, "kmsKeyId": "arn:aws:kms:us-east-1:1:key/platform", "multiAz": True,
        "iamDatabaseAuthenticationEnabled": True, "enabledCloudwatchLogsExports": ["postgresql"],
        "monitoringInterval": 60, "monitoringRoleArn": "arn:aws:iam::1:role/monitoring",
        "parameterGroupName": "tenantctl-platform",
        "tags": {"tenant": "platform", "tier": "platform", "owner": "ops", "managed-by": "tenantctl"}})
    assert analyze_all(analyzer(), "platform", [key]) == []
    assert stack_of("urn:pulumi:platform::tenantctl::aws:rds/instance:Instance::shared-db") == "platform"


def test_props_are_read_through_pulumi_policys_proxies() -> None:
    from pulumi_policy.proxy import unknown_checking_proxy

    props = unknown_checking_proxy({"tags": {"a": "1"}, "list": [{"x": UNKNOWN}], "arn": UNKNOWN})
    assert plain(props) == {"tags": {"a": "1"}, "list": [{"x": UNKNOWN}], "arn": UNKNOWN}


@pytest.fixture(scope="module")
def started_pack():
    """The pack started as the CLI starts it: its directory run by tenantctl's
    interpreter, which prints the port of its analyzer server."""
    pack = pack_dir()
    assert pack is not None and (pack / "PulumiPolicy.yaml").is_file()
    process = subprocess.Popen([sys.executable, str(pack)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline().strip())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.kill()
        process.wait()


def test_the_started_pack_serves_every_rule_as_a_mandatory_policy(started_pack) -> None:
    from google.protobuf import empty_pb2

    info = started_pack.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == PACK_NAME
    assert {p.name: p.enforcementLevel for p in info.policies} == {rule: analyzer_pb2.MANDATORY for rule in RULES}
    assert all(p.description for p in info.policies)


def test_the_started_pack_refuses_over_grpc(started_pack) -> None:
    resources = edited(program({"id": "acme"}), "aws:kms/key:Key", enableKeyRotation=False)
    found = []
    for r in resources:
        found += [(d.policyName, r.name) for d in started_pack.Analyze(request("acme", r)).diagnostics]
    assert found == [("kms-rotation", "acme-key")]
