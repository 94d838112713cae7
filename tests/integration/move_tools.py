"""Shared by the move tests: a writer appending through a TenantRuntime while
a move runs, keeping what the store acknowledged and what it refused."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg

from tenant_runtime import TenantRuntime, WritesFrozen
from tenant_runtime.errors import StoreMoved, StoreUnavailable
from tenantctl.cell_database import replication_room


@dataclass
class Writer:
    """Appends one message after another through a TenantRuntime, retrying the
    retryable refusals; keeps what was acknowledged and what was refused."""

    runtime: TenantRuntime
    tenant_id: str
    conversation: str = "live"
    workspace: str | None = None  # a workspace's context: its own schema and role in the tenant's store
    acked: list[tuple[int, str]] = field(default_factory=list)  # (seq, content) the store acknowledged
    frozen: list[float] = field(default_factory=list)  # times a write was refused (503)
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    running: bool = True  # False once ``run`` returned, stopped or not
    progress: threading.Condition = field(default_factory=threading.Condition)  # notified on each ack, and at the end

    def run(self) -> None:
        try:
            self._write()
        finally:
            with self.progress:
                self.running = False
                self.progress.notify_all()

    def _write(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            content = f"w{n}"
            try:
                ctx = self.runtime.context(self.tenant_id, self.workspace)
                msg = self.runtime.store.append(ctx, self.conversation, "user", content)
            except (WritesFrozen, StoreMoved):
                self.frozen.append(time.monotonic())
                time.sleep(0.02)
                continue
            except StoreUnavailable as exc:  # a connection cut by a revoke mid-transaction: retried
                self.errors.append(exc)
                time.sleep(0.02)
                continue
            with self.progress:
                self.acked.append((msg.seq, content))
                self.progress.notify_all()
            time.sleep(0.005)

    def wait_for_acks(self, more: int, timeout: float = 120.0) -> None:
        """Until the store acknowledged ``more`` writes beyond those it had: the
        progress the test goes on to assert, however slow the machine (a sleep
        gave the writer a time, not progress); AssertionError after ``timeout``."""
        with self.progress:
            want = len(self.acked) + more
            self.progress.wait_for(lambda: len(self.acked) >= want or not self.running, timeout)
            if len(self.acked) < want:
                raise AssertionError(
                    f"the writer got {len(self.acked) - want + more} of {more} more writes acknowledged "
                    f"{'before it ended' if not self.running else f'in {timeout:.0f} s'} "
                    f"(refused {len(self.frozen)} times, last errors {self.errors[-3:]})")


@contextmanager
def writing(runtime: TenantRuntime, tenant_id: str, conversation: str = "live",
            workspace: str | None = None) -> Iterator[Writer]:
    """A Writer appending on a thread of its own for the block, stopped and joined when the block
    ends, also when it raises: a failed move leaves no writer running into the next tests."""
    writer = Writer(runtime, tenant_id, conversation, workspace)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    try:
        yield writer
    finally:
        writer.stop.set()
        thread.join(10)


@contextmanager
def free_slots(sandbox, left: int, prefix: str = "e2_fill") -> Iterator[None]:
    """The sandbox server's replication slots taken until ``left`` are free (WAL
    senders as they are), by physical slots ``<prefix>_<i>``, dropped after."""
    with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as conn:
        room = replication_room(conn)
        fill = [f"{prefix}_{i}" for i in range(room.max_slots - room.slots - left)]
        for slot in fill:
            conn.execute("SELECT pg_create_physical_replication_slot(%s)", (slot,))
        try:
            yield
        finally:
            for slot in fill:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
