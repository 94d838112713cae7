"""History cursors: opaque, bound to tenant and conversation, refused when forged."""

from __future__ import annotations

import base64
import json

import pytest

from tenant_runtime.errors import InvalidRequest, TenantMismatch
from tenant_runtime.store import decode_cursor, encode_cursor


def raw(data, listing: str | None = "history") -> str:
    """A hand-made cursor of ``listing`` (None: no listing named, as cursors had before)."""
    if isinstance(data, dict) and listing:
        data = {"p": listing, **data}
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_round_trip():
    assert decode_cursor(encode_cursor("acme", "c1", 42, 7), "acme", "c1") == (42, 7)
    assert decode_cursor(encode_cursor("acme", "c1", None, 7), "acme", "c1") == (None, 7)


def test_another_tenants_cursor_is_a_mismatch():
    with pytest.raises(TenantMismatch) as err:
        decode_cursor(encode_cursor("beta", "c1", 42, 0), "acme", "c1")
    assert err.value.status_code == 403


def test_another_conversations_cursor_is_refused():
    with pytest.raises(InvalidRequest, match="another conversation"):
        decode_cursor(encode_cursor("acme", "c2", 42, 0), "acme", "c1")


@pytest.mark.parametrize("cursor", [
    "", "!!!", "bm90IGpzb24", raw([1, 2]), raw({"t": "acme", "c": "c1"}),
    raw({"t": "acme", "c": "c1", "b": "42", "a": 0}), raw({"t": "acme", "c": "c1", "b": -1, "a": 0}),
    raw({"t": "acme", "c": "c1", "b": 5, "a": 5}), raw({"t": "acme", "c": "c1", "b": True, "a": 0}),
    raw({"t": "acme", "c": "c1", "b": None, "a": -3}),
])
def test_malformed_cursors_are_invalid(cursor):
    with pytest.raises(InvalidRequest, match="invalid cursor"):
        decode_cursor(cursor, "acme", "c1")


def test_list_cursor_round_trip_and_refusals():
    from tenant_runtime.store import decode_list_cursor, encode_list_cursor

    assert decode_list_cursor(encode_list_cursor("acme", "conv-9"), "acme") == "conv-9"
    with pytest.raises(TenantMismatch):
        decode_list_cursor(encode_list_cursor("beta", "conv-9"), "acme")
    for bad in ("", "!!!", raw({"t": "acme"}, "conversations"), raw({"t": "acme", "l": ""}, "conversations"),
                raw({"t": "acme", "l": 3}, "conversations"), raw({"t": "acme", "l": "conv-9"}, None),
                encode_cursor("acme", "c1", 42, 0)):  # a history cursor is not a list cursor
        with pytest.raises(InvalidRequest, match="invalid cursor"):
            decode_list_cursor(bad, "acme")


def test_a_cursor_names_its_listing_and_is_refused_by_every_other():
    """Documents and conversations page by the same keyset (tenant, id after):
    each cursor names its listing, so neither is read as a position in the other."""
    from tenant_runtime import cursor as codec

    docs = codec.encode("documents", {"t": "acme", "l": "doc-9"})
    assert codec.open_cursor(docs, "documents", "acme", ("l",))["l"] == "doc-9"
    for listing in ("conversations", "history", "search", "tenants"):
        with pytest.raises(ValueError, match="a cursor of list_documents"):
            codec.decode(docs, listing)
    with pytest.raises(InvalidRequest, match="invalid cursor: a cursor of list_documents"):
        codec.open_cursor(docs, "conversations", "acme", ("l",))
    with pytest.raises(TenantMismatch):  # another workspace's (or tenant's) scope
        codec.open_cursor(docs, "documents", "acme/fin", ("l",))


def test_a_cursor_from_before_cursors_named_their_listing_is_refused_clearly():
    with pytest.raises(InvalidRequest, match="from before cursors named their listing"):
        decode_cursor(raw({"t": "acme", "c": "c1", "b": None, "a": 3}, None), "acme", "c1")


def test_the_registry_listing_refuses_a_runtime_cursor():
    from tenant_runtime.registry import decode_list_cursor, encode_list_cursor
    from tenant_runtime.store import encode_list_cursor as conversations_cursor

    assert decode_list_cursor(encode_list_cursor("acme")) == "acme"
    with pytest.raises(ValueError, match="list_conversations"):
        decode_list_cursor(conversations_cursor("acme", "acme"))
