"""Carrying a tenant store's rows to a store in another account or region,
re-wrapping its sealed columns on the way (docs/moves.md, "Rows").

A subscription cannot do it: it copies bytes as they are, and it needs the
target database to reach the source across accounts or regions. tenantctl
reaches both with each cell's admin login, so it relays, from a change
capture made of plain SQL:

* ``install``: a changelog table and one row trigger per store table,
  recording which key changed (not the row). The trigger function is the
  admin's (``SECURITY DEFINER``): the tenant's login writes its tables as
  before and needs no right on the changelog. The changelog lives in the
  admin's schema ``tenantctl_move`` (one table per tenant schema, named after
  it), not in the tenant's: every table of a tenant schema must pass the
  posture checks (row-level security on ``tenant_id``), and tenantctl's own
  bookkeeping has no tenant column.
* ``copy``: every table in key order, in keyset pages (the primary key's
  index: no OFFSET), after ``install`` (so a row changed while it is copied is
  also in the changelog); each page re-wrapped and upserted in one
  transaction by one pipelined ``executemany``: a round trip per page, not
  per row (the per-row round trip was 3/4 of the copy's time).
* ``relay``: the changelog in order, each changed key once per batch: the
  **current** source row is read again (absent: a delete) and upserted into
  the target with its sealed columns re-wrapped (the batch's reads in one
  pipelined round trip, its writes, in order, in another); the changelog entries read
  are deleted only once the target committed, so a killed relay applies a
  batch again, idempotently. An entry of a transaction that commits after a
  later one was read is still there at the next batch (only the entries read
  are deleted), so nothing is skipped for committing late.
* ``remove``: triggers, function and changelog dropped (finalize, rollback).

Rows are applied in the changelog's order of first appearance, parents before
children as they were written; a deleted parent's cascade reaches the target
through the parent's delete (the children's own entries then find nothing).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from tenant_runtime.models import StoreConnection
from tenant_runtime.tables import SEALED_BY_TABLE, TABLES

CAPTURE_SCHEMA = "tenantctl_move"
JSON_OIDS = frozenset({114, 3802})  # json, jsonb (pg_type)
FUNCTION = "tenantctl_move_capture"
TRIGGER = "tenantctl_move_capture"
BATCH = 500

# table, the row's key (one value per key column, in order), the sealed blob -> the blob under the new key
Rewrap = Callable[[str, tuple, bytes], bytes]
# table, the row's key, a sealed blob -> its plaintext (each store opened with its own key)
Open = Callable[[str, tuple, bytes], bytes]

_FUNCTION_BODY = """
DECLARE
  new_row jsonb := CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE to_jsonb(NEW) END;
  old_row jsonb := CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE to_jsonb(OLD) END;
  new_key jsonb;
  old_key jsonb;
BEGIN
  SELECT jsonb_object_agg(k, new_row -> k) INTO new_key FROM unnest(TG_ARGV) AS k WHERE new_row IS NOT NULL;
  SELECT jsonb_object_agg(k, old_row -> k) INTO old_key FROM unnest(TG_ARGV) AS k WHERE old_row IS NOT NULL;
  IF old_key IS NOT NULL AND old_key IS DISTINCT FROM new_key THEN
    INSERT INTO {changelog} (tbl, key) VALUES (TG_TABLE_NAME, old_key);
  END IF;
  IF new_key IS NOT NULL THEN
    INSERT INTO {changelog} (tbl, key) VALUES (TG_TABLE_NAME, new_key);
  END IF;
  RETURN NULL;
END
"""


def primary_keys(conn: Any, schema: str) -> dict[str, list[str]]:
    """Each store table's primary key columns, in key order, from the catalog."""
    rows = conn.execute(
        "SELECT c.relname, a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum "
        "WHERE i.indisprimary AND n.nspname = %s AND c.relname = ANY(%s) ORDER BY c.relname, k.ord",
        (schema, list(TABLES))).fetchall()
    keys: dict[str, list[str]] = {}
    for table, column in rows:
        keys.setdefault(table, []).append(column)
    missing = [t for t in TABLES if t not in keys]
    if missing:
        raise ValueError(f"schema {schema}: no primary key on {', '.join(missing)}: rows cannot be relayed by key")
    return keys


def changelog(store: StoreConnection) -> sql.Identifier:
    """The changelog of ``store``'s tenant schema (its database's ``tenantctl_move`` schema)."""
    return sql.Identifier(CAPTURE_SCHEMA, store.schema_name)


def install(conn: Any, store: StoreConnection) -> None:
    """The changelog, the capture function and a trigger per table (idempotent;
    ``conn``: the source cell's admin, autocommit)."""
    schema = store.schema_name
    log = changelog(store)
    function = sql.Identifier(schema, FUNCTION)
    keys = primary_keys(conn, schema)
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(CAPTURE_SCHEMA)))
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (seq bigserial PRIMARY KEY, tbl text NOT NULL, "
                             "key jsonb NOT NULL)").format(log))
        body = _FUNCTION_BODY.format(changelog=log.as_string(conn))
        conn.execute(sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
                             "SET search_path = pg_catalog AS {}").format(function, sql.Literal(body)))
    # One table per transaction: a trigger's lock on every table at once deadlocks with a writer
    # holding one table and writing the next (the copy starts after the last, so none is missed).
    for table in TABLES:
        target = sql.Identifier(schema, table)
        with conn.transaction():
            conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER), target))
            conn.execute(sql.SQL("CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW "
                                 "EXECUTE FUNCTION {}({})").format(
                sql.Identifier(TRIGGER), target, function, sql.SQL(", ").join(map(sql.Literal, keys[table]))))


def remove(conn: Any, store: StoreConnection) -> None:
    """Triggers, function and changelog gone (idempotent)."""
    schema = store.schema_name
    for table in TABLES:  # one table per transaction, as installed
        conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
            sql.Identifier(TRIGGER), sql.Identifier(schema, table)))
    with conn.transaction():
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(schema, FUNCTION)))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(changelog(store)))


def pending(conn: Any, store: StoreConnection) -> int:
    """Changelog entries not yet relayed (the relay's lag, in changes)."""
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(changelog(store))).fetchone()[0]


def advance_identities(conn: Any, store: StoreConnection) -> None:
    """Move each identity column's sequence past its highest value: relayed rows
    were inserted with their source values (``OVERRIDING SYSTEM VALUE``), which
    does not advance it, so the runtime's next append on the target would
    collide. Run on the target in the freeze, before the switch (idempotent)."""
    for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s "
            "AND is_identity = 'YES' ORDER BY table_name", (store.schema_name,)).fetchall():
        conn.execute(sql.SQL("SELECT setval(pg_get_serial_sequence({}, {}), "
                             "GREATEST((SELECT max({}) FROM {}), 1), (SELECT max({}) FROM {}) IS NOT NULL)").format(
            sql.Literal(f'"{store.schema_name}"."{table}"'), sql.Literal(column), sql.Identifier(column),
            sql.Identifier(store.schema_name, table), sql.Identifier(column), sql.Identifier(store.schema_name, table)))


def digests(conn: Any, store: StoreConnection, open_blob: Open) -> dict[str, tuple[int, str]]:
    """Per table, the row count and a digest both stores of a move agree on
    although their sealed bytes differ: in key order, the md5 of each row's
    unsealed columns (as PostgreSQL prints them) and the SHA-256 of its sealed
    column's plaintext. Run it on each side inside a transaction pinned to the
    snapshot the verification compares (after the freeze)."""
    schema = store.schema_name
    keys = primary_keys(conn, schema)
    columns: dict[str, list[str]] = {}
    for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = ANY(%s) ORDER BY table_name, ordinal_position", (schema, list(TABLES))).fetchall():
        columns.setdefault(table, []).append(column)
    out = {}
    for table in TABLES:
        sealed = SEALED_BY_TABLE.get(table)
        plain = [c for c in columns[table] if sealed is None or c != sealed.column]
        row_md5 = sql.SQL("md5(ROW({})::text)").format(sql.SQL(", ").join(map(sql.Identifier, plain)))
        extra = (sql.SQL(", {}").format(sql.SQL(", ").join(map(sql.Identifier, (*sealed.keys, sealed.column))))
                 if sealed is not None else sql.SQL(""))
        cur = conn.execute(sql.SQL("SELECT {}{} FROM {} ORDER BY {}").format(
            row_md5, extra, sql.Identifier(schema, table), sql.SQL(", ").join(map(sql.Identifier, keys[table]))))
        digest, count = hashlib.sha256(), 0
        for row in cur:
            count += 1
            digest.update(row[0].encode())
            if sealed is not None:
                blob = row[-1]
                plaintext = b"" if blob is None else open_blob(table, tuple(row[1:-1]), bytes(blob))
                digest.update(hashlib.sha256(plaintext).digest())
        out[table] = (count, digest.hexdigest())
    return out


class Relay:
    """Rows of ``source`` carried to ``target`` (admin connections of each
    cell, autocommit), sealed columns through ``rewrap``."""

    def __init__(self, source_conn: Any, source: StoreConnection, target_conn: Any, target: StoreConnection,
                 rewrap: Rewrap, batch: int = BATCH) -> None:
        self.src, self.source, self.dst, self.target = source_conn, source, target_conn, target
        self.rewrap, self.batch = rewrap, batch
        self.keys = primary_keys(source_conn, source.schema_name)
        self._statements: dict[tuple[str, str, tuple[str, ...]], str] = {}

    def copy(self) -> int:
        """Every row of every table, in key order, in batches; returns the rows written."""
        written = 0
        for table in TABLES:
            key_cols = self.keys[table]
            order = sql.SQL(", ").join(map(sql.Identifier, key_cols))
            after: tuple | None = None
            while True:
                where = sql.SQL("")
                params: list[Any] = []
                if after is not None:
                    placeholders = sql.SQL(", ").join(sql.Placeholder() * len(after))
                    where = sql.SQL("WHERE ({}) > ({})").format(order, placeholders)
                    params = list(after)
                cur = self.src.execute(sql.SQL("SELECT * FROM {} {} ORDER BY {} LIMIT {}").format(
                    sql.Identifier(self.source.schema_name, table), where, order, sql.Literal(self.batch)), params)
                columns, json_columns = _described(cur.description)
                rows = cur.fetchall()
                if not rows:
                    break
                with self.dst.transaction():  # executemany pipelines: one round trip per batch, not per row
                    self.dst.cursor().executemany(self._statement("upsert", table, tuple(columns)),
                                                  [self._values(table, columns, row, json_columns)
                                                   for row in rows])
                written += len(rows)
                last = dict(zip(columns, rows[-1], strict=True))
                after = tuple(last[c] for c in key_cols)
        return written

    def relay(self) -> int:
        """One batch of the changelog applied to the target; returns the keys
        applied (0: caught up)."""
        log = changelog(self.source)
        entries = self.src.execute(sql.SQL("SELECT seq, tbl, key FROM {} ORDER BY seq LIMIT {}").format(
            log, sql.Literal(self.batch))).fetchall()
        if not entries:
            return 0
        changed: dict[tuple[str, str], dict] = {}  # first appearance first
        for _, table, key in entries:
            changed.setdefault((table, json.dumps(key, sort_keys=True)), key)
        # Every current row read in one round trip, then written in order in another.
        with self.src.pipeline():
            reads = [(table, self.src.execute(self._statement("read", table), (json.dumps(key),)), key)
                     for (table, _), key in changed.items()]
        with self.dst.transaction(), self.dst.pipeline():
            for table, cur, key in reads:
                if (row := cur.fetchone()) is None:
                    self.dst.execute(self._statement("delete", table), (json.dumps(key),))
                else:
                    self._upsert(table, *_described(cur.description), row)
        self.src.execute(sql.SQL("DELETE FROM {} WHERE seq = ANY(%s)").format(log),
                         ([seq for seq, _, _ in entries],))
        return len(changed)

    def catch_up(self) -> int:
        """Relay until the changelog is empty; returns the keys applied."""
        total = 0
        while (applied := self.relay()) > 0:
            total += applied
        return total

    # -- one row -----------------------------------------------------------------------
    def _statement(self, kind: str, table: str, columns: tuple[str, ...] = ()) -> str:
        """The statement of ``kind`` for ``table``, composed once per relay (a
        batch runs it per row: composing it each time costs more than running it)."""
        cached = self._statements.get((kind, table, columns))
        if cached is None:
            cached = self._statements[kind, table, columns] = self._compose(kind, table, columns).as_string(self.dst)
        return cached

    def _compose(self, kind: str, table: str, columns: tuple[str, ...]) -> sql.Composed:
        key_cols = sql.SQL(", ").join(map(sql.Identifier, self.keys[table]))
        if kind == "read":
            return sql.SQL("SELECT * FROM {} WHERE {}").format(
                sql.Identifier(self.source.schema_name, table), self._match(self.source.schema_name, table))
        if kind == "delete":
            return sql.SQL("DELETE FROM {} WHERE {}").format(
                sql.Identifier(self.target.schema_name, table), self._match(self.target.schema_name, table))
        rest = [c for c in columns if c not in self.keys[table]]
        update = (sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in rest))
            if rest else sql.SQL("DO NOTHING"))
        return sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE VALUES ({}) ON CONFLICT ({}) {}").format(
            sql.Identifier(self.target.schema_name, table), sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(sql.Placeholder() * len(columns)), key_cols, update)

    def _match(self, schema: str, table: str) -> sql.Composed:
        """`(k1, k2) = (SELECT k1, k2 FROM jsonb_populate_record(NULL::table, %s))`: the key typed as the table's."""
        cols = sql.SQL(", ").join(map(sql.Identifier, self.keys[table]))
        return sql.SQL("({cols}) = (SELECT {cols} FROM jsonb_populate_record(NULL::{table}, %s::jsonb))").format(
            cols=cols, table=sql.Identifier(schema, table))

    def _upsert(self, table: str, columns: list[str], json_columns: frozenset[str], row: tuple) -> None:
        self.dst.execute(self._statement("upsert", table, tuple(columns)),
                         self._values(table, columns, row, json_columns))

    def _values(self, table: str, columns: list[str], row: tuple, json_columns: frozenset[str]) -> list[Any]:
        """``row`` as the upsert's parameters, its sealed column re-wrapped
        (once: from the source's bytes), its json columns as jsonb."""
        values = dict(zip(columns, row, strict=True))
        sealed = SEALED_BY_TABLE.get(table)
        if sealed is not None and values.get(sealed.column) is not None:
            key = tuple(values[k] for k in sealed.keys)
            values[sealed.column] = self.rewrap(table, key, bytes(values[sealed.column]))
        return [Jsonb(values[c]) if c in json_columns and values[c] is not None else values[c] for c in columns]


def _described(description: Any) -> tuple[list[str], frozenset[str]]:
    """A result's column names, and those of its json/jsonb columns: a value
    read from those goes back as jsonb, while a list read from an array column
    (the blind index's ``terms int8[]``) goes back as that array."""
    names = [d.name for d in description]
    return names, frozenset(d.name for d in description if d.type_code in JSON_OIDS)


class Relays(list[Relay]):
    """The relays of one move's schemas (a tenant's and each of its
    workspaces', each with its own re-wrap), run one after the other."""

    def copy(self) -> int:
        return sum(relay.copy() for relay in self)

    def catch_up(self) -> int:
        return sum(relay.catch_up() for relay in self)
