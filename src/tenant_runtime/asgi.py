"""ASGI glue, without importing any web framework.

``TenantMiddleware`` (any ASGI app: Starlette, FastAPI, ...) resolves the bearer
token of every HTTP request without blocking the event loop (cached work on
the loop, registry / JWKS / revocation reads on the runtime's I/O pool),
compares the token's tenant with every tenant the request addresses — the
path (``/tenants/{id}/...`` by default), the host name under ``host_suffix``
(``acme.app.example.com``) and the ``X-Tenant-Id`` header — and puts the
TenantContext in ``scope["state"]["tenant"]`` (Starlette: ``request.state.tenant``).
A request addresses one workspace of its tenant with the ``X-Workspace``
header (a header, not the path, so an application's routes stay the same for
the tenant and its workspaces): the context is then the workspace's, refused
(403) unless the token lists it; without the header, the tenant's.

Every problem answered this way is logged once, on the ``tenant_runtime.problems``
logger at its error's ``log_level`` (a cross-tenant refusal: a warning), with
``tenant_id`` (the caller's, once its token was verified), ``problem_code``,
``http_status``, ``http_path`` and ``client_addr`` as attributes of the log
record, for per-tenant error rates and alerts (a JSON formatter writes them out).

One error shape everywhere: every ``TenantRuntimeError`` is answered as an
RFC 9457 problem (``application/problem+json``: ``type``, ``title``,
``status``, ``detail``, ``instance``, plus the stable ``code``), with
``WWW-Authenticate: Bearer ...`` on 401 (RFC 6750) and ``Retry-After`` on 503.
The middleware answers its own refusals and errors raised later inside the
application when no response has started; register ``error_handler`` for
``TenantRuntimeError`` so the framework answers errors raised in routes and by
``tenant_dependency`` the same way (Starlette/FastAPI:
``app.add_exception_handler(TenantRuntimeError, error_handler)``).

``tenant_dependency(resolver)`` is the per-route alternative for FastAPI:
``ctx: TenantContext = Depends(tenant_dependency(resolver))``; it reads the
``tenant_id`` path parameter (and host and header like the middleware) and
raises the runtime error itself, which ``error_handler`` renders.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from tenant_runtime.auth import TenantResolver
from tenant_runtime.context import TenantContext
from tenant_runtime.errors import InvalidRequest, TenantRuntimeError, Unauthenticated

ADDRESSED = re.compile(r"^/tenants/([^/]+)(?:/|$)")
TENANT_HEADER = "x-tenant-id"
WORKSPACE_HEADER = "x-workspace"
PROBLEM_TYPE = "urn:tenant-runtime:problem:{code}"
REALM = "tenant_runtime"

log = logging.getLogger("tenant_runtime.problems")


def _path_tenant(path: str) -> str | None:
    match = ADDRESSED.match(path)
    return match.group(1) if match else None


def _headers(scope: dict[str, Any], name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope.get("headers", []) if key.lower() == name]


class Addressing:
    """Where requests name the tenant they address; each source found in a
    request must name the token's tenant (403 otherwise)."""

    def __init__(self, path: Callable[[str], str | None] | None = _path_tenant, host_suffix: str | None = None,
                 header: str | None = TENANT_HEADER, workspace_header: str | None = WORKSPACE_HEADER) -> None:
        self.path = path
        self.host_suffix = "." + host_suffix.lower().strip(".") if host_suffix else None
        self.header = header.lower().encode("latin-1") if header else None
        self.workspace_header = workspace_header.lower().encode("latin-1") if workspace_header else None

    def workspace(self, scope: dict[str, Any]) -> str | None:
        """The workspace the request addresses (None: the tenant itself); the
        header repeated with different names is refused (400)."""
        named = {v.strip() for v in _headers(scope, self.workspace_header)} if self.workspace_header else set()
        if len(named) > 1 or "" in named:
            raise InvalidRequest(f"the {self.workspace_header.decode()} header must name one workspace")  # type: ignore[union-attr]
        return next(iter(named), None)

    def sources(self, scope: dict[str, Any], path_tenant: str | None = None) -> list[tuple[str, str]]:
        """(source, tenant id) for every place this request names a tenant.
        ``path_tenant``: the id a framework already parsed from the path."""
        found: list[tuple[str, str]] = []
        named = path_tenant if path_tenant is not None else (self.path(scope["path"]) if self.path else None)
        if named is not None:
            found.append(("the path", named))
        if self.host_suffix:
            host = next(iter(_headers(scope, b"host")), "").rsplit(":", 1)[0].lower().rstrip(".")
            if host.endswith(self.host_suffix) and len(host) > len(self.host_suffix):
                found.append((f"the host {host!r}", host[: -len(self.host_suffix)]))
        if self.header:
            found += [(f"the {self.header.decode()} header", value.strip()) for value in _headers(scope, self.header)]
        return found


# -- one error shape ---------------------------------------------------------------

def problem(exc: TenantRuntimeError, instance: str | None = None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, body) of the RFC 9457 problem for ``exc``; an error's
    ``extensions`` (a dict, e.g. an application's field errors) are extension
    members, never replacing the standard ones. The detail is the error's
    ``public_detail`` when it has one (its message, quoting internals, is logged)."""
    body: dict[str, Any] = {"type": PROBLEM_TYPE.format(code=exc.code), "title": exc.title,
                            "status": exc.status_code, "detail": exc.public_detail or str(exc), "code": exc.code}
    if instance:
        body["instance"] = instance
    body = {**getattr(exc, "extensions", {}), **body}
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(payload)).encode())]
    if exc.status_code == 401:
        challenge = f'Bearer realm="{REALM}"'
        error = exc.bearer_error if isinstance(exc, Unauthenticated) else "invalid_token"
        if error:  # RFC 6750 3.1: no error code when the request carried no credentials
            detail = str(exc).replace("\\", "").replace('"', "'")
            challenge += f', error="{error}", error_description="{detail}"'
        headers.append((b"www-authenticate", challenge.encode("latin-1", "replace")))
    if exc.status_code == 503:  # a waking tenant says how long its database takes; the rest, a second
        headers.append((b"retry-after", str(getattr(exc, "retry_after", 1)).encode()))
    return exc.status_code, headers, payload


def log_problem(exc: TenantRuntimeError, scope: dict[str, Any]) -> None:
    """One log record for the problem answered to the request of ``scope``. The
    tenant is the verified caller's (the context the middleware set, or the one a
    refusal names), never a tenant the request merely addressed."""
    if not log.isEnabledFor(exc.log_level):
        return
    ctx = (scope.get("state") or {}).get("tenant")
    tenant = (ctx.tenant_id if isinstance(ctx, TenantContext)
              else getattr(exc, "caller", getattr(exc, "tenant_id", None)))
    client = scope.get("client")
    log.log(exc.log_level, "%s %s %s: %s", exc.status_code, exc.code, scope.get("path"), exc, extra={
        "tenant_id": tenant, "problem_code": exc.code, "http_status": exc.status_code,
        "http_path": scope.get("path"), "client_addr": client[0] if client else None})


async def _answer(send: Callable, exc: TenantRuntimeError, instance: str | None, scope: dict[str, Any]) -> None:
    log_problem(exc, scope)
    status, headers, body = problem(exc, instance)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ErrorResponse:
    """The problem for ``exc`` as a bare ASGI app (what ``error_handler`` returns)."""

    def __init__(self, exc: TenantRuntimeError, instance: str | None = None) -> None:
        self.exc, self.instance, self.status_code = exc, instance, exc.status_code

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        await _answer(send, self.exc, self.instance or scope.get("path"), scope)


async def error_handler(request: Any, exc: TenantRuntimeError) -> ErrorResponse:
    """Exception handler for Starlette / FastAPI (``add_exception_handler``)."""
    return ErrorResponse(exc, request.url.path)


# -- the middleware and the dependency ---------------------------------------------

class TenantMiddleware:
    """``resolver``: the runtime's resolver, sync (its blocking reads go to the
    default I/O pool) or ``AsyncTenantResolver`` (``AsyncTenantRuntime.resolver``).
    ``addressed``: path -> tenant id (default ``/tenants/{id}/...``);
    ``exempt``: paths served without a token, each with what is under it
    (``"/health"``: ``/health`` and ``/health/...``, not ``/healthz``);
    ``host_suffix``: ``app.example.com`` makes ``acme.app.example.com`` address
    ``acme``; ``tenant_header``: the header naming a tenant (None: ignored);
    ``workspace_header``: the header naming the workspace (None: ignored)."""

    def __init__(self, app: Callable[..., Awaitable[None]], resolver: Any,
                 addressed: Callable[[str], str | None] | None = None, exempt: tuple[str, ...] = (),
                 host_suffix: str | None = None, tenant_header: str | None = TENANT_HEADER,
                 workspace_header: str | None = WORKSPACE_HEADER) -> None:
        from tenant_runtime.aio import AsyncTenantResolver

        self.app = app
        # A path and what is under it ("/health": /health, /health/...), never every path
        # that merely starts with the text (/healthz-admin): a boundary at a "/".
        self.exempt = tuple(path.rstrip("/") for path in exempt)
        self.resolver = AsyncTenantResolver.of(resolver)
        self.addressing = Addressing(addressed or _path_tenant, host_suffix, tenant_header, workspace_header)

    def _exempt(self, path: str) -> bool:
        return any(path == exempt or path.startswith(exempt + "/") for exempt in self.exempt)

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or self._exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            ctx = await self.resolver.resolve_header(next(iter(_headers(scope, b"authorization")), None),
                                                     self.addressing.sources(scope), self.addressing.workspace(scope))
        except TenantRuntimeError as exc:
            await _answer(send, exc, scope["path"], scope)
            return
        scope.setdefault("state", {})["tenant"] = ctx
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except TenantRuntimeError as exc:
            if started:
                raise
            await _answer(send, exc, scope["path"], scope)


def tenant_dependency(resolver: TenantResolver | Any, path_param: str = "tenant_id", host_suffix: str | None = None,
                      tenant_header: str | None = TENANT_HEADER, workspace_header: str | None = WORKSPACE_HEADER,
                      ) -> Callable[[Any], Awaitable[TenantContext]]:
    """A FastAPI dependency resolving the request's tenant (and workspace) like
    the middleware; refusals raise the runtime error (render them with ``error_handler``)."""
    from tenant_runtime.aio import AsyncTenantResolver

    aresolver = AsyncTenantResolver.of(resolver)
    addressing = Addressing(None, host_suffix, tenant_header, workspace_header)

    async def dependency(request: Any) -> TenantContext:
        return await aresolver.resolve_header(request.headers.get("authorization"),
                                              addressing.sources(request.scope, request.path_params.get(path_param)),
                                              addressing.workspace(request.scope))

    try:  # FastAPI injects the request by its annotation: give it Starlette's Request.
        import inspect

        from starlette.requests import Request  # type: ignore[import-not-found]

        dependency.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)],
            return_annotation=TenantContext)
    except ImportError:
        pass
    return dependency
