"""Times as operators read them in a command's text output (``--json`` keeps ISO 8601)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_minute(when: datetime | str) -> str:
    """``2026-12-07 21:13Z``: UTC to the minute, as `move`, `status` and `cell
    evacuate` say when a rollback window ends. A string is an ISO time (a
    result's field kept JSON-ready); a naive datetime is taken as UTC."""
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return f"{when:%Y-%m-%d %H:%M}Z"
