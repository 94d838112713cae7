"""Times as operators read them in a command's text output (``--json`` keeps ISO 8601)."""

from __future__ import annotations

from datetime import UTC, datetime


def _utc(when: datetime | str) -> datetime:
    """A string is an ISO time (a result's field kept JSON-ready); a naive
    datetime is taken as UTC."""
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    return when.astimezone(UTC) if when.tzinfo is not None else when


def utc_minute(when: datetime | str) -> str:
    """``2026-12-07 21:13Z``: UTC to the minute, as `move`, `status` and `cell
    evacuate` say when a rollback window ends."""
    return f"{_utc(when):%Y-%m-%d %H:%M}Z"


def utc_second(when: datetime | str) -> str:
    """``2026-12-07 21:13:05Z``: UTC to the second, for when a lock was taken,
    a token revoked or a drill finished."""
    return f"{_utc(when):%Y-%m-%d %H:%M:%S}Z"
