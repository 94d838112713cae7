"""What the PostgreSQL providers share: the target's Secrets Manager and an
admin connection made from the RDS-managed admin secret."""

from __future__ import annotations

import json
from typing import Any


def secrets_client(region: str, role_arn: str | None = None):
    from tenantctl import aws  # bounded backoff with jitter; endpoint from AWS_ENDPOINT_URL on the sandbox

    # The secrets live in the cell's account: its role, when it has one.
    return aws.client("secretsmanager", region=region, role_arn=role_arn)


def secret_json(region: str, secret_arn: str, role_arn: str | None = None) -> dict[str, Any]:
    value = secrets_client(region, role_arn).get_secret_value(SecretId=secret_arn)["SecretString"]
    return json.loads(value)


def admin_connect(props: dict[str, Any], database: str | None = None):
    """Autocommit connection as the admin of ``props`` (region, host, port,
    database, admin_secret_arn, optional account_role_arn), to ``database``
    (default: props["database"])."""
    import psycopg

    admin = secret_json(props["region"], props["admin_secret_arn"], props.get("account_role_arn"))
    return psycopg.connect(host=props["host"], port=int(props["port"]), dbname=database or props["database"],
                           user=admin["username"], password=admin["password"], autocommit=True,
                           connect_timeout=10)
