"""moto in server mode: a detached `python -m tenantctl.sandbox.moto_main` (moto's
server with the calls it lacks that tenantctl makes) on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tenantctl.sandbox.process import LOOPBACK, alive, port_accepts, read_pid, terminate, wait_until

MARKER = "moto"  # in both moto_main's command line and that of a sandbox started as `-m moto.server`


class MotoServer:
    def __init__(self, root: Path) -> None:
        self.pid_file = root / "moto.pid"
        self.log = root / "moto.log"

    @staticmethod
    def url(port: int) -> str:
        return f"http://{LOOPBACK}:{port}"

    @property
    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    @property
    def port(self) -> int | None:
        """The port, kept on the pid file's second line."""
        try:
            return int(self.pid_file.read_text().split()[1])
        except (OSError, ValueError, IndexError):
            return None

    def alive(self) -> bool:
        return alive(self.pid, MARKER)

    def start(self, port: int, timeout: float) -> int:
        """Start moto on `port` and wait until it answers HTTP; returns its pid."""
        with self.log.open("ab") as log:
            # A new session: the server survives the CLI that started it and its Ctrl-C.
            proc = subprocess.Popen(
                [sys.executable, "-m", "tenantctl.sandbox.moto_main", "-H", LOOPBACK, "-p", str(port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n{port}\n")
        wait_until(lambda: answers(port), f"moto server on port {port}", timeout, self.log,
                   still_alive=lambda: proc.poll() is None)
        configure(port)
        return proc.pid

    def stop(self) -> None:
        pid = self.pid
        if pid:
            terminate(pid, MARKER)
        self.pid_file.unlink(missing_ok=True)


# moto would run Lambda functions in Docker (there is none): its stand-in
# answers invocations instead, which is all RotateSecret needs to record a
# rotation schedule (tenantctl.sandbox.rotation does the rotation's work).
CONFIG = {"lambda": {"use_docker": False}}


def configure(port: int) -> None:
    request = urllib.request.Request(f"{MotoServer.url(port)}/moto-api/config", data=json.dumps(CONFIG).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=5) as resp:
        resp.read()


def answers(port: int) -> bool:
    """moto's small config endpoint answers: the server is up, not merely the
    socket bound (data.json would dump every resource and grow with the state)."""
    if not port_accepts(port):
        return False
    try:
        with urllib.request.urlopen(f"{MotoServer.url(port)}/moto-api/config", timeout=2) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError):
        return False
