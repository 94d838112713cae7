"""Progress for people on stderr (so --json stdout stays clean): engine events
as a live line, and fleet runs (apply, refresh) as a line per tenant."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tenantctl.cli.output import err_console
from tenantctl.engines.base import EngineEvent, EventSink


@contextmanager
def engine_progress(title: str, quiet: bool = False) -> Iterator[EventSink]:
    if quiet or not err_console.is_terminal:
        lines: list[str] = []

        def plain(event: EngineEvent) -> None:
            if event.kind == "diagnostic" and event.message:
                lines.append(event.message)

        yield plain
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task(title, total=None)
        done = 0

        def draw(event: EngineEvent) -> None:
            nonlocal done
            if event.kind == "resource-done":
                done += 1
            if event.kind in ("resource-pre", "resource-done"):
                op = event.op.value if event.op else ""
                progress.update(task, description=f"{title} [{event.stack}] {done} done · "
                                                  f"{op} {event.type} {event.name}")

        yield draw


class FleetProgress:
    """Progress over many tenants on stderr: a plan line, then one line per
    finished tenant (a live bar as well when stderr is a terminal)."""

    def __init__(self, verb: str) -> None:
        self.verb, self.done_count, self.total = verb, 0, 0
        self._bar: Progress | None = None
        self._task = None

    def plan(self, total: int, text: str) -> None:
        self.total = total
        err_console.print(f"plan: {text}" + (f"; {self.verb} {total} tenant(s)" if total else ""), highlight=False)
        if total and err_console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn

            self._bar = Progress(TextColumn(self.verb), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=err_console, transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.verb, total=total)

    def done(self, line: str) -> None:
        """One finished tenant; ``line`` is rich markup."""
        self.done_count += 1
        err_console.print(f"[{self.done_count}/{self.total}] {line}", highlight=False)
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
