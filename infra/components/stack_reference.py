"""A stack reference whose outputs are looked up, not copied.

``pulumi.StackReference.require_output`` (and ``get_output``) pass the whole
``outputs`` mapping through ``Output.all``, whose ``from_input`` rebuilds it
as one Output per nested value before the one wanted is picked: a tenant's
program reads ~17 of its cell's outputs, so each run made ~900 Outputs (and
their futures and tasks) for it, half the Outputs of a pooled tenant's run.
Picking the value inside an ``apply`` gives the same Output: the same value,
the same dependencies and known-ness (those of ``outputs``, whose unknowns
``contains_unknowns`` sees wherever they are nested) and the secretness
Pulumi gives the name (listed in ``secretOutputNames``, or that of
``outputs`` when that list is not known). A missing required output fails
the run as Pulumi's own ``require_output`` does in this SDK: a ``KeyError``
naming the output, raised inside the apply (the Node SDK's "Required output
... does not exist on stack ..." message is not the Python SDK's)."""

from __future__ import annotations

import asyncio
from typing import Any

import pulumi


class StackReference(pulumi.StackReference):
    def get_output(self, name: pulumi.Input[str]) -> pulumi.Output[Any]:
        if not isinstance(name, str):
            return super().get_output(name)
        return self._output(name, lambda outputs: outputs.get(name))

    def require_output(self, name: pulumi.Input[str]) -> pulumi.Output[Any]:
        if not isinstance(name, str):
            return super().require_output(name)
        return self._output(name, lambda outputs: outputs[name])

    def _output(self, name: str, pick: Any) -> pulumi.Output[Any]:
        value = self.outputs.apply(pick)
        return pulumi.Output(value.resources(), value.future(), value.is_known(),
                             asyncio.ensure_future(self._is_secret(name)))

    async def _is_secret(self, name: str) -> bool:
        if not await self.secret_output_names.is_known():
            return await self.outputs.is_secret()
        names = await self.secret_output_names.future()
        return await self.outputs.is_secret() if names is None else name in names
