"""A stand-in for the Pulumi CLI binary, for the PulumiEngine's tests.

The real CLI cannot be installed here, so the engine is tested up to the CLI
boundary: ``FakeCli`` writes an executable ``<root>/bin/pulumi`` that the real
Automation API SDK (``pulumi.automation``) runs as it would run the CLI. It
answers ``version``, ``stack`` (``--show-name``), ``stack select/init/output/
history/rm``, ``cancel`` and ``plugin install``, and for ``preview``/``up``/``refresh``/``destroy`` replays a
scripted engine-event stream to the ``--event-log`` the SDK asked for: over
gRPC to the SDK's events server for a CLI >= 3.206, as JSON lines ending in a
``cancelEvent`` for older ones (the default here, 3.205: no gRPC import in
every fake command, which keeps these tests fast). Every invocation's
arguments are logged, so tests see which commands ran.

``backend_error``: the backend cannot be logged in to (e.g. Pulumi Cloud
without a token: the CLI, always run ``--non-interactive`` by the SDK, says
``PULUMI_ACCESS_TOKEN must be set for login during non-interactive CLI
sessions``): every command but ``version`` and ``plugin`` fails with it.

A ``--policy-pack`` is started as the real CLI starts a Python pack: the
legacy shim ``pulumi-analyzer-policy-python`` (still used for python, see
sdk/go/common/resource/plugin/analyzer_plugin.go ``NewPolicyAnalyzer``) runs
``python3 -u -m pulumi.policy`` with the first ``python3`` on the CLI's PATH,
not ``PULUMI_PYTHON_CMD`` (sdk/python/dist/pulumi-analyzer-policy-python);
``policy_pythons`` records which ``python3`` that is (a virtualenv's is its
bin/python3: resolving the link would lose the virtualenv).

Like the real CLI, ``stack select`` and ``stack init`` (unless ``--no-select``)
make the stack the project's *current* stack, a write of the one per-project
``~/.pulumi/workspaces/<project>-<hash>-workspace.json`` that every command
reads (pkg/cmd/pulumi/stack/stack_select.go, io.go ``CreateStack``:
``state.SetCurrentStack``); ``current_writes`` counts those writes. ``pulumi
stack --stack X --show-name`` only looks the stack up (``RequireStack``, no
``SetCurrent``): the name, or ``no stack named 'X' found``.

The event builders produce the JSON the CLI writes (sdk/go/common/apitype/
events.go): ``custom`` omitted when false, ``detailedDiff`` keyed by property
path, the summary's ``resourceChanges`` counting logical steps. The sequences
follow the engine's step order:

- ``replacement``: ``create-replacement`` and ``replace`` where the resource
  registers, ``delete-replaced`` (old state, no ``new``) after every other
  create and update (pkg/resource/deploy/step_generator.go);
- ``refreshed``: ``refresh`` pre events, the outputs event carrying the result
  op (``same``/``update``/``delete``) and its diffs (pkg/engine/update.go,
  pkg/resource/deploy/step.go);
- ``summary``: logical steps only, so a replacement counts once, as ``replace``
  (pkg/engine/update.go ``OnResourceStepPost``).
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

PROJECT = "tenantctl"

_SCRIPT = r'''#!{python}
import json, os, sys, time

args = sys.argv[1:]
if args and args[0] == "--non-interactive":
    args = args[1:]
scenario_path = os.environ["FAKE_PULUMI_SCENARIO"]
with open(scenario_path) as f:
    scenario = json.load(f)
with open(os.environ["FAKE_PULUMI_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")


def opt(name):
    return args[args.index(name) + 1] if name in args else None


def short(name):
    return name.rsplit("/", 1)[-1]


def save():
    with open(scenario_path, "w") as f:
        json.dump(scenario, f)


def finish(out="", err="", code=0):
    sys.stdout.write(out)
    sys.stderr.write(err)
    sys.exit(code)


def emit(events, target):
    if target is None:
        return
    if target.startswith("tcp://"):
        import grpc
        from pulumi.runtime.proto import events_pb2, events_pb2_grpc

        with grpc.insecure_channel(target[len("tcp://"):]) as channel:
            events_pb2_grpc.EventsStub(channel).StreamEvents(
                iter([events_pb2.EventRequest(event=json.dumps(e)) for e in events]))
    else:
        with open(target, "a") as f:
            for e in events + [{{"sequence": len(events) + 1, "timestamp": 0, "cancelEvent": {{}}}}]:
                f.write(json.dumps(e) + "\n")


stack = opt("--stack")
if args[0] == "version":
    finish("v" + scenario["version"] + "\n")
if scenario.get("backend_error") and args[0] not in ("plugin",):
    # Every command that needs the backend logs in to it first (cmdBackend.CurrentBackend).
    finish(err="error: " + scenario["backend_error"] + "\n", code=255)
if args[0] == "stack" and "--show-name" in args:
    if short(stack) not in scenario["stacks"]:
        finish(err=f"error: no stack named '{{stack}}' found\n", code=255)
    finish(short(stack) + "\n")
if args[:2] == ["stack", "select"]:
    if short(stack) not in scenario["stacks"]:
        finish(err=f"error: no stack named '{{stack}}' found\n", code=255)
    scenario["current_writes"].append(stack)
    save()
    finish()
if args[:2] == ["stack", "init"]:
    scenario["stacks"].append(short(args[2]))
    if "--no-select" not in args:
        scenario["current_writes"].append(args[2])
    save()
    finish()
if args[:2] == ["stack", "output"]:
    finish(json.dumps(scenario["outputs"].get(short(stack), {{}})))
if args[:2] == ["stack", "export"]:
    state = scenario.get("states", {{}}).get(short(stack), [])
    finish(json.dumps({{"version": 3, "deployment": {{"resources": state}}}}))
if args[:2] == ["stack", "history"]:
    finish(json.dumps([{{"kind": "update", "startTime": "2026-01-01T00:00:00.000Z", "message": "",
                        "environment": {{}}, "config": {{}}, "result": "succeeded",
                        "endTime": "2026-01-01T00:00:01.000Z", "version": 1}}]))
if args[:2] == ["stack", "rm"]:
    scenario["stacks"] = [s for s in scenario["stacks"] if s != short(args[-1])]
    save()
    finish()
if args[0] in ("cancel", "plugin"):
    finish()
if args[0] in ("preview", "up", "refresh", "destroy"):
    kind = "preview-" + args[0] if args[0] in ("refresh", "destroy") and "--preview-only" in args else args[0]
    runs = scenario["runs"].get(kind) or [{{"events": []}}]
    count = scenario["counts"].get(kind, 0)
    scenario["counts"][kind] = count + 1
    save()
    run = runs[min(count, len(runs) - 1)]
    if "--policy-pack" in args:
        import shutil
        found = shutil.which("python3", path=os.environ.get("PATH", ""))
        scenario["policy_pythons"].append(found)
        save()
    config_file = opt("--config-file")
    if run.get("touch_config"):  # the CLI re-setting encryptedkey in the stack file it reads
        path = config_file or os.path.join("stacks", "Pulumi." + short(stack) + ".yaml")
        with open(path, "a") as f:
            f.write("encryptedkey: " + run["touch_config"] + "\n")
    time.sleep(run.get("seconds", 0))
    emit(run.get("events", []), opt("--event-log"))
    finish(run.get("stdout", ""), run.get("stderr", ""), run.get("code", 0))
finish(err="error: fake pulumi: unexpected command " + " ".join(args) + "\n", code=2)
'''


class FakeCli:
    """``root``: what ``TENANTCTL_PULUMI_ROOT`` / the target's ``pulumi_root``
    names. ``script(kind, *runs)``: what the n-th ``preview`` / ``up`` /
    ``preview-refresh`` / ``destroy`` / ``preview-destroy`` does (the last one repeats)."""

    def __init__(self, tmp: Path, monkeypatch: Any, version: str = "3.205.0", stacks: tuple[str, ...] = ()) -> None:
        self.root = tmp / "pulumi-cli"
        (self.root / "bin").mkdir(parents=True)
        self.binary = self.root / "bin" / "pulumi"
        self.binary.write_text(_SCRIPT.format(python=sys.executable))
        self.binary.chmod(self.binary.stat().st_mode | stat.S_IXUSR)
        self.scenario_path, self.log_path = tmp / "fake-pulumi.json", tmp / "fake-pulumi.log"
        self.log_path.touch()
        self._write({"version": version, "stacks": list(stacks), "outputs": {}, "runs": {}, "counts": {},
                     "current_writes": [], "policy_pythons": []})
        monkeypatch.setenv("FAKE_PULUMI_SCENARIO", str(self.scenario_path))
        monkeypatch.setenv("FAKE_PULUMI_LOG", str(self.log_path))

    def _read(self) -> dict[str, Any]:
        return json.loads(self.scenario_path.read_text())

    def _write(self, scenario: dict[str, Any]) -> None:
        self.scenario_path.write_text(json.dumps(scenario))

    def update(self, **changes: Any) -> None:
        self._write({**self._read(), **changes})

    def script(self, kind: str, *runs: dict[str, Any]) -> None:
        scenario = self._read()
        scenario["runs"][kind] = list(runs)
        self._write(scenario)

    def outputs(self, stack: str, values: dict[str, Any]) -> None:
        scenario = self._read()
        scenario["outputs"][stack] = values
        self._write(scenario)

    def exported(self, stack: str, resources: list[dict[str, Any]]) -> None:
        """What `pulumi stack export` says the stack's state holds (its ``resources``)."""
        scenario = self._read()
        scenario.setdefault("states", {})[stack] = resources
        self._write(scenario)

    @property
    def stacks(self) -> list[str]:
        return self._read()["stacks"]

    @property
    def policy_pythons(self) -> list[str | None]:
        """The ``python3`` each ``--policy-pack`` run started the pack with, in order."""
        return self._read()["policy_pythons"]

    @property
    def current_writes(self) -> list[str]:
        """The stacks made the project's current one (each a workspace.json write), in order."""
        return self._read()["current_writes"]

    def commands(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def ran(self, *prefix: str) -> list[list[str]]:
        return [c for c in self.commands() if c[:len(prefix)] == list(prefix)]


# -- the JSON the CLI writes (sdk/go/common/apitype/events.go) ------------------------------------------

def urn(stack: str, typ: str, name: str, parent: str = "") -> str:
    chain = f"{parent}${typ}" if parent else typ
    return f"urn:pulumi:{stack}::{PROJECT}::{chain}::{name}"


def state(typ: str, urn_: str, inputs: dict[str, Any] | None = None, outputs: dict[str, Any] | None = None,
          custom: bool = True, resource_id: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"type": typ, "urn": urn_, "id": resource_id, "parent": "", "provider": "",
                            "inputs": inputs or {}, "outputs": outputs or {}}
    if custom:  # `json:"custom,omitempty"`: a component's state has no `custom` at all
        body["custom"] = True
    return body


def step(op: str, urn_: str, typ: str, old: dict | None = None, new: dict | None = None, **extra: Any) -> dict:
    meta: dict[str, Any] = {"op": op, "urn": urn_, "type": typ, "provider": ""}
    if old is not None:
        meta["old"] = old
    if new is not None:
        meta["new"] = new
    meta.update(extra)
    return meta


def pre(meta: dict[str, Any]) -> dict[str, Any]:
    return {"resourcePreEvent": {"metadata": meta, "planning": True}}


def done(meta: dict[str, Any]) -> dict[str, Any]:
    return {"resOutputsEvent": {"metadata": meta, "planning": True}}


def summary(changes: dict[str, int] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"maybeCorrupt": False, "durationSeconds": 1, "PolicyPacks": {}}
    if changes is not None:
        body["resourceChanges"] = changes
    return {"summaryEvent": body}


def policy_violation(urn_: str, rule: str, detail: str, level: str = "mandatory") -> dict[str, Any]:
    """A policyEvent as the engine reports an analyzer's diagnostic: the policy's
    description, then the violation (pulumi_policy ``report_violation``)."""
    return {"policyEvent": {"resourceUrn": urn_, "message": f"tenantctl isolation rule {rule}\n{detail}",
                            "color": "raw", "policyName": rule, "policyPackName": "tenantctl-isolation",
                            "policyPackVersion": "0.0.1", "policyPackVersionTag": "0.0.1", "enforcementLevel": level}}


def numbered(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"sequence": i + 1, "timestamp": 0, **e} for i, e in enumerate(events)]


# -- whole streams ---------------------------------------------------------------------------------------

def stack_step(stack: str, op: str = "same") -> dict[str, Any]:
    u = urn(stack, "pulumi:pulumi:Stack", f"{PROJECT}-{stack}")
    return step(op, u, "pulumi:pulumi:Stack", new=state("pulumi:pulumi:Stack", u, custom=False))


def preview_stream(stack: str, resources: list[dict[str, Any]], later: list[dict[str, Any]] = ()) -> list[dict]:
    """A preview: the stack resource, then each resource's steps as it registers
    (``resources``: lists of (kind, meta) pairs from ``planned``/``replacement``),
    then the steps generated after all creates and updates (``later``: a
    replacement's ``delete-replaced``), then the summary of logical steps."""
    events: list[dict[str, Any]] = [{"preludeEvent": {"config": {}}}, pre(stack_step(stack))]
    counts: dict[str, int] = {"same": 1}
    for steps in [*resources, *later]:
        for kind, meta in steps:
            events.append(pre(meta) if kind == "pre" else done(meta))
            if kind == "pre" and meta["op"] not in NOT_LOGICAL:
                counts[meta["op"]] = counts.get(meta["op"], 0) + 1
    events.append(summary(counts))
    return numbered(events)


# Steps that are not logical operations: the summary does not count them.
NOT_LOGICAL = {"create-replacement", "delete-replaced", "read-replacement", "import-replacement",
               "discard-replaced", "remove-pending-replace"}


def planned(stack: str, typ: str, name: str, inputs: dict[str, Any], op: str = "create",
            old_inputs: dict[str, Any] | None = None, custom: bool = True, **extra: Any) -> list[tuple[str, dict]]:
    """One resource's steps in a preview: its pre event, and for a custom
    resource an outputs event (the engine shows outputs for custom resources)."""
    u = urn(stack, typ, name)
    old = state(typ, u, old_inputs, old_inputs, custom) if old_inputs is not None else None
    meta = step(op, u, typ, old=old, new=state(typ, u, inputs, custom=custom), **extra)
    return [("pre", meta)] + ([("done", meta)] if custom else [])


def replacement(stack: str, typ: str, name: str, old_inputs: dict[str, Any], new_inputs: dict[str, Any],
                keys: list[str]) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """A create-before-delete replacement: (the steps where it registers, the
    ``delete-replaced`` step generated after every other create and update)."""
    u = urn(stack, typ, name)
    old, new = state(typ, u, old_inputs, old_inputs), state(typ, u, new_inputs)
    detailed = {k: {"diffKind": "update-replace", "inputDiff": True} for k in keys}
    create = step("create-replacement", u, typ, old=old, new=new, keys=keys, diffs=keys, detailedDiff=detailed)
    replace = step("replace", u, typ, old=old, new=new, keys=keys, diffs=keys, detailedDiff=detailed, logical=True)
    delete = step("delete-replaced", u, typ, old={**old, "delete": True})
    return [("pre", create), ("done", create), ("pre", replace), ("done", replace)], [("pre", delete), ("done", delete)]


def refreshed(stack: str, typ: str, name: str, recorded: dict[str, Any], live: dict[str, Any] | None,
              detailed: dict[str, str] | None = None, resource_id: str = "") -> list[dict[str, Any]]:
    """One resource in `pulumi refresh --preview-only`: the pre event's op is
    ``refresh``; the outputs event's op is the result (``live`` None: gone)."""
    u = urn(stack, typ, name)
    old = state(typ, u, recorded, recorded, resource_id=resource_id)
    first = step("refresh", u, typ, old=old, new=old)
    if live is None:
        result = step("delete", u, typ, old=old)
    elif detailed:
        diff = {path: {"diffKind": kind, "inputDiff": False} for path, kind in detailed.items()}
        result = step("update", u, typ, old=old, new=state(typ, u, recorded, live),
                      diffs=sorted({p.split(".")[0].split("[")[0] for p in detailed}), detailedDiff=diff)
    else:
        result = step("same", u, typ, old=old, new=old)
    return [pre(first), done(result)]


def refresh_stream(stack: str, resources: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [{"preludeEvent": {"config": {}}}]
    counts: dict[str, int] = {}
    for pair in resources:
        events += pair
        op = pair[-1]["resOutputsEvent"]["metadata"]["op"]
        counts[op] = counts.get(op, 0) + 1
    events.append(summary(counts))
    return numbered(events)
