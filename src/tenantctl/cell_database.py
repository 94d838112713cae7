"""A cell's shared PostgreSQL as it runs, read as its admin: the replication
room a move's copy needs (``ReplicationRoom``), before moves start.

A move's copy is a logical replication link from the store it leaves
(``transfer.store_sync``): one slot and one WAL sender on that server for as
long as the copy runs, and during the initial copy one more of each per table
copied at once (``max_sync_workers_per_subscription`` of them). Both are
bounded server-wide (``max_replication_slots``, ``max_wal_senders``, set in
an RDS parameter group); a copy that finds no slot free fails after its
target store was built, and copies that took every slot between them wait on
their table copies until they time out. So moves are refused before they
start when the server has no room for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tenantctl.errors import InvalidInput, TargetUnavailable


@dataclass(frozen=True)
class ReplicationRoom:
    """What a server's replication settings allow and what is taken of them."""

    max_slots: int
    slots: int  # replication slots that exist (active or not: each holds its place)
    max_senders: int
    senders: int  # WAL sender processes running
    sync_workers: int  # max_sync_workers_per_subscription: tables a subscription copies at once

    @property
    def per_copy(self) -> int:
        """Slots (and WAL senders) one move's copy takes at its peak: its link's and its table copies'."""
        return 1 + self.sync_workers

    @property
    def copies(self) -> int:
        """Move copies the free slots and WAL senders hold at once."""
        free = min(self.max_slots - self.slots, self.max_senders - self.senders)
        return max(0, free) // self.per_copy

    def figures(self) -> str:
        return (f"max_replication_slots {self.max_slots} with {self.slots} in use, max_wal_senders "
                f"{self.max_senders} with {self.senders} running, each copy taking up to {self.per_copy} of "
                f"each: its link's and max_sync_workers_per_subscription {self.sync_workers} table copies'")


def replication_room(conn: Any) -> ReplicationRoom:
    """The room of the server ``conn`` (an admin connection) is on."""
    row = conn.execute(
        "SELECT current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots), "
        "current_setting('max_wal_senders')::int, "
        "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'), "
        "current_setting('max_sync_workers_per_subscription')::int").fetchone()
    return ReplicationRoom(*(int(v) for v in row))


def refuse_copies(conn: Any, copies: int, where: str, parallel: int | None = None) -> ReplicationRoom:
    """InvalidInput (exit 3, rule ``replication-slots``) when the server of
    ``conn`` has no room for ``copies`` move copies at once, naming the
    figures; ``where``: what the server is; ``parallel``: the --parallel asked
    for (the message says what would fit)."""
    room = replication_room(conn)
    if copies <= room.copies:
        return room
    if room.copies == 0:
        said = "no room for a move's copy"
    else:
        fits = f"room for {room.copies} move cop{'y' if room.copies == 1 else 'ies'} at once"
        said = f"{fits}, not {copies}" + (f" (--parallel {parallel})" if parallel is not None else "")
    way = f"give --parallel {room.copies} or less, " if parallel is not None and room.copies else ""
    raise InvalidInput(f"{where} has {said}: {room.figures()}; nothing was started: {way}end moves' rollback "
                       "windows (`--finalize`: a switched move keeps a slot where its new store is), drop unused "
                       "slots, or raise max_replication_slots and max_wal_senders (its parameter group)",
                       rule="replication-slots")


def cell_admin(ws: Any, cell: str, connect_timeout: int = 5) -> Any:
    """An autocommit admin connection to cell ``cell``'s shared database;
    TargetUnavailable (exit 7) when it is not applied or cannot be reached."""
    import psycopg

    from tenantctl.drills.context import admin_credentials

    outputs = ws.cell_outputs(cell)
    endpoint, arn = outputs.get("db_endpoint"), outputs.get("db_admin_secret_arn")
    if not endpoint or not arn:
        raise TargetUnavailable(f"cell {cell!r} has no database yet (not applied)")
    user, password = admin_credentials(ws.cell_clients(cell)("secretsmanager"), arn)
    where = f"{endpoint}:{outputs.get('db_port')}"
    try:
        return psycopg.connect(host=endpoint, port=int(outputs.get("db_port") or 5432),
                               dbname=outputs.get("db_name") or "postgres", user=user, password=password,
                               autocommit=True, connect_timeout=connect_timeout, application_name="tenantctl")
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TargetUnavailable(f"cell {cell!r}: its database {where} cannot be reached: {first}") from None
