"""Opaque pagination cursors, one codec for every paginated listing.

A cursor is URL-safe base64 of a small JSON object, without padding: opaque to
callers, readable by us. Each listing names its own fields; ``decode`` returns
the object or raises ValueError, and the caller turns that into its own error
(the runtime's 400, the CLI's exit 3) and checks the fields it needs.
Used by the context store (history, conversations) and the registry listing.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any


def encode(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> dict[str, Any]:
    """The cursor's object; ValueError for anything that is not one of ours."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor") from None
    if not isinstance(data, dict):
        raise ValueError("not a cursor")
    return data
