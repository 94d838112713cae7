"""`tenantctl sandbox up | down | status | env`: the local moto server + PostgreSQL."""

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tenantctl.cli.options import JsonFlag
from tenantctl.cli.output import console, err_console, print_json, table

if TYPE_CHECKING:
    from tenantctl.sandbox import Sandbox, SandboxEndpoints, SandboxStatus

app = typer.Typer(name="sandbox", no_args_is_help=True,
                  help="The local sandbox: moto server + embedded PostgreSQL.")


StateDir = Annotated[
    Optional[Path],
    typer.Option("--state-dir", help="Sandbox state directory (default: $TENANTCTL_SANDBOX_DIR, target config, "
                                     "$TENANTCTL_HOME, else .tenantctl/ in the project directory)."),
]


def _sandbox(state_dir: Path | None) -> "Sandbox":
    from tenantctl.project import find_root
    from tenantctl.sandbox import Sandbox, resolve_state_dir
    from tenantctl.target import load_target

    # Same directory `provision` uses when no flag is given (Workspace.sandbox).
    return Sandbox(resolve_state_dir(state_dir or load_target().sandbox.state_dir, find_root()))


def _print_endpoints(endpoints: "SandboxEndpoints") -> None:
    table("sandbox endpoints", ["what", "where"], [
        ("AWS (moto)", endpoints.aws_endpoint_url),
        ("region", endpoints.region),
        ("PostgreSQL", f"{endpoints.pg_host}:{endpoints.pg_port}"),
        ("superuser", f"{endpoints.pg_user} (password in {endpoints.state_dir}/sandbox/endpoints.json)"),
        ("database", endpoints.pg_database),
        ("pg tools", endpoints.pg_bin_dir),
        ("state dir", endpoints.state_dir),
    ])


def _print_status(status: "SandboxStatus") -> None:
    table(f"sandbox in {status.state_dir}", ["service", "state", "pid", "endpoint", "log"], [
        (s.name, "[green]running[/]" if s.alive else "[red]stopped[/]", s.pid, s.endpoint, s.log)
        for s in status.services
    ])


@app.command("up")
def up(
    json_out: JsonFlag = False,
    state_dir: StateDir = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each server to be ready.")] = 60.0,
) -> None:
    """Start the sandbox in the background (harmless when it already runs) and print its endpoints."""
    box = _sandbox(state_dir)
    with err_console.status("starting the sandbox (moto server + PostgreSQL)…"):
        endpoints = box.up(timeout)
    if box.reset:  # on stderr in both modes: stdout is the endpoints (or their JSON) only
        err_console.print("note: the sandbox was restarted and starts clean (moto keeps no state across restarts)",
                          highlight=False)
    if json_out:
        print_json(endpoints)
        return
    _print_endpoints(endpoints)
    console.print('point boto3 at it with: [bold]eval "$(tenantctl sandbox env)"[/]', highlight=False)


@app.command("down")
def down(json_out: JsonFlag = False, state_dir: StateDir = None) -> None:
    """Stop both servers. The next `up` starts clean: moto keeps no state across restarts."""
    status = _sandbox(state_dir).down()
    if json_out:
        print_json(status)
    else:
        _print_status(status)


@app.command("status")
def status(json_out: JsonFlag = False, state_dir: StateDir = None) -> None:
    """What runs where: each server's state, pid, endpoint and log."""
    result = _sandbox(state_dir).status()
    if json_out:
        print_json(result)
    else:
        _print_status(result)


@app.command("env")
def env(state_dir: StateDir = None, json_out: JsonFlag = False) -> None:
    """Shell `export` lines pointing AWS SDKs, psql and tenant_runtime at the running sandbox.

    AWS_ENDPOINT_URL, AWS_* credentials and region (moto), DATABASE_URL (the
    superuser, on the default cell's database, where the pooled tenants'
    schemas are: `postgres` until the platform is up), TENANT_REGISTRY_TABLE, TENANT_REVOCATION_TABLE,
    TENANT_GATEWAY_SECRET_ARN (the shared pool's login) and TENANT_JWKS_URL
    (verifies `tenantctl dev token`). Use: eval "$(tenantctl sandbox env)".
    """
    from tenant_runtime.gateway import SECRET_ENV
    from tenant_runtime.registry import TABLE_ENV as REGISTRY_ENV
    from tenant_runtime.revocation import TABLE_ENV as REVOCATION_ENV
    from tenantctl import naming
    from tenantctl.errors import TargetUnavailable
    from tenantctl.sandbox.dev_tokens import jwks_url

    endpoints = _sandbox(state_dir).endpoints()
    if endpoints is None:
        raise TargetUnavailable("the sandbox is not running: start it with `tenantctl sandbox up`")
    # psql users want the pooled tenants' schemas: the default cell's database, once the platform made it.
    database = naming.cell_database(naming.DEFAULT_CELL)
    if not endpoints.has_database(database):
        err_console.print(f"note: database {database} (the default cell's) does not exist yet: DATABASE_URL names "
                          f"{endpoints.pg_database}; `tenantctl platform up` (or a first provision) creates it",
                          markup=False, highlight=False)
        database = endpoints.pg_database
    variables = {**endpoints.aws_env(), "DATABASE_URL": endpoints.pg_dsn(database),
                 REGISTRY_ENV: naming.REGISTRY_TABLE, REVOCATION_ENV: naming.REVOCATION_TABLE,
                 SECRET_ENV: naming.GATEWAY_SECRET, "TENANT_JWKS_URL": jwks_url(endpoints.aws_endpoint_url)}
    if json_out:
        print_json(variables)
        return
    for name, value in variables.items():
        typer.echo(f"export {name}={shlex.quote(value)}")
