"""Where a command runs: the project (Pulumi.yaml, stacks/), its target, the
target's engine and AWS clients, and the registry named by the platform stack.

Nothing here deploys anything as a side effect of being read: the platform is
brought up only through ``ensure_platform()``, which provisioning calls.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from tenantctl.aws import Clients
from tenantctl.engines.base import Approval, Engine, EventSink
from tenantctl.errors import TargetUnavailable
from tenantctl.naming import PLATFORM_STACK
from tenantctl.project import PROJECT_FILE, Project, ensure_project_file, find_root
from tenantctl.registry import RegistryWriter

# Platform outputs the sandbox must have: a platform applied before one of them
# existed is applied again (on AWS that is `tenantctl platform up`'s job).
PLATFORM_OUTPUTS = ("registry_table", "revocation_table", "gateway_secret_arn")


class Workspace:
    """``approve``: handed to the engine as its approve hook (``Engine.approve``):
    what may go ahead when an up's plan deletes or replaces something."""

    def __init__(self, project_dir: Path | None = None, cwd: Path | None = None,
                 approve: Approval | None = None) -> None:
        from tenantctl.target import load_target

        self.cwd = cwd or Path.cwd()
        self.project_dir = project_dir or find_root(self.cwd)
        self.target = load_target(self.cwd)
        self._approve = approve

    @property
    def approve(self) -> Approval | None:
        return self._approve

    @approve.setter
    def approve(self, hook: Approval | None) -> None:
        self._approve = hook
        if "engine" in self.__dict__:  # already opened
            self.engine.approve = hook

    @property
    def stacks_dir(self) -> Path:
        if (self.project_dir / PROJECT_FILE).is_file():
            return Project.load(self.project_dir).stacks_dir
        return self.project_dir / "stacks"  # what ensure_project_file will declare

    @property
    def is_sandbox(self) -> bool:
        return self.target.kind == "sandbox"

    @cached_property
    def sandbox(self) -> Any:
        """The running sandbox's endpoints (started when needed); sandbox targets only."""
        if not self.is_sandbox:
            raise TargetUnavailable("this target is AWS, not the sandbox")
        from tenantctl.sandbox import ensure_running, resolve_state_dir

        return ensure_running(resolve_state_dir(self.target.sandbox.state_dir, self.project_dir))

    @cached_property
    def engine(self) -> Engine:
        from tenantctl.engines import open_engine

        ensure_project_file(self.project_dir)
        engine = open_engine(self.target, self.project_dir, sandbox=self.sandbox if self.is_sandbox else None)
        engine.approve = self.approve
        return engine

    @cached_property
    def client(self) -> Clients:
        """``ws.client("s3", region=None)``: a client of the target's account."""
        if self.is_sandbox:
            env = self.sandbox.aws_env()
            return Clients(region=self.sandbox.region, endpoint_url=self.sandbox.aws_endpoint_url,
                           credentials=(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]))
        return Clients(region=self.target.aws.region, profile=self.target.aws.profile)

    def platform_outputs(self) -> dict[str, Any]:
        """The platform stack's outputs; {} before it was first applied."""
        return self.engine.outputs(PLATFORM_STACK)

    def ensure_platform(self, on_event: EventSink | None = None) -> dict[str, Any]:
        """The platform's outputs, applying it first on the sandbox when it is not up
        yet (or was applied by a tenantctl that did not export every output yet)."""
        outputs = self.platform_outputs()
        if outputs.get("registry_table") and (not self.is_sandbox or all(outputs.get(k) for k in PLATFORM_OUTPUTS)):
            return outputs
        if not self.is_sandbox:
            raise TargetUnavailable(
                "the platform stack has no outputs on this target: run `tenantctl platform up` first")
        from tenantctl.stackconfig import stack_file, write_platform

        if not stack_file(self.stacks_dir, PLATFORM_STACK).exists():
            from tenantctl.models import PlatformSpec

            write_platform(self.stacks_dir, PlatformSpec())
        outputs = self.engine.up(PLATFORM_STACK, on_event=on_event).outputs
        self.__dict__.pop("registry", None)
        return outputs

    @cached_property
    def registry(self) -> RegistryWriter:
        table = self.platform_outputs().get("registry_table")
        if not table:
            raise TargetUnavailable("no platform is deployed on this target yet, so there is no registry: "
                                    "`tenantctl provision` (or `tenantctl platform up`) deploys it")
        return RegistryWriter(table, client=self.client("dynamodb"))
