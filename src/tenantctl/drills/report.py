"""A drill report for people (markdown from templates/drill_report.md.j2) and
machines (the DrillReport JSON)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tenantctl.drills.models import DrillReport
from tenantctl.errors import InvalidInput


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def render_markdown(report: DrillReport) -> str:
    from tenantctl.templates import render

    return render("drill_report.md.j2", r=report, bytes=_human_bytes, seconds=_seconds)


def markdown_target(given: str | Path) -> Path:
    """Where ``--markdown PATH`` writes, checked before any drill runs: an
    existing directory, a path ending in a separator (a directory, made now),
    or a file whose missing parent directories are made now (a path that
    cannot be written is refused, exit 3, not found out once the drills are
    done). The CLI passes the text as typed: a Path drops the trailing ``/``."""
    path = Path(given)
    if str(given).endswith(("/", os.sep)) and not path.is_dir():
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise InvalidInput(f"--markdown {given}: cannot create the directory: {exc.strerror}") from None
    if not path.is_dir():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInput(f"--markdown {path}: cannot create {path.parent}: {exc.strerror}") from None
        if not path.parent.is_dir():
            raise InvalidInput(f"--markdown {path}: {path.parent} is not a directory")
    return path


def write_markdown(reports: Sequence[DrillReport], path: Path) -> list[Path]:
    """The reports' markdown: in a directory, one ``<tenant>-<drill>.md`` each;
    in a file, all of them one after another (a run of several drills keeps
    every report). Returns the files written."""
    from tenantctl.files import write_atomic

    if path.is_dir():
        written = [path / f"{r.tenant_id}-{r.drill_id}.md" for r in reports]
        for report, file in zip(reports, written, strict=True):
            write_atomic(file, render_markdown(report))
        return written
    write_atomic(path, "\n\n---\n\n".join(render_markdown(r).rstrip("\n") for r in reports) + "\n")
    return [path]
