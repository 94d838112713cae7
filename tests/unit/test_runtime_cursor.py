"""History cursors: opaque, bound to tenant and conversation, refused when forged."""

from __future__ import annotations

import base64
import json

import pytest

from tenant_runtime.errors import InvalidRequest, TenantMismatch
from tenant_runtime.store import decode_cursor, encode_cursor


def raw(data) -> str:
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
    for bad in ("", "!!!", raw({"t": "acme"}), raw({"t": "acme", "l": ""}), raw({"t": "acme", "l": 3}),
                encode_cursor("acme", "c1", 42, 0)):  # a history cursor is not a list cursor
        with pytest.raises(InvalidRequest, match="invalid cursor"):
            decode_list_cursor(bad, "acme")
