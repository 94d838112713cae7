"""Where a command runs: the project (Pulumi.yaml, stacks/), the target, its
engine, and the registry table named by the platform stack's outputs."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from tenantctl.engines.base import Engine, EventSink
from tenantctl.errors import TargetUnavailable
from tenantctl.registry import RegistryWriter
from tenantctl.stackconfig import PLATFORM_STACK, stack_file, write_platform


class Workspace:
    def __init__(self, project_dir: Path | None = None, cwd: Path | None = None) -> None:
        from tenantctl.target import load_target, project_root

        self.cwd = cwd or Path.cwd()
        self.project_dir = project_dir or project_root(self.cwd)
        self.target = load_target(self.cwd)

    @property
    def stacks_dir(self) -> Path:
        return self.project_dir / "stacks"

    @property
    def is_sandbox(self) -> bool:
        return self.target.kind == "sandbox"

    @cached_property
    def engine(self) -> Engine:
        from tenantctl.target import ensure_project_file, open_engine

        ensure_project_file(self.project_dir)
        engine = open_engine(self.target, self.project_dir)
        endpoints = getattr(engine, "endpoints", None)
        if endpoints is not None:
            # The registry writer and the providers' boto3 clients talk to the
            # same sandbox the engine materialises resources on.
            os.environ.update(endpoints.aws_env())
        return engine

    def platform_outputs(self, on_event: EventSink | None = None) -> dict[str, Any]:
        """The platform stack's outputs; on the sandbox it is applied on first use."""
        outputs = self.engine.outputs(PLATFORM_STACK)
        if outputs.get("registry_table"):
            return outputs
        if not self.is_sandbox:
            raise TargetUnavailable(
                "the platform stack has no outputs on this target: run `tenantctl platform up` first"
            )
        if not stack_file(self.stacks_dir, PLATFORM_STACK).exists():
            from tenantctl.models import PlatformSpec

            write_platform(self.stacks_dir, PlatformSpec())
        return self.engine.up(PLATFORM_STACK, on_event=on_event).outputs

    @cached_property
    def registry(self) -> RegistryWriter:
        return RegistryWriter(self.platform_outputs()["registry_table"])
