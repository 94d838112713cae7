"""A drill report for people (markdown from templates/drill_report.md.j2) and
machines (the DrillReport JSON)."""

from __future__ import annotations

from tenantctl.drills.models import DrillReport


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
