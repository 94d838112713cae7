"""The apply pass runs the cloud calls of resources that do not depend on
each other concurrently, each behind its intent on disk, and one that
depends on them after they exist."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, ClassVar

import pulumi

from tenantctl.engines.local import handlers, passes, runtime
from tenantctl.engines.local.handlers.base import Context, Desired, Handler
from tenantctl.engines.local.state import StackState, StateFile

TYPE = "test:index:Slow"


class Slow(Handler):
    """Makes a resource only once ``together`` resources are inside ``make`` at the same time."""

    type: ClassVar[str] = TYPE

    def __init__(self, together: int, file: StateFile) -> None:
        self.barrier = threading.Barrier(together, timeout=10)
        self.file = file
        self.intents: dict[str, str] = {}
        self.made: list[str] = []

    def make(self, ctx: Context, d: Desired) -> str:
        on_disk = {r["urn"]: r["status"] for r in json.loads(self.file.path.read_text())["resources"]}
        self.intents[d.name] = on_disk.get(d.urn, "absent")
        if d.inputs.get("after") is None:  # the independent ones wait for each other: a serial pass times out
            self.barrier.wait()
        self.made.append(d.name)
        return f"{d.name}-id"

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        return {"arn": f"arn:test:{d.name}"}


def test_independent_creates_run_together_each_behind_its_intent(tmp_path: Path, monkeypatch) -> None:
    file = StateFile(tmp_path, "dev")
    handler = Slow(3, file)
    monkeypatch.setitem(handlers.HANDLERS, TYPE, handler)
    monkeypatch.setattr(passes, "HANDLERS", handlers.HANDLERS)
    state = StackState(stack="dev")
    ctx = Context(region="us-east-1", client=lambda s: None, pg_connect=lambda *a: None,
                  pg_endpoint=("", 0, "", "", ""), stack_outputs=lambda s: {})
    run = passes.ApplyPass("dev", state, ctx, None, file)

    def program(stack: str) -> dict:
        made = [pulumi.CustomResource(TYPE, f"r{i}", {"after": None, "arn": None}) for i in range(3)]
        last = pulumi.CustomResource(TYPE, "last", {"after": pulumi.Output.all(*[m.arn for m in made]),
                                                    "arn": None})
        return {"arn": last.arn}

    outputs = runtime.run_program(program, "proj", "dev", {}, run, run.current, preview=False)

    assert outputs == {"arn": "arn:test:last"}
    assert handler.made[-1] == "last" and sorted(handler.made[:3]) == ["r0", "r1", "r2"]
    assert handler.intents == {"r0": "creating", "r1": "creating", "r2": "creating", "last": "creating"}
    assert run.error is None and {s.name: s.op.value for s in run.changes} == dict.fromkeys(handler.intents, "create")
    assert [r.status for r in state.resources] == ["created"] * 4 and run.made == set(run.registered)
