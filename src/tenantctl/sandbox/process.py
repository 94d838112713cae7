"""Background processes that outlive the CLI: free ports, pid files, liveness
and bounded readiness waits."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from tenantctl.errors import TargetUnavailable

LOOPBACK = "127.0.0.1"


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers bind (werkzeug and PostgreSQL set SO_REUSEADDR): a killed
        # server's connections in TIME_WAIT must not push a restart to a new port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None, host: str = LOOPBACK) -> int:
    """`preferred` when it is still free (a restart keeps its endpoints), else one the kernel picks."""
    if preferred and port_is_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int | None, marker: str) -> bool:
    """The process exists, is not a zombie, and its command line contains
    `marker` (so a recycled pid of an unrelated process is not taken for ours)."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return False
        return marker in " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _reap(pid: int) -> None:
    # Only our own children can be reaped; anything else is init's business.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def terminate(pid: int, marker: str, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; harmless when it is already gone.
    A zombie counts as gone: its parent (maybe another process) reaps it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not alive(pid, marker):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(pid, marker):
                return
            time.sleep(0.05)
    if alive(pid, marker):
        raise TargetUnavailable(f"process {pid} ({marker}) survived SIGKILL")


def wait_until(ready: Callable[[], bool], what: str, timeout: float, log: Path | None = None,
               still_alive: Callable[[], bool] | None = None) -> None:
    """Poll `ready` until it holds; TargetUnavailable (with the log's tail) when
    the process died or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if ready():
            return
        if still_alive is not None and not still_alive():
            raise TargetUnavailable(f"{what} exited during start-up{_tail(log)}")
        if time.monotonic() >= deadline:
            raise TargetUnavailable(f"{what} not ready after {timeout:.0f}s{_tail(log)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def _tail(log: Path | None, lines: int = 5) -> str:
    if log is None or not log.exists():
        return ""
    last = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-lines:]
    return f" (see {log}: {' | '.join(last)})" if last else f" (see {log})"
