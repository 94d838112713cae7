"""Password rotations a suspension deferred, finished by `tenantctl resume`.

The 30-day rotation (AWS's single-user function; ``tenantctl.sandbox.rotation``
on the sandbox) logs in as the role to set its new password. A suspended
tenant's roles are NOLOGIN, so a rotation that comes due while it is suspended
stops at ``setSecret`` with its AWSPENDING version created and the role's
password unchanged: nothing is weakened (the login stays closed, AWSCURRENT
still holds the password the role has), and the credential nobody can use is
not rotated until it can be. Once ``resume`` gave the logins back, each of the
tenant's secrets (its own, each workspace's) holding such a pending version
has that rotation finished: on the sandbox its four steps run here, on AWS
Secrets Manager is asked to run it again under the pending version's token.
"""

from __future__ import annotations

from typing import Any

from tenantctl.engines.base import EventSink, phase
from tenantctl.errors import TargetUnavailable
from tenantctl.models import TenantRecord

PENDING, CURRENT = "AWSPENDING", "AWSCURRENT"


def tenant_secrets(record: TenantRecord) -> dict[str, str]:
    """The tenant's database secrets by owner (``tenant``, ``workspace WS``)."""
    if record.resources is None:
        return {}
    return {"tenant": record.resources.store.secret_arn, **{
        f"workspace {name}": ws.store.secret_arn for name, ws in sorted(record.resources.workspaces.items())}}


def pending_token(secrets: Any, arn: str) -> str | None:
    """The version a rotation left pending (AWSPENDING on another version than AWSCURRENT)."""
    stages = secrets.describe_secret(SecretId=arn).get("VersionIdsToStages", {})
    return next((version for version, labels in stages.items() if PENDING in labels and CURRENT not in labels), None)


def finish_deferred(ws: Any, record: TenantRecord, on_event: EventSink | None = None) -> str | None:
    """Finish each rotation of the tenant's secrets left pending (call it with
    its logins given back); what was done, in words, or None when none was.
    TargetUnavailable (exit 7) naming the secret when one fails: `resume` run
    again retries it (the pending version stays)."""
    secrets = ws.clients_for(record)("secretsmanager")
    finished = []
    for owner, arn in tenant_secrets(record).items():
        token = pending_token(secrets, arn)
        if token is None:
            continue
        phase(on_event, record.tenant_id, f"finishing the password rotation of the {owner}'s secret a "
                                          "suspension deferred")
        try:
            if ws.is_sandbox:
                from tenantctl.sandbox import rotation

                rotation.rotate(secrets, arn, token=token)
            else:  # Secrets Manager runs the function again on the pending version
                secrets.rotate_secret(SecretId=arn, ClientRequestToken=token)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the rotation pending: said, and retried
            raise TargetUnavailable(f"tenant {record.tenant_id!r} serves again, but the password rotation of its "
                                    f"{owner}'s secret {arn} that its suspension deferred did not finish ({exc}); "
                                    f"`tenantctl resume {record.tenant_id}` tries again") from None
        finished.append(owner)
    if not finished:
        return None
    verb = "finished" if ws.is_sandbox else "restarted (Secrets Manager runs it)"
    return f"deferred password rotation {verb} ({', '.join(finished)})"
