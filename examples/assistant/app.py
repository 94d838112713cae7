"""A small assistant service on tenant_runtime's async API (FastAPI).

Every route is under /tenants/{tenant_id}/ and answers only the token's tenant
(403 for any other, whether the path, the host or an X-Tenant-Id header names
it). Conversations and documents live in the tenant's context store
(encrypted with its key); documents are searchable through the tenant's own
blind index (filters, facets, highlights, typo-tolerant matching, prefix
suggestions); files go straight to S3 through a pre-signed URL under the
tenant's prefix, and a document can point at one (``source``). Posting a
message schedules a delayed "reply" job on the tenant's queue, which the
worker (worker.py, started with the app) answers with the best-matching
document of that tenant.

Configuration, all from the environment (`eval "$(tenantctl sandbox env)"`
sets every one for the sandbox):

    TENANT_JWKS_URL            keys verifying access tokens (the IdP's; the sandbox's for dev tokens)
    TENANT_REGISTRY_TABLE      the registry
    TENANT_REVOCATION_TABLE    the token denylist (optional)
    TENANT_GATEWAY_SECRET_ARN  shared-pool mode for pooled tenants (optional: per-tenant logins without it)
    AWS_ENDPOINT_URL, AWS_REGION   where AWS is (moto on the sandbox)
    ASSISTANT_HOST_SUFFIX      e.g. app.example.com: acme.app.example.com addresses acme (optional)
    ASSISTANT_WORKER_TENANTS   comma-separated tenants whose queues the in-process worker serves
    ASSISTANT_REPLY_DELAY      seconds before the assistant's reply (default 1)

Run it with `python examples/assistant/run.py` (sandbox, two tenants, tokens).
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any, Literal

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from worker import REPLY, run_worker

from tenant_runtime import Gateway, InvalidRequest, JWTSettings, TenantContext, TenantRuntimeError
from tenant_runtime.aio import AsyncTenantRuntime
from tenant_runtime.asgi import error_handler, log_problem, problem, tenant_dependency
from tenant_runtime.jobs import Job


def build_runtime() -> AsyncTenantRuntime:
    env = os.environ
    gateway = Gateway(secret_arn=env["TENANT_GATEWAY_SECRET_ARN"]) if env.get("TENANT_GATEWAY_SECRET_ARN") else None
    return AsyncTenantRuntime(
        JWTSettings(jwks_url=env["TENANT_JWKS_URL"], algorithms=("RS256",)),
        env.get("TENANT_REGISTRY_TABLE"), revocation_table=env.get("TENANT_REVOCATION_TABLE") or None,
        gateway=gateway, endpoint_url=env.get("AWS_ENDPOINT_URL"), region=env.get("AWS_REGION"),
        statement_timeout=5.0)


@asynccontextmanager
async def lifespan(app: FastAPI):
    runtime = app.state.runtime = build_runtime()
    stop = asyncio.Event()
    tenants = [t for t in os.environ.get("ASSISTANT_WORKER_TENANTS", "").split(",") if t]
    worker = asyncio.create_task(run_worker(runtime, tenants, stop)) if tenants else None
    try:
        yield
    finally:
        stop.set()
        if worker is not None:
            await worker
        await runtime.aclose()


class DocumentNotFound(TenantRuntimeError):
    status_code = 404
    code = "document_not_found"
    title = "No such document"


class RequestInvalid(TenantRuntimeError):
    """The request's own fields failed validation (FastAPI's 422): the field
    errors (``loc``, ``msg``, ``type``) go in the problem's ``errors`` member."""

    status_code = 422
    code = "validation_failed"
    title = "Request fields invalid"

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        fields = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in jsonable_encoder(errors)]  # not `input`: it would echo what the client sent
        super().__init__("; ".join(f"{'.'.join(map(str, f['loc']))}: {f['msg']}" for f in fields))
        self.extensions = {"errors": fields}


class HTTPProblem(TenantRuntimeError):
    """Starlette's own refusals (no such route 404, a method the route has not
    405) as problems, their code the status phrase (``not_found``)."""

    log_level = logging.INFO

    def __init__(self, exc: HTTPException) -> None:
        super().__init__(str(exc.detail))
        self.status_code, self.title = exc.status_code, HTTPStatus(exc.status_code).phrase
        self.code = self.title.lower().replace(" ", "_")


app = FastAPI(title="assistant (tenant_runtime example)", lifespan=lifespan)
app.add_exception_handler(TenantRuntimeError, error_handler)  # one problem+json shape for every refusal


@app.exception_handler(RequestValidationError)
async def validation_problem(request: Request, exc: RequestValidationError) -> Any:
    """FastAPI's own 422 in the same problem+json shape as every other error."""
    return await error_handler(request, RequestInvalid(list(exc.errors())))


@app.exception_handler(HTTPException)
async def http_problem(request: Request, exc: HTTPException) -> Response:
    """Starlette's 404 and 405 in the problem+json shape too, with their headers (405's Allow)."""
    refusal = HTTPProblem(exc)
    log_problem(refusal, request.scope)
    status, headers, body = problem(refusal, request.url.path)
    return Response(body, status, headers={**(exc.headers or {}), **{k.decode(): v.decode() for k, v in headers}})


class _LazyResolver:
    """The dependency is declared at import; the runtime exists once the app starts."""

    def __init__(self) -> None:
        self.dependency: Any = None

    async def __call__(self, request: Request) -> TenantContext:
        if self.dependency is None:
            self.dependency = tenant_dependency(request.app.state.runtime.resolver,
                                                host_suffix=os.environ.get("ASSISTANT_HOST_SUFFIX") or None)
        return await self.dependency(request)


current_tenant = _LazyResolver()


def runtime_of(request: Request) -> AsyncTenantRuntime:
    return request.app.state.runtime


class NewMessage(BaseModel):
    content: str = Field(min_length=1, max_length=10_000)
    # A client speaks as the user only: the assistant's and the system's turns are
    # the service's own (a forged assistant turn would steer the model's next answer).
    role: Literal["user"] = "user"


class NewUpload(BaseModel):
    filename: str
    size: int
    content_type: str


class DocumentBody(BaseModel):
    title: str
    body: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None  # e.g. the key of an uploaded file


def parse_filters(filters: list[str]) -> dict[str, str]:
    """``?filter=lang:ja&filter=team:legal`` -> {"lang": "ja", "team": "legal"}."""
    pairs = [f.partition(":") for f in filters]
    if any(not field or not sep for field, sep, _ in pairs):
        raise InvalidRequest("a filter is field:value")
    return {field: value for field, _, value in pairs}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/tenants/{tenant_id}/conversations")
async def conversations(request: Request, cursor: str | None = None,
                        ctx: TenantContext = Depends(current_tenant)) -> dict[str, Any]:
    page = await runtime_of(request).store.list_conversations(ctx, limit=50, cursor=cursor)
    return page.model_dump(mode="json")


@app.post("/tenants/{tenant_id}/conversations/{conversation_id}/messages", status_code=201)
async def post_message(conversation_id: str, body: NewMessage, request: Request,
                       ctx: TenantContext = Depends(current_tenant)) -> dict[str, Any]:
    runtime = runtime_of(request)
    message = await runtime.store.append(ctx, conversation_id, body.role, body.content)
    delay = int(os.environ.get("ASSISTANT_REPLY_DELAY", "1"))
    job_id = await runtime.jobs.schedule(ctx, Job(kind=REPLY, payload={"conversation_id": conversation_id,
                                                                        "seq": message.seq}), delay=delay)
    return {"message": message.model_dump(mode="json"), "reply_job": job_id}


@app.get("/tenants/{tenant_id}/conversations/{conversation_id}/messages")
async def history(conversation_id: str, request: Request, cursor: str | None = None, limit: int = 50,
                  ctx: TenantContext = Depends(current_tenant)) -> dict[str, Any]:
    page = await runtime_of(request).store.history(ctx, conversation_id, limit=limit, cursor=cursor)
    return page.model_dump(mode="json")


@app.delete("/tenants/{tenant_id}/conversations/{conversation_id}", status_code=204)
async def delete_conversation(conversation_id: str, request: Request,
                              ctx: TenantContext = Depends(current_tenant)) -> None:
    await runtime_of(request).store.delete_conversation(ctx, conversation_id)


@app.put("/tenants/{tenant_id}/documents/{doc_id}")
async def put_document(doc_id: str, body: DocumentBody, request: Request,
                       ctx: TenantContext = Depends(current_tenant)) -> dict[str, Any]:
    """Create or replace a document; the index changes in the same transaction."""
    document = await runtime_of(request).store.put_document(ctx, doc_id, body.title, body.body,
                                                            body.metadata, body.source)
    return document.model_dump(mode="json")


@app.get("/tenants/{tenant_id}/documents")
async def list_documents(request: Request, cursor: str | None = None,
                         ctx: TenantContext = Depends(current_tenant)) -> dict[str, Any]:
    page = await runtime_of(request).store.list_documents(ctx, limit=50, cursor=cursor)
    return page.model_dump(mode="json")


@app.get("/tenants/{tenant_id}/documents/{doc_id}")
async def get_document(doc_id: str, request: Request, ctx: TenantContext = Depends(current_tenant)) -> dict[str, Any]:
    document = await runtime_of(request).store.get_document(ctx, doc_id)
    if document is None:
        raise DocumentNotFound(f"no document {doc_id!r}")
    return document.model_dump(mode="json")


@app.delete("/tenants/{tenant_id}/documents/{doc_id}", status_code=204)
async def delete_document(doc_id: str, request: Request, ctx: TenantContext = Depends(current_tenant)) -> None:
    if not await runtime_of(request).store.delete_document(ctx, doc_id):
        raise DocumentNotFound(f"no document {doc_id!r}")


@app.get("/tenants/{tenant_id}/search")
async def search(request: Request, q: str, filters: list[str] = Query(default=[], alias="filter"),
                 facets: list[str] = Query(default=[], alias="facet"), fuzzy: bool = False, limit: int = 10,
                 offset: int = 0, cursor: str | None = None,
                 ctx: TenantContext = Depends(current_tenant)) -> dict[str, Any]:
    """The tenant's documents ranked by BM25, with facet counts and highlighted snippets."""
    result = await runtime_of(request).store.search(ctx, q, filters=parse_filters(filters), facets=facets,
                                                    limit=limit, offset=offset, cursor=cursor, fuzzy=fuzzy)
    return result.model_dump(mode="json")


@app.get("/tenants/{tenant_id}/suggest")
async def suggest(prefix: str, request: Request, ctx: TenantContext = Depends(current_tenant)) -> dict[str, Any]:
    """Title words completing the prefix; ``analyzer_mismatch`` as a search's answer says it."""
    found = await runtime_of(request).store.suggest(ctx, prefix)
    return {"suggestions": found, "analyzer_mismatch": found.analyzer_mismatch}


@app.post("/tenants/{tenant_id}/uploads", status_code=201)
async def new_upload(body: NewUpload, request: Request,
                     ctx: TenantContext = Depends(current_tenant)) -> dict[str, Any]:
    """A pre-signed upload: the client PUTs the file to ``url`` with exactly ``headers``."""
    upload = await runtime_of(request).objects.presign_upload(ctx, body.filename, body.size, body.content_type)
    return upload.model_dump(mode="json")


@app.get("/tenants/{tenant_id}/uploads/download")
async def download(key: str, request: Request, ctx: TenantContext = Depends(current_tenant)) -> dict[str, str]:
    """A pre-signed download of one of the tenant's own keys (403 for anyone else's)."""
    return {"url": await runtime_of(request).objects.presign_download(ctx, key)}
