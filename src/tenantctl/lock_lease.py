"""A tenant's lock is a lease: renewed while the run holding it lives.

Every registry write of a record locked by this process stamps the lock's
``lapses_at`` ``LEASE_SECONDS`` ahead, and one thread per process extends the
lease of every lock the process holds each ``RENEW_SECONDS`` (an UpdateItem of
the item's ``lease_until``, conditional on the lock, keeping the record's
version). A run killed on another host (a lost CI runner, an OOM kill) stops
renewing: ``LEASE_SECONDS`` later its lock is provably stale from anywhere
(``registry.lock_holder``: ``lapsed``), and the next run takes it over as it
takes over a lock whose pid is gone on this host, with no `unlock --force`.
A cell's stack lease (``cell_lease``) lasts and is renewed as long.

The hosts' clocks must agree to well within ``LEASE_SECONDS``: a lease is judged
by the reader's clock against the holder's.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from tenantctl.models import TenantLock, TenantRecord, utcnow

log = logging.getLogger(__name__)

LEASE_SECONDS = 120.0
RENEW_SECONDS = 30.0  # several renewals fit in a lease: one slow registry call does not lose it


def held_here(lock: TenantLock) -> bool:
    """The lock is this process's."""
    return (lock.host, lock.pid) == (socket.gethostname(), os.getpid())


def stamped(lock: TenantLock) -> TenantLock:
    """``lock`` with its lease running ``LEASE_SECONDS`` from now (to the millisecond the item keeps)."""
    until = utcnow() + timedelta(seconds=LEASE_SECONDS)
    return lock.model_copy(update={"lapses_at": until.replace(microsecond=until.microsecond // 1000 * 1000)})


Renew = Callable[[str, TenantLock, float], bool]  # (tenant, lock, seconds) -> False once the record lost it


class Keeper:
    """The process's renewals: the locks it holds by tenant, each with the call renewing it."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[TenantLock, Renew]] = {}
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def written(self, record: TenantRecord, renew: Renew) -> None:
        """``record`` as the registry now holds it: its lock kept renewed while this process holds it."""
        lock = record.lock
        with self._guard:
            if lock is None or not held_here(lock):
                self._held.pop(record.tenant_id, None)
                return
            self._held[record.tenant_id] = (lock, renew)
            if self._thread is None or self._pid != os.getpid():  # first lock, or a forked child's
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="lock-leases", daemon=True)
                self._thread.start()

    def forget(self, tenant_id: str) -> None:
        with self._guard:
            self._held.pop(tenant_id, None)

    def holding(self) -> dict[str, TenantLock]:
        with self._guard:
            return {t: lock for t, (lock, _) in self._held.items()}

    def _run(self) -> None:
        while True:
            time.sleep(RENEW_SECONDS)
            self.renew_all()

    def renew_all(self) -> None:
        with self._guard:
            held = list(self._held.items())
        for tenant_id, (lock, renew) in held:
            try:
                kept = renew(tenant_id, lock, LEASE_SECONDS)
            except Exception as exc:  # a registry hiccup: the next renewal may get through
                log.warning("tenant %r: renewing its lock failed (it lapses %.0f s after the last renewal): %s",
                            tenant_id, LEASE_SECONDS, exc)
                continue
            if not kept:
                with self._guard:  # not lost when this run let it go meanwhile
                    now = self._held.get(tenant_id)
                    lost = now is not None and now[0] == lock
                    if lost:
                        del self._held[tenant_id]
                if lost:
                    log.warning("tenant %r: the registry no longer holds this run's lock", tenant_id)


KEEPER = Keeper()
