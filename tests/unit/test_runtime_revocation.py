"""Revocation: the denylist on DynamoDB (moto), written the way `tenantctl token
revoke` writes it, read by the runtime within its stated bound, cached tokens
included; fail closed once the list is too old to trust."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import boto3
import jwt
import pytest
from moto import mock_aws
from runtime_fixtures import record
from test_runtime_jwt import Registry

from tenant_runtime import revocation
from tenant_runtime.auth import JWTSettings, TenantResolver
from tenant_runtime.errors import RevocationsUnavailable, TokenRevoked
from tenant_runtime.revocation import RevocationList

SECRET = "r" * 32
TABLE = "tenantctl-revocations"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dynamo():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")
        yield client


def write(client, item):
    """What tenantctl.operations.revoke does: the entry and the generation bump, atomically."""
    client.transact_write_items(TransactItems=[{"Put": {"TableName": TABLE, "Item": item}},
                                               revocation.bump_generation(TABLE)])


def token(tenant="acme", **claims):
    body = {"tenant_id": tenant, "exp": time.time() + 600, "iat": int(time.time()) - 5, "jti": "j-1", **claims}
    return jwt.encode(body, SECRET, "HS256")


@pytest.fixture
def setup(dynamo):
    clock = Clock()
    revocations = RevocationList(TABLE, client=dynamo, refresh_interval=5, max_age=30, clock=clock)
    resolver = TenantResolver(JWTSettings(key=SECRET, algorithms=("HS256",)), Registry(record("acme")),
                              revocations=revocations)
    return dynamo, clock, revocations, resolver


def test_a_revoked_jti_is_refused_within_the_refresh_interval_cached_or_not(setup):
    dynamo, clock, revocations, resolver = setup
    good = token()
    assert resolver.resolve(good).tenant_id == "acme"  # verified, and now in the verified-token cache
    write(dynamo, revocation.jti_item("j-1", time.time() + 600, clock.now))
    clock.now += revocation.REFRESH_INTERVAL - 0.5
    assert resolver.resolve(good).tenant_id == "acme"  # within the bound, the last list still answers
    clock.now += 0.5
    with pytest.raises(TokenRevoked) as err:
        resolver.resolve(good)
    assert err.value.status_code == 401 and err.value.code == "token_revoked"
    assert resolver.resolve(token(jti="j-2")).tenant_id == "acme"  # other tokens are unaffected


def test_the_list_is_read_again_only_when_its_generation_moved(setup):
    dynamo, clock, revocations, resolver = setup
    for _ in range(5):
        resolver.resolve(token())
        clock.now += revocation.REFRESH_INTERVAL
    assert revocations.scans == 1 and revocations.reads == 5  # one small read per interval, one scan
    write(dynamo, revocation.jti_item("other", time.time() + 60, clock.now))
    clock.now += revocation.REFRESH_INTERVAL
    resolver.resolve(token())
    assert revocations.scans == 2


def test_a_tenant_revocation_refuses_tokens_issued_before_its_time(setup):
    dynamo, clock, _, resolver = setup
    cutoff = time.time() - 30
    write(dynamo, revocation.tenant_item("acme", cutoff, time.time()))
    when = datetime.fromtimestamp(math.ceil(cutoff), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # readable, whole seconds
    with pytest.raises(TokenRevoked, match=f"issued before {when} was revoked"):
        resolver.resolve(token(iat=int(cutoff) - 60))
    with pytest.raises(TokenRevoked):  # no iat: it cannot prove it came after
        resolver.resolve(jwt.encode({"tenant_id": "acme", "exp": time.time() + 60}, SECRET, "HS256"))
    assert resolver.resolve(token(iat=int(cutoff) + 2, jti="after")).tenant_id == "acme"


def test_entries_past_their_ttl_are_ignored(setup):
    dynamo, clock, _, resolver = setup
    write(dynamo, revocation.jti_item("j-1", clock.now - 10, clock.now - 20))  # DynamoDB has not deleted it yet
    assert resolver.resolve(token()).tenant_id == "acme"


def test_an_unreadable_list_serves_until_max_age_then_fails_closed(setup):
    dynamo, clock, revocations, resolver = setup
    resolver.resolve(token())
    dynamo.delete_table(TableName=TABLE)
    clock.now += 29  # refreshes fail, the last list is within max_age
    assert resolver.resolve(token()).tenant_id == "acme"
    clock.now += 1
    with pytest.raises(RevocationsUnavailable) as err:
        resolver.resolve(token())
    assert err.value.status_code == 503
