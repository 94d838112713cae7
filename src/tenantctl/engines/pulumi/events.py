"""Pulumi engine events (pulumi.automation.events) -> tenantctl EngineEvents,
and the ChangeSet an operation leaves behind.

What the Pulumi CLI sends, and in which order, is what this module reads:

- a replacement is ``create-replacement``, ``replace`` and, after every other
  create and update, ``delete-replaced`` for the same URN, the last one with
  no ``new`` state (pkg/resource/deploy/step_generator.go);
- in a refresh the outputs event carries the refresh's result as its op
  (``same``, ``update``, ``delete``) with ``diffs``/``detailedDiff``, while
  ``preview --refresh`` keeps the op ``refresh`` (pkg/engine/update.go,
  pkg/resource/deploy/step.go);
- the summary event counts each logical step by op (pkg/engine/update.go):
  fewer events than it counts means some were lost;
- CLIs >= 3.206 stream events over gRPC and the SDK's servicer only *warns*
  about an exception raised by ``on_event`` and drops the event
  (pulumi/automation/_stack.py ``_EventsServicer``); older CLIs' log watcher
  thread dies on one. So the collector never raises into the SDK: it records
  the exception and ``verify`` raises it once the command returned.

Only the attributes of the event objects are read here, so this module imports
nothing from pulumi at load time: the CLI path stays fast.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Collection
from typing import Any

from tenantctl.engines.base import ChangeSet, EngineEvent, EventSink, Op, PropertyDiff, ResourceChange, resource_arn
from tenantctl.engines.diffs import SECRET
from tenantctl.engines.diffs import UNKNOWN_TEXT as DIFF_UNKNOWN_TEXT
from tenantctl.errors import ApplyFailed

# Pulumi's step ops (OpType values) folded onto the five the CLI draws.
_OPS: dict[str, Op] = {
    "same": Op.same,
    "read": Op.same,
    "refresh": Op.same,
    "create": Op.create,
    "import": Op.create,
    "update": Op.update,
    "delete": Op.delete,
    "discard": Op.delete,
    "replace": Op.replace,
    "create-replacement": Op.replace,
    "delete-replaced": Op.replace,
    "read-replacement": Op.replace,
    "import-replacement": Op.replace,
    "discard-replaced": Op.replace,
    "remove-pending-replace": Op.replace,
}

# Bookkeeping resources that are not part of a tenant's slice.
_HIDDEN_TYPES = ("pulumi:pulumi:Stack",)
_HIDDEN_PREFIXES = ("pulumi:providers:",)

# Colour directives (`<{%fg 1%}>`) that survive in diagnostic text.
_COLOR = re.compile(r"<\{%[^%]*%\}>")

SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's signature key of a serialised secret
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # Pulumi's unknown value, as the engine serialises it
SECRET_TEXT, UNKNOWN_TEXT = SECRET, DIFF_UNKNOWN_TEXT  # as both engines' diffs spell them
MANDATORY = "mandatory"


def _op_value(op: Any) -> str:
    return str(getattr(op, "value", op))


def map_op(op: Any) -> Op:
    return _OPS.get(_op_value(op), Op.same)


def urn_name(urn: str) -> str:
    """The resource's logical name: the last `::` segment of its URN."""
    return urn.rsplit("::", 1)[-1] if urn else ""


def is_hidden(resource_type: str) -> bool:
    return resource_type in _HIDDEN_TYPES or resource_type.startswith(_HIDDEN_PREFIXES)


def clean(message: str) -> str:
    return _COLOR.sub("", message or "").strip()


def policy_detail(message: str) -> str:
    """What a policy reported: the CLI's message is the policy's description,
    then the violation on its own line (pulumi_policy ``report_violation``)."""
    lines = [line.strip() for line in clean(message).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def translate(stack: str, event: Any) -> EngineEvent | None:
    """One pulumi.automation.events.EngineEvent -> an EngineEvent, or None when it
    carries nothing the CLI draws (prelude, stdout chatter, debug diagnostics)."""
    for kind, step in (("resource-pre", event.resource_pre_event), ("resource-done", event.res_outputs_event)):
        if step is not None:
            meta = step.metadata
            if is_hidden(meta.type):
                return None
            return EngineEvent(stack=stack, kind=kind, op=map_op(meta.op), type=meta.type, name=urn_name(meta.urn))
    if event.res_op_failed_event is not None:
        meta = event.res_op_failed_event.metadata
        return EngineEvent(stack=stack, kind="diagnostic", op=map_op(meta.op), type=meta.type, name=urn_name(meta.urn),
                           message=f"error: {map_op(meta.op).value} {meta.type} {urn_name(meta.urn)} failed")
    if event.diagnostic_event is not None:
        diag = event.diagnostic_event
        if diag.severity == "debug":
            return None
        text = clean(diag.message)
        if not text:
            return None
        severity = diag.severity.split("#")[0]
        prefix = f"{severity}: " if severity in ("error", "warning") else ""
        return EngineEvent(stack=stack, kind="diagnostic", name=urn_name(diag.urn or ""), message=prefix + text)
    if event.policy_event is not None:
        policy = event.policy_event
        severity = "error" if policy.enforcement_level == MANDATORY else "warning"
        return EngineEvent(stack=stack, kind="diagnostic", name=urn_name(policy.resource_urn or ""),
                           message=f"{severity}: policy {policy.policy_name}: {policy_detail(policy.message)}")
    if event.summary_event is not None:
        counts = {map_op(op).value: n for op, n in (event.summary_event.resource_changes or {}).items()}
        text = ", ".join(f"{op} {n}" for op, n in sorted(counts.items()) if n)
        return EngineEvent(stack=stack, kind="summary", message=text or "no changes")
    return None


# -- property diffs -------------------------------------------------------------------------

_PATH_PART = re.compile(r'\["((?:[^"\\]|\\.)*)"\]|\[(\d+)\]|([^.\[\]]+)')
_MISSING = object()


def path_parts(path: str) -> list[str | int]:
    """A Pulumi property path (``tags.owner``, ``ingress[0].cidrBlocks``,
    ``tags["a.b"]``) as keys and indexes."""
    return [quoted if quoted else int(index) if index else plain
            for quoted, index, plain in _PATH_PART.findall(path)]


def lookup(values: Any, path: str) -> Any:
    node = values
    for part in path_parts(path):
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            node = node[part]
        elif isinstance(part, str) and isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return _MISSING
    return node


def masked(value: Any, secret: Any, unknown: Any = UNKNOWN) -> Any:
    """``value`` with every serialised secret replaced by ``secret`` and every
    unknown by ``unknown``, nothing else changed."""
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return secret
        return {k: masked(v, secret, unknown) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, secret, unknown) for v in value]
    return unknown if value == UNKNOWN else value


def _state_value(state: Any, path: str, first: str) -> Any:
    """``path`` in a step's state, from its ``first`` bag (inputs or outputs), else the other."""
    if state is None:
        return None
    bags = ("inputs", "outputs") if first == "inputs" else ("outputs", "inputs")
    for bag in bags:
        found = lookup(getattr(state, bag, None) or {}, path)
        if found is not _MISSING:
            return masked(found, SECRET_TEXT, UNKNOWN_TEXT)  # fit for a diff
    return None


def property_diffs(meta: Any, live: bool = False) -> list[PropertyDiff]:
    """What a step changes, property by property: ``detailed_diff`` (else
    ``diffs``) paths, ``old`` -> ``new`` read from the step's states: their inputs
    for a preview's update or replacement, their outputs (recorded -> live) for a
    refresh (``live``)."""
    detailed = getattr(meta, "detailed_diff", None) or {}
    paths = list(detailed) or list(getattr(meta, "diffs", None) or [])
    first = "outputs" if live else "inputs"
    found = []
    for path in paths:
        kind = _op_value(getattr(detailed.get(path), "diff_kind", "update"))
        old = None if kind.startswith("add") else _state_value(meta.old, path, first)
        new = None if kind.startswith("delete") else _state_value(meta.new, path, first)
        found.append(PropertyDiff(path=path, old=old, new=new))
    return found


def _retained(meta: Any) -> bool:
    """The step's old state says retain_on_delete: its delete only drops it from the state."""
    old = getattr(meta, "old", None)
    return bool(old is not None and getattr(old, "retain_on_delete", False))


def _arn(meta: Any) -> str:
    """The resource's ARN from a step's states (``resource_arn``): the refresh
    operation tells a tagged resource the stack knows from an orphan by it."""
    for state in (meta.new, meta.old):
        arn = resource_arn(getattr(state, "outputs", None), getattr(state, "id", None))
        if arn:
            return arn
    return ""


def _id(meta: Any) -> str:
    """The resource's provider id from a step's states (an inline role policy's ``role:name``)."""
    for state in (meta.new, meta.old):
        rid = getattr(state, "id", None)
        if isinstance(rid, str) and rid:
            return rid
    return ""


# -- the collector --------------------------------------------------------------------------

class ChangeCollector:
    """The on_event handed to pulumi: records each resource's step (one entry per
    URN, a replacement's several steps folded into one, with its property diffs),
    the summary, and the policy packs' mandatory violations, and forwards the
    translated event to the caller's sink. Called from the SDK's event thread(s),
    hence the lock; never raises into the SDK (see the module docstring)."""

    def __init__(self, stack: str, sink: EventSink | None = None) -> None:
        self.stack = stack
        self.sink = sink
        self.summary: dict[str, int] | None = None
        self._changes: dict[str, ResourceChange] = {}
        self._seen: dict[str, set[str]] = {}  # op -> URNs an event arrived for
        self._violations: list[Any] = []
        self._errors: list[Exception] = []
        self._lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        try:
            self._record(event)
            translated = translate(self.stack, event)
            if translated is not None and self.sink is not None:
                self.sink(translated)
        except Exception as exc:  # raised by verify(), after the command: the SDK would drop it
            with self._lock:
                self._errors.append(exc)

    def _record(self, event: Any) -> None:
        if event.summary_event is not None:
            changes = event.summary_event.resource_changes
            with self._lock:
                self.summary = None if changes is None else {_op_value(op): int(n) for op, n in changes.items()}
            return
        if event.policy_event is not None:
            self._record_policy(event.policy_event)
            return
        if event.resource_pre_event is not None:
            meta = event.resource_pre_event.metadata
            op = map_op(meta.op)
        elif event.res_outputs_event is not None:
            meta = event.res_outputs_event.metadata
            # A refresh's result: the op itself (`update`, `delete`), or `refresh` with diffs (`preview --refresh`).
            op = (Op.update if meta.diffs else Op.same) if _op_value(meta.op) == "refresh" else map_op(meta.op)
        else:
            return
        with self._lock:
            self._seen.setdefault(_op_value(meta.op), set()).add(meta.urn)
        if is_hidden(meta.type):
            return
        diffs = property_diffs(meta, live=event.res_outputs_event is not None) if op in (Op.update,
                                                                                         Op.replace) else []
        with self._lock:
            seen = self._changes.get(meta.urn)
            if seen is not None and seen.op is not op and Op.same not in (seen.op, op):
                op = Op.replace
            elif seen is not None and op is Op.same:
                op = seen.op
            self._changes[meta.urn] = ResourceChange(op=op, type=meta.type, name=urn_name(meta.urn), urn=meta.urn,
                                                     diffs=diffs or (seen.diffs if seen else []),
                                                     arn=_arn(meta) or (seen.arn if seen else ""),
                                                     id=_id(meta) or (seen.id if seen else ""),
                                                     retained=op is Op.delete and _retained(meta))

    def _record_policy(self, policy: Any) -> None:
        from tenantctl.policy import Violation

        if policy.enforcement_level != MANDATORY:
            return
        violation = Violation(rule=policy.policy_name, resource=urn_name(policy.resource_urn or "") or self.stack,
                              message=policy_detail(policy.message))
        with self._lock:
            self._violations.append(violation)

    def violations(self) -> list[Any]:
        """The mandatory policy violations the policy packs reported (``policy.Violation``)."""
        with self._lock:
            return list(self._violations)

    def verify(self, action: str, require_summary: bool = False, ops: Collection[str] | None = None) -> None:
        """After the command: raise what the handler recorded; then, with
        ``require_summary`` (a plan that is judged or reported), refuse it when the
        summary is missing or counts more steps of ``ops`` (default: every op it
        counts) than events arrived for."""
        with self._lock:
            errors, summary = list(self._errors), self.summary
            seen = {op: len(urns) for op, urns in self._seen.items()}
        if errors:
            raise errors[0]
        if not require_summary:
            return
        where = f"{action} {self.stack}"
        if summary is None:
            raise ApplyFailed(f"{where}: the Pulumi CLI's summary event never arrived, so the events read may be "
                              "partial; the plan is not judged")
        short = [f"{n} {op} (got {seen.get(op, 0)})" for op, n in sorted(summary.items())
                 if n > seen.get(op, 0) and (ops is None or op in ops)]
        if short:
            raise ApplyFailed(f"{where}: the Pulumi CLI's summary counts {', '.join(short)}: engine events were lost, "
                              "so the plan is not judged")

    def changeset(self) -> ChangeSet:
        with self._lock:
            return ChangeSet(stack=self.stack, changes=list(self._changes.values()))
