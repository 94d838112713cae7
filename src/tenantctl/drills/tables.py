"""Per-table row counts and order-independent row checksums, computed in SQL.

The checksum is the sum (as numeric, so it never overflows) of the first 64
bits of md5(row::text) over all rows: independent of row order and physical
layout, and it changes with any changed, missing or extra row."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from tenantctl.drills.models import TableCheck

_CHECKSUM = sql.SQL(
    "SELECT count(*), coalesce(sum(('x' || left(md5({row}::text), 16))::bit(64)::bigint::numeric), 0)::text "
    "FROM {table} AS t"
)


def _row(conn: Any, schema: str, table: str, without: tuple[str, ...]) -> sql.Composable:
    """``t`` (the whole row), or ROW(its other columns) when it has any of
    ``without``: the same text as the row had before those columns were added."""
    columns = [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum", (sql.Identifier(schema, table).as_string(conn),))]
    if not set(without) & set(columns):
        return sql.SQL("t")
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(
        sql.Identifier("t", c) for c in columns if c not in without))


def table_checks(conn: Any, schema: str, tenant_id: str, in_transaction: bool = False,
                 without: dict[str, tuple[str, ...]] | None = None) -> dict[str, TableCheck]:
    """Counts and checksums of every table in ``schema``, in one snapshot (the
    caller's REPEATABLE READ transaction when ``in_transaction``). ``without``:
    {table: columns} left out of its checksum (columns added since a backup)."""
    if not in_transaction:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return table_checks(conn, schema, tenant_id, in_transaction=True, without=without)
    # The policies admit the tenant's rows for roles they bind (superusers bypass them anyway).
    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
    names = [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (schema,))]
    out = {}
    for name in names:
        row = _row(conn, schema, name, without[name]) if without and name in without else sql.SQL("t")
        rows, checksum = conn.execute(_CHECKSUM.format(row=row, table=sql.Identifier(schema, name))).fetchone()
        out[name] = TableCheck(rows=rows, checksum=checksum)
    return out


def table_rows(conn: Any, schema: str, tenant_id: str) -> dict[str, int]:
    """Row count of every table in ``schema`` ({} when it holds no table or does not exist)."""
    with conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        names = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (schema,))]
        count = sql.SQL("SELECT count(*) FROM {}")
        return {name: conn.execute(count.format(sql.Identifier(schema, name))).fetchone()[0] for name in names}


def server_major(conn: Any) -> int:
    return int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
