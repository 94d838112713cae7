"""The LocalWorkspace the PulumiEngine drives: one that never changes the
project's current stack.

``LocalWorkspace.select_stack`` runs ``pulumi stack select`` and
``create_stack`` a ``pulumi stack init`` that selects the new stack: both make
it the project's current stack, a rewrite (truncate, then write) of the one
``~/.pulumi/workspaces/<project>-<hash>-workspace.json`` that every CLI
command of the project reads first. tenantctl runs one project's stacks at
once (`apply` in worker processes, `refresh` in threads), so one run's select
can hand another a half-written file (pulumi/pulumi#8186). Every operation
names its stack (``--stack``), so none needs a current one: a stack is looked
up with ``pulumi stack --stack <name> --show-name`` (what the SDK's remote
workspaces run to check a stack exists; the CLI's ``RequireStack`` without
``SetCurrent``: it fails with ``no stack named '<name>' found``, which the SDK
raises as StackNotFoundError), and created with ``--no-select``.

Imported only when the engine first needs the workspace: it imports pulumi.
"""

from __future__ import annotations

from pulumi.automation import LocalWorkspace


class StackScopedWorkspace(LocalWorkspace):
    """A LocalWorkspace whose stack selection and creation leave the
    project's current stack alone (``Stack.select`` / ``create_or_select``
    work on it unchanged)."""

    def select_stack(self, stack_name: str) -> None:
        self._run(["stack", "--stack", stack_name, "--show-name"])

    def create_stack(self, stack_name: str) -> None:
        args = ["stack", "init", stack_name, "--no-select"]
        if self.secrets_provider:
            args.extend(["--secrets-provider", self.secrets_provider])
        self._run(args)

    def _run(self, args: list[str]) -> None:
        env = {**({"PULUMI_HOME": self.pulumi_home} if self.pulumi_home else {}), **self.env_vars}
        self.pulumi_command.run(args, self.work_dir, env)


__all__ = ["StackScopedWorkspace"]
