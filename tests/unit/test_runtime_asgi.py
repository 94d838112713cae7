"""The ASGI middleware and the dependency, on a real Starlette app (TestClient)."""

from __future__ import annotations

import time

import jwt
import pytest
from runtime_fixtures import record
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from test_runtime_jwt import Registry

from tenant_runtime.asgi import TenantMiddleware, tenant_dependency
from tenant_runtime.auth import JWTSettings, TenantResolver

SECRET = "s" * 32


def bearer(tenant: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode({"tenant_id": tenant, "exp": time.time() + 60}, SECRET, "HS256")}


@pytest.fixture
def resolver():
    return TenantResolver(JWTSettings(key=SECRET, algorithms=("HS256",)), Registry(record("acme"), record("beta")))


def test_middleware_routes_and_refuses(resolver):
    async def whoami(request: Request):
        return JSONResponse({"tenant": request.state.tenant.tenant_id})

    app = Starlette(routes=[Route("/tenants/{tenant_id}/me", whoami), Route("/me", whoami),
                            Route("/health", lambda r: JSONResponse({}))])
    client = TestClient(TenantMiddleware(app, resolver, exempt=("/health",)))
    assert client.get("/tenants/acme/me", headers=bearer("acme")).json() == {"tenant": "acme"}
    assert client.get("/me", headers=bearer("beta")).json() == {"tenant": "beta"}
    refused = client.get("/tenants/beta/me", headers=bearer("acme"))
    assert refused.status_code == 403 and refused.json()["error"] == "tenant_mismatch"
    assert client.get("/tenants/acme/me").status_code == 401
    assert client.get("/me", headers=bearer("ghost")).status_code == 404
    assert client.get("/health").status_code == 200


def test_dependency_raises_http_exceptions(resolver):
    dependency = tenant_dependency(resolver)

    async def whoami(request: Request):
        return JSONResponse({"tenant": dependency(request).tenant_id})

    client = TestClient(Starlette(routes=[Route("/tenants/{tenant_id}/me", whoami)]))
    assert client.get("/tenants/acme/me", headers=bearer("acme")).json() == {"tenant": "acme"}
    assert client.get("/tenants/acme/me", headers=bearer("beta")).status_code == 403


def test_errors_raised_by_the_app_map_to_their_status(resolver):
    from tenant_runtime.asgi import error_handler
    from tenant_runtime.errors import DecryptionFailed, InvalidRequest, TenantRuntimeError

    async def broken(request: Request):
        raise DecryptionFailed("sealed for another tenant")

    app = Starlette(routes=[Route("/tenants/{tenant_id}/broken", broken)])
    app.add_exception_handler(TenantRuntimeError, error_handler)
    client = TestClient(TenantMiddleware(app, resolver))
    answer = client.get("/tenants/acme/broken", headers=bearer("acme"))
    assert answer.status_code == 403 and answer.json()["error"] == "decryption_failed"

    async def bare(scope, receive, send):  # no framework: the middleware answers
        raise InvalidRequest("bad cursor")

    answer = TestClient(TenantMiddleware(bare, resolver)).get("/tenants/acme/x", headers=bearer("acme"))
    assert answer.status_code == 400 and answer.json() == {"error": "invalid_request", "detail": "bad cursor"}


def test_a_waking_tenant_is_a_503_saying_when_to_retry(resolver):
    from tenant_runtime.asgi import error_handler
    from tenant_runtime.errors import TenantRuntimeError, TenantWaking

    async def hibernated(request: Request):
        raise TenantWaking("acme", "starting", retry_after=30)

    app = Starlette(routes=[Route("/tenants/{tenant_id}/history", hibernated)])
    app.add_exception_handler(TenantRuntimeError, error_handler)
    for client in (TestClient(TenantMiddleware(app, resolver)), TestClient(TenantMiddleware(
            lambda scope, receive, send: hibernated(None), resolver))):
        answer = client.get("/tenants/acme/history", headers=bearer("acme"))
        assert answer.status_code == 503 and answer.headers["retry-after"] == "30"
        assert answer.json()["error"] == "tenant_waking" and "starting" in answer.json()["detail"]


def test_fastapi_dependency_and_error_handler(resolver):
    fastapi = pytest.importorskip("fastapi")
    from tenant_runtime.asgi import error_handler
    from tenant_runtime.context import TenantContext
    from tenant_runtime.errors import InvalidRequest, TenantRuntimeError

    app = fastapi.FastAPI()
    app.add_exception_handler(TenantRuntimeError, error_handler)
    current_tenant = tenant_dependency(resolver)

    @app.get("/tenants/{tenant_id}/me")
    def whoami(ctx: TenantContext = fastapi.Depends(current_tenant)):
        return {"tenant": ctx.tenant_id}

    @app.get("/tenants/{tenant_id}/bad")
    def bad(ctx: TenantContext = fastapi.Depends(current_tenant)):
        raise InvalidRequest("bad cursor")

    client = TestClient(app)
    assert client.get("/tenants/acme/me", headers=bearer("acme")).json() == {"tenant": "acme"}
    assert client.get("/tenants/acme/me", headers=bearer("beta")).status_code == 403
    assert client.get("/tenants/acme/me").status_code == 401
    answer = client.get("/tenants/acme/bad", headers=bearer("acme"))
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"
