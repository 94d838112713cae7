"""One run at a time changes a cell's stack: a lease in the cell's counter
item, taken before the up and renewed while it lasts, so CI shards applying
the same committed cells, or an operator's `cell add` beside CI, never run one
cell's stack at once (the LocalEngine's state file and a Pulumi backend's
stack lock would otherwise be raced for).

A run killed mid-up stops renewing: its lease lapses ``LEASE_SECONDS`` later
and the next run takes it, with no unlock to run by hand. One killed on this
host is proved dead as a tenant lock's holder is (``registry.died``: its pid
gone, or reused by a newer process) and its lease taken over at once, saying
so, as a dead run's tenant lock is cleared. Taking the lease
returns what the stack was last applied from, so a run that waited for
another finds the cell applied and leaves it alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tenantctl.lock_lease import LEASE_SECONDS, RENEW_SECONDS
from tenantctl.models import TenantLock
from tenantctl.registry import RegistryWriter, died, new_lock
from tenantctl.registry_cells import AppliedBudget, CellBusy

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0


@dataclass
class CellLease:
    cell: str
    lock: TenantLock
    applied: str | None  # the fingerprint the stack was last applied from, when the lease was taken
    done: str | None = None  # the holder's successful up: recorded as ``applied`` on release
    budget: AppliedBudget | None = None  # the connection budget that up applied: recorded with it
    failed: str | None = None  # the holder's up failed after its first change: recorded, a repair pending
    forgotten: bool = False  # the holder deleted the counter item (the cell is gone): nothing to release


@contextmanager
def held(registry: RegistryWriter, cell: str, operation: str, wait: float = 0.0,
         on_wait: Callable[[CellBusy], None] | None = None) -> Iterator[CellLease]:
    """Hold the cell's lease for the block. Another run holding it: CellBusy
    (exit 5), or with ``wait`` > 0 poll until it is released or lapses (at
    most ``wait`` seconds; ``math.inf``: as long as its holder lives),
    calling ``on_wait`` once."""
    lock = new_lock(operation)
    deadline, told = time.monotonic() + wait, False
    dead: TenantLock | None = None  # a holder proved dead: its lease is taken over
    note = None
    while True:
        try:
            applied = registry.claim_cell(cell, lock, LEASE_SECONDS, dead)
            break
        except CellBusy as busy:
            said = died(busy.holder, "lease") if busy.holder is not None and busy.holder != dead else None
            if said is not None:
                dead, note = busy.holder, said
                continue
            if time.monotonic() + POLL_SECONDS > deadline:
                raise
            if on_wait is not None and not told:
                on_wait(busy)
                told = True
            time.sleep(POLL_SECONDS)
    if note is not None:
        log.warning("cell %s: %s: lease taken over", cell, note)
    lease = CellLease(cell, lock, applied)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(RENEW_SECONDS):
            try:
                if not registry.renew_cell(cell, lock, LEASE_SECONDS):
                    log.warning("cell %s: its lease lapsed while this run held it", cell)
                    return
            except Exception as exc:  # a registry hiccup: the next renewal may get through
                log.warning("cell %s: renewing its lease failed: %s", cell, exc)

    renewer = threading.Thread(target=renew, name=f"lease-{cell}", daemon=True)
    renewer.start()
    try:
        yield lease
    finally:
        stop.set()
        renewer.join()
        try:
            if not lease.forgotten:
                registry.release_cell(cell, lock, lease.done, lease.budget, lease.failed)
        except Exception as exc:  # never hides the block's own error; the lease lapses by itself
            log.warning("cell %s: giving its lease back failed (it lapses in %.0f s): %s", cell, LEASE_SECONDS, exc)

