"""The async path never blocks the event loop: cached work runs on the loop,
a registry read (or any network call) is handed to the I/O pool, and a real
asyncio server keeps answering while one request waits on a slow registry."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import boto3
import httpx
import jwt
import pytest
import uvicorn
from botocore.stub import Stubber
from runtime_fixtures import record
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from test_runtime_registry import item

from tenant_runtime.aio import AsyncTenantResolver, Offloader
from tenant_runtime.asgi import TenantMiddleware
from tenant_runtime.auth import JWTSettings, TenantResolver
from tenant_runtime.blocking import WouldBlock, inline, may_block
from tenant_runtime.registry import RegistryReader

SECRET = "s" * 32
WAIT = 30.0  # a deadline only: what the test waits for is an event


def token(tenant: str) -> str:
    return jwt.encode({"tenant_id": tenant, "exp": time.time() + 600}, SECRET, "HS256")


def registry(slow_tenants: tuple[str, ...] = (), reading: threading.Event | None = None,
             answer: threading.Event | None = None) -> RegistryReader:
    """A real RegistryReader on a real botocore client answering from a
    Stubber; a read of one of ``slow_tenants`` sets ``reading`` and answers
    only once ``answer`` is set."""
    client = boto3.client("dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(client)
    for tid in ("fast", *slow_tenants):
        stub.add_response("get_item", item(record(tid)), {"TableName": "reg", "Key": {"tenant_id": {"S": tid}}})
    stub.activate()

    def delay(params, **kwargs):
        if params.get("Key", {}).get("tenant_id", {}).get("S") in slow_tenants:
            reading.set()
            answer.wait(WAIT)

    client.meta.events.register_first("before-parameter-build.dynamodb.GetItem", delay)
    return RegistryReader("reg", client=client)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_may_block_only_inside_an_inline_attempt():
    may_block()  # sync callers: nothing happens
    with pytest.raises(WouldBlock), inline():
        may_block()


@pytest.mark.anyio
async def test_cached_resolution_stays_on_the_loop_and_a_miss_goes_to_the_pool():
    reg = registry()
    offload = Offloader(2)
    resolver = AsyncTenantResolver(TenantResolver(JWTSettings(key=SECRET, algorithms=("HS256",)), reg), offload)
    loop_thread = threading.get_ident()
    threads = []
    original = reg._fetch

    def fetch(tenant_id, consistent=False):
        found = original(tenant_id, consistent)  # raises WouldBlock on the loop, before reading
        threads.append(threading.get_ident())
        return found

    reg._fetch = fetch
    ctx = await resolver.resolve(token("fast"), "fast")
    assert ctx.tenant_id == "fast" and offload.offloaded == 1 and reg.reads == 1
    assert threads == [threads[0]] and threads[0] != loop_thread  # the read ran on a pool thread, once
    for _ in range(5):  # cached: on the loop, no hand-off, no read
        assert (await resolver.resolve(token("fast"), "fast")).tenant_id == "fast"
    assert offload.offloaded == 1 and reg.reads == 1
    offload.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.anyio
async def test_a_slow_registry_read_does_not_stall_other_requests():
    """uvicorn serving the middleware: while one request waits on the registry
    (until the test lets it answer), 40 requests of a cached tenant are all
    answered. Had the read blocked the loop, none would be, and the wait for
    them would run out."""
    reading, answer = threading.Event(), threading.Event()
    resolver = TenantResolver(JWTSettings(key=SECRET, algorithms=("HS256",)), registry(("slow",), reading, answer))

    async def me(request: Request):
        return JSONResponse({"tenant": request.state.tenant.tenant_id})

    app = TenantMiddleware(Starlette(routes=[Route("/me", me)]), resolver)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while not server.started:  # its thread may get no turn for seconds on a loaded machine
            assert time.monotonic() < deadline, f"the server did not start in {WAIT} s"
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WAIT) as client:
            assert (await client.get("/me", headers={"Authorization": f"Bearer {token('fast')}"})).status_code == 200
            slow = asyncio.create_task(client.get("/me", headers={"Authorization": f"Bearer {token('slow')}"}))
            assert await asyncio.to_thread(reading.wait, WAIT)  # the slow request is in the registry read now

            async def fast() -> str:
                return (await client.get("/me", headers={"Authorization": f"Bearer {token('fast')}"})).json()["tenant"]

            fast_answers = await asyncio.wait_for(asyncio.gather(*(fast() for _ in range(40))), WAIT)
            # Every fast request was answered while the slow one was still waiting.
            assert fast_answers == ["fast"] * 40 and not slow.done()
            answer.set()
            assert (await slow).json() == {"tenant": "slow"}
    finally:
        answer.set()
        server.should_exit = True
        thread.join(10)
