"""A no-change `tenantctl apply` over N tenants against previewing each tenant
(the naive way to learn that nothing changed), measured in the same run on a
fresh sandbox of its own.

    python bench/apply.py                 # 200 pooled tenants (provisioning them takes a while)
    python bench/apply.py --tenants 20    # quick run

Setup (timed, reported, not compared): N pooled tenants written to stacks/ and
provisioned by `apply --parallel P` on the LocalEngine. Then, with nothing
changed:
- ours: `apply` (in this process, then the `tenantctl apply` CLI as CI runs
  it): one registry scan, N stack files read and fingerprinted, no engine call;
- baseline: `engine.preview(tenant)` for each of the N tenants, one after the
  other (the program run under the engine for every tenant, each finding no
  change).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from common import bench_sandbox, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=200, help="tenants in stacks/ (default 200)")
    parser.add_argument("--parallel", type=int, default=max(2, os.cpu_count() or 2),
                        help="apply's --parallel while provisioning (default: CPU count, at least 2)")
    args = parser.parse_args()

    from tenantctl.models import TenantSpec
    from tenantctl.operations.apply import Action, apply
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

        # Ours: a no-change apply, in process and as the CLI.
        again, apply_s = timed(lambda: apply(ws, parallel=args.parallel))
        assert again.count(Action.unchanged) == args.tenants and not again.pending, again.counts
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        cli, cli_s = timed(lambda: subprocess.run(
            [sys.executable, "-m", "tenantctl", "apply", "--json", "--parallel", str(args.parallel)],
            cwd=project, env=env, capture_output=True, text=True))
        if cli.returncode != 0:
            sys.exit(f"tenantctl apply exited {cli.returncode}: {cli.stderr}")

        # Baseline: preview every tenant, one after the other.
        print(f"previewing {args.tenants} tenants one by one ...", file=sys.stderr)
        engine = ws.engine

        def preview_all() -> int:
            changed = 0
            for tenant in tenants:
                changed += engine.preview(tenant).has_changes
            return changed

        changed, preview_s = timed(preview_all)

        n = args.tenants
        print(f"{n} pooled tenants on the sandbox (LocalEngine); provisioning them with apply --parallel "
              f"{args.parallel}: {provision_s:.1f} s ({provision_s / n:.2f} s/tenant)")
        print(f"{'':44}{'seconds':>9}{'ms/tenant':>11}")
        for name, secs in (("no-change apply (in process)", apply_s),
                           ("no-change `tenantctl apply` (CLI process)", cli_s),
                           ("engine.preview of each tenant (baseline)", preview_s)):
            print(f"{name:44}{secs:9.2f}{secs / n * 1000:11.1f}")
        print(f"previews that found changes: {changed} of {n} (expected 0)")
        print(f"ratio (baseline / ours): {preview_s / apply_s:.0f}x faster in process, "
              f"{preview_s / cli_s:.0f}x faster as the CLI")


if __name__ == "__main__":
    main()
