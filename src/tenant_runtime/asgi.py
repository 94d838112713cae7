"""ASGI glue, without importing any web framework.

``TenantMiddleware`` (any ASGI app: Starlette, FastAPI, ...) resolves the bearer
token of every HTTP request, compares the tenant with the one the path
addresses (``/tenants/{id}/...`` by default) and puts the TenantContext in
``scope["state"]["tenant"]`` (Starlette: ``request.state.tenant``). Errors become
JSON responses with the status each error carries (401, 403, 404, 503...).

Errors raised later, inside the application (a foreign cursor, a ciphertext
that fails to decrypt, a bad filename...), map the same way: register
``error_handler`` for ``TenantRuntimeError`` (Starlette/FastAPI:
``app.add_exception_handler(TenantRuntimeError, error_handler)``); for a bare
ASGI app the middleware itself answers them when no response has started.

``tenant_dependency(resolver)`` is the per-route alternative for FastAPI:
``ctx: TenantContext = Depends(tenant_dependency(resolver))``; it reads the
``tenant_id`` path parameter and raises ``HTTPException`` when FastAPI (or
Starlette) is installed, else the runtime error itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from tenant_runtime.auth import TenantResolver
from tenant_runtime.context import TenantContext
from tenant_runtime.errors import TenantRuntimeError

ADDRESSED = re.compile(r"^/tenants/([^/]+)(?:/|$)")


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class TenantMiddleware:
    def __init__(self, app: Callable[..., Awaitable[None]], resolver: TenantResolver,
                 addressed: Callable[[str], str | None] | None = None, exempt: tuple[str, ...] = ()) -> None:
        self.app, self.resolver, self.exempt = app, resolver, exempt
        self.addressed = addressed or (lambda path: (m := ADDRESSED.match(path)) and m.group(1) or None)

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        try:
            ctx = self.resolver.resolve_header(_header(scope, b"authorization"), self.addressed(scope["path"]))
        except TenantRuntimeError as exc:
            await _error(send, exc)
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
            await _error(send, exc)


async def _error(send: Callable, exc: TenantRuntimeError) -> None:
    body = json.dumps({"error": exc.code, "detail": str(exc)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.status_code == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:  # e.g. a hibernated tenant waking up
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ErrorResponse:
    """A JSON error response as a bare ASGI app: ``{"error": code, "detail": message}``
    with the error's status (and ``WWW-Authenticate: Bearer`` on 401, ``Retry-After``
    when the error says when to retry)."""

    def __init__(self, exc: TenantRuntimeError) -> None:
        self.exc, self.status_code = exc, exc.status_code

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        await _error(send, self.exc)


async def error_handler(request: Any, exc: TenantRuntimeError) -> ErrorResponse:
    """Exception handler for Starlette / FastAPI (``add_exception_handler``)."""
    return ErrorResponse(exc)


def tenant_dependency(resolver: TenantResolver, path_param: str = "tenant_id") -> Callable[[Any], TenantContext]:
    def dependency(request: Any) -> TenantContext:
        try:
            return resolver.resolve_header(request.headers.get("authorization"),
                                           request.path_params.get(path_param))
        except TenantRuntimeError as exc:
            http_exception = _http_exception()
            if http_exception is None:
                raise
            raise http_exception(status_code=exc.status_code, detail=str(exc)) from None

    try:  # FastAPI injects the request by its annotation: give it Starlette's Request.
        import inspect

        from starlette.requests import Request  # type: ignore[import-not-found]

        dependency.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)],
            return_annotation=TenantContext)
    except ImportError:
        pass
    return dependency


def _http_exception() -> Any:
    try:
        from fastapi import HTTPException  # type: ignore[import-not-found]
    except ImportError:
        try:
            from starlette.exceptions import HTTPException  # type: ignore[no-redef]
        except ImportError:
            return None
    return HTTPException
