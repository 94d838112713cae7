"""Tenant resolution: a verified JWT -> TenantContext.

PyJWT checks the signature, ``exp`` (required), ``nbf``/``iat`` when present,
and audience/issuer when configured; the tenant comes from one configurable
claim (a dotted path reaches nested claims, e.g. ``https://example.com/tenant``
or ``org.tenant``). Only then is the registry consulted.
"""

from __future__ import annotations

from typing import Any

import jwt
from pydantic import BaseModel, ConfigDict, model_validator

from tenant_runtime.context import TenantContext
from tenant_runtime.errors import TenantMismatch, Unauthenticated
from tenant_runtime.registry import RegistryReader


class JWTSettings(BaseModel):
    """How tokens are verified. Give ``key`` (HMAC secret or PEM public key) or
    ``jwks_url`` (keys fetched and cached by PyJWT's PyJWKClient)."""

    model_config = ConfigDict(frozen=True)

    key: str | None = None
    jwks_url: str | None = None
    algorithms: tuple[str, ...] = ("RS256",)
    audience: str | tuple[str, ...] | None = None
    issuer: str | None = None
    tenant_claim: str = "tenant_id"
    leeway: float = 0.0

    @model_validator(mode="after")
    def _one_key_source(self) -> "JWTSettings":
        if (self.key is None) == (self.jwks_url is None):
            raise ValueError("give exactly one of key or jwks_url")
        if "none" in (a.lower() for a in self.algorithms):
            raise ValueError("algorithm 'none' is never accepted")
        return self


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization must be 'Bearer <token>'")
    return token.strip()


class TenantResolver:
    def __init__(self, settings: JWTSettings, registry: RegistryReader) -> None:
        self.settings, self.registry = settings, registry
        self._jwks = jwt.PyJWKClient(settings.jwks_url) if settings.jwks_url else None

    def verify(self, token: str) -> dict[str, Any]:
        s = self.settings
        try:
            key: Any = self._jwks.get_signing_key_from_jwt(token).key if self._jwks else s.key
            options: dict[str, Any] = {"require": ["exp"]}
            if s.audience is None:
                options["verify_aud"] = False
            if s.issuer is not None:
                options["require"].append("iss")
            return jwt.decode(
                token, key, algorithms=list(s.algorithms),
                audience=list(s.audience) if isinstance(s.audience, tuple) else s.audience,
                issuer=s.issuer, leeway=s.leeway, options=options,
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None

    def tenant_of(self, claims: dict[str, Any]) -> str:
        value: Any = claims
        claim = self.settings.tenant_claim
        # An exact (possibly URL-like) claim name wins over a dotted path.
        if claim in claims:
            value = claims[claim]
        else:
            for part in claim.split("."):
                value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, str) or not value:
            raise Unauthenticated(f"token has no {claim!r} claim naming a tenant")
        return value

    def resolve(self, token: str, addressed_tenant: str | None = None) -> TenantContext:
        """Verify the token, load the tenant (active only) and, when the request
        addresses a tenant, refuse a different one with TenantMismatch."""
        claims = self.verify(token)
        tenant_id = self.tenant_of(claims)
        if addressed_tenant is not None and addressed_tenant != tenant_id:
            # Checked before the registry so a foreign id is not even looked up.
            raise TenantMismatch(tenant_id, addressed_tenant, "tenant")
        record = self.registry.get(tenant_id)
        return TenantContext(tenant_id=tenant_id, record=record, subject=claims.get("sub"), claims=claims)

    def resolve_header(self, authorization: str | None, addressed_tenant: str | None = None) -> TenantContext:
        return self.resolve(bearer_token(authorization), addressed_tenant)

