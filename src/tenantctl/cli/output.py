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
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    console.print(t)


def show(data: Any, title: str, rows: Iterable[Sequence[Any]], json_out: bool) -> None:
    """One object: its JSON for machines, a field/value table for people."""
    if json_out:
        print_json(data)
    else:
        table(title, ["field", "value"], rows)


def error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def changes_table(title: str, changes: Any) -> None:
    """The resources a ChangeSet creates, updates or deletes; nothing when unchanged."""
    rows = [(c.op.value, c.type, c.name) for c in changes.changes if c.op.value != "same"]
    if rows:
        table(title, ["op", "type", "name"], rows)


def changes_summary(changes: Any) -> str:
    return ", ".join(f"{n} {op}" for op, n in changes.summary().items()) or "no changes"
