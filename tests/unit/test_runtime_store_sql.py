"""The store's SQL on the hot path: rendered once per schema (not composed and
quoted again on every call), to the bytes libpq's quoting gives."""

from __future__ import annotations

from runtime_fixtures import context

from tenant_runtime.crypto import Envelope
from tenant_runtime.store import Compute, ContextStore, Statement
from tenant_runtime.transaction import begin_statement, schema_statement


def unreachable(ctx):
    raise AssertionError("no client is needed to build a statement")


def insert_of(store: ContextStore, ctx) -> Statement:
    operation = store._append(ctx, "c1", "user", "hello", {"k": 1})
    assert isinstance(next(operation), Compute)  # sealing comes first
    return operation.send(b"sealed")


def test_the_append_statement_is_rendered_once_per_schema():
    store = ContextStore(Envelope(unreachable), unreachable)
    first = insert_of(store, context("acme"))
    assert isinstance(first.query, bytes) and b'INSERT INTO "tenant_acme"."messages"' in first.query
    # Positional, the metadata as JSON text the server casts: psycopg dumps these in C.
    assert first.params == ("acme", "c1", "acme", "c1", "user", b"sealed", '{"k": 1}')
    assert first.query.count(b"%s") == 7 and b"%s::jsonb FROM c" in first.query
    assert insert_of(store, context("acme")).query is first.query  # another request, same schema
    beta = insert_of(store, context("beta")).query
    assert beta is not first.query and b'"tenant_beta"."conversations"' in beta


def test_identifiers_are_quoted_as_libpq_quotes_them():
    assert schema_statement("SELECT 1 FROM {t}", 'we"ird', t="messages") == b'SELECT 1 FROM "we""ird"."messages"'


def test_begin_and_the_scope_are_one_query_without_parameters_rendered_once_per_tenant():
    query = begin_statement("acme", "tenant_acme_app", 1.5)
    assert query == (b"BEGIN; SET LOCAL role = 'tenant_acme_app'; SET LOCAL app.tenant_id = 'acme'; "
                     b"SET LOCAL statement_timeout = '1500'")
    assert begin_statement("acme", "tenant_acme_app", 1.5) is query  # the next transaction: not rendered again
    assert begin_statement("acme") == b"BEGIN; SET LOCAL app.tenant_id = 'acme'"
    assert begin_statement("acme", None, 0.0001) == b"BEGIN; SET LOCAL app.tenant_id = 'acme'; " \
                                                     b"SET LOCAL statement_timeout = '1'"


def test_the_scope_values_are_literals_quoted_as_psycopg_quotes_them():
    from psycopg import sql

    for odd in ("o'neil", "back\\slash", "é", "x'; RESET ROLE; --"):
        assert begin_statement(odd) == b"BEGIN; SET LOCAL app.tenant_id = " + sql.Literal(odd).as_bytes(None)
    assert begin_statement("o'neil").endswith(b"'o''neil'")
    assert begin_statement("back\\slash").endswith(b" E'back\\\\slash'")
    assert begin_statement("x'; RESET ROLE; --").endswith(b"'x''; RESET ROLE; --'")  # one string, no statement


def test_the_metadata_is_the_json_text_json_dumps_writes_and_anything_else_is_refused():
    import json

    import pytest

    from tenant_runtime.errors import InvalidRequest
    from tenant_runtime.store import _append_input

    acme = context("acme")
    for meta in ({}, None, {"k": [1, 2.5, None, True, "é ✓ 🙂", {"n": {"m": []}}]}):
        assert _append_input(acme, "c1", "user", "x", meta)[2] == json.dumps(meta or {})
    circular: dict = {}
    circular["self"] = circular
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    # NaN and infinity: json.dumps writes them, PostgreSQL's jsonb refuses them (was a 500 at the INSERT).
    for bad in ({"x": object()}, {"x": {1, 2}}, circular, {"deep": deep}, {"nan": float("nan")},
                {"inf": [float("-inf")]}):
        with pytest.raises(InvalidRequest, match="JSON-serialisable"):
            _append_input(acme, "c1", "user", "x", bad)
    # A lone surrogate (what JSON's "\ud800" decodes to): UTF-8 and jsonb cannot hold it.
    for conversation_id, content, meta in (("c\ud800", "x", {}), ("c1", "x \udfff", {}), ("c1", "x", {"k": "\ud800"}),
                                           ("c1", "x", {"\udc00": 1})):
        with pytest.raises(InvalidRequest, match="lone surrogate"):
            _append_input(acme, conversation_id, "user", content, meta)
    # A key json.dumps would turn into a string: the Message returned could not hold it.
    with pytest.raises(InvalidRequest, match="string keys"):
        _append_input(acme, "c1", "user", "x", {1: "x"})
