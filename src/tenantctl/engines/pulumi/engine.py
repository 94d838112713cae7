"""PulumiEngine: the infra/ program on real AWS through the Automation API.

One LocalWorkspace over the project root (Pulumi.yaml, `stackConfigDir: stacks`),
one stack per tenant plus `platform`, none ever made the project's current
stack (``workspace``: stacks of one project run at once). The committed project and stack files are
never rewritten: no ProjectSettings/StackSettings are handed to the workspace
(the SDK would re-serialise Pulumi.yaml without stackConfigDir), and the one
backend-specific config value, the platform StackReference name, is laid over
a scratch copy of the stack file passed with `--config-file`.

Which runs may write a committed stack file: only `up` (and so `provision`)
and `destroy`. A new stack's `pulumi stack init` records its secrets provider
(`secretsprovider`, `encryptedkey`/`encryptionsalt`) there, and the CLI may
set `encryptedkey` again on later updates: commit those lines. Previews and
refreshes only *look a stack up* and always hand the CLI a scratch copy of its
file: a stack that does not exist yet is planned in-process (``new_stack``),
not created.

Every preview and up runs the CrossGuard pack (``tenantctl.crossguard``):
CrossGuard judges each resource with resolved values right before `up`
creates or updates it, which the gate, judging the preview, cannot do for
values unknown until then.

`import pulumi.automation` happens inside methods: constructing the engine is
cheap and needs no CLI; the CLI is located on first use.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, nullcontext, suppress
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, Field

from tenantctl.engines.base import ChangeSet, Engine, EngineEvent, EventSink, UpResult
from tenantctl.engines.pulumi import cli as pulumi_cli
from tenantctl.engines.pulumi.errors import map_error
from tenantctl.engines.pulumi.events import ChangeCollector
from tenantctl.errors import ApplyFailed, InvalidInput, NotFound
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
    """Keyword arguments for Stack.preview/up/destroy/preview_refresh."""
    options: dict[str, Any] = {"on_event": collector, "color": "never", "suppress_progress": True}
    if refresh:
        options["refresh"] = True
    if config_file:
        options["config_file"] = config_file
    return options


def policy_options(pack: Path | None, waived: Collection[str], scratch: Path) -> dict[str, Any]:
    """Keyword arguments that run the CrossGuard pack (none without one): the
    rules waived around the call (deprovision lifting deletion protection) are
    disabled through the pack's config, written into ``scratch``."""
    if pack is None:
        return {}
    options: dict[str, Any] = {"policy_packs": [str(pack)]}
    if waived:
        config = scratch / "policy-pack-config.json"
        config.write_text(json.dumps({rule: {"enforcementLevel": "disabled"} for rule in sorted(waived)}))
        options["policy_pack_configs"] = [str(config)]
    return options


class PulumiEngine(Engine):
    name = "pulumi"

    def __init__(self, target: Any, project_dir: Path, pulumi_command: Any = None,
                 gate: Any = None, policy_pack: Path | None | Literal["bundled"] = "bundled") -> None:
        if getattr(target, "kind", None) != "aws":
            raise InvalidInput(f"the Pulumi engine drives the aws target only (got {getattr(target, 'kind', None)!r})")
        self.target = target
        self.project = Project.load(project_dir)
        backend_kind(target.aws.backend_url)  # refuse a malformed URL before anything runs
        self._command = pulumi_command
        self.gate = gate  # policy.PolicyGate: judges a preview's planned resources before every up
        if policy_pack == "bundled":
            from tenantctl.crossguard import pack_dir

            policy_pack = pack_dir()
        self.policy_pack = policy_pack  # the CrossGuard pack run by every preview and up (None: fail closed)

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
        from tenantctl.engines.pulumi.workspace import StackScopedWorkspace

        command = self._command or pulumi_cli.command(self.target.aws.pulumi_root)
        return StackScopedWorkspace(pulumi_command=command, **self.options.model_dump())

    def _stack(self, stack: str, create: bool) -> Any:
        """The stack, looked up; ``create``: created first when missing (`stack
        init`). Neither makes it the project's current stack (``workspace``)."""
        from pulumi.automation import Stack

        name = self.qualified(stack)
        try:
            return Stack.create_or_select(name, self.workspace) if create else Stack.select(name, self.workspace)
        except Exception as exc:
            raise map_error(exc, "create" if create else "select", name, self.backend) from None

    @contextmanager
    def _scratch(self, stack: str, copy_config: bool) -> Iterator[tuple[Path, str | None]]:
        """A scratch directory, and the `--config-file` to pass: the stack file with
        its platform reference qualified and its cell's account laid over it, or
        (``copy_config``) at least a copy, so the CLI writes nothing into the
        committed file."""
        from tenantctl.stackconfig import provider_config

        path = self.project.stack_file(stack)
        data = effective_config(path, self.qualified(PLATFORM_STACK), provider_config(self.project.stacks_dir, stack))
        with tempfile.TemporaryDirectory(prefix="tenantctl-pulumi-") as tmp:
            scratch = Path(tmp)
            config = scratch / path.name
            if data is not None:
                config.write_text(yaml.safe_dump(data, sort_keys=False))
            elif copy_config and path.is_file():
                shutil.copyfile(path, config)
            yield scratch, str(config) if config.exists() else None

    def _operate(self, action: str, stack: str, handle: Any, collector: ChangeCollector,
                 call: Callable[[Any, dict[str, Any]], Any], *, refresh: bool = False, scratch_config: bool = False,
                 policy: bool = False, require_summary: bool = False,
                 summary_ops: Collection[str] | None = None) -> Any:
        """Run one Automation API operation on ``handle`` (Ctrl-C safe), then turn
        what the events said into tenantctl's answer: a policy pack's mandatory
        violation is the gate's refusal (exit 8, rule named); otherwise a CLI
        failure is mapped (errors.py); an exception in the event handler fails
        the run, and so does (``require_summary``: a plan that is judged or
        reported) a missing summary or one counting more steps of
        ``summary_ops`` (default: all) than events arrived."""
        from tenantctl.policy import waived_rules

        with self._scratch(stack, copy_config=scratch_config) as (scratch, config_file):
            options = {**op_options(collector, refresh=refresh, config_file=config_file),
                       **(policy_options(self.policy_pack, waived_rules(), scratch) if policy else {})}
            try:
                result = pulumi_cli.run_cancellable(lambda: call(handle, options), handle.cancel)
            except Exception as exc:
                self._refuse_on_policy(action, stack, collector)
                raise map_error(exc, action, handle.name, self.backend) from None
        self._refuse_on_policy(action, stack, collector)
        collector.verify(action, require_summary=require_summary, ops=summary_ops)
        return result

    @staticmethod
    def _refuse_on_policy(action: str, stack: str, collector: ChangeCollector) -> None:
        from tenantctl.policy import PolicyRefused

        violations = collector.violations()
        if violations:
            raise PolicyRefused(stack, violations, changed_nothing=action != "up")

    # -- the gate -----------------------------------------------------------------
    def _plan(self, stack: str, on_event: EventSink | None, refresh: bool,
              create: bool) -> tuple[Any, Any, bool]:
        """Preview ``stack`` keeping each planned resource's inputs, and let the
        policy gate judge them (raises PolicyRefused); returns the plan, the
        stack handle (None: not created) and whether this call created the stack. A stack missing from the backend is
        planned in-process, not created; ``create`` (an up): the gate judges that
        plan first, then the stack is created and previewed by the CLI too, so a
        refusal never leaves an empty stack behind (one this call created is
        removed again when the CLI's preview fails or is refused)."""
        try:
            handle = self._stack(stack, create=False)
        except NotFound:
            plan = self._new_stack_plan(stack, on_event)
            self._judge(stack, plan, on_event)
            if not create:
                return plan, None, False
            handle = self._stack(stack, create=True)
            with self._removed_on_failure(stack):
                return self._cli_plan(stack, handle, on_event, refresh), handle, True
        return self._cli_plan(stack, handle, on_event, refresh), handle, False

    def _cli_plan(self, stack: str, handle: Any, on_event: EventSink | None, refresh: bool) -> Any:
        from tenantctl.engines.pulumi.plan import PlanCollector

        plan = PlanCollector(stack, on_event)
        self._operate("preview", stack, handle, plan, lambda s, o: s.preview(**o), refresh=refresh,
                      scratch_config=True, policy=True, require_summary=True)
        self._judge(stack, plan, on_event)
        return plan

    @contextmanager
    def _removed_on_failure(self, stack: str) -> Iterator[None]:
        """A stack created for an up (`stack init`, nothing in it yet) removed again when what runs
        before its first update fails or is refused: no empty stack is left behind on the backend."""
        try:
            yield
        except BaseException:
            with suppress(Exception):  # the failure is what the caller reports; a leftover empty stack is harmless
                self.workspace.remove_stack(self.qualified(stack), preserve_config=True)
            raise

    def _judge(self, stack: str, plan: Any, on_event: EventSink | None) -> None:
        if self.gate is None:
            return
        judgment = self.gate(stack, plan.planned(), judged_at_apply=self.policy_pack is not None)
        if judgment and judgment.unjudged and on_event is not None:
            rules = ", ".join(sorted({u.rule for u in judgment.unjudged}))
            on_event(EngineEvent(stack=stack, kind="diagnostic", message=(
                f"policy: {len(judgment.unjudged)} value(s) the rules need are unknown until apply (rule {rules}): "
                "the CrossGuard pack judges them as the up creates or updates each resource")))

    def _new_stack_plan(self, stack: str, on_event: EventSink | None) -> Any:
        from tenantctl.aws import Clients
        from tenantctl.engines.pulumi.new_stack import NewStackPlan, aws_invoke, plan_new_stack, project_program
        from tenantctl.stackconfig import program_config

        path = self.project.stack_file(stack)
        if not path.is_file():
            raise NotFound(f"stack {stack!r}: no stack file {path} and no stack on {self.backend}")
        config = program_config(path, self.project.name)
        region = str(config.get("aws:region") or self.target.aws.region or "")
        roles = config.get("aws:assumeRoles") or []  # a cell in another account: its invokes are answered there
        clients = Clients(region=region or None, profile=self.target.aws.profile).in_account(
            roles[0].get("roleArn") if roles else None, region or None)

        def references(name: str) -> dict[str, Any]:
            return self.outputs(name.rsplit("/", 1)[-1])

        mocks = NewStackPlan(stack, references, aws_invoke(clients, region), on_event)
        try:
            return plan_new_stack(stack, self.project.name, config, mocks, project_program(self.project.main))
        except Exception as exc:
            raise map_error(exc, "preview", self.qualified(stack), self.backend) from None

    # -- Engine -----------------------------------------------------------------
    def preview(self, stack: str, on_event: EventSink | None = None, *, refresh: bool = False,
                read: ChangeSet | None = None) -> ChangeSet:
        """What ``up`` would change, creating nothing (the stack is selected, never
        created); an unsafe plan fails here as it would fail ``up`` (so `apply
        --preview` on a pull request names the broken rule). ``read`` is not used:
        `pulumi preview --refresh` reads the live state itself."""
        return self._plan(stack, on_event, refresh, create=False)[0].changeset()

    def up(self, stack: str, on_event: EventSink | None = None, *, refresh: bool = False) -> UpResult:
        handle = None
        if self.gate is not None or self.approve is not None:
            # Preview first and let the gate judge the plan (and `approve` see
            # it): a refusal leaves AWS untouched.
            plan, handle, created = self._plan(stack, on_event, refresh, create=True)
            with self._removed_on_failure(stack) if created else nullcontext():
                self.planned(plan.changeset(), on_event)  # the approval: refused, the new stack goes again
        handle = handle or self._stack(stack, create=True)
        collector = ChangeCollector(stack, on_event)
        result = self._operate("up", stack, handle, collector, lambda s, o: s.up(**o), refresh=refresh, policy=True)
        outputs = {key: out.value for key, out in result.outputs.items()}
        return UpResult(stack=stack, outputs=outputs, changes=collector.changeset())

    def refresh(self, stack: str, on_event: EventSink | None = None, *, absent_ok: bool = False) -> ChangeSet:
        """Drift, changing nothing (`pulumi refresh --preview-only`): ``update``
        with the property diffs (recorded -> live) for a resource changed out of
        band, ``delete`` for one gone, ``same`` otherwise. A stack the backend
        does not have is an error (a record whose stack is gone is not "no
        drift"), or with ``absent_ok`` nothing to drift, as on the LocalEngine."""
        try:
            handle = self._stack(stack, create=False)
        except NotFound:
            if absent_ok:
                return ChangeSet(stack=stack)
            raise ApplyFailed(f"stack {stack}: not on {self.backend} (never applied there, or removed): "
                              "nothing to compare its live resources with") from None
        collector = ChangeCollector(stack, on_event)
        self._operate("refresh", stack, handle, collector, lambda s, o: s.preview_refresh(**o), scratch_config=True,
                      require_summary=True, summary_ops=("update", "delete"))
        return collector.changeset()

    def preview_destroy(self, stack: str, on_event: EventSink | None = None) -> ChangeSet:
        """What ``destroy`` would delete (`pulumi destroy --preview-only`), changing
        nothing; a stack the backend does not have has nothing to delete."""
        try:
            handle = self._stack(stack, create=False)
        except NotFound:
            return ChangeSet(stack=stack)
        collector = ChangeCollector(stack, on_event)
        self._operate("destroy", stack, handle, collector, lambda s, o: s.preview_destroy(**o), scratch_config=True,
                      require_summary=True, summary_ops=("delete",))
        return collector.changeset()

    def destroy(self, stack: str, on_event: EventSink | None = None) -> ChangeSet:
        """Delete the stack's resources, then the (empty) stack itself, keeping its
        committed config file (removing that is the caller's business). A stack
        that never existed has nothing to destroy; any failure of the destroy
        itself is reported, never read as "nothing there"."""
        try:
            handle = self._stack(stack, create=False)
        except NotFound:
            return ChangeSet(stack=stack)
        collector = ChangeCollector(stack, on_event)
        self._operate("destroy", stack, handle, collector, lambda s, o: s.destroy(**o))
        try:
            self.workspace.remove_stack(self.qualified(stack), preserve_config=True)
        except Exception as exc:
            raise map_error(exc, "stack rm", self.qualified(stack), self.backend) from None
        return collector.changeset()

    def outputs(self, stack: str) -> dict[str, Any]:
        """The stack's outputs; {} for a stack not created yet."""
        try:
            handle = self._stack(stack, create=False)
        except NotFound:
            return {}
        try:
            return {key: out.value for key, out in handle.outputs().items()}
        except Exception as exc:
            raise map_error(exc, "outputs", handle.name, self.backend) from None

    def holds_resources(self, stack: str) -> bool:
        """From `pulumi stack export` (a stack a preview created holds none)."""
        try:
            handle = self._stack(stack, create=False)
        except NotFound:
            return False
        try:
            resources = (handle.export_stack().deployment or {}).get("resources") or []
        except Exception as exc:
            raise map_error(exc, "stack export", handle.name, self.backend) from None
        return any(not r.get("type", "").startswith(("pulumi:pulumi:", "pulumi:providers:")) for r in resources)

    def prepare(self) -> None:
        """Install the provider plugins the program needs, once, before stacks run
        in parallel: concurrent first-use downloads of one plugin collide
        (pulumi/pulumi#22784)."""
        for name, version in provider_plugins():
            try:
                self.workspace.install_plugin(name, f"v{version}")
            except Exception as exc:
                raise map_error(exc, "plugin install", name, self.backend) from None


def provider_plugins() -> list[tuple[str, str]]:
    """(name, version) of the resource plugins the program's provider SDKs declare."""
    from importlib.metadata import version

    return [("aws", version("pulumi_aws"))]


def cli_available(root: Path | None = None) -> bool:
    try:
        pulumi_cli.locate(root)
    except Exception:
        return False
    return True


__all__ = ["PulumiEngine", "backend_kind", "stack_name", "workspace_options", "effective_config", "op_options",
           "policy_options", "provider_plugins", "cli_available"]
