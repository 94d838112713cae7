"""Progress of long commands on stderr (stdout stays for the result and --json).

Off a terminal (CI logs, `2>file`) each phase of the operation is one line
with the time since the command started, so a job never looks hung; on a
terminal the same lines scroll above a live view of the current phase: the
resource being changed and "N of M resources" once the engine's plan is known.
Fleet runs (apply, refresh) print a plan line, then a stamped line per tenant.
Only the live views need rich's progress (~20 ms to import): off a terminal
the lines are written without it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tenantctl.cli.output import err_console
from tenantctl.engines.base import EngineEvent


def elapsed(started: float) -> str:
    """What every progress line starts with: the seconds since ``started`` (the command's start)."""
    return f"[{time.monotonic() - started:6.1f}s]"


def _resource_view() -> Any:
    """The live view of one operation: a spinner, the current step, 'N of M resources' once the
    plan gave M, the elapsed time."""
    from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class Resources(ProgressColumn):
        def render(self, task: Task) -> Text:
            if task.total is None:
                return Text("")
            return Text(f"{int(task.completed)} of {int(task.total)} resources", style="progress.download")

    # The description holds stack names ("[acme]") and engine messages: text, not markup.
    return Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), Resources(),
                    TimeElapsedColumn(), console=err_console, transient=True)


class ProgressView:
    """An EventSink drawing engine and operation events for ``title`` (e.g.
    "provisioning acme"); ``pause()`` stops the live view while a prompt waits."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.started = time.monotonic()
        self.live: Any = None  # rich's Progress, on a terminal
        self.task = None
        if err_console.is_terminal:
            self.live = _resource_view()
            self.task = self.live.add_task(title, total=None)

    def line(self, text: str) -> None:
        """One line, stamped with the time since the command started."""
        err_console.print(f"{elapsed(self.started)} {self.title}: {text}", highlight=False, markup=False)

    def __call__(self, event: EngineEvent) -> None:
        if event.kind == "phase":
            self.line(event.message)
            self._update(description=f"{self.title}: {event.message}", total=None, completed=0)
        elif event.kind == "plan":
            self.line(f"{event.stack}: {event.total} resource(s) to change")
            self._update(total=event.total or None, completed=0)
        elif event.kind == "summary":
            self.line(f"{event.stack}: {event.message}")
        elif event.kind == "diagnostic" and event.message:
            self.line(f"{event.stack}: {event.message}")
        elif event.kind == "resource-done":
            self._update(advance=1)
        elif event.kind == "resource-pre":
            op = event.op.value if event.op else ""
            self._update(description=f"{self.title} [{event.stack}]: {op} {event.type} {event.name}")

    def _update(self, **changes) -> None:
        if self.live is not None:
            self.live.update(self.task, **changes)

    def start(self) -> None:
        if self.live is not None:
            self.live.start()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()

    @contextmanager
    def pause(self) -> Iterator[None]:
        self.stop()
        try:
            yield
        finally:
            self.start()


@contextmanager
def engine_progress(title: str) -> Iterator[ProgressView]:
    """A ProgressView for the block (an EventSink to hand to operations and
    engines); a last line, stamped with how long the whole thing took, says
    ``done``."""
    view = ProgressView(title)
    view.start()
    try:
        yield view
    finally:
        view.stop()
    view.line("done")


class FleetProgress:
    """Progress over many tenants on stderr: a plan line, then one line per
    finished tenant, each stamped with the time since the start (a live bar
    as well when stderr is a terminal)."""

    def __init__(self, verb: str) -> None:
        self.verb, self.done_count, self.total = verb, 0, 0
        self.started = time.monotonic()
        self._bar: Any = None  # rich's Progress, on a terminal
        self._task = None

    def plan(self, total: int, text: str) -> None:
        self.total = total
        more = f"; {self.verb} {total} tenant(s)" if total else ""
        err_console.print(f"{elapsed(self.started)} plan: {text}{more}", highlight=False)
        if total and err_console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn(self.verb), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=err_console, transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.verb, total=total)

    def note(self, line: str) -> None:
        """A stamped line that is not a tenant (a cell's result, a wait); rich markup."""
        err_console.print(f"{elapsed(self.started)} {line}", highlight=False)

    def done(self, line: str) -> None:
        """One finished tenant; ``line`` is rich markup."""
        self.done_count += 1
        err_console.print(f"{elapsed(self.started)} \\[{self.done_count}/{self.total}] {line}", highlight=False)
        if self._bar is not None:
            self._bar.advance(self._task)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()


@contextmanager
def fleet_progress(verb: str) -> Iterator[FleetProgress]:
    progress = FleetProgress(verb)
    try:
        yield progress
    finally:
        progress.stop()
