"""What the PostgreSQL providers share: the target's Secrets Manager and an
admin connection made from the RDS-managed admin secret."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# A role is the server's, not one database's: two stores of one server (a move
# between cells that share it) change the tenant's role from two databases,
# which the ACL's advisory lock (a database's own) does not serialise, and
# PostgreSQL fails one of two transactions writing the same catalog row at once
# ("tuple concurrently updated"). The providers' SQL is idempotent: it runs again.
CATALOG_RACE = "tuple concurrently updated"
# A script re-run on a store that serves (a move re-applies the current one)
# takes each table's lock in the tables' order, an append `messages` before
# `conversations`: PostgreSQL ends one of the two as a deadlock's victim, the
# script's whole transaction rolled back. It runs again as for a catalog race.
CATALOG_RACE_TRIES = 8


def secrets_client(region: str, role_arn: str | None = None):
    from tenantctl import aws  # bounded backoff with jitter; endpoint from AWS_ENDPOINT_URL on the sandbox

    # The secrets live in the cell's account: its role, when it has one.
    return aws.client("secretsmanager", region=region, role_arn=role_arn)


def secret_json(region: str, secret_arn: str, role_arn: str | None = None) -> dict[str, Any]:
    value = secrets_client(region, role_arn).get_secret_value(SecretId=secret_arn)["SecretString"]
    return json.loads(value)


# The admin logins this process has read, by (region, secret ARN, account role).
_ADMINS: dict[tuple[str, str, str | None], dict[str, Any]] = {}


def admin_connect(props: dict[str, Any], database: str | None = None):
    """Autocommit connection as the admin of ``props`` (region, host, port,
    database, admin_secret_arn, optional account_role_arn), to ``database``
    (default: props["database"]). The admin secret is read once per process
    (N tenants provisioned in a row share their cell's), and read again when
    the login it holds is refused: rotated since."""
    import psycopg

    key = (props["region"], props["admin_secret_arn"], props.get("account_role_arn"))
    known = _ADMINS.get(key)
    try:
        return _connect_as(known or _read_admin(key), props, database)
    except psycopg.OperationalError:
        if known is None:  # read just now: a refusal is not a stale secret
            raise
        return _connect_as(_read_admin(key), props, database)


def _read_admin(key: tuple[str, str, str | None]) -> dict[str, Any]:
    _ADMINS[key] = secret_json(*key)
    return _ADMINS[key]


def _connect_as(admin: dict[str, Any], props: dict[str, Any], database: str | None):
    import psycopg

    from tenantctl.tenant_schema_sql import report_ended_sessions

    conn = psycopg.connect(host=props["host"], port=int(props["port"]), dbname=database or props["database"],
                           user=admin["username"], password=admin["password"], autocommit=True,
                           connect_timeout=10)
    report_ended_sessions(conn)  # a tenant's session the ACL lock ended is named to the operator
    return conn


def retry_catalog_race(fn: Callable[[], T]) -> T:
    """``fn()`` (idempotent SQL), run again when PostgreSQL refused it for a
    catalog row another transaction wrote at the same time, or ended it as a
    deadlock's victim."""
    import psycopg

    for attempt in range(1, CATALOG_RACE_TRIES):
        try:
            return fn()
        except (psycopg.errors.InternalError_, psycopg.errors.DeadlockDetected) as exc:
            if isinstance(exc, psycopg.errors.InternalError_) and CATALOG_RACE not in str(exc):
                raise
            time.sleep(0.02 * attempt + random.random() * 0.05)  # apart: the next try is not at once too
    return fn()  # the last try: its error is the caller's
