"""Fleet scale: does per-tenant work stay flat as a cell fills, and do the
fleet-wide reads grow linearly with the fleet? On a fresh sandbox of its own.

    python bench/fleet.py                          # 300 tenants; listings and plan up to 10,000 records
    python bench/fleet.py --n 60 --sizes 500,1000  # quick run

1. **Provision, per tenant, by decile**: N pooled tenants provisioned into the
   default cell one after the other (`provision`, in process: placement, slot
   reservation, registry, LocalEngine, posture check), each followed by the
   floor for one more tenant (bench/provision.py's bare boto3/SQL calls, which
   grow only with what moto and PostgreSQL themselves do as the account
   fills): floor and subject interleaved. Per decile: median and min seconds of
   both, and their ratio. The flatness criterion: last decile / first decile of
   the subject's median <= 1.2 (the old design read and rewrote the bucket's
   whole lifecycle configuration per tenant: 35 ms at 3 rules, 1.3 s at 990).
2. **Listings and the no-change plan over R registry records and stack files**
   (synthetic records written straight into the sandbox registry, active with
   the fingerprint of their stack file, so the plan skips every one):
   `list --limit 50` (one page), the full listing (`iter_all`), `list --all`
   with a filter only the records can apply (`--cell`: one match in ten), and the
   no-change `apply` plan (one registry scan + R stack files read and
   fingerprinted, no engine call). Floors: one raw Scan of 50 items; raw Scan
   pages of the whole table; the raw Scan pages plus reading the R files with
   the C YAML loader. Each measured `--repeat` times, floor and subject
   interleaved; min and median; microseconds per record show linear growth.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def deciles(values: list[float]) -> list[list[float]]:
    n = len(values)
    return [values[i * n // 10:(i + 1) * n // 10] for i in range(10)]


def provision_by_decile(ws: Any, endpoints: Any, n: int) -> None:
    from provision import floor_clients, floor_provision

    from tenantctl.models import TenantSpec
    from tenantctl.operations.provision import provision

    platform = ws.ensure_platform()
    dsn_admin = endpoints.pg_dsn(platform["db_name"])
    client = floor_clients(endpoints)
    subject, floor = [], []
    print(f"provisioning {n} pooled tenants into the default cell (each followed by the floor) ...", file=sys.stderr)
    for i in range(n):
        spec = TenantSpec(id=f"fleet-{i:05d}")
        subject.append(timed(lambda spec=spec: provision(ws, spec)))
        floor.append(timed(lambda tid=f"floor-{i:05d}": floor_provision(client, tid, platform, dsn_admin,
                                                                                endpoints.region)))
        if (i + 1) % max(1, n // 10) == 0:
            print(f"  {i + 1}/{n}", file=sys.stderr)
    # The floor's registry items are its last writes, not records the listings should parse.
    ddb = client("dynamodb")
    for i in range(n):
        ddb.delete_item(TableName=platform["registry_table"], Key={"tenant_id": {"S": f"floor-{i:05d}"}})
    print(f"\n1. provision, seconds per tenant, by decile of {n} tenants in one cell (floor interleaved)")
    print(f"{'decile':>8}{'tenants':>10}{'median':>9}{'min':>8}{'floor med':>11}{'floor min':>11}{'ratio':>8}")
    rows = list(zip(deciles(subject), deciles(floor), strict=True))
    for d, (s, f) in enumerate(rows, 1):
        lo = (d - 1) * n // 10 + 1
        print(f"{d:>8}{f'{lo}-{d * n // 10}':>10}{statistics.median(s):9.3f}{min(s):8.3f}"
              f"{statistics.median(f):11.3f}{min(f):11.3f}{statistics.median(s) / statistics.median(f):7.2f}x")
    first, last = statistics.median(rows[0][0]), statistics.median(rows[-1][0])
    floor_growth = statistics.median(rows[-1][1]) / statistics.median(rows[0][1])
    verdict = "flat" if last / first <= 1.2 else "NOT flat"
    print(f"last decile / first decile (median): {last / first:.2f} ({verdict}: <= 1.2 required); "
          f"the floor's own: {floor_growth:.2f}")


def write_synthetic(ws: Any, project: Path, start: int, stop: int) -> None:
    """Records [start, stop): a stack file each and an active record carrying its fingerprint."""
    from tenant_runtime.registry import record_to_item
    from tenantctl.fingerprint import applied_hash, program_fingerprint
    from tenantctl.models import TenantRecord, TenantSpec, TenantStatus, Tier
    from tenantctl.stackconfig import write_tenant

    program = program_fingerprint(project)
    registry = ws.registry
    batch = []
    for i in range(start, stop):
        spec = TenantSpec(id=f"syn-{i:05d}", owner="bench", cell="default")
        write_tenant(project / "stacks", spec)
        record = TenantRecord(tenant_id=spec.id, tier=Tier.pooled, status=TenantStatus.active, region=spec.region,
                              owner=spec.owner, version=1, spec_hash=applied_hash(spec, project, program))
        batch.append({"PutRequest": {"Item": record_to_item(record)}})
        if len(batch) == 25 or i == stop - 1:
            request = {registry.table: batch}
            while request:
                request = registry.client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
            batch = []


def listings(ws: Any, project: Path, sizes: list[int], repeat: int, existing: int) -> None:
    import boto3

    from tenantctl.operations.apply import Action, apply
    from tenantctl.stackconfig import Loader, tenant_stack_files

    registry = ws.registry
    raw = boto3.client("dynamodb")

    def raw_scan(**kwargs: Any) -> int:
        count, args = 0, {"TableName": registry.table, **kwargs}
        while True:
            page = raw.scan(**args)
            count += len(page.get("Items", []))
            if "LastEvaluatedKey" not in page or "Limit" in kwargs:
                return count
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def read_files() -> int:
        import yaml

        files = tenant_stack_files(project / "stacks")
        for path in files.values():
            yaml.load(path.read_text(), Loader=Loader)  # noqa: S506 - a safe loader
        return raw_scan() + len(files)

    def no_change_plan() -> None:
        summary = apply(ws, preview=True, parallel=1)
        assert not summary.pending and summary.count(Action.unchanged) == len(summary.results), summary.counts

    pairs = {
        "list --limit 50": (lambda: registry.list(limit=50), lambda: raw_scan(Limit=50)),
        "full listing": (lambda: sum(1 for _ in registry.iter_all()), raw_scan),
        # `list --all --cell C` (a filter the table cannot apply): one pass of the 1 MB pages, as the floor.
        "filtered list --all": (lambda: registry.list(limit=None, where=lambda r: r.tenant_id.endswith("7")),
                                raw_scan),
        "no-change apply plan": (no_change_plan, read_files),
    }
    print(f"\n2. fleet-wide reads over R registry records and stack files ({repeat} runs each, interleaved with "
          "the floor; seconds; us/record from the medians)")
    print(f"{'':22}{'R':>7}{'median':>9}{'min':>8}{'us/rec':>8}{'floor med':>11}{'floor min':>11}{'ratio':>8}")
    written = 0
    for size in sizes:
        write_synthetic(ws, project, written, size - existing)
        written = size - existing
        for name, (subject, floor) in pairs.items():
            s, f = [], []
            for _ in range(repeat):
                s.append(timed(subject))
                f.append(timed(floor))
            med = statistics.median(s)
            print(f"{name:22}{size:>7}{med:9.3f}{min(s):8.3f}{med / size * 1e6:8.1f}{statistics.median(f):11.3f}"
                  f"{min(f):11.3f}{med / statistics.median(f):7.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="tenants provisioned into one cell (default 300)")
    parser.add_argument("--sizes", default="1000,2500,5000,10000",
                        help="registry records / stack files for the listings (default 1000,2500,5000,10000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each listing (default 3)")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    from common import bench_sandbox

    with bench_sandbox("fleet") as (endpoints, ws, project):
        if args.n:
            provision_by_decile(ws, endpoints, args.n)
        else:  # `--n 0`: the listings alone, on the registry the platform makes
            ws.ensure_platform()
        existing = args.n  # the provisioned tenants are records and stack files too
        listings(ws, project, [s for s in sizes if s > existing], args.repeat, existing)


if __name__ == "__main__":
    main()
