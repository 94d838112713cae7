"""The tenant registry, reader side. tenant_runtime never writes it.

Contract (written by ``tenantctl.registry.RegistryWriter``): one DynamoDB item
per tenant in the table the application names (e.g. ``$TENANT_REGISTRY_TABLE``):

    tenant_id  (S)  hash key
    status     (S)  TenantStatus value, for filters
    tier       (S)  Tier value, for filters
    cell       (S)  the tenant's cell, for filters (absent on items written before cells: the default cell)
    version    (N)  optimistic-concurrency counter
    record     (S)  TenantRecord.model_dump_json()   <- the only attribute read here

The same table holds one counter item per cell, keyed ``cell#<name>`` (never a
tenant id: ids are ``[a-z][a-z0-9-]*``), with no ``record``: the tenants placed
in the cell per tier (``pooled``, ``dedicated``: N) and whether it is
``draining`` (BOOL). Placement reserves a slot there with one conditional
UpdateItem; listings and this reader skip such items. tenantctl also keeps
there the fingerprint its cell stack was last applied from (``applied``: S)
with the pooled logins' connection cap it was applied at (``applied_cap``: N;
absent on items an older tenantctl wrote) and the connections kept for the
platform's own logins it was accepted at (``applied_platform``: N; absent
likewise), and the lease of the run changing that stack (``lease``: S, the holder as
JSON; ``lease_until``: N, epoch seconds).

A locked tenant's item carries its lock's lease the same way (``lease``: S, the
lock's identity, ``lock_identity``; ``lease_until``: N, epoch seconds): the run
holding the lock renews ``lease_until`` alone (``lease_renewal``), conditional on
``lease``, without a new version; the record's ``lock.lapses_at`` reads it.

Lookups are cached: found records for ``ttl`` seconds, unknown ids for
``negative_ttl`` seconds (a flood of bad ids costs one read per id per window),
both within ``max_entries`` (LRU). A registry that cannot be read raises
RegistryUnavailable: the runtime fails closed, it never serves a stale guess
for a tenant it has not seen.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from tenant_runtime import cursor as cursor_codec
from tenant_runtime.blocking import may_block
from tenant_runtime.cache import TTLCache
from tenant_runtime.errors import RegistryUnavailable, TenantInactive, TenantNotFound
from tenant_runtime.models import TenantLock, TenantRecord, TenantStatus, Tier, utcnow

TABLE_ENV = "TENANT_REGISTRY_TABLE"
# How long a record whose writes a move froze is cached (the freeze is short;
# writes are refused until the record says otherwise).
FROZEN_TTL = 0.2
# A failed login is no proof that a record is stale (the database may be down):
# a record read this recently is not read again for one (``RegistryReader.refresh``).
REREAD_INTERVAL = 1.0

# -- the item codec: the one definition of the layout above -------------------
HASH_KEY = "tenant_id"
RECORD = "record"
CELL = "cell"
COUNTER_PREFIX = "cell#"
DRAINING = "draining"
APPLIED = "applied"
APPLIED_CAP = "applied_cap"
APPLIED_PLATFORM = "applied_platform"
LEASE = "lease"
LEASE_UNTIL = "lease_until"
# A cell's last up failed after its first change (when, the error): a repair pending until one succeeds.
UP_FAILED = "up_failed"


def item_key(tenant_id: str) -> dict[str, Any]:
    return {HASH_KEY: {"S": tenant_id}}


def record_to_item(record: TenantRecord) -> dict[str, Any]:
    item = {
        HASH_KEY: {"S": record.tenant_id},
        "status": {"S": record.status.value},
        "tier": {"S": record.tier.value},
        CELL: {"S": record.cell},
        "version": {"N": str(record.version)},
        RECORD: {"S": record.model_dump_json()},
    }
    lock = record.lock
    if lock is not None and lock.lapses_at is not None:
        item[LEASE] = {"S": lock_identity(lock)}
        item[LEASE_UNTIL] = {"N": f"{lock.lapses_at.timestamp():.3f}"}
    return item


def lock_identity(lock: TenantLock) -> str:
    """What tells one run's lock from any other's: its host, pid and when it was taken."""
    return f"{lock.host}/{lock.pid}/{lock.acquired_at.isoformat()}"


def lease_renewal(tenant_id: str, lock: TenantLock, until: float) -> dict[str, Any]:
    """The UpdateItem (but its table) extending ``lock``'s lease to ``until`` (epoch
    seconds) while the record still holds that lock; the record's version is kept."""
    return {"Key": item_key(tenant_id), "UpdateExpression": "SET #u = :until", "ConditionExpression": "#l = :lock",
            "ExpressionAttributeNames": {"#l": LEASE, "#u": LEASE_UNTIL},
            "ExpressionAttributeValues": {":lock": {"S": lock_identity(lock)}, ":until": {"N": f"{until:.3f}"}}}


def is_record_item(item: dict[str, Any]) -> bool:
    """A tenant's record, not a cell counter."""
    return RECORD in item


def item_to_record(item: dict[str, Any]) -> TenantRecord:
    """ValueError or KeyError for an item that is not a record."""
    record = TenantRecord.model_validate_json(item[RECORD]["S"])
    if record.lock is not None and LEASE_UNTIL in item:  # renewed since the record was written
        lapses_at = datetime.fromtimestamp(float(item[LEASE_UNTIL]["N"]), UTC)
        record = record.model_copy(update={"lock": record.lock.model_copy(update={"lapses_at": lapses_at})})
    return record


def counter_key(cell: str) -> dict[str, Any]:
    return item_key(f"{COUNTER_PREFIX}{cell}")


def item_to_counts(item: dict[str, Any] | None) -> tuple[dict[str, int], bool]:
    """A counter item's tenants per tier and its draining flag ({} and False for no item)."""
    item = item or {}
    counts = {tier.value: int(item[tier.value]["N"]) for tier in Tier if tier.value in item}
    return counts, bool(item.get(DRAINING, {}).get("BOOL", False))


def encode_list_cursor(after_tenant_id: str) -> str:
    return cursor_codec.encode("tenants", {"after": after_tenant_id})


def decode_list_cursor(cursor: str) -> str:
    """The tenant id a registry listing continues after; ValueError (saying why) when
    it is not a cursor of the listing."""
    after = cursor_codec.decode(cursor, "tenants").get("after")
    if not isinstance(after, str) or not after:
        raise cursor_codec.CursorError("invalid cursor: pass a cursor returned by tenantctl list")
    return after


# -- a store's unfinished search reindex: the record's marker --------------------
# tenantctl's reindexes (the command, the rebuild apply and an in-place restore
# run) mark their store before they start and clear the mark once they finished
# (``marked_reindex``, with tenantctl's writer as the marker); ``reindex_marks``
# is what a mark changes in the record. A reindex an application runs through
# the runtime has no marker: the registry is tenantctl's to write.
TENANT_STORE = ""  # the tenant's own store in ``search_reindex_stores`` (a workspace's: its name)


def store_of(ctx: Any) -> str:
    """The store a context reaches, as ``search_reindex_stores`` names it."""
    return ctx.workspace or TENANT_STORE


def reindex_marks(record: TenantRecord, begun: Iterable[str] = (), finished: Iterable[str] = ()) -> dict[str, Any]:
    """The record's marker once the reindex of the stores ``begun`` started and
    that of ``finished`` ended: the stores still unfinished, and since when (the
    first start of those, kept until none is left)."""
    stores = (set(record.search_reindex_stores) | set(begun)) - set(finished)
    since = (record.search_reindex_since or utcnow()) if stores else None
    return {"search_reindex_stores": sorted(stores), "search_reindex_since": since}


def marks_change(record: TenantRecord, marks: dict[str, Any]) -> bool:
    return any(getattr(record, name) != value for name, value in marks.items())


class ReindexMarker(Protocol):
    """Where a reindex records that ``store`` of ``tenant_id`` is being
    reindexed (``finished`` False: before anything changes) and that it is
    done (True: only after it succeeded)."""

    def mark(self, tenant_id: str, store: str, finished: bool) -> None: ...


@contextmanager
def marked_reindex(marker: ReindexMarker, ctx: Any) -> Iterator[None]:
    """The reindex of ``ctx``'s store, marked unfinished in the registry while
    it runs; a reindex that stops (an error, a killed process) leaves its mark."""
    marker.mark(ctx.tenant_id, store_of(ctx), False)
    yield
    marker.mark(ctx.tenant_id, store_of(ctx), True)


class RegistryReader:
    def __init__(
        self,
        table_name: str | None = None,
        client: Any | None = None,
        ttl: float = 30.0,
        negative_ttl: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table_name or os.environ.get(TABLE_ENV) or ""
        if not self.table:
            raise ValueError(f"registry table name missing: pass table_name or set ${TABLE_ENV}")
        if client is None:
            from tenant_runtime.boto_sessions import default_session

            client = default_session().client("dynamodb")
        self.client = client
        self.negative_ttl = negative_ttl
        self._cache: TTLCache[TenantRecord | None] = TTLCache(max_entries, ttl, clock)
        self._refreshing = [threading.Lock() for _ in range(64)]  # by tenant id's hash: one refresh at a time
        self.reads = 0  # DynamoDB GetItem calls, for tests and metrics

    def lookup(self, tenant_id: str) -> TenantRecord | None:
        """The record, or None for an unknown id (both cached)."""
        hit, record = self._cache.get(tenant_id)
        return record if hit else self._load(tenant_id)

    def _load(self, tenant_id: str, consistent: bool = False) -> TenantRecord | None:
        """``lookup`` on a cache miss: the record read and cached (None too, briefly)."""
        record = self._fetch(tenant_id, consistent)
        if record is None:
            ttl: float | None = self.negative_ttl
        elif record.move is not None and record.move.writes_frozen:
            ttl = min(self._cache.ttl, FROZEN_TTL)  # a freeze lasts about a second: see its end soon
        else:
            ttl = None
        self._cache.put(tenant_id, record, ttl)  # with its read time (``refresh``)
        return record

    def refresh(self, tenant_id: str, stale: TenantRecord, patient: bool = False) -> None:
        """Read the tenant's record again, past the cache, because a request found
        ``stale`` (the record it was resolved with) refused by the store it names;
        at most once per stale record: not when the cache holds another record
        since (concurrent requests wait for the first one's read and share it).
        ``patient``: the evidence is weak (a refused login), so not either when
        ``stale`` was read less than ``REREAD_INTERVAL`` seconds ago. A strongly
        consistent read: the change the store's refusal suggests (a move's
        freeze or switch) may have been written a second ago, and an eventually
        consistent read could still answer the record before it."""
        with self._refreshing[hash(tenant_id) % len(self._refreshing)]:
            hit, cached = self._cache.get(tenant_id)
            if hit and cached is not stale:
                return
            if hit and patient and self._read_just_now(tenant_id, stale):
                return
            self._load(tenant_id, consistent=True)

    def _read_just_now(self, tenant_id: str, record: TenantRecord) -> bool:
        """The cache holds ``record`` as read less than ``REREAD_INTERVAL`` seconds ago."""
        entry = self._cache.stored(tenant_id)
        return entry is not None and entry[0] is record and self._cache.clock() - entry[1] < REREAD_INTERVAL

    def get(self, tenant_id: str) -> TenantRecord:
        """The record of a tenant that may serve requests (status active)."""
        hit, record = self._cache.get(tenant_id)  # = lookup, one frame less on every request's hit
        if not hit:
            record = self._load(tenant_id)
        if record is None:
            raise TenantNotFound(f"tenant {tenant_id!r} is not in the registry")
        if record.status is not TenantStatus.active:
            raise TenantInactive(tenant_id, record.status.value)
        if record.resources is None:
            raise TenantInactive(tenant_id, "active without resources (registry record incomplete)")
        return record

    def invalidate(self, tenant_id: str | None = None) -> None:
        if tenant_id is None:
            self._cache.clear()
        else:
            self._cache.pop(tenant_id)

    def _fetch(self, tenant_id: str, consistent: bool = False) -> TenantRecord | None:
        from botocore.exceptions import BotoCoreError, ClientError

        may_block()
        self.reads += 1
        try:
            item = self.client.get_item(TableName=self.table, Key=item_key(tenant_id),
                                        **({"ConsistentRead": True} if consistent else {})).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise RegistryUnavailable(f"registry table {self.table!r} unreadable: {exc}") from None
        if item is None or not is_record_item(item):  # a cell counter is no tenant
            return None
        try:
            return item_to_record(item)
        except (KeyError, ValueError) as exc:
            # A malformed item is an operator problem; refusing is safer than guessing.
            raise RegistryUnavailable(f"registry item for {tenant_id!r} is malformed: {exc}") from None
