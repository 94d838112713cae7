"""The tenant registry, writer side (tenantctl is its only writer).

The item layout and its codec belong to ``tenant_runtime.registry`` (the
reader side every application runs); this module only decides what to write
and when.

Every write is conditional on the version read before it (optimistic
concurrency), so two runs racing on one tenant cannot both win; the lock held
in the record turns that into a clear refusal instead of a retry loop.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tenant_runtime.registry import (
    CELL,
    COUNTER_PREFIX,
    RECORD,
    decode_list_cursor,
    encode_list_cursor,
    is_record_item,
    item_key,
    item_to_record,
    lease_renewal,
    record_to_item,
)
from tenantctl.errors import (
    Conflict,
    InvalidInput,
    Locked,
    NotFound,
    RegistryUnreachable,
    TargetUnavailable,
    TenantctlError,
    UsageError,
    one_line,
)
from tenantctl.lock_lease import KEEPER, held_here, stamped
from tenantctl.models import (
    Hibernation,
    TenantLock,
    TenantRecord,
    TenantResources,
    TenantSpec,
    TenantStatus,
    Tier,
    utcnow,
)
from tenantctl.naming import DEFAULT_CELL, broken_rule, require_valid
from tenantctl.registry_cells import CellItems, slot_release
from tenantctl.timestamps import utc_second

log = logging.getLogger(__name__)  # notes for the operator (the CLI prints them on stderr)

DEAD = ("gone", "reused", "lapsed")  # lock_holder() answers that prove the holder is not running


def new_lock(operation: str) -> TenantLock:
    return TenantLock(
        operation=operation,
        owner=os.environ.get("TENANTCTL_OPERATOR") or os.environ.get("USER") or "unknown",
        host=socket.gethostname(),
        pid=os.getpid(),
    )


def _process_started(pid: int) -> datetime | None:
    """When process ``pid`` of this host started; None when there is no such
    process. Without /proc (not Linux) a live pid reads as started at the epoch:
    its reuse cannot be told apart there."""
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # someone else's live process
            pass
        return datetime.fromtimestamp(0, UTC)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 22 (starttime, clock ticks after boot); the name in field 2 may hold spaces and ')'.
    ticks = int(stat.rsplit(")", 1)[1].split()[19])
    boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))
    return datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), UTC)


def lock_holder(lock: TenantLock) -> str:
    """Whether the run holding ``lock`` is alive: ``running`` / ``gone`` (no
    such pid on this host) / ``reused`` (the pid belongs to a process started
    after the lock was taken, so not to its holder) / ``lapsed`` (another
    host's run stopped renewing it: ``lock_lease``) / ``elsewhere`` (another
    host's, renewed, or taken by a tenantctl that does not renew: unknowable from here)."""
    if lock.host != socket.gethostname():
        return "lapsed" if lock.lapses_at is not None and lock.lapses_at < utcnow() else "elsewhere"
    started = _process_started(lock.pid)
    if started is None:
        return "gone"
    # btime is whole seconds and starttime counts ticks: allow a second of slack.
    return "reused" if started > lock.acquired_at + timedelta(seconds=1) else "running"


def died(lock: TenantLock, what: str = "lock") -> str | None:
    """How the run holding ``lock`` (a tenant's lock, a cell's lease: ``what``)
    provably died on this host (its pid gone, or reused by a process started
    after it was taken), in words; None when it may be running."""
    holder = lock_holder(lock)
    if holder not in DEAD:
        return None
    return (f"the {lock.operation} holding its {what} died (owner {lock.owner}, host {lock.host}, pid {lock.pid} "
            f"{_why_dead(lock, holder, 'is gone', 'now belongs to a newer process')}, "
            f"since {utc_second(lock.acquired_at)})")


def _why_dead(lock: TenantLock, holder: str, gone: str, reused: str) -> str:
    if holder == "lapsed":
        return f"stopped renewing it: it lapsed at {utc_second(lock.lapses_at)}"
    return gone if holder == "gone" else reused


def refuse_held_elsewhere(record: TenantRecord) -> None:
    """Refuse (Locked, exit 5, naming the holder) a run that reads the tenant without taking its lock (a
    backup, a drill) while another live run holds it (an in-place restore, a deprovision): what it read
    could be half-changed. This process's own lock lets it through (a final backup, an overwrite's or a
    revive's backup under the run's lock), and so does one whose holder provably died."""
    lock = record.lock
    if lock is None or held_here(lock) or lock_holder(lock) in DEAD:
        return
    raise Locked(describe_lock(record.tenant_id, lock))


def lock_remedy(tenant_id: str, holder: str, lock: TenantLock | None = None) -> str:
    """What frees a tenant's lock, by what this host knows of its holder (``lock_holder``'s answer).
    Only another host's renewed lock needs ``--force``: one provably dead (here, or lapsed) is taken
    over by the next run that locks the tenant, or removed by a plain `unlock`, and a live one here
    is dead once stopped."""
    if holder in DEAD:
        return f"re-run the command (it takes the dead run's lock over), or `tenantctl unlock {tenant_id}` removes it"
    if holder == "running":
        return f"wait for it to end; if you stop it, a re-run or `tenantctl unlock {tenant_id}` clears the lock"
    if lock is None or lock.lapses_at is None:  # taken by a tenantctl that does not renew: it never lapses
        return f"if that run is dead, `tenantctl unlock {tenant_id} --force` removes the lock"
    return (f"if that run is dead, its lock lapses at {utc_second(lock.lapses_at)} unless renewed (a re-run then "
            f"takes it over), or `tenantctl unlock {tenant_id} --force` removes it now")


def lock_state(lock: TenantLock, holder: str) -> str:
    """A few words on whether the run holding ``lock`` lives (``holder``: ``lock_holder``'s answer)."""
    if holder == "lapsed":
        return f"dead: stopped renewing, lapsed at {utc_second(lock.lapses_at)}"
    if holder in DEAD:
        return f"dead: pid {holder}"
    if holder == "running":
        return "alive on this host"
    if lock.lapses_at is None:
        return "another host's, not renewed: unknowable"
    return f"another host's, renewed until {utc_second(lock.lapses_at)}"


def describe_lock(tenant_id: str, lock: TenantLock, holder: str | None = None) -> str:
    """The lock in words, with what frees it; ``holder``: ``lock_holder``'s answer when the caller has it."""
    holder = holder or lock_holder(lock)
    when = f"since {utc_second(lock.acquired_at)}"
    remedy = lock_remedy(tenant_id, holder, lock)
    if holder in DEAD:
        why = _why_dead(lock, holder, "no longer exists", "now belongs to a process started after the lock was taken")
        return (f"tenant {tenant_id!r} is locked by a {lock.operation} that is no longer running "
                f"(owner {lock.owner}, host {lock.host}, pid {lock.pid} {why}, {when}); {remedy}")
    alive = ", alive on this host" if holder == "running" else ""
    return (f"tenant {tenant_id!r} is locked by a running {lock.operation} "
            f"(owner {lock.owner}, host {lock.host}, pid {lock.pid}{alive}, {when}); {remedy}")


def decode_cursor(cursor: str) -> str:
    try:
        return decode_list_cursor(cursor)
    except ValueError as err:
        why = str(err).removeprefix("invalid cursor: ")
        raise UsageError(f"Invalid value for '--cursor': {cursor!r} is not a cursor of this listing ({why}; pass "
                         "the next_cursor of a previous page).") from None


def failure_text(exc: BaseException) -> str:
    """What a failed run leaves in the record's ``last_error``."""
    if isinstance(exc, KeyboardInterrupt):  # Ctrl-C, or SIGTERM (errors.interrupt_on_sigterm)
        return f"interrupted ({exc})" if str(exc) else "interrupted"
    return one_line(exc)


def _way_back(tomb: TenantRecord) -> str:
    """What a provision of a tombstoned id suggests instead: the restore that
    brings it back while its retention window lasts, else a new id."""
    if tomb.status is TenantStatus.deprovisioned and tomb.retain_until is not None and tomb.retain_until > utcnow():
        return (f"`tenantctl drill restore {tomb.tenant_id} --target in-place --yes` brings it back from its "
                f"backups until {tomb.retain_until:%Y-%m-%d}, or pick a new id")
    if tomb.status is TenantStatus.deprovisioned:
        ended = f" on {tomb.retain_until:%Y-%m-%d}" if tomb.retain_until else ""
        return f"its retention window ended{ended}: pick a new id"
    return f"its deprovision has not finished: `tenantctl deprovision {tomb.tenant_id}` again, or pick a new id"


def refusal(existing: TenantRecord | None, spec: TenantSpec, locks: bool = True) -> TenantctlError | None:
    """Why a provision of ``spec`` would be refused by the registry as it stands
    (None: it would be let through). Previews ask this so that a green preview
    means a green apply; ``locks=False``: a lock (a run in progress) is not a refusal.
    A lock whose holder provably died is not one either: the run clears it."""
    if existing is None:
        return _retiring_without_move(spec, None)
    if locks and (locked := live_lock(existing)) is not None:
        return locked
    if existing.status in (TenantStatus.deprovisioning, TenantStatus.deprovisioned):
        return Conflict(f"tenant id {spec.id!r} was deprovisioned on "
                        f"{existing.deprovisioned_at or existing.updated_at:%Y-%m-%d}; ids are tombstoned and never "
                        f"reused ({_way_back(existing)})")
    if existing.move is not None:
        return Conflict(f"tenant {spec.id!r} is being moved ({existing.move.phase.value}): finish the move first "
                        f"(`tenantctl move {spec.id}`, `--finalize` or `--rollback`)")
    if (refused := _retiring_without_move(spec, existing)) is not None:
        return refused
    if existing.tier is not spec.tier:
        return InvalidInput(
            f"tenant {spec.id!r} is {existing.tier.value}; a provision does not change tiers: "
            f"`tenantctl move {spec.id} --tier {spec.tier.value}` moves it with its data"
        )
    return None


def live_lock(record: TenantRecord) -> Locked | None:
    """The refusal (exit 5) a run locking ``record`` meets: a lock whose holder may
    still be running. One whose holder provably died is none (the run clears it,
    ``clear_dead_lock``), so a preview lets it through as the run would."""
    if record.lock is None or lock_holder(record.lock) in DEAD:
        return None
    return Locked(describe_lock(record.tenant_id, record.lock))


def _retiring_without_move(spec: TenantSpec, existing: TenantRecord | None) -> InvalidInput | None:
    """``retiring`` is written by `move` for its open move only (a file copied from a moving tenant
    carries it): applied without one, it would declare a second store beside one that never existed."""
    if spec.retiring is None:
        return None
    return InvalidInput(
        f"tenant {spec.id!r}: its stack file declares a `retiring:` store, which `tenantctl move` writes "
        f"while a move is open, and the tenant has no open move: remove the `retiring:` block "
        f"(and set `store_generation:` to the store it has{'' if existing else ', 0 for a new tenant'})",
        rule="move-owned")


def refuse_open_move(record: TenantRecord) -> None:
    """Refuse (Conflict, exit 5) a run that needs the tenant in one store while
    a move is open: two stores then, replication between them, a slot of each tier."""
    if record.move is not None:
        raise Conflict(f"tenant {record.tenant_id!r} is being moved ({record.move.phase.value}): roll the move back "
                       f"(`tenantctl move {record.tenant_id} --rollback`) or finalize it first")


PROVISION = "provision"  # the operation a provision holds its tenant for (``provision_failed``)


def provision_failed(record: TenantRecord) -> bool:
    """Its last provision failed (a repair's up among them, or the posture check after it): `apply`
    runs it again, `refresh` reports its repair pending. A record written before
    ``provision_failed`` existed cannot tell a failure from a note: any ``last_error`` counts
    (re-applied once, it records the flag)."""
    if "provision_failed" not in record.model_fields_set:
        return record.last_error is not None
    return record.provision_failed


def _unfinished(lock: TenantLock) -> dict[str, Any]:
    """What clearing the lock of a run that never finished records: a provision's counts as failed."""
    return {"provision_failed": True} if lock.operation == PROVISION else {}


CONDITION_FAILED = "ConditionalCheckFailedException"


def condition_failed(exc: ClientError) -> bool:
    return exc.response["Error"]["Code"] == CONDITION_FAILED


class Held:
    """The record a ``RegistryWriter.hold`` block works on: assign each write's
    result back to ``record`` so the block ends on the latest version."""

    def __init__(self, record: TenantRecord) -> None:
        self.record = record


class RegistryWriter(CellItems):
    """Reads and conditionally writes TenantRecords in the DynamoDB registry table
    (and, through ``CellItems``, the cells' counter items)."""

    def __init__(self, table_name: str, client: Any | None = None) -> None:
        from tenantctl import aws

        self.table = table_name
        self.client = client or aws.client("dynamodb")  # bounded backoff with jitter (tenantctl.aws)

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """One DynamoDB call on the table. A failed condition is raised as is
        (the caller's to judge); anything else (missing table, endpoint down,
        retries exhausted) is RegistryUnreachable."""
        try:
            return getattr(self.client, operation)(TableName=self.table, **kwargs)
        except ClientError as exc:
            if condition_failed(exc):
                raise
            raise RegistryUnreachable(f"registry table {self.table!r} unusable ({operation}): {exc}") from None
        except BotoCoreError as exc:
            raise RegistryUnreachable(f"registry table {self.table!r} unreachable ({operation}): {exc}") from None

    # -- reads -----------------------------------------------------------
    def get(self, tenant_id: str) -> TenantRecord | None:
        require_valid(tenant_id)  # an empty or malformed id is refused here, not by DynamoDB
        item = self._call("get_item", Key=item_key(tenant_id), ConsistentRead=True).get("Item")
        return item_to_record(item) if item and is_record_item(item) else None

    def require(self, tenant_id: str) -> TenantRecord:
        record = self.get(tenant_id)
        if record is None:
            raise NotFound(f"tenant {tenant_id!r} is not in the registry")
        return record

    def _scan_args(self, tier: Tier | None = None, status: TenantStatus | None = None,
                   cell: str | None = None) -> dict[str, Any]:
        """Scan arguments returning records only (never cell counters), filtered."""
        filters = ["attribute_exists(#rec)"]
        values: dict[str, Any] = {}
        names = {"#rec": RECORD}
        if tier is not None:
            filters.append("tier = :tier")
            values[":tier"] = {"S": tier.value}
        if status is not None:
            filters.append("#st = :status")
            values[":status"] = {"S": status.value}
            names["#st"] = "status"
        if cell is not None:
            # Items written before cells carry no cell attribute: they are the default cell's.
            default = " OR attribute_not_exists(#cell)" if cell == DEFAULT_CELL else ""
            filters.append(f"(#cell = :cell{default})")
            values[":cell"] = {"S": cell}
            names["#cell"] = CELL
        kwargs: dict[str, Any] = {"FilterExpression": " AND ".join(filters), "ExpressionAttributeNames": names}
        if values:
            kwargs["ExpressionAttributeValues"] = values
        return kwargs

    def _scan(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return self._call("scan", **kwargs)

    def list(
        self,
        limit: int | None = 50,
        cursor: str | None = None,
        tier: Tier | None = None,
        status: TenantStatus | None = None,
        where: Callable[[TenantRecord], bool] | None = None,
    ) -> tuple[list[TenantRecord], str | None]:
        """One page of records and the cursor of the next page (None at the end).
        ``where``: only the records it keeps (what the table cannot filter: the
        record's own fields), ``limit`` of them to a page; None: every record
        from ``cursor`` on (`list --all`), one pass of 1 MB pages: paged instead,
        each page would read a 1 MB page again from where the last one stopped.

        Unfiltered, a page is one Scan of ``limit`` items; filtered, Scan reads
        DynamoDB's 1 MB pages (a ``Limit`` would count items read before the
        filter, so a selective filter would cost a round trip per few matches)."""
        if limit is not None and not 1 <= limit <= 1000:
            raise UsageError(f"Invalid value for '--limit': {limit} is not in the range 1<=x<=1000.")
        kwargs = self._scan_args(tier, status)
        if limit is not None and tier is None and status is None and where is None:
            kwargs["Limit"] = limit + 1  # +1: a cell counter may sit in the page
        if cursor:
            kwargs["ExclusiveStartKey"] = item_key(decode_cursor(cursor))
        keep = where or (lambda record: True)
        page: list[TenantRecord] = []
        while True:
            resp = self._scan(kwargs)
            items = resp.get("Items", [])
            for n, item in enumerate(items):
                record = item_to_record(item)
                if not keep(record):
                    continue
                page.append(record)
                if len(page) == limit:
                    # Resume right after the last returned item, not after the
                    # scanned page, so nothing between them is skipped.
                    more = "LastEvaluatedKey" in resp or any(keep(item_to_record(i)) for i in items[n + 1:])
                    return page, encode_list_cursor(page[-1].tenant_id) if more else None
            if "LastEvaluatedKey" not in resp:
                return page, None
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def iter_all(self, tier: Tier | None = None, status: TenantStatus | None = None,
                 cell: str | None = None) -> Iterator[TenantRecord]:
        """Every record (filtered), read in DynamoDB's 1 MB scan pages."""
        for item in self._scan_items(self._scan_args(tier, status, cell)):
            yield item_to_record(item)

    def _scan_items(self, kwargs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item the scan ``kwargs`` returns, page after page."""
        while True:
            resp = self._scan(kwargs)
            yield from resp.get("Items", [])
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def fleet(self) -> tuple[list[TenantRecord], list[str]]:
        """Every record and the name of every cell with a counter, from one scan
        in DynamoDB's 1 MB pages (a counter item with no cell file beside it is a
        cell `stacks/` no longer defines)."""
        kwargs: dict[str, Any] = {"FilterExpression": "attribute_exists(#rec) OR begins_with(#key, :cell)",
                                  "ExpressionAttributeNames": {"#rec": RECORD, "#key": "tenant_id"},
                                  "ExpressionAttributeValues": {":cell": {"S": COUNTER_PREFIX}}}
        records: list[TenantRecord] = []
        cells: list[str] = []
        for item in self._scan_items(kwargs):
            if is_record_item(item):
                records.append(item_to_record(item))
            else:
                cells.append(item["tenant_id"]["S"].removeprefix(COUNTER_PREFIX))
        return records, cells

    # -- writes ----------------------------------------------------------
    def _put(self, record: TenantRecord, expected_version: int | None) -> TenantRecord:
        new, put = self._put_request(record, expected_version)
        try:
            self._call("put_item", **put)
        except ClientError:
            raise Conflict(
                f"tenant {record.tenant_id!r} changed in the registry while this run held it; re-run"
            ) from None
        return self.written(new)

    def written(self, record: TenantRecord) -> TenantRecord:
        """``record`` as just written: a lock of this process's in it kept renewed (``lock_lease``)."""
        KEEPER.written(record, self.renew_lock)
        return record

    def renew_lock(self, tenant_id: str, lock: TenantLock, seconds: float) -> bool:
        """Extend ``lock``'s lease by ``seconds`` from now; False when the record no longer holds it."""
        try:
            self._call("update_item", **lease_renewal(tenant_id, lock, time.time() + seconds))
        except ClientError:
            return False
        return True

    def _put_request(self, record: TenantRecord, expected_version: int | None) -> tuple[TenantRecord, dict[str, Any]]:
        """``record`` as its next write stores it, and that PutItem's arguments (but the table)."""
        require_valid(record.tenant_id)  # nothing is ever written under an id the engine would refuse
        # A hibernation lasts no longer than the store it describes: whatever write leaves the record
        # without it (moved to pooled or another region, rolled back, tombstoned) drops the flag; so
        # does a store's recorded search analyzer (tombstoned, a workspace removed). A revive's mark
        # lasts no longer than the tombstone (brought back: its slot is its own).
        new = record.model_copy(update={"version": (expected_version or 0) + 1, "updated_at": utcnow(),
                                        "hibernation": record.store_hibernation,
                                        "search_analyzers": record.live_search_analyzers,
                                        "reviving": record.holds_revive_slot})
        # A write keeping a lock renews its lease: the holder's own, or a write made for its run
        # (one that keeps a renewing lock would otherwise put back the lease it read, maybe older).
        if new.lock is not None and (held_here(new.lock) or new.lock.lapses_at is not None):
            new = new.model_copy(update={"lock": stamped(new.lock)})
        if new.lock is None or not held_here(new.lock):
            # Renewals end before the write letting the lock go: one landing just after it would find the
            # lock gone and say this run lost it. (Should the write fail, the lock lapses unrenewed.)
            KEEPER.forget(new.tenant_id)
        item = record_to_item(new)
        if expected_version is None:
            cond: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(tenant_id)"}
        else:
            cond = {
                "ConditionExpression": "version = :v",
                "ExpressionAttributeValues": {":v": {"N": str(expected_version)}},
            }
        return new, {"Item": item, **cond}

    @contextmanager
    def hold(self, tenant_id: str, operation: str, *, status: TenantStatus | None = None,
             spec: TenantSpec | None = None, account_id: str | None = None,
             read: tuple[TenantRecord | None] | None = None,
             acquired: TenantRecord | None = None) -> Iterator[Held]:
        """Lock the tenant for one run of ``operation`` (with ``spec``: reserve it
        for a provision in ``spec.cell``, see ``acquire``; ``acquired``: the
        record ``acquire_new`` reserved, locked already). A block that raises, Ctrl-C included,
        releases the lock with the failure in ``last_error`` (a provision's also
        sets ``provision_failed``, unless its error changed nothing); one that returns
        without a final write (``mark_active``, ``mark_deprovisioned``) releases it."""
        if acquired is not None:
            record = acquired
        else:
            record = (self.acquire(spec, operation, account_id, read) if spec is not None
                      else self.lock_for(tenant_id, operation, status))
        held = Held(record)
        try:
            yield held
        except BaseException as exc:
            # A refusal before the first change (the gate's, the operator's) leaves the flag as it was.
            failed = operation == PROVISION and not getattr(exc, "changed_nothing", False)
            try:
                self.release(held.record, error=failure_text(exc), provision_failed=failed)
            except TenantctlError:  # registry unreachable: the lock stays, `status` shows it
                pass
            raise
        if held.record.lock is not None:
            held.record = self.release(held.record)

    def acquire(self, spec: TenantSpec, operation: str, account_id: str | None = None,
                read: tuple[TenantRecord | None] | None = None) -> TenantRecord:
        """Reserve the tenant for a provision: create its record (status
        provisioning) or lock the existing one. Refuses locked tenants and
        tombstones (a deprovisioned id is never reused). A registry that cannot
        be written is reported before anything was created."""
        try:
            return self._acquire(spec, operation, account_id, read)
        except TargetUnavailable as exc:
            raise TargetUnavailable(f"cannot reserve tenant {spec.id!r} in the registry, nothing was created: "
                                    f"{exc}") from None

    def acquire_new(self, spec: TenantSpec, operation: str, account_id: str | None, cap: int | None,
                    applied_at_least: int | None = None) -> TenantRecord | None:
        """Reserve a new tenant (its record created, status provisioning, as
        ``acquire``) and take its ``spec.tier`` slot of ``spec.cell`` (as
        ``reserve_slot``) in one transaction, so a run killed before it leaves
        neither and one killed after it a record holding its slot. None: the
        cell refused the slot, nothing written; Conflict when the record exists;
        RegistryUnreachable as every write (the caller says nothing was created)."""
        return self.put_taking_slot(self._new_record(spec, operation, account_id), None, spec.cell or DEFAULT_CELL,
                                    spec.tier, cap, applied_at_least,
                                    conflict=f"tenant {spec.id!r} is being provisioned by another run")

    def _acquire(self, spec: TenantSpec, operation: str, account_id: str | None,
                 read: tuple[TenantRecord | None] | None) -> TenantRecord:
        # A record the caller just read saves a read: every write below is
        # conditional on it (absent, or at its version), so a stale one is refused.
        existing = read[0] if read is not None else self.get(spec.id)
        if existing is None:
            try:
                return self._put(self._new_record(spec, operation, account_id), None)
            except Conflict:
                raise Conflict(f"tenant {spec.id!r} is being provisioned by another run") from None
        if existing.lock is not None:
            existing = self.clear_dead_lock(existing)
        refused = refusal(existing, spec)
        if refused is not None:
            raise refused
        updated = existing.model_copy(update={"lock": new_lock(operation), "last_error": None})  # owner: once applied
        return self._put(updated, existing.version)

    @staticmethod
    def _new_record(spec: TenantSpec, operation: str, account_id: str | None) -> TenantRecord:
        """A new tenant's first record: provisioning, locked for ``operation``."""
        return TenantRecord(tenant_id=spec.id, tier=spec.tier, status=TenantStatus.provisioning, region=spec.region,
                            cell=spec.cell or DEFAULT_CELL, account_id=account_id, owner=spec.owner,
                            lock=new_lock(operation))

    def lock_for(self, tenant_id: str, operation: str, status: TenantStatus | None = None) -> TenantRecord:
        """Lock an existing tenant (deprovision, drills), optionally moving its status."""
        existing = self.require(tenant_id)
        if existing.lock is not None:
            existing = self.clear_dead_lock(existing)
        update: dict[str, Any] = {"lock": new_lock(operation)}
        if status is not None:
            update["status"] = status
        return self._put(existing.model_copy(update=update), existing.version)

    def lock_reviving(self, tomb: TenantRecord, operation: str, cap: int | None) -> TenantRecord | None:
        """Lock tombstone ``tomb`` (as read) for its revive and take its tier's
        slot of its cell (fewer than ``cap``, not draining), marked ``reviving``,
        in one transaction: a run killed on either side of it leaves both or
        neither, and the recount counts the slot with the mark. A tombstone
        marked already (a killed revive's) holds its slot: only locked, a lock
        whose holder died taken over as provision and move take theirs over
        (``clear_dead_lock``; a live holder's refuses, exit 5). None: the cell
        refused the slot, nothing written."""
        if tomb.lock is not None:
            tomb = self.clear_dead_lock(tomb)
        locked = tomb.model_copy(update={"lock": new_lock(operation), "reviving": True})
        if tomb.reviving:
            return self._put(locked, tomb.version)
        return self.put_taking_slot(locked, tomb.version, tomb.cell, tomb.tier, cap,
                                    conflict=f"tenant {tomb.tenant_id!r} changed in the registry since it was "
                                             "read; re-run")

    def give_back_revive_slot(self, tenant_id: str, last: TenantRecord | None = None) -> TenantRecord | None:
        """A revive that leaves the tenant a tombstone (failed, not verified,
        refused) gives its slot back with its mark, in one transaction; a
        tenant it brought back (or never marked) gives nothing back. ``last``:
        the record as the revive last wrote it (no read; the write is
        conditional on its version), else it is read. Returns the record as left."""
        current = last if last is not None else self.get(tenant_id)
        if current is None or not current.holds_revive_slot:
            return current
        return self._abandoning_revive(current, current)

    def _abandoning_revive(self, record: TenantRecord, changed: TenantRecord) -> TenantRecord:
        """Write ``changed`` (``record`` as read, changed) conditional on ``record``'s version; a
        tombstone a revive marked has its mark dropped and its slot given back in the same
        transaction (``put_giving_slot``): the revive is given up, the recount no longer counts it."""
        if not record.holds_revive_slot:
            return self._put(changed, record.version)
        return self.put_giving_slot(changed.model_copy(update={"reviving": False}), record.version, record.cell,
                                    record.tier, conflict=f"tenant {record.tenant_id!r} changed in the registry "
                                                          "while its revive's slot was given back; re-run")

    def clear_dead_lock(self, record: TenantRecord, *, abandon: bool = False) -> TenantRecord:
        """A lock whose holder provably died on this host (its pid gone, or
        reused by a process started after the lock was taken: a killed run,
        a closed terminal) is reported and cleared, and the record returned
        without it; any other lock refuses the run (Conflict, exit 5).
        ``abandon`` (`tenantctl unlock`): a killed revive's tombstone also gives
        its slot back with its mark, in the same transaction."""
        lock = record.lock
        note = died(lock)
        if note is None:
            raise Locked(describe_lock(record.tenant_id, lock))
        note += ": lock cleared"
        log.warning("tenant %r: %s", record.tenant_id, note)
        cleared = record.model_copy(update={"lock": None, "last_error": f"{lock.operation} interrupted: {note}",
                                            **_unfinished(lock)})
        return self._abandoning_revive(record, cleared) if abandon else self._put(cleared, record.version)

    def mark_active(self, record: TenantRecord, resources: TenantResources, spec: TenantSpec,
                    program_version: str, applied_hash: str) -> TenantRecord:
        """The tenant is applied as ``spec``: active (suspended when the spec
        says so), unlocked, and no longer a tombstone (a revived tenant comes
        back through here too)."""
        return self._put(
            record.model_copy(update={
                "status": TenantStatus.suspended if spec.suspended else TenantStatus.active,
                "resources": resources, "lock": None,
                "spec_hash": applied_hash, "spec_digest": spec.content_hash(), "program_version": program_version,
                "region": spec.region, "owner": spec.owner, "last_error": None, "provision_failed": False,
                "deprovisioned_at": None, "retain_until": None,
            }),
            record.version,
        )

    def mark_deprovisioned(self, record: TenantRecord, retention_days: int) -> TenantRecord:
        """Tombstone ``record`` (its lock released, the error of an earlier run that failed or was
        interrupted cleared: this run succeeded, as ``mark_active`` does) and give its cell's slot
        back, in one transaction: a run killed between the two would leave the cell counting a
        tenant it no longer has. A counter at 0 already (or none) gives nothing back."""
        now = utcnow()
        return self.put_giving_slot(
            record.model_copy(update={
                "status": TenantStatus.deprovisioned, "lock": None, "last_error": None, "deprovisioned_at": now,
                "retain_until": now + timedelta(days=retention_days),
            }),
            record.version, record.cell, record.tier,
            conflict=f"tenant {record.tenant_id!r} changed in the registry while this run held it; re-run",
        )

    def mark_hibernation(self, record: TenantRecord, hibernation: Hibernation | None) -> TenantRecord:
        """Record (or, None, clear) the tenant's hibernation and release the lock."""
        return self._put(record.model_copy(update={"hibernation": hibernation, "lock": None}), record.version)

    def save(self, record: TenantRecord, **changes: Any) -> TenantRecord:
        """Write ``changes`` to a record this run holds (a move's steps),
        conditional on its version: atomic with respect to every other writer."""
        return self._put(record.model_copy(update=changes), record.version)

    def release(self, record: TenantRecord, error: str | None = None, provision_failed: bool = False) -> TenantRecord:
        """Drop the lock, keeping ``error`` for `status` (a failure, or a note of
        a run that succeeded); ``provision_failed``: the run was a failed provision."""
        current = self.get(record.tenant_id)
        if current is None:
            return record
        failed = {"provision_failed": True} if provision_failed else {}
        return self._put(current.model_copy(update={"lock": None, "last_error": error, **failed}), current.version)

    def withdraw(self, record: TenantRecord) -> bool:
        """Delete the reservation a provision just made (version 1, never
        provisioned) after a refusal that changed nothing, so no empty
        `provisioning` record is left behind, and give back the slot it holds
        in its cell in the same transaction (``_transact``): a run killed on
        either side of it leaves both or neither. A counter at 0 already (or
        none) gives nothing back, the record is deleted alone. False: the
        record moved on, or the registry refused (kept, with its slot)."""
        if record.version != 1 or record.resources is not None:
            return False
        delete = {"Key": item_key(record.tenant_id), "ConditionExpression": "version = :v",
                  "ExpressionAttributeValues": {":v": {"N": "1"}}}
        try:
            if not self._transact(slot_release(record.cell, record.tier), {"Delete": delete}, "moved on"):
                self._call("delete_item", **delete)
        except (TenantctlError, ClientError):
            return False
        KEEPER.forget(record.tenant_id)
        return True

    def invalid_record(self, tenant_id: str) -> TenantRecord | None:
        """The record of an id that breaks a naming rule, as ``forget_invalid``
        would delete it: the one read that skips the id check. None when there
        is no record; a record naming resources is refused (they would be orphaned)."""
        if broken_rule(tenant_id) is None:
            raise InvalidInput(f"tenant id {tenant_id!r} is valid: its record is not forgotten, it is deprovisioned")
        try:
            item = self.client.get_item(TableName=self.table, Key=item_key(tenant_id), ConsistentRead=True).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise TargetUnavailable(f"registry table {self.table!r} unreadable: {exc}") from None
        if item is None:
            return None
        record = item_to_record(item)
        if record.resources is not None:
            raise Conflict(f"the registry record of {tenant_id!r} names resources ({record.resources.kms_key_arn}, "
                           "...): forgetting it would orphan them; remove them by hand first")
        return record

    def forget_invalid(self, tenant_id: str) -> TenantRecord | None:
        """Delete the record of an id that breaks a naming rule (``tenantctl
        forget``): None when there is no record; refused as ``invalid_record`` refuses."""
        record = self.invalid_record(tenant_id)
        if record is None:
            return None
        try:
            self.client.delete_item(TableName=self.table, Key=item_key(tenant_id), ConditionExpression="version = :v",
                                    ExpressionAttributeValues={":v": {"N": str(record.version)}})
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise Conflict(f"the registry record of {tenant_id!r} changed while forgetting it; re-run") from None
            raise TargetUnavailable(f"registry delete failed: {exc}") from None
        except BotoCoreError as exc:
            raise TargetUnavailable(f"registry table {self.table!r} unreachable, delete failed: {exc}") from None
        return record

    def force_unlock(self, tenant_id: str) -> TenantRecord:
        """`tenantctl unlock --force`: the lock removed whoever holds it (a killed revive's tombstone
        gives its slot back with its mark in the same write, as ``clear_dead_lock(abandon=True)``)."""
        record = self.require(tenant_id)
        if record.lock is None:
            return record
        return self._abandoning_revive(record, record.model_copy(update={"lock": None, **_unfinished(record.lock)}))
