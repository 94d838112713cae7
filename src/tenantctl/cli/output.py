"""Printing for people (rich) and machines (--json), and one-line errors."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any


class LazyConsole:
    """A rich ``Console`` made on first use, standing in for it: importing rich's
    console costs ~20 ms a command that prints no rich text (`--help`, ``--json``)
    should not pay. Attributes are the console's, read and set, and it is a context
    manager as the console is (rich's live views enter the console they are given)."""

    def __init__(self, stderr: bool = False) -> None:
        object.__setattr__(self, "_stderr", stderr)
        object.__setattr__(self, "_console", None)

    def _real(self) -> Any:
        if self._console is None:
            from rich.console import Console

            made = Console(stderr=self._stderr, emoji=False)
            # Off a terminal rich would wrap every line at 80 columns, splitting ids,
            # cursors and paths a script or a person copies: lines stay whole there.
            made.soft_wrap = not made.is_terminal
            object.__setattr__(self, "_console", made)
        return self._console

    @property
    def is_terminal(self) -> bool:
        """rich's answer, without importing rich when it is plainly no (a pipe, a CI log,
        a file): rich overrides ``isatty`` only by the environment variables read here."""
        if self._console is None and not _TERMINAL_OVERRIDES & os.environ.keys():
            stream = sys.stderr if self._stderr else sys.stdout
            try:
                if not stream.isatty():
                    return False
            except (AttributeError, ValueError):  # no stream, or a closed one: rich says no too
                return False
        return self._real().is_terminal

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """rich's ``print``; off a terminal, one string (markup allowed) is written as rich would
        write it there, whole and plain, without importing rich for it."""
        if (self._console is None and len(objects) == 1 and isinstance(objects[0], str)
                and set(kwargs) <= {"highlight", "soft_wrap", "markup"} and kwargs.get("soft_wrap", True)
                and not _REWRITTEN.search(objects[0]) and not self.is_terminal):
            stream = sys.stderr if self._stderr else sys.stdout
            stream.write((_plain(objects[0]) if kwargs.get("markup", True) else objects[0]) + "\n")
            stream.flush()  # as rich does: lines keep their order with the other stream's
            return
        self._real().print(*objects, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._real(), name, value)

    def __enter__(self) -> Any:
        return self._real().__enter__()

    def __exit__(self, *exc: object) -> None:
        self._real().__exit__(*exc)


_TERMINAL_OVERRIDES = {"FORCE_COLOR", "TTY_COMPATIBLE"}
# Where rich's markup can act: a tag opens with '[' and one of these (rich.markup.RE_TAGS), or a backslash
# escapes a bracket; "[   0.3s]" (a progress stamp) is text.
_MARKUP = re.compile(r"\[[a-z#/@]|\\\[")
# What rich rewrites in text it prints: tabs expanded, these control characters dropped.
_REWRITTEN = re.compile(r"[\a\b\t\v\f\r]")

console: Any = LazyConsole()
err_console: Any = LazyConsole(stderr=True)


def to_jsonable(data: Any) -> Any:
    if hasattr(data, "model_dump"):  # a pydantic model (not imported here: `--help` loads none)
        return data.model_dump(mode="json")
    if isinstance(data, (list, tuple)):
        return [to_jsonable(d) for d in data]
    if isinstance(data, dict):
        return {k: to_jsonable(v) for k, v in data.items()}
    return data


def record_result(record: Any, done: list[str]) -> dict[str, Any]:
    """The --json of a command that changes a tenant in place (suspend, resume,
    unlock): ``record``, and what was ``done`` ([] when there was nothing to do).
    The record's fields stay at the top level too, where suspend and unlock
    printed them before ``record`` existed."""
    return {**to_jsonable(record), "record": record, "done": done}


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
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in cells:
        t.add_row(*r)
    console.print(t)


def failed_table(command: str, failed: Sequence[Any], seconds: float | None = None) -> None:
    """The tenants of a fleet command whose run failed (``operations.selection.Failed``), by id."""
    if failed:
        took = "" if seconds is None else f" · {seconds:.1f}s"
        table(f"{command} · {len(failed)} tenant(s) failed{took}", ["tenant", "exit", "error"],
              [(f.tenant_id, str(f.exit_code), escape(f.error)) for f in sorted(failed, key=lambda f: f.tenant_id)])


def failed_line(failed: Any) -> str:
    """A failed tenant's outcome, as its progress line ends (rich markup)."""
    return f"[bold red]failed (exit {failed.exit_code})[/]: {escape(failed.error)}"


def show(data: Any, title: str, rows: Iterable[Sequence[Any]], json_out: bool) -> None:
    """One object: its JSON for machines, a field/value table for people."""
    if json_out:
        print_json(data)
    else:
        table(title, ["field", "value"], rows)


def escape(text: str) -> str:
    """rich's markup escape, importing rich only for text it changes (a '[' or a trailing backslash)."""
    if "[" not in text and not text.endswith("\\"):
        return text
    from rich.markup import escape as escape_markup

    return escape_markup(text)


def _plain(cell: str) -> str:
    if not _MARKUP.search(cell):  # no tag, no escaped bracket: nothing to strip, no rich needed
        return cell
    from rich.errors import MarkupError
    from rich.text import Text

    try:
        return Text.from_markup(cell, emoji=False).plain  # ":secret:" of a secret's ARN is no emoji
    except MarkupError:
        return cell


def _plain_table(title: str, columns: Sequence[str], rows: list[list[str]]) -> None:
    # A cell of several lines (a step's changed properties) stays on its row: `grep`-able, one line per row.
    lines = [list(columns)] + [[_plain(c).replace("\n", "; ") for c in r] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    out = [title] + ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    sys.stdout.write("\n".join(out) + "\n\n")
    sys.stdout.flush()


def error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """A line on stderr about something the command did, which it did not refuse."""
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def error_object(code: int, message: str, rule: str | None = None, details: list[str] | None = None) -> dict[str, Any]:
    """An error as --json output carries it (``error.code``: the exit code)."""
    return {"code": code, "message": message, "rule": rule, "details": details or []}


def error_lines(message: str, details: list[str] | None = None) -> None:
    """An error as people read it, on stderr with or without --json (README, "--json"):
    one line, then each of its details the line does not say already (a placement refusal
    names each cell's reason in its line, which apply's summary shows alone)."""
    error(message)
    for line in (d for d in details or [] if d not in message):
        err_console.print(f"  - {line}", markup=False, highlight=False)


def step_rows(steps: Iterable[Any]) -> list[tuple[str, str, str, str]]:
    """(op, name, type, what changes) per ResourceChange that is not ``same``:
    changed properties old → new one per line, a data-bearing replace or delete flagged."""
    from tenantctl.engines.diffs import describe

    rows = []
    for c in steps:
        if c.op.value == "same":
            continue
        op = f"[bold red]{c.op.value} ⚠[/]" if c.loses_data else c.op.value
        loss = "replaced: its data is lost" if c.op.value == "replace" else "deleted with its data"
        what = [f"[bold red]{loss}[/]"] if c.loses_data else []
        what += [escape(describe(d)) for d in c.diffs]
        rows.append((op, escape(c.name), escape(c.type), "\n".join(what)))
    return rows


def changes_table(title: str, changes: Any) -> None:
    """Each resource a ChangeSet creates, updates, replaces or deletes, with
    its changed properties; nothing when unchanged."""
    steps_table(title, changes.changes)


def steps_table(title: str, steps: Iterable[Any]) -> None:
    rows = step_rows(steps)
    if rows:
        table(title, ["op", "resource", "type", "changes (old → new)"], rows)


def changes_summary(changes: Any) -> str:
    return ", ".join(f"{n} {op}" for op, n in changes.summary().items()) or "no changes"


def orphan_lines(tenant_id: str, orphans: Iterable[Any], preview: bool) -> None:
    """One line per orphan (or mis-tagged) resource: what was (or would be) done with it."""
    for orphan in orphans:
        console.print(f"{tenant_id} · {orphan.noun} {orphan.kind} {orphan.name}: {orphan.fate(preview)}",
                      highlight=False, markup=False)
