"""The one confirmation rule: an action that deletes or replaces anything says
what it will do and goes ahead only with ``--yes`` or a yes typed on a
terminal; without a terminal to ask on it is refused (NotConfirmed, exit 13)
before anything changed.

Deprovision, `apply --prune` and in-place restores know what they delete
before they start and call ``check``; provision, `apply` and `platform up`
learn it from the engine's plan, where the engine calls a ``Confirmation`` as
its ``approve`` hook right before the first change (``engines.base.Engine``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tenantctl.engines.base import ChangeSet, Op, ResourceChange
from tenantctl.errors import NotConfirmed

# ask(what, items) -> True to go ahead: shows ``items`` and prompts on a terminal.
Ask = Callable[[str, Sequence[str]], bool]

DESTRUCTIVE = (Op.delete, Op.replace)


def destructive(changes: ChangeSet) -> list[ResourceChange]:
    """What deletes or replaces something: a retained delete (retain_on_delete) only drops it from the state."""
    return [c for c in changes.changes if c.op in DESTRUCTIVE and not (c.op is Op.delete and c.retained)]


def describe(change: ResourceChange) -> str:
    return f"{change.op.value} {change.type} {change.name}"


class Confirmation:
    """``yes``: confirmed up front (--yes). ``ask``: how to ask a person (None:
    no terminal, so anything destructive is refused)."""

    def __init__(self, yes: bool = False, ask: Ask | None = None) -> None:
        self.yes, self.ask = yes, ask

    def check(self, what: str, items: Sequence[str]) -> None:
        """Go ahead with ``what`` (deleting or replacing ``items``) or raise NotConfirmed."""
        if self.yes:
            return
        if self.ask is None:
            raise NotConfirmed(f"{what}: pass --yes to confirm (there is no terminal to ask on); nothing was changed",
                               details=list(items))
        if not self.ask(what, items):
            raise NotConfirmed(f"{what}: not confirmed; nothing was changed")

    def __call__(self, changes: ChangeSet) -> None:
        """The engine's approve hook: only a plan that deletes or replaces needs a yes."""
        found = destructive(changes)
        if found:
            self.check(f"stack {changes.stack}: the plan deletes or replaces {len(found)} resource(s)",
                       [describe(c) for c in found])
