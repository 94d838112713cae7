"""The tenant registry, writer side (tenantctl is its only writer).

The item layout and its codec belong to ``tenant_runtime.registry`` (the
reader side every application runs); this module only decides what to write
and when.

Every write is conditional on the version read before it (optimistic
concurrency), so two runs racing on one tenant cannot both win; the lock held
in the record turns that into a clear refusal instead of a retry loop.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tenant_runtime.registry import (
    decode_list_cursor,
    encode_list_cursor,
    item_key,
    item_to_record,
    record_to_item,
)
from tenantctl.errors import Conflict, InvalidInput, NotFound, TargetUnavailable, TenantctlError
from tenantctl.models import (
    TenantLock,
    TenantRecord,
    TenantResources,
    TenantSpec,
    TenantStatus,
    Tier,
    utcnow,
)
from tenantctl.naming import require_valid


def new_lock(operation: str) -> TenantLock:
    return TenantLock(
        operation=operation,
        owner=os.environ.get("TENANTCTL_OPERATOR") or os.environ.get("USER") or "unknown",
        host=socket.gethostname(),
        pid=os.getpid(),
    )


def describe_lock(tenant_id: str, lock: TenantLock) -> str:
    return (
        f"tenant {tenant_id!r} is locked by a running {lock.operation} "
        f"(owner {lock.owner}, host {lock.host}, pid {lock.pid}, since {lock.acquired_at:%Y-%m-%d %H:%M:%S}Z); "
        f"if that run is dead, `tenantctl unlock {tenant_id} --force` removes the lock"
    )


def decode_cursor(cursor: str) -> str:
    try:
        return decode_list_cursor(cursor)
    except ValueError:
        raise InvalidInput(f"invalid cursor {cursor!r}: pass the next_cursor of a previous page") from None


def failure_text(exc: BaseException) -> str:
    """What a failed run leaves in the record's ``last_error``."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, TenantctlError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Held:
    """The record a ``RegistryWriter.hold`` block works on: assign each write's
    result back to ``record`` so the block ends on the latest version."""

    def __init__(self, record: TenantRecord) -> None:
        self.record = record


class RegistryWriter:
    """Reads and conditionally writes TenantRecords in the DynamoDB registry table."""

    def __init__(self, table_name: str, client: Any | None = None) -> None:
        from tenantctl import aws

        self.table = table_name
        self.client = client or aws.client("dynamodb")  # bounded backoff with jitter (tenantctl.aws)

    # -- reads -----------------------------------------------------------
    def get(self, tenant_id: str) -> TenantRecord | None:
        require_valid(tenant_id)  # an empty or malformed id is refused here, not by DynamoDB
        try:
            item = self.client.get_item(
                TableName=self.table, Key=item_key(tenant_id), ConsistentRead=True
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:  # missing table, endpoint down, retries exhausted
            raise TargetUnavailable(f"registry table {self.table!r} unreadable: {exc}") from None
        return item_to_record(item) if item else None

    def require(self, tenant_id: str) -> TenantRecord:
        record = self.get(tenant_id)
        if record is None:
            raise NotFound(f"tenant {tenant_id!r} is not in the registry")
        return record

    def list(
        self,
        limit: int = 50,
        cursor: str | None = None,
        tier: Tier | None = None,
        status: TenantStatus | None = None,
    ) -> tuple[list[TenantRecord], str | None]:
        """One page of records and the cursor of the next page (None at the end)."""
        if not 1 <= limit <= 1000:
            raise InvalidInput("--limit must be between 1 and 1000")
        kwargs: dict[str, Any] = {"TableName": self.table}
        filters, values, names = [], {}, {}
        if tier is not None:
            filters.append("tier = :tier")
            values[":tier"] = {"S": tier.value}
        if status is not None:
            filters.append("#st = :status")
            values[":status"] = {"S": status.value}
            names["#st"] = "status"
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
            kwargs["ExpressionAttributeValues"] = values
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if cursor:
            kwargs["ExclusiveStartKey"] = item_key(decode_cursor(cursor))
        page: list[TenantRecord] = []
        while True:
            resp = self.client.scan(Limit=max(limit, 25), **kwargs)
            for item in resp.get("Items", []):
                page.append(item_to_record(item))
                if len(page) == limit:
                    # Resume right after the last returned item, not after the
                    # scanned page, so nothing between them is skipped.
                    more = "LastEvaluatedKey" in resp or item is not resp["Items"][-1]
                    return page, encode_list_cursor(page[-1].tenant_id) if more else None
            if "LastEvaluatedKey" not in resp:
                return page, None
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def iter_all(self, **filters: Any) -> Iterator[TenantRecord]:
        cursor = None
        while True:
            page, cursor = self.list(limit=100, cursor=cursor, **filters)
            yield from page
            if cursor is None:
                return

    # -- writes ----------------------------------------------------------
    def _put(self, record: TenantRecord, expected_version: int | None) -> TenantRecord:
        new = record.model_copy(update={"version": (expected_version or 0) + 1, "updated_at": utcnow()})
        item = record_to_item(new)
        if expected_version is None:
            cond: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(tenant_id)"}
        else:
            cond = {
                "ConditionExpression": "version = :v",
                "ExpressionAttributeValues": {":v": {"N": str(expected_version)}},
            }
        try:
            self.client.put_item(TableName=self.table, Item=item, **cond)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise Conflict(
                    f"tenant {record.tenant_id!r} changed in the registry while this run held it; re-run"
                ) from None
            raise TargetUnavailable(f"registry write failed: {exc}") from None
        except BotoCoreError as exc:
            raise TargetUnavailable(f"registry table {self.table!r} unreachable, write failed: {exc}") from None
        return new

    @contextmanager
    def hold(self, tenant_id: str, operation: str, *, status: TenantStatus | None = None,
             spec: TenantSpec | None = None) -> Iterator[Held]:
        """Lock the tenant for one run of ``operation`` (with ``spec``: reserve it
        for a provision, see ``acquire``). A block that raises, Ctrl-C included,
        releases the lock with the failure in ``last_error``; one that returns
        without a final write (``mark_active``, ``mark_deprovisioned``) releases it."""
        record = self.acquire(spec, operation) if spec is not None else self.lock_for(tenant_id, operation, status)
        held = Held(record)
        try:
            yield held
        except BaseException as exc:
            try:
                self.release(held.record, error=failure_text(exc))
            except TenantctlError:  # registry unreachable: the lock stays, `status` shows it
                pass
            raise
        if held.record.lock is not None:
            held.record = self.release(held.record)

    def acquire(self, spec: TenantSpec, operation: str) -> TenantRecord:
        """Reserve the tenant for a provision: create its record (status
        provisioning) or lock the existing one. Refuses locked tenants and
        tombstones (a deprovisioned id is never reused). A registry that cannot
        be written is reported before anything was created."""
        try:
            return self._acquire(spec, operation)
        except TargetUnavailable as exc:
            raise TargetUnavailable(f"cannot reserve tenant {spec.id!r} in the registry, nothing was created: "
                                    f"{exc}") from None

    def _acquire(self, spec: TenantSpec, operation: str) -> TenantRecord:
        existing = self.get(spec.id)
        lock = new_lock(operation)
        if existing is None:
            record = TenantRecord(
                tenant_id=spec.id, tier=spec.tier, status=TenantStatus.provisioning,
                region=spec.region, owner=spec.owner, lock=lock,
            )
            try:
                return self._put(record, None)
            except Conflict:
                raise Conflict(f"tenant {spec.id!r} is being provisioned by another run") from None
        if existing.lock is not None:
            raise Conflict(describe_lock(spec.id, existing.lock))
        if existing.status in (TenantStatus.deprovisioning, TenantStatus.deprovisioned):
            raise Conflict(
                f"tenant id {spec.id!r} was deprovisioned on "
                f"{existing.deprovisioned_at or existing.updated_at:%Y-%m-%d}; "
                "ids are tombstoned and never reused (restore it with `tenantctl drill restore` or pick a new id)"
            )
        if existing.tier is not spec.tier:
            raise InvalidInput(
                f"tenant {spec.id!r} is {existing.tier.value}; moving tiers in place is not supported "
                "(provision a new tenant and migrate its data)"
            )
        updated = existing.model_copy(update={"lock": lock, "last_error": None})  # owner: once applied
        return self._put(updated, existing.version)

    def lock_for(self, tenant_id: str, operation: str, status: TenantStatus | None = None) -> TenantRecord:
        """Lock an existing tenant (deprovision, drills), optionally moving its status."""
        existing = self.require(tenant_id)
        if existing.lock is not None:
            raise Conflict(describe_lock(tenant_id, existing.lock))
        update: dict[str, Any] = {"lock": new_lock(operation)}
        if status is not None:
            update["status"] = status
        return self._put(existing.model_copy(update=update), existing.version)

    def mark_active(self, record: TenantRecord, resources: TenantResources, spec: TenantSpec,
                    program_version: str, applied_hash: str) -> TenantRecord:
        """The tenant is applied as ``spec``: active, unlocked, and no longer a
        tombstone (a revived tenant comes back through here too)."""
        return self._put(
            record.model_copy(update={
                "status": TenantStatus.active, "resources": resources, "lock": None,
                "spec_hash": applied_hash, "program_version": program_version,
                "region": spec.region, "owner": spec.owner, "last_error": None,
                "deprovisioned_at": None, "retain_until": None,
            }),
            record.version,
        )

    def mark_deprovisioned(self, record: TenantRecord, retention_days: int) -> TenantRecord:
        now = utcnow()
        return self._put(
            record.model_copy(update={
                "status": TenantStatus.deprovisioned, "lock": None, "deprovisioned_at": now,
                "retain_until": now + timedelta(days=retention_days),
            }),
            record.version,
        )

    def release(self, record: TenantRecord, error: str | None = None) -> TenantRecord:
        """Drop the lock after a failed run, keeping the error for `status`."""
        current = self.get(record.tenant_id)
        if current is None:
            return record
        return self._put(current.model_copy(update={"lock": None, "last_error": error}), current.version)

    def withdraw(self, record: TenantRecord) -> bool:
        """Delete the reservation a provision just made (version 1, never
        provisioned) after a refusal that changed nothing, so no empty
        `provisioning` record is left behind. False: the record moved on (kept)."""
        if record.version != 1 or record.resources is not None:
            return False
        try:
            self.client.delete_item(TableName=self.table, Key=item_key(record.tenant_id),
                                    ConditionExpression="version = :v",
                                    ExpressionAttributeValues={":v": {"N": "1"}})
        except (ClientError, BotoCoreError):
            return False
        return True

    def force_unlock(self, tenant_id: str) -> TenantRecord:
        record = self.require(tenant_id)
        if record.lock is None:
            return record
        return self._put(record.model_copy(update={"lock": None}), record.version)
