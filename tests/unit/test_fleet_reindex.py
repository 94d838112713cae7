"""What `tenantctl search reindex --all [--outdated]` does with each tenant,
decided from its record and its stores' analyzers (no AWS, no database)."""

from __future__ import annotations

import pytest
from runtime_fixtures import record

from tenant_runtime.models import Hibernation, TenantStatus, Tier
from tenantctl.operations.fleet_reindex import FleetReindex, not_reindexed, outdated_stores
from tenantctl.operations.selection import Failed

NOW = "v2+ja:sudachidict_small-20240409"


def test_an_active_awake_tenant_is_reindexed():
    assert not_reindexed(record("acme")) is None


@pytest.mark.parametrize("status", [TenantStatus.suspended, TenantStatus.provisioning])
def test_a_tenant_not_active_is_skipped_naming_its_status(status):
    assert not_reindexed(record("acme", status=status)) == f"{status.value}: only an active tenant is reindexed"


def test_a_hibernated_tenant_is_left_asleep_saying_how_to_wake_it():
    asleep = record("acme").model_copy(update={"tier": Tier.dedicated, "hibernation": Hibernation(
        db_instance="tenantctl-acme", region="us-east-1")})
    assert not_reindexed(asleep) == ("hibernated: its database instance is stopped; `tenantctl search reindex acme` "
                                     "wakes it and reindexes it")


@pytest.mark.parametrize("analyzers, marks, expected", [
    ({"": [NOW], "fin": [NOW]}, {}, []),
    ({"": [], "fin": []}, {}, []),  # no key yet: its first writer records its own analyzer
    ({"": ["v1"], "fin": [NOW]}, {}, [""]),  # from before identities
    ({"": [NOW], "fin": ["v2"]}, {}, ["fin"]),  # built without the extra
    ({"": ["v1", NOW]}, {}, [""]),  # a reindex to this analyzer half way
    ({"": [NOW], "fin": [NOW]}, {"search_reindex_stores": ["fin"]}, ["fin"]),  # marked unfinished on the record
    ({"": [NOW], "fin": [NOW]}, {"search_rebuild_due": True}, ["", "fin"]),  # unindexed items: search refuses
])
def test_a_store_is_outdated_when_a_live_key_is_of_another_analyzer_or_its_reindex_unfinished(
        analyzers, marks, expected):
    assert outdated_stores(analyzers, record("acme").model_copy(update=marks), NOW) == expected


def test_the_fleets_exit_code_is_the_highest_failed_tenants():
    summary = FleetReindex()
    assert summary.exit_code() == 0
    for tenant_id, code in (("a", 5), ("b", 10), ("c", 7)):
        summary.add(tenant_id, Failed(tenant_id=tenant_id, error="x", exit_code=code))
    assert summary.exit_code() == 10 and summary.as_json()["exit_code"] == 10
    assert summary.counts == {"tenants": 3, "reindexed": 0, "skipped": 0, "failed": 3}
