"""Where a tenant's resources live, read from the live resources:

- ``cell``: the record's cell exists, is in the tenant's region, and the
  tenant's resources say that region too;
- ``account-region``: every resource ARN (key, role, secret, queue, DLQ) is in
  the cell's account, and every regional one in the tenant's region (IAM is
  global: account only); the queue ARNs are read from SQS (by the check, or
  by the up that just made the queues), not derived;
- ``bucket``: the tenant's prefix is in its cell's bucket, and that bucket is
  in the tenant's region (residency: objects and backups live there);
- ``store``: a pooled tenant's schema is in its cell's PostgreSQL database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from tenantctl.checks.reads import LiveReads
from tenantctl.checks.results import CheckResult, run_each
from tenantctl.naming import account_of_arn, region_of_arn

AREA = "placement"


class _PlacementChecks:
    def __init__(self, record: Any, cell: Any, outputs: dict[str, Any], clients: Callable[..., Any],
                 reads: LiveReads) -> None:
        self.record, self.res, self.spec, self.outputs = record, record.resources, cell, outputs
        self.clients, self.reads = clients, reads
        self.account = outputs.get("account_id")

    def cell(self) -> tuple[bool, str]:
        problems = []
        if self.spec.region != self.record.region:
            problems.append(f"cell {self.spec.name} is in {self.spec.region}, the tenant in {self.record.region}")
        if self.res.region != self.record.region:
            problems.append(f"resources say {self.res.region}, the record {self.record.region}")
        if self.record.account_id and self.account and self.record.account_id != self.account:
            problems.append(f"record names account {self.record.account_id}, the cell is in {self.account}")
        return not problems, "; ".join(problems) or f"cell {self.spec.name} in {self.spec.region}"

    def _arns(self) -> dict[str, str]:
        return {"kms key": self.res.kms_key_arn, "db secret": self.res.store.secret_arn,
                "queue": self.reads.queue_attributes(self.res.queue_url)["QueueArn"],
                "dlq": self.reads.queue_attributes(self.res.dlq_url)["QueueArn"],
                "role": self.res.role_arn}

    def account_region(self) -> tuple[bool, str]:
        problems = []
        for what, arn in self._arns().items():
            if account_of_arn(arn) != self.account:
                problems.append(f"{what} {arn} is not in account {self.account}")
            regional = what != "role"
            if regional and region_of_arn(arn) != self.record.region:
                problems.append(f"{what} {arn} is not in {self.record.region}")
        return not problems, "; ".join(problems) or f"every ARN in account {self.account}, {self.record.region}"

    def bucket(self) -> tuple[bool, str]:
        expected = self.outputs.get("bucket")
        if self.res.bucket != expected:
            return False, f"prefix in bucket {self.res.bucket}, the cell's bucket is {expected}"
        location = self.clients("s3").get_bucket_location(Bucket=self.res.bucket).get("LocationConstraint")
        region = location or "us-east-1"  # S3 reports us-east-1 as no constraint
        if region != self.record.region:
            return False, (f"bucket {self.res.bucket} is in {region}, "
                           f"the tenant's data must stay in {self.record.region}")
        return True, f"s3://{self.res.bucket}/{self.res.prefix} in {region}"

    def store(self) -> tuple[bool, str]:
        store = self.res.store
        if self.record.tier.value != "pooled":
            return True, f"own database {store.database}"
        expected = (self.outputs.get("db_endpoint"), self.outputs.get("db_name"))
        if (store.endpoint, store.database) != expected:
            return False, (f"schema in {store.endpoint}/{store.database}, "
                           f"the cell's database is {expected[0]}/{expected[1]}")
        return True, f"schema {store.schema_name} in {store.database}"


NAMES = ("cell", "account-region", "bucket", "store")


def placement_checks(record: Any, cell: Any, outputs: dict[str, Any], clients: Callable[..., Any],
                     reads: LiveReads | None = None) -> Iterator[CheckResult]:
    """``cell``: the tenant's CellSpec; ``outputs``: its platform outputs;
    ``clients(service)``: clients in the cell's account and the tenant's region; ``reads``: where the
    queue ARNs come from (default: SQS, live)."""
    checks = _PlacementChecks(record, cell, outputs, clients, reads or LiveReads(record, clients))
    yield from run_each(AREA, [(name, getattr(checks, name.replace("-", "_"))) for name in NAMES])
