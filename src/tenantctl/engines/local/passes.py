"""The two passes of an up, as Pulumi mocks.

``PlanPass`` only records: each registration is compared with the state
(create / update / replace / same), answered from the state or with unknowns,
and unsupported types are collected so the up fails before anything exists.
``ApplyPass`` makes the sandbox match: creates (intent first, then an
idempotent create), updates in place, replaces, or returns the recorded
state untouched when the inputs are equal (no API call at all).

Two resource options are honoured as Pulumi does: ``import_`` (a create
adopts the existing resource and never makes one: an import of what does not
exist fails; unlike an older Pulumi CLI, an adopted resource whose live
settings differ from the inputs is brought to them, as Pulumi's
import-then-update does) and ``retain_on_delete`` (recorded in the state: a
delete of such a resource, the program dropping it or a destroy, only forgets it).

Pulumi registers a resource once every input it depends on has resolved and
hands registrations to its executor threads, so resources that do not
depend on each other arrive together. The plan pass takes them one at a time
(it only records); the apply pass takes one at a time only what it keeps in
memory and on disk (the judgment, the step, the intent, the record) and makes
the cloud calls of independent resources concurrently, as Pulumi's own engine
does: each intent still reaches the disk before its resource's first call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks

from tenantctl.engines.base import EngineEvent, EventSink, Op, ResourceChange
from tenantctl.engines.diffs import property_diffs
from tenantctl.engines.local.handlers import HANDLERS, INVOKES, Context, Desired, Handler
from tenantctl.engines.local.handlers.stack_reference import TYPE as STACK_REFERENCE
from tenantctl.engines.local.handlers.stack_reference import reference_outputs
from tenantctl.engines.local.state import ResourceState, StackState, StateFile, normalized
from tenantctl.policy import UNKNOWN, PlannedResource, planned_resource


@dataclass(frozen=True)
class Options:
    """The resource options of a registration the LocalEngine honours."""

    retain: bool = False  # retain_on_delete
    import_id: str | None = None  # import_


NO_OPTIONS = Options()


def _has_unknown(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_unknown(v) for v in value)
    return value == UNKNOWN


def unsupported_reason(typ: str, inputs: dict[str, Any]) -> str | None:
    handler = HANDLERS.get(typ)
    if handler is None:
        return f"resource type {typ} is not supported by the LocalEngine"
    supports = getattr(handler, "supports", None)
    return supports(inputs) if supports else None


def change(op: Op, typ: str, name: str, urn: str, prior: ResourceState | None,
           inputs: dict[str, Any]) -> ResourceChange:
    """The step for one resource, with what changes (recorded -> declared) for an update or replace."""
    diffs = property_diffs(prior.inputs, inputs) if prior is not None and op in (Op.update, Op.replace) else []
    arn, rid = (prior.arn, prior.id or "") if prior is not None else ("", "")
    return ResourceChange(op=op, type=typ, name=name, urn=urn, diffs=diffs, arn=arn, id=rid)


def classify(handler: Handler, prior: ResourceState | None, inputs: dict[str, Any]) -> Op:
    if prior is None or prior.status != "created":
        return Op.create
    if _has_unknown(inputs):
        return Op.update
    return Op(handler.diff(prior.inputs, inputs))


class _Pass(pulumi.runtime.Mocks):
    def __init__(self, stack: str, state: StackState, ctx: Context, on_event: EventSink | None,
                 file: StateFile | None = None) -> None:
        self.stack, self.state, self.ctx, self.file = stack, state, ctx, file
        self.on_event = on_event
        self.current = threading.local()  # set by runtime.UrnMonitor
        self.lock = threading.Lock()  # new_resource runs on several executor threads: the state, steps and file
        self._events = threading.Lock()  # a sink sees one event at a time
        self.registered: list[str] = []
        self.changes: list[ResourceChange] = []
        self.error: BaseException | None = None

    def emit(self, kind: str, op: Op | None = None, typ: str = "", name: str = "", message: str = "") -> None:
        if self.on_event:
            with self._events:
                self.on_event(EngineEvent(stack=self.stack, kind=kind, op=op, type=typ, name=name, message=message))

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict, list]:
        invoke = INVOKES.get(args.token)
        if invoke is None:
            self.error = self.error or NotImplementedError(f"invoke {args.token} is not supported by the LocalEngine")
            raise self.error
        return invoke(self.ctx, dict(args.args)), []

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict]:
        urn = self.current.urn
        inputs = dict(args.inputs)
        if args.typ == STACK_REFERENCE:
            return reference_outputs(self.ctx, Desired(urn, args.typ, args.name, inputs))
        if args.custom is False:  # a ComponentResource: nothing to materialise
            return args.name, {}
        with self.lock:
            self.registered.append(urn)
        try:
            return self.resource(urn, args.typ, args.name, inputs,
                                 Options(retain=getattr(self.current, "retain", False),
                                         import_id=args.resource_id or None))
        except BaseException as exc:
            with self.lock:
                self.error = self.error or exc
            raise

    def resource(self, urn: str, typ: str, name: str, inputs: dict[str, Any],
                 options: Options = NO_OPTIONS) -> tuple[str | None, dict]:
        """One registration; called concurrently for resources that do not depend on each other."""
        raise NotImplementedError


class PlanPass(_Pass):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.planned: list[PlannedResource] = []
        self.unsupported: list[str] = []

    def resource(self, urn: str, typ: str, name: str, inputs: dict[str, Any],
                 options: Options = NO_OPTIONS) -> tuple[str | None, dict]:
        with self.lock:  # in memory only: nothing gained running it concurrently
            return self._plan(urn, typ, name, inputs)

    def _plan(self, urn: str, typ: str, name: str, inputs: dict[str, Any]) -> tuple[str | None, dict]:
        reason = unsupported_reason(typ, inputs)
        if reason:
            self.unsupported.append(f"{name}: {reason}")
            return "", {}
        clean = normalized(inputs)
        planned = planned_resource(typ, name, inputs)  # unknowns as policy.UNKNOWN for the gate
        self.planned.append(planned)
        prior = self.state.get(urn)
        op = classify(HANDLERS[typ], prior, clean)
        self.changes.append(change(op, typ, name, urn, prior, planned.inputs))
        if op is Op.same:
            return prior.id, prior.outputs
        if op is Op.update:
            return prior.id, {**prior.outputs, **inputs}
        # An empty id and missing outputs are unknown in a preview; those the inputs decide are known.
        known = {} if _has_unknown(clean) else HANDLERS[typ].planned_outputs(self.ctx, Desired(urn, typ, name, clean))
        return "", {**inputs, **known}

    def deletions(self) -> list[ResourceChange]:
        # With its id: what the plan deletes is still the stack's (a subscription's id is its ARN).
        seen = set(self.registered)
        return [ResourceChange(op=Op.delete, type=r.type, name=r.name, urn=r.urn, arn=r.arn, id=r.id or "",
                               retained=r.retain) for r in reversed(self.state.resources) if r.urn not in seen]


class ApplyPass(_Pass):
    # The policy's second enforcement point (policy.ResolvedJudge): each resource
    # judged with resolved values before it is touched, as CrossGuard does on AWS.
    judge: Callable[[PlannedResource, str], list] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.made: set[str] = set()  # urns this pass made (not adopted)

    def save(self) -> None:
        self.file.save(self.state)

    def resource(self, urn: str, typ: str, name: str, inputs: dict[str, Any],
                 options: Options = NO_OPTIONS) -> tuple[str | None, dict]:
        handler = HANDLERS[typ]
        d = Desired(urn, typ, name, normalized(inputs))
        with self.lock:  # judged and classified in registration order, as before any concurrency
            if self.judge is not None:
                found = self.judge(planned_resource(typ, name, inputs), urn)
                if found:
                    from tenantctl.policy import PolicyRefused

                    raise PolicyRefused(self.stack, found, changed_nothing=False)
            prior = self.state.get(urn)
            op = classify(handler, prior, d.inputs)
            step = change(op, typ, name, urn, prior, d.inputs)
            self.changes.append(step)
            if op is Op.same and prior.retain is not options.retain:  # an option alone: the state takes it
                self.state.put(prior.model_copy(update={"retain": options.retain}))
        if op is Op.same:
            return prior.id, prior.outputs
        self.emit("resource-pre", op, typ, name)
        try:
            if op is Op.update:
                computed = handler.update(self.ctx, prior.id, d, prior.inputs)
                entry = self.record(d, prior.id, computed, "created", retain=options.retain)
            else:
                if op is Op.replace:
                    delete_resource(self, handler, prior)
                entry = self.create(handler, d, recovering=prior is not None and op is Op.create, options=options)
        except Exception as exc:
            raise RuntimeError(f"{name} ({typ}): {op.value} failed: {exc}") from exc
        step.arn, step.id = entry.arn, entry.id or ""  # a new resource's, once it exists
        self.emit("resource-done", op, typ, name)
        return entry.id, entry.outputs

    def create(self, handler: Handler, d: Desired, recovering: bool, options: Options) -> ResourceState:
        # The intent goes to disk first (with what earlier calls returned): a
        # crash after the create still leaves a trace the next run adopts (or
        # deletes when no longer declared; an imported one is only forgotten).
        with self.lock:
            prior = self.state.get(d.urn)
            # An interrupted run's intent keeps its time: what that run made is not older than it.
            since = prior.intended_at if prior is not None and prior.status == "creating" else None
            d.not_before = since or datetime.now(UTC)
            self.state.put(ResourceState(urn=d.urn, type=d.type, name=d.name, inputs=d.inputs, status="creating",
                                         retain=options.retain or options.import_id is not None,
                                         intended_at=d.not_before))
            self.save()
        if options.import_id is not None:
            rid = handler.find(self.ctx, d)
            if rid != options.import_id:
                raise RuntimeError(f"import of {options.import_id!r}: no such resource to import")
            return self.record(d, rid, handler.configure(self.ctx, rid, d, {}), "created", retain=options.retain)
        rid, computed = handler.create(self.ctx, d, recovering)
        return self.record(d, rid, computed, "created", made=d.made, retain=options.retain)

    def record(self, d: Desired, rid: str | None, computed: dict[str, Any], status: str,
               made: bool = False, retain: bool = False) -> ResourceState:
        """In memory only: the next intent or the end of the run writes it (state.py says why that is safe)."""
        entry = ResourceState(urn=d.urn, type=d.type, name=d.name, id=rid, inputs=d.inputs,
                              outputs=normalized({**d.inputs, **computed}), status=status, retain=retain)
        with self.lock:
            if made:
                self.made.add(d.urn)
            self.state.put(entry)
        return entry


def delete_resource(run: _Pass, handler: Handler, entry: ResourceState) -> None:
    """Delete one recorded resource: mark it (on disk), delete (idempotent),
    forget it (in memory until the next write or the end of the run). A
    retained one (retain_on_delete) is only forgotten."""
    entry_id = entry.id if entry.status != "creating" else None
    with run.lock:
        run.state.put(entry.model_copy(update={"status": "deleting"}))
        run.file.save(run.state)
    if not entry.retain:
        handler.delete(run.ctx, entry_id, Desired(entry.urn, entry.type, entry.name, entry.inputs,
                                                  not_before=entry.intended_at))
    with run.lock:
        run.state.remove(entry.urn)
