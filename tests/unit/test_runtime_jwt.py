"""Token -> TenantContext: signature, expiry, audience, issuer, claim name, mismatch."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from runtime_fixtures import Registry, record

from tenant_runtime.auth import JWTSettings, TenantResolver, bearer_token
from tenant_runtime.errors import TenantInactive, TenantMismatch, TenantNotFound, Unauthenticated, WorkspaceForbidden
from tenant_runtime.models import TenantStatus


def _pem_pair():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


PRIVATE, PUBLIC = _pem_pair()
OTHER_PRIVATE, _ = _pem_pair()


def token(claims=None, key=PRIVATE, alg="RS256", **extra):
    body = {"sub": "u1", "tenant_id": "acme", "aud": "api", "iss": "https://idp", "exp": time.time() + 60}
    body.update(claims or {})
    body.update(extra)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg)


@pytest.fixture
def resolver():
    settings = JWTSettings(key=PUBLIC, algorithms=("RS256",), audience="api", issuer="https://idp")
    return TenantResolver(settings, Registry(record("acme"), record("beta"), record("old", TenantStatus.suspended)))


def test_valid_token_resolves_to_its_tenant(resolver):
    ctx = resolver.resolve(token(), "acme")
    assert (ctx.tenant_id, ctx.subject, ctx.resources.prefix) == ("acme", "u1", "tenants/acme/")


def test_token_for_another_tenant_is_a_mismatch_before_any_lookup(resolver):
    with pytest.raises(TenantMismatch) as err:
        resolver.resolve(token(), "beta")
    assert err.value.status_code == 403 and (err.value.caller, err.value.addressed) == ("acme", "beta")
    assert resolver.registry.asked == []


@pytest.mark.parametrize("bad, match", [
    (lambda: token(key=OTHER_PRIVATE), "Signature verification failed"),
    (lambda: token(exp=time.time() - 5), "expired"),
    (lambda: token(exp=None), 'missing the "exp"'),
    (lambda: token(aud="other"), "(?i)audience"),
    (lambda: token(iss="https://evil"), "issuer"),
    (lambda: token(iss=None), 'missing the "iss"'),
    (lambda: token(tenant_id=None), "no 'tenant_id' claim"),
    (lambda: token(tenant_id=""), "no 'tenant_id' claim"),
    (lambda: token(tenant_id=["acme"]), "no 'tenant_id' claim"),
    (lambda: token(tenant_id=7), "no 'tenant_id' claim"),
    (lambda: token(alg="HS256", key="shared-secret-that-is-32-bytes-long"), "alg value is not allowed"),
    (lambda: jwt.encode({"tenant_id": "acme", "exp": time.time() + 60}, None, algorithm="none"),
     "alg value is not allowed"),
])
def test_unverifiable_tokens_are_unauthenticated(resolver, bad, match):
    with pytest.raises(Unauthenticated, match=match) as err:
        resolver.resolve(bad(), "acme")
    assert err.value.status_code == 401


def test_a_repeated_token_is_refused_every_time_like_the_first(resolver):
    """A verified token is cached: its tenant claim, the addressed tenant and the
    workspace are still checked on every resolution (a cache hit skips none)."""
    named_none = token(tenant_id=["acme"])
    acme = token()
    for _ in range(2):
        with pytest.raises(Unauthenticated, match="no 'tenant_id' claim"):
            resolver.resolve(named_none, "acme")
        with pytest.raises(TenantMismatch, match="beta"):
            resolver.resolve(acme, "beta")
        asked = len(resolver.registry.asked)
        with pytest.raises(WorkspaceForbidden, match="does not list it"):  # before the registry
            resolver.resolve(acme, "acme", workspace="ws1")
        assert len(resolver.registry.asked) == asked
        assert resolver.resolve(acme, "acme").tenant_id == "acme"


def test_inactive_and_unknown_tenants_are_refused(resolver):
    with pytest.raises(TenantInactive, match="suspended"):
        resolver.resolve(token(tenant_id="old"))
    with pytest.raises(TenantNotFound):
        resolver.resolve(token(tenant_id="nobody"))


def test_claim_name_is_configurable_including_nested_and_url_claims():
    registry = Registry(record("acme"))
    nested = TenantResolver(JWTSettings(key="k" * 32, algorithms=("HS256",), tenant_claim="org.tenant"), registry)
    nested_token = token({"org": {"tenant": "acme"}, "tenant_id": None}, key="k" * 32, alg="HS256")
    assert nested.resolve(nested_token).tenant_id == "acme"
    url = TenantResolver(JWTSettings(key="k" * 32, algorithms=("HS256",), tenant_claim="https://x.io/tenant"), registry)
    assert url.resolve(token({"https://x.io/tenant": "acme"}, key="k" * 32, alg="HS256")).tenant_id == "acme"


def test_settings_refuse_none_algorithm_and_missing_key():
    with pytest.raises(ValueError, match="none"):
        JWTSettings(key="k", algorithms=("none",))
    with pytest.raises(ValueError, match="exactly one"):
        JWTSettings()


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "token"])
def test_bearer_header_is_required(header):
    with pytest.raises(Unauthenticated):
        bearer_token(header)


class WallClock:
    def __init__(self):
        self.now = time.time()

    def __call__(self):
        return self.now


def test_verified_tokens_are_cached_but_never_past_their_expiry(monkeypatch):
    clock = WallClock()
    settings = JWTSettings(key=PUBLIC, algorithms=("RS256",), audience="api", issuer="https://idp")
    resolver = TenantResolver(settings, Registry(record("acme")), clock=clock)
    decodes = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: decodes.append(1) or real_decode(*a, **k))
    good = token(exp=clock.now + 30)
    for _ in range(5):
        assert resolver.resolve(good, "acme").tenant_id == "acme"
    assert len(decodes) == 1  # verified once
    with pytest.raises(TenantMismatch):  # the cache never skips the tenant check
        resolver.resolve(good, "beta")
    clock.now += 31  # expired: refused although it was cached
    with pytest.raises(Unauthenticated, match="expired"):
        resolver.resolve(good, "acme")


def test_verified_token_cache_can_be_switched_off(monkeypatch):
    settings = JWTSettings(key=PUBLIC, algorithms=("RS256",), audience="api", issuer="https://idp",
                           verified_cache_ttl=0)
    resolver = TenantResolver(settings, Registry(record("acme")))
    decodes = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: decodes.append(1) or real_decode(*a, **k))
    good = token()
    resolver.resolve(good, "acme")
    resolver.resolve(good, "acme")
    assert len(decodes) == 2


def test_an_unusable_pem_key_is_refused_at_start():
    with pytest.raises(ValueError, match="unusable"):
        TenantResolver(JWTSettings(key="not a pem", algorithms=("RS256",)), Registry())


def test_a_repeated_token_gets_its_context_again_while_the_record_is_the_same():
    """Not re-made per request (a warm request's largest cost after the store),
    yet every check still runs: a changed record makes a new context, an
    inactive tenant and an expired token are refused."""
    clock = WallClock()
    settings = JWTSettings(key=PUBLIC, algorithms=("RS256",), audience="api", issuer="https://idp")
    registry = Registry(record("acme"))  # gives the same record object until it is replaced
    resolver = TenantResolver(settings, registry, clock=clock)
    good = token(exp=clock.now + 30)
    first = resolver.resolve(good, "acme")
    assert resolver.resolve(good, "acme") is first
    assert resolver.resolve(token(sub="u2", exp=clock.now + 30), "acme") is not first  # another token
    registry.records["acme"] = record("acme", key_arn="arn:aws:kms:us-east-1:123456789012:key/rotated")
    again = resolver.resolve(good, "acme")
    assert again is not first and again.resources.kms_key_arn.endswith("/rotated")
    registry.records["acme"] = record("acme", TenantStatus.suspended)
    with pytest.raises(TenantInactive):
        resolver.resolve(good, "acme")
    clock.now += 31
    with pytest.raises(Unauthenticated, match="expired"):
        resolver.resolve(good, "acme")


def test_a_jwks_endpoint_that_cannot_be_reached_is_a_503_not_the_tokens_fault():
    """The keys' endpoint down is the service's outage: 503 (retry), never the
    401 that tells a client to throw its token away."""
    import socket

    from tenant_runtime.asgi import problem
    from tenant_runtime.errors import JwksUnavailable

    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    resolver = TenantResolver(JWTSettings(jwks_url=f"http://127.0.0.1:{port}/jwks.json"), Registry(record("acme")))
    with pytest.raises(JwksUnavailable) as err:
        resolver.resolve(token(), "acme")
    assert (err.value.status_code, err.value.code) == (503, "jwks_unavailable")
    assert f"127.0.0.1:{port}" in str(err.value) and resolver.registry.asked == []
    status, headers, _ = problem(err.value)
    assert status == 503 and (b"retry-after", b"1") in headers and not any(k == b"www-authenticate" for k, _ in headers)


@pytest.mark.parametrize("missing", [None, "", b""])
def test_no_token_at_all_says_so(resolver, missing):
    """A caller passing the absent header's None (or nothing) is told no token
    came, not PyJWT's "Invalid token type. Token must be a <class 'bytes'>"."""
    with pytest.raises(Unauthenticated, match="^no token") as err:
        resolver.resolve(missing, "acme")
    assert err.value.bearer_error is None and resolver.registry.asked == []
