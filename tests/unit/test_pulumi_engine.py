"""PulumiEngine up to the CLI boundary: stack naming, what is handed to the
Automation API, event translation and error mapping (with pulumi.automation's
own event and exception classes), the missing-CLI message, and Ctrl-C; then
the engine driving the real Automation API SDK against a stand-in CLI binary
(pulumi_cli_double) that replays the CLI's event sequences."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from infra_mocks import platform_outputs
from pulumi.automation import (
    CommandError,
    CommandResult,
    ConcurrentUpdateError,
    StackAlreadyExistsError,
    StackNotFoundError,
)
from pulumi.automation import events as ev
from pulumi.automation.errors import create_command_error
from pulumi_cli_double import (
    FakeCli,
    numbered,
    planned,
    policy_violation,
    preview_stream,
    refresh_stream,
    refreshed,
    replacement,
    stack_step,
    state,
    summary,
    urn,
)
from pulumi_cli_double import pre as pre_json
from pulumi_cli_double import step as step_json

from tenantctl.confirmation import Confirmation
from tenantctl.crossguard import pack_dir
from tenantctl.engines.base import EngineEvent, Op, PropertyDiff
from tenantctl.engines.pulumi import cli as pulumi_cli
from tenantctl.engines.pulumi.engine import (
    PulumiEngine,
    backend_kind,
    effective_config,
    op_options,
    policy_options,
    stack_name,
)
from tenantctl.engines.pulumi.errors import MISSING_CLI, first_line, map_error
from tenantctl.engines.pulumi.events import SECRET_SIG, UNKNOWN, ChangeCollector, translate
from tenantctl.errors import ApplyFailed, Conflict, InvalidInput, NotConfirmed, NotFound, TargetUnavailable
from tenantctl.models import TenantSpec
from tenantctl.policy import PolicyGate, PolicyRefused, waived
from tenantctl.stackconfig import write_tenant
from tenantctl.target import Target

STACK_FILE = """\
# Desired state of tenant acme (pooled).
config:
  aws:region: eu-west-1
  tenantctl:platformStack: platform
  tenantctl:tenant:
    id: acme
    tier: pooled
    region: eu-west-1
encryptionsalt: v1:abc:def
"""


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "Pulumi.yaml").write_text(
        "name: tenantctl\nruntime:\n  name: python\nmain: infra/\nstackConfigDir: stacks\n")
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "Pulumi.acme.yaml").write_text(STACK_FILE)
    return tmp_path


def aws(**fields) -> Target:
    return Target.model_validate({"kind": "aws", "aws": fields})


# -- stack naming ---------------------------------------------------------------

@pytest.mark.parametrize("url, org, expected", [
    (None, "acme-corp", "acme-corp/tenantctl/t1"),
    ("https://api.pulumi.com", "acme-corp", "acme-corp/tenantctl/t1"),
    (None, None, "t1"),
    ("file:///var/state", "acme-corp", "t1"),
    ("s3://team-state/tenantctl", "acme-corp", "t1"),
    ("s3://team-state", None, "t1"),
])
def test_stack_names_are_qualified_only_on_pulumi_cloud_with_an_org(url, org, expected) -> None:
    assert stack_name("t1", "tenantctl", url, org) == expected


def test_backend_kinds_and_a_bad_url() -> None:
    urls = (None, "https://pulumi.example.com", "file://~", "s3://b", "gs://b", "azblob://c")
    assert [backend_kind(u) for u in urls] == ["cloud", "cloud", "file", "s3", "gs", "azblob"]
    with pytest.raises(InvalidInput, match="ftp://x"):
        backend_kind("ftp://x")


def test_engine_uses_the_project_name_from_pulumi_yaml(project: Path) -> None:
    (project / "Pulumi.yaml").write_text("name: saas-infra\nmain: infra/\nstackConfigDir: stacks\n")
    engine = PulumiEngine(aws(org="acme"), project)
    assert engine.qualified("platform") == "acme/saas-infra/platform"
    assert engine.project.stacks_dir == project / "stacks"


def test_engine_refuses_a_malformed_backend_before_running_anything(project: Path) -> None:
    with pytest.raises(InvalidInput, match="backend URL"):
        PulumiEngine(aws(backend_url="postgres://db"), project)


# -- what is handed to LocalWorkspace and to each operation ----------------------------

def test_workspace_options_map_the_target(project: Path) -> None:
    target = aws(region="eu-west-1", profile="ops", backend_url="s3://state", secrets_provider="awskms://alias/t")
    options = PulumiEngine(target, project).options
    assert options.work_dir == str(project)
    assert options.secrets_provider == "awskms://alias/t"
    env = options.env_vars
    assert env["PULUMI_BACKEND_URL"] == "s3://state"
    assert (env["AWS_PROFILE"], env["AWS_REGION"], env["AWS_DEFAULT_REGION"]) == ("ops", "eu-west-1", "eu-west-1")
    assert env["PULUMI_PYTHON_CMD"] == sys.executable  # the program runs with tenantctl's interpreter


def test_workspace_never_gets_project_or_stack_settings(project: Path) -> None:
    # The SDK would rewrite Pulumi.yaml (dropping stackConfigDir) and write stack
    # files into the work dir instead of stacks/.
    options = PulumiEngine(aws(), project).options.model_dump()
    assert set(options) == {"work_dir", "env_vars", "secrets_provider"}
    assert options["secrets_provider"] is None and "PULUMI_BACKEND_URL" not in options["env_vars"]


def test_operation_options() -> None:
    collector = ChangeCollector("t1")
    assert op_options(collector) == {"on_event": collector, "color": "never", "suppress_progress": True}
    both = op_options(collector, refresh=True, config_file="/tmp/Pulumi.t1.yaml")
    assert (both["refresh"], both["config_file"]) == (True, "/tmp/Pulumi.t1.yaml")


# -- the platform reference, qualified for the backend ------------------------------------

def test_platform_reference_is_qualified_for_pulumi_cloud(project: Path) -> None:
    path = project / "stacks" / "Pulumi.acme.yaml"
    data = effective_config(path, "acme-corp/tenantctl/platform")
    assert data["config"]["tenantctl:platformStack"] == "acme-corp/tenantctl/platform"
    original = yaml.safe_load(STACK_FILE)
    assert data["config"]["tenantctl:tenant"] == original["config"]["tenantctl:tenant"]
    assert data["encryptionsalt"] == "v1:abc:def"  # the secrets state travels with the config
    assert path.read_text() == STACK_FILE  # the committed file is untouched


def test_platform_reference_is_left_alone_when_already_right(project: Path) -> None:
    path = project / "stacks" / "Pulumi.acme.yaml"
    assert effective_config(path, "platform") is None
    path.write_text(STACK_FILE.replace("platformStack: platform", "platformStack: other/tenantctl/platform"))
    assert effective_config(path, "acme-corp/tenantctl/platform") is None
    assert effective_config(project / "stacks" / "Pulumi.missing.yaml", "acme-corp/tenantctl/platform") is None


def test_engine_hands_pulumi_a_scratch_config_file(project: Path) -> None:
    cloud = PulumiEngine(aws(org="acme-corp"), project)
    with cloud._scratch("acme", copy_config=False) as (_, path):
        assert path is not None and Path(path).name == "Pulumi.acme.yaml"
        qualified = yaml.safe_load(Path(path).read_text())["config"]["tenantctl:platformStack"]
        assert qualified == "acme-corp/tenantctl/platform"
    assert not Path(path).exists()
    diy = PulumiEngine(aws(org="acme-corp", backend_url="s3://state"), project)
    with diy._scratch("acme", copy_config=False) as (_, path):
        assert path is None  # an up reads (and may write) the committed file
    with diy._scratch("acme", copy_config=True) as (_, path):
        assert Path(path).read_text() == STACK_FILE and Path(path).parent != project / "stacks"


# -- events -------------------------------------------------------------------------------

URN = "urn:pulumi:acme::tenantctl::tenantctl:tenant:Tenant$aws:kms/key:Key::acme-key"


def step(op: ev.OpType, urn: str = URN, type_: str = "aws:kms/key:Key", diffs=None) -> ev.StepEventMetadata:
    return ev.StepEventMetadata(op=op, urn=urn, type=type_, provider="", diffs=diffs)


def pre(op: ev.OpType, **kw) -> ev.EngineEvent:
    return ev.EngineEvent(sequence=1, timestamp=0, resource_pre_event=ev.ResourcePreEvent(step(op, **kw)))


def done(op: ev.OpType, **kw) -> ev.EngineEvent:
    return ev.EngineEvent(sequence=2, timestamp=0, res_outputs_event=ev.ResOutputsEvent(step(op, **kw)))


def test_resource_events_become_pre_and_done() -> None:
    assert translate("acme", pre(ev.OpType.CREATE)) == EngineEvent(
        stack="acme", kind="resource-pre", op=Op.create, type="aws:kms/key:Key", name="acme-key")
    finished = translate("acme", done(ev.OpType.UPDATE))
    assert (finished.kind, finished.op, finished.name) == ("resource-done", Op.update, "acme-key")


def test_events_parsed_from_the_engine_log_json() -> None:
    raw = {"sequence": 3, "timestamp": 1, "resourcePreEvent": {"metadata": {
        "op": "create-replacement", "urn": URN, "type": "aws:kms/key:Key", "provider": ""}, "planning": True}}
    assert translate("acme", ev.EngineEvent.from_json(raw)).op is Op.replace


def test_bookkeeping_resources_and_chatter_are_dropped() -> None:
    stack_urn = "urn:pulumi:acme::tenantctl::pulumi:pulumi:Stack::tenantctl-acme"
    provider_urn = "urn:pulumi:acme::tenantctl::pulumi:providers:aws::default_7_0_0"
    assert translate("acme", pre(ev.OpType.SAME, urn=stack_urn, type_="pulumi:pulumi:Stack")) is None
    assert translate("acme", pre(ev.OpType.CREATE, urn=provider_urn, type_="pulumi:providers:aws")) is None
    prelude = ev.EngineEvent(sequence=0, timestamp=0, prelude_event=ev.PreludeEvent(config={}))
    assert translate("acme", prelude) is None
    debug = ev.EngineEvent(sequence=0, timestamp=0, diagnostic_event=ev.DiagnosticEvent("x", "never", "debug"))
    assert translate("acme", debug) is None


def test_diagnostics_keep_their_severity_and_lose_colour_codes() -> None:
    diag = ev.DiagnosticEvent(message="<{%fg 1%}>creating KMS key: AccessDeniedException<{%reset%}>\n",
                              color="raw", severity="error", urn=URN)
    event = translate("acme", ev.EngineEvent(sequence=5, timestamp=0, diagnostic_event=diag))
    assert (event.kind, event.name, event.message) == (
        "diagnostic", "acme-key", "error: creating KMS key: AccessDeniedException")
    info = ev.DiagnosticEvent(message="hello from the program", color="never", severity="info#err")
    assert translate("acme", ev.EngineEvent(sequence=6, timestamp=0, diagnostic_event=info)).message \
        == "hello from the program"


def test_summary_event() -> None:
    summary = ev.SummaryEvent(maybe_corrupt=False, duration_seconds=3,
                              resource_changes={"create": 2, "same": 1}, policy_packs={})
    event = translate("acme", ev.EngineEvent(sequence=9, timestamp=0, summary_event=summary))
    assert (event.kind, event.message) == ("summary", "create 2, same 1")


def test_collector_builds_the_changeset_and_forwards_events() -> None:
    seen: list[EngineEvent] = []
    collector = ChangeCollector("acme", seen.append)
    queue_urn = URN.replace("kms/key:Key::acme-key", "sqs/queue:Queue::acme-jobs")
    bucket_urn = URN.replace("kms/key:Key::acme-key", "s3/bucketV2:BucketV2::acme-b")
    for event in (
        pre(ev.OpType.CREATE_REPLACEMENT), pre(ev.OpType.REPLACE), pre(ev.OpType.DELETE_REPLACED),
        pre(ev.OpType.CREATE, urn=queue_urn, type_="aws:sqs/queue:Queue"),
        pre(ev.OpType.SAME, urn=bucket_urn, type_="aws:s3/bucketV2:BucketV2"),
        done(ev.OpType.CREATE, urn=queue_urn, type_="aws:sqs/queue:Queue"),
        pre(ev.OpType.SAME, urn="urn:pulumi:acme::tenantctl::pulumi:pulumi:Stack::s", type_="pulumi:pulumi:Stack"),
    ):
        collector(event)
    changes = collector.changeset()
    assert changes.stack == "acme"
    assert changes.summary() == {"create": 1, "same": 1, "replace": 1}
    assert changes.has_changes
    assert [e.kind for e in seen] == ["resource-pre"] * 5 + ["resource-done"]


def test_a_planned_delete_keeps_the_provider_id_of_the_state_it_deletes() -> None:
    """A preview's delete step carries the deleted resource's state as ``old`` (the engine's
    makeStepEventStateMetadata fills its ID): an alarm subscription the plan deletes is told from
    an out-of-band one by that id (``inventory.unmanaged_access``'s ``held``), not listed twice."""
    sub = URN.replace("kms/key:Key::acme-key", "sns/topicSubscription:TopicSubscription::acme-alarms-sqs-0")
    arn = "arn:aws:sns:eu-west-1:123456789012:tenant-acme-alarms:0f1e2d3c"
    old = {"type": "aws:sns/topicSubscription:TopicSubscription", "urn": sub, "id": arn, "parent": "",
           "provider": "", "custom": True, "inputs": {}, "outputs": {"arn": arn}}
    raw = {"sequence": 4, "timestamp": 1, "resourcePreEvent": {"planning": True, "metadata": {
        "op": "delete", "urn": sub, "type": old["type"], "provider": "", "old": old}}}
    collector = ChangeCollector("acme")
    collector(ev.EngineEvent.from_json(raw))
    [change] = collector.changeset().changes
    assert (change.op, change.id, change.name) == (Op.delete, arn, "acme-alarms-sqs-0")


def test_refresh_drift_counts_as_an_update() -> None:
    collector = ChangeCollector("acme")
    collector(pre(ev.OpType.REFRESH))
    collector(done(ev.OpType.REFRESH, diffs=["tags"]))
    other = URN.replace("acme-key", "acme-alias")
    collector(pre(ev.OpType.REFRESH, urn=other))
    collector(done(ev.OpType.REFRESH, urn=other, diffs=[]))
    assert collector.changeset().summary() == {"update": 1, "same": 1}


def test_collector_is_safe_across_threads() -> None:
    collector = ChangeCollector("acme")
    urns = [URN.replace("acme-key", f"k{i}") for i in range(200)]
    workers = [threading.Thread(target=lambda part=urns[i::4]: [collector(pre(ev.OpType.CREATE, urn=u)) for u in part])
               for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert collector.changeset().count(Op.create) == 200


# -- errors ---------------------------------------------------------------------------------

def result(stderr: str = "", stdout: str = "", code: int = 255) -> CommandResult:
    return CommandResult(stdout=stdout, stderr=stderr, code=code)


def test_cli_failures_map_to_tenantctl_errors_with_one_line() -> None:
    failed = create_command_error(result(
        stdout="Updating (acme):\n  aws:kms:Key acme-key creating failed error: AccessDeniedException\n"
               "    error: creating KMS Key: operation error KMS: CreateKey, AccessDeniedException: not authorized\n"
               "error: update failed\n",
        stderr="error: update failed"))
    assert type(failed) is CommandError
    mapped = map_error(failed, "up", "acme", "s3://state")
    assert isinstance(mapped, ApplyFailed) and mapped.exit_code == 4
    assert str(mapped) == ("up acme failed: creating KMS Key: operation error KMS: CreateKey, "
                           "AccessDeniedException: not authorized")
    assert "\n" not in str(mapped)


@pytest.mark.parametrize("action, stderr, sdk_class, ours, needle", [
    ("select", "error: no stack named 'acme' found", StackNotFoundError, NotFound, "not found on s3://state"),
    ("create", "error: stack 'acme' already exists", StackAlreadyExistsError, Conflict, "already exists"),
    ("up", "error: [409] Conflict: Another update is currently in progress.", ConcurrentUpdateError, Conflict,
     "pulumi cancel --stack acme"),
    ("up", "error: the stack is currently locked by 1 lock(s)", ConcurrentUpdateError, Conflict, "locked"),
])
def test_sdk_error_classes_map(action, stderr, sdk_class, ours, needle) -> None:
    sdk_error = create_command_error(result(stderr=stderr))
    assert type(sdk_error) is sdk_class
    mapped = map_error(sdk_error, action, "acme", "s3://state")
    assert type(mapped) is ours and needle in str(mapped) and "\n" not in str(mapped)


@pytest.mark.parametrize("action, stderr", [
    # The program's StackReference names a stack that is missing: not this stack.
    ("up", "error: preview failed: Failed to read stack reference: no stack named 'platform' found"),
    ("destroy", "error: no stack named 'acme' found"),  # a stack command it is not
    ("select", "error: no stack named 'acme-corp' found"),  # another stack, whose name contains ours
    # A provider error that mentions a CloudFormation stack.
    ("up", "error: creating CloudFormation StackSet (acme-x): NameAlreadyExists: stack set acme-x already exists"),
    ("create", "error: creating CloudFormation Stack (acme-x): the stack acme-x already exists"),
])
def test_the_sdks_stack_errors_count_only_from_stack_commands_naming_this_stack(action, stderr) -> None:
    """The SDK picks the class by regex over the stderr of any command
    (pulumi/automation/errors.py ``create_command_error``)."""
    sdk_error = create_command_error(result(stderr=stderr))
    assert type(sdk_error) in (StackNotFoundError, StackAlreadyExistsError)
    mapped = map_error(sdk_error, action, "acme", "s3://state")
    assert type(mapped) is ApplyFailed and mapped.exit_code == 4


def test_missing_or_wrong_passphrase_and_missing_cli_are_target_problems() -> None:
    err = CommandError(result(stderr="error: getting secrets manager: passphrase must be set with "
                                     "PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE environment variables"))
    mapped = map_error(err, "preview", "acme", "file:///s")
    assert isinstance(mapped, TargetUnavailable) and "TENANTCTL_SECRETS_PROVIDER" in str(mapped)
    # A wrong one: as the CLI reports it (pkg/secrets/passphrase: ErrIncorrectPassphrase, and the
    # locked secrets manager it falls back to when a command then decrypts a value).
    for stderr in ('error: constructing secrets manager of type "passphrase": incorrect passphrase',
                   "error: failed to decrypt: incorrect passphrase, please set PULUMI_CONFIG_PASSPHRASE to the "
                   "correct passphrase or set PULUMI_CONFIG_PASSPHRASE_FILE to a file containing the passphrase"):
        wrong = map_error(CommandError(result(stderr=stderr)), "up", "acme", "file:///s")
        assert isinstance(wrong, TargetUnavailable) and wrong.exit_code == 7
        assert "does not unlock the stack's secrets" in str(wrong)
    missing = map_error(FileNotFoundError(2, "No such file or directory", "pulumi"), "up", "acme", "x")
    assert isinstance(missing, TargetUnavailable) and str(missing) == MISSING_CLI and missing.exit_code == 7


def test_not_logged_in_to_the_backend_is_a_target_problem(project: Path, cli: FakeCli) -> None:
    """The SDK runs every command --non-interactive, so without `pulumi login`
    or a token the CLI's first backend command fails with this (exit 7, as
    documented, not 4: nothing was previewed or applied)."""
    cli.update(backend_error="PULUMI_ACCESS_TOKEN must be set for login during non-interactive CLI sessions")
    engine = engine_on(project, cli)
    for call in (lambda: engine.preview("acme"), lambda: engine.up("acme"), lambda: engine.refresh("acme"),
                 lambda: engine.outputs("platform"), lambda: engine.destroy("acme")):
        with pytest.raises(TargetUnavailable, match="PULUMI_ACCESS_TOKEN must be set") as err:
            call()
        assert err.value.exit_code == 7 and "\n" not in str(err.value)
    assert cli.ran("preview") == cli.ran("up") == cli.ran("stack", "init") == []


def test_missing_aws_credentials_are_a_target_problem(project: Path, cli: FakeCli) -> None:
    """pulumi-aws refuses to configure its provider without credentials
    (pulumi/pulumi-aws#3310, #4076): the preview fails on the provider's
    diagnostic, exit 7 as documented."""
    cli.script("preview", {
        "stdout": "Previewing update (acme):\n\nDiagnostics:\n  pulumi:providers:aws (default_7_51_1):\n"
                  "    error: pulumi:providers:aws resource 'default_7_51_1' has a problem: No valid credential "
                  "sources found.\n    Please see https://www.pulumi.com/registry/packages/aws/installation-"
                  "configuration/ for more information about providing credentials.\n",
        "stderr": "error: preview failed\n", "code": 255})
    with pytest.raises(TargetUnavailable, match="No valid credential sources found") as err:
        engine_on(project, cli).preview("acme")
    assert err.value.exit_code == 7


@pytest.mark.parametrize("stderr", [
    # The S3 backend's AWS SDK (aws-sdk-go-v2) with no usable credentials.
    "error: failed to load checkpoint: blob (code=Unknown): operation error S3: GetObject, get identity: get "
    "credentials: failed to refresh cached credentials, no EC2 IMDS role found",
    "error: pulumi:providers:aws resource 'default_7_51_1' has a problem: Invalid credentials configured.",
])
def test_other_credential_failures_are_target_problems(stderr: str) -> None:
    mapped = map_error(create_command_error(result(stderr=stderr)), "select", "acme", "s3://state")
    assert isinstance(mapped, TargetUnavailable) and mapped.exit_code == 7


def test_first_line_falls_back_to_the_last_stderr_line() -> None:
    assert first_line(CommandError(result(stderr="warning: a\nsomething odd happened\n"))) == "something odd happened"


# -- the CLI itself ------------------------------------------------------------------------------

@pytest.fixture()
def no_cli(monkeypatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_missing_cli_gives_one_clear_message(project: Path, no_cli) -> None:
    engine = PulumiEngine(aws(backend_url="file:///tmp/state"), project)  # constructing needs no CLI
    for call in (lambda: engine.preview("acme"), lambda: engine.up("acme"), lambda: engine.outputs("platform")):
        with pytest.raises(TargetUnavailable) as err:
            call()
        assert str(err.value) == "Pulumi CLI not found: run `tenantctl setup pulumi` or install it"


def test_cli_is_found_where_setup_installs_it(tmp_path: Path, no_cli) -> None:
    binary = pulumi_cli.default_root() / "bin" / "pulumi"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    assert pulumi_cli.locate() == pulumi_cli.default_root()
    with pytest.raises(TargetUnavailable, match="nothing at"):
        pulumi_cli.locate(tmp_path / "elsewhere")


def test_setup_refuses_a_bad_version() -> None:
    with pytest.raises(InvalidInput, match="not a version"):
        pulumi_cli.install("latest-ish")


def test_setup_without_network_says_so(tmp_path: Path, monkeypatch) -> None:
    import urllib.error

    from pulumi.automation import _cmd

    def offline(url: str, path: str) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(_cmd, "_download_to_file", offline)
    with pytest.raises(TargetUnavailable) as err:
        pulumi_cli.install("3.150.0", tmp_path / "pulumi")
    assert "could not install the Pulumi CLI 3.150.0" in str(err.value)
    assert "Name or service not known" in str(err.value) and "\n" not in str(err.value)


# -- Ctrl-C ---------------------------------------------------------------------------------------

def test_run_cancellable_returns_and_raises_like_the_operation() -> None:
    assert pulumi_cli.run_cancellable(lambda: 42, cancel=lambda: None) == 42

    def fails() -> None:
        raise StackNotFoundError(result(stderr="error: no stack named 'acme' found"))

    with pytest.raises(StackNotFoundError):
        pulumi_cli.run_cancellable(fails, cancel=lambda: None)


def _ctrl_c_during(stops_on_sigint: bool, grace: float) -> list[str]:
    """Press Ctrl-C while an operation runs whose CLI stops on that SIGINT, or
    keeps going until it is cancelled: what happens is decided by events, never
    by which thread the machine runs first."""
    order: list[str] = []
    started, release = threading.Event(), threading.Event()

    def operation() -> None:
        order.append("started")
        started.set()
        release.wait(60)  # the CLI winding down: after its own SIGINT, or once cancelled
        order.append("cli stopped")

    def cancel() -> None:
        order.append("cancel")
        release.set()

    def press_ctrl_c() -> None:
        started.wait(60)
        os.kill(os.getpid(), signal.SIGINT)  # what the terminal sends on Ctrl-C
        if stops_on_sigint:
            time.sleep(0.3)  # the CLI's own graceful stop
            release.set()

    # A process started in the background by a non-interactive shell inherits
    # SIGINT ignored: Python's own handler is what a terminal's Ctrl-C reaches.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=press_ctrl_c, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            pulumi_cli.run_cancellable(operation, cancel, grace=grace)
    finally:
        release.set()
        signal.signal(signal.SIGINT, previous)
    return order


def test_ctrl_c_does_not_cancel_an_update_the_cli_stopped() -> None:
    """`pulumi cancel` on a file or S3 backend deletes every lock file of the
    stack, another runner's live lock included: never once ours is over. (The
    grace is a deadline: the run waits only until the CLI stopped.)"""
    assert _ctrl_c_during(stops_on_sigint=True, grace=60) == ["started", "cli stopped"]


def test_ctrl_c_cancels_an_update_still_running_after_the_grace() -> None:
    order = _ctrl_c_during(stops_on_sigint=False, grace=0.5)
    assert order[:2] == ["started", "cancel"]


# -- at the CLI boundary: the real SDK driving a stand-in CLI binary ----------------------------------

QUEUE, KEY, ROLE = "aws:sqs/queue:Queue", "aws:kms/key:Key", "aws:iam/role:Role"


@pytest.fixture()
def cli(tmp_path: Path, monkeypatch) -> FakeCli:
    return FakeCli(tmp_path, monkeypatch, stacks=("acme", "platform"))


def engine_on(project: Path, cli: FakeCli, gate=None) -> PulumiEngine:
    return PulumiEngine(aws(backend_url="file:///tmp/state", pulumi_root=str(cli.root)), project, gate=gate)


def with_the_infra_program(project: Path) -> None:
    """Pulumi.yaml's `main` at the infra/ program, as a new project's is (its absolute path)."""
    infra = Path(__file__).resolve().parents[2] / "infra"
    (project / "Pulumi.yaml").write_text(f"name: tenantctl\nruntime:\n  name: python\nmain: {infra}\n"
                                         "stackConfigDir: stacks\n")


def queue_step(op: str = "create", **inputs) -> list:
    return planned("acme", QUEUE, "acme-jobs", {"name": "tenantctl-acme-jobs", **inputs}, op=op)


def test_a_preview_selects_the_stack_and_never_writes_the_committed_file(project: Path, cli: FakeCli) -> None:
    """The CLI sets `encryptedkey` again in the stack file it reads: a preview
    hands it a scratch copy, and never runs `stack init`."""
    cli.script("preview", {"events": preview_stream("acme", [queue_step()]), "touch_config": "v1:set-again"})
    assert engine_on(project, cli).preview("acme").summary() == {"create": 1}
    assert cli.ran("stack", "init") == []
    [preview] = cli.ran("preview")
    assert Path(preview[preview.index("--config-file") + 1]).parent != project / "stacks"
    assert (project / "stacks" / "Pulumi.acme.yaml").read_text() == STACK_FILE


def test_a_missing_stack_previews_as_all_create_without_creating_it(project: Path, cli: FakeCli, monkeypatch) -> None:
    """A pull request's preview of a tenant not merged yet: the program runs
    in-process (provider functions answered by AWS: moto here, the platform's
    outputs read from the backend); no `stack init`, no file written."""
    from moto import mock_aws

    with_the_infra_program(project)
    write_tenant(project / "stacks", TenantSpec.model_validate({"id": "globex", "tier": "dedicated"}))
    committed = (project / "stacks" / "Pulumi.globex.yaml").read_text()
    cli.outputs("platform", platform_outputs())
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    seen: list[EngineEvent] = []
    with mock_aws():
        changes = engine_on(project, cli, gate=PolicyGate(project)).preview("globex", seen.append)
    assert {c.op for c in changes.changes} == {Op.create}
    assert {"aws:rds/instance:Instance", QUEUE, "aws:iam/rolePolicy:RolePolicy"} <= {c.type for c in changes.changes}
    assert cli.ran("stack", "init") == [] and cli.ran("preview") == [] and "globex" not in cli.stacks
    assert (project / "stacks" / "Pulumi.globex.yaml").read_text() == committed
    # What only the up can know (the key ARN the queue and the database use...) is left to the pack, and said so.
    [note] = [e.message for e in seen if "CrossGuard pack" in e.message]
    assert "queue-encryption" in note and "rds-encryption" in note and "iam-scope" in note


def test_up_of_a_new_stack_is_judged_before_the_stack_is_created(project: Path, cli: FakeCli) -> None:
    with_the_infra_program(project)
    write_tenant(project / "stacks", TenantSpec.model_validate({"id": "newco", "backup": {"retention_days": 2}}))
    cli.outputs("platform", platform_outputs())
    with pytest.raises(PolicyRefused, match="backup-retention"):
        engine_on(project, cli, gate=PolicyGate(project)).up("newco")
    assert cli.ran("stack", "init") == [] and "newco" not in cli.stacks  # a refusal leaves no empty stack


def test_up_of_a_new_stack_creates_it_then_previews_and_ups_with_the_pack(project: Path, cli: FakeCli) -> None:
    with_the_infra_program(project)
    write_tenant(project / "stacks", TenantSpec(id="newco"))
    cli.outputs("platform", platform_outputs())
    cli.script("preview", {"events": preview_stream("newco", [])})
    engine_on(project, cli, gate=PolicyGate(project)).up("newco")
    ops = ["stack lookup" if "--show-name" in c else " ".join(c[:2]) if c[0] == "stack" else c[0]
           for c in cli.commands()]
    assert [op for op in ops if op in ("stack init", "preview", "up")] == ["stack init", "preview", "up"]
    assert ops.index("stack lookup") < ops.index("stack init")
    for command in cli.ran("preview") + cli.ran("up"):
        assert command[command.index("--policy-pack") + 1] == str(pack_dir())


def test_a_new_stack_whose_cli_preview_fails_or_is_refused_is_removed_again(project: Path, cli: FakeCli) -> None:
    """Judged in-process, created, then previewed by the CLI: a preview that fails, and a plan the
    operator does not approve, each leave no empty stack on the backend (its committed file kept)."""
    with_the_infra_program(project)
    write_tenant(project / "stacks", TenantSpec(id="newco"))
    committed = (project / "stacks" / "Pulumi.newco.yaml").read_text()
    cli.outputs("platform", platform_outputs())
    cli.script("preview", {"events": [], "stderr": "error: preview failed: boom\n", "code": 255})
    with pytest.raises(ApplyFailed, match="boom"):
        engine_on(project, cli, gate=PolicyGate(project)).up("newco")
    assert len(cli.ran("stack", "init")) == 1 and "newco" not in cli.stacks and cli.ran("up") == []

    steps, later = replacement("newco", QUEUE, "newco-jobs", {"name": "tenantctl-newco-jobs", "fifoQueue": False},
                               {"name": "tenantctl-newco-jobs", "fifoQueue": True}, ["fifoQueue"])
    cli.script("preview", {"events": preview_stream("newco", [steps], later=[later])})
    engine = engine_on(project, cli)
    engine.approve = Confirmation(yes=False)
    with pytest.raises(NotConfirmed):
        engine.up("newco")
    assert len(cli.ran("stack", "init")) == 2 and "newco" not in cli.stacks and cli.ran("up") == []
    assert all("--preserve-config" in c for c in cli.ran("stack", "rm"))
    assert (project / "stacks" / "Pulumi.newco.yaml").read_text() == committed


def test_no_command_changes_the_projects_current_stack(project: Path, cli: FakeCli) -> None:
    """`pulumi stack select` and a selecting `stack init` rewrite the project's
    workspace.json, non-atomically, which every CLI command reads: `apply`
    runs tenants in parallel processes and `refresh` in threads, all in one
    project, so one run's select could hand another a half-written file
    (pulumi/pulumi#8186). Every command names its stack (`--stack`), so none
    needs a current one: stacks are looked up (`stack --show-name`) and
    created with `--no-select`."""
    cli.script("preview", {"events": preview_stream("acme", [queue_step()])})
    cli.script("preview-refresh", {"events": refresh_stream("acme", [])})
    cli.script("up", {"events": preview_stream("newco", [])})
    engine = engine_on(project, cli)
    engine.preview("acme")
    engine.refresh("acme")
    engine.outputs("platform")
    engine.up("newco")  # a new stack: created, then updated
    engine.destroy("acme")
    with pytest.raises(ApplyFailed, match="stack ghost: not on"):
        engine.refresh("ghost")  # a missing stack is still told from an existing one
    assert cli.current_writes == []
    assert "newco" in cli.stacks and "acme" not in cli.stacks
    [init] = cli.ran("stack", "init")
    assert "--no-select" in init


def test_the_policy_pack_runs_with_tenantctls_interpreter(project: Path, cli: FakeCli, tmp_path: Path,
                                                          monkeypatch) -> None:
    """The CLI starts a Python pack as `python3` from its PATH, whatever
    PULUMI_PYTHON_CMD says: with another python3 first on PATH (a system
    Python without tenantctl or pulumi-policy, tenantctl run from a venv it
    was not activated in, pipx) the pack could not even start, and every
    preview and up would fail."""
    elsewhere = tmp_path / "system-bin"
    elsewhere.mkdir()
    (elsewhere / "python3").symlink_to("/bin/true")  # an interpreter without tenantctl
    monkeypatch.setenv("PATH", f"{elsewhere}{os.pathsep}{os.environ['PATH']}")
    cli.script("preview", {"events": preview_stream("acme", [])})
    engine_on(project, cli, gate=PolicyGate(project)).up("acme")
    assert len(cli.policy_pythons) == 2  # the preview's and the up's
    assert set(cli.policy_pythons) == {str(Path(sys.executable).parent / "python3")}


def test_waived_rules_are_disabled_in_the_packs_config(project: Path, cli: FakeCli, tmp_path: Path) -> None:
    cli.script("preview", {"events": preview_stream("acme", [])})
    with waived("deletion-protection"):
        engine_on(project, cli, gate=PolicyGate(project)).up("acme")
    for command in cli.ran("preview") + cli.ran("up"):
        assert "--policy-pack-config" in command
    options = policy_options(Path("/pack"), ["deletion-protection"], tmp_path)
    config = json.loads(Path(options["policy_pack_configs"][0]).read_text())
    assert config == {"deletion-protection": {"enforcementLevel": "disabled"}}
    assert policy_options(None, ["deletion-protection"], tmp_path) == {}


def test_a_crossguard_violation_during_up_is_the_gates_refusal(project: Path, cli: FakeCli) -> None:
    """The pack's mandatory violation stops the update before that resource is
    created (pkg/resource/deploy/step_generator.go runs the analyzers on each
    registration) and the CLI fails: exit 8 naming the rule, not exit 4."""
    queue = urn("acme", QUEUE, "acme-jobs")
    detail = "queue encrypted with 'arn:aws:kms:eu-west-1:1:key/other', not this tenant's key"
    cli.script("up", {"events": numbered([{"preludeEvent": {"config": {}}}, pre_json(stack_step("acme")),
                                          policy_violation(queue, "queue-encryption", detail),
                                          policy_violation(queue, "tenant-tag", "advisory only", level="advisory"),
                                          summary({"same": 1})]),
                      "stderr": "error: update failed\n", "code": 255})
    seen: list[EngineEvent] = []
    with pytest.raises(PolicyRefused) as err:
        engine_on(project, cli).up("acme", seen.append)
    assert err.value.exit_code == 8 and not err.value.changed_nothing
    found = [(v.rule, v.resource, v.message) for v in err.value.violations]
    assert found == [("queue-encryption", "acme-jobs", detail)]
    assert "during its up" in str(err.value) and "rule queue-encryption" in str(err.value)
    assert [e.message for e in seen if e.kind == "diagnostic"] == [
        f"error: policy queue-encryption: {detail}", "warning: policy tenant-tag: advisory only"]


def test_an_up_whose_plan_replaces_waits_for_approval_and_reports_its_size(project: Path, cli: FakeCli) -> None:
    """The approve hook sees the judged plan before `up` runs: a replacement
    (the logical `replace` step) refused there leaves AWS untouched; the plan
    event gives the progress display its M."""
    steps, later = replacement("acme", QUEUE, "acme-jobs", {"name": "tenantctl-acme-jobs", "fifoQueue": False},
                               {"name": "tenantctl-acme-jobs", "fifoQueue": True}, ["fifoQueue"])
    stream = preview_stream("acme", [steps, planned("acme", KEY, "acme-key", {"enableKeyRotation": True}, op="same")],
                            later=[later])
    cli.script("preview", {"events": stream}, {"events": stream})
    engine = engine_on(project, cli)
    engine.approve = Confirmation(yes=False)  # no terminal to ask on
    with pytest.raises(NotConfirmed, match="deletes or replaces 1 resource") as refused:
        engine.up("acme")
    assert refused.value.details == [f"replace {QUEUE} acme-jobs"] and cli.ran("up") == []

    seen: list[EngineEvent] = []
    approved: list = []
    cli.script("up", {"events": preview_stream("acme", [])})
    engine.approve = approved.append
    engine.up("acme", seen.append)
    assert [c.op for c in approved[0].changes if c.op is not Op.same] == [Op.replace]
    assert [e.total for e in seen if e.kind == "plan"] == [1] and len(cli.ran("up")) == 1


def test_refresh_reports_drift_from_the_result_ops_of_a_preview_only_refresh(project: Path, cli: FakeCli) -> None:
    """`pulumi refresh --preview-only`: the outputs event carries the result op
    (pkg/engine/update.go, pkg/resource/deploy/step.go), not `refresh`."""
    secret = {SECRET_SIG: "1b47061264138c4ac30d75fd1eb44270", "ciphertext": "AAA"}
    cli.script("preview-refresh", {"events": refresh_stream("acme", [
        refreshed("acme", KEY, "acme-key", {"tags": {"owner": "a"}, "policy": secret},
                  {"tags": {"owner": "b"}, "policy": secret}, {"tags.owner": "update", "policy": "update"}),
        refreshed("acme", QUEUE, "acme-jobs", {"name": "tenantctl-acme-jobs"}, None),
        refreshed("acme", ROLE, "acme-role", {"name": "tenantctl-acme-app"}, {"name": "tenantctl-acme-app"}),
    ])})
    changes = {c.name: c for c in engine_on(project, cli).refresh("acme").changes}
    assert changes["acme-key"].op is Op.update
    assert changes["acme-key"].diffs == [PropertyDiff(path="tags.owner", old="a", new="b"),
                                         PropertyDiff(path="policy", old="[secret]", new="[secret]")]
    assert (changes["acme-jobs"].op, changes["acme-role"].op) == (Op.delete, Op.same)
    [refresh] = cli.ran("refresh")
    assert "--preview-only" in refresh and "--yes" not in refresh  # changes nothing
    assert cli.ran("stack", "init") == []


def test_refresh_names_each_resources_arn_for_the_orphan_check(project: Path, cli: FakeCli) -> None:
    role_arn, queue_arn = "arn:aws:iam::1:role/tenantctl-acme-app", "arn:aws:sqs:us-east-1:1:tenantctl-acme-jobs"
    stack_arn = "arn:aws:cloudformation:us-east-1:1:stack/serverlessrepo-tenantctl-acme-rot/0f1e"
    cli.script("preview-refresh", {"events": refresh_stream("acme", [
        refreshed("acme", ROLE, "acme-role", {"arn": role_arn}, {"arn": role_arn}),
        refreshed("acme", QUEUE, "acme-jobs", {"arn": queue_arn}, None),
        refreshed("acme", KEY, "acme-key", {"keyId": "k"}, {"keyId": "k"}),
        # No `arn` output, its id is its ARN (what the stack creates is tagged with it).
        refreshed("acme", "aws:serverlessrepository/cloudFormationStack:CloudFormationStack", "acme-rotation-app",
                  {"outputs": {}}, {"outputs": {}}, resource_id=stack_arn),
    ])})
    changes = {c.name: c for c in engine_on(project, cli).refresh("acme").changes}
    assert (changes["acme-role"].arn, changes["acme-jobs"].arn, changes["acme-key"].arn) == (role_arn, queue_arn, "")
    assert changes["acme-rotation-app"].arn == stack_arn


def test_refresh_names_each_resources_id_for_the_role_policy_check(project: Path, cli: FakeCli) -> None:
    """An inline role policy's id (``role:name``) is how its stack's declared policies are told from
    ones put on its roles out of band."""
    cli.script("preview-refresh", {"events": refresh_stream("acme", [
        refreshed("acme", ROLE, "acme-role", {}, {}, resource_id="tenantctl-acme-app"),
        refreshed("acme", "aws:iam/rolePolicy:RolePolicy", "acme-access", {"policy": "{}"}, {"policy": "{}"},
                  resource_id="tenantctl-acme-app:acme-access-1a2b3c"),
        refreshed("acme", QUEUE, "acme-jobs", {}, None, resource_id="https://sqs/q"),
    ])})
    changes = {c.name: c for c in engine_on(project, cli).refresh("acme").changes}
    assert (changes["acme-role"].id, changes["acme-access"].id, changes["acme-jobs"].id) == (
        "tenantctl-acme-app", "tenantctl-acme-app:acme-access-1a2b3c", "https://sqs/q")


def test_a_stack_the_backend_lacks_has_nothing_to_destroy_and_drifts_only_if_absent_is_ok(project: Path,
                                                                                          cli: FakeCli) -> None:
    """A record whose stack is gone from the backend is not "no drift" (as on the LocalEngine)."""
    engine = engine_on(project, cli)
    with pytest.raises(ApplyFailed, match="stack ghost: not on"):
        engine.refresh("ghost")
    assert engine.refresh("ghost", absent_ok=True).changes == [] and engine.destroy("ghost").changes == []
    assert engine.preview_destroy("ghost").changes == []
    assert cli.ran("refresh") == cli.ran("destroy") == cli.ran("stack", "init") == []


def test_a_destroy_preview_lists_what_the_stack_holds_and_changes_nothing(project: Path, cli: FakeCli) -> None:
    """`pulumi destroy --preview-only` (what `cell remove` and deprovision list
    before asking): a delete step per resource, the committed file untouched."""
    deletes = [[("pre", step_json("delete", urn("acme", typ, name), typ,
                                  old=state(typ, urn("acme", typ, name), inputs)))]
               for typ, name, inputs in ((QUEUE, "acme-jobs", {"name": "tenantctl-acme-jobs"}),
                                         (KEY, "acme-key", {"description": "acme"}))]
    cli.script("preview-destroy", {"events": preview_stream("acme", deletes), "touch_config": "v1:set-again"})
    changes = engine_on(project, cli).preview_destroy("acme")
    assert [(c.op, c.name) for c in changes.changes if c.op is not Op.same] == [(Op.delete, "acme-jobs"),
                                                                               (Op.delete, "acme-key")]
    [destroy] = cli.ran("destroy")
    assert "--preview-only" in destroy and "--yes" not in destroy
    assert "acme" in cli.stacks and cli.ran("stack", "rm") == []
    assert (project / "stacks" / "Pulumi.acme.yaml").read_text() == STACK_FILE


def test_a_stack_holds_resources_when_its_state_has_one_of_the_programs(project: Path, cli: FakeCli) -> None:
    """What `cell list` tells a cell whose up stopped half way (no outputs) from one
    never applied by: the stack itself and its providers are not the program's."""
    engine = engine_on(project, cli)
    assert engine.holds_resources("newco") is False  # no such stack
    own = [state("pulumi:pulumi:Stack", urn("acme", "pulumi:pulumi:Stack", "tenantctl-acme")),
           state("pulumi:providers:aws", urn("acme", "pulumi:providers:aws", "default"))]
    cli.exported("acme", own)
    assert engine.holds_resources("acme") is False  # a preview made it, nothing was created
    cli.exported("acme", [*own, state(QUEUE, urn("acme", QUEUE, "acme-jobs"), {"name": "tenantctl-acme-jobs"})])
    assert engine.holds_resources("acme") is True
    assert cli.ran("up") == [] and len(cli.ran("stack", "export")) == 2


def test_a_destroy_preview_says_which_deletes_only_leave_the_state(project: Path, cli: FakeCli) -> None:
    """A resource whose state says retainOnDelete (the RDSOSMetrics log group a
    cell manages) is deleted from the state only: `cell remove` lists it as kept."""
    group = "aws:cloudwatch/logGroup:LogGroup"
    deletes = [[("pre", step_json("delete", urn("acme", typ, name), typ,
                                  old={**state(typ, urn("acme", typ, name), inputs), **retain}))]
               for typ, name, inputs, retain in ((KEY, "acme-key", {"description": "acme"}, {}),
                                                 (group, "platform-os-metrics", {"name": "RDSOSMetrics"},
                                                  {"retainOnDelete": True}))]
    cli.script("preview-destroy", {"events": preview_stream("acme", deletes)})
    changes = {c.name: c for c in engine_on(project, cli).preview_destroy("acme").changes if c.op is Op.delete}
    assert changes["platform-os-metrics"].retained and not changes["acme-key"].retained
    assert changes["acme-key"].loses_data and not changes["platform-os-metrics"].loses_data


def test_preview_changes_carry_property_diffs(project: Path, cli: FakeCli) -> None:
    detailed = {"tags.owner": {"diffKind": "update", "inputDiff": True},
                "kmsMasterKeyId": {"diffKind": "update", "inputDiff": True},
                "delaySeconds": {"diffKind": "add", "inputDiff": True}}
    update = queue_step("update", tags={"owner": "b"}, kmsMasterKeyId=UNKNOWN, delaySeconds=5)
    update[0][1]["old"] = state(QUEUE, urn("acme", QUEUE, "acme-jobs"),
                                {"name": "tenantctl-acme-jobs", "tags": {"owner": "a"}, "kmsMasterKeyId": "k1"})
    update[0][1].update(diffs=["tags", "kmsMasterKeyId", "delaySeconds"], detailedDiff=detailed)
    cli.script("preview", {"events": preview_stream("acme", [update])})
    [change] = engine_on(project, cli).preview("acme").changes
    assert change.op is Op.update
    assert change.diffs == [PropertyDiff(path="tags.owner", old="a", new="b"),
                            PropertyDiff(path="kmsMasterKeyId", old="k1", new="[unknown]"),
                            PropertyDiff(path="delaySeconds", old=None, new=5)]


@pytest.mark.parametrize("version", ["3.210.0", "3.205.0"], ids=["grpc-events", "event-log-file"])
def test_an_exception_in_the_event_handler_fails_the_preview(project: Path, tmp_path: Path, monkeypatch,
                                                             version: str) -> None:
    """Over gRPC (CLI >= 3.206) the SDK's servicer only warns and drops the
    event an on_event raised on (pulumi/automation/_stack.py _EventsServicer);
    from a log file the watcher thread dies. Either way the plan would be
    partial: the engine raises the handler's error once the command returned."""
    cli = FakeCli(tmp_path, monkeypatch, version=version, stacks=("acme",))
    cli.script("preview", {"events": preview_stream("acme", [queue_step(), planned("acme", KEY, "acme-key", {})])})

    def progress(event: EngineEvent) -> None:
        if event.kind == "resource-done":
            raise KeyError("the progress display broke")

    with pytest.raises(KeyError, match="the progress display broke"):
        engine_on(project, cli).preview("acme", progress)


def test_events_the_sdk_drops_fail_the_preview(project: Path, tmp_path: Path, monkeypatch) -> None:
    """An event the SDK cannot parse (here an op it does not know yet) is dropped
    with a warning; the summary still counts that step (pkg/engine/update.go)."""
    cli = FakeCli(tmp_path, monkeypatch, version="3.210.0", stacks=("acme",))
    stream = preview_stream("acme", [queue_step(), planned("acme", KEY, "acme-key", {})])
    stream[2]["resourcePreEvent"]["metadata"]["op"] = "create-v2"
    cli.script("preview", {"events": stream})
    with pytest.raises(ApplyFailed, match=r"summary counts 2 create \(got 1\): engine events were lost") as err:
        engine_on(project, cli).preview("acme")
    assert err.value.exit_code == 4


def test_a_preview_without_its_summary_fails(project: Path, cli: FakeCli) -> None:
    events = [e for e in preview_stream("acme", [queue_step()]) if "summaryEvent" not in e]
    cli.script("preview", {"events": events})
    with pytest.raises(ApplyFailed, match="summary event never found"):
        engine_on(project, cli, gate=PolicyGate(project)).preview("acme")


def test_destroy_reports_a_failure_that_mentions_a_missing_stack(project: Path, cli: FakeCli) -> None:
    """The SDK reads "no stack named ... found" in any command's stderr as
    StackNotFoundError; destroy must not take that for "nothing to destroy"."""
    cli.script("destroy", {"stderr": "error: Failed to read stack reference: no stack named 'platform' found\n",
                           "code": 255})
    with pytest.raises(ApplyFailed, match="no stack named 'platform' found"):
        engine_on(project, cli).destroy("acme")
    assert "acme" in cli.stacks


def test_a_cli_older_than_the_engine_needs_is_refused(project: Path, tmp_path: Path, monkeypatch) -> None:
    cli = FakeCli(tmp_path, monkeypatch, version="3.150.0", stacks=("acme",))
    with pytest.raises(TargetUnavailable, match="unsupported Pulumi CLI version") as err:
        engine_on(project, cli).preview("acme")
    assert err.value.exit_code == 7 and cli.ran("preview") == []


def test_prepare_installs_the_provider_plugin_once(project: Path, cli: FakeCli) -> None:
    """Before a parallel apply: concurrent first-use downloads collide (pulumi/pulumi#22784)."""
    engine_on(project, cli).prepare()
    from importlib.metadata import version

    assert cli.ran("plugin") == [["plugin", "install", "resource", "aws", f"v{version('pulumi_aws')}"]]


# -- with the real CLI ----------------------------------------------------------------------------

needs_cli = pytest.mark.skipif(not __import__("shutil").which("pulumi"),
                               reason="the Pulumi CLI is not on PATH (tenantctl setup pulumi)")


@needs_cli
@pytest.mark.pulumi_cli
def test_file_backend_round_trip(project: Path, tmp_path: Path, monkeypatch) -> None:
    """preview -> up -> outputs -> destroy on a file:// backend with a tiny program
    that reads the platform reference the engine hands it."""
    infra = project / "infra"
    infra.mkdir()
    (infra / "__main__.py").write_text(
        "import pulumi\n"
        "pulumi.ComponentResource('test:index:Slice', 'acme-slice')\n"
        "cfg = pulumi.Config('tenantctl')\n"
        "pulumi.export('platform_ref', cfg.require('platformStack'))\n"
        "pulumi.export('tenant', cfg.require_object('tenant')['id'])\n")
    (project / "stacks" / "Pulumi.acme.yaml").write_text(STACK_FILE.replace("encryptionsalt: v1:abc:def\n", ""))
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "test")
    state = tmp_path / "state"
    state.mkdir()
    engine = PulumiEngine(aws(backend_url=state.as_uri(), secrets_provider="passphrase"), project)
    seen: list[EngineEvent] = []
    assert engine.outputs("acme") == {}
    assert engine.preview("acme", seen.append).summary() == {"create": 1}
    result_ = engine.up("acme", seen.append)
    assert result_.changes.summary() == {"create": 1}
    assert result_.outputs == {"platform_ref": "platform", "tenant": "acme"}
    assert any(e.kind == "summary" for e in seen)
    assert engine.outputs("acme") == result_.outputs
    assert engine.preview("acme").has_changes is False
    assert engine.destroy("acme").summary() == {"delete": 1}
    assert engine.outputs("acme") == {}
    assert engine.destroy("acme").changes == []  # gone: nothing left to destroy
    assert (project / "Pulumi.yaml").read_text().endswith("stackConfigDir: stacks\n")


ITEMS_PROGRAM = """\
import json, os, pathlib

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

STORE = pathlib.Path(os.environ["TENANTCTL_TEST_STORE"])  # the "cloud": one JSON file


def load():
    return json.loads(STORE.read_text()) if STORE.exists() else {}


def save(items):
    STORE.write_text(json.dumps(items))


class Items(ResourceProvider):
    def create(self, props):
        items = load()
        items[props["name"]] = {k: props.get(k) for k in ("name", "value", "ref")}
        save(items)
        return CreateResult(props["name"], items[props["name"]])

    def diff(self, id, olds, news):
        changed = [k for k in ("name", "value", "ref") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[k for k in changed if k == "name"],
                          delete_before_replace=False)

    def update(self, id, olds, news):
        items = load()
        items[id] = {k: news.get(k) for k in ("name", "value", "ref")}
        save(items)
        return UpdateResult(items[id])

    def read(self, id, props):
        items = load()
        return ReadResult(id, items[id]) if id in items else ReadResult(None, {})

    def delete(self, id, props):
        items = load()
        items.pop(id, None)
        save(items)


class Item(Resource):
    def __init__(self, name, props):
        super().__init__(Items(), name, {"name": None, "value": None, "ref": None, **props})


config = pulumi.Config()
a = Item("acme-a", {"name": config.get("aName") or "a1", "value": "x"})
Item("acme-b", {"name": "b1", "value": "x", "ref": a.id})  # unknown until `a` exists
"""


class RecordingGate:
    """Stands in for the policy gate: keeps what each preview planned."""

    def __init__(self) -> None:
        self.plans: list[dict[str, dict]] = []

    def __call__(self, stack: str, planned: list, judged_at_apply: bool = False) -> None:
        self.plans.append({r.name: r.inputs for r in planned})


@needs_cli
@pytest.mark.pulumi_cli
def test_real_cli_unknown_input_drift_and_replacement(project: Path, tmp_path: Path, monkeypatch) -> None:
    """With the real CLI and a dynamic provider whose "cloud" is a file: an input
    unknown at the first preview reaches the gate as unknown (and CrossGuard, the
    pack passed to the up, lets the clean program through); a refresh after an
    out-of-band change and deletion reports them as update (with the property
    diff) and delete; a replacement is still planned with its new inputs once
    its delete-replaced step has arrived."""
    infra = project / "infra"
    infra.mkdir()
    (infra / "__main__.py").write_text(ITEMS_PROGRAM)
    stack_file = project / "stacks" / "Pulumi.acme.yaml"
    stack_file.write_text("config: {}\n")
    store = tmp_path / "cloud.json"
    monkeypatch.setenv("TENANTCTL_TEST_STORE", str(store))
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "test")
    state = tmp_path / "state"
    state.mkdir()
    gate = RecordingGate()
    engine = PulumiEngine(aws(backend_url=state.as_uri(), secrets_provider="passphrase"), project, gate=gate)
    engine._stack("acme", create=True)  # the in-process plan of a new stack runs tenantctl's own program only

    engine.up("acme")
    assert gate.plans[0]["acme-b"]["ref"] == UNKNOWN and gate.plans[0]["acme-a"]["name"] == "a1"
    assert set(json.loads(store.read_text())) == {"a1", "b1"}

    items = json.loads(store.read_text())
    items["a1"]["value"] = "changed out of band"
    del items["b1"]
    store.write_text(json.dumps(items))
    drift = {c.name: c for c in engine.refresh("acme").changes}
    assert drift["acme-a"].op is Op.update
    assert PropertyDiff(path="value", old="x", new="changed out of band") in drift["acme-a"].diffs
    assert drift["acme-b"].op is Op.delete
    assert json.loads(store.read_text())["a1"]["value"] == "changed out of band"  # a refresh changes nothing

    store.write_text(json.dumps({**items, "b1": {"name": "b1", "value": "x", "ref": "a1"}}))
    stack_file.write_text("config:\n  tenantctl:aName: a2\n")
    changes = {c.name: c for c in engine.preview("acme").changes}
    assert changes["acme-a"].op is Op.replace
    assert gate.plans[-1]["acme-a"]["name"] == "a2"  # still planned after its delete-replaced step


def test_engine_modules_do_not_import_pulumi_at_load_time() -> None:
    import subprocess

    code = ("import sys; import tenantctl.target, tenantctl.engines.pulumi.engine, tenantctl.cli.setup_cmd, "
            "tenantctl.cli.target_cmd; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pulumi', 'pulumi_aws', 'pulumi_policy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_repair_whose_up_fails_after_its_refresh_stays_pending(project: Path, cli: FakeCli) -> None:
    """`pulumi up --refresh` records the live (drifted) state before its steps: one that fails
    part-way leaves a state the next preview-only refresh finds equal to what is live. The failure
    is the engine's (exit 4), which the provision's registry hold records on the tenant
    (``provision_failed``, the error in ``last_error``), and `refresh` reports that repair as
    pending (exit 12) whatever the read says."""
    from runtime_fixtures import record

    from tenantctl.errors import CHANGES_PENDING
    from tenantctl.operations.refresh import RefreshSummary, refresh_tenant
    from tenantctl.registry import failure_text

    cli.script("preview", {"events": preview_stream("acme", [queue_step("update", delaySeconds=0)])})
    cli.script("up", {"events": numbered([{"preludeEvent": {"config": {}}}, pre_json(stack_step("acme"))]),
                      "stderr": "error: update failed: operation error SQS: SetQueueAttributes, throttled\n",
                      "code": 255})
    engine = engine_on(project, cli)
    with pytest.raises(ApplyFailed) as failed:
        engine.up("acme", refresh=True)
    assert failed.value.exit_code == 4 and "--refresh" in cli.ran("up")[0]

    cli.script("preview-refresh", {"events": refresh_stream("acme", [
        refreshed("acme", QUEUE, "acme-jobs", {"delaySeconds": 600}, {"delaySeconds": 600})])})
    failed_repair = record("acme").model_copy(update={"provision_failed": True,
                                                      "last_error": failure_text(failed.value)})
    ws = type("Ws", (), {"engine": engine})()
    drift = refresh_tenant(ws, failed_repair, [])
    assert drift.ok and drift.resources == [] and drift.checked == 1  # Pulumi's refresh: nothing differs
    assert drift.pending.startswith("last repair failed at ") and "throttled" in drift.pending
    assert "`tenantctl provision acme`" in drift.pending and drift.headline() == "repair pending"
    assert RefreshSummary(seconds=0, tenants=[drift]).exit_code() == CHANGES_PENDING
    assert not refresh_tenant(ws, record("acme"), []).drifted  # a provision that succeeded clears the flag
