"""`tenantctl token revoke`: deny access tokens the runtime would otherwise accept."""

from datetime import UTC, datetime
from typing import Annotated, Optional

import typer

from tenantctl.cli.options import JsonFlag
from tenantctl.cli.output import console, print_json, table
from tenantctl.timestamps import utc_second

app = typer.Typer(name="token", no_args_is_help=True, help="Access tokens: revocation.")


def parse_time(value: str | None, option: str) -> datetime | None:
    """ISO-8601 (naive = UTC), unix seconds, or `now`."""
    from tenantctl.errors import UsageError

    if value is None:
        return None
    if value == "now":
        return datetime.now(UTC)
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"Invalid value for '{option}': {value!r} is not ISO-8601 (2026-05-01T12:00:00Z), unix "
                         "seconds or 'now'.") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command("revoke")
def revoke(
    jti: Annotated[Optional[str], typer.Option("--jti", help="Revoke the one token with this jti claim.")] = None,
    until: Annotated[Optional[str], typer.Option(
        help="--jti: the token's exp (ISO-8601 or unix seconds); the entry expires then. "
             "Default: 24 h from now.")] = None,
    tenant: Annotated[Optional[str], typer.Option("--tenant", help="Revoke tokens of this tenant ...")] = None,
    before: Annotated[Optional[str], typer.Option(
        help="--tenant: ... issued (iat) before this time (ISO-8601, unix seconds or 'now'; default now).")] = None,
    reason: Annotated[str, typer.Option(help="Why (kept with the entry).")] = "",
    json_out: JsonFlag = False,
) -> None:
    """Revoke one token (--jti) or everything a tenant was issued before a time
    (--tenant ID --before T, e.g. after a breach).

    Runtimes re-read the denylist every 5 s (their revocation_refresh) and
    refuse a revoked token with 401 from then on, cached tokens included.
    Refresh tokens are the IdP's: revoke the session there too, so no new
    access token is issued. Exit codes: 0 written, 2 options missing, mixed up or
    malformed, 3 a time in the past (--until) or future (--before), 6 unknown
    tenant, 7 the revocation table cannot be reached.
    """
    from tenantctl.errors import UsageError
    from tenantctl.operations.revoke import revoke_jti, revoke_tenant
    from tenantctl.workspace import Workspace

    if (jti is None) == (tenant is None):
        raise UsageError("Missing option: give exactly one of '--jti' or '--tenant'.")
    if jti is not None and before is not None or tenant is not None and until is not None:
        raise UsageError("Option '--until' goes with '--jti', '--before' with '--tenant'.")
    ws = Workspace()
    if jti is not None:
        result = revoke_jti(ws, jti, parse_time(until, "--until"), reason)
    else:
        result = revoke_tenant(ws, tenant, parse_time(before, "--before"), reason)
    if json_out:
        print_json(result)
        return
    rows = [("revoked", f"{result.kind} {result.key}"), ("at", utc_second(result.revoked_at))]
    if result.not_before:
        rows.append(("tokens issued before", utc_second(result.not_before)))
    rows += [("entry expires", utc_second(result.expires_at)), ("table", result.table)]
    table("revocation", ["what", "value"], rows)
    console.print(f"runtimes refuse it within {result.bound_seconds:g} s (their revocation_refresh)")
