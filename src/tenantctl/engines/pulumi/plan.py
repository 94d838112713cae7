"""The PulumiEngine's planned resources: what a preview says each resource
will look like, read from the Automation API's engine events, for the policy
gate to judge before `up` changes anything.

A preview's ``resourcePreEvent.metadata.new`` carries the resource's type and
its inputs as the engine will send them to the provider: camelCase property
names, the same shape ``pulumi.runtime.Mocks.new_resource`` receives (so one
``tenantctl.policy`` serves both engines). Unknown values arrive as Pulumi's
unknown sentinel, which the rules record as unjudged (the CrossGuard pack
judges them during `up`); secrets arrive blinded (the engine serialises them
without the plaintext) and are treated as unknown.

A resource leaves the plan only on ``delete`` / ``discard``. A replacement's
last step, ``delete-replaced``, removes the *old* resource after the new one
was created (pkg/resource/deploy/step_generator.go generates it "later on",
with no ``new`` state), and ``discard-replaced`` / ``remove-pending-replace``
are bookkeeping of the same kind: the replacement stays planned. Component
resources are left out: the CLI omits ``custom`` when it is false
(sdk/go/common/apitype/events.go, ``omitempty``), so only ``custom is True``
is a custom resource.

Like ``events``, nothing here imports pulumi at load time.
"""

from __future__ import annotations

from typing import Any

from tenantctl.engines.base import EventSink
from tenantctl.engines.pulumi.events import ChangeCollector, _op_value, is_hidden, masked, urn_name
from tenantctl.policy import UNKNOWN, PlannedResource

# Steps after which the resource no longer exists in the new state.
_GONE = {"delete", "discard"}


class PlanCollector(ChangeCollector):
    """A ChangeCollector that also keeps each resource's planned inputs."""

    def __init__(self, stack: str, sink: EventSink | None = None) -> None:
        super().__init__(stack, sink)
        self._planned: dict[str, PlannedResource] = {}

    def _record(self, event: Any) -> None:
        super()._record(event)
        pre = event.resource_pre_event
        if pre is None:
            return
        meta = pre.metadata
        new = meta.new
        with self._lock:
            if _op_value(meta.op) in _GONE:
                self._planned.pop(meta.urn, None)
            elif new is not None and new.custom is True and not is_hidden(new.type):
                self._planned[meta.urn] = PlannedResource(
                    type=new.type, name=urn_name(meta.urn), inputs=masked(dict(new.inputs or {}), secret=UNKNOWN))

    def planned(self) -> list[PlannedResource]:
        with self._lock:
            return list(self._planned.values())
