"""Everything a drill talks to, gathered once: boto3 clients, the database
admin credentials, where pg_dump/pg_restore live, and the registry."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tenantctl.errors import TargetUnavailable
from tenantctl.naming import DEFAULT_CELL


@dataclass
class DrillContext:
    s3: Any
    kms: Any
    admin_user: str
    admin_password: str
    registry: Any = None            # RegistryWriter (restore-after-deprovision re-activates the record)
    rds: Any = None                 # dedicated tenants' snapshots (on the sandbox: of moto's instances)
    pg_bin_dir: Path | None = None  # where pg_dump / pg_restore live; None: search
    is_sandbox: bool = True
    # The tenantctl Workspace (engine, stacks/): a restore after deprovision
    # re-provisions through it, and backups record the committed spec from it.
    workspace: Any = None
    # The workspace of the tenant the drill is of (None: the tenant itself); see tenantctl.drills.scope.
    scope: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def connect(self, host: str, port: int, database: str, autocommit: bool = True):
        import psycopg

        from tenantctl.tenant_schema_sql import report_ended_sessions

        conn = psycopg.connect(host=host, port=port, dbname=database, user=self.admin_user,
                               password=self.admin_password, autocommit=autocommit,
                               connect_timeout=10, application_name="tenantctl-drill")
        report_ended_sessions(conn)  # a restore re-applies the schema script, which takes the ACL lock
        return conn


def admin_credentials(secrets: Any, secret_arn: str) -> tuple[str, str]:
    data = json.loads(secrets.get_secret_value(SecretId=secret_arn)["SecretString"])
    return data.get("username") or data["user"], data["password"]


def context_from_workspace(ws: Any, record: Any = None) -> DrillContext:
    """The drill context of a tenant (``record``): its cell's admin credentials
    and clients in its cell's account and its own region, so its backups are
    written and read in that region only (residency). Without a record, the
    home cell's."""
    cell = record.cell if record is not None else DEFAULT_CELL
    outputs = ws.cell_outputs(cell)
    arn = outputs.get("db_admin_secret_arn")
    if not arn:
        raise TargetUnavailable(f"cell {cell!r} has no db_admin_secret_arn output: cannot back up as admin")
    clients = ws.clients_for(record) if record is not None else ws.cell_clients(cell)
    user, password = admin_credentials(clients("secretsmanager"), arn)
    pg_bin = ws.sandbox.pg_bin_dir if ws.is_sandbox else None
    return DrillContext(
        s3=clients("s3"), kms=clients("kms"), admin_user=user, admin_password=password,
        registry=ws.registry, rds=clients("rds"),
        pg_bin_dir=Path(pg_bin) if pg_bin else None, is_sandbox=ws.is_sandbox, workspace=ws,
    )
