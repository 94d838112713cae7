"""LocalEngine machinery without a sandbox: state file, input comparison,
change classification, fault-injection parsing, the loopback refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from faults import Faults

from tenantctl.engines.base import Op
from tenantctl.engines.local.handlers import HANDLERS
from tenantctl.engines.local.handlers.base import Desired
from tenantctl.engines.local.passes import classify, unsupported_reason
from tenantctl.engines.local.state import ResourceState, StateFile, normalized
from tenantctl.errors import TargetUnavailable
from tenantctl.policy import UNKNOWN

QUEUE = "aws:sqs/queue:Queue"


def entry(urn: str, **inputs) -> ResourceState:
    return ResourceState(urn=urn, type=QUEUE, name=urn, id=f"id-{urn}", inputs=normalized(inputs))


def test_state_round_trips_atomically_and_keeps_creation_order(tmp_path: Path) -> None:
    file = StateFile(tmp_path, "acme")
    state = file.load()
    assert state.resources == [] and not file.exists()
    for urn in ("a", "b", "c"):
        state.put(entry(urn, n=1))
    state.put(entry("b", n=2))  # an update keeps its place
    file.save(state)
    loaded = file.load()
    assert [r.urn for r in loaded.resources] == ["a", "b", "c"]
    assert loaded.get("b").inputs == {"n": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["acme.json"]  # no temp file left behind
    loaded.remove("a")
    assert [r.urn for r in loaded.resources] == ["b", "c"]


def test_normalized_drops_the_pickled_provider_and_is_json_shaped() -> None:
    assert normalized({"__provider": "pickle", "kind": "x", "n": 5, "t": (1, 2)}) == {"kind": "x", "n": 5, "t": [1, 2]}


def test_classify_create_same_update_replace() -> None:
    handler = HANDLERS[QUEUE]
    assert classify(handler, None, {"name": "q"}) is Op.create
    prior = entry("q", name="q", delaySeconds=0)
    assert classify(handler, prior, normalized({"name": "q", "delaySeconds": 0})) is Op.same
    assert classify(handler, prior, normalized({"name": "q", "delaySeconds": 30})) is Op.update
    assert classify(handler, prior, normalized({"name": "q2", "delaySeconds": 0})) is Op.replace
    assert classify(handler, prior, {"name": "q", "delaySeconds": UNKNOWN}) is Op.update
    # An intent left by a crash is (re)created: the handler adopts what exists.
    assert classify(handler, prior.model_copy(update={"status": "creating"}), prior.inputs) is Op.create


def test_unsupported_types_and_dynamic_kinds_are_named() -> None:
    assert "aws:ec2/instance:Instance" in unsupported_reason("aws:ec2/instance:Instance", {})
    assert unsupported_reason(QUEUE, {}) is None
    assert "nope" in unsupported_reason("pulumi-python:dynamic:Resource", {"kind": "nope"})
    assert unsupported_reason("pulumi-python:dynamic:Resource", {"kind": "tenant-schema"}) is None


def test_autonames_are_deterministic_and_urn_tags_fit_aws_limits() -> None:
    d = Desired("urn:pulumi:s::p::aws:ec2/securityGroup:SecurityGroup::acme-app", "t", "acme-app", {})
    assert d.physical_name() == Desired(d.urn, "t", "acme-app", {}).physical_name() != "acme-app"
    assert Desired("u", "t", "n", {"name": "given"}).physical_name() == "given"
    long = Desired("urn:" + "x" * 300, "t", "n", {"tags": {"tenant": "acme"}})
    assert len(long.urn_tag) <= 256 and long.tags(with_urn=True)["tenant"] == "acme"


def test_fault_injection_is_off_unless_asked() -> None:
    assert Faults({}).after is None
    faults = Faults({"TENANTCTL_FAULT_AFTER": "3", "TENANTCTL_FAULT_POINT": "unrecorded"})
    assert (faults.after, faults.point) == (3, "unrecorded")
    with pytest.raises(ValueError):
        Faults({"TENANTCTL_FAULT_AFTER": "1", "TENANTCTL_FAULT_POINT": "sometimes"})


@pytest.mark.parametrize(("aws_url", "pg_host"), [("https://kms.us-east-1.amazonaws.com", "127.0.0.1"),
                                                  ("http://127.0.0.1:5000", "db.example.com"),
                                                  ("http://10.1.2.3:5000", "127.0.0.1")])
def test_the_engine_refuses_any_endpoint_that_is_not_loopback(tmp_path: Path, aws_url: str, pg_host: str) -> None:
    from tenantctl.engines.local import LocalEngine
    from tenantctl.sandbox.endpoints import SandboxEndpoints

    endpoints = SandboxEndpoints(aws_endpoint_url=aws_url, pg_host=pg_host, pg_port=5432, pg_password="x",
                                 pg_bin_dir=tmp_path, state_dir=tmp_path)
    with pytest.raises(TargetUnavailable, match="refusing"):
        LocalEngine(tmp_path, endpoints)


def test_stack_config_comes_from_the_projects_stack_config_dir(tmp_path: Path) -> None:
    from tenantctl.engines.local import LocalEngine
    from tenantctl.sandbox.endpoints import SandboxEndpoints

    (tmp_path / "Pulumi.yaml").write_text("name: tenantctl\nstackConfigDir: stacks\n")
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "Pulumi.acme.yaml").write_text(
        "config:\n  aws:region: eu-west-1\n  tenantctl:tenant:\n    id: acme\n  plain: 3\n")
    endpoints = SandboxEndpoints(aws_endpoint_url="http://127.0.0.1:1", pg_port=1, pg_password="x",
                                 pg_bin_dir=tmp_path, state_dir=tmp_path)
    project, config = LocalEngine(tmp_path, endpoints)._config("acme")
    assert project == "tenantctl"
    assert config == {"aws:region": "eu-west-1", "tenantctl:tenant": {"id": "acme"}, "tenantctl:plain": 3}


def test_concurrent_refreshes_share_the_sandbox_environment_until_the_last_leaves(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    """Refreshes run in threads and each points the providers' clients at the
    sandbox: the first to leave must not take the setting from the others. The
    last puts back what the process had, and removes nothing: another thread's
    botocore may be between asking whether a variable is set and reading it."""
    import os

    from tenantctl.engines.local import LocalEngine
    from tenantctl.sandbox.endpoints import SandboxEndpoints

    endpoints = SandboxEndpoints(aws_endpoint_url="http://127.0.0.1:1", pg_port=1, pg_password="x",
                                 pg_bin_dir=tmp_path, state_dir=tmp_path)
    for name in [*endpoints.aws_env(), "AWS_RETRY_MODE"]:  # absent, and so again after this test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "7")
    first, second = LocalEngine(tmp_path, endpoints)._aws_env(), LocalEngine(tmp_path, endpoints)._aws_env()
    first.__enter__()
    second.__enter__()
    assert os.environ["AWS_MAX_ATTEMPTS"] != "7"
    first.__exit__(None, None, None)
    assert os.environ.get("AWS_ENDPOINT_URL") == "http://127.0.0.1:1"  # the second is still reading
    second.__exit__(None, None, None)
    assert os.environ["AWS_MAX_ATTEMPTS"] == "7"  # put back as it was found
    # Not removed: what the process did not have stays as the sandbox set it.
    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1" and "AWS_RETRY_MODE" in os.environ


def test_every_ec2_handler_can_read_its_resource_back():
    """A refresh reads every resource of a stack: an EC2 handler without its
    describe call fails the whole refresh (a dedicated tenant's default group)."""
    from tenantctl.engines.local.handlers import HANDLERS
    from tenantctl.engines.local.handlers.ec2 import TaggedEc2Handler

    ec2 = [h for h in HANDLERS.values() if isinstance(h, TaggedEc2Handler)]
    assert any(h.type == "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup" for h in ec2)
    for handler in ec2:
        for attribute in ("describe", "result_key", "id_key"):
            assert getattr(handler, attribute, None), (handler.type, attribute)


def test_every_handler_can_tell_its_resource_exists():
    """The default read knows a resource by ``find``: a handler with neither
    reads every resource of its type as deleted out of band, and every
    re-provision (a refresh) would create it again."""
    from tenantctl.engines.local.handlers import HANDLERS
    from tenantctl.engines.local.handlers.base import Handler

    blind = [t for t, h in HANDLERS.items() if type(h).find is Handler.find and type(h).read is Handler.read]
    assert blind == []


def test_a_program_run_registers_without_walking_the_stack_and_puts_the_walk_back(monkeypatch) -> None:
    import threading
    import traceback

    import pulumi
    from pulumi.runtime import resource as pulumi_resource

    from tenantctl.engines.local import runtime

    walks = []
    real_walk = traceback.extract_stack
    monkeypatch.setattr(traceback, "extract_stack", lambda *a, **k: walks.append(1) or real_walk(*a, **k))
    before = pulumi_resource._get_stack_trace
    seen: list[tuple[str, str]] = []

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args):
            seen.append((current.urn, args.inputs["size"]))
            return f"{args.name}-id", {**args.inputs, "arn": f"arn:test:{args.name}"}

        def call(self, args):
            return {}, []

    def program(stack: str) -> dict:
        first = pulumi.CustomResource("test:index:Thing", "first", {"size": 1, "arn": None})
        second = pulumi.CustomResource("test:index:Thing", "second", {"size": first.arn.apply(lambda a: a[-5:]),
                                                                     "arn": None})
        return {"arn": second.arn}

    current = threading.local()
    outputs = runtime.run_program(program, "proj", "dev", {}, Mocks(), current, preview=False)
    assert outputs == {"arn": "arn:test:second"}
    assert seen == [("urn:pulumi:dev::proj::pulumi:pulumi:Stack$test:index:Thing::first", 1),
                    ("urn:pulumi:dev::proj::pulumi:pulumi:Stack$test:index:Thing::second", "first")]
    assert walks == []  # no registration walked the Python stack (nothing under mocks reads where it was declared)
    assert pulumi_resource._get_stack_trace is before  # and Pulumi's own walk is back after the run


@pytest.mark.parametrize("enabled", [True, False])
def test_a_program_run_pauses_the_cyclic_collector_and_restores_it(enabled: bool) -> None:
    import gc
    import threading

    import pulumi

    from tenantctl.engines.local import runtime

    during: list[bool] = []

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args):
            during.append(gc.isenabled())
            return f"{args.name}-id", dict(args.inputs)

        def call(self, args):
            return {}, []

    def program(stack: str) -> dict:
        pulumi.CustomResource("test:index:Thing", "one", {"size": 1})
        return {}

    def failing(stack: str) -> dict:
        raise RuntimeError("the program failed")

    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        runtime.run_program(program, "proj", "dev", {}, Mocks(), threading.local(), preview=False)
        assert during == [False]  # a full collection cannot start inside a run
        assert gc.isenabled() is enabled  # the caller's setting is back: on if it was on, off if it was off
        with pytest.raises(Exception, match="the program failed"):
            runtime.run_program(failing, "proj", "dev", {}, Mocks(), threading.local(), preview=False)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_the_cli_freezes_what_is_alive_once_at_exit_and_only_then() -> None:
    import subprocess
    import sys

    # The check is registered first, so it runs after the freeze (atexit runs last-registered first).
    script = ("import atexit, gc\n"
              "atexit.register(lambda: print('at exit', gc.get_freeze_count() > 0, atexit._ncallbacks()))\n"
              "from tenantctl import collector\n"
              "collector.one_command(); collector.one_command()\n"
              "print('before exit', gc.get_freeze_count())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    # Nothing frozen while the command runs; frozen at exit, by one handler (beside the check's) however often asked.
    assert done.stdout.split("\n")[:2] == ["before exit 0", "at exit True 2"]


def test_a_lasting_pause_freezes_in_one_commands_process_unless_another_pause_is_open() -> None:
    import subprocess
    import sys

    # In a process of its own: a freeze lasts for the process.
    script = ("import gc\n"
              "from tenantctl import collector\n"
              "with collector.paused(lasting=True):\n"
              "    made = [[] for _ in range(1000)]\n"
              "print(gc.get_freeze_count())\n"  # a long-lived process (not one command): never frozen
              "collector.one_command()\n"
              "with collector.paused():\n"
              "    with collector.paused(lasting=True):\n"
              "        made = [[] for _ in range(1000)]\n"
              "print(gc.get_freeze_count(), gc.isenabled())\n"  # inside a run's pause: nothing frozen
              "with collector.paused(lasting=True):\n"
              "    made = [[] for _ in range(1000)]\n"
              "print(gc.get_freeze_count() >= 1000, gc.isenabled())\n"
              "gc.disable()\n"
              "with collector.paused(lasting=True):\n"
              "    pass\n"
              "print(gc.isenabled())\n")  # the caller's setting is still what comes back
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:4] == ["0", "0 True", "True True", "False"]
