"""Which hibernation the runtime acts on, and what its waker does with a flag
naming an instance RDS does not know (no sandbox)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from runtime_fixtures import Registry, record

from tenant_runtime.context import from_registry
from tenant_runtime.errors import StoreUnavailable, TenantWaking
from tenant_runtime.hibernation import DatabaseWaker
from tenant_runtime.models import Hibernation, TenantRecord, TenantStatus, Tier

INSTANCE = "tenantctl-acme"


def hibernated(tier: Tier = Tier.dedicated, status: TenantStatus = TenantStatus.active,
               region: str = "us-east-1") -> TenantRecord:
    rec = record("acme", status=status)
    return rec.model_copy(update={"tier": tier, "resources": rec.resources.model_copy(update={"tier": tier}),
                                  "hibernation": Hibernation(db_instance=INSTANCE, region=region)})


def test_a_hibernation_counts_only_while_it_describes_the_tenants_store():
    sleeping = hibernated()
    assert sleeping.store_hibernation == sleeping.hibernation is not None
    assert hibernated(status=TenantStatus.suspended).store_hibernation is not None
    assert hibernated(Tier.pooled).store_hibernation is None  # a pooled store: the cell's shared instance
    assert hibernated(status=TenantStatus.deprovisioned).store_hibernation is None  # gone with its stack
    assert hibernated(region="eu-west-1").store_hibernation is None  # moved to another region since
    assert record("acme").store_hibernation is None


class FakeRds:
    """describe / start as RDS answers them; ``missing``: no such instance."""

    def __init__(self, state: str = "stopped", missing: bool = False, error: str | None = None) -> None:
        self.state, self.missing, self.error = state, missing, error
        self.calls: list[str] = []

    def _refuse(self, operation: str) -> None:
        code = self.error or ("DBInstanceNotFound" if self.missing else None)
        if code:
            raise ClientError({"Error": {"Code": code, "Message": f"DBInstance {INSTANCE} not found."}}, operation)

    def describe_db_instances(self, DBInstanceIdentifier: str) -> dict:
        self.calls.append("describe")
        self._refuse("DescribeDBInstances")
        return {"DBInstances": [{"DBInstanceIdentifier": DBInstanceIdentifier, "DBInstanceStatus": self.state}]}

    def start_db_instance(self, DBInstanceIdentifier: str) -> dict:
        self.calls.append("start")
        self.state = "starting"
        return {}


def waker_for(rds: FakeRds) -> DatabaseWaker:
    now = [0.0]
    waker = DatabaseWaker(lambda _hibernation: rds, recheck=5, clock=lambda: now[0])
    waker.now = now  # type: ignore[attr-defined]
    return waker


def test_the_waker_starts_the_instance_of_a_hibernated_dedicated_store():
    rds = FakeRds()
    with pytest.raises(TenantWaking):
        waker_for(rds).ensure_awake(from_registry(Registry(hibernated()), "acme"))
    assert rds.calls == ["describe", "start"]


def test_a_flag_left_on_a_pooled_tenant_is_no_reason_to_call_rds():
    rds = FakeRds(missing=True)
    waker = waker_for(rds)
    waker.ensure_awake(from_registry(Registry(hibernated(Tier.pooled)), "acme"))
    assert rds.calls == [] and waker.describes == 0


def test_a_flag_naming_an_instance_rds_does_not_know_never_stands_between_the_tenant_and_its_store():
    rds = FakeRds(missing=True)
    waker = waker_for(rds)
    ctx = from_registry(Registry(hibernated()), "acme")
    waker.ensure_awake(ctx)  # nothing to start: the store is used as it is
    waker.now[0] = 60
    waker.ensure_awake(ctx)  # and RDS is not asked again for that flag
    assert rds.calls == ["describe"] and waker.starts == 0


def test_any_other_rds_refusal_is_still_store_unavailable():
    with pytest.raises(StoreUnavailable, match="cannot be woken"):
        waker_for(FakeRds(error="AccessDenied")).ensure_awake(from_registry(Registry(hibernated()), "acme"))
