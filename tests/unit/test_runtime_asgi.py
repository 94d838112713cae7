"""The ASGI middleware and the dependency, on a real Starlette app (TestClient)."""

from __future__ import annotations

import time

import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tenant_runtime.asgi import TenantMiddleware, tenant_dependency
from tenant_runtime.auth import JWTSettings, TenantResolver

from test_runtime_jwt import Registry
from runtime_fixtures import record

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
