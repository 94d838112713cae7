"""Registry reader: TTL cache bounds, negative caching, clear refusals, fail closed.
DynamoDB answers come from botocore's Stubber on a real client."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber
from runtime_fixtures import record

from tenant_runtime.cache import TTLCache
from tenant_runtime.errors import RegistryUnavailable, TenantInactive, TenantNotFound
from tenant_runtime.models import TenantStatus
from tenant_runtime.registry import RegistryReader


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def item(rec):
    return {"Item": {"tenant_id": {"S": rec.tenant_id}, "status": {"S": rec.status.value},
                     "tier": {"S": rec.tier.value}, "version": {"N": "1"}, "record": {"S": rec.model_dump_json()}}}


@pytest.fixture
def dynamo():
    client = boto3.client("dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def expect(stub, tenant_id, response, consistent=False):
    stub.add_response("get_item", response, {"TableName": "reg", "Key": {"tenant_id": {"S": tenant_id}}}
                      | ({"ConsistentRead": True} if consistent else {}))


def test_ttl_cache_expires_and_evicts_least_recent():
    clock = Clock()
    cache = TTLCache(2, ttl=10, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == (True, 1)  # a is now the most recent
    cache.put("c", 3)
    assert cache.get("b") == (False, None)  # evicted
    clock.now = 10
    assert cache.get("a") == (False, None)  # expired
    cache.put("n", None, ttl=1)
    assert cache.get("n") == (True, None)  # a cached negative answer is a hit


def test_found_records_are_cached_until_ttl(dynamo):
    client, stub = dynamo
    clock = Clock()
    reader = RegistryReader("reg", client=client, ttl=30, clock=clock)
    expect(stub, "acme", item(record("acme")))
    assert reader.get("acme").tenant_id == "acme"
    assert reader.get("acme").tenant_id == "acme"
    assert reader.reads == 1
    clock.now = 30
    expect(stub, "acme", item(record("acme", TenantStatus.suspended)))
    with pytest.raises(TenantInactive, match="suspended"):
        reader.get("acme")
    assert reader.reads == 2


def test_unknown_ids_are_negatively_cached_for_their_own_ttl(dynamo):
    client, stub = dynamo
    clock = Clock()
    reader = RegistryReader("reg", client=client, ttl=30, negative_ttl=5, clock=clock)
    expect(stub, "ghost", {})
    for _ in range(3):
        with pytest.raises(TenantNotFound, match="ghost"):
            reader.get("ghost")
    assert reader.reads == 1
    clock.now = 5
    expect(stub, "ghost", item(record("ghost")))
    assert reader.get("ghost").tenant_id == "ghost"


@pytest.mark.parametrize("status", [TenantStatus.suspended, TenantStatus.deprovisioned,
                                    TenantStatus.provisioning, TenantStatus.deprovisioning])
def test_only_active_tenants_are_served(dynamo, status):
    client, stub = dynamo
    expect(stub, "acme", item(record("acme", status)))
    with pytest.raises(TenantInactive) as err:
        RegistryReader("reg", client=client).get("acme")
    assert err.value.status == status.value and err.value.status_code == 403


def test_unreadable_registry_fails_closed_and_caches_nothing(dynamo):
    client, stub = dynamo
    reader = RegistryReader("reg", client=client)
    stub.add_client_error("get_item", "ResourceNotFoundException", "no table")
    with pytest.raises(RegistryUnavailable, match="unreadable"):
        reader.get("acme")
    expect(stub, "acme", item(record("acme")))
    assert reader.get("acme").tenant_id == "acme"


def test_reader_never_writes(dynamo):
    # Stubber fails on any operation not queued: only get_item is ever issued.
    client, stub = dynamo
    reader = RegistryReader("reg", client=client)
    expect(stub, "acme", item(record("acme")))
    reader.get("acme")
    reader.invalidate("acme")
    assert not [name for name in dir(reader) if name.startswith(("put", "write", "update", "delete"))]


def test_table_name_is_required(monkeypatch):
    monkeypatch.delenv("TENANT_REGISTRY_TABLE", raising=False)
    with pytest.raises(ValueError, match="TENANT_REGISTRY_TABLE"):
        RegistryReader(client=object())


def test_a_reindex_mark_is_per_store_and_keeps_its_first_start():
    """Each store's reindex marks it unfinished and clears only its own mark:
    the record says unfinished (since the first start) while any store is."""
    from tenant_runtime.registry import reindex_marks

    rec = record("acme")
    begun = rec.model_copy(update=reindex_marks(rec, begun=[""]))
    assert begun.search_reindex_stores == [""] and begun.search_reindex_since is not None
    both = begun.model_copy(update=reindex_marks(begun, begun=["legal"]))
    assert both.search_reindex_stores == ["", "legal"] and both.search_reindex_since == begun.search_reindex_since
    one = both.model_copy(update=reindex_marks(both, finished=["legal"]))
    assert one.search_reindex_stores == [""] and one.search_reindex_since == begun.search_reindex_since
    assert reindex_marks(one, finished=[""]) == {"search_reindex_stores": [], "search_reindex_since": None}


def test_a_refresh_reads_a_stale_record_again_once_and_a_refused_login_not_one_just_read(dynamo):
    """A store refusing a record's tenant re-reads it past the cache, once: not
    when the cache holds a newer record (another request refreshed it), and for
    a refused login (weak evidence: the database may just be down) not when
    the record was read less than REREAD_INTERVAL ago."""
    from tenant_runtime.registry import REREAD_INTERVAL

    client, stub = dynamo
    clock = Clock()
    reader = RegistryReader("reg", client=client, ttl=30, clock=clock)
    expect(stub, "acme", item(record("acme")))
    stale = reader.get("acme")
    reader.refresh("acme", stale, patient=True)  # read just now: a refused login asks nothing
    assert reader.reads == 1
    expect(stub, "acme", item(record("acme")), consistent=True)  # what the refusal suggests may be a second old
    reader.refresh("acme", stale)  # a refused write does
    fresh = reader.get("acme")
    assert fresh is not stale and reader.reads == 2
    reader.refresh("acme", stale)  # a request holding the old record: the newer one is shared
    reader.refresh("acme", fresh, patient=True)
    clock.now += REREAD_INTERVAL
    expect(stub, "acme", item(record("acme")), consistent=True)
    reader.refresh("acme", fresh, patient=True)  # read a while ago: asked again
    assert reader.get("acme") is not fresh and reader.reads == 3
