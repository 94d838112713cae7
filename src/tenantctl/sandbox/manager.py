"""The sandbox as a whole: moto + PostgreSQL under `<state_dir>/sandbox/`.

    <state_dir>/sandbox/endpoints.json   SandboxEndpoints of the running sandbox (0600: holds the password)
    <state_dir>/sandbox/moto.pid|.log    moto server: "pid\\nport", its output
    <state_dir>/sandbox/postgres/        data/, password, postgres.log
    <state_dir>/sandbox/lock             serialises up/down across processes (parallel `apply`)
"""

from __future__ import annotations

import fcntl
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from tenantctl.files import write_atomic
from tenantctl.sandbox.endpoints import DEFAULT_REGION, SandboxEndpoints, resolve_state_dir
from tenantctl.sandbox.moto_server import MotoServer
from tenantctl.sandbox.moto_server import answers as moto_answers
from tenantctl.sandbox.postgres import SUPERUSER, PostgresServer
from tenantctl.sandbox.process import LOOPBACK, free_port, port_accepts, wait_until

START_TIMEOUT = 60.0


class ServiceStatus(BaseModel):
    name: Literal["moto", "postgres"]
    alive: bool
    pid: int | None = None
    endpoint: str | None = None
    log: Path


class SandboxStatus(BaseModel):
    state_dir: Path
    running: bool  # every service alive
    services: list[ServiceStatus]
    endpoints: SandboxEndpoints | None = None


class Sandbox:
    def __init__(self, state_dir: str | Path | None = None) -> None:
        self.state_dir = resolve_state_dir(state_dir)
        self.root = self.state_dir / "sandbox"
        self.endpoints_file = self.root / "endpoints.json"
        self.moto = MotoServer(self.root)
        self.reset = False  # set by up() when a restart discarded earlier state

    @cached_property
    def postgres(self) -> PostgresServer:
        # Finding binaries can fail (TargetUnavailable): only when PostgreSQL is needed.
        return PostgresServer(self.root)

    # -- lifecycle -------------------------------------------------------------

    def up(self, timeout: float = START_TIMEOUT) -> SandboxEndpoints:
        """Start whatever is not running (stale pid files are replaced) and
        return the endpoints; a running sandbox is returned as it is."""
        with self._lock():
            current = self.endpoints()
            if current is not None and self._answers(current):
                return current
            previous = self._read_endpoints()
            started: list[MotoServer | PostgresServer] = []
            try:
                moto_port = self._ensure_moto(previous.aws_port if previous else None, timeout, started)
                if self.moto in started:
                    self._forget_aws_world()
                pg_port = self._ensure_postgres(previous.pg_port if previous else None, timeout, started)
            except BaseException:
                # Nothing half-started: what this call started is stopped again.
                for service in reversed(started):
                    service.stop()
                raise
            endpoints = SandboxEndpoints(
                aws_endpoint_url=MotoServer.url(moto_port), region=DEFAULT_REGION,
                pg_host=LOOPBACK, pg_port=pg_port, pg_user=SUPERUSER, pg_password=self.postgres.password(),
                pg_database="postgres", pg_bin_dir=self.postgres.bin_dir, state_dir=self.state_dir,
            )
            self._write_endpoints(endpoints)
            return endpoints

    def down(self) -> SandboxStatus:
        """Stop both servers. moto keeps nothing across restarts, so the next
        `up` starts from a clean sandbox (engine state and databases included)."""
        with self._lock():
            self.moto.stop()
            if (self.root / "postgres" / "data").exists():
                self.postgres.stop()
            self.endpoints_file.unlink(missing_ok=True)
        return self.status()

    def _forget_aws_world(self) -> None:
        """A moto server starts empty (server mode keeps nothing across restarts).
        Engine state and the PostgreSQL cluster describe resources that no longer
        exist next to it, so they go too: the sandbox restarts as one clean unit."""
        engine_state = self.state_dir / "local-engine"
        data = self.root / "postgres" / "data"
        self.reset = engine_state.exists() or data.exists()
        if engine_state.exists():
            shutil.rmtree(engine_state)
        if data.exists():
            self.postgres.stop()
            shutil.rmtree(data)

    # -- inspection ------------------------------------------------------------

    def endpoints(self) -> SandboxEndpoints | None:
        """The endpoints while both servers run, else None."""
        endpoints = self._read_endpoints()
        if endpoints is None or not self.moto.alive() or not self._pg_alive():
            return None
        return endpoints

    def status(self) -> SandboxStatus:
        endpoints = self._read_endpoints()
        moto_alive = self.moto.alive()
        pg_alive = self._pg_alive()
        pg_home = self.root / "postgres"
        services = [
            ServiceStatus(name="moto", alive=moto_alive, pid=self.moto.pid if moto_alive else None,
                          endpoint=MotoServer.url(self.moto.port) if moto_alive and self.moto.port else None,
                          log=self.moto.log),
            ServiceStatus(name="postgres", alive=pg_alive, pid=self.postgres.pid if pg_alive else None,
                          endpoint=f"{LOOPBACK}:{self.postgres.port()}" if pg_alive else None,
                          log=pg_home / "postgres.log"),
        ]
        running = moto_alive and pg_alive
        return SandboxStatus(state_dir=self.state_dir, running=running, services=services,
                             endpoints=endpoints if running else None)

    # -- internals -------------------------------------------------------------

    def _ensure_moto(self, preferred: int | None, timeout: float, started: list) -> int:
        port = self.moto.port if self.moto.alive() else None
        if port is not None:
            # Running, maybe still starting (its starter was interrupted): wait for it, never replace it.
            wait_until(lambda: moto_answers(port), f"moto server on port {port}", timeout, self.moto.log,
                       still_alive=self.moto.alive)
            return port
        self.moto.stop()  # clears a stale pid file
        port = free_port(preferred)
        self.moto.start(port, timeout)
        started.append(self.moto)
        return port

    def _ensure_postgres(self, preferred: int | None, timeout: float, started: list) -> int:
        port = self.postgres.port() if self._pg_alive() else None
        if port is not None:
            wait_until(lambda: self.postgres.accepts(port), f"PostgreSQL on port {port}", timeout,
                       self.postgres.log, still_alive=self.postgres.alive)
            return port
        port = free_port(preferred)
        self.postgres.start(port, timeout)
        started.append(self.postgres)
        return port

    def _pg_alive(self) -> bool:
        # No cluster yet: not running, and no need to look for binaries.
        return (self.root / "postgres" / "data" / "postmaster.pid").exists() and self.postgres.alive()

    @staticmethod
    def _answers(endpoints: SandboxEndpoints) -> bool:
        return port_accepts(endpoints.aws_port) and port_accepts(endpoints.pg_port)

    def _read_endpoints(self) -> SandboxEndpoints | None:
        try:
            return SandboxEndpoints.model_validate_json(self.endpoints_file.read_text())
        except (OSError, ValidationError):
            return None

    def _write_endpoints(self, endpoints: SandboxEndpoints) -> None:
        write_atomic(self.endpoints_file, endpoints.model_dump_json(indent=2) + "\n", mode=0o600)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_running(state_dir: str | Path | None = None, timeout: float = START_TIMEOUT) -> SandboxEndpoints:
    """The sandbox's endpoints, starting it when needed (what commands with no
    target configured call)."""
    box = Sandbox(state_dir)
    endpoints = box.up(timeout)
    if box.reset:
        sys.stderr.write(f"note: the sandbox in {box.state_dir} was restarted and starts clean "
                         "(moto keeps no state across restarts)\n")
    return endpoints
