"""Waking a hibernated tenant (`tenantctl hibernate` stopped its dedicated
database instance while it was idle).

The registry record says so (``TenantRecord.hibernation``). The first request
that needs the tenant's store starts the instance and is answered
TenantWaking (503 with Retry-After) instead of a connection timeout; so is
every request until the instance is available, then the store is used as
usual. At most one DescribeDBInstances per tenant per ``recheck`` seconds,
whatever the request rate; once seen available (or gone), none until the record
names a newer hibernation.

Only a hibernation that describes the tenant's store is acted on
(``TenantRecord.store_hibernation``): a flag an older tenantctl left on a
tenant since moved to the pooled tier is no reason to call RDS. One naming an
instance RDS does not know (``INSTANCE_NOT_FOUND``) has nothing to start: the
store is used as it is, so the flag never stands between a tenant and its
store (whether that store answers is the connection's to say).

The calls are made with the runtime's own credentials (never a tenant role's):
it needs ``rds:DescribeDBInstances`` and ``rds:StartDBInstance`` on the
tenants' instances (docs/runtime.md). A tenant in a cell of another account
is woken as that cell's waker role, which the runtime assumes (the record's
``hibernation.waker_role_arn``) and which may do exactly that there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tenant_runtime.context import TenantContext
from tenant_runtime.errors import StoreUnavailable, TenantWaking
from tenant_runtime.models import Hibernation

INSTANCE_NOT_FOUND = "DBInstanceNotFound"  # RDS's error code for an identifier it does not know
GONE = "gone"  # the state of an instance RDS does not know: nothing to start


def instance_not_found(exc: Exception) -> bool:
    """``exc`` (a botocore error) is RDS saying the instance does not exist."""
    return getattr(exc, "response", {}).get("Error", {}).get("Code") == INSTANCE_NOT_FOUND


class DatabaseWaker:
    """``rds_for(hibernation)``: an RDS client of the runtime's own credentials in the
    hibernated instance's region (as the cell's waker role in another account)."""

    def __init__(self, rds_for: Callable[[Hibernation], Any], retry_after: int = 30, recheck: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rds_for, self.retry_after, self.recheck, self.clock = rds_for, retry_after, recheck, clock
        self._awake: set[tuple[str, str]] = set()  # (tenant, hibernated since): seen available
        self._seen: dict[str, tuple[float, str]] = {}  # tenant -> (when checked, instance state)
        self._lock = threading.Lock()
        self.describes = self.starts = 0  # RDS calls, for tests and metrics

    def ensure_awake(self, ctx: TenantContext) -> None:
        """Return when the tenant's database can be used; else start it (when
        stopped) and raise TenantWaking."""
        hibernation = ctx.record.store_hibernation
        if hibernation is None:
            return
        key = (ctx.tenant_id, hibernation.since.isoformat())
        if key in self._awake:
            return
        with self._lock:
            state = self._state(ctx.tenant_id, hibernation)
            if state in ("available", GONE):
                self._awake.add(key)
                return
        raise TenantWaking(ctx.tenant_id, state, self.retry_after)

    def _state(self, tenant_id: str, hibernation: Hibernation) -> str:
        now = self.clock()
        seen = self._seen.get(tenant_id)
        if seen is not None and now - seen[0] < self.recheck:
            return seen[1]
        from botocore.exceptions import BotoCoreError, ClientError

        rds = self.rds_for(hibernation)
        try:
            self.describes += 1
            instance = rds.describe_db_instances(DBInstanceIdentifier=hibernation.db_instance)["DBInstances"][0]
            state = instance["DBInstanceStatus"]
            if state == "stopped":
                self.starts += 1
                rds.start_db_instance(DBInstanceIdentifier=hibernation.db_instance)
                state = "starting"
        except (ClientError, BotoCoreError) as exc:
            if not instance_not_found(exc):
                raise StoreUnavailable(f"the database of hibernated tenant {tenant_id!r} cannot be woken: {exc}") \
                    from None
            state = GONE
        self._seen[tenant_id] = (now, state)
        return state
