"""Token revocation (`tenantctl token revoke`): entries of the denylist the
runtime checks (tenant_runtime.revocation owns the item layout), each written
with a bump of the list's generation in one DynamoDB transaction, so every
runtime process re-reads the list within its refresh interval."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from tenant_runtime import revocation
from tenantctl.errors import InvalidInput, TargetUnavailable, UsageError


class Revocation(BaseModel):
    kind: str  # "jti" | "tenant"
    key: str
    revoked_at: datetime
    expires_at: datetime  # the entry's DynamoDB TTL
    not_before: datetime | None = None  # tenant: tokens issued before this are refused
    table: str
    bound_seconds: float = revocation.REFRESH_INTERVAL  # a runtime (default settings) honours it within this


def _table(ws: Any) -> str:
    table = ws.ensure_platform().get("revocation_table")
    if not table:
        raise TargetUnavailable("the platform has no revocation table yet: run `tenantctl platform up`")
    return table


def _write(ws: Any, table: str, item: dict[str, Any]) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        ws.client("dynamodb").transact_write_items(TransactItems=[
            {"Put": {"TableName": table, "Item": item}}, revocation.bump_generation(table)])
    except (ClientError, BotoCoreError) as exc:
        raise TargetUnavailable(f"cannot write to the revocation table {table!r}: {exc}") from None


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def revoke_jti(ws: Any, jti: str, expires_at: datetime | None = None, reason: str = "",
               now: float | None = None) -> Revocation:
    """Deny one token until ``expires_at`` (its ``exp``; default: the longest
    access-token life from now, when the token's exp is not known)."""
    if not jti or len(jti) > 512:
        raise UsageError("Invalid value for '--jti': 1 to 512 characters.")
    now = time.time() if now is None else now
    until = expires_at.timestamp() if expires_at else now + revocation.MAX_TOKEN_LIFE
    if until <= now:
        raise InvalidInput("--until is in the past: that token has expired already, nothing to revoke")
    table = _table(ws)
    _write(ws, table, revocation.jti_item(jti, until, now, reason))
    return Revocation(kind="jti", key=jti, revoked_at=_at(now), expires_at=_at(int(until) + 1), table=table)


def revoke_tenant(ws: Any, tenant_id: str, before: datetime | None = None, reason: str = "",
                  now: float | None = None) -> Revocation:
    """Deny every token of ``tenant_id`` issued before ``before`` (default: now)."""
    now = time.time() if now is None else now
    cutoff = before.timestamp() if before else now
    if cutoff > now + 60:
        raise InvalidInput("--before is in the future: it would refuse tokens not issued yet")
    ws.registry.require(tenant_id)  # unknown tenant: exit 6, nothing written
    table = _table(ws)
    item = revocation.tenant_item(tenant_id, cutoff, now, reason)
    _write(ws, table, item)
    return Revocation(kind="tenant", key=tenant_id, revoked_at=_at(now),
                      not_before=_at(int(item["not_before"]["N"])),
                      expires_at=_at(int(item[revocation.TTL_ATTRIBUTE]["N"])), table=table)
