"""``pulumi:pulumi:StackReference``: answered from the referenced stack's
LocalEngine state, so a tenant stack reads what the platform stack exported."""

from __future__ import annotations

from typing import Any

from tenantctl.engines.local.handlers.base import Context, Desired, Handler

TYPE = "pulumi:pulumi:StackReference"


def reference_outputs(ctx: Context, d: Desired) -> tuple[str, dict[str, Any]]:
    name = d.get("name") or d.name
    # Fully qualified names (org/project/stack) resolve to their last part locally.
    stack = str(name).rsplit("/", 1)[-1]
    return str(name), {"name": name, "outputs": ctx.stack_outputs(stack), "secretOutputNames": []}


class StackReferenceHandler(Handler):
    """Read-only: nothing to create or delete on the sandbox."""

    type = TYPE

    def create(self, ctx: Context, d: Desired, recovering: bool) -> tuple[str, dict[str, Any]]:
        rid, outputs = reference_outputs(ctx, d)
        return rid, outputs

    def update(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any]) -> dict[str, Any]:
        return reference_outputs(ctx, d)[1]

    def delete(self, ctx: Context, rid: str | None, d: Desired) -> None:
        return None

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        return {}  # nothing on the sandbox: another stack's outputs, read again by every run


class ProviderHandler(Handler):
    """``pulumi:providers:aws``: an explicit provider; the sandbox needs no setup."""

    type = "pulumi:providers:aws"

    def create(self, ctx: Context, d: Desired, recovering: bool) -> tuple[str, dict[str, Any]]:
        return d.urn, {}

    def update(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any]) -> dict[str, Any]:
        return {}

    def delete(self, ctx: Context, rid: str | None, d: Desired) -> None:
        return None

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        return {}


HANDLERS = (StackReferenceHandler(), ProviderHandler())
