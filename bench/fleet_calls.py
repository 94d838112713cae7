"""AWS calls of the fleet-wide reads, per registry record: `audit`, `usage --all`, `cost --all`
over R records, against the fewest calls the same figures need. On a fresh sandbox of its own.

    python bench/fleet_calls.py                    # R = 200, 1000
    python bench/fleet_calls.py --sizes 200        # quick run
    python bench/fleet_calls.py --parallel 4       # usage / cost at --parallel 1 and 4 (default 8)

One pooled tenant is provisioned for real; R synthetic active records are written straight into
the registry with its resources (its key, queues, role, secret) but each its own S3 prefix holding
one object and a stack file of its own, so every record is measured, and priced with its committed
spec, as a tenant is. Each command runs in process with every
boto3 call counted (``BaseClient._make_api_call``) on the real moto server. The floor is the
fewest calls the same figures can be read with today's APIs, counted per record:

- usage / cost: two GetQueueAttributes per tenant (SQS has no batch read of queue attributes),
  the bucket's object versions listed in pages of 1,000, the admin secret read once;
- audit: one DescribeKey per live record's key (no paged KMS API returns a key's state:
  ListKeys, ListAliases and the tagging API list keys pending deletion as any other), plus the
  paged listings (tagging API, roles, secrets, the registry scan).

It prints the calls per operation of each command, its total, the floor's, their ratio, the
PostgreSQL logins it made (usage reads each store as its admin: the floor is one per store, and
with tenants measured in threads at most one per thread and store), the seconds it took (one
run each) and, for `cost`, those after its last tenant was measured (``priced``: pricing them
all, in this process). `usage --all` and `cost --all` run twice, one tenant after another (``par`` 1) and
``--parallel`` tenants at once, one right after the other: the same calls, the time apart (an
untimed measurement of one tenant first, so neither pays the imports a first one does).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from typing import Any


class CallCounter:
    """Every boto3 call made in this process, by (service, operation), and every PostgreSQL login
    (``psycopg.connect``: a TCP connection and a SCRAM exchange each)."""

    def __init__(self) -> None:
        from botocore.client import BaseClient

        self.calls: Counter[str] = Counter()
        original = BaseClient._make_api_call
        counter = self

        def counted(client: Any, operation: str, params: Any) -> Any:
            counter.calls[f"{client.meta.service_model.service_name}:{operation}"] += 1
            return original(client, operation, params)

        BaseClient._make_api_call = counted
        import psycopg

        connect = psycopg.connect

        def login(*args: Any, **kwargs: Any) -> Any:
            counter.calls["postgres:login"] += 1
            return connect(*args, **kwargs)

        psycopg.connect = login

    def take(self) -> tuple[Counter[str], int]:
        calls, self.calls = self.calls, Counter()
        return calls, calls.pop("postgres:login", 0)


class Measured:
    """When `cost` measured its last tenant (``watch``: told each usage as it is measured, as the
    CLI's progress lines are): what it spends after that is pricing, in this process."""

    def __init__(self) -> None:
        self.last: float | None = None

    def watch(self) -> Any:
        from tenantctl.operations.fleet_threads import Watch

        return Watch(on_result=lambda _: setattr(self, "last", time.perf_counter()))


def seed(ws: Any, s3: Any, start: int, stop: int) -> None:
    """Records [start, stop): the seed tenant's resources, each with a prefix of its own and an object,
    and a stack file each, as every provisioned tenant has (`cost` reads each tenant's committed spec)."""
    from tenant_runtime.registry import record_to_item
    from tenantctl.models import TenantSpec
    from tenantctl.stackconfig import write_tenant

    template = ws.registry.require("seed")
    batch = []
    for i in range(start, stop):
        tenant = f"syn-{i:05d}"
        prefix = f"tenants/{tenant}/"
        resources = template.resources.model_copy(update={"prefix": prefix})
        record = template.model_copy(update={"tenant_id": tenant, "resources": resources})
        write_tenant(ws.stacks_dir, TenantSpec(id=tenant, owner=template.owner, cell=template.cell,
                                               region=template.region))
        s3.put_object(Bucket=resources.bucket, Key=f"{prefix}doc.txt", Body=b"x" * 100)
        batch.append({"PutRequest": {"Item": record_to_item(record)}})
        if len(batch) == 25 or i == stop - 1:
            request = {ws.registry.table: batch}
            while request:
                request = ws.registry.client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
            batch = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200,1000", help="registry records (default 200,1000)")
    parser.add_argument("--parallel", type=int, default=8, help="usage / cost's threads beside 1 (default 8)")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    from common import bench_sandbox

    with bench_sandbox("fleet-calls") as (_, ws, project):
        from tenantctl.models import TenantSpec
        from tenantctl.operations.audit import audit
        from tenantctl.operations.provision import provision
        from tenantctl.operations.usage import estimate_costs, measure_tenants
        from tenantctl.usage.cost import load_prices

        provision(ws, TenantSpec(id="seed"))
        s3 = ws.client("s3")
        counter = CallCounter()
        measured = Measured()
        written = 0
        print(f"{'command':16}{'par':>4}{'R':>6}{'calls':>8}{'floor':>8}{'ratio':>8}{'per rec':>9}{'logins':>8}{'s':>8}"
              f"{'priced':>8}  calls by operation")
        for size in sizes:
            seed(ws, s3, written, size)
            written = size
            records = size + 1  # the seed tenant too
            objects = records  # one object each
            listing = math.ceil(objects / 1000)
            floors = {
                "usage --all": 2 * records + listing + 1,
                "cost --all": 2 * records + listing + 1,
                "audit": records,
            }
            commands = [(name, n, run) for name, run in (
                ("usage --all", lambda n: measure_tenants(ws, None, True, parallel=n)),
                ("cost --all", lambda n: estimate_costs(ws, load_prices(None), all_=True, parallel=n,
                                                        watch=measured.watch())))
                for n in (1, args.parallel)]
            commands.append(("audit", 8, lambda n: audit(ws, parallel=n)))
            measure_tenants(ws, "seed", False)  # untimed: the first connection's imports are no record's
            for name, parallel, run in commands:
                counter.take()
                measured.last = None
                started = time.perf_counter()
                run(parallel)
                ended = time.perf_counter()
                seconds = ended - started
                priced = "-" if measured.last is None else f"{ended - measured.last:.2f}"
                calls, logins = counter.take()
                total = sum(calls.values())
                # Audit's floor: one DescribeKey per record plus the listings it makes (not per record).
                floor = floors[name] + (sum(n for op, n in calls.items() if op != "kms:DescribeKey")
                                        if name == "audit" else 0)
                top = ", ".join(f"{op} {n}" for op, n in calls.most_common(5))
                print(f"{name:16}{parallel:>4}{records:>6}{total:>8}{floor:>8}{total / floor:7.2f}x"
                      f"{total / records:9.2f}{logins:>8}{seconds:8.2f}{priced:>8}  {top}", flush=True)


if __name__ == "__main__":
    main()
