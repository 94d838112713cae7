"""Round trips a psycopg connection makes, read from libpq's own protocol trace
(``PQtrace``): what the server was sent, not what the client meant to send."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg import pq


@contextmanager
def round_trips(conn) -> Iterator[list[str]]:
    """The round trips ``conn`` makes inside the block, filled in at its end:
    one entry per message after which the client waits for the server's
    ReadyForQuery (a simple-protocol Query: its text; an extended-protocol
    Sync: the text of the statement it ends, or ``<prepared>``)."""
    trips: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as out:
        conn.pgconn.trace(out.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            yield trips
        finally:
            conn.pgconn.untrace()
            out.seek(0)
            trips.extend(_trips(out.read()))


def _trips(trace: str) -> list[str]:
    trips, statement = [], "<prepared>"
    for line in trace.splitlines():
        direction, _, message, *rest = line.split("\t") + [""]
        if direction != "F":
            continue
        if message == "Query":
            trips.append(rest[0].strip().strip('"'))
        elif message == "Parse":
            statement = rest[0].strip().split('" "', 1)[-1].rsplit('"', 1)[0]
        elif message == "Sync":
            trips.append(statement)
            statement = "<prepared>"
    return trips
