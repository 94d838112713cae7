"""infra's StackReference: the cell's outputs a tenant's program reads are
looked up, with Pulumi's values, dependencies and secretness, without
rebuilding the whole outputs mapping as Outputs for each read."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from infra.components.stack_reference import StackReference
from tests.unit.infra_mocks import _ensure_event_loop

# A cell's outputs with a large nested part, as a platform stack's subnet lists and settings are.
OUTPUTS = {"bucket": "b", "db_port": 5432, "password": "hunter2",
           "nested": {f"k{i}": {"list": [i, str(i), {"deep": i}]} for i in range(200)}}


class ReferenceMocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict]:
        return args.inputs["name"], {"name": args.inputs["name"], "outputs": OUTPUTS,
                                     "secretOutputNames": ["password"]}

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict, list]:
        raise NotImplementedError


def run(reads: Any) -> list[tuple[Any, bool]]:
    """Run a program that makes a reference and ``reads(ref)``: each read's (value, secret)."""
    _ensure_event_loop()
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(ReferenceMocks(), project="p", stack="s", preview=False)
    pulumi_settings.SETTINGS.outputs.clear()
    got: list[tuple[Any, bool]] = []

    async def body() -> None:
        for out in reads(StackReference("platform")):
            got.append((await out.future(), await out.is_secret()))

    _sync_await(run_pulumi_func(body))
    return got


def test_reads_give_pulumis_values_and_secretness():
    picked = run(lambda ref: [ref.require_output("bucket"), ref.get_output("db_port"), ref.get_output("absent"),
                              ref.require_output("password"), ref.require_output(pulumi.Output.from_input("bucket")),
                              pulumi.StackReference("platform2").require_output("password")])
    assert picked == [("b", False), (5432, False), (None, False), ("hunter2", True), ("b", False),
                      ("hunter2", True)]


def failure(reads: Any) -> BaseException:
    with pytest.raises(Exception) as caught:
        run(reads)
    return caught.value


def test_a_missing_required_output_fails_the_run_as_pulumis_own_does():
    """The same error, type and message, as Pulumi's ``require_output`` (a
    KeyError naming the output in this SDK): whatever a run or tenantctl
    reports of it does not depend on which class read the output."""
    ours = failure(lambda ref: [ref.require_output("absent")])
    pulumis = failure(lambda ref: [pulumi.StackReference("platform2").require_output("absent")])
    assert (type(ours), ours.args) == (type(pulumis), pulumis.args)
    assert "absent" in str(ours)


def test_a_read_does_not_copy_the_whole_outputs_mapping(monkeypatch):
    made = []
    from_data = pulumi.Output._from_data.__func__

    def counted(cls: type, data: Any) -> pulumi.Output:
        made.append(1)
        return from_data(cls, data)

    monkeypatch.setattr(pulumi.Output, "_from_data", classmethod(counted))
    run(lambda ref: [ref.require_output("bucket") for _ in range(5)])
    # Pulumi's own require_output rebuilds OUTPUTS as ~1,800 Outputs per read.
    assert len(made) < 100
