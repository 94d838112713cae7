"""Run the assistant example on the sandbox, in one command:

    python examples/assistant/run.py [--port 8000] [--tenants acme,globex]

Starts the sandbox (moto + PostgreSQL) when it is not running, provisions the
tenants (idempotent: the second run reuses them), points the runtime at the
sandbox (what `eval "$(tenantctl sandbox env)"` would export), prints a dev
token per tenant with curl lines to try, and serves the app with its worker
until Ctrl-C. Shared-pool mode is on (the platform's gateway role).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def sandbox_environment() -> dict[str, str]:
    """The variables `tenantctl sandbox env` prints, for this process and the app."""
    from tenant_runtime.gateway import SECRET_ENV
    from tenant_runtime.registry import TABLE_ENV as REGISTRY_ENV
    from tenant_runtime.revocation import TABLE_ENV as REVOCATION_ENV
    from tenantctl import naming
    from tenantctl.sandbox import ensure_running
    from tenantctl.sandbox.dev_tokens import jwks_url
    from tenantctl.target import load_target

    endpoints = ensure_running(load_target().sandbox.state_dir)
    return {**endpoints.aws_env(), REGISTRY_ENV: naming.REGISTRY_TABLE, REVOCATION_ENV: naming.REVOCATION_TABLE,
            SECRET_ENV: naming.GATEWAY_SECRET, "TENANT_JWKS_URL": jwks_url(endpoints.aws_endpoint_url)}


def main() -> None:
    parser = argparse.ArgumentParser(description="the assistant example on the sandbox")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--tenants", default="acme,globex", help="comma-separated tenant ids to provision and serve")
    parser.add_argument("--project", type=Path, default=REPO, help="the tenantctl project (stacks/ gets the tenants)")
    args = parser.parse_args()
    tenants = [t for t in args.tenants.split(",") if t]

    from tenantctl.target import load_target

    if load_target().kind != "sandbox":
        sys.exit("this example runs on the sandbox target only (unset TENANTCTL_TARGET)")
    print("starting the sandbox ...", file=sys.stderr)
    os.environ.update(sandbox_environment())

    from tenantctl.models import TenantSpec
    from tenantctl.operations.provision import provision
    from tenantctl.sandbox.dev_tokens import sign
    from tenantctl.workspace import Workspace

    ws = Workspace(project_dir=args.project, cwd=args.project)
    for tenant in tenants:
        record = ws.registry.get(tenant) if ws.platform_outputs().get("registry_table") else None
        if record is None or record.status.value != "active":
            print(f"provisioning tenant {tenant} (the first one also brings the platform up) ...", file=sys.stderr)
            provision(ws, TenantSpec(id=tenant))
    os.environ["ASSISTANT_WORKER_TENANTS"] = ",".join(tenants)

    base = f"http://127.0.0.1:{args.port}"
    print(f"\nassistant on {base} (Ctrl-C stops it); tokens valid for 1 h:\n")
    for tenant in tenants:
        token, _ = sign(tenant)
        print(f"export TOKEN_{tenant.upper().replace('-', '_')}={token}")
    first = tenants[0].upper().replace("-", "_")
    print(f"""
curl -s -X PUT -H "Authorization: Bearer $TOKEN_{first}" -H 'content-type: application/json' \\
     -d '{{"title": "Q3 report", "body": "Churn fell to 2%; revenue grew 8%.", "metadata": {{"team": "sales"}}}}' \\
     {base}/tenants/{tenants[0]}/documents/q3
curl -s -H "Authorization: Bearer $TOKEN_{first}" "{base}/tenants/{tenants[0]}/search?q=churn&facet=team"
curl -s -X POST -H "Authorization: Bearer $TOKEN_{first}" -H 'content-type: application/json' \\
     -d '{{"content": "What did the Q3 report say about churn?"}}' {base}/tenants/{tenants[0]}/conversations/c1/messages
curl -s -H "Authorization: Bearer $TOKEN_{first}" {base}/tenants/{tenants[0]}/conversations/c1/messages
curl -s -H "Authorization: Bearer $TOKEN_{first}" {base}/tenants/{tenants[-1]}/conversations   # 403
""")
    import uvicorn

    sys.path.insert(0, str(HERE))
    uvicorn.run("app:app", host="127.0.0.1", port=args.port, app_dir=str(HERE), log_level="info")


if __name__ == "__main__":
    main()
