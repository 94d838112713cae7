"""A no-change `tenantctl apply` over N tenants, what `apply --refresh` and
`refresh --all` cost on top of it, each against a baseline measured in the same
run on a fresh sandbox of its own.

    python bench/apply.py                 # 200 pooled tenants (provisioning them takes a while)
    python bench/apply.py --tenants 20    # quick run

Setup (timed, reported, not compared): N pooled tenants written to stacks/ and
provisioned by `apply --parallel P` on the LocalEngine. Then, with nothing
changed, in interleaved rounds (min and median reported):
- no-change apply: one registry scan, N stack files read and fingerprinted, no
  engine call, no cloud read (the default);
- apply --refresh: the same, plus every tenant read live (no drift: nothing runs);
- refresh --all: every tenant read live through the engine, drift and orphans;
- the floor: the bare boto3 / SQL reads of the same live properties of every
  tenant (the calls the handlers make, by ids known beforehand, the shared
  bucket's lifecycle rules read once, the same number of threads), plus the
  one tag scan: no state, no diff, no engine.
The headline, in interleaved rounds of its own (min and median): the no-change
`tenantctl apply --json` as a CLI process, against its floor as a process of
its own (``--floor-noop``): import boto3 and yaml, scan the registry in 1 MB
pages, read and parse (C loader) every stack file, hash each tenant's spec
with the program's sources and compare it with its record's: the same I/O
and hashing, no CLI framework, models or planning; and the same floor over no
stack file (its fixed part: Python, boto3, the client, the scan). The goal
ratio is that CLI process against previewing each tenant (the old way of
learning "nothing changed"), timed in rounds among the process rounds
(``--preview-rounds``), min against min and median against median; the floor's
own ratio is printed beside it, the least any process doing this work can
reach. The warm in-process figures
above stay as secondary lines, and `tenantctl refresh --all` runs once as a
CLI process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import bench_sandbox, compile_sources, interleaved_processes, timed


def floor_read(clients: Any, record: Any, platform: dict[str, Any], dsn: str) -> None:
    """The live properties a refresh compares, read with the bare calls."""
    import psycopg

    from tenantctl import naming

    res, tid = record.resources, record.tenant_id
    kms, sqs, iam = clients("kms"), clients("sqs"), clients("iam")
    sm, sns, cw = clients("secretsmanager"), clients("sns"), clients("cloudwatch")
    kms.describe_key(KeyId=res.kms_key_arn)
    kms.get_key_rotation_status(KeyId=res.kms_key_arn)
    kms.get_key_policy(KeyId=res.kms_key_arn, PolicyName="default")
    kms.list_resource_tags(KeyId=res.kms_key_arn)
    kms.list_aliases(KeyId=res.kms_key_arn.rsplit("/", 1)[-1])
    for url in (res.queue_url, res.dlq_url):
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        sqs.list_queue_tags(QueueUrl=url)
    role = naming.iam_role_name(tid)
    iam.get_role(RoleName=role)
    iam.get_role_policy(RoleName=role, PolicyName=iam.list_role_policies(RoleName=role)["PolicyNames"][0])
    sm.describe_secret(SecretId=res.store.secret_arn)
    topic = naming.arn(res.region, "sns", platform["account_id"], naming.resource_name(tid, "alarms"))
    sns.get_topic_attributes(TopicArn=topic)
    sns.list_tags_for_resource(ResourceArn=topic)
    cw.describe_alarms(AlarmNames=[naming.resource_name(tid, "dlq-depth")])
    cw.describe_alarms(AlarmNames=[naming.resource_name(tid, "queue-age")])
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        conn.execute("SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c JOIN pg_namespace n "
                     "ON n.oid = c.relnamespace WHERE n.nspname = %s", (res.store.schema_name,)).fetchall()


def floor_all(ws: Any, records: list[Any], platform: dict[str, Any], dsn: str, threads: int) -> None:
    from tenantctl import inventory

    inventory.scan(ws.client, {r.region for r in records}, claimed={r.resources.role_arn for r in records})
    ws.client("s3").get_bucket_lifecycle_configuration(Bucket=platform["bucket"])
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda r: floor_read(ws.client, r, platform, dsn), records))


def floor_noop(project: str, table: str) -> None:
    """What the no-change apply must do at least, as a process of its own (the
    CLI floor): one registry scan, every stack file read, parsed and hashed
    with the program's sources, compared with its record's fingerprint."""

    import boto3
    import yaml
    from common import REPO

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    program = hashlib.sha256()
    for root, pattern in ((REPO / "infra", "*.py"), (REPO / "templates", "*.j2")):  # the program the engine runs
        for path in sorted(root.rglob(pattern)):
            program.update(path.read_bytes())
    ddb, recorded, kwargs = boto3.client("dynamodb"), {}, {"TableName": table}
    while True:
        page = ddb.scan(**kwargs)
        recorded.update({i["tenant_id"]["S"]: i.get("record", {}).get("S", "") for i in page["Items"]})
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    unchanged = 0
    for path in sorted((Path(project) / "stacks").glob("Pulumi.*.yaml")):
        spec = yaml.load(path.read_text(), Loader=loader)["config"].get("tenantctl:tenant")
        if spec is None:
            continue
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode() + program.digest()).hexdigest()
        unchanged += digest in recorded.get(spec["id"], "")  # never equal: the work, not the verdict, is the floor
    print(json.dumps({"stack_files_hashed": unchanged}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=200, help="tenants in stacks/ (default 200)")
    parser.add_argument("--parallel", type=int, default=max(2, os.cpu_count() or 2),
                        help="apply's --parallel while provisioning (default: CPU count, at least 2)")
    parser.add_argument("--threads", type=int, default=8, help="refresh's --parallel, and the floor's (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the compared runs (default 3)")
    parser.add_argument("--cli-rounds", type=int, default=5,
                        help="interleaved rounds of the CLI process against its floor process (default 5)")
    parser.add_argument("--preview-rounds", type=int, default=3,
                        help="rounds of previewing each tenant, among the CLI rounds (default 3)")
    parser.add_argument("--floor-noop", nargs=2, metavar=("PROJECT", "TABLE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.preview_rounds <= args.cli_rounds:
        # The goal's denominator is previewing each tenant: without a round of it there is no ratio to print.
        parser.error("--preview-rounds must be between 1 and --cli-rounds")
    if args.floor_noop:
        floor_noop(*args.floor_noop)
        return

    from tenantctl.models import TenantSpec
    from tenantctl.operations.apply import Action, apply
    from tenantctl.operations.refresh import refresh
    from tenantctl.stackconfig import write_tenant

    with bench_sandbox("apply") as (endpoints, ws, project):
        tenants = [f"bench-{i:04d}" for i in range(args.tenants)]
        for tenant in tenants:
            write_tenant(project / "stacks", TenantSpec(id=tenant, owner="bench"))

        _, platform_s = timed(ws.ensure_platform)
        print(f"sandbox up, platform stack applied in {platform_s:.1f} s; provisioning {args.tenants} tenants "
              f"with --parallel {args.parallel} ...", file=sys.stderr)
        done = 0

        def progress(result) -> None:
            nonlocal done
            done += 1
            if not result.ok:
                print(f"  {result.tenant_id} failed: {result.error}", file=sys.stderr)
            elif done % 20 == 0 or done == args.tenants:
                print(f"  {done}/{args.tenants} provisioned", file=sys.stderr)

        first, provision_s = timed(lambda: apply(ws, parallel=args.parallel, on_result=progress))
        if first.failed:
            sys.exit(f"{len(first.failed)} tenant(s) failed to provision: {first.failed[0].error}")
        # Converged before measuring: an edit of infra/ or templates/ in this checkout
        # during the provisioning changes every fingerprint, and the next apply re-applies.
        for _ in range(3):
            settle = apply(ws, parallel=args.parallel)
            if not settle.pending:
                break
            print(f"  the program changed while provisioning: re-applied {len(settle.pending)} tenant(s)",
                  file=sys.stderr)

        platform = ws.platform_outputs()
        records = [r for r in ws.registry.iter_all() if r.tenant_id in set(tenants)]
        dsn = endpoints.pg_dsn(platform["db_name"])

        def no_change() -> None:
            again = apply(ws, parallel=args.parallel)
            assert again.count(Action.unchanged) == args.tenants and not again.pending, again.counts

        def apply_refresh() -> None:
            again = apply(ws, parallel=args.parallel, refresh=True)
            assert again.count(Action.unchanged) == args.tenants and not again.pending, again.counts

        def refresh_all() -> None:
            drift = refresh(ws, every=True, parallel=args.threads)
            assert drift.exit_code() == 0 and len(drift.tenants) == args.tenants, drift.counts

        runs = {"no-change apply (fingerprint skip)": no_change, "apply --refresh (live read, no drift)":
                apply_refresh, "refresh --all": refresh_all,
                "floor: bare reads of the same properties": lambda: floor_all(ws, records, platform, dsn,
                                                                              args.threads)}
        refresh_all()  # warm: clients made, the providers' modules imported, as in any later run
        times: dict[str, list[float]] = {name: [] for name in runs}
        print(f"{args.rounds} interleaved rounds ...", file=sys.stderr)
        for round_ in range(args.rounds):
            order = list(runs)[round_ % len(runs):] + list(runs)[:round_ % len(runs)]
            for name in order:
                times[name].append(timed(runs[name])[1])

        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        print(compile_sources(), file=sys.stderr)

        cli = [sys.executable, "-m", "tenantctl"]
        empty = project.parent / "no-stack-files"  # the floor's fixed part: start, imports, client, the scan
        empty.mkdir(exist_ok=True)

        def floor_side(project_dir: Path) -> tuple[list[str], dict[str, str]]:
            return [sys.executable, __file__, "--floor-noop", str(project_dir), platform["registry_table"]], {}

        cli_sides = {"`tenantctl apply` (CLI process)": (cli + ["apply", "--json", "--parallel", str(args.parallel)],
                                                         {}),
                     "floor: scan + read + hash (process)": floor_side(project),
                     "floor with no stack file (process)": floor_side(empty)}
        engine = ws.engine
        preview_times: list[float] = []
        changed = 0

        def preview_each() -> None:
            nonlocal changed
            found, seconds = timed(lambda: sum(engine.preview(t).has_changes for t in tenants))
            changed = max(changed, found)
            preview_times.append(seconds)

        # The goal's denominator is timed in rounds too, each between two rounds of the processes, so that
        # a load that comes and goes weighs on both sides of the ratio (once, it decided the ratio alone).
        print(f"{args.cli_rounds} interleaved rounds of the CLI process and its floors, previewing each of the "
              f"{args.tenants} tenants in {args.preview_rounds} of them ...", file=sys.stderr)
        cli_times: dict[str, list[float]] = {side: [] for side in cli_sides}
        for round_ in range(args.cli_rounds):
            order = dict(list(cli_sides.items())[::-1 if round_ % 2 else 1])
            for side, secs in interleaved_processes({"apply": order}, env, project, 1)["apply"].items():
                cli_times[side] += secs
            if round_ < args.preview_rounds:
                preview_each()
        refresh_side = {"cli": (cli + ["refresh", "--all", "--json", "--parallel", str(args.threads)], {})}
        cli_refresh_s = interleaved_processes({"refresh": refresh_side}, env, project, 1)["refresh"]["cli"][0]
        preview_s = statistics.median(preview_times)

        n = args.tenants
        cli_apply, cli_floor = cli_times["`tenantctl apply` (CLI process)"], cli_times[
            "floor: scan + read + hash (process)"]
        preview_lo = min(preview_times)
        print(f"{n} pooled tenants, no change: the CLI process against its floor process, {args.cli_rounds} "
              f"interleaved rounds; the goal ratio against previewing each tenant (min / median "
              f"{preview_lo:.1f} / {preview_s:.1f} s, {len(preview_times)} rounds among them)")
        print(f"{'':44}{'min s':>8}{'median s':>10}{'ms/tenant':>11}{'x floor (min/median)':>24}"
              f"{'/ preview each (min/median)':>30}")
        for name, secs in cli_times.items():
            lo, mid = min(secs), statistics.median(secs)
            print(f"{name:44}{lo:8.2f}{mid:10.2f}{mid / n * 1000:11.1f}{lo / min(cli_floor):13.2f} / "
                  f"{mid / statistics.median(cli_floor):.2f}{lo / preview_lo:19.4f} / {mid / preview_s:.4f}")
        print(f"goal: CLI no-change apply / preview each <= 0.02: {min(cli_apply) / preview_lo:.4f} (min), "
              f"{statistics.median(cli_apply) / preview_s:.4f} (median); the floor alone, the least a process "
              f"doing this work reaches: {min(cli_floor) / preview_lo:.4f} / "
              f"{statistics.median(cli_floor) / preview_s:.4f}")
        print()
        print("secondary: in process (warm), against the bare live reads")
        floor = times["floor: bare reads of the same properties"]
        print(f"{n} pooled tenants on the sandbox (LocalEngine); provisioning them with apply --parallel "
              f"{args.parallel}: {provision_s:.1f} s ({provision_s / n:.2f} s/tenant); reads {args.threads} "
              f"threads; {args.rounds} interleaved rounds")
        print(f"{'':44}{'min s':>8}{'median s':>10}{'ms/tenant':>11}{'x floor (min/median)':>24}")
        for name, secs in times.items():
            lo, mid = min(secs), statistics.median(secs)
            print(f"{name:44}{lo:8.2f}{mid:10.2f}{mid / n * 1000:11.1f}"
                  f"{lo / min(floor):13.2f} / {mid / statistics.median(floor):.2f}")
        for name, secs in (("`tenantctl refresh --all` (CLI process, once)", cli_refresh_s),
                           ("engine.preview of each tenant (median)", preview_s)):
            print(f"{name:44}{secs:8.2f}{'':10}{secs / n * 1000:11.1f}")
        print(f"previews that found changes: {changed} of {n} (expected 0)")
        skip = statistics.median(times["no-change apply (fingerprint skip)"])
        live = statistics.median(times["apply --refresh (live read, no drift)"])
        print(f"--refresh trades the fingerprint skip for a live read: {live / skip:.0f}x the no-change apply "
              f"(median), {preview_s / live:.1f}x faster than previewing each tenant")


if __name__ == "__main__":
    main()
