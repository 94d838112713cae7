"""The registry's cell items: one counter item per cell, beside the tenant
records in the same table. It holds the tenants placed per tier (a slot taken
by one conditional update, so two placements racing for the last one cannot
both win) and the draining flag, and the lease of the run changing the cell's
stack with the fingerprint that stack was last applied from (``cell_lease``).
The item layout belongs to ``tenant_runtime.registry``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tenant_runtime.registry import (
    APPLIED,
    APPLIED_CAP,
    APPLIED_PLATFORM,
    DRAINING,
    LEASE,
    LEASE_UNTIL,
    UP_FAILED,
    counter_key,
    item_to_counts,
)
from tenantctl.errors import Conflict, RegistryUnreachable
from tenantctl.models import PLATFORM_CONNECTIONS_DEFAULT, CellSpec, TenantLock, TenantRecord, TenantStatus, Tier
from tenantctl.timestamps import utc_second

log = logging.getLogger(__name__)


def applied_of(item: dict[str, Any] | None) -> str | None:
    """The fingerprint a cell's stack was last applied from, from its counter item."""
    return (item or {}).get(APPLIED, {}).get("S")


def up_failed_of(item: dict[str, Any] | None) -> str | None:
    """How a cell's last up failed after its first change ("failed at TIME: ERROR"), from its
    counter item; None: no repair pending (none failed, or one succeeded since)."""
    return (item or {}).get(UP_FAILED, {}).get("S")


def applied_cap_of(item: dict[str, Any] | None) -> int | None:
    """The connection cap (``CellSpec.connection_cap``) a cell's stack was last applied at,
    from its counter item; None: not recorded (never applied, or by an older tenantctl)."""
    value = (item or {}).get(APPLIED_CAP, {}).get("N")
    return None if value is None else int(value)


@dataclass(frozen=True)
class AppliedBudget:
    """What a cell's connection budget was last accepted at: the pooled logins' cap
    its stack was applied at and the connections its platform's logins kept then."""

    cap: int
    platform: int

    @classmethod
    def of(cls, spec: CellSpec) -> AppliedBudget:
        return cls(spec.connection_cap, spec.platform_connections)

    @property
    def claimed(self) -> int:
        """As ``CellSpec.connections_claimed``."""
        return self.cap + self.platform


def applied_budget_of(item: dict[str, Any] | None) -> AppliedBudget | None:
    """The cell's ``AppliedBudget`` from its counter item; None when no cap is recorded. A
    platform share not recorded (a tenantctl before it kept one) reads as the default,
    which every file had until the setting came."""
    cap = applied_cap_of(item)
    if cap is None:
        return None
    platform = (item or {}).get(APPLIED_PLATFORM, {}).get("N")
    return AppliedBudget(cap, PLATFORM_CONNECTIONS_DEFAULT if platform is None else int(platform))


def _budget_update(budget: AppliedBudget) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    """The SET parts recording ``budget``, their names and values."""
    return (["#c = :cap", "#p = :platform"], {"#c": APPLIED_CAP, "#p": APPLIED_PLATFORM},
            {":cap": {"N": str(budget.cap)}, ":platform": {"N": str(budget.platform)}})


def _applied_update(applied: str, budget: AppliedBudget | None) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The SET clause recording what an up applied, its names and values."""
    parts, names, values = ["#a = :applied"], {"#a": APPLIED}, {":applied": {"S": applied}}
    if budget is not None:
        more, more_names, more_values = _budget_update(budget)
        parts += more
        names.update(more_names)
        values.update(more_values)
    return "SET " + ", ".join(parts), names, values


CLAIM_TRIES = 5  # claims of a cell's lease that runs letting it go just then may refuse, before CellBusy


def lease_of(item: dict[str, Any] | None) -> TenantLock | None:
    """The holder of the cell's lease when one holds it now (a lapsed lease holds nothing)."""
    item = item or {}
    if LEASE not in item or float(item.get(LEASE_UNTIL, {}).get("N", "0")) < time.time():
        return None
    return TenantLock.model_validate_json(item[LEASE]["S"])


class CellBusy(Conflict):
    """Another run holds the lease on the cell's stack."""

    def __init__(self, cell: str, holder: TenantLock | None, lease_seconds: float) -> None:
        self.cell, self.holder = cell, holder
        who = (f"a {holder.operation} (owner {holder.owner}, host {holder.host}, pid {holder.pid}, "
               f"since {utc_second(holder.acquired_at)})") if holder else "another run"
        super().__init__(f"cell {cell!r} is being applied by {who}; its lease lapses {lease_seconds:.0f} s after "
                         "that run stops renewing it (killed on another host; one killed on this host is taken "
                         "over at once): try again then")


def held_slots(record: TenantRecord) -> set[tuple[str, Tier]]:
    """The (cell, tier) slots a record holds: a live one its own, or both stores' while a move is
    open; a tombstone none, but its own while a revive holds it (``reviving``)."""
    if record.holds_revive_slot:
        return {(record.cell, record.tier)}
    if record.status is TenantStatus.deprovisioned:
        return set()
    move = record.move
    if move is None:
        return {(record.cell, record.tier)}
    if move.from_cell == move.to_cell:  # within its cell (records of moves before cells name no cell)
        return {(record.cell, move.from_tier), (record.cell, move.to_tier)}
    return {(move.from_cell, move.from_tier), (move.to_cell, move.to_tier)}


def slot_update(cell: str, tier: Tier, cap: int | None, applied_at_least: int | None = None) -> dict[str, Any]:
    """The UpdateItem (its arguments but the table) taking one ``tier`` slot of
    ``cell``: fewer than ``cap`` placed, the cell not draining, and
    (``applied_at_least``) last applied at that connection cap or more."""
    names = {"#key": "tenant_id", "#t": tier.value, "#d": DRAINING}
    values: dict[str, Any] = {":one": {"N": "1"}, ":no": {"BOOL": False}}
    condition = "attribute_exists(#key) AND (attribute_not_exists(#d) OR #d = :no)"
    if cap is not None:
        condition += " AND (attribute_not_exists(#t) OR #t < :cap)"
        values[":cap"] = {"N": str(cap)}
    if applied_at_least is not None:
        condition += " AND (attribute_not_exists(#ac) OR #ac >= :conn)"
        names["#ac"], values[":conn"] = APPLIED_CAP, {"N": str(applied_at_least)}
    return {"Key": counter_key(cell), "UpdateExpression": "ADD #t :one", "ConditionExpression": condition,
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}


def slot_release(cell: str, tier: Tier) -> dict[str, Any]:
    """The UpdateItem (its arguments but the table) giving back one ``tier`` slot of ``cell``: never below 0."""
    return {"Key": counter_key(cell), "UpdateExpression": "ADD #t :minus", "ConditionExpression": "#t > :zero",
            "ExpressionAttributeNames": {"#t": tier.value},
            "ExpressionAttributeValues": {":minus": {"N": "-1"}, ":zero": {"N": "0"}}}


def changed_while_held(record: TenantRecord) -> str:
    """The Conflict of a write to a record this run holds that another writer changed."""
    return f"tenant {record.tenant_id!r} changed in the registry while this run held it; re-run"


class CellItems:
    """The cell counter part of ``RegistryWriter`` (mixed into it)."""

    table: str
    client: Any
    _call: Callable[..., dict[str, Any]]  # RegistryWriter's: one call on the table, failures classified
    iter_all: Callable[..., Iterator[TenantRecord]]  # RegistryWriter's: every record, filtered
    _put_request: Callable[..., tuple[TenantRecord, dict[str, Any]]]  # RegistryWriter's: a record's next write
    _put: Callable[..., TenantRecord]  # RegistryWriter's: a record's conditional write
    written: Callable[[TenantRecord], TenantRecord]  # RegistryWriter's: a record just written, its lock kept

    # -- cell counters: tenants placed per cell, reserved race-free ------------------
    def counter_items(self, cells: list[str]) -> dict[str, dict[str, Any] | None]:
        """Each cell's counter item, in one BatchGetItem per 100 cells (None: no counter yet)."""
        out: dict[str, dict[str, Any] | None] = {c: None for c in cells}
        for i in range(0, len(cells), 100):
            request = {self.table: {"Keys": [counter_key(c) for c in cells[i:i + 100]], "ConsistentRead": True}}
            while request:
                try:
                    resp = self.client.batch_get_item(RequestItems=request)
                except (ClientError, BotoCoreError) as exc:
                    raise RegistryUnreachable(f"registry table {self.table!r} unreadable: {exc}") from None
                for item in resp.get("Responses", {}).get(self.table, []):
                    out[item["tenant_id"]["S"].split("#", 1)[1]] = item
                request = resp.get("UnprocessedKeys") or {}
        return out

    def cell_counts(self, cells: list[str]) -> dict[str, tuple[dict[str, int], bool] | None]:
        """Each cell's tenants per tier and draining flag (None: the cell has no counter yet)."""
        return {c: None if item is None else item_to_counts(item) for c, item in self.counter_items(cells).items()}

    def reserve_slot(self, cell: str, tier: Tier, cap: int | None, applied_at_least: int | None = None) -> bool:
        """Take one of the cell's slots for a ``tier`` tenant: one conditional
        UpdateItem (fewer than ``cap`` placed, cell not draining), so two
        placements racing for the last slot cannot both win. False: full or
        draining, or (``applied_at_least``) the cell was last applied at a
        connection cap below it (placement then looks at why: ``placement.within_budget``)."""
        for attempt in range(2):
            try:
                self._call("update_item", **slot_update(cell, tier, cap, applied_at_least))
                return True
            except ClientError:  # the condition: no counter yet, or full, or draining
                # After a first refusal the counter exists (made here, or by a run racing this one
                # since the update, which a full cell cannot be told from without asking again);
                # refused with a counter in place: full or draining.
                if not self._init_counter(cell) and attempt:
                    return False
        return False

    def save_taking_slot(self, record: TenantRecord, cell: str, tier: Tier, cap: int | None,
                         **changes: Any) -> TenantRecord | None:
        """``save`` of a record this run holds and one ``tier`` slot of ``cell``
        taken (as ``reserve_slot``: fewer than ``cap``, not draining) in one
        transaction (``put_taking_slot``). None: the cell refused the slot
        (full or draining), nothing written."""
        return self.put_taking_slot(record.model_copy(update=changes), record.version, cell, tier, cap,
                                    conflict=changed_while_held(record))

    def save_giving_slot(self, record: TenantRecord, cell: str, tier: Tier, **changes: Any) -> TenantRecord:
        """``save`` of a record this run holds and one ``tier`` slot of ``cell``
        given back in one transaction (``put_giving_slot``): the write ending a
        move gives back the slot of the store it leaves, so a run killed on
        either side of it leaves both or neither (never a slot too many)."""
        return self.put_giving_slot(record.model_copy(update=changes), record.version, cell, tier,
                                    conflict=changed_while_held(record))

    def put_taking_slot(self, record: TenantRecord, expected_version: int | None, cell: str, tier: Tier,
                        cap: int | None, applied_at_least: int | None = None, *,
                        conflict: str) -> TenantRecord | None:
        """Write ``record`` (conditional on ``expected_version``; None: on no
        record yet) and take one ``tier`` slot of ``cell`` (``slot_update``) in
        one TransactWriteItems: a run killed on either side of it leaves both or
        neither, so no slot is counted for a record never written. None: the
        cell refused the slot (full, draining or below ``applied_at_least``),
        nothing written; Conflict (``conflict``) when the record's condition failed."""
        new, put = self._put_request(record, expected_version)
        for attempt in range(2):
            if self._transact(slot_update(cell, tier, cap, applied_at_least), {"Put": put}, conflict):
                return self.written(new)
            # The slot refused: no counter yet, or full, or draining (as ``reserve_slot`` tells them apart).
            if not self._init_counter(cell) and attempt:
                return None
        return None

    def put_giving_slot(self, record: TenantRecord, expected_version: int, cell: str, tier: Tier, *,
                        conflict: str) -> TenantRecord:
        """Write ``record`` (conditional on ``expected_version``) and give back
        one ``tier`` slot of ``cell`` in one transaction, as ``put_taking_slot``
        took it; a counter at 0 already (or none) gives nothing back, the record
        is written alone. Conflict (``conflict``) when the record's condition failed."""
        new, put = self._put_request(record, expected_version)
        if self._transact(slot_release(cell, tier), {"Put": put}, conflict):
            return self.written(new)
        return self._put(record, expected_version)

    def _transact(self, counter: dict[str, Any], write: dict[str, dict[str, Any]], conflict: str) -> bool:
        """The counter's UpdateItem and the record's ``write`` (``{"Put": ...}`` or
        ``{"Delete": ...}``, its arguments but the table) in one
        TransactWriteItems. False: the counter's condition refused it, nothing
        written; Conflict (``conflict``) when the record's did."""
        [(kind, args)] = write.items()
        try:
            self.client.transact_write_items(TransactItems=[{"Update": {"TableName": self.table, **counter}},
                                                            {kind: {"TableName": self.table, **args}}])
            return True
        except ClientError as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if exc.response["Error"]["Code"] != "TransactionCanceledException" or not reasons:
                raise RegistryUnreachable(f"registry table {self.table!r} unusable (transact_write_items): "
                                          f"{exc}") from None
            if reasons[1:2] == ["ConditionalCheckFailed"]:
                raise Conflict(conflict) from None
            return False
        except BotoCoreError as exc:
            raise RegistryUnreachable(f"registry table {self.table!r} unreachable (transact_write_items): "
                                      f"{exc}") from None

    def set_draining(self, cell: str, draining: bool) -> None:
        self._init_counter(cell)
        self._call("update_item", Key=counter_key(cell), UpdateExpression="SET #d = :v",
                   ExpressionAttributeNames={"#d": DRAINING}, ExpressionAttributeValues={":v": {"BOOL": draining}})

    def recount(self, cell: str) -> dict[str, int]:
        """The tenants holding a slot in ``cell``, counted from their records (a
        full scan, ``held_slots``): every record of the cell but tombstones
        (those a revive holds count); a tenant with an open move holds a slot
        where each of its stores is (one of each tier in its cell; between
        cells, the old tier's in the old cell and the target tier's in the
        target), whichever cell its record names now."""
        counts = {tier.value: 0 for tier in Tier}
        for record in self.iter_all():
            for held_cell, tier in held_slots(record):
                if held_cell == cell:
                    counts[tier.value] += 1
        return counts

    def _init_counter(self, cell: str) -> bool:
        """Create the cell's counter from a recount when it has none (a cell
        that predates counters, or a new one): once per cell, never per
        provision. True when this call (or a racing one) created it."""
        if self._call("get_item", Key=counter_key(cell), ConsistentRead=True).get("Item"):
            return False
        counts = self.recount(cell)
        item = {**counter_key(cell), **{t: {"N": str(n)} for t, n in counts.items()}, DRAINING: {"BOOL": False}}
        try:
            self._call("put_item", Item=item, ConditionExpression="attribute_not_exists(tenant_id)")
        except ClientError:
            pass  # a racing run made it first
        return True

    def set_counts(self, cell: str, counts: dict[str, int]) -> None:
        """Overwrite the cell's counts (`tenantctl cell show --recount`), keeping its draining flag."""
        self._init_counter(cell)
        self._call("update_item", Key=counter_key(cell),
                   UpdateExpression="SET " + ", ".join(f"#{t} = :{t}" for t in counts),
                   ExpressionAttributeNames={f"#{t}": t for t in counts},
                   ExpressionAttributeValues={f":{t}": {"N": str(n)} for t, n in counts.items()})

    # -- cell stacks: the lease of the run changing one, what it was applied from --
    def claim_cell(self, cell: str, lock: TenantLock, seconds: float, dead: TenantLock | None = None) -> str | None:
        """Take the lease on the cell's stack for ``seconds`` (one conditional
        UpdateItem: no lease, a lapsed one, or the one ``dead`` holds: a holder
        proved dead, ``cell_lease``). Returns the fingerprint the stack was last
        applied from; CellBusy while another run's lease holds."""
        self._init_counter(cell)
        condition = "attribute_not_exists(#u) OR #u < :now"
        taken: dict[str, Any] = {}
        if dead is not None:
            condition += " OR #l = :dead"
            taken[":dead"] = {"S": dead.model_dump_json()}
        for _ in range(CLAIM_TRIES):
            now = time.time()
            try:
                item = self._call(
                    "update_item", Key=counter_key(cell), UpdateExpression="SET #l = :lock, #u = :until",
                    ConditionExpression=condition, ReturnValues="ALL_NEW",
                    ExpressionAttributeNames={"#l": LEASE, "#u": LEASE_UNTIL},
                    ExpressionAttributeValues={":lock": {"S": lock.model_dump_json()}, ":now": {"N": f"{now:.3f}"},
                                               ":until": {"N": f"{now + seconds:.3f}"}, **taken})["Attributes"]
            except ClientError:
                holder = lease_of(self._call("get_item", Key=counter_key(cell), ConsistentRead=True).get("Item"))
                if holder is not None:
                    raise CellBusy(cell, holder, seconds) from None
                continue  # given back (or lapsed) between the claim and the look: no run holds it, claim again
            return applied_of(item)
        raise CellBusy(cell, None, seconds)

    def renew_cell(self, cell: str, lock: TenantLock, seconds: float) -> bool:
        """Extend the lease ``lock`` holds; False when it lapsed and another run took it."""
        try:
            self._call("update_item", Key=counter_key(cell), UpdateExpression="SET #u = :until",
                       ConditionExpression="#l = :lock", ExpressionAttributeNames={"#l": LEASE, "#u": LEASE_UNTIL},
                       ExpressionAttributeValues={":lock": {"S": lock.model_dump_json()},
                                                  ":until": {"N": f"{time.time() + seconds:.3f}"}})
        except ClientError:
            return False
        return True

    def release_cell(self, cell: str, lock: TenantLock, applied: str | None = None,
                     budget: AppliedBudget | None = None, failed: str | None = None) -> None:
        """Give the lease back, recording ``applied`` (the fingerprint of a
        successful up, which clears a pending repair) and ``budget`` (the connection
        budget it applied) with it, or ``failed`` (how an up failed after its first
        change: a repair pending, ``up_failed_of``). A lease that lapsed and was taken
        by another run is left to that run, fingerprint included."""
        update, values = "REMOVE #l, #u", {":lock": {"S": lock.model_dump_json()}}
        names = {"#l": LEASE, "#u": LEASE_UNTIL}
        if applied is not None:
            done, done_names, done_values = _applied_update(applied, budget)
            update = f"{done} {update}, #f"
            names.update(done_names, **{"#f": UP_FAILED})
            values.update(done_values)
        elif failed is not None:
            update = f"SET #f = :failed {update}"
            names["#f"], values[":failed"] = UP_FAILED, {"S": failed}
        try:
            self._call("update_item", Key=counter_key(cell), UpdateExpression=update, ConditionExpression="#l = :lock",
                       ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except ClientError:
            log.warning("cell %s: its lease lapsed and another run took it before this one finished", cell)

    def forget_cell(self, cell: str, lock: TenantLock) -> None:
        """Delete the counter of a cell whose stack is destroyed (`cell remove`),
        while ``lock`` holds its lease: no other run came in between."""
        try:
            self._call("delete_item", Key=counter_key(cell), ConditionExpression="#l = :lock",
                       ExpressionAttributeNames={"#l": LEASE},
                       ExpressionAttributeValues={":lock": {"S": lock.model_dump_json()}})
        except ClientError:
            held = self._call("get_item", Key=counter_key(cell), ConsistentRead=True).get("Item")
            if held is not None:
                raise CellBusy(cell, lease_of(held), 0) from None

    def set_applied(self, cell: str, applied: str, budget: AppliedBudget | None = None) -> None:
        """Record what the cell's stack was applied from (and at which connection
        budget) without a lease: the home cell's first up, which creates this very table."""
        self._init_counter(cell)
        update, names, values = _applied_update(applied, budget)
        self._call("update_item", Key=counter_key(cell), UpdateExpression=update,
                   ExpressionAttributeNames=names, ExpressionAttributeValues=values)

    def set_budget(self, cell: str, budget: AppliedBudget) -> None:
        """Record the connection budget a cell's committed file was accepted at where no
        up runs (its fingerprint unchanged: a change of ``platform_connections`` alone)."""
        self._init_counter(cell)
        parts, names, values = _budget_update(budget)
        self._call("update_item", Key=counter_key(cell), UpdateExpression="SET " + ", ".join(parts),
                   ExpressionAttributeNames=names, ExpressionAttributeValues=values)
