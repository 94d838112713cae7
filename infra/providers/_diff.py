"""What the dynamic providers share: diffing, and their props as outputs."""

from __future__ import annotations

from typing import Any

from pulumi.dynamic import DiffResult


def diff_inputs(olds: dict[str, Any], news: dict[str, Any], replace_on: tuple[str, ...]) -> DiffResult:
    """Changed input keys; a change to any of ``replace_on`` replaces the resource."""
    keys = {k for k in set(olds) | set(news) if not k.startswith("__") and k in news}
    changed = sorted(k for k in keys if olds.get(k) != news.get(k))
    return DiffResult(changes=bool(changed), replaces=[k for k in changed if k in replace_on],
                      delete_before_replace=True)


def public(props: dict[str, Any]) -> dict[str, Any]:
    """The props without Pulumi's internals (``__provider``...): what a provider returns as outputs."""
    return {k: v for k, v in props.items() if not k.startswith("__")}
