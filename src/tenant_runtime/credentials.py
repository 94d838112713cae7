"""AWS clients for a tenant.

Two modes behind one interface (``client(ctx, service)``):

* ``ambient``: the process's own credentials, one client per service shared by
  every tenant. The runtime's checks (TenantMismatch, prefixes, encryption
  context) are then the only wall; fine on the sandbox and for tests.
* ``assume_role``: STS AssumeRole of the tenant's role
  (``TenantResources.role_arn``) with a session tag ``tenant_id=<id>`` and a
  session name naming the tenant; the tenant role's trust policy pins the
  calling principal and that tag. The credentials are cached per tenant until
  ``refresh_margin`` seconds before they expire, and that tenant's S3/SQS/KMS/
  Secrets Manager clients are built from them only, so a bug that hands tenant
  B's key or prefix to tenant A's client is refused by AWS itself. A
  workspace context assumes the workspace's role with the tag ``<id>/<ws>``
  (its trust policy's value), cached apart from its tenant's.

The calling principal is the platform's runtime role (``tenantctl-runtime``,
the platform output ``runtime_principal_arn``): on AWS the process runs as it
(an ECS task role, say); elsewhere (the sandbox, a laptop) pass
``runtime_role_arn`` and the factory first assumes it with the process's own
credentials, then assumes tenant roles as that role.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from tenant_runtime.blocking import may_block
from tenant_runtime.context import TenantContext, verified

Mode = Literal["ambient", "assume_role"]
SESSION_TAG = "tenant_id"  # the tenant role's trust policy (infra/components/tenant_role.py) requires exactly this tag


class ClientFactory:
    def __init__(self, mode: Mode = "ambient", session: Any | None = None, region: str | None = None,
                 endpoint_url: str | None = None, duration_seconds: int = 900,
                 refresh_margin: float = 120.0, clock: Callable[[], datetime] | None = None,
                 runtime_role_arn: str | None = None) -> None:
        from botocore.config import Config

        from tenant_runtime.boto_sessions import new_session

        self.mode = mode
        self.session = session or new_session(region_name=region)
        self.endpoint_url = endpoint_url
        self.duration_seconds, self.refresh_margin = duration_seconds, refresh_margin
        self.clock = clock or (lambda: datetime.now(UTC))  # injectable for cache-expiry tests
        # Bounded retries with jitter (botocore "standard" mode) on throttling.
        self.config = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32)
        self._shared: dict[str, Any] = {}
        # ctx.key -> (expiry, clients, session, (role ARN, region) they were made for)
        self._scoped: dict[str, tuple[datetime, dict[str, Any], Any, tuple[str, str]]] = {}
        self.runtime_role_arn = runtime_role_arn
        self._runtime: dict[str, tuple[datetime, Any]] = {}  # region -> (expiry, STS client as the runtime role)
        # (role ARN, region) -> (expiry, session, clients by service): roles the runtime assumes for itself
        self._own_roles: dict[tuple[str, str], tuple[datetime, Any, dict[str, Any]]] = {}
        self._lock = threading.RLock()  # re-entered: _scoped_client -> _assume -> _shared_client
        self.assume_role_calls = 0

    def client(self, ctx: TenantContext, service: str) -> Any:
        ctx = verified(ctx)  # credentials are chosen by the context: only a resolved one
        if self.mode == "ambient":
            return self._shared_client(service, ctx.resources.region)
        return self._scoped_client(ctx, service)

    def own_client(self, service: str, region: str, role_arn: str | None = None) -> Any:
        """A client of the runtime's own credentials, never a tenant role's: for
        what only the runtime may do (waking a hibernated tenant's database).
        With ``role_arn``: as that role, assumed by the runtime (a cell's waker
        role in another account), renewed like a tenant role's session."""
        if role_arn is None:
            return self._shared_client(service, region)
        with self._lock:
            entry = self._own_roles.get((role_arn, region))
            if entry is None or entry[0] - timedelta(seconds=self.refresh_margin) <= self.clock():
                expiry, session = self._session_as(self.runtime_sts(region), region, RoleArn=role_arn,
                                                   RoleSessionName="tenant-runtime")
                entry = (expiry, session, {})
                self._own_roles[role_arn, region] = entry
            clients = entry[2]
            if service not in clients:
                clients[service] = self._new_client(entry[1], service, region)
            return clients[service]

    def _new_client(self, session: Any, service: str, region: str) -> Any:
        return session.client(service, region_name=region, endpoint_url=self.endpoint_url, config=self.config)

    def _shared_client(self, service: str, region: str) -> Any:
        key = f"{service}@{region}"
        with self._lock:
            if key not in self._shared:
                self._shared[key] = self._new_client(self.session, service, region)
            return self._shared[key]

    def _scoped_client(self, ctx: TenantContext, service: str) -> Any:
        now = self.clock()
        with self._lock:
            entry = self._scoped.get(ctx.key)
            # A tenant moved to another account or region has another role there: its
            # cached session (the old role's, the old region's) cannot reach the new key.
            made_for = (ctx.resources.role_arn, ctx.resources.region)
            if entry is None or entry[0] - timedelta(seconds=self.refresh_margin) <= now or entry[3] != made_for:
                expiry, session = self._assume(ctx)  # one session per tenant role
                entry = (expiry, {}, session, made_for)
                self._scoped[ctx.key] = entry
            clients = entry[1]
            if service not in clients:
                clients[service] = self._new_client(entry[2], service, ctx.resources.region)
            return clients[service]

    def _session_as(self, sts: Any, region: str, **params: Any) -> tuple[datetime, Any]:
        """(expiry, a boto3 session) of the role ``params`` assume through ``sts``
        (new_session: the service models are parsed once per process)."""
        from tenant_runtime.boto_sessions import new_session

        may_block()
        self.assume_role_calls += 1
        creds = sts.assume_role(DurationSeconds=self.duration_seconds, **params)["Credentials"]
        expiry = creds["Expiration"] if creds["Expiration"].tzinfo else creds["Expiration"].replace(tzinfo=UTC)
        return expiry, new_session(aws_access_key_id=creds["AccessKeyId"],
                                   aws_secret_access_key=creds["SecretAccessKey"],
                                   aws_session_token=creds["SessionToken"], region_name=region)

    def runtime_sts(self, region: str) -> Any:
        """The STS client tenant roles are assumed with: the process's own, or,
        with ``runtime_role_arn``, one running as that role (refreshed like tenants')."""
        if self.runtime_role_arn is None:
            return self._shared_client("sts", region)
        with self._lock:
            entry = self._runtime.get(region)
            if entry is None or entry[0] - timedelta(seconds=self.refresh_margin) <= self.clock():
                expiry, session = self._session_as(self._shared_client("sts", region), region,
                                                   RoleArn=self.runtime_role_arn, RoleSessionName="tenant-runtime")
                entry = (expiry, self._new_client(session, "sts", region))
                self._runtime[region] = entry
            return entry[1]

    def _assume(self, ctx: TenantContext) -> tuple[datetime, Any]:
        return self._session_as(self.runtime_sts(ctx.resources.region), ctx.resources.region,
                                RoleArn=ctx.resources.role_arn,
                                RoleSessionName=f"tenant-{ctx.key.replace('/', '--')}"[:64],  # no '/' in names
                                Tags=[{"Key": SESSION_TAG, "Value": ctx.key}], TransitiveTagKeys=[SESSION_TAG])
