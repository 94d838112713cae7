"""Pulumi engine events (pulumi.automation.events) -> tenantctl EngineEvents,
and the ChangeSet an operation leaves behind.

Only the attributes of the event objects are read here, so this module imports
nothing from pulumi at load time: the CLI path stays fast.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from tenantctl.engines.base import ChangeSet, EngineEvent, EventSink, Op, ResourceChange

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


def translate(stack: str, event: Any) -> EngineEvent | None:
    """One pulumi.automation.events.EngineEvent -> an EngineEvent, or None when it
    carries nothing the CLI draws (prelude, stdout chatter, debug diagnostics)."""
    if event.resource_pre_event is not None:
        meta = event.resource_pre_event.metadata
        if is_hidden(meta.type):
            return None
        return EngineEvent(stack=stack, kind="resource-pre", op=map_op(meta.op), type=meta.type, name=urn_name(meta.urn))
    if event.res_outputs_event is not None:
        meta = event.res_outputs_event.metadata
        if is_hidden(meta.type):
            return None
        return EngineEvent(stack=stack, kind="resource-done", op=map_op(meta.op), type=meta.type, name=urn_name(meta.urn))
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
    if event.summary_event is not None:
        counts = {map_op(op).value: n for op, n in (event.summary_event.resource_changes or {}).items()}
        text = ", ".join(f"{op} {n}" for op, n in sorted(counts.items()) if n)
        return EngineEvent(stack=stack, kind="summary", message=text or "no changes")
    return None


class ChangeCollector:
    """The on_event handed to pulumi: records each resource's step (one entry per
    URN, a replacement's several steps folded into one) and forwards the
    translated event to the caller's sink. Called from pulumi's log-watcher
    thread, hence the lock."""

    def __init__(self, stack: str, sink: EventSink | None = None) -> None:
        self.stack = stack
        self.sink = sink
        self._changes: dict[str, ResourceChange] = {}
        self._lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        self._record(event)
        translated = translate(self.stack, event)
        if translated is not None and self.sink is not None:
            self.sink(translated)

    def _record(self, event: Any) -> None:
        if event.resource_pre_event is not None:
            meta = event.resource_pre_event.metadata
            op = map_op(meta.op)
        elif event.res_outputs_event is not None:
            # A refresh that found drift says so only on the outputs event.
            meta = event.res_outputs_event.metadata
            if _op_value(meta.op) != "refresh" or not meta.diffs:
                return
            op = Op.update
        else:
            return
        if is_hidden(meta.type):
            return
        with self._lock:
            seen = self._changes.get(meta.urn)
            if seen is not None and seen.op is not op and Op.same not in (seen.op, op):
                op = Op.replace
            elif seen is not None and op is Op.same:
                op = seen.op
            self._changes[meta.urn] = ResourceChange(op=op, type=meta.type, name=urn_name(meta.urn), urn=meta.urn)

    def changeset(self) -> ChangeSet:
        with self._lock:
            return ChangeSet(stack=self.stack, changes=list(self._changes.values()))
