"""Engine events drawn as a live progress line for people (stderr, so --json
stdout stays clean)."""

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
                progress.update(task, description=(f"{title} [{event.stack}] {done} done · "
                                                   f"{op} {event.type} {event.name}"))

        yield draw
