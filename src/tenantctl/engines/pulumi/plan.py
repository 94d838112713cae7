"""The PulumiEngine's planned resources: what a preview says each resource
will look like, read from the Automation API's engine events, for the policy
gate to judge before `up` changes anything.

A preview's ``resourcePreEvent.metadata.new`` carries the resource's type and
its inputs as the engine will send them to the provider: camelCase property
names, the same shape ``pulumi.runtime.Mocks.new_resource`` receives (so one
``tenantctl.policy`` serves both engines). Unknown values arrive as Pulumi's
unknown sentinel, which the rules never judge; secrets arrive blinded (the
engine serialises them without the plaintext) and are treated as unknown.

Like ``events``, nothing here imports pulumi at load time.
"""

from __future__ import annotations

from typing import Any

from tenantctl.engines.base import EventSink
from tenantctl.engines.pulumi.events import ChangeCollector, _op_value, is_hidden
from tenantctl.policy import UNKNOWN, PlannedResource

SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's signature key of a serialised secret

# Steps after which the resource no longer exists in the new state.
_GONE = {"delete", "discard", "delete-replaced", "discard-replaced", "remove-pending-replace"}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return UNKNOWN
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def urn_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1] if urn else ""


class PlanCollector(ChangeCollector):
    """A ChangeCollector that also keeps each resource's planned inputs."""

    def __init__(self, stack: str, sink: EventSink | None = None) -> None:
        super().__init__(stack, sink)
        self._planned: dict[str, PlannedResource] = {}

    def __call__(self, event: Any) -> None:
        pre = getattr(event, "resource_pre_event", None)
        if pre is not None:
            meta = pre.metadata
            new = getattr(meta, "new", None)
            with self._lock:
                if _op_value(meta.op) in _GONE:
                    if new is None:
                        self._planned.pop(meta.urn, None)
                elif new is not None and new.custom is not False and not is_hidden(new.type):
                    self._planned[meta.urn] = PlannedResource(
                        type=new.type, name=urn_name(meta.urn), inputs=_plain(dict(new.inputs or {})))
        super().__call__(event)

    def planned(self) -> list[PlannedResource]:
        with self._lock:
            return list(self._planned.values())
