"""Printing for people (rich) and machines (--json), and one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)
for _console in (console, err_console):
    # Off a terminal rich would wrap every line at 80 columns, splitting ids,
    # cursors and paths a script or a person copies: lines stay whole there.
    _console.soft_wrap = not _console.is_terminal


def to_jsonable(data: Any) -> Any:
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, (list, tuple)):
        return [to_jsonable(d) for d in data]
    if isinstance(data, dict):
        return {k: to_jsonable(v) for k, v in data.items()}
    return data


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(data), indent=2, default=str) + "\n")
    sys.stdout.flush()


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table of ``rows`` (cells may hold rich markup). On a terminal, boxed,
    its cells folded onto more lines when the screen is narrow, never cut;
    elsewhere (a pipe, a CI log) plain: the title, then one line per row,
    columns padded to their widest cell, whatever the width."""
    cells = [["" if v is None else str(v) for v in r] for r in rows]
    if not console.is_terminal:
        _plain_table(title, columns, cells)
        return
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in cells:
        t.add_row(*r)
    console.print(t)


def _plain(cell: str) -> str:
    from rich.errors import MarkupError
    from rich.text import Text

    try:
        return Text.from_markup(cell).plain
    except MarkupError:
        return cell


def _plain_table(title: str, columns: Sequence[str], rows: list[list[str]]) -> None:
    lines = [list(columns)] + [[_plain(c) for c in r] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    out = [title] + ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    sys.stdout.write("\n".join(out) + "\n\n")
    sys.stdout.flush()


def error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def changes_table(title: str, changes: Any) -> None:
    """The resources a ChangeSet creates, updates or deletes; nothing when unchanged."""
    rows = [(c.op.value, c.type, c.name) for c in changes.changes if c.op.value != "same"]
    if rows:
        table(title, ["op", "type", "name"], rows)


def changes_summary(changes: Any) -> str:
    return ", ".join(f"{n} {op}" for op, n in changes.summary().items()) or "no changes"
