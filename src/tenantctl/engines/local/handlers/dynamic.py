"""Dynamic resources (``pulumi-python:dynamic:Resource``): the input ``kind``
names a provider in ``infra.providers.PROVIDERS``, whose own create / diff /
update / delete run with the props (the pickled ``__provider`` is ignored).
Those providers are idempotent (SQL with IF NOT EXISTS, read-modify-write of
lifecycle rules), which is what makes a crashed create safe to redo."""

from __future__ import annotations

from typing import Any

from tenantctl.engines.local.handlers.base import Context, Desired, Handler

TYPE = "pulumi-python:dynamic:Resource"


def provider_for(kind: str | None):
    from infra.providers import PROVIDERS

    if kind not in PROVIDERS:
        raise KeyError(f"dynamic resource kind {kind!r} has no provider in infra.providers.PROVIDERS")
    return PROVIDERS[kind]()


def _props(inputs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in inputs.items() if not k.startswith("__")}


class DynamicHandler(Handler):
    type = TYPE

    def supports(self, inputs: dict[str, Any]) -> str | None:
        """Why this resource cannot be handled, or None."""
        from infra.providers import PROVIDERS

        kind = inputs.get("kind")
        return None if kind in PROVIDERS else f"dynamic resource kind {kind!r} has no provider"

    def create(self, ctx: Context, d: Desired, recovering: bool) -> tuple[str, dict[str, Any]]:
        result = provider_for(d.get("kind")).create(_props(d.inputs))
        return str(result.id), dict(result.outs or _props(d.inputs))

    def update(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any]) -> dict[str, Any]:
        result = provider_for(d.get("kind")).update(rid, _props(olds), _props(d.inputs))
        return dict(result.outs or _props(d.inputs))

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        result = provider_for(d.get("kind")).read(rid or "", _props(d.inputs))
        return dict(result.outs or {}) if result.id else None

    def delete(self, ctx: Context, rid: str | None, d: Desired) -> None:
        # An interrupted create has no id: the providers' deletes key on the props alone.
        provider_for(d.get("kind")).delete(rid or "", _props(d.inputs))

    def diff(self, olds: dict[str, Any], news: dict[str, Any]) -> str:
        if olds == news:
            return "same"
        if olds.get("kind") != news.get("kind"):
            return "replace"
        result = provider_for(news.get("kind")).diff("", _props(olds), _props(news))
        if result.replaces:
            return "replace"
        return "update" if result.changes is not False else "same"


HANDLERS = (DynamicHandler(),)
