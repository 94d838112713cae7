"""Opaque pagination cursors: one codec, and one contract, for every paginated listing.

A cursor is URL-safe base64 of a small JSON object, without padding: opaque to
callers, readable by us. It names what it pages, so it is refused anywhere
else rather than read as a position in another listing:

- ``p``: the listing (a key of ``LISTINGS``), checked by ``decode``;
- ``t``: the scope it was read in for the runtime's listings (the context's
  key: the tenant id, or ``<id>/<ws>`` for a workspace), checked by ``open_cursor``
  (another scope's cursor is a ``TenantMismatch``, 403);
- each listing's own fields, and what else must match (history: the
  conversation; search: the query's fingerprint), checked by the listing.

A cursor without ``p`` is from before cursors named their listing: refused
like any other that is not of this listing (cursors are short-lived; a client
holding one reads the first page again). ``decode`` raises ValueError, which
the CLI turns into its usage error; ``open_cursor`` raises the runtime's
``InvalidRequest`` (400) and ``TenantMismatch``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from tenant_runtime.errors import InvalidRequest, TenantMismatch

# What each listing is called where its cursor came from: the messages name it.
LISTINGS = {
    "history": "history()",
    "conversations": "list_conversations()",
    "documents": "list_documents()",
    "search": "search()",
    "tenants": "tenantctl list",
}


class CursorError(ValueError):
    """Not a cursor of the listing it was given to; the message says why."""


def encode(listing: str, data: dict[str, Any]) -> str:
    if listing not in LISTINGS:
        raise ValueError(f"unknown listing {listing!r}")
    raw = json.dumps({"p": listing, **data}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, listing: str) -> dict[str, Any]:
    """The cursor's object; CursorError for anything that is not a cursor of ``listing``."""
    wanted = LISTINGS[listing]
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or not _storable(data):
        raise CursorError(f"invalid cursor: pass a cursor returned by {wanted}")
    if "p" not in data:
        raise CursorError(f"invalid cursor: from before cursors named their listing; read the first page of "
                          f"{wanted} again")
    if data["p"] != listing:
        of = LISTINGS.get(data["p"]) if isinstance(data["p"], str) else None
        raise CursorError(f"invalid cursor: a cursor of {of or 'another listing'}, not of {wanted}")
    return data


def _storable(value: Any) -> bool:
    """No NUL and no lone surrogate in any string of ``value``: no id a listing
    writes into a cursor holds one (the store refuses them), nor could PostgreSQL."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return "\x00" not in value
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(map(_storable, value))
    return True


def open_cursor(cursor: str, listing: str, scope: str, fields: Sequence[str] = ()) -> dict[str, Any]:
    """A runtime listing's cursor read in ``scope`` (the context's key): InvalidRequest
    for a malformed one, another listing's or one missing a string ``fields`` entry;
    TenantMismatch for another tenant's or workspace's."""
    try:
        data = decode(cursor, listing)
    except CursorError as err:
        raise InvalidRequest(str(err)) from None
    if not all(isinstance(data.get(f), str) for f in ("t", *fields)):
        raise InvalidRequest(f"invalid cursor: pass a cursor returned by {LISTINGS[listing]}")
    if data["t"] != scope:
        raise TenantMismatch(scope, data["t"], "cursor")
    return data
