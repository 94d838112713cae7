"""The ASGI middleware and the FastAPI dependency on real Starlette / FastAPI
apps (TestClient): one RFC 9457 problem shape for every refusal, whichever
answers it, and the addressed tenant from the path, the host or a header."""

from __future__ import annotations

import logging
import time

import jwt
import pytest
from runtime_fixtures import Registry, record
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tenant_runtime.asgi import TenantMiddleware, error_handler, tenant_dependency
from tenant_runtime.auth import JWTSettings, TenantResolver
from tenant_runtime.errors import (
    DecryptionFailed,
    InvalidRequest,
    KeyUnusable,
    RegistryUnavailable,
    StoreTimeout,
    TenantMismatch,
    TenantRuntimeError,
    WritesFrozen,
)

SECRET = "s" * 32


def bearer(tenant: str, **claims) -> dict[str, str]:
    body = {"tenant_id": tenant, "exp": time.time() + 3600, **claims}  # tokens of REFUSALS outlive the suite
    return {"Authorization": "Bearer " + jwt.encode(body, SECRET, "HS256")}


class FlakyRegistry(Registry):
    def get(self, tenant_id):
        if tenant_id == "down":
            raise RegistryUnavailable("registry table 'reg' unreadable: timeout")
        return super().get(tenant_id)


@pytest.fixture
def resolver():
    return TenantResolver(JWTSettings(key=SECRET, algorithms=("HS256",)),
                          FlakyRegistry(record("acme"), record("beta")))


async def whoami(request: Request):
    return JSONResponse({"tenant": request.state.tenant.tenant_id})


def middleware_client(resolver, **options) -> TestClient:
    app = Starlette(routes=[Route("/tenants/{tenant_id}/me", whoami), Route("/me", whoami),
                            Route("/health", lambda r: JSONResponse({}))])
    return TestClient(TenantMiddleware(app, resolver, exempt=("/health",), **options))


def dependency_client(resolver, **options) -> TestClient:
    fastapi = pytest.importorskip("fastapi")
    from tenant_runtime.context import TenantContext

    app = fastapi.FastAPI()
    app.add_exception_handler(TenantRuntimeError, error_handler)
    current_tenant = tenant_dependency(resolver, **options)

    @app.get("/tenants/{tenant_id}/me")
    def me(ctx: TenantContext = fastapi.Depends(current_tenant)):
        return {"tenant": ctx.tenant_id}

    @app.get("/me")
    def me_anywhere(ctx: TenantContext = fastapi.Depends(current_tenant)):
        return {"tenant": ctx.tenant_id}

    return TestClient(app)


def test_middleware_routes_and_refuses(resolver):
    client = middleware_client(resolver)
    assert client.get("/tenants/acme/me", headers=bearer("acme")).json() == {"tenant": "acme"}
    assert client.get("/me", headers=bearer("beta")).json() == {"tenant": "beta"}
    refused = client.get("/tenants/beta/me", headers=bearer("acme"))
    assert refused.status_code == 403 and refused.json()["code"] == "tenant_mismatch"
    assert refused.json()["detail"] == "tenant 'acme' may not access tenant 'beta' (addressed by the path)"
    assert client.get("/tenants/acme/me").status_code == 401
    assert client.get("/me", headers=bearer("ghost")).status_code == 404
    assert client.get("/health").status_code == 200


REFUSALS = {
    "no token": ("/tenants/acme/me", {}, 401),
    "not a bearer header": ("/tenants/acme/me", {"Authorization": "Basic eDp5"}, 401),
    "bad signature": ("/tenants/acme/me", {"Authorization": "Bearer " + jwt.encode(
        {"tenant_id": "acme", "exp": time.time() + 600}, "x" * 32, "HS256")}, 401),
    "expired": ("/tenants/acme/me", bearer("acme", exp=time.time() - 10), 401),
    "another tenant": ("/tenants/beta/me", bearer("acme"), 403),
    "another tenant by header": ("/tenants/acme/me", {**bearer("acme"), "X-Tenant-Id": "beta"}, 403),
    "unknown tenant": ("/tenants/ghost/me", bearer("ghost"), 404),
    "registry down": ("/tenants/down/me", bearer("down"), 503),
}


@pytest.mark.parametrize(("path", "headers", "status"), REFUSALS.values(), ids=REFUSALS.keys())
def test_error_shape_is_identical_across_middleware_and_dependency(resolver, path, headers, status):
    via_middleware = middleware_client(resolver).get(path, headers=headers)
    via_dependency = dependency_client(resolver).get(path, headers=headers)
    for answer in (via_middleware, via_dependency):
        assert answer.status_code == status
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert set(problem) == {"type", "title", "status", "detail", "code", "instance"}
        assert problem["status"] == status and problem["type"].endswith(":" + problem["code"])
        assert problem["instance"] == path
    assert via_middleware.json() == via_dependency.json()
    for name in ("www-authenticate", "retry-after"):
        assert via_middleware.headers.get(name) == via_dependency.headers.get(name)
    if status == 401:  # RFC 6750: a challenge, with an error code once credentials were presented
        challenge = via_middleware.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="tenant_runtime"')
        assert ("error=" in challenge) == ("Authorization" in headers)
    else:
        assert "www-authenticate" not in via_middleware.headers
    assert ("retry-after" in via_middleware.headers) == (status == 503)


ADDRESSING = {
    # (host, extra headers, path) -> status for a token of acme
    "host of its tenant": ("acme.app.example.com", {}, "/me", 200),
    "host of another tenant": ("beta.app.example.com", {}, "/me", 403),
    "host with a port": ("beta.app.example.com:8443", {}, "/me", 403),
    "host outside the suffix": ("api.example.org", {}, "/me", 200),
    "the bare suffix": ("app.example.com", {}, "/me", 200),
    "header of its tenant": ("api.example.org", {"X-Tenant-Id": "acme"}, "/me", 200),
    "header of another tenant": ("api.example.org", {"X-Tenant-Id": "beta"}, "/me", 403),
    "empty header": ("api.example.org", {"X-Tenant-Id": ""}, "/me", 403),
    "host and path agree": ("acme.app.example.com", {}, "/tenants/acme/me", 200),
    "host right, path wrong": ("acme.app.example.com", {}, "/tenants/beta/me", 403),
    "path right, header wrong": ("acme.app.example.com", {"X-Tenant-Id": "beta"}, "/tenants/acme/me", 403),
}


@pytest.mark.parametrize(("host", "extra", "path", "status"), ADDRESSING.values(), ids=ADDRESSING.keys())
@pytest.mark.parametrize("make_client", [middleware_client, dependency_client], ids=["middleware", "dependency"])
def test_host_and_header_are_compared_with_the_token(resolver, make_client, host, extra, path, status):
    client = make_client(resolver, host_suffix="app.example.com")
    answer = client.get(path, headers={**bearer("acme"), "Host": host, **extra})
    assert answer.status_code == status, answer.text
    if status == 403:
        detail = answer.json()["detail"]
        assert detail.startswith("tenant 'acme' may not access tenant ") and "(addressed by the " in detail
        assert "tenant of tenant" not in detail


def test_a_mismatch_names_the_source_that_addressed_the_other_tenant(resolver):
    client = middleware_client(resolver, host_suffix="app.example.com")
    by_host = client.get("/me", headers={**bearer("acme"), "Host": "beta.app.example.com"}).json()["detail"]
    by_header = client.get("/me", headers={**bearer("acme"), "X-Tenant-Id": "beta"}).json()["detail"]
    assert by_host == "tenant 'acme' may not access tenant 'beta' (addressed by the host 'beta.app.example.com')"
    assert by_header == "tenant 'acme' may not access tenant 'beta' (addressed by the x-tenant-id header)"
    # Resources keep their wording.
    assert str(TenantMismatch("acme", "beta", "cursor")) == "tenant 'acme' may not access cursor of tenant 'beta'"


def test_header_routing_can_be_switched_off(resolver):
    client = middleware_client(resolver, tenant_header=None)
    assert client.get("/me", headers={**bearer("acme"), "X-Tenant-Id": "beta"}).status_code == 200


def test_errors_raised_by_the_app_map_to_their_status(resolver):
    async def broken(request: Request):
        raise DecryptionFailed("sealed for another tenant")

    app = Starlette(routes=[Route("/tenants/{tenant_id}/broken", broken)])
    app.add_exception_handler(TenantRuntimeError, error_handler)
    client = TestClient(TenantMiddleware(app, resolver))
    answer = client.get("/tenants/acme/broken", headers=bearer("acme"))
    assert answer.status_code == 403 and answer.json()["code"] == "decryption_failed"
    assert answer.headers["content-type"] == "application/problem+json"

    async def bare(scope, receive, send):  # no framework: the middleware answers
        raise InvalidRequest("bad cursor")

    answer = TestClient(TenantMiddleware(bare, resolver)).get("/tenants/acme/x", headers=bearer("acme"))
    assert answer.status_code == 400
    assert answer.json() == {"type": "urn:tenant-runtime:problem:invalid_request", "title": "Invalid request",
                             "status": 400, "detail": "bad cursor", "code": "invalid_request",
                             "instance": "/tenants/acme/x"}


def test_a_waking_tenant_is_a_503_saying_when_to_retry(resolver):
    from tenant_runtime.errors import TenantWaking

    async def hibernated(request: Request):
        raise TenantWaking("acme", "starting", retry_after=30)

    app = Starlette(routes=[Route("/tenants/{tenant_id}/history", hibernated)])
    app.add_exception_handler(TenantRuntimeError, error_handler)
    for client in (TestClient(TenantMiddleware(app, resolver)),
                   TestClient(TenantMiddleware(lambda scope, receive, send: hibernated(None), resolver))):
        answer = client.get("/tenants/acme/history", headers=bearer("acme"))
        assert answer.status_code == 503 and answer.headers["retry-after"] == "30"
        assert answer.json()["code"] == "tenant_waking" and "starting" in answer.json()["detail"]
        assert answer.json()["title"] == "Tenant waking from hibernation"


def test_an_exempt_path_covers_itself_and_what_is_under_it_only(resolver):
    """``exempt=("/health",)`` lets /health and /health/... through without a
    token, not every path that merely starts with the text (/healthz-admin)."""
    async def open_route(request: Request):
        return JSONResponse({"reached": request.url.path})

    app = Starlette(routes=[Route(path, open_route) for path in ("/health", "/health/deep", "/healthz-admin",
                                                                 "/health-private/x", "/docs", "/docsecret")])
    client = TestClient(TenantMiddleware(app, resolver, exempt=("/health", "/docs/")))
    for path in ("/health", "/health/deep", "/docs"):
        assert client.get(path).json() == {"reached": path}, path
    for path in ("/healthz-admin", "/health-private/x", "/docsecret"):
        refused = client.get(path)
        assert (refused.status_code, refused.json()["code"]) == (401, "unauthenticated"), path


def test_an_errors_extensions_are_members_of_its_problem_never_replacing_the_standard_ones():
    """An application's own error (the example's 422 with its field errors)
    renders in the one problem shape, its ``extensions`` as extension members."""
    import json

    from tenant_runtime.asgi import problem
    from tenant_runtime.errors import TenantRuntimeError

    class FieldsInvalid(TenantRuntimeError):
        status_code, code, title = 422, "validation_failed", "Request fields invalid"

    exc = FieldsInvalid("body.role: Input should be 'user'")
    exc.extensions = {"errors": [{"loc": ["body", "role"]}], "status": 200, "title": "forged"}
    status, headers, payload = problem(exc, "/x")
    assert status == 422 and (b"content-type", b"application/problem+json") in headers
    assert json.loads(payload) == {"type": "urn:tenant-runtime:problem:validation_failed", "status": 422,
                                   "title": "Request fields invalid", "code": "validation_failed",
                                   "detail": "body.role: Input should be 'user'", "instance": "/x",
                                   "errors": [{"loc": ["body", "role"]}]}


def _logged(caplog) -> list[tuple[int, str | None, str, int, str]]:
    return [(r.levelno, r.tenant_id, r.problem_code, r.http_status, r.http_path)
            for r in caplog.records if r.name == "tenant_runtime.problems"]


@pytest.mark.parametrize("make_client", [middleware_client, dependency_client])
def test_every_problem_answered_is_logged_once_with_the_verified_callers_tenant(resolver, caplog, make_client):
    caplog.set_level(logging.DEBUG, logger="tenant_runtime.problems")
    client = make_client(resolver)
    assert client.get("/tenants/acme/me", headers=bearer("acme")).status_code == 200
    assert _logged(caplog) == []  # a request served logs nothing
    # acme's token addressing beta: a warning naming acme (the verified caller), not beta.
    assert client.get("/tenants/beta/me", headers=bearer("acme")).status_code == 403
    assert _logged(caplog) == [(logging.WARNING, "acme", "tenant_mismatch", 403, "/tenants/beta/me")]
    record = next(r for r in caplog.records if r.name == "tenant_runtime.problems")
    assert record.client_addr == "testclient" and "may not access tenant 'beta'" in record.getMessage()
    caplog.clear()
    # No token: everyday noise, info, and no tenant (nothing verified names one).
    assert client.get("/tenants/beta/me").status_code == 401
    assert _logged(caplog) == [(logging.INFO, None, "unauthenticated", 401, "/tenants/beta/me")]
    caplog.clear()
    # A forged token claiming beta: no tenant is taken from an unverified claim.
    forged = {"Authorization": "Bearer " + jwt.encode({"tenant_id": "beta", "exp": time.time() + 60}, "x" * 32,
                                                      "HS256")}
    assert client.get("/tenants/beta/me", headers=forged).status_code == 401
    assert _logged(caplog) == [(logging.INFO, None, "unauthenticated", 401, "/tenants/beta/me")]


def test_a_problem_raised_by_the_app_is_logged_with_its_requests_tenant(resolver, caplog):
    caplog.set_level(logging.DEBUG, logger="tenant_runtime.problems")

    async def broken(request: Request):
        raise DecryptionFailed("sealed for another tenant")

    async def frozen(scope, receive, send):  # no framework: the middleware answers
        raise WritesFrozen("acme")

    app = Starlette(routes=[Route("/tenants/{tenant_id}/broken", broken)])
    app.add_exception_handler(TenantRuntimeError, error_handler)
    for application, path, status in ((app, "/tenants/acme/broken", 403), (frozen, "/tenants/acme/x", 503)):
        client = TestClient(TenantMiddleware(application, resolver))
        assert client.get(path, headers=bearer("acme")).status_code == status
    assert _logged(caplog) == [(logging.ERROR, "acme", "decryption_failed", 403, "/tenants/acme/broken"),
                               (logging.INFO, "acme", "writes_frozen", 503, "/tenants/acme/x")]


def test_a_problem_quoting_the_platforms_internals_tells_the_client_only_what_to_do(resolver, caplog):
    """A refused login's text names the database server, port and role, a key
    the key's ARN: the client reads the error's public sentence, the log the cause."""
    import psycopg

    from tenant_runtime.transaction import store_error

    caplog.set_level(logging.DEBUG, logger="tenant_runtime.problems")
    refused = store_error("acme", psycopg.OperationalError(
        'connection to server at "10.9.8.7", port 5432 failed: FATAL: role "tenant_acme_app" is not permitted to '
        "log in"))
    arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    raised = iter([refused, KeyUnusable("acme", arn, "Disabled"), StoreTimeout("cancelled on 10.9.8.7")])

    async def failing(request: Request):
        raise next(raised)

    app = Starlette(routes=[Route("/tenants/{tenant_id}/x", failing)])
    app.add_exception_handler(TenantRuntimeError, error_handler)
    client = TestClient(TenantMiddleware(app, resolver))
    answers = [client.get("/tenants/acme/x", headers=bearer("acme")) for _ in range(3)]
    assert [(a.status_code, a.json()["code"]) for a in answers] == [
        (503, "store_unavailable"), (403, "key_unusable"), (503, "store_timeout")]
    for answer in answers:
        assert not [s for s in ("10.9.8.7", "5432", "tenant_acme_app", "123456789012") if s in answer.text], answer.text
        assert answer.json()["detail"] and answer.json()["detail"] != answer.json()["title"]
    assert "retry" in answers[0].json()["detail"] and "Disabled" in answers[1].json()["detail"]
    logged = [r.getMessage() for r in caplog.records if r.name == "tenant_runtime.problems"]
    assert "10.9.8.7" in logged[0] and arn in logged[1] and "10.9.8.7" in logged[2]


def test_the_errors_table_of_the_runtime_docs_is_each_errors_status_code_and_log_level():
    import inspect
    import re
    from pathlib import Path

    from tenant_runtime import errors

    text = (Path(__file__).resolve().parents[2] / "docs" / "runtime.md").read_text()
    rows = dict((m[0], m[1:]) for m in re.findall(r"^\| `(\w+)` \| (\d+) \| `(\w+)` \| (\w+) \|", text, re.M))
    classes = {name: cls for name, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, errors.TenantRuntimeError)}
    assert set(rows) == set(classes)
    for name, cls in classes.items():
        assert rows[name] == (str(cls.status_code), cls.code, logging.getLevelName(cls.log_level).lower()), name
