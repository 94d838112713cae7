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
"""

from __future__ import annotations

import time
from typing import Any

from tenantctl import naming
from tenantctl.engines.base import EventSink, phase
from tenantctl.errors import ApplyFailed, InvalidInput
from tenantctl.models import Hibernation, TenantRecord, TenantStatus, Tier
from tenantctl.usage.measure import TenantUsage, clients_from_workspace, measure
from tenantctl.workspace import Workspace

WAIT_SECONDS = 1800  # RDS takes minutes to stop or start an instance; the sandbox, none
POLL_SECONDS = 5


def hibernate(ws: Workspace, tenant_id: str, idle_days: int = 30, force: bool = False,
              on_event: EventSink | None = None) -> tuple[TenantRecord, TenantUsage]:
    """Stop the database instance of an idle dedicated tenant and record its
    hibernation (idempotent). Refused for a pooled tenant, a tenant that is not
    active, and (unless ``force``) one active within ``idle_days``."""
    record = ws.registry.require(tenant_id)
    if record.tier is not Tier.dedicated:
        raise InvalidInput(f"tenant {tenant_id!r} is pooled: its schema lives in the platform's shared database, so "
                           "nothing of its own bills by the hour while it is idle (hibernate is for dedicated tenants)")
    if record.status is not TenantStatus.active or record.resources is None:
        raise InvalidInput(f"tenant {tenant_id!r} is {record.status.value}: only an active tenant is hibernated")
    phase(on_event, tenant_id, "measuring its activity")
    usage = measure(record, clients_from_workspace(ws, record), idle_days)
    if not usage.idle and not force:
        when = f"{usage.last_activity:%Y-%m-%d %H:%M}Z" if usage.last_activity else \
            f"never (created {record.created_at:%Y-%m-%d})"
        raise InvalidInput(f"tenant {tenant_id!r} is not idle: last activity {when}, within --idle-days {idle_days} "
                           "(--force hibernates it anyway)")
    instance = naming.rds_identifier(tenant_id)
    waker = _waker_role(ws, record)
    rds = ws.clients_for(record)("rds")  # its cell's account, its region
    with ws.registry.hold(tenant_id, "hibernate") as held:
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
    if ws.cell(record.cell).account_role_arn is None:
        return None
    waker = ws.cell_outputs(record.cell).get("waker_role_arn")
    if not waker:  # refused like a tenant that is not idle: `--all` goes on with the others
        raise InvalidInput(f"cell {record.cell!r} has no waker role yet (applied by an older tenantctl), so the "
                           f"runtime could not wake {record.tenant_id!r} in that account: run `tenantctl cell add "
                           f"{record.cell}` to apply the cell again, then hibernate")
    return waker


def wake(ws: Workspace, tenant_id: str, on_event: EventSink | None = None) -> TenantRecord:
    """Start a hibernated tenant's database instance, wait until it is
    available, and clear its hibernation (the runtime's first request may have
    started it already)."""
    record = ws.registry.require(tenant_id)
    if record.hibernation is None:
        return record
    instance, region = record.hibernation.db_instance, record.hibernation.region
    rds = ws.clients_for(record)("rds", region=region)
    with ws.registry.hold(tenant_id, "wake") as held:
        state = _state(rds, instance)
        if state == "stopping":
            _wait(rds, instance, "stopped", tenant_id, on_event)
            state = "stopped"
        if state == "stopped":
            phase(on_event, tenant_id, f"starting database instance {instance}")
            _call(lambda: rds.start_db_instance(DBInstanceIdentifier=instance), f"starting {instance}")
        _wait(rds, instance, "available", tenant_id, on_event)
        held.record = ws.registry.mark_hibernation(held.record, None)
    return held.record


def instance_state(ws: Workspace, record: TenantRecord) -> str | None:
    """The state of a hibernated tenant's instance (`stopped`, `starting`,
    `available`...); None when the record holds no hibernation."""
    if record.hibernation is None:
        return None
    return _state(ws.clients_for(record)("rds", region=record.hibernation.region), record.hibernation.db_instance)


def _state(rds: Any, instance: str) -> str:
    described = _call(lambda: rds.describe_db_instances(DBInstanceIdentifier=instance), f"describing {instance}")
    return described["DBInstances"][0]["DBInstanceStatus"]


def _call(call: Any, what: str) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call()
    except (ClientError, BotoCoreError) as exc:
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
