"""prowler against the sandbox, with tenants of both tiers (.ci/prowler runs it).

Starts a sandbox of its own, provisions two pooled prefix twins (acme,
acme-corp) and a dedicated tenant (globex) with the real operation, runs
prowler's AWS checks for the services tenantctl creates against the moto
server, with .ci/prowler-mutelist.yaml (each entry says why), and fails when a
finding is FAIL and not muted. ``--report`` rewrites the result table between
the markers of docs/security-scanners.md.

Usage: python .ci/prowler_scan.py --prowler .venv-prowler/bin/prowler [--report docs/security-scanners.md]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("kms", "s3", "sqs", "iam", "secretsmanager", "ec2", "vpc", "rds", "dynamodb", "cloudwatch", "sns",
            "awslambda")
TENANTS = (("acme", "pooled"), ("acme-corp", "pooled"), ("globex", "dedicated"))
BEGIN, END = "<!-- prowler-results:begin -->", "<!-- prowler-results:end -->"


def provision_tenants(base: Path):
    from tenantctl.models import TenantSpec
    from tenantctl.operations.provision import provision
    from tenantctl.sandbox import Sandbox
    from tenantctl.workspace import Workspace

    box = Sandbox(base / "sandbox")
    endpoints = box.up()
    os.environ.update(endpoints.aws_env())
    os.environ["TENANTCTL_SANDBOX_DIR"] = str(endpoints.state_dir)
    project = base / "project"
    (project / "stacks").mkdir(parents=True)
    shutil.copy(ROOT / "Pulumi.yaml", project / "Pulumi.yaml")
    ws = Workspace(project_dir=project, cwd=project)
    for tenant_id, tier in TENANTS:
        record, _ = provision(ws, TenantSpec.model_validate({"id": tenant_id, "tier": tier}))
        print(f"provisioned {tenant_id} ({tier}): {record.status.value}", file=sys.stderr)
    return box, endpoints


def run_prowler(prowler: str, endpoints, mutelist: Path, out: Path) -> list[dict]:
    env = {**os.environ, **endpoints.aws_env(), "AWS_DEFAULT_REGION": endpoints.region}
    started = time.monotonic()
    done = subprocess.run(
        [prowler, "aws", "--region", endpoints.region, "--service", *SERVICES, "--mutelist-file", str(mutelist),
         "-M", "json-ocsf", "-o", str(out), "-F", "scan", "-b", "-z", "--log-level", "ERROR",
         "--log-file", str(out / "prowler.log")],
        env=env, capture_output=True, text=True, timeout=3600)
    print(f"prowler exited {done.returncode} after {time.monotonic() - started:.0f} s", file=sys.stderr)
    results = out / "scan.ocsf.json"
    if not results.exists():
        sys.exit(f"prowler wrote no results: {done.stderr[-2000:]}")
    return json.loads(results.read_text())


def mute_reasons(findings: list[dict], mutelist: Path) -> str:
    """The muted findings by mutelist entry: its kind (EMULATOR GAP, ACCOUNT,
    DECISION: its description's first word(s)), the check, how many."""
    import re

    import yaml

    entries = yaml.safe_load(mutelist.read_text())["Mutelist"]["Accounts"]["*"]["Checks"]
    counted: collections.Counter = collections.Counter()
    for f in findings:
        if _outcome(f) != "muted":
            continue
        check = f["metadata"]["event_code"]
        entry = next((e for pattern, e in entries.items() if re.fullmatch(pattern, check)), {})
        counted[(entry.get("Description", "?").split(":")[0], check)] += 1
    lines = ["| muted as | check | findings |", "|---|---|---|"]
    lines += [f"| {kind} | `{check}` | {n} |" for (kind, check), n in sorted(counted.items())]
    return "\n".join(lines)


def _outcome(finding: dict) -> str:
    """pass | fail | manual, or muted: a FAIL the mutelist covers (prowler marks
    every finding it matches as suppressed, passes included: those stay passes)."""
    status = finding["status_code"].lower()
    return "muted" if status == "fail" and finding.get("status") == "Suppressed" else status


def summarise(findings: list[dict]) -> tuple[str, list[str]]:
    """The markdown table (per service: pass / muted / fail) and the unmuted failures."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures = []
    for f in findings:
        service = f["resources"][0]["group"]["name"] if f.get("resources") else "?"
        outcome = _outcome(f)
        counts[service][outcome] += 1
        if outcome == "fail":
            resource = f["resources"][0].get("uid") or f["resources"][0].get("name")
            failures.append(f"{f['metadata']['event_code']} {resource}: {f.get('status_detail', '')}")
    lines = ["| service | pass | fail | muted (.ci/prowler-mutelist.yaml) | manual |", "|---|---|---|---|---|"]
    for service in sorted(counts):
        c = counts[service]
        lines.append(f"| {service} | {c['pass']} | {c['fail']} | {c['muted']} | {c['manual']} |")
    total = collections.Counter()
    for c in counts.values():
        total.update(c)
    lines.append(f"| **all** | {total['pass']} | {total['fail']} | {total['muted']} | {total['manual']} |")
    return "\n".join(lines), failures


def write_report(report: Path, table: str, muted: str, failures: list[str], version: str) -> None:
    text = report.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    stamp = time.strftime("%Y-%m-%d")
    body = (f"{BEGIN}\nprowler {version}, {stamp}, on the sandbox with "
            f"{', '.join(f'{t} ({k})' for t, k in TENANTS)}:\n\n{table}\n\n{muted}\n\n"
            + ("Unmuted failures:\n\n" + "\n".join(f"- {f}" for f in failures) + "\n" if failures
               else "No unmuted failure.\n")
            + END)
    report.write_text(head + body + tail)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prowler", default=str(ROOT / ".venv-prowler" / "bin" / "prowler"))
    parser.add_argument("--mutelist", type=Path, default=ROOT / ".ci" / "prowler-mutelist.yaml")
    parser.add_argument("--report", type=Path, help="rewrite the results table in this markdown file")
    parser.add_argument("--out", type=Path, help="keep prowler's output here")
    parser.add_argument("--results", type=Path, help="summarise this scan.ocsf.json of an earlier run instead")
    args = parser.parse_args()
    if args.results:
        return report(json.loads(args.results.read_text()), args)

    base = Path(tempfile.mkdtemp(prefix="tenantctl-prowler-"))
    base.chmod(0o755)  # the sandbox PostgreSQL runs as another user
    out = args.out or base / "prowler"
    out.mkdir(parents=True, exist_ok=True)
    box = None
    try:
        box, endpoints = provision_tenants(base)
        findings = run_prowler(args.prowler, endpoints, args.mutelist, out)
    finally:
        if box is not None:
            box.down()
    if args.out is None:
        shutil.rmtree(base, ignore_errors=True)
    return report(findings, args)


def report(findings: list[dict], args: argparse.Namespace) -> int:
    table, failures = summarise(findings)
    print(table)
    for failure in failures:
        print(f"FAIL {failure}")
    if args.report:
        version = findings[0]["metadata"]["product"]["version"] if findings else "?"
        write_report(args.report, table, mute_reasons(findings, args.mutelist), failures, version)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
