"""Access tokens for the sandbox (`tenantctl dev token`), and where the sandbox
serves the key that verifies them.

The signing key is moto's own Cognito key: moto serves its public half as a
JWKS at ``/<pool>/.well-known/jwks.json`` on the sandbox's endpoint, with no
setup and across sandbox restarts. Its private half ships with moto, so a
token signed with it proves nothing anywhere but on a sandbox: an application
trusts it only when it is pointed at the sandbox's JWKS URL, which is a
loopback address. The aws target refuses to sign (cli/dev_cmd.py).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

ISSUER = "https://sandbox.tenantctl.invalid/dev"
KEY_ID = "dummy"  # the kid moto's JWKS names
# The path segment before /.well-known/jwks.json (moto serves its key for any pool id).
POOL = "tenantctl-sandbox"
MAX_TTL = 24 * 3600


def jwks_url(aws_endpoint_url: str) -> str:
    return f"{aws_endpoint_url.rstrip('/')}/{POOL}/.well-known/jwks.json"


def _private_key() -> Any:
    from jwt.algorithms import RSAAlgorithm
    from moto.utilities.utils import load_resource

    return RSAAlgorithm.from_jwk(load_resource("cognitoidp/resources/jwks-private.json"))


def sign(tenant_id: str, ttl: int = 3600, claims: dict[str, Any] | None = None, tenant_claim: str = "tenant_id",
         now: float | None = None) -> tuple[str, dict[str, Any]]:
    """(token, its claims): RS256, ``iat``/``exp``/``jti``, ``sub`` and the
    tenant claim; ``claims`` are merged over these (``aud``, roles, ...)."""
    if not 1 <= ttl <= MAX_TTL:
        raise ValueError(f"ttl must be between 1 and {MAX_TTL} seconds")
    import jwt

    issued = int(time.time() if now is None else now)
    body: dict[str, Any] = {"iss": ISSUER, "sub": f"dev-user@{tenant_id}", tenant_claim: tenant_id,
                            "iat": issued, "exp": issued + ttl, "jti": uuid.uuid4().hex, **(claims or {})}
    return jwt.encode(body, _private_key(), algorithm="RS256", headers={"kid": KEY_ID}), body
