"""Cost estimates follow the price table: every expectation below is computed by
hand from ROUND_TABLE (round numbers, so the arithmetic can be checked on paper),
independent of the shipped us-east-1 prices, which change."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from tenantctl.errors import InvalidInput
from tenantctl.models import CellSpec, DedicatedSpec, Tier
from tenantctl.usage.cost import (
    DEFAULT_PRICES,
    GIB,
    CostInputs,
    _total_by_size,  # what the break-even search sums
    assumptions_text,
    compare_tiers,
    estimate,
    hibernation_saving,
    load_prices,
    platform_cost,
)

ROUND_TABLE = {
    "region": "test-1", "as_of": "2026-01-01", "hours_per_month": 1000,
    "kms": {"source": "s", "key_month": 1.0, "requests_per_10k": 0.1},
    "s3": {"source": "s", "storage_gb_month": {"STANDARD": 0.02, "GLACIER": 0.004},
           "put_per_1k": 0.01, "get_per_1k": 0.001},
    "sqs": {"source": "s", "requests_per_million": 1.0},
    "secrets_manager": {"source": "s", "secret_month": 0.5, "api_calls_per_10k": 0.1},
    "cloudwatch": {"source": "s", "alarm_month": 0.1},
    "rds_postgres": {"source": "s", "instance_hour": {"db.t4g.micro": 0.01, "db.t4g.medium": 0.05},
                     "multi_az_factor": 2, "storage_gb_month": 0.1, "backup_gb_month": 0.1},
    "vpc": {"source": "s", "interface_endpoint_hour": 0.01, "endpoint_data_gb": 0.01, "nat_gateway_hour": 0.05},
    "assumptions": {
        "kms_requests_month": 10000, "sqs_requests_month": 1_000_000, "s3_put_month": 1000, "s3_get_month": 10000,
        "secrets_api_calls_month": 10000, "endpoint_data_gb_month": 10,
        "alarms": {"pooled": 2, "dedicated": 4}, "secrets": {"pooled": 1, "dedicated": 1},
        "interface_endpoints": ["kms", "sqs"], "dedicated_az_count": 2,
        "backup_daily_change": 0.1, "storage_headroom": 1.25,
    },
}
PLATFORM = CellSpec(db_instance_class="db.t4g.medium", db_storage_gb=50, az_count=2, db_multi_az=False)
S3 = {"STANDARD": 10 * GIB, "GLACIER": 5 * GIB}


@pytest.fixture
def prices(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(ROUND_TABLE))
    return load_prices(path)


def inputs(tier: Tier, db_gb: float = 1, **kw) -> CostInputs:
    kw.setdefault("dedicated", DedicatedSpec(multi_az=False))  # single-AZ figures below; Multi-AZ has its own test
    return CostInputs(tenant_id="acme", tier=tier, s3_bytes_by_class=S3, db_bytes=int(db_gb * GIB), **kw)


def lines(est) -> dict[str, float]:
    return {line.item: line.monthly for line in est.lines}


def test_platform_cost_is_shared_instance_storage_and_endpoints(prices):
    # 1000 h x 0.05 + 50 GB x 0.1 + 2 endpoints x 2 AZ x 1000 h x 0.01
    assert platform_cost(prices, PLATFORM) == pytest.approx(50 + 5 + 40)


def test_the_default_multi_az_shared_database_costs_twice_the_instance_and_storage(prices):
    multi_az = PLATFORM.model_copy(update={"db_multi_az": True})
    assert CellSpec().db_multi_az is True
    assert platform_cost(prices, multi_az) == pytest.approx(2 * 50 + 2 * 5 + 40)


def test_pooled_tenant_pays_its_own_resources_and_an_even_platform_share(prices):
    est = estimate(inputs(Tier.pooled), prices, PLATFORM, active_pooled=5)
    assert lines(est) == pytest.approx({
        "KMS key": 1.0,
        "KMS requests": 0.1,              # 10k / 10k x 0.1
        "S3 storage": 0.22,               # 10 GB x 0.02 + 5 GB x 0.004
        "S3 requests": 0.02,              # 1000/1k x 0.01 + 10000/1k x 0.001
        "SQS requests": 1.0,              # 1M x 1.0
        "Secrets Manager": 0.6,           # 1 x 0.5 + 10k/10k x 0.1
        "CloudWatch alarms": 0.2,         # 2 x 0.1
        "platform share": 19.0,           # 95 / 5 (1 GB of a 50 GB shared DB is less than 1/5)
    })
    assert est.total == pytest.approx(22.14)


def test_each_workspace_adds_a_key_a_secret_and_its_queues_alarms(prices):
    est = estimate(inputs(Tier.pooled, workspaces=3), prices, PLATFORM, active_pooled=5)
    assert lines(est)["workspace KMS keys"] == pytest.approx(3.0)   # 3 x 1.0
    assert lines(est)["workspace secrets"] == pytest.approx(1.5)    # 3 x 0.5
    assert lines(est)["workspace alarms"] == pytest.approx(0.6)     # 3 x 2 x 0.1
    assert est.total == pytest.approx(22.14 + 5.1)
    assert "workspace KMS keys" not in lines(estimate(inputs(Tier.pooled), prices, PLATFORM, active_pooled=5))


def test_pooled_share_follows_the_shared_db_fraction_when_larger_than_even(prices):
    est = estimate(inputs(Tier.pooled, db_gb=20), prices, PLATFORM, active_pooled=5)
    assert lines(est)["platform share"] == pytest.approx(95 * 20 / 50)
    assert est.total == pytest.approx(41.14)


def test_dedicated_tenant_pays_rds_endpoints_and_four_alarms(prices):
    est = estimate(inputs(Tier.dedicated), prices, PLATFORM, active_pooled=5)
    assert lines(est) == pytest.approx({
        "KMS key": 1.0, "KMS requests": 0.1, "S3 storage": 0.22, "S3 requests": 0.02, "SQS requests": 1.0,
        "Secrets Manager": 0.6,
        "CloudWatch alarms": 0.4,         # 4 x 0.1
        "RDS instance": 10.0,             # 1000 h x 0.01
        "RDS storage": 2.0,               # 20 GB (spec minimum) x 0.1
        "RDS backups": 0.0,               # 1 GB x (1 + 0.1 x 14) = 2.4 GB < 20 GB free
        "VPC interface endpoints": 40.1,  # 2 x 2 AZ x 1000 h x 0.01 + 10 GB x 0.01
    })
    assert est.total == pytest.approx(55.44)


def test_a_hibernated_tenant_saves_its_instance_hours_and_nothing_else(prices):
    awake = estimate(inputs(Tier.dedicated), prices, PLATFORM, active_pooled=5)
    asleep = estimate(inputs(Tier.dedicated, hibernated=True), prices, PLATFORM, active_pooled=5)
    assert lines(asleep) == {**lines(awake), "RDS instance": 0}  # storage, backups, endpoints bill on
    saving = hibernation_saving(inputs(Tier.dedicated), prices)
    assert saving == pytest.approx(10.0) == awake.total - asleep.total
    assert "hibernated (stopped): saves $10.00" in next(x.detail for x in asleep.lines if x.item == "RDS instance")
    multi_az = DedicatedSpec(instance_class="db.t4g.medium", multi_az=True)
    assert hibernation_saving(inputs(Tier.dedicated, dedicated=multi_az), prices) == pytest.approx(100.0)
    assert hibernation_saving(inputs(Tier.pooled), prices) == 0  # nothing of its own to stop


def test_dedicated_multi_az_doubles_instance_and_storage_and_bills_backups_beyond_storage(prices):
    spec = DedicatedSpec(instance_class="db.t4g.micro", storage_gb=20, multi_az=True)
    est = estimate(inputs(Tier.dedicated, db_gb=30, dedicated=spec, backup_retention_days=10),
                   prices, PLATFORM, active_pooled=5)
    got = lines(est)
    assert got["RDS instance"] == pytest.approx(20.0)         # 10 x 2
    assert got["RDS storage"] == pytest.approx(7.6)           # ceil(30 x 1.25) = 38 GB x 0.1 x 2
    assert got["RDS backups"] == pytest.approx(2.2)           # 30 x (1 + 0.1 x 10) = 60 GB - 38 free = 22 x 0.1
    assert est.total == pytest.approx(73.24)


def test_break_even_is_where_pooled_share_overtakes_a_dedicated_instance(prices):
    cmp_ = compare_tiers(inputs(Tier.pooled), prices, PLATFORM, active_pooled=5)
    assert (cmp_.pooled, cmp_.dedicated, cmp_.cheaper) == (pytest.approx(22.14), pytest.approx(55.44), Tier.pooled)
    # Above 10 GB: pooled = 3.14 + 95 x g/50 = 3.14 + 1.9 g; dedicated = 53.44 + 0.24 g
    # (storage 0.1 x 1.25 g and backups 0.1 x (2.4 g - 1.25 g)): equal at g = 50.3 / 1.66.
    assert cmp_.break_even_db_gb == pytest.approx(50.3 / 1.66, abs=0.01)
    above = compare_tiers(inputs(Tier.pooled, db_gb=31), prices, PLATFORM, active_pooled=5)
    assert above.cheaper is Tier.dedicated and "consider moving this tenant up" in above.advice


def test_a_lone_pooled_tenant_carrying_the_whole_platform_is_cheaper_dedicated(prices):
    cmp_ = compare_tiers(inputs(Tier.pooled), prices, PLATFORM, active_pooled=1)
    assert cmp_.pooled == pytest.approx(3.14 + 95)
    assert cmp_.cheaper is Tier.dedicated and cmp_.break_even_db_gb == 0


def test_a_dedicated_tenant_is_compared_as_one_more_pooled_tenant(prices):
    # 4 pooled tenants today; moved down it would be the 5th: share 95 / 5.
    cmp_ = compare_tiers(inputs(Tier.dedicated), prices, PLATFORM, active_pooled=4)
    assert cmp_.pooled == pytest.approx(22.14)
    assert cmp_.cheaper is Tier.pooled and "isolation" in cmp_.advice


CASES = [  # pooled and dedicated, each side of the break-even, hibernated, Multi-AZ, workspaces, none / every share
    (inputs(Tier.pooled), 5), (inputs(Tier.pooled, db_gb=31), 5), (inputs(Tier.pooled, db_gb=0), 1),
    (inputs(Tier.dedicated, db_gb=700, workspaces=3), 4), (inputs(Tier.dedicated, hibernated=True), 0),
    (inputs(Tier.dedicated, db_gb=12.3456, dedicated=DedicatedSpec(storage_gb=40), backup_retention_days=35), 9),
    (inputs(Tier.pooled, db_gb=49.99, workspaces=1), 1000),
]


@pytest.mark.parametrize(("tenant", "sharing"), CASES)
def test_the_comparison_s_totals_are_the_estimates_totals_to_the_last_digit(prices, tenant, sharing):
    cmp_ = compare_tiers(tenant, prices, PLATFORM, sharing)
    n = sharing if tenant.tier is Tier.pooled else sharing + 1  # moved down, it would be one more
    as_pooled = estimate(tenant.model_copy(update={"tier": Tier.pooled}), prices, PLATFORM, n)
    as_dedicated = estimate(tenant.model_copy(update={"tier": Tier.dedicated}), prices, PLATFORM, n)
    assert (cmp_.pooled, cmp_.dedicated) == (as_pooled.total, as_dedicated.total)


@pytest.mark.parametrize(("tenant", "sharing"), CASES)
def test_each_tier_s_total_at_any_size_is_its_estimate_s_total_to_the_last_digit(prices, tenant, sharing):
    # What the break-even search sums at each size it tries: the figures the estimate at that size shows.
    for tier in Tier:
        at = _total_by_size(tenant.model_copy(update={"tier": tier}), prices, PLATFORM, sharing)
        for size in (0, 1, 2**20, 7 * GIB + 12345, 30 * GIB, 31 * GIB - 1, 1000 * GIB, 65536 * GIB):
            sized = tenant.model_copy(update={"tier": tier, "db_bytes": size})
            assert at(size) == estimate(sized, prices, PLATFORM, sharing).total, (tier, size)


def test_a_comparison_builds_two_estimates_whatever_the_sizes_its_break_even_search_tries(prices, monkeypatch):
    # The search tries ~30 sizes per tenant: an estimate per tier per size (a dozen validated lines
    # each) was nearly all the time `cost --all` spent pricing a fleet after measuring it.
    from tenantctl.usage import cost

    built = []
    monkeypatch.setattr(cost, "estimate", lambda *a, **kw: built.append(a[0].tier) or estimate(*a, **kw))
    for tenant, sharing in CASES:
        built.clear()
        compare_tiers(tenant, prices, PLATFORM, sharing)
        assert sorted(built) == [Tier.dedicated, Tier.pooled], (tenant, len(built))


def test_storage_classes_missing_from_the_table_are_priced_as_standard(prices):
    est = estimate(CostInputs(tenant_id="acme", tier=Tier.pooled, s3_bytes_by_class={"REDUCED_REDUNDANCY": 2 * GIB}),
                   prices, PLATFORM, active_pooled=5)
    assert lines(est)["S3 storage"] == pytest.approx(0.04)


def test_unknown_instance_class_is_refused_naming_the_table(prices):
    with pytest.raises(InvalidInput, match="db.r7g.large.*prices.yaml"):
        estimate(inputs(Tier.dedicated, dedicated=DedicatedSpec(instance_class="db.r7g.large")),
                 prices, PLATFORM, active_pooled=1)


def test_assumptions_name_the_date_region_and_platform_split(prices):
    text = "\n".join(assumptions_text(prices, {"default": PLATFORM}, {"default": 5}))
    assert "test-1" in text and "2026-01-01" in text and "$95.00" in text
    assert "5 pooled tenant(s) (active or suspended)" in text


def test_each_cell_priced_gets_its_own_platform_line(prices):
    lines = [a for a in assumptions_text(prices, {"eub": PLATFORM, "default": PLATFORM}, {"default": 2, "eub": 0})
             if a.startswith("platform")]
    assert [line.split(" (")[0] for line in lines] == ["platform of cell default", "platform of cell eub"]
    assert "split over 2 pooled" in lines[0] and "split over 0 pooled" in lines[1]


def test_bad_price_table_is_refused_with_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**ROUND_TABLE, "kms": {"source": "s", "key_month": "one dollar"}}))
    with pytest.raises(InvalidInput, match="kms"):
        load_prices(path)


def test_shipped_table_is_dated_sourced_and_prices_the_default_instance_classes():
    table = load_prices(DEFAULT_PRICES)
    assert table.region == "us-east-1"
    assert dt.date.fromisoformat(table.as_of)
    for section in ("kms", "s3", "sqs", "secrets_manager", "cloudwatch", "rds_postgres", "vpc"):
        assert getattr(table, section).source.startswith("https://aws.amazon.com/")
    for cls in (DedicatedSpec().instance_class, CellSpec().db_instance_class):
        assert table.instance_hour(cls) > 0
