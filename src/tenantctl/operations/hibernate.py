"""Hibernate an idle dedicated tenant: stop what bills by the hour while nobody
uses it, its RDS instance; wake it again.

Only a dedicated tenant has an instance of its own (a pooled tenant's schema
lives in the platform's shared database), and only one idle for ``idle_days``
(its newest write or upload, from `tenantctl usage`) is hibernated unless
forced. What keeps billing while it sleeps: the instance's storage and
backups, the VPC interface endpoints, the key, the secret and the alarms
(removing the endpoints would take an engine run to wake; `tenantctl cost`
shows what hibernation saves).

The record's ``hibernation`` tells the runtime: the tenant's first request
starts the instance and is answered TenantWaking (503, Retry-After) until it is
available (``tenant_runtime.hibernation``). ``wake`` (`tenantctl resume`)
starts it and waits, then clears the record. AWS starts a stopped instance by
itself after 7 days: hibernate again (a nightly `tenantctl hibernate --all`).

A tenant being moved is not hibernated (its move copies from the instance,
which follows the new store through the rollback window), and a move wakes a
hibernated tenant before it starts (``wake_held``), as do a provision of it and
a final backup (``awake``): every run that needs its database. The flag lasts no longer
than the store it describes: the registry drops it from any record that no
longer names that store (``TenantRecord.store_hibernation``), and ``wake``
clears one naming an instance that no longer exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

from pydantic import BaseModel, Field

from tenant_runtime.hibernation import instance_not_found
from tenantctl import naming
from tenantctl.engines.base import EventSink, phase
from tenantctl.errors import ApplyFailed, Conflict, InvalidInput, NotFound
from tenantctl.models import Hibernation, TenantRecord, TenantStatus, Tier
from tenantctl.operations.fleet_threads import PARALLEL, Watch, in_threads
from tenantctl.operations.selection import Failed, in_defined_cells, worst_exit
from tenantctl.registry import refuse_open_move
from tenantctl.timestamps import utc_minute
from tenantctl.usage.measure import TenantUsage, UsageClients, measure, per_place
from tenantctl.workspace import Workspace

WAIT_SECONDS = 1800  # RDS takes minutes to stop or start an instance; the sandbox, none
POLL_SECONDS = 5


def candidates(ws: Workspace, cell: str | None = None) -> tuple[list[str], dict[str, str]]:
    """What `hibernate --all` (of ``cell`` only, when given: `--cell`) tries, in id order: every
    active dedicated tenant of a cell stacks/ defines; the others skipped, by tenant id, with
    the reason `check` and `refresh` give (the shared selection), never run. An unknown
    ``cell`` is refused (exit 6), not an empty sweep."""
    if cell is not None:
        ws.cell(cell)
    kept, undefined = in_defined_cells(ws, list(ws.registry.iter_all(tier=Tier.dedicated,
                                                                     status=TenantStatus.active, cell=cell)))
    return sorted(r.tenant_id for r, _ in kept), {s.tenant_id: s.reason for s in undefined}


class Sweep(BaseModel):
    """What `hibernate --all` did: each tenant hibernated (its record, its last activity), skipped
    (tenant id -> why) or failed; a failure does not stop the sweep (as `check --all`)."""

    hibernated: list[dict[str, Any]] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)
    failed: list[Failed] = Field(default_factory=list)

    def exit_code(self) -> int:
        return worst_exit(self.failed)


class Swept(NamedTuple):
    """One tenant of a sweep: hibernated (its record and last activity), skipped (why) or failed."""

    tenant_id: str
    hibernated: dict[str, Any] | None = None
    skipped: str | None = None
    failed: Failed | None = None


def sweep(ws: Workspace, idle_days: int, force: bool, parallel: int = PARALLEL,
          on_event: EventSink | None = None, watch: Watch | None = None, cell: str | None = None) -> Sweep:
    """Hibernate every candidate (of ``cell``), ``parallel`` at once: each waits minutes for RDS to stop its
    instance, and the waits overlap. ``on_event``: every tenant's phases; ``watch``: told the
    count, then each ``Swept`` as it ends. Not idle, moving, locked, or gone (or its cell's file)
    since the listing: skipped, saying why; any other failure is recorded and the sweep goes on.
    The result lists the tenants in id order, whichever finished first."""
    ids, skipped = candidates(ws, cell)
    places = per_place(ws)  # each cell's usage clients (its admin secret read) once, as `usage --all`

    def one(tenant_id: str) -> Swept:
        try:
            record, usage = hibernate(ws, tenant_id, idle_days=idle_days, force=force, on_event=on_event,
                                      usage_clients=places)
        except (InvalidInput, Conflict, NotFound) as exc:
            return Swept(tenant_id, skipped=str(exc))
        except Exception as exc:  # noqa: BLE001 - this tenant's run; the others are still hibernated
            return Swept(tenant_id, failed=Failed.of(tenant_id, exc))
        return Swept(tenant_id, hibernated={"record": record, "last_activity": usage.last_activity})

    swept = Sweep(skipped=skipped)
    for each in in_threads(one, ids, parallel, watch):
        if each.hibernated is not None:
            swept.hibernated.append(each.hibernated)
        elif each.skipped is not None:
            swept.skipped[each.tenant_id] = each.skipped
        else:
            swept.failed.append(each.failed)
    return swept


def hibernate(ws: Workspace, tenant_id: str, idle_days: int = 30, force: bool = False,
              on_event: EventSink | None = None,
              usage_clients: Callable[[TenantRecord], UsageClients] | None = None) -> tuple[TenantRecord, TenantUsage]:
    """Stop the database instance of an idle dedicated tenant and record its
    hibernation (idempotent). Refused for a pooled tenant, a tenant that is not
    active, and (unless ``force``) one active within ``idle_days``. ``usage_clients``: a sweep's
    ``per_place``, shared by its tenants (default: made for this one)."""
    record = ws.registry.require(tenant_id)
    refuse_open_move(record)
    if record.tier is not Tier.dedicated:
        raise InvalidInput(f"tenant {tenant_id!r} is pooled: its schema lives in the platform's shared database, so "
                           "nothing of its own bills by the hour while it is idle (hibernate is for dedicated tenants)")
    if record.status is not TenantStatus.active or record.resources is None:
        raise InvalidInput(f"tenant {tenant_id!r} is {record.status.value}: only an active tenant is hibernated")
    ws.cell_of(record)  # exit 3 for a cell the project does not define, before any read there
    phase(on_event, tenant_id, "measuring its activity")
    usage = measure(record, (usage_clients or per_place(ws))(record), idle_days)
    # Already hibernated: nothing to judge again (idempotent; a drill or backup since is no wake-up).
    if not usage.idle and not force and record.store_hibernation is None:
        when = utc_minute(usage.last_activity) if usage.last_activity else \
            f"never (created {record.created_at:%Y-%m-%d})"
        raise InvalidInput(f"tenant {tenant_id!r} is not idle: last activity {when}, within --idle-days {idle_days} "
                           "(--force hibernates it anyway)")
    instance = naming.rds_identifier(tenant_id)
    waker = _waker_role(ws, record)
    rds = ws.clients_for(record)("rds")  # its cell's account, its region
    with ws.registry.hold(tenant_id, "hibernate") as held:
        refuse_open_move(held.record)  # a move may have started while it was measured
        state = _state(rds, instance)
        if state not in ("stopped", "stopping"):
            phase(on_event, tenant_id, f"stopping database instance {instance} ({state})")
            _call(lambda: rds.stop_db_instance(DBInstanceIdentifier=instance), f"stopping {instance}")
        _wait(rds, instance, "stopped", tenant_id, on_event)
        if held.record.hibernation is None:
            held.record = ws.registry.mark_hibernation(
                held.record, Hibernation(db_instance=instance, region=record.region, waker_role_arn=waker))
    return held.record, usage


def _waker_role(ws: Workspace, record: TenantRecord) -> str | None:
    """The role the runtime assumes to wake the tenant: its cell's waker role in
    another account (None in the target's own, where the runtime's role may)."""
    if ws.cell_of(record).account_role_arn is None:
        return None
    waker = ws.cell_outputs(record.cell).get("waker_role_arn")
    if not waker:  # refused like a tenant that is not idle: `--all` goes on with the others
        raise InvalidInput(f"cell {record.cell!r} has no waker role yet (applied by an older tenantctl), so the "
                           f"runtime could not wake {record.tenant_id!r} in that account: run `tenantctl cell add "
                           f"{record.cell}` to apply the cell again, then hibernate")
    return waker


def wake(ws: Workspace, tenant_id: str, on_event: EventSink | None = None) -> tuple[TenantRecord, str | None]:
    """Start a hibernated tenant's database instance, wait until it is
    available, and clear its hibernation (the runtime's first request may have
    started it already). Returns the record and what was done (None: it did
    not hibernate)."""
    record = ws.registry.require(tenant_id)
    left = record.hibernation
    if left is None:
        return record, None
    done: str | None = None  # when another run woke it meanwhile
    with ws.registry.hold(tenant_id, "wake") as held:
        if held.record.hibernation is not None:
            done = wake_held(ws, held, on_event)
        elif record.store_hibernation is None:  # the lock's own write dropped it
            done = (f"stale hibernation cleared: it named database instance {left.db_instance} ({left.region}), "
                    f"which is not the store of this {record.tier.value} tenant")
    return held.record, done


def awake(ws: Workspace, record: TenantRecord, on_event: EventSink | None = None) -> TenantRecord:
    """``record``, its tenant woken first when it hibernates: for a run that needs its database (a
    final backup's pg_dump)."""
    return record if record.hibernation is None else wake(ws, record.tenant_id, on_event)[0]


def wake_held(ws: Workspace, held: Any, on_event: EventSink | None = None) -> str:
    """``wake`` under the lock of the caller's run (``held``, a registry
    ``Held``; its record hibernates): the instance started and waited for, the
    hibernation cleared, the lock kept. Returns what was done."""
    hibernation = held.record.hibernation
    assert hibernation is not None
    instance, tenant_id = hibernation.db_instance, held.record.tenant_id
    rds = ws.clients_for(held.record)("rds", region=hibernation.region)
    state = _state(rds, instance, absent_ok=True)
    if state is None:  # nothing to start: the flag outlived its instance
        done = f"stale hibernation cleared: database instance {instance} no longer exists"
    else:
        if state == "stopping":
            _wait(rds, instance, "stopped", tenant_id, on_event)
            state = "stopped"
        if state == "stopped":
            phase(on_event, tenant_id, f"starting database instance {instance}")
            _call(lambda: rds.start_db_instance(DBInstanceIdentifier=instance), f"starting {instance}")
        _wait(rds, instance, "available", tenant_id, on_event)
        done = "woken from hibernation"
    held.record = ws.registry.save(held.record, hibernation=None)
    return done


def instance_state(ws: Workspace, record: TenantRecord) -> str | None:
    """The state of a hibernated tenant's instance (`stopped`, `starting`,
    `available`...); None when the record holds no hibernation of its store."""
    sleeping = record.store_hibernation
    if sleeping is None:
        return None
    return _state(ws.clients_for(record)("rds", region=sleeping.region), sleeping.db_instance)


def _state(rds: Any, instance: str, absent_ok: bool = False) -> str | None:
    """The instance's state; None (only ``absent_ok``): RDS knows no such instance."""
    described = _call(lambda: rds.describe_db_instances(DBInstanceIdentifier=instance), f"describing {instance}",
                      absent_ok)
    return None if described is None else described["DBInstances"][0]["DBInstanceStatus"]


def _call(call: Any, what: str, absent_ok: bool = False) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call()
    except (ClientError, BotoCoreError) as exc:
        if absent_ok and instance_not_found(exc):
            return None
        raise ApplyFailed(f"{what} failed: {exc}") from None


def _wait(rds: Any, instance: str, wanted: str, tenant_id: str, on_event: EventSink | None) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    state, shown = _state(rds, instance), None
    while state != wanted:
        if time.monotonic() > deadline:
            raise ApplyFailed(f"database instance {instance} is still {state} after {WAIT_SECONDS} s "
                              f"(waiting for {wanted}); run the command again to keep waiting")
        if state != shown:  # a line per state, not per poll
            phase(on_event, tenant_id, f"database instance {instance}: {state}, waiting for {wanted}")
            shown = state
        time.sleep(POLL_SECONDS)
        state = _state(rds, instance)
