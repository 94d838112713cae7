"""The preview of a stack that does not exist on the backend yet.

A pull request's `apply --preview` runs for tenants not merged yet; a
``pulumi preview`` needs the stack, and creating it (``stack init``) would
change the shared backend and, with a secrets provider, write
``encryptedkey``/``encryptionsalt`` into the committed stack file. So such a
stack is planned without the CLI: the program runs in-process under Pulumi
mocks (as the LocalEngine's plan pass does), every custom resource a create
with its not-yet-known outputs unknown. The platform StackReference is
answered with the platform stack's outputs read from the backend (select
only), provider functions (account, zones, region) from AWS with the target's
credentials. The policy gate then judges this plan as it judges a CLI preview.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi

from tenantctl.engines.base import ChangeSet, EngineEvent, EventSink, Op, ResourceChange
from tenantctl.policy import PlannedResource, planned_resource

STACK_REFERENCE = "pulumi:pulumi:StackReference"

Invoke = Callable[[str, dict[str, Any]], dict[str, Any]]


class NewStackPlan(pulumi.runtime.Mocks):
    """Mocks that record the program's resources as creates (custom resources
    planned for the gate, components in the change set too, as the CLI counts
    them). ``references``: a referenced stack's name -> its outputs; ``invoke``:
    a provider function's token and args -> its result."""

    def __init__(self, stack: str, references: Callable[[str], dict[str, Any]], invoke: Invoke,
                 sink: EventSink | None = None) -> None:
        self.stack, self.references, self.invoke, self.sink = stack, references, invoke, sink
        self._planned: list[PlannedResource] = []
        self._changes: list[ResourceChange] = []
        self._lock = threading.Lock()  # new_resource runs on several executor threads

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        if args.typ == STACK_REFERENCE:
            name = str(args.inputs.get("name") or args.name)
            return name, {"name": name, "outputs": self.references(name), "secretOutputNames": []}
        with self._lock:
            if args.custom is not False:  # not a ComponentResource
                self._planned.append(planned_resource(args.typ, args.name, dict(args.inputs)))
            self._changes.append(ResourceChange(op=Op.create, type=args.typ, name=args.name))
        if self.sink is not None:
            self.sink(EngineEvent(stack=self.stack, kind="resource-pre", op=Op.create, type=args.typ, name=args.name))
        return "", dict(args.inputs)  # an empty id and the missing outputs are unknown in a preview

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list]:
        return self.invoke(args.token, dict(args.args)), []

    def planned(self) -> list[PlannedResource]:
        with self._lock:
            return list(self._planned)

    def changeset(self) -> ChangeSet:
        with self._lock:
            return ChangeSet(stack=self.stack, changes=list(self._changes))


def aws_invoke(clients: Any, region: str) -> Invoke:
    """Provider functions answered from the account (``clients``: ``aws.Clients``)."""
    from types import SimpleNamespace

    from tenantctl.engines.local.handlers.invokes import INVOKES

    context = SimpleNamespace(client=clients, region=region)

    def invoke(token: str, args: dict[str, Any]) -> dict[str, Any]:
        if token not in INVOKES:
            raise NotImplementedError(f"provider function {token} cannot be answered for a new stack's preview")
        return INVOKES[token](context, args)

    return invoke


def project_program(main: Path) -> Callable[[str], dict[str, Any]]:
    """The project's program (Pulumi.yaml ``main``: infra/, or the installed
    infra package) run as the Python language host runs it."""

    def program(stack: str) -> dict[str, Any]:
        import runpy

        runpy.run_path(str(main / "__main__.py" if main.is_dir() else main), run_name="__main__")
        return {}  # its exports are not part of a plan

    return program


def plan_new_stack(stack: str, project: str, config: dict[str, Any], mocks: NewStackPlan,
                   program: Callable[[str], dict[str, Any]]) -> NewStackPlan:
    """Run ``program`` for ``stack`` under ``mocks``, one in-process run at a
    time (Pulumi's runtime is process-global)."""
    from tenantctl.engines.local import runtime
    from tenantctl.engines.local.engine import RUN_LOCK

    with RUN_LOCK:
        runtime.run_program(program, project, stack, config, mocks, threading.local(), preview=True)
    if mocks.sink is not None:
        text = ", ".join(f"{n} {op}" for op, n in mocks.changeset().summary().items()) or "no resources"
        mocks.sink(EngineEvent(stack=stack, kind="summary", message=f"{text} (new stack, not created by the preview)"))
    return mocks
