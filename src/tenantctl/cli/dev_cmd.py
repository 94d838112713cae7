"""`tenantctl dev token`: development helpers for the sandbox."""

import json
from typing import Annotated, Optional

import typer

from tenantctl.cli.options import JsonFlag
from tenantctl.cli.output import print_json

app = typer.Typer(name="dev", no_args_is_help=True, help="Development helpers (sandbox only).")


@app.command("token")
def token(
    tenant_id: Annotated[str, typer.Argument(
        metavar="ID", help="Tenant the token names (in the registry, unless --allow-unknown).")],
    ttl: Annotated[int, typer.Option(help="Seconds until it expires (1..86400).")] = 3600,
    claims: Annotated[Optional[str], typer.Option(
        help='Extra claims as a JSON object, merged over the defaults: \'{"aud": "assistant-api"}\'.')] = None,
    tenant_claim: Annotated[str, typer.Option(
        help="Claim naming the tenant (JWTSettings.tenant_claim).")] = "tenant_id",
    allow_unknown: Annotated[bool, typer.Option(
        "--allow-unknown", help="Sign for an id the registry does not hold (to try the runtime's 404).")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Print an access token for TENANT_ID, signed with the sandbox's key.

    Verify it with `JWTSettings(jwks_url=$TENANT_JWKS_URL, algorithms=("RS256",))`
    (`eval "$(tenantctl sandbox env)"` sets it). Refused on the aws target:
    real tokens come from your IdP. Exit codes: 0 printed, 2 --claims not a JSON
    object, 3 a bad id or the aws target, 6 an id the registry does not hold
    (without --allow-unknown: a typo would get a token meeting only 404s), 7 the
    sandbox cannot start (or, without --allow-unknown, no platform yet).
    """
    from tenantctl.errors import InvalidInput, UsageError
    from tenantctl.naming import broken_rule
    from tenantctl.sandbox import dev_tokens
    from tenantctl.workspace import Workspace

    ws = Workspace()
    if not ws.is_sandbox:
        raise InvalidInput("dev tokens exist only on the sandbox target; on aws, tokens come from your IdP")
    if (rule := broken_rule(tenant_id)) is not None:
        raise InvalidInput(f"tenant id {tenant_id!r} breaks the {rule.name} rule: {rule.explain}")
    try:
        extra = json.loads(claims) if claims else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"Invalid value for '--claims': not JSON ({exc}).") from None
    if not isinstance(extra, dict):
        raise UsageError("Invalid value for '--claims': not a JSON object.")
    if not allow_unknown:
        ws.registry.require(tenant_id)  # NotFound (exit 6), as `status` answers
    try:
        signed, body = dev_tokens.sign(tenant_id, ttl, extra, tenant_claim)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if json_out:
        print_json({"token": signed, "claims": body, "jwks_url": dev_tokens.jwks_url(ws.sandbox.aws_endpoint_url)})
    else:
        typer.echo(signed)
