"""Tenant resolution: a verified JWT -> TenantContext.

PyJWT checks the signature, ``exp`` (required), ``nbf``/``iat`` when present,
and audience/issuer when configured; the tenant comes from one configurable
claim (a dotted path reaches nested claims, e.g. ``https://example.com/tenant``
or ``org.tenant``). Only then is the registry consulted.

Verification is cached: a token that verified is remembered (by its exact
text) for ``verified_cache_ttl`` seconds at most and never past its ``exp``;
a hit re-checks ``exp``/``nbf`` against the clock, so an expired token is
refused as before. A PEM key is loaded once, not per request. Revocation
(``tenant_runtime.revocation``) is checked on every resolution, cache hit or
not, so the cache never outlives a revocation by more than the list's bound.

A request may address one workspace of its tenant (``resolve(..., workspace=)``;
the ASGI glue reads the ``X-Workspace`` header). The token must list it in the
``workspaces_claim`` (a list of names, or one name; a dotted path like the
tenant claim): else ``WorkspaceForbidden`` (403), raised before the revocation
list, the registry or any store, KMS or S3 call; a workspace the tenant's
record lacks is refused the same way. No workspace: the tenant-level context.

The addressed tenant may come from several places of one request (the path,
the host name, an ``X-Tenant-Id`` header): every one of them must name the
token's tenant, else ``TenantMismatch`` (403) naming the source.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jwt
from pydantic import BaseModel, ConfigDict, model_validator

from tenant_runtime.blocking import may_block
from tenant_runtime.cache import TTLCache
from tenant_runtime.context import TenantContext, from_registry
from tenant_runtime.errors import JwksUnavailable, TenantMismatch, Unauthenticated, WorkspaceForbidden
from tenant_runtime.registry import RegistryReader
from tenant_runtime.revocation import RevocationList

# Where a request named the tenant it addresses: (source, tenant id) pairs,
# e.g. [("the path", "acme"), ("the X-Tenant-Id header", "acme")]. A bare string
# is one source, "the request".
Addressed = str | Iterable[tuple[str, str]] | None


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
    workspaces_claim: str = "workspaces"  # the workspaces the subject may use (a list, or one name)
    leeway: float = 0.0
    verified_cache_ttl: float = 60.0  # 0 disables the cache of verified tokens
    verified_cache_size: int = 10_000

    @model_validator(mode="after")
    def _one_key_source(self) -> JWTSettings:
        if (self.key is None) == (self.jwks_url is None):
            raise ValueError("give exactly one of key or jwks_url")
        if "none" in (a.lower() for a in self.algorithms):
            raise ValueError("algorithm 'none' is never accepted")
        return self


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("missing Authorization header", bearer_error=None)
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization must be 'Bearer <token>'", bearer_error="invalid_request")
    return token.strip()


class _JWKClient(jwt.PyJWKClient):
    """PyJWT's JWKS client, its one network call marked for the async API."""

    def fetch_data(self) -> Any:
        may_block()
        return super().fetch_data()


def check_addressed(tenant_id: str, addressed: Addressed) -> None:
    """Every tenant the request addressed is ``tenant_id``, else TenantMismatch (403)."""
    if addressed is None or addressed == tenant_id:  # none, or the one id: nothing to go through
        return
    pairs = [("the request", addressed)] if isinstance(addressed, str) else addressed
    for source, named in pairs:
        if named != tenant_id:
            raise TenantMismatch(tenant_id, named, "tenant", source=source)


def _prepared_key(settings: JWTSettings) -> Any:
    """The verification key, loaded once when every allowed algorithm takes the
    same kind of key (PyJWT would parse a PEM string on every decode)."""
    if settings.key is None:
        return None
    algorithms = jwt.algorithms.get_default_algorithms()
    kinds = {type(algorithms[a]) for a in settings.algorithms if a in algorithms}
    if len(kinds) != 1 or len(settings.algorithms) != len([a for a in settings.algorithms if a in algorithms]):
        return settings.key
    try:
        return algorithms[settings.algorithms[0]].prepare_key(settings.key)
    except jwt.PyJWTError as exc:
        raise ValueError(f"JWT key unusable for {settings.algorithms[0]}: {exc}") from None


class _Verified(NamedTuple):
    claims: dict[str, Any]
    contexts: dict[str | None, TenantContext]  # workspace (None: the tenant) -> the last context issued
    valid_from: float  # nbf - leeway (-inf without nbf): the token is valid from then ...
    valid_until: float  # exp + leeway: ... until then (excluded)
    tenant: Any  # the tenant claim's value (``tenant_of`` checks it names a tenant)


class TenantResolver:
    def __init__(self, settings: JWTSettings, registry: RegistryReader,
                 clock: Callable[[], float] = time.time, revocations: RevocationList | None = None) -> None:
        self.settings, self.registry, self.clock, self.revocations = settings, registry, clock, revocations
        self._jwks = _JWKClient(settings.jwks_url) if settings.jwks_url else None
        self._key = _prepared_key(settings)
        # Per verified token, one entry: its claims and the last context issued for
        # it per workspace addressed (a request repeating a token gets that context
        # again while the registry's record is the same, not one made per call).
        self._verified: TTLCache[_Verified] | None = (
            TTLCache(settings.verified_cache_size, settings.verified_cache_ttl, clock)
            if settings.verified_cache_ttl > 0 else None)

    def verify(self, token: str) -> dict[str, Any]:
        return dict(self._verified_entry(token).claims)  # a caller's edits never reach the cache

    def _verified_entry(self, token: str) -> _Verified:
        if self._verified is not None:
            hit, entry = self._verified.get(token)
            if hit and entry is not None and entry.valid_from <= self.clock() < entry.valid_until:
                return entry
        claims, leeway = self._verify(token), self.settings.leeway
        entry = _Verified(claims, {}, float(claims["nbf"]) - leeway if "nbf" in claims else -math.inf,
                          float(claims["exp"]) + leeway, _claim(claims, self.settings.tenant_claim))
        now = self.clock()
        if not entry.valid_from <= now < entry.valid_until:  # the resolver's clock has the last word (tests move it)
            raise Unauthenticated("invalid token: expired or not yet valid")
        if self._verified is not None:
            self._verified.put(token, entry, min(self.settings.verified_cache_ttl, entry.valid_until - now))
        return entry

    def _verify(self, token: str) -> dict[str, Any]:
        if not token or not isinstance(token, str):  # a missing header's None: no credentials (RFC 6750: no error code)
            raise Unauthenticated("no token: pass the request's bearer token", bearer_error=None)
        s = self.settings
        try:
            key: Any = self._jwks.get_signing_key_from_jwt(token).key if self._jwks else self._key
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
        except jwt.PyJWKClientConnectionError as exc:
            raise JwksUnavailable(f"token keys unreachable at {s.jwks_url}: {exc}") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None

    def tenant_of(self, claims: dict[str, Any], value: Any = None) -> str:
        """The tenant the claims name; ``value``: the tenant claim, read from them before."""
        if value is None:
            value = _claim(claims, self.settings.tenant_claim)
        if not isinstance(value, str) or not value:
            raise Unauthenticated(f"token has no {self.settings.tenant_claim!r} claim naming a tenant")
        return value

    def workspaces_of(self, claims: dict[str, Any]) -> frozenset[str]:
        """The workspaces the token lists (none when the claim is absent or malformed)."""
        value = _claim(claims, self.settings.workspaces_claim)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            return frozenset()
        return frozenset(v for v in value if isinstance(v, str) and v)

    def check_workspace(self, claims: dict[str, Any], tenant_id: str, workspace: str | None) -> None:
        """A request addressing ``workspace`` is refused unless its token lists it."""
        if workspace is not None and workspace not in self.workspaces_of(claims):
            raise WorkspaceForbidden(tenant_id, workspace,
                                     f"the token's {self.settings.workspaces_claim!r} claim does not list it")

    def resolve(self, token: str, addressed_tenant: Addressed = None, workspace: str | None = None) -> TenantContext:
        """Verify the token, refuse it when revoked, load the tenant (active
        only) and, when the request addresses a tenant (one id, or (source, id)
        pairs), refuse any other with TenantMismatch. ``workspace``: the
        workspace the request addresses (the token must list it)."""
        claims, contexts, _, _, tenant = self._verified_entry(token)  # claims: read here, copied into the context
        # The checks' calls only where they can refuse (one request's hit runs none):
        # a tenant claim that is no non-empty string, another tenant addressed, a workspace.
        tenant_id = tenant if type(tenant) is str and tenant else self.tenant_of(claims, tenant)
        if addressed_tenant is not None and addressed_tenant != tenant_id:
            # Checked before the registry so a foreign id is not even looked up.
            check_addressed(tenant_id, addressed_tenant)
        if workspace is not None:
            self.check_workspace(claims, tenant_id, workspace)
        if self.revocations is not None:
            self.revocations.check(claims, tenant_id)
        last = contexts.get(workspace)  # one per workspace the token lists, at most
        ctx = from_registry(self.registry, tenant_id, subject=claims.get("sub"), claims=claims, reuse=last,
                            workspace=workspace)
        if ctx is not last:
            contexts[workspace] = ctx
        return ctx

    def resolve_header(self, authorization: str | None, addressed_tenant: Addressed = None,
                       workspace: str | None = None) -> TenantContext:
        return self.resolve(bearer_token(authorization), addressed_tenant, workspace)


def _claim(claims: dict[str, Any], claim: str) -> Any:
    """A claim by name; an exact (possibly URL-like) name wins over a dotted path."""
    if claim in claims:
        return claims[claim]
    value: Any = claims
    for part in claim.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value

