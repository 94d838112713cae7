"""Engines behind one interface (``base.Engine``) and the choice between them.

An aws target only ever reaches the PulumiEngine, a sandbox target only the
LocalEngine (which itself refuses any endpoint that is not the sandbox). Both
get the policy gate. The concrete engines are imported when opened: both pull
in pulumi, which commands like `list` and `--help` must not pay for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenantctl.engines.base import Engine
from tenantctl.errors import InvalidInput

if TYPE_CHECKING:
    from tenantctl.target import Target


def _open_pulumi(target: Target, project_dir: Path, gate: Any) -> Engine:
    from tenantctl.engines.pulumi import PulumiEngine

    return PulumiEngine(target, project_dir, gate=gate)


def _open_local(target: Target, project_dir: Path, gate: Any, sandbox: Any) -> Engine:
    from tenantctl.engines.local import LocalEngine

    if sandbox is None:
        from tenantctl.sandbox import ensure_running

        sandbox = ensure_running(target.sandbox.state_dir)
    return LocalEngine(project_dir, sandbox, state_dir=target.sandbox.state_dir, gate=gate)


def open_engine(target: Target, project_dir: Path, sandbox: Any = None) -> Engine:
    """The engine for ``target``, with the policy gate; ``sandbox``: the running
    sandbox's endpoints (a sandbox target starts one when none is given)."""
    from tenantctl.policy import PolicyGate

    gate = PolicyGate(project_dir)
    if target.kind == "aws":
        return _open_pulumi(target, project_dir, gate)
    if target.kind == "sandbox":
        return _open_local(target, project_dir, gate, sandbox)
    raise InvalidInput(f"unknown target kind {target.kind!r}")


__all__ = ["Engine", "open_engine"]
