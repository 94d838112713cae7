"""Token revocation: a denylist the runtime checks on every resolution.

The runtime only verifies *access* tokens (short-lived, issued by the IdP,
which also issues and rotates the refresh tokens): revoking a session at the
IdP stops new access tokens, and this list stops the ones already issued.

Contract (written by ``tenantctl token revoke``, read here): one DynamoDB table
in the registry's account (the platform stack's ``revocation_table``), hash key
``key``, DynamoDB TTL on ``expires_at``:

    key = "jti#<jti>"      one token; expires_at = the token's exp (its remaining life)
    key = "tenant#<id>"    every token of tenant <id> issued (iat) before not_before;
                           expires_at = not_before + the longest access-token life
    key = "meta#generation"  a counter every revocation bumps in the same transaction

Bound: each process re-reads the counter at most ``refresh_interval`` seconds
after its last read (strongly consistent), and the whole list only when the
counter moved: one small read per interval in the steady state. A revocation
is therefore honoured by every process within ``refresh_interval`` seconds of
its write, the verified-token cache included (the check runs on cache hits
too). When the table cannot be read, the last list keeps serving until it is
``max_age`` seconds old; then requests are refused (503) rather than served on
a list that may miss a revocation. DynamoDB's TTL deletes lazily: entries past
``expires_at`` are ignored here, whenever they disappear.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from tenant_runtime.blocking import may_block
from tenant_runtime.errors import RevocationsUnavailable, TokenRevoked

TABLE_ENV = "TENANT_REVOCATION_TABLE"
HASH_KEY = "key"
TTL_ATTRIBUTE = "expires_at"
GENERATION_KEY = "meta#generation"
# The longest access-token life a tenant-wide revocation outlives (its entry's TTL).
MAX_TOKEN_LIFE = 24 * 3600
RETRY_AFTER = 1.0  # seconds between refresh attempts while the table cannot be read
REFRESH_INTERVAL = 5.0  # the default bound on how long a revocation takes to reach a process
MAX_AGE = 30.0  # the default age past which an unrefreshable list refuses requests


def jti_key(jti: str) -> str:
    return f"jti#{jti}"


def tenant_key(tenant_id: str) -> str:
    return f"tenant#{tenant_id}"


def jti_item(jti: str, expires_at: float, revoked_at: float, reason: str = "") -> dict[str, Any]:
    return {HASH_KEY: {"S": jti_key(jti)}, TTL_ATTRIBUTE: {"N": str(int(expires_at) + 1)},
            "revoked_at": {"N": str(int(revoked_at))}, "reason": {"S": reason}}


def tenant_item(tenant_id: str, not_before: float, revoked_at: float, reason: str = "",
                max_token_life: int = MAX_TOKEN_LIFE) -> dict[str, Any]:
    cutoff = math.ceil(not_before)  # iat has whole seconds: the revocation's own second is refused too
    return {HASH_KEY: {"S": tenant_key(tenant_id)}, "not_before": {"N": str(cutoff)},
            TTL_ATTRIBUTE: {"N": str(cutoff + max_token_life)},
            "revoked_at": {"N": str(int(revoked_at))}, "reason": {"S": reason}}


def bump_generation(table: str) -> dict[str, Any]:
    """The TransactWriteItems update that accompanies every revocation."""
    return {"Update": {"TableName": table, "Key": {HASH_KEY: {"S": GENERATION_KEY}},
                       "UpdateExpression": "ADD generation :one",
                       "ExpressionAttributeValues": {":one": {"N": "1"}}}}


class RevocationList:
    """The denylist as this process last read it (thread-safe)."""

    def __init__(self, table_name: str | None = None, client: Any | None = None,
                 refresh_interval: float = REFRESH_INTERVAL, max_age: float = MAX_AGE,
                 clock: Callable[[], float] = time.time) -> None:
        self.table = table_name or os.environ.get(TABLE_ENV) or ""
        if not self.table:
            raise ValueError(f"revocation table name missing: pass table_name or set ${TABLE_ENV}")
        if not 0 < refresh_interval <= max_age:
            raise ValueError("0 < refresh_interval <= max_age is required")
        if client is None:
            from tenant_runtime.boto_sessions import default_session

            client = default_session().client("dynamodb")
        self.client, self.refresh_interval, self.max_age, self.clock = client, refresh_interval, max_age, clock
        self._jtis: dict[str, float] = {}  # jti -> expires_at
        self._tenants: dict[str, float] = {}  # tenant -> not_before
        self._generation: int | None = None
        self._read_at: float | None = None  # when the list was last confirmed current
        self._failed_at: float | None = None  # last failed refresh: retried after RETRY_AFTER, not per request
        self._lock = threading.Lock()
        self.reads = self.scans = 0  # DynamoDB calls, for tests and metrics

    # -- checking ------------------------------------------------------------------

    def check(self, claims: Mapping[str, Any], tenant_id: str) -> None:
        """TokenRevoked (401) when the token is denied; RevocationsUnavailable
        (503) when the list is older than ``max_age`` and cannot be refreshed."""
        self._fresh()
        now = self.clock()
        jti = claims.get("jti")
        if isinstance(jti, str) and self._jtis.get(jti, 0) > now:
            raise TokenRevoked("token revoked")
        cutoff = self._tenants.get(tenant_id)
        if cutoff is not None:
            issued = claims.get("iat")
            # A token without iat cannot prove it postdates the cut-off.
            if not isinstance(issued, (int, float)) or issued < cutoff:
                when = datetime.fromtimestamp(cutoff, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                raise TokenRevoked(f"every token of tenant {tenant_id!r} issued before {when} was revoked")

    def _fresh(self) -> None:
        read_at, now = self._read_at, self.clock()
        if read_at is not None and now - read_at < self.refresh_interval:
            return
        if (read_at is not None and now - read_at < self.max_age and self._failed_at is not None
                and now - self._failed_at < RETRY_AFTER):
            return
        # One refresher at a time; others keep the current list while it is within max_age.
        if not self._lock.acquire(blocking=read_at is None or self.clock() - read_at >= self.max_age):
            return
        try:
            if self._read_at is not None and self.clock() - self._read_at < self.refresh_interval:
                return  # another thread refreshed it meanwhile
            try:
                self.refresh()
            except RevocationsUnavailable:
                self._failed_at = self.clock()
                if self._read_at is None or self.clock() - self._read_at >= self.max_age:
                    raise
        finally:
            self._lock.release()

    # -- reading -------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the counter; read the whole list when it moved (or never was)."""
        from botocore.exceptions import BotoCoreError, ClientError

        may_block()
        started = self.clock()
        try:
            self.reads += 1
            item = self.client.get_item(TableName=self.table, Key={HASH_KEY: {"S": GENERATION_KEY}},
                                        ConsistentRead=True).get("Item") or {}
            generation = int(item.get("generation", {}).get("N", "0"))
            if generation != self._generation:
                self._load(started)
                self._generation = generation
        except (ClientError, BotoCoreError, KeyError, ValueError) as exc:
            raise RevocationsUnavailable(f"revocation table {self.table!r} unreadable: {exc}") from None
        self._read_at, self._failed_at = started, None

    def _load(self, now: float) -> None:
        jtis: dict[str, float] = {}
        tenants: dict[str, float] = {}
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        while True:
            self.scans += 1
            page = self.client.scan(**kwargs)
            for item in page.get("Items", []):
                key, expires = item[HASH_KEY]["S"], float(item.get(TTL_ATTRIBUTE, {}).get("N", "0"))
                if expires <= now and key != GENERATION_KEY:
                    continue  # past its TTL, not yet deleted by DynamoDB
                kind, _, value = key.partition("#")
                if kind == "jti":
                    jtis[value] = expires
                elif kind == "tenant":
                    tenants[value] = float(item["not_before"]["N"])
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        self._jtis, self._tenants = jtis, tenants
