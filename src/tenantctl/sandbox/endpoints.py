"""Where the sandbox listens: the contract between `tenantctl sandbox`, the
LocalEngine, the drills and the integration tests."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict

# moto accepts any credentials; these are the values its docs use.
FAKE_AWS_KEY = "testing"
DEFAULT_REGION = "us-east-1"
DEFAULT_STATE_DIR = ".tenantctl"


def resolve_state_dir(state_dir: str | Path | None = None, project_dir: Path | None = None) -> Path:
    """The state directory: explicit value, else $TENANTCTL_SANDBOX_DIR, else
    $TENANTCTL_HOME, else `.tenantctl/` in the project directory (``project_dir``,
    by default the nearest Pulumi.yaml above the working directory): a command
    run in a subdirectory reaches the project's sandbox, not a new empty one."""
    chosen = state_dir or os.environ.get("TENANTCTL_SANDBOX_DIR") or os.environ.get("TENANTCTL_HOME")
    if not chosen:
        from tenantctl.project import find_root

        chosen = (project_dir or find_root()) / DEFAULT_STATE_DIR
    return Path(chosen).expanduser().resolve()


def _is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SandboxEndpoints(BaseModel):
    """A running sandbox: moto's URL and the PostgreSQL superuser's connection."""

    model_config = ConfigDict(frozen=True)

    aws_endpoint_url: str
    region: str = DEFAULT_REGION
    pg_host: str = "127.0.0.1"
    pg_port: int
    pg_user: str = "postgres"
    pg_password: str
    pg_database: str = "postgres"
    pg_bin_dir: Path  # pg_dump / pg_restore / psql matching the server
    state_dir: Path

    def aws_env(self) -> dict[str, str]:
        """Environment that points boto3 (and anything honouring AWS_ENDPOINT_URL) at moto."""
        return {
            "AWS_ENDPOINT_URL": self.aws_endpoint_url,
            "AWS_ACCESS_KEY_ID": FAKE_AWS_KEY,
            "AWS_SECRET_ACCESS_KEY": FAKE_AWS_KEY,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def pg_dsn(self, database: str | None = None) -> str:
        """A libpq URI for the superuser, on `database` (default: pg_database)."""
        user = quote(self.pg_user, safe="")
        password = quote(self.pg_password, safe="")
        db = quote(database or self.pg_database, safe="")
        return f"postgresql://{user}:{password}@{self.pg_host}:{self.pg_port}/{db}"

    def has_database(self, database: str) -> bool:
        """The server holds ``database`` (asked as the superuser, on pg_database)."""
        import psycopg

        with psycopg.connect(self.pg_dsn(), connect_timeout=5) as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is not None

    @property
    def aws_port(self) -> int:
        return urlsplit(self.aws_endpoint_url).port or 80

    def is_loopback(self) -> bool:
        """Both endpoints on this machine (127.0.0.0/8, ::1 or localhost): the
        LocalEngine refuses anything else."""
        return _is_loopback_host(urlsplit(self.aws_endpoint_url).hostname) and _is_loopback_host(self.pg_host)
