"""The policy gate: the spec rules, waivers, and the PulumiEngine's gate up to
the CLI boundary (a preview's engine events -> planned resources -> refusal
before `up` is ever called). The LocalEngine's gate runs on the sandbox in
tests/integration/test_policy_gate.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from infra_mocks import RecordingMocks, run_program, tenant_config
from pulumi.automation import events as ev

from tenantctl.engines.pulumi.engine import PulumiEngine
from tenantctl.engines.pulumi.plan import SECRET_SIG, PlanCollector
from tenantctl.errors import PolicyViolation
from tenantctl.models import TenantSpec
from tenantctl.policy import UNKNOWN, PlannedResource, PolicyGate, PolicyRefused, check_spec, refuse_unsafe_spec, waived
from tenantctl.stackconfig import write_tenant
from tenantctl.target import Target

PROJECT_YAML = "name: tenantctl\nruntime:\n  name: python\nmain: infra/\nstackConfigDir: stacks\n"


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "Pulumi.yaml").write_text(PROJECT_YAML)
    (tmp_path / "stacks").mkdir()
    return tmp_path


def planned(spec: dict[str, Any]) -> list[PlannedResource]:
    mocks = RecordingMocks()
    run_program(spec["id"], tenant_config(spec), mocks)
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
    PolicyGate(project)("acme", planned({"id": "acme"}))


def test_gate_judges_plan_and_committed_spec_together(project: Path) -> None:
    spec = {"id": "acme", "backup": {"retention_days": 2}}
    write_tenant(project / "stacks", TenantSpec.model_validate(spec))
    resources = tampered(planned(spec), "aws:kms/key:Key", enableKeyRotation=False)
    with pytest.raises(PolicyRefused) as err:
        PolicyGate(project)("acme", resources)
    assert [v.rule for v in err.value.violations] == ["backup-retention", "kms-rotation"]
    assert str(err.value).startswith("policy gate refused stack 'acme' before anything was applied "
                                     "(rule backup-retention, kms-rotation): ")


def test_gate_reads_the_stack_dir_named_by_pulumi_yaml(project: Path) -> None:
    (project / "Pulumi.yaml").write_text(PROJECT_YAML.replace("stackConfigDir: stacks", "stackConfigDir: desired"))
    write_tenant(project / "desired", TenantSpec.model_validate({"id": "acme", "backup": {"retention_days": 1}}))
    with pytest.raises(PolicyRefused, match="backup-retention"):
        PolicyGate(project)("acme", planned({"id": "acme"}))


def test_waiver_is_scoped_to_its_block(project: Path) -> None:
    spec = {"id": "globex", "tier": "dedicated", "dedicated": {"deletion_protection": False}}
    write_tenant(project / "stacks", TenantSpec.model_validate(spec))
    gate, resources = PolicyGate(project), planned(spec)
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

def pre_event(r: PlannedResource, op: str = "create", seq: int = 1) -> ev.EngineEvent:
    """A resourcePreEvent as the Pulumi CLI writes it to its event log (JSON)."""
    urn = f"urn:pulumi:acme::tenantctl::{r.type}::{r.name}"
    state = {"type": r.type, "urn": urn, "custom": True, "id": "", "parent": "", "provider": "",
             "inputs": json.loads(json.dumps(r.inputs))}
    return ev.EngineEvent.from_json({"sequence": seq, "timestamp": 0, "resourcePreEvent": {
        "metadata": {"op": op, "urn": urn, "type": r.type, "provider": "", "new": state}, "planning": True}})


class StackDouble:
    """Stands in for pulumi.automation.Stack at the CLI boundary: preview replays
    the engine events the CLI would emit; up records that it was called."""

    def __init__(self, events: list[ev.EngineEvent]) -> None:
        self.events, self.calls, self.name = events, [], "acme"

    def preview(self, on_event, **_: Any) -> None:
        self.calls.append("preview")
        for event in self.events:
            on_event(event)

    def up(self, on_event, **_: Any) -> Any:
        self.calls.append("up")
        for event in self.events:
            on_event(event)
        return type("UpResult", (), {"outputs": {}})()

    def cancel(self) -> None:
        pass


def engine_with(project: Path, events: list[ev.EngineEvent], monkeypatch) -> tuple[PulumiEngine, StackDouble]:
    stack = StackDouble(events)
    engine = PulumiEngine(Target.model_validate({"kind": "aws", "aws": {"backend_url": "file:///tmp/s"}}), project,
                          gate=PolicyGate(project))
    monkeypatch.setattr(engine, "_stack", lambda name, create: stack)
    return engine, stack


def test_pulumi_engine_gate_refuses_before_up(project: Path, monkeypatch) -> None:
    write_tenant(project / "stacks", TenantSpec(id="acme"))
    resources = tampered(planned({"id": "acme"}), "aws:sqs/queue:Queue", kmsMasterKeyId=None)
    engine, stack = engine_with(project, [pre_event(r, seq=i) for i, r in enumerate(resources)], monkeypatch)
    with pytest.raises(PolicyRefused) as err:
        engine.up("acme")
    assert stack.calls == ["preview"]  # up never ran
    assert {v.rule for v in err.value.violations} == {"queue-encryption"} and err.value.exit_code == 8


def test_pulumi_engine_preview_fails_on_an_unsafe_plan(project: Path, monkeypatch) -> None:
    """`apply --preview` on a pull request must name the broken rule, not report
    a harmless-looking change set that the later `up` would refuse."""
    write_tenant(project / "stacks", TenantSpec(id="acme"))
    resources = tampered(planned({"id": "acme"}), "aws:kms/key:Key", enableKeyRotation=False)
    engine, stack = engine_with(project, [pre_event(r, seq=i) for i, r in enumerate(resources)], monkeypatch)
    with pytest.raises(PolicyRefused) as err:
        engine.preview("acme")
    assert stack.calls == ["preview"]
    assert {v.rule for v in err.value.violations} == {"kms-rotation"}


def test_pulumi_engine_gate_lets_a_clean_plan_through(project: Path, monkeypatch) -> None:
    write_tenant(project / "stacks", TenantSpec(id="acme"))
    resources = planned({"id": "acme"})
    engine, stack = engine_with(project, [pre_event(r, seq=i) for i, r in enumerate(resources)], monkeypatch)
    result = engine.up("acme")
    assert stack.calls == ["preview", "up"]
    assert result.changes.count(result.changes.changes[0].op) > 0


def test_pulumi_engine_without_gate_does_not_preview(project: Path, monkeypatch) -> None:
    engine, stack = engine_with(project, [], monkeypatch)
    engine.gate = None
    engine.up("acme")
    assert stack.calls == ["up"]


def test_plan_collector_keeps_custom_resources_with_unknowns_and_blinded_secrets() -> None:
    key = PlannedResource(type="aws:kms/key:Key", name="acme-key",
                          inputs={"enableKeyRotation": True, "policy": UNKNOWN,
                                  "description": {SECRET_SIG: "1b47061264138c4ac30d75fd1eb44270", "ciphertext": "x"}})
    collector = PlanCollector("acme")
    collector(pre_event(key))
    delete = ev.EngineEvent.from_json({"sequence": 9, "timestamp": 0, "resourcePreEvent": {"metadata": {
        "op": "delete", "urn": "urn:pulumi:acme::tenantctl::aws:sqs/queue:Queue::old-queue",
        "type": "aws:sqs/queue:Queue", "provider": ""}}})
    collector(delete)
    component = ev.EngineEvent.from_json({"sequence": 10, "timestamp": 0, "resourcePreEvent": {"metadata": {
        "op": "create", "urn": "urn:pulumi:acme::tenantctl::tenantctl:kms:TenantKey::acme", "type": "tenantctl:kms:TenantKey",
        "provider": "", "new": {"type": "tenantctl:kms:TenantKey", "urn": "u", "custom": False, "id": "", "parent": "",
                                "provider": "", "inputs": {}}}}})
    collector(component)
    [only] = collector.planned()
    assert only.type == "aws:kms/key:Key" and only.name == "acme-key"
    assert only.inputs == {"enableKeyRotation": True, "policy": UNKNOWN, "description": UNKNOWN}
    assert collector.changeset().summary() == {"create": 2, "delete": 1}  # the changeset still counts all
