"""PulumiEngine: the infra/ program on real AWS through the Automation API.

One LocalWorkspace over the project root (Pulumi.yaml, `stackConfigDir: stacks`),
one stack per tenant plus `platform`. The committed project and stack files are
never rewritten: no ProjectSettings/StackSettings are handed to the workspace
(the SDK would re-serialise Pulumi.yaml without stackConfigDir), and the one
backend-specific config value, the platform StackReference name, is laid over
a scratch copy of the stack file passed with `--config-file`.

`import pulumi.automation` happens inside methods: constructing the engine is
cheap and needs no CLI; the CLI is located on first use.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, Field

from tenantctl.engines.base import ChangeSet, Engine, EventSink, UpResult
from tenantctl.engines.pulumi import cli as pulumi_cli
from tenantctl.engines.pulumi.errors import map_error
from tenantctl.engines.pulumi.events import ChangeCollector
from tenantctl.errors import InvalidInput
from tenantctl.naming import PLATFORM_STACK
from tenantctl.project import Project
from tenantctl.stackconfig import PLATFORM_REF_KEY, load_yaml

BackendKind = Literal["cloud", "file", "s3", "azblob", "gs"]


def backend_kind(url: str | None) -> BackendKind:
    """None (the CLI's login, Pulumi Cloud by default) and http(s) URLs are the
    Cloud backend; the rest are DIY backends keyed by their scheme."""
    if not url:
        return "cloud"
    scheme = urlparse(url).scheme
    if scheme in ("http", "https"):
        return "cloud"
    if scheme in ("file", "s3", "azblob", "gs"):
        return scheme  # type: ignore[return-value]
    raise InvalidInput(f"backend URL {url!r}: expected file://, s3://, azblob://, gs:// or https:// (Pulumi Cloud)")


def stack_name(stack: str, project: str, backend_url: str | None, org: str | None) -> str:
    """`<org>/<project>/<stack>` on Pulumi Cloud with an organisation, the bare
    stack name otherwise (DIY backends scope stacks by project themselves; the
    Cloud resolves a bare name in the user's default organisation)."""
    if org and backend_kind(backend_url) == "cloud":
        return f"{org}/{project}/{stack}"
    return stack


class WorkspaceOptions(BaseModel):
    """What is handed to pulumi.automation.LocalWorkspace (besides the command)."""

    work_dir: str
    env_vars: dict[str, str] = Field(default_factory=dict)
    secrets_provider: str | None = None


def workspace_options(target: Any, project: Project) -> WorkspaceOptions:
    aws = target.aws
    env = pulumi_cli.python_env()
    if aws.backend_url:
        env["PULUMI_BACKEND_URL"] = aws.backend_url
    if aws.profile:
        env["AWS_PROFILE"] = aws.profile
    if aws.region:
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = aws.region
    return WorkspaceOptions(work_dir=str(project.dir), env_vars=env, secrets_provider=aws.secrets_provider)


def effective_config(stack_file: Path, platform_ref: str, provider: dict | None = None) -> dict | None:
    """The stack file with a bare platform (cell) reference qualified like
    ``platform_ref`` (the default cell's qualified name) and ``provider`` (its
    cell's account: ``stackconfig.provider_config``) laid over its config, or
    None when the committed file is right as it is (or absent)."""
    if not stack_file.is_file():
        return None
    data = load_yaml(stack_file.read_text()) or {}
    config = dict(data.get("config") or {})
    changed = False
    current = config.get(PLATFORM_REF_KEY)
    scope = platform_ref.rpartition("/")[0]
    if isinstance(current, str) and "/" not in current and scope:  # a bare name: qualify it like the default cell's
        config[PLATFORM_REF_KEY] = f"{scope}/{current}"
        changed = True
    for key, value in (provider or {}).items():
        if config.get(key) != value:
            config[key] = value
            changed = True
    return {**data, "config": config} if changed else None


def op_options(collector: ChangeCollector, *, refresh: bool = False, config_file: str | None = None) -> dict[str, Any]:
    """Keyword arguments for Stack.preview/up/destroy/refresh."""
    options: dict[str, Any] = {"on_event": collector, "color": "never", "suppress_progress": True}
    if refresh:
        options["refresh"] = True
    if config_file:
        options["config_file"] = config_file
    return options


class PulumiEngine(Engine):
    name = "pulumi"

    def __init__(self, target: Any, project_dir: Path, pulumi_command: Any = None,
                 gate: Callable[[str, list], None] | None = None) -> None:
        if getattr(target, "kind", None) != "aws":
            raise InvalidInput(f"the Pulumi engine drives the aws target only (got {getattr(target, 'kind', None)!r})")
        self.target = target
        self.project = Project.load(project_dir)
        backend_kind(target.aws.backend_url)  # refuse a malformed URL before anything runs
        self._command = pulumi_command
        self.gate = gate  # policy.PolicyGate: judges a preview's planned resources before every up

    # -- naming ---------------------------------------------------------------
    def qualified(self, stack: str) -> str:
        return stack_name(stack, self.project.name, self.target.aws.backend_url, self.target.aws.org)

    @property
    def backend(self) -> str:
        return self.target.aws.backend_url or "the Pulumi CLI's logged-in backend"

    @property
    def options(self) -> WorkspaceOptions:
        return workspace_options(self.target, self.project)

    # -- automation API plumbing ----------------------------------------------
    @cached_property
    def workspace(self) -> Any:
        from pulumi.automation import LocalWorkspace

        command = self._command or pulumi_cli.command(self.target.aws.pulumi_root)
        return LocalWorkspace(pulumi_command=command, **self.options.model_dump())

    def _stack(self, stack: str, create: bool) -> Any:
        from pulumi.automation import Stack

        name = self.qualified(stack)
        try:
            return Stack.create_or_select(name, self.workspace) if create else Stack.select(name, self.workspace)
        except Exception as exc:
            raise map_error(exc, "select", name, self.backend) from None

    @contextmanager
    def _config_file(self, stack: str) -> Iterator[str | None]:
        from tenantctl.stackconfig import provider_config

        data = effective_config(self.project.stacks_dir / f"Pulumi.{stack}.yaml", self.qualified(PLATFORM_STACK),
                                provider_config(self.project.stacks_dir, stack))
        if data is None:
            yield None
            return
        with tempfile.TemporaryDirectory(prefix="tenantctl-pulumi-") as tmp:
            path = Path(tmp) / f"Pulumi.{stack}.yaml"
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            yield str(path)

    def _run(self, action: str, stack: str, sink: EventSink | None, create: bool,
             call: Callable[[Any, dict[str, Any]], Any], refresh: bool = False,
             collector: ChangeCollector | None = None) -> tuple[Any, ChangeCollector]:
        handle = self._stack(stack, create)
        collector = collector or ChangeCollector(stack, sink)
        with self._config_file(stack) as config_file:
            options = op_options(collector, refresh=refresh, config_file=config_file)
            try:
                result = pulumi_cli.run_cancellable(lambda: call(handle, options), handle.cancel)
            except Exception as exc:
                raise map_error(exc, action, handle.name, self.backend) from None
        return result, collector

    # -- Engine -----------------------------------------------------------------
    def preview(self, stack: str, on_event: EventSink | None = None, *, refresh: bool = False) -> ChangeSet:
        """What ``up`` would change; an unsafe plan fails here as it would fail ``up``
        (so `apply --preview` on a pull request names the broken rule)."""
        return self._gated_preview(stack, on_event, refresh).changeset()

    def _gated_preview(self, stack: str, on_event: EventSink | None, refresh: bool) -> Any:
        """Preview ``stack`` keeping each planned resource's inputs, and let the
        policy gate judge them (raises PolicyRefused)."""
        from tenantctl.engines.pulumi.plan import PlanCollector

        plan = PlanCollector(stack, on_event)
        self._run("preview", stack, on_event, True, lambda s, o: s.preview(**o), refresh, collector=plan)
        if self.gate is not None:
            self.gate(stack, plan.planned())
        return plan

    def up(self, stack: str, on_event: EventSink | None = None, *, refresh: bool = False) -> UpResult:
        if self.gate is not None:
            # Preview first and let the gate judge the plan: a refusal leaves AWS untouched.
            self._gated_preview(stack, on_event, refresh)
        result, collector = self._run("up", stack, on_event, True, lambda s, o: s.up(**o), refresh)
        outputs = {key: out.value for key, out in result.outputs.items()}
        return UpResult(stack=stack, outputs=outputs, changes=collector.changeset())

    def refresh(self, stack: str, on_event: EventSink | None = None) -> ChangeSet:
        """Bring the stack's state in line with what exists in AWS (drift shows as updates)."""
        _, collector = self._run("refresh", stack, on_event, False, lambda s, o: s.refresh(**o))
        return collector.changeset()

    def destroy(self, stack: str, on_event: EventSink | None = None) -> ChangeSet:
        """Delete the stack's resources, then the (empty) stack itself, keeping its
        committed config file (removing that is the caller's business). A stack
        that never existed has nothing to destroy."""
        from tenantctl.errors import NotFound

        try:
            _, collector = self._run("destroy", stack, on_event, False, lambda s, o: s.destroy(**o))
        except NotFound:
            return ChangeSet(stack=stack)
        try:
            self.workspace.remove_stack(self.qualified(stack), preserve_config=True)
        except Exception as exc:
            raise map_error(exc, "stack rm", self.qualified(stack), self.backend) from None
        return collector.changeset()

    def outputs(self, stack: str) -> dict[str, Any]:
        """The stack's outputs; {} for a stack not created yet."""
        from tenantctl.errors import NotFound

        try:
            handle = self._stack(stack, create=False)
        except NotFound:
            return {}
        try:
            return {key: out.value for key, out in handle.outputs().items()}
        except Exception as exc:
            raise map_error(exc, "outputs", handle.name, self.backend) from None


def cli_available(root: Path | None = None) -> bool:
    try:
        pulumi_cli.locate(root)
    except Exception:
        return False
    return True


__all__ = ["PulumiEngine", "backend_kind", "stack_name", "workspace_options", "effective_config", "op_options",
           "cli_available"]
