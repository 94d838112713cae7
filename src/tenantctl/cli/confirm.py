"""Asking a person: the terminal half of the confirmation rule (``tenantctl.confirmation``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING

from tenantctl.cli.output import err_console
from tenantctl.confirmation import Confirmation

if TYPE_CHECKING:
    from tenantctl.cli.progress import ProgressView


def interactive() -> bool:
    """Someone can answer: stdin and stderr are both terminals."""
    return sys.stdin.isatty() and err_console.is_terminal


def confirmation(yes: bool, view: ProgressView | None = None) -> Confirmation:
    """The rule for a command given ``--yes`` or not: on a terminal it shows
    what would be deleted or replaced and asks (pausing ``view``'s live
    display); elsewhere it refuses without --yes."""

    def ask(what: str, items: Sequence[str]) -> bool:
        import typer

        with view.pause() if view is not None else nullcontext():
            err_console.print(f"{what}:", style="bold yellow", markup=False, highlight=False)
            for item in items:
                err_console.print(f"  - {item}", markup=False, highlight=False)
            return typer.confirm("Go ahead?", default=False, err=True)

    return Confirmation(yes, ask if interactive() else None)
