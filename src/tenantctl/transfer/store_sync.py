"""Keeping one tenant store in step with another: PostgreSQL logical
replication between the tenant's schema in two databases, the write freeze on
a store (the tenant role's write rights), and the comparison of the two
(row counts and checksums, the drills' ``table_checks``).

A move follows its source with a publication on the source schema's tables and
a subscription in the target database, so the copy happens while the tenant
serves and the freeze only waits for the last few changes; the verification
reads snapshots of both stores pinned in the freeze after it has ended, so the
freeze's length does not grow with the tenant's size.

A tenant's workspaces have their schemas (and roles) in the tenant's store:
one link carries the tenant's schema and every workspace's (one publication,
slot and subscription), so they are frozen, caught up and switched together.

Every step is idempotent (a killed move runs it again). The slot is created on
its own before the subscription (``create_slot = false``): on one PostgreSQL
server (the sandbox, where every store is a database of it) CREATE SUBSCRIPTION
cannot create its slot itself. Subscriptions are dropped after detaching their
slot (``slot_name = NONE``), which is then dropped on the source, for the same
reason; the table-sync slots its copies made are found by the subscription's
oid and server, which its publication records (``_record``) before it is
enabled: a killed run may have dropped it. The apply worker runs as the admin
(a superuser on the sandbox; ``rds_superuser`` on RDS, where the parameter
group needs ``rds.logical_replication = 1``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from tenant_runtime.models import StoreConnection
from tenant_runtime.tables import TABLES
from tenantctl.drills.tables import table_checks
from tenantctl.errors import DrillFailed, TargetUnavailable

WRITES = "INSERT, UPDATE, DELETE"


@dataclass(frozen=True)
class Link:
    """A replication link from ``source`` to ``target`` named ``name``
    (publication, slot and subscription share it), with the tenant's
    workspaces' schemas in the same two databases: (row key, source, target)."""

    name: str
    source: StoreConnection
    target: StoreConnection
    workspaces: tuple[tuple[str, StoreConnection, StoreConnection], ...] = ()

    @property
    def sources(self) -> list[StoreConnection]:
        return [self.source, *(s for _, s, _ in self.workspaces)]

    @property
    def targets(self) -> list[StoreConnection]:
        return [self.target, *(t for _, _, t in self.workspaces)]

    def pairs(self, tenant_id: str) -> list[tuple[str, StoreConnection, StoreConnection]]:
        """(row key, source, target) of every schema the link carries, the tenant's first."""
        return [(tenant_id, self.source, self.target), *self.workspaces]


def link_name(tenant_id: str, generation: int) -> str:
    """Replication object names: lowercase letters, digits and underscores only."""
    return f"tenantctl_move_{tenant_id.replace('-', '_')}_{generation}"


Connect = Callable[[StoreConnection], Any]  # an autocommit admin connection to a store's database


def _tables(*stores: StoreConnection) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(store.schema_name, t) for store in stores for t in TABLES)


def set_writable(conn: Any, store: StoreConnection, writable: bool) -> None:
    """Grant or revoke the tenant role's writes on its tables in ``store``
    (reads stay): a revoked store refuses every runtime, stale ones included."""
    verb = "GRANT {} ON {} TO {}" if writable else "REVOKE {} ON {} FROM {}"
    conn.execute(sql.SQL(verb).format(sql.SQL(WRITES), _tables(store), sql.Identifier(store.role)))


def writable(conn: Any, store: StoreConnection) -> bool:
    return bool(conn.execute("SELECT has_table_privilege(%s, %s, 'INSERT')",
                             (store.role, f"{store.schema_name}.{TABLES[1]}")).fetchone()[0])


def start(connect: Connect, link: Link, admin_user: str, admin_password: str, copy_data: bool = True) -> None:
    """Publication + slot on the source, subscription on the target. With
    ``copy_data`` the existing rows are copied first (into tables emptied when
    no subscription exists yet: a re-run after a kill during the initial copy);
    without, only new changes follow (after a switch the old store follows the
    new one, read-only, so a rollback loses nothing)."""
    with connect(link.source) as src, connect(link.target) as dst:
        reserve(src, link)
        if not has_subscription(dst, link.name):
            if copy_data:
                dst.execute(sql.SQL("TRUNCATE {} CASCADE").format(_tables(*link.targets)))
            info = (f"host={link.source.endpoint} port={link.source.port} dbname={link.source.database} "
                    f"user={admin_user} password={admin_password}")
            dst.execute(sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} "
                                "WITH (create_slot = false, slot_name = {}, copy_data = {}, enabled = false)").format(
                sql.Identifier(link.name), sql.Literal(info), sql.Identifier(link.name), sql.Literal(link.name),
                sql.SQL("true" if copy_data else "false")))
        _record(src, dst, link)


Subscriber = tuple[int, int]  # a subscription's oid and its server's system identifier
RECORDED = "tenantctl: subscription {} on system {}"


def _subscriber(dst: Any, name: str) -> tuple[Subscriber | None, int]:
    """Subscription ``name``'s oid and server (None: no such subscription), and that server's system
    identifier."""
    row = dst.execute("SELECT s.oid, c.system_identifier FROM pg_control_system() c "
                      "LEFT JOIN pg_subscription s ON s.subname = %s", (name,)).fetchone()
    return (None if row[0] is None else (int(row[0]), int(row[1]))), int(row[1])


def _record(src: Any, dst: Any, link: Link) -> None:
    """Record ``link``'s subscription (its oid and server) on its publication,
    on the source, before the subscription is enabled: the slots its table
    copies make there (``pg_<oid>_sync_<relid>_<system id>``) are told from
    another subscription's by them even once a killed run dropped it
    (``stop``). A subscription left disabled (a run killed here, or in a
    ``stop``) is enabled: the link runs."""
    own, _ = _subscriber(dst, link.name)
    if own is not None and _recorded(src, link) != own:
        src.execute(sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(
            sql.Identifier(link.name), sql.Literal(RECORDED.format(*own))))
    if dst.execute("SELECT NOT subenabled FROM pg_subscription WHERE subname = %s", (link.name,)).fetchone()[0]:
        dst.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(sql.Identifier(link.name)))


def _recorded(src: Any, link: Link) -> Subscriber | None:
    """The subscription ``_record`` recorded on ``link``'s publication (None: none, or no publication)."""
    row = src.execute("SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = %s",
                      (link.name,)).fetchone()
    said = re.fullmatch(RECORDED.format(r"(\d+)", r"(\d+)"), (row and row[0]) or "")
    return (int(said[1]), int(said[2])) if said else None


def reserve(src: Any, link: Link) -> None:
    """The source side of ``link`` (``src``: an admin connection to its
    database): the publication, then the slot (which decodes only what is
    written after it is created, for the publications that existed then). A
    switch takes the slot of the link back before anything is switched, the
    subscription after it."""
    if src.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (link.name,)).fetchone() is None:
        src.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
            sql.Identifier(link.name), _tables(*link.sources)))
    if not has_slot(src, link.name):
        src.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (link.name,))


def has_slot(conn: Any, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (name,)).fetchone() is not None


def has_subscription(conn: Any, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_subscription WHERE subname = %s", (name,)).fetchone() is not None


def none_started(dst: Any, link: Link) -> bool:
    """Whether no table of ``link``'s subscription (``dst``: its target's
    database) has left ``init`` and no table-sync worker runs for it: no
    worker has taken a table's copy yet."""
    return bool(dst.execute(
        "SELECT coalesce(bool_and(r.srsubstate = 'i'), true) AND NOT EXISTS (SELECT 1 FROM pg_stat_subscription w "
        "WHERE w.subname = %s AND w.relid IS NOT NULL) FROM pg_subscription_rel r "
        "JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = %s", (link.name, link.name)).fetchone()[0])


def copied(connect: Connect, link: Link) -> bool:
    """Whether the subscription's initial copy of every table is done."""
    with connect(link.target) as dst:
        states = [r[0] for r in dst.execute(
            "SELECT r.srsubstate FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid "
            "WHERE s.subname = %s", (link.name,))]
    return len(states) == len(TABLES) * len(link.targets) and all(state in ("r", "s") for state in states)


def wait(what: str, done: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > timeout:
            raise TargetUnavailable(f"{what}: not done after {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic() - started


def settled(conn: Any, *stores: StoreConnection) -> bool:
    """Whether no other session holds (or waits for) a write lock on the
    tables of ``stores`` (one database). Run after revoking the roles' writes:
    a statement takes its lock before its privileges are checked, so once none
    is left every write the stores acknowledged has ended (its commit record
    written), and a writer that came later was refused. Not a ``SHARE`` lock on
    every table: a transaction writing two tables in the other order
    deadlocks with it."""
    return bool(conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%s) AND c.relname = ANY(%s) "
        "AND l.mode = 'RowExclusiveLock' AND l.pid <> pg_backend_pid())",
        ([s.schema_name for s in stores], list(TABLES))).fetchone()[0])


def freeze(conn: Any, stores: list[StoreConnection], timeout: float) -> None:
    """Revoke the roles' writes on ``stores`` (a tenant's schema and its
    workspaces', one database) and wait until the writes under way have ended
    (``settled``). A writer still holding its lock after ``timeout``: the
    writes are granted again and TargetUnavailable (exit 7) is raised, nothing
    frozen."""
    with conn.transaction():
        for store in stores:
            set_writable(conn, store, False)
    try:
        wait("the writes under way on the store moved from", lambda: settled(conn, *stores), timeout, 0.02)
    except TargetUnavailable:
        with conn.transaction():
            for store in stores:
                set_writable(conn, store, True)
        raise


def quiesce(connect: Connect, stores: list[StoreConnection], timeout: float) -> str:
    """``freeze`` ``stores``, then return a WAL position after the commit of
    every write they acknowledged, already flushed (the walsender sends
    flushed WAL only).

    Not ``pg_current_wal_lsn()``: that is how far WAL was *written*, and an
    asynchronous commit (``synchronous_commit = off``: the sandbox's setting, or
    a client's) is acknowledged before its commit record is written, so a
    subscription can confirm that position without the last commits. The
    position returned is the end of a logical message written once no write
    is under way (every commit record inserted before it), and flushed by
    this transaction's synchronous commit (WAL is flushed in order)."""
    with connect(stores[0]) as conn:
        freeze(conn, stores, timeout)
        with conn.transaction():
            conn.execute("SET LOCAL synchronous_commit = on")
            return conn.execute("SELECT pg_logical_emit_message(true, 'tenantctl_move', 'frozen')::text"
                                ).fetchone()[0]


def caught_up(connect: Connect, link: Link, lsn: str) -> bool:
    """Whether the subscription confirmed everything up to ``lsn``: its slot's
    ``confirmed_flush_lsn``, which the subscriber advances only past changes it
    applied and flushed (or past WAL that held none for it)."""
    with connect(link.source) as src:
        row = src.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                          (lsn, link.name)).fetchone()
    return bool(row and row[0])


def pin(connect: Connect, store: StoreConnection) -> Any:
    """A connection holding a REPEATABLE READ snapshot of ``store`` taken now:
    pinned in the freeze (cheap), read after it (``compare_pinned``), so the
    verification's full read of both stores is not part of the freeze."""
    conn = connect(store)
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    conn.execute("SELECT 1 FROM pg_class LIMIT 1")  # the snapshot is taken by the first query
    return conn


def pin_both(connect: Connect, source: StoreConnection, target: StoreConnection) -> tuple[Any, Any]:
    """``pin`` of ``source`` then of ``target``, the first closed if the second fails."""
    first = pin(connect, source)
    try:
        return first, pin(connect, target)
    except BaseException:
        first.close()
        raise


def compare_pinned(tenant_id: str, pinned: tuple[Any, Any],
                   pairs: list[tuple[str, StoreConnection, StoreConnection]]) -> dict[str, Any]:
    """``compare`` on two ``pin`` snapshots (closed afterwards), for each of
    ``pairs`` (row key, source, target: ``Link.pairs``): the tenant's row
    counts, then each workspace's under ``<key>:<table>``."""
    src, dst = pinned
    rows: dict[str, Any] = {}
    try:
        for key, source, target in pairs:
            same = _same(key, table_checks(src, source.schema_name, key, in_transaction=True),
                         table_checks(dst, target.schema_name, key, in_transaction=True))
            rows.update(same if key == tenant_id else {f"{key}:{t}": n for t, n in same.items()})
    finally:
        for conn in pinned:
            conn.close()
    return rows


def compare(connect: Connect, tenant_id: str, source: StoreConnection, target: StoreConnection) -> dict[str, Any]:
    """Row counts and checksums of both stores; DrillFailed (exit 9) on any difference."""
    with connect(source) as src, connect(target) as dst:
        expected = table_checks(src, source.schema_name, tenant_id)
        actual = table_checks(dst, target.schema_name, tenant_id)
    return _same(tenant_id, expected, actual)


def _same(tenant_id: str, expected: dict[str, Any], actual: dict[str, Any]) -> dict[str, Any]:
    if expected != actual:
        differ = "; ".join(f"{table}: {_side(expected.get(table))} in the source, {_side(actual.get(table))} "
                           "in the target" for table in sorted(set(expected) | set(actual))
                           if expected.get(table) != actual.get(table))
        raise DrillFailed(f"tenant {tenant_id!r}: the target store differs from the source after catching up: "
                          f"{differ}")
    return {t: c.rows for t, c in expected.items()}


def _side(check: Any) -> str:
    """One side of a table that differs, in words (``_same``'s message)."""
    if check is None:
        return "missing"
    return f"{check.rows} row{'' if check.rows == 1 else 's'} (checksum {check.checksum})"


def align_sequences(connect: Connect, store: StoreConnection) -> None:
    """Replication carries rows, not sequence positions: the identity of
    ``messages`` continues after the highest replicated ``seq``."""
    table = sql.Identifier(store.schema_name, "messages")
    with connect(store) as conn:
        conn.execute(sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'seq'), coalesce(max(seq), 0) + 1, false) "
                             "FROM {}").format(sql.Literal(f"{store.schema_name}.messages"), table))


def stop(connect: Connect, link: Link) -> None:
    """Drop the subscription, its slot, any table-sync slot of it left and the
    publication. Only this subscription's table-sync slots: another move's
    copy out of the same database may be running, and its slots are not in
    use between their making and the table's catch-up. They are named after
    the subscription's oid and server: read from the subscription, or from
    its publication (``_record``) when a killed run dropped it already; not
    when a subscription of that oid is on that server again."""
    with connect(link.target) as dst:
        own, system = _subscriber(dst, link.name)
        if own is not None:
            name = sql.Identifier(link.name)
            dst.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(name))
            dst.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(name))
            dst.execute(sql.SQL("DROP SUBSCRIPTION {}").format(name))
        taken = {int(oid) for (oid,) in dst.execute("SELECT oid FROM pg_subscription")}  # server-wide
    with connect(link.source) as src:
        if own is None and (own := _recorded(src, link)) is not None and own[1] == system and own[0] in taken:
            own = None  # its oid is another subscription's now
        sync_slots = f"^pg_{own[0]}_sync_[0-9]+_{own[1]}$" if own is not None else None
        for (slot,) in src.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE database = current_database() "
                "AND (slot_name = %s OR slot_name ~ %s)", (link.name, sync_slots)).fetchall():
            wait(f"replication slot {slot} released", lambda s=slot: not _slot_active(src, s), 30)
            src.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        src.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(link.name)))


def _slot_active(conn: Any, slot: str) -> bool:
    row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    return bool(row and row[0])
