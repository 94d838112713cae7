"""A Secrets Manager rotation of a tenant's database password, on the sandbox.

On AWS, Secrets Manager runs the rotation function (AWS's single-user
rotation for RDS PostgreSQL, deployed by infra.components.credential_rotation)
through four steps. moto records the schedule but cannot run the function (no
Docker), so on the sandbox the same four steps run here, against moto's
Secrets Manager and the sandbox PostgreSQL, as the function does them:

1. ``createSecret``: a new random password, stored as the AWSPENDING version;
2. ``setSecret``: log in as the tenant role (with the pending, current or
   previous password, whichever works) and set the pending password on itself;
3. ``testSecret``: log in with the pending password;
4. ``finishSecret``: move AWSCURRENT to the pending version (AWSPREVIOUS follows
   the old one) and clear AWSPENDING.

Between steps 2 and 4 the role's password is AWSPENDING's while AWSCURRENT
still holds the old one: the window the runtime's store covers by retrying a
refused login with AWSPENDING. ``steps`` lets a test stop inside it.

A suspended tenant's roles are NOLOGIN, so step 2 has no session to set the
password from (the function uses no admin credential, and must not give the
login back). PostgreSQL checks the password before the role's LOGIN, so a
refusal that says the role "is not permitted to log in" proves the password
authenticates: step 2 then stops with ``RotationDeferred`` saying so, the
AWSPENDING version left as AWS's function leaves it, and ``tenantctl resume``
finishes that rotation once the logins are back (``operations.deferred_rotation``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

CURRENT, PENDING, PREVIOUS = "AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
# What AWS's function excludes from generated passwords (quotes, slash, @, backslash).
EXCLUDED_CHARACTERS = "/@\"'\\"


# What PostgreSQL answers a login whose password authenticated, as a NOLOGIN role.
NOLOGIN_REFUSAL = "is not permitted to log in"


class RotationDeferred(PermissionError):
    """The role's password authenticates but the role may not log in (its tenant
    is suspended): the rotation waits, pending, for ``tenantctl resume``."""


def _value(client: Any, secret_id: str, stage: str, version: str | None = None) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    args: dict[str, Any] = {"SecretId": secret_id, "VersionStage": stage}
    if version:
        args["VersionId"] = version
    try:
        return json.loads(client.get_secret_value(**args)["SecretString"])
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise


def _login(secret: dict[str, Any]) -> Any:
    import psycopg

    return psycopg.connect(host=secret["host"], port=int(secret["port"]), dbname=secret["dbname"],
                           user=secret["username"], password=secret["password"], autocommit=True, connect_timeout=10)


def create_secret(client: Any, secret_id: str, token: str) -> None:
    if _value(client, secret_id, PENDING, token) is not None:
        return  # a retried step: the pending version exists
    current = _value(client, secret_id, CURRENT)
    if current is None:
        raise LookupError(f"{secret_id} has no AWSCURRENT value to rotate")
    password = client.get_random_password(PasswordLength=32, ExcludeCharacters=EXCLUDED_CHARACTERS)["RandomPassword"]
    client.put_secret_value(SecretId=secret_id, ClientRequestToken=token, VersionStages=[PENDING],
                            SecretString=json.dumps({**current, "password": password}))


def set_secret(client: Any, secret_id: str, token: str) -> None:
    import psycopg
    from psycopg import sql

    pending = _value(client, secret_id, PENDING, token)
    closed = None  # the stage whose password authenticated as a NOLOGIN role
    for stage in (PENDING, CURRENT, PREVIOUS):
        known = pending if stage == PENDING else _value(client, secret_id, stage)
        if known is None:
            continue
        try:
            conn = _login(known)
        except psycopg.OperationalError as exc:
            closed = closed or (stage if NOLOGIN_REFUSAL in str(exc) else None)
            continue
        with conn:
            if stage != PENDING:  # already set when the pending password logs in
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(pending["username"]), sql.Literal(pending["password"])))
        return
    if closed is not None:
        tags = {t["Key"]: t["Value"] for t in client.describe_secret(SecretId=secret_id).get("Tags", [])}
        tenant = tags.get("tenant", "ID")  # every tenant and workspace secret is tagged with its tenant
        raise RotationDeferred(
            f"{secret_id}: role {pending['username']} is NOLOGIN (its tenant is suspended): its {closed} password "
            "authenticates, but no login may set the new one; the rotation stays pending (AWSPENDING) until "
            f"`tenantctl resume {tenant}` finishes it")
    raise PermissionError(f"{secret_id}: none of the pending, current or previous passwords logs in")


def test_secret(client: Any, secret_id: str, token: str) -> None:
    with _login(_value(client, secret_id, PENDING, token)) as conn:
        conn.execute("SELECT 1")


def finish_secret(client: Any, secret_id: str, token: str) -> None:
    stages = client.describe_secret(SecretId=secret_id).get("VersionIdsToStages", {})
    current = next((v for v, labels in stages.items() if CURRENT in labels), None)
    if current != token:
        client.update_secret_version_stage(SecretId=secret_id, VersionStage=CURRENT, MoveToVersionId=token,
                                           RemoveFromVersionId=current)
    client.update_secret_version_stage(SecretId=secret_id, VersionStage=PENDING, RemoveFromVersionId=token)
    # moto (5.2) moves the labels but not the version GetSecretValue returns when
    # no stage is named (AWS returns AWSCURRENT's): put the current value once
    # more, which moto does make the default. An extra version, same value.
    default = json.loads(client.get_secret_value(SecretId=secret_id)["SecretString"])
    current = _value(client, secret_id, CURRENT)
    if default != current:
        client.put_secret_value(SecretId=secret_id, SecretString=json.dumps(current))


_STEP = {"createSecret": create_secret, "setSecret": set_secret, "testSecret": test_secret,
         "finishSecret": finish_secret}


def rotate(client: Any, secret_id: str, steps: Sequence[str] = STEPS, token: str | None = None) -> str:
    """Run ``steps`` of one rotation of ``secret_id`` (``client``: Secrets Manager
    of the sandbox) and return its token, the new version's id, to continue it.
    Refuses a secret whose rotation is not configured, as Secrets Manager does."""
    if not client.describe_secret(SecretId=secret_id).get("RotationEnabled"):
        raise ValueError(f"{secret_id}: rotation is not enabled")
    token = token or str(uuid.uuid4())
    for step in steps:
        _STEP[step](client, secret_id, token)
    return token
