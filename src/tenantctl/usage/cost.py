"""Monthly cost estimates per tenant from a documented price table.

The model (docs/cost.md): a tenant pays for what is its own (KMS key, objects
under its prefix, queue requests, secret, alarms; dedicated: RDS instance,
storage, backups beyond the free allowance, VPC interface endpoints) plus, when
pooled, a share of the platform (shared RDS + shared interface endpoints). That
share is the platform cost split evenly over the pooled tenants (active or suspended), or the
tenant's fraction of the shared database's provisioned storage when that is
larger, so that a tenant filling the shared database pays for it: this is what
makes a break-even data size between the tiers exist.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field

from tenantctl.errors import InvalidInput
from tenantctl.models import CellSpec, DedicatedSpec, TenantSpec, Tier, describe_validation_error
from tenantctl.usage.measure import TenantUsage

GIB = 2**30
DEFAULT_PRICES = Path(__file__).resolve().parent / "prices.yaml"

_STRICT = ConfigDict(extra="forbid", frozen=True)


# -- price table -------------------------------------------------------------
class KmsPrices(BaseModel):
    model_config = _STRICT
    source: str
    key_month: float
    requests_per_10k: float


class S3Prices(BaseModel):
    model_config = _STRICT
    source: str
    storage_gb_month: dict[str, float]
    put_per_1k: float
    get_per_1k: float


class SqsPrices(BaseModel):
    model_config = _STRICT
    source: str
    requests_per_million: float


class SecretsPrices(BaseModel):
    model_config = _STRICT
    source: str
    secret_month: float
    api_calls_per_10k: float


class CloudWatchPrices(BaseModel):
    model_config = _STRICT
    source: str
    alarm_month: float


class RdsPrices(BaseModel):
    model_config = _STRICT
    source: str
    instance_hour: dict[str, float]
    multi_az_factor: float = 2
    storage_gb_month: float
    backup_gb_month: float


class VpcPrices(BaseModel):
    model_config = _STRICT
    source: str
    interface_endpoint_hour: float
    endpoint_data_gb: float
    nat_gateway_hour: float


class PerTier(BaseModel):
    model_config = _STRICT
    pooled: int
    dedicated: int

    def of(self, tier: Tier) -> int:
        return getattr(self, tier.value)


class Assumptions(BaseModel):
    """What usage cannot measure, per tenant per month."""

    model_config = _STRICT
    kms_requests_month: int = 20000
    sqs_requests_month: int = 100000
    s3_put_month: int = 10000
    s3_get_month: int = 100000
    secrets_api_calls_month: int = 10000
    endpoint_data_gb_month: float = 1
    alarms: PerTier = PerTier(pooled=2, dedicated=4)
    secrets: PerTier = PerTier(pooled=1, dedicated=1)
    interface_endpoints: list[str] = ["kms", "sqs", "secretsmanager", "sts"]
    platform_az_count: int = 2
    dedicated_az_count: int = 2
    backup_daily_change: float = Field(0.05, ge=0, le=1)
    storage_headroom: float = Field(1.25, ge=1)


class PriceTable(BaseModel):
    model_config = _STRICT
    region: str
    currency: Literal["USD"] = "USD"
    as_of: str
    hours_per_month: float = 730
    kms: KmsPrices
    s3: S3Prices
    sqs: SqsPrices
    secrets_manager: SecretsPrices
    cloudwatch: CloudWatchPrices
    rds_postgres: RdsPrices
    vpc: VpcPrices
    assumptions: Assumptions = Assumptions()

    def instance_hour(self, instance_class: str) -> float:
        try:
            return self.rds_postgres.instance_hour[instance_class]
        except KeyError:
            raise InvalidInput(
                f"no price for RDS instance class {instance_class!r} in the price table "
                f"(known: {', '.join(sorted(self.rds_postgres.instance_hour))}); add it to prices.yaml"
            ) from None

    def s3_storage(self, storage_class: str) -> float:
        # Classes missing from the table (e.g. legacy REDUCED_REDUNDANCY) are priced as STANDARD.
        table = self.s3.storage_gb_month
        return table.get(storage_class, table["STANDARD"])


def load_prices(path: Path | None = None) -> PriceTable:
    return _load_prices(str(path or DEFAULT_PRICES))


@lru_cache(maxsize=4)
def _load_prices(path: str) -> PriceTable:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"price table {path}: {exc}") from None
    try:
        return PriceTable.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(f"price table {path}: {describe_validation_error(exc)}") from None


# -- inputs and results ----------------------------------------------------------
class CostInputs(BaseModel):
    """The usage a cost is estimated for (measured, or a what-if)."""

    model_config = _STRICT
    tenant_id: str
    tier: Tier
    s3_bytes_by_class: dict[str, int] = Field(default_factory=dict)
    db_bytes: int = 0
    dedicated: DedicatedSpec = DedicatedSpec()
    backup_retention_days: int = 14
    hibernated: bool = False  # dedicated: its instance is stopped (`tenantctl hibernate`), storage still billed
    workspaces: int = Field(0, ge=0)  # each has a KMS key and a DB secret of its own


def cost_inputs(usage: TenantUsage, spec: TenantSpec | None) -> CostInputs:
    """What to price a tenant at: its measured usage and its committed spec."""
    return CostInputs(
        tenant_id=usage.tenant_id, tier=usage.tier,
        s3_bytes_by_class=usage.objects.bytes_by_class if usage.objects else {},
        db_bytes=usage.db.size_bytes if usage.db else 0,
        dedicated=(spec.dedicated if spec and spec.dedicated else DedicatedSpec()),
        backup_retention_days=spec.backup.retention_days if spec else 14,
        workspaces=len(spec.workspaces) if spec else 0,
    )


# The lines whose figure grows with the tenant's data (the break-even search figures only them again).
PLATFORM_SHARE, RDS_STORAGE, RDS_BACKUPS = "platform share", "RDS storage", "RDS backups"


class CostLine(BaseModel):
    item: str
    monthly: float
    detail: str


class CostEstimate(BaseModel):
    tenant_id: str
    tier: Tier
    lines: list[CostLine]
    currency: str = "USD"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> float:
        return _total(line.monthly for line in self.lines)


def _total(monthlies: Iterable[float]) -> float:
    """An estimate's total from its lines' (rounded) figures, summed in the lines' order: the
    break-even search sums the same figures the same way, so it finds what the estimates say."""
    return round(sum(monthlies), 4)


class TierComparison(BaseModel):
    tenant_id: str
    current_tier: Tier
    pooled: float
    dedicated: float
    cheaper: Tier
    break_even_db_gb: float | None = Field(
        description="context-store size from which dedicated costs less than pooled (None: never below 64 TiB)")
    advice: str


def _line(item: str, monthly: float, detail: str) -> CostLine:
    return CostLine(item=item, monthly=_figure(monthly), detail=detail)


def _figure(monthly: float) -> float:
    """A line's monthly figure as the estimate shows and sums it."""
    return round(monthly, 4)


# -- the model -----------------------------------------------------------------
def platform_lines(prices: PriceTable, platform: CellSpec) -> list[CostLine]:
    """What all pooled tenants share: the shared RDS instance, its storage, the
    shared VPC's interface endpoints."""
    h, a, v = prices.hours_per_month, prices.assumptions, prices.vpc
    rate = prices.instance_hour(platform.db_instance_class)
    n_ep = len(a.interface_endpoints)
    factor = prices.rds_postgres.multi_az_factor if platform.db_multi_az else 1
    az = "Multi-AZ" if platform.db_multi_az else "Single-AZ"
    return [
        _line("shared RDS instance", h * rate * factor,
              f"{platform.db_instance_class} {az}: {h:g} h x ${rate:g} x {factor:g}"),
        _line("shared RDS storage", platform.db_storage_gb * prices.rds_postgres.storage_gb_month * factor,
              f"{platform.db_storage_gb} GB x ${prices.rds_postgres.storage_gb_month:g} x {factor:g}"),
        _line("shared VPC interface endpoints", n_ep * platform.az_count * h * v.interface_endpoint_hour,
              f"{n_ep} endpoints x {platform.az_count} AZ x {h:g} h x ${v.interface_endpoint_hour:g}"),
    ]


def platform_cost(prices: PriceTable, platform: CellSpec) -> float:
    return round(sum(line.monthly for line in platform_lines(prices, platform)), 4)


def _common_lines(inputs: CostInputs, prices: PriceTable) -> list[CostLine]:
    """What every tenant owns whatever its tier."""
    a = prices.assumptions
    s3_storage = sum(b / GIB * prices.s3_storage(cls) for cls, b in inputs.s3_bytes_by_class.items())
    classes = ", ".join(f"{cls} {b / GIB:.3f} GB" for cls, b in sorted(inputs.s3_bytes_by_class.items())) or "empty"
    s3_requests = a.s3_put_month / 1000 * prices.s3.put_per_1k + a.s3_get_month / 1000 * prices.s3.get_per_1k
    secrets = a.secrets.of(inputs.tier)
    alarms = a.alarms.of(inputs.tier)
    return [
        _line("KMS key", prices.kms.key_month, "1 customer managed key"),
        _line("KMS requests", a.kms_requests_month / 10000 * prices.kms.requests_per_10k,
              f"{a.kms_requests_month} requests (assumed)"),
        _line("S3 storage", s3_storage, classes),
        _line("S3 requests", s3_requests, f"{a.s3_put_month} PUT + {a.s3_get_month} GET (assumed)"),
        _line("SQS requests", a.sqs_requests_month / 1e6 * prices.sqs.requests_per_million,
              f"{a.sqs_requests_month} requests (assumed)"),
        _line("Secrets Manager", secrets * prices.secrets_manager.secret_month
              + a.secrets_api_calls_month / 10000 * prices.secrets_manager.api_calls_per_10k,
              f"{secrets} secret(s) + {a.secrets_api_calls_month} API calls (assumed)"),
        _line("CloudWatch alarms", alarms * prices.cloudwatch.alarm_month, f"{alarms} alarms"),
    ] + _workspace_lines(inputs.workspaces, prices)


def _workspace_lines(n: int, prices: PriceTable) -> list[CostLine]:
    """A key, a secret and two queue alarms per workspace (none: no line, so
    tenants without workspaces price as before)."""
    if not n:
        return []
    alarms = n * prices.assumptions.alarms.pooled  # its queues' two, as a pooled tenant's
    return [_line("workspace KMS keys", n * prices.kms.key_month,
                  f"{n} customer managed key(s), one per workspace, ${prices.kms.key_month:g} each"),
            _line("workspace secrets", n * prices.secrets_manager.secret_month,
                  f"{n} DB secret(s), one per workspace"),
            _line("workspace alarms", alarms * prices.cloudwatch.alarm_month,
                  f"{alarms} alarms on the workspaces' queues")]


def pooled_share(db_bytes: int, platform: CellSpec, active_pooled: int) -> float:
    """The tenant's fraction of the platform: an even split, or its share of the
    shared database's provisioned storage when larger."""
    return max(1 / max(active_pooled, 1), db_bytes / (platform.db_storage_gb * GIB))


def _pooled_lines(inputs: CostInputs, prices: PriceTable, platform: CellSpec, active_pooled: int) -> list[CostLine]:
    share = pooled_share(inputs.db_bytes, platform, active_pooled)
    total = platform_cost(prices, platform)
    return [_line(PLATFORM_SHARE, total * share,
                  f"{share:.2%} of ${total:.2f} (1/{max(active_pooled, 1)} pooled tenants, active or suspended, "
                  f"or {inputs.db_bytes / GIB:.3f} of {platform.db_storage_gb} GB shared DB if larger)")]


class _DedicatedStore(NamedTuple):
    """What a dedicated store of ``db_bytes`` of data bills for storage and backups."""

    storage_gb: int  # provisioned: the spec's, or the data with headroom when larger
    backup_gb: float
    storage_monthly: float
    backup_monthly: float  # the backups beyond the free allowance (the provisioned storage)


def _dedicated_store(inputs: CostInputs, prices: PriceTable, db_bytes: int) -> _DedicatedStore:
    a, r, d = prices.assumptions, prices.rds_postgres, inputs.dedicated
    factor = r.multi_az_factor if d.multi_az else 1
    db_gb = db_bytes / GIB
    storage_gb = max(d.storage_gb, math.ceil(db_gb * a.storage_headroom))
    backup_gb = db_gb * (1 + a.backup_daily_change * inputs.backup_retention_days)
    return _DedicatedStore(storage_gb, backup_gb, storage_gb * r.storage_gb_month * factor,
                           max(0.0, backup_gb - storage_gb) * r.backup_gb_month)


def _dedicated_lines(inputs: CostInputs, prices: PriceTable) -> list[CostLine]:
    h, a, r, v = prices.hours_per_month, prices.assumptions, prices.rds_postgres, prices.vpc
    d = inputs.dedicated
    factor = r.multi_az_factor if d.multi_az else 1
    az = "Multi-AZ" if d.multi_az else "Single-AZ"
    rate = prices.instance_hour(d.instance_class)
    store = _dedicated_store(inputs, prices, inputs.db_bytes)
    n_ep = len(a.interface_endpoints)
    instance = _line("RDS instance", h * rate * factor, f"{d.instance_class} {az}: {h:g} h x ${rate:g} x {factor:g}")
    if inputs.hibernated:
        instance = _line("RDS instance", 0, f"hibernated (stopped): saves ${instance.monthly:.2f} ({instance.detail})")
    return [
        instance,
        _line(RDS_STORAGE, store.storage_monthly, f"{store.storage_gb} GB x ${r.storage_gb_month:g} x {factor:g}"),
        _line(RDS_BACKUPS, store.backup_monthly,
              f"{store.backup_gb:.3f} GB backups ({inputs.backup_retention_days} d) - {store.storage_gb} GB free"),
        _line("VPC interface endpoints", n_ep * a.dedicated_az_count * h * v.interface_endpoint_hour
              + a.endpoint_data_gb_month * v.endpoint_data_gb,
              f"{n_ep} endpoints x {a.dedicated_az_count} AZ x {h:g} h + {a.endpoint_data_gb_month:g} GB processed"),
    ]


def hibernation_saving(inputs: CostInputs, prices: PriceTable) -> float:
    """What a dedicated tenant saves per month while hibernated: its instance
    hours (storage, backups and endpoints bill on). 0 for a pooled tenant."""
    if inputs.tier is not Tier.dedicated:
        return 0.0
    d, r = inputs.dedicated, prices.rds_postgres
    return round(prices.hours_per_month * prices.instance_hour(d.instance_class)
                 * (r.multi_az_factor if d.multi_az else 1), 4)


def estimate(inputs: CostInputs, prices: PriceTable, platform: CellSpec, active_pooled: int) -> CostEstimate:
    """The monthly estimate for the tier in ``inputs``. ``active_pooled`` counts the
    active pooled tenants sharing the platform (this one included when pooled)."""
    lines = _common_lines(inputs, prices)
    if inputs.tier is Tier.pooled:
        lines += _pooled_lines(inputs, prices, platform, active_pooled)
    else:
        lines += _dedicated_lines(inputs, prices)
    return CostEstimate(tenant_id=inputs.tenant_id, tier=inputs.tier, lines=lines)


def compare_tiers(inputs: CostInputs, prices: PriceTable, platform: CellSpec, active_pooled: int) -> TierComparison:
    """Both tiers for the same usage, and the context-store size where they cross.

    A dedicated tenant moved to pooled would join the active pooled tenants, so
    the pooled side counts it in."""
    n = active_pooled if inputs.tier is Tier.pooled else active_pooled + 1
    pooled_at = _total_by_size(inputs.model_copy(update={"tier": Tier.pooled}), prices, platform, n)
    dedicated_at = _total_by_size(inputs.model_copy(update={"tier": Tier.dedicated}), prices, platform, n)

    def totals(db_bytes: int) -> tuple[float, float]:
        return pooled_at(db_bytes), dedicated_at(db_bytes)

    pooled, dedicated = totals(inputs.db_bytes)
    break_even = _break_even_bytes(lambda b: (lambda p, d: p - d)(*totals(b)))
    cheaper = Tier.pooled if pooled <= dedicated else Tier.dedicated
    be_gb = None if break_even is None else round(break_even / GIB, 2)
    if be_gb is None:
        advice = "pooled stays cheaper at any data size; move up a tier only for isolation or performance"
    elif cheaper is Tier.dedicated and inputs.tier is Tier.pooled:
        advice = f"dedicated is cheaper from {be_gb:g} GB of context data: consider moving this tenant up"
    elif cheaper is Tier.pooled and inputs.tier is Tier.dedicated:
        advice = f"pooled is cheaper below {be_gb:g} GB of context data: dedicated is paid for isolation only"
    else:
        advice = f"{inputs.tier.value} is the cheaper tier; they cross at {be_gb:g} GB of context data"
    return TierComparison(tenant_id=inputs.tenant_id, current_tier=inputs.tier, pooled=pooled,
                          dedicated=dedicated, cheaper=cheaper, break_even_db_gb=be_gb, advice=advice)


def _total_by_size(inputs: CostInputs, prices: PriceTable, platform: CellSpec,
                   active_pooled: int) -> Callable[[int], float]:
    """``estimate(inputs with db_bytes b, ...).total`` as a function of b, without building an
    estimate per b: the break-even search asks for ~30 sizes per tenant, and building two
    estimates (a dozen validated lines and their details each) per size was nearly all of what
    pricing a fleet cost. Only the lines that grow with the data are figured again, and the
    figures are summed in the estimate's order (``_total``): the same floats, the same total."""
    lines = estimate(inputs, prices, platform, active_pooled).lines
    if inputs.tier is Tier.pooled:
        total = platform_cost(prices, platform)

        def grown(b: int) -> dict[str, float]:
            return {PLATFORM_SHARE: total * pooled_share(b, platform, active_pooled)}
    else:
        def grown(b: int) -> dict[str, float]:
            store = _dedicated_store(inputs, prices, b)
            return {RDS_STORAGE: store.storage_monthly, RDS_BACKUPS: store.backup_monthly}

    def at(b: int) -> float:
        figures = grown(b)
        return _total([_figure(figures[line.item]) if line.item in figures else line.monthly for line in lines])

    return at


def _break_even_bytes(diff, hi: int = 65536 * GIB) -> int | None:
    """Smallest DB size (bytes, to 1 MiB) where pooled - dedicated >= 0; pooled's
    slope (share of the platform per GB) exceeds dedicated's, so the sign changes once."""
    if diff(0) >= 0:
        return 0
    if diff(hi) < 0:
        return None
    lo = 0
    while hi - lo > 2**20:
        mid = (lo + hi) // 2
        if diff(mid) >= 0:
            hi = mid
        else:
            lo = mid
    return hi


def assumptions_text(prices: PriceTable, platforms: Mapping[str, CellSpec],
                     active_pooled: Mapping[str, int]) -> list[str]:
    """The assumptions behind every estimate, printed next to it; a line per cell priced
    (``platforms``: the cells' specs by name, ``active_pooled``: how many tenants share each)."""
    a = prices.assumptions
    return [
        f"{prices.region} on-demand list prices in {prices.currency} as of {prices.as_of}; "
        f"{prices.hours_per_month:g} h per month; 1 GB = 2^30 bytes; account free tiers not subtracted",
        f"per tenant per month: {a.kms_requests_month} KMS requests, {a.sqs_requests_month} SQS requests, "
        f"{a.s3_put_month} S3 PUT + {a.s3_get_month} GET, {a.secrets_api_calls_month} Secrets Manager calls",
        f"alarms: pooled {a.alarms.pooled}, dedicated {a.alarms.dedicated}; "
        f"interface endpoints ({', '.join(a.interface_endpoints)}) in {a.dedicated_az_count} AZs per dedicated VPC "
        "and in the shared VPC; S3/DynamoDB via free gateway endpoints; no NAT gateway "
        f"(one would add ${prices.vpc.nat_gateway_hour * prices.hours_per_month:.2f} per AZ)",
        *(f"platform of cell {name} (shared {platform.db_instance_class}, "
          f"{platform.db_storage_gb} GB, {platform.az_count} AZ): ${platform_cost(prices, platform):.2f}/month, "
          f"split over {active_pooled.get(name, 1)} pooled tenant(s) (active or suspended) or by share of the "
          "shared DB storage if larger" for name, platform in sorted(platforms.items())),
        f"dedicated: storage >= data x {a.storage_headroom:g}; backups = data x (1 + {a.backup_daily_change:g} x "
        "retention days), free up to the provisioned storage",
        "S3 bytes include noncurrent versions (they are billed); data transfer out is not included",
    ]
