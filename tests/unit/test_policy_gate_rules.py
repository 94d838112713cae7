"""The policy gate: the spec rules, waivers, and the PulumiEngine's gate up to
the CLI boundary (a preview's engine events -> planned resources -> refusal
before `up` is ever called). The LocalEngine's gate runs on the sandbox in
tests/integration/test_policy_gate.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from infra_mocks import RecordingMocks, platform_config, run_program, tenant_config
from pulumi.automation import events as ev
from pulumi_cli_double import FakeCli, planned, preview_stream, replacement

from tenantctl.crossguard import pack_dir
from tenantctl.engines.pulumi.engine import PulumiEngine
from tenantctl.engines.pulumi.events import SECRET_SIG
from tenantctl.engines.pulumi.plan import PlanCollector
from tenantctl.errors import PolicyViolation
from tenantctl.models import TenantSpec
from tenantctl.policy import (
    UNKNOWN,
    PlannedResource,
    PolicyGate,
    PolicyRefused,
    ResolvedJudge,
    check_spec,
    judge,
    refuse_unsafe_spec,
    waived,
)
from tenantctl.stackconfig import write_tenant
from tenantctl.target import Target

PROJECT_YAML = "name: tenantctl\nruntime:\n  name: python\nmain: infra/\nstackConfigDir: stacks\n"


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "Pulumi.yaml").write_text(PROJECT_YAML)
    (tmp_path / "stacks").mkdir()
    return tmp_path


def planned_program(spec: dict[str, Any], stack: str | None = None) -> list[PlannedResource]:
    mocks = RecordingMocks()
    run_program(stack or spec["id"], tenant_config(spec), mocks)
    return mocks.resources


def planned_program_platform() -> list[PlannedResource]:
    mocks = RecordingMocks()
    run_program("platform", platform_config(), mocks)
    return mocks.resources


def tampered(resources: list[PlannedResource], typ: str, **inputs: Any) -> list[PlannedResource]:
    out, done = [], False
    for r in resources:
        if r.type == typ and not done:
            r, done = PlannedResource(type=r.type, name=r.name, inputs={**r.inputs, **inputs}), True
        out.append(r)
    assert done
    return out


# -- the spec rules ----------------------------------------------------------------------

def test_spec_rules_name_what_the_resources_cannot_show() -> None:
    assert check_spec(TenantSpec(id="acme")) == []
    short = check_spec(TenantSpec.model_validate({"id": "acme", "backup": {"retention_days": 6}}))
    assert [(v.rule, v.resource) for v in short] == [("backup-retention", "stacks/Pulumi.acme.yaml")]
    assert "6 < 7 days" in short[0].message
    unprotected = TenantSpec.model_validate({"id": "globex", "tier": "dedicated",
                                             "dedicated": {"deletion_protection": False}})
    assert [v.rule for v in check_spec(unprotected)] == ["deletion-protection"]
    assert check_spec(TenantSpec.model_validate({"id": "acme", "backup": {"retention_days": 7}})) == []


def test_refuse_unsafe_spec_exits_8_and_names_the_rule() -> None:
    with pytest.raises(PolicyViolation) as err:
        refuse_unsafe_spec(TenantSpec.model_validate({"id": "acme", "backup": {"retention_days": 3}}))
    assert err.value.exit_code == 8 and isinstance(err.value, PolicyRefused)
    assert "rule backup-retention" in str(err.value) and "\n" not in str(err.value)


# -- PolicyGate ------------------------------------------------------------------------------

def test_gate_passes_the_generated_program(project: Path) -> None:
    write_tenant(project / "stacks", TenantSpec(id="acme"))
    PolicyGate(project)("acme", planned_program({"id": "acme"}))


def test_gate_judges_a_tenants_second_stack_as_the_tenants(project: Path) -> None:
    # `acme.k1` (a move's target) holds tenant acme: its names are acme's, its role `tenantctl-acme.k1-app`.
    write_tenant(project / "stacks", TenantSpec(id="acme"), stack="acme.k1")
    resources = planned_program({"id": "acme"}, stack="acme.k1")
    PolicyGate(project)("acme.k1", resources)
    judge = PolicyGate.resolved("acme.k1")
    assert [v for r in resources for v in judge(r, r.name)] == []
    with pytest.raises(PolicyRefused, match="no-foreign-reference"):
        PolicyGate(project)("acme.k1", planned_program({"id": "beta"}, stack="beta.k1"))


def test_gate_judges_plan_and_committed_spec_together(project: Path) -> None:
    spec = {"id": "acme", "backup": {"retention_days": 2}}
    write_tenant(project / "stacks", TenantSpec.model_validate(spec))
    resources = tampered(planned_program(spec), "aws:kms/key:Key", enableKeyRotation=False)
    with pytest.raises(PolicyRefused) as err:
        PolicyGate(project)("acme", resources)
    assert [v.rule for v in err.value.violations] == ["backup-retention", "kms-rotation"]
    assert str(err.value).startswith("policy gate refused stack 'acme' before anything was applied "
                                     "(rule backup-retention, kms-rotation): ")


def test_gate_reads_the_stack_dir_named_by_pulumi_yaml(project: Path) -> None:
    (project / "Pulumi.yaml").write_text(PROJECT_YAML.replace("stackConfigDir: stacks", "stackConfigDir: desired"))
    write_tenant(project / "desired", TenantSpec.model_validate({"id": "acme", "backup": {"retention_days": 1}}))
    with pytest.raises(PolicyRefused, match="backup-retention"):
        PolicyGate(project)("acme", planned_program({"id": "acme"}))


def test_waiver_is_scoped_to_its_block(project: Path) -> None:
    spec = {"id": "globex", "tier": "dedicated", "dedicated": {"deletion_protection": False}}
    write_tenant(project / "stacks", TenantSpec.model_validate(spec))
    gate, resources = PolicyGate(project), planned_program(spec)
    with waived("deletion-protection"):
        gate("globex", resources)  # deprovision lifting the protection right before destroy
        with pytest.raises(PolicyRefused, match="kms-rotation"):
            gate("globex", tampered(resources, "aws:kms/key:Key", enableKeyRotation=False))
    with pytest.raises(PolicyRefused, match="deletion-protection"):
        gate("globex", resources)
    with pytest.raises(ValueError, match="no-such-rule"):
        with waived("no-such-rule"):
            pass


# -- the PulumiEngine: preview events -> planned resources -> gate -> up -----------------------
# The engine runs the real Automation API SDK against a stand-in CLI binary
# (pulumi_cli_double) replaying the CLI's event sequences.

def steps_of(r: PlannedResource, op: str = "create") -> list:
    return planned("acme", r.type, r.name, json.loads(json.dumps(r.inputs)), op=op)


def engine_with(project: Path, cli: FakeCli, *previews: list[dict]) -> PulumiEngine:
    cli.script("preview", *({"events": events} for events in previews))
    target = Target.model_validate({"kind": "aws", "aws": {"backend_url": "file:///tmp/s",
                                                           "pulumi_root": str(cli.root)}})
    return PulumiEngine(target, project, gate=PolicyGate(project))


@pytest.fixture()
def cli(tmp_path: Path, monkeypatch) -> FakeCli:
    return FakeCli(tmp_path, monkeypatch, stacks=("acme",))


def test_pulumi_engine_gate_refuses_before_up(project: Path, cli: FakeCli) -> None:
    write_tenant(project / "stacks", TenantSpec(id="acme"))
    resources = tampered(planned_program({"id": "acme"}), "aws:sqs/queue:Queue", kmsMasterKeyId=None)
    engine = engine_with(project, cli, preview_stream("acme", [steps_of(r) for r in resources]))
    with pytest.raises(PolicyRefused) as err:
        engine.up("acme")
    assert cli.ran("up") == []  # up never ran
    assert {v.rule for v in err.value.violations} == {"queue-encryption"} and err.value.exit_code == 8


def test_pulumi_engine_preview_fails_on_an_unsafe_plan(project: Path, cli: FakeCli) -> None:
    """`apply --preview` on a pull request must name the broken rule, not report
    a harmless-looking change set that the later `up` would refuse."""
    write_tenant(project / "stacks", TenantSpec(id="acme"))
    resources = tampered(planned_program({"id": "acme"}), "aws:kms/key:Key", enableKeyRotation=False)
    engine = engine_with(project, cli, preview_stream("acme", [steps_of(r) for r in resources]))
    with pytest.raises(PolicyRefused) as err:
        engine.preview("acme")
    assert len(cli.ran("preview")) == 1 and cli.ran("up") == []
    assert {v.rule for v in err.value.violations} == {"kms-rotation"}


def test_pulumi_engine_gate_lets_a_clean_plan_through(project: Path, cli: FakeCli) -> None:
    write_tenant(project / "stacks", TenantSpec(id="acme"))
    resources = planned_program({"id": "acme"})
    engine = engine_with(project, cli, preview_stream("acme", [steps_of(r) for r in resources]))
    engine.up("acme")
    assert [c[0] for c in cli.commands() if c[0] in ("preview", "up")] == ["preview", "up"]


def test_pulumi_engine_without_gate_does_not_preview(project: Path, cli: FakeCli) -> None:
    engine = engine_with(project, cli)
    engine.gate = None
    engine.up("acme")
    assert cli.ran("preview") == [] and len(cli.ran("up")) == 1


def test_a_replaced_resource_is_judged_after_its_old_self_is_deleted(project: Path, cli: FakeCli) -> None:
    """A change that forces replacement (a renamed queue) reaches a preview as
    create-replacement and replace where the queue registers, then, after every
    other create and update, delete-replaced for the same URN with no new state
    (pkg/resource/deploy/step_generator.go). The new queue is still planned."""
    write_tenant(project / "stacks", TenantSpec(id="acme"))
    resources = planned_program({"id": "acme"})
    queue = next(r for r in resources if r.type == "aws:sqs/queue:Queue")
    renamed = {**queue.inputs, "name": "tenantctl-acme-jobs-v2", "kmsMasterKeyId": None}
    early, late = replacement("acme", queue.type, queue.name, queue.inputs, renamed, keys=["name"])
    others = [steps_of(r, op="same") for r in resources if r is not queue]
    engine = engine_with(project, cli, preview_stream("acme", [*others, early], later=[late]))
    with pytest.raises(PolicyRefused) as err:
        engine.preview("acme")
    assert [(v.rule, v.resource) for v in err.value.violations] == [("queue-encryption", queue.name)]


def test_a_replacement_plans_its_new_inputs(project: Path, cli: FakeCli) -> None:
    write_tenant(project / "stacks", TenantSpec(id="acme"))
    resources = planned_program({"id": "acme"})
    queue = next(r for r in resources if r.type == "aws:sqs/queue:Queue")
    renamed = {**queue.inputs, "name": "tenantctl-acme-jobs-v2"}
    early, late = replacement("acme", queue.type, queue.name, queue.inputs, renamed, keys=["name"])
    collector = PlanCollector("acme")
    for event in preview_stream("acme", [*(steps_of(r, "same") for r in resources if r is not queue), early],
                                later=[late]):
        collector(ev.EngineEvent.from_json(event))
    planned_queue = [r for r in collector.planned() if r.name == queue.name]
    assert [r.inputs["name"] for r in planned_queue] == ["tenantctl-acme-jobs-v2"]
    change = next(c for c in collector.changeset().changes if c.name == queue.name)
    assert change.op.value == "replace" and [d.path for d in change.diffs] == ["name"]


def test_plan_collector_keeps_custom_resources_with_unknowns_and_blinded_secrets() -> None:
    key = PlannedResource(type="aws:kms/key:Key", name="acme-key",
                          inputs={"enableKeyRotation": True, "policy": UNKNOWN,
                                  "description": {SECRET_SIG: "1b47061264138c4ac30d75fd1eb44270", "ciphertext": "x"}})
    collector = PlanCollector("acme")
    old_queue = planned("acme", "aws:sqs/queue:Queue", "old-queue", {}, op="delete", old_inputs={"name": "q"})
    old_queue[0][1].pop("new")  # a delete step has no new state
    # A component: the CLI omits `custom` when it is false (apitype `omitempty`), the SDK reads None.
    component = planned("acme", "tenantctl:kms:TenantKey", "acme", {"x": "y"}, custom=False)
    for event in preview_stream("acme", [steps_of(key), old_queue, component]):
        collector(ev.EngineEvent.from_json(event))
    [only] = collector.planned()
    assert only.type == "aws:kms/key:Key" and only.name == "acme-key"
    assert only.inputs == {"enableKeyRotation": True, "policy": UNKNOWN, "description": UNKNOWN}
    assert collector.changeset().summary() == {"create": 2, "delete": 1}  # the changeset still counts all


# -- unknowns: judged at apply, or refused -------------------------------------------------------

def new_tenant_plan(spec: dict[str, Any]) -> list[PlannedResource]:
    """A first provision's preview: every output of a resource not created yet unknown."""
    mocks = RecordingMocks(preview=True)
    run_program(spec["id"], tenant_config(spec), mocks)
    return mocks.resources


def test_a_new_tenants_preview_cannot_judge_what_depends_on_resources_not_created(project: Path) -> None:
    write_tenant(project / "stacks", TenantSpec.model_validate({"id": "acme", "tier": "dedicated"}))
    resources = new_tenant_plan({"id": "acme", "tier": "dedicated"})
    unjudged = judge(resources, "acme").unjudged
    assert {("queue-encryption", "kmsMasterKeyId unknown until apply"), ("iam-scope", "policy unknown until apply"),
            ("rds-encryption", "kmsKeyId unknown until apply")} <= {(u.rule, u.message) for u in unjudged}
    with pytest.raises(PolicyRefused) as err:  # nothing will judge them: fail closed
        PolicyGate(project)("acme", resources)
    assert "unknown until apply and nothing judges it then (fail closed)" in str(err.value)
    assert {"queue-encryption", "iam-scope", "rds-encryption"} <= {v.rule for v in err.value.violations}
    judgment = PolicyGate(project)("acme", resources, judged_at_apply=True)  # CrossGuard will
    assert judgment.violations == [] and set(judgment.unjudged) == set(unjudged)


def test_without_the_pack_the_pulumi_engine_fails_closed_on_unknowns(project: Path, cli: FakeCli) -> None:
    write_tenant(project / "stacks", TenantSpec(id="acme"))
    resources = new_tenant_plan({"id": "acme"})
    engine = engine_with(project, cli, preview_stream("acme", [steps_of(r) for r in resources]))
    engine.policy_pack = None  # pulumi-policy not installed, or the pack missing from the install
    with pytest.raises(PolicyRefused, match="fail closed") as err:
        engine.preview("acme")
    assert "queue-encryption" in {v.rule for v in err.value.violations}
    engine.policy_pack = pack_dir()
    assert engine.preview("acme").summary()["create"] == len(resources)


def test_the_resolved_judgment_refuses_what_the_preview_could_not_see() -> None:
    """At apply the queue's key is known: another key than the tenant's (whose
    alias the program registers first) is refused before the queue is created."""
    resources = planned_program({"id": "acme"})
    judge_up = ResolvedJudge("acme")
    foreign = "arn:aws:kms:us-east-1:123456789012:key/someone-else"
    found = []
    for r in resources:
        if r.type == "aws:sqs/queue:Queue":
            r = PlannedResource(type=r.type, name=r.name, inputs={**r.inputs, "kmsMasterKeyId": foreign})
        found += judge_up(r)
    assert {(v.rule, v.resource) for v in found} == {("queue-encryption", "acme-queue"),
                                                     ("queue-encryption", "acme-dlq")}
    clean = ResolvedJudge("acme")
    assert [v for r in resources for v in clean(r)] == []


def test_the_resolved_judgment_does_not_miss_a_companion_registered_later() -> None:
    """A bucket is registered before its public access block: judged one by one,
    the block's absence is not a violation yet (the preview judged the whole set),
    its content is once it arrives."""
    platform = planned_program_platform()
    judge_up = ResolvedJudge("platform", platform=True)
    found = []
    for r in platform:
        if r.type == "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock" and r.name == "shared-public-access":
            r = PlannedResource(type=r.type, name=r.name, inputs={**r.inputs, "blockPublicPolicy": False})
        found += judge_up(r)
    assert [(v.rule, v.message) for v in found] == [("bucket-public-access", "public access not fully blocked")]
    with waived("bucket-public-access"):
        waived_judge = PolicyGate.resolved("platform")
    assert [v for r in platform for v in waived_judge(r)] == []
