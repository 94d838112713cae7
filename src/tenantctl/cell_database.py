"""A cell's shared PostgreSQL as it runs, read as its admin: the replication
room a move's copy needs (``ReplicationRoom``), before moves start, and the
connections its pooled tenants' logins may take (``ConnectionBudget``).

A move's copy is a logical replication link from the store it leaves
(``transfer.store_sync``): one slot and one WAL sender on that server for as
long as the copy runs, and during the initial copy one more of each per table
copied at once (``max_sync_workers_per_subscription`` of them). Both are
bounded server-wide (``max_replication_slots``, ``max_wal_senders``, set in
an RDS parameter group); a copy that finds no slot free fails after its
target store was built, and copies that took every slot between them wait on
their table copies until they time out. So moves are refused before they
start when the server has no room for them.

The copy's subscription runs on the server of the store it goes to: one
logical replication apply worker for as long as it is enabled and, during its
initial copy, table-sync workers beside it; a switched move's way back keeps
an apply worker on the server of its old store until finalized. Apply workers
are held for good, table-sync workers come and go (a table waits for a free
one), so a server holds ``n`` copies when ``max_logical_replication_workers``
(4 by default, RDS's too; within ``max_worker_processes``) less its enabled
subscriptions leaves ``n`` apply workers and one table-sync worker free. From
PostgreSQL 18 each of those workers also tracks a replication origin (every
subscription has one, a table copy one while it runs), bounded by
``max_active_replication_origins`` (10 by default; before PostgreSQL 18 by
``max_replication_slots``, ``origins_setting``): the room is the smaller of
the two. A copy with none free waits on its tables in ``init`` without end, so
it is refused before it starts as well (rule ``replication-workers``).

Each pooled tenant's login (and each workspace's) may hold
``db_connection_limit`` connections; at the cell's cap that is
``max_pooled_tenants`` times as many, which the server's ``max_connections``
must hold beside its reserved connections and the platform's own logins, or
busy tenants take the connections the gateway's pools and the operator need.
What the platform's logins keep is the cell's ``platform_connections``: a
larger share leaves tenant logins less, so the budget's check
(``operations.cell.refuse_overcommit``) counts it as a raise too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel

from tenantctl.errors import InvalidInput, TargetUnavailable
from tenantctl.models import PLATFORM_CONNECTIONS_DEFAULT, CellSpec


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

    def figures(self, copies: bool = True) -> str:
        """The settings and what is taken of them; ``copies``: with what a copy takes."""
        taken = (f"max_replication_slots {self.max_slots} with {self.slots} in use, max_wal_senders "
                 f"{self.max_senders} with {self.senders} running")
        return (f"{taken}, each copy taking up to {self.per_copy} of each: its link's and "
                f"max_sync_workers_per_subscription {self.sync_workers} table copies'") if copies else taken


def replication_room(conn: Any) -> ReplicationRoom:
    """The room of the server ``conn`` (an admin connection) is on."""
    row = conn.execute(
        "SELECT current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots), "
        "current_setting('max_wal_senders')::int, "
        "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'), "
        "current_setting('max_sync_workers_per_subscription')::int").fetchone()
    return ReplicationRoom(*(int(v) for v in row))


@dataclass(frozen=True)
class WorkerRoom:
    """What a server's logical replication worker settings allow and what its subscriptions hold."""

    max_workers: int  # max_logical_replication_workers
    max_processes: int  # max_worker_processes: every background worker's, the launcher's one included
    subscriptions: int  # enabled subscriptions (pg_subscription is cluster-wide): an apply worker each, for good
    max_origins: int | None = None  # the limit ``origins_setting`` names; None: not read
    origins: int = 0  # replication origins that exist: every subscription's (enabled or not), others'
    origins_limit: str = "max_active_replication_origins"  # the setting ``max_origins`` is

    @property
    def free(self) -> int:
        """Workers no subscription holds for good (table copies running are not counted: they end),
        and no more than the replication origins left: one each, the same way."""
        workers = min(self.max_workers, self.max_processes - 1) - self.subscriptions
        return workers if self.max_origins is None else min(workers, self.max_origins - self.origins)

    @property
    def copies(self) -> int:
        """Move copies the free workers hold at once: an apply worker each, one table-sync worker for all."""
        return max(0, self.free - 1)

    def figures(self, copies: bool = True) -> str:
        taken = (f"max_logical_replication_workers {self.max_workers} (max_worker_processes {self.max_processes}) "
                 f"with {self.subscriptions} held by enabled subscriptions' apply workers")
        if self.max_origins is not None:
            taken += (f", {self.origins_limit} {self.max_origins} with {self.origins} taken (an origin "
                      "per subscription)")
        return f"{taken}, each copy needing an apply worker and all of them one table-sync worker" if copies \
            else taken


def origins_setting(server_version_num: int) -> str:
    """The setting that bounds a subscriber's replication origins on a server
    of that ``server_version_num``: PostgreSQL 18 gave them a setting of their
    own; before, ``max_replication_slots`` bounded them too (on a subscriber it
    is the origins' limit as well as the slots')."""
    return "max_active_replication_origins" if server_version_num >= 180000 else "max_replication_slots"


def worker_room(conn: Any) -> WorkerRoom:
    """The logical replication workers of the server ``conn`` (an admin connection) is on, and its
    replication origins (``origins_setting``)."""
    version = int(conn.execute("SELECT current_setting('server_version_num')").fetchone()[0])
    setting = origins_setting(version)
    row = conn.execute(
        "SELECT current_setting('max_logical_replication_workers')::int, "
        "current_setting('max_worker_processes')::int, "
        "(SELECT count(*) FROM pg_subscription WHERE subenabled), "
        "current_setting(%s)::int, (SELECT count(*) FROM pg_replication_origin)", (setting,)).fetchone()
    return WorkerRoom(*(int(v) for v in row), origins_limit=setting)


SLOTS_REMEDY = ("end moves' rollback windows (`--finalize`: a switched move keeps a slot where its new store "
                "is), drop unused slots, or raise max_replication_slots and max_wal_senders (its parameter group)")
WORKERS_REMEDY = ("end moves' rollback windows (`--finalize`: a switched move keeps a subscription where its old "
                  "store is), drop or disable unused subscriptions, or raise max_logical_replication_workers and "
                  "max_worker_processes (its parameter group, applied at a reboot)")


def refuse_copies(conn: Any, copies: int, where: str, parallel: int | None = None) -> ReplicationRoom:
    """InvalidInput (exit 3, rule ``replication-slots``) when the server of
    ``conn`` has no room for ``copies`` move copies at once, naming the
    figures; ``where``: what the server is; ``parallel``: the --parallel asked
    for (the message says what would fit)."""
    room = replication_room(conn)
    refuse_room(room, copies, where, parallel)
    return room


def refuse_room(room: ReplicationRoom, copies: int, where: str, parallel: int | None = None) -> None:
    """``refuse_copies`` on a ``room`` read already (``PlanRooms``)."""
    _refuse(room, copies, where, parallel, "replication-slots", SLOTS_REMEDY)


Server = tuple[str, int]  # (endpoint, port)


class PlanRooms:
    """The replication room of each server a plan's moves leave (a dry run of
    `cell evacuate`), read once per server rather than once per move: a cell
    of thousands of pooled tenants on one server took as many admin logins.
    Each move the plan keeps counts as the link its run's would hold where
    its new store is (``take``: the way back a switched move keeps there, a
    slot and a WAL sender, until finalized), as the run's later moves would
    read it, as ``placement.slot_cap``'s ``taken`` counts cell slots. Only
    what was read is kept: a server that took no connection is tried again
    by the next move that leaves it. The target cells' logical replication
    workers likewise, once per cell (``workers``)."""

    def __init__(self) -> None:
        self.read: dict[Server, ReplicationRoom] = {}
        self.links: Counter[Server] = Counter()
        self.workers_read: dict[str, WorkerRoom] = {}

    def workers(self, cell: str, connect: Callable[[], Any]) -> WorkerRoom:
        """The logical replication workers of ``cell``'s server, where moves to it run their copies'
        subscriptions, read the first time through ``connect``: a copy ends before the next move's
        starts, so a plan's earlier moves hold none of them."""
        if cell not in self.workers_read:
            with connect() as conn:
                self.workers_read[cell] = worker_room(conn)
        return self.workers_read[cell]

    def room(self, server: Server, connect: Callable[[], Any]) -> ReplicationRoom:
        """``server``'s room, read through ``connect`` (an admin connection to it) the
        first time, less what the plan's earlier moves hold there."""
        if server not in self.read:
            with connect() as conn:
                self.read[server] = replication_room(conn)
        room, links = self.read[server], self.links[server]
        return replace(room, slots=room.slots + links, senders=room.senders + links)

    def take(self, server: Server) -> None:
        self.links[server] += 1


def refuse_subscriptions(conn: Any, copies: int, where: str, parallel: int | None = None,
                         way_backs: int = 0) -> WorkerRoom:
    """InvalidInput (exit 3, rule ``replication-workers``) when the server of
    ``conn`` (where the copies' subscriptions run: their new stores') has no
    logical replication workers for ``copies`` move copies at once; the
    arguments as ``refuse_copies``'. ``way_backs``: the subscriptions a run's
    switched moves leave there (their old stores' server), one each, held
    while its later copies run: a move's copy there ends before its way back
    starts, so the run needs the more of the two, and a table-sync worker
    beside them while copies run."""
    room = worker_room(conn)
    if way_backs <= copies:
        refuse_workers(room, copies, where, parallel)
        return room
    need = way_backs + (1 if copies else 0)
    if room.free >= need:
        return room
    fits = max(0, room.free - (1 if copies else 0))
    beside = ", and its copies there one table-sync worker beside them" if copies else ""
    raise _no_room(f"{where} has {max(0, room.free)} logical replication worker{'' if room.free == 1 else 's'} "
                   f"free, not the {need} the run's {way_backs} moves need: each switched move keeps the "
                   f"subscription its old store follows the new one by there for its rollback window (an apply "
                   f"worker each, held while the later moves copy){beside}: {room.figures(copies=False)}",
                   "nothing was started: " + (f"give --limit {fits} or less (moves per run), " if fits else ""),
                   "replication-workers", WORKERS_REMEDY)


def refuse_workers(room: WorkerRoom, copies: int, where: str, parallel: int | None = None) -> None:
    """InvalidInput (exit 3, rule ``replication-workers``) when ``room`` holds fewer than ``copies``
    move copies' subscriptions at once."""
    _refuse(room, copies, where, parallel, "replication-workers", WORKERS_REMEDY)


def _refuse(room: ReplicationRoom | WorkerRoom, copies: int, where: str, parallel: int | None, rule: str,
            remedy: str) -> None:
    if copies <= room.copies:
        return
    if room.copies == 0:
        said = "no room for a move's copy"
    else:
        fits = f"room for {room.copies} move cop{'y' if room.copies == 1 else 'ies'} at once"
        said = f"{fits}, not {copies}" + (f" (--parallel {parallel})" if parallel is not None else "")
    way = f"give --parallel {room.copies} or less, " if parallel is not None and room.copies else ""
    raise _no_room(f"{where} has {said}: {room.figures()}", f"nothing was started: {way}", rule, remedy)


def refuse_link(conn: Any, where: str, done: str, held: bool = False) -> ReplicationRoom:
    """InvalidInput (exit 3, rule ``replication-slots``) when the server of
    ``conn`` has no room for a link without an initial copy (a switched move's
    way back: one slot and one WAL sender); ``held``: its slot exists already;
    ``done``: what the refusal leaves, said before the remedies."""
    room = replication_room(conn)
    if min(room.max_slots - room.slots + int(held), room.max_senders - room.senders) >= 1:
        return room
    raise _no_room(f"{where} has no room for the link a switched move's old store follows its new one by (a "
                   f"slot and a WAL sender): {room.figures(copies=False)}", done, "replication-slots", SLOTS_REMEDY)


def refuse_follower(conn: Any, where: str, done: str, held: bool = False) -> WorkerRoom:
    """InvalidInput (exit 3, rule ``replication-workers``) when the server of
    ``conn`` (the old store's) has no logical replication worker free for the
    subscription a switched move's old store follows its new one by (no
    initial copy: its apply worker alone); ``held``: that subscription exists
    (and counts) already; ``done`` as ``refuse_link``'s."""
    room = worker_room(conn)
    if held or room.free >= 1:
        return room
    raise _no_room(f"{where} has no logical replication worker free for the subscription a switched move's old "
                   f"store follows its new one by: {room.figures(copies=False)}", done, "replication-workers",
                   WORKERS_REMEDY)


def _no_room(said: str, done: str, rule: str, remedy: str) -> InvalidInput:
    return InvalidInput(f"{said}; {done}{remedy}", rule=rule)


def cell_admin(ws: Any, cell: str, connect_timeout: int = 5) -> Any:
    """An autocommit admin connection to cell ``cell``'s shared database;
    TargetUnavailable (exit 7) when it is not applied, cannot be reached or
    refuses the admin."""
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
        raise TargetUnavailable(f"cell {cell!r}: its database {where} took no admin connection: "
                                f"{first_line(exc)}") from None


def first_line(exc: Exception) -> str:
    """A database or AWS error's first line (psycopg's run on with hints)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class ConnectionBudget(BaseModel):
    """A cell's cap of pooled tenant login connections (max_pooled_tenants ×
    db_connection_limit, before per-tenant overrides and workspaces) against
    what its live database leaves them."""

    cap: int
    max_connections: int | None = None
    reserved: int | None = None  # superuser_reserved_connections, reserved_connections, RDS's own
    platform: int = PLATFORM_CONNECTIONS_DEFAULT  # kept for the platform's own logins: the cell's setting
    room: int | None = None  # for tenant logins: max_connections - reserved - platform
    overcommits: bool | None = None  # the cap is over the room; None: not read (``unread`` says why)
    unread: str | None = None

    def figures(self) -> str:
        return (f"max_connections {self.max_connections} - {self.reserved} reserved - {self.platform} for the "
                f"platform's own logins = {self.room} for tenant logins")

    def describe(self) -> str:
        if self.unread is not None:
            return f"not read: {self.unread}"
        verdict = "can overcommit it" if self.overcommits else "fits"
        return f"{self.figures()}: the cap ({self.cap}) {verdict}"


def connection_budget(ws: Any, spec: CellSpec) -> ConnectionBudget:
    """Cell ``spec``'s connection cap against its live database, less what
    ``spec`` keeps for the platform; a database not applied or not reachable
    is said (``unread``), not raised."""
    import psycopg
    from botocore.exceptions import BotoCoreError, ClientError

    cell, cap, platform = spec.name, spec.connection_cap, spec.platform_connections

    try:
        with cell_admin(ws, cell) as conn:
            row = conn.execute(
                "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int"
                " + coalesce(current_setting('reserved_connections', true), '0')::int"
                " + coalesce(current_setting('rds.rds_superuser_reserved_connections', true), '0')::int").fetchone()
    except TargetUnavailable as exc:
        return ConnectionBudget(cap=cap, platform=platform, unread=str(exc))
    except (psycopg.Error, BotoCoreError, ClientError) as exc:
        return ConnectionBudget(cap=cap, platform=platform,
                                unread=f"cell {cell!r}: its database could not be read: {first_line(exc)}")
    most, reserved = int(row[0]), int(row[1])
    room = most - reserved - platform
    return ConnectionBudget(cap=cap, max_connections=most, reserved=reserved, platform=platform, room=room,
                            overcommits=cap > room)
