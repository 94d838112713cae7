"""Per-tenant logins past the role's CONNECTION LIMIT, on the sandbox: more
concurrent requests for one tenant than its role admits wait for one of the
process's connections of that tenant instead of failing with PostgreSQL's `too
many connections for role` (sync threads and asyncio tasks), a wait past
its bound is StoreUnavailable (503), and a saturated tenant holds up no other."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from runtime_tenants import jwt_settings, runtime, runtime_env  # noqa: F401  (fixtures)

from tenant_runtime import StoreUnavailable, TenantRuntime
from tenant_runtime.aio import AsyncTenantRuntime

HOLD = "SELECT pg_sleep(0.1)"  # each request holds its connection a moment: they overlap


def role_limit(env, tenant_id: str) -> int:
    with env.admin() as conn:
        return conn.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s",
                            (env.secret(tenant_id)["username"],)).fetchone()[0]


def in_threads(n: int, request) -> list[Exception]:
    """``request(i)`` in ``n`` threads started together: what they raised."""
    start, errors = threading.Barrier(n), []

    def run(i: int) -> None:
        start.wait()
        try:
            request(i)
        except Exception as exc:  # noqa: BLE001 - returned
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return errors


def test_threads_past_the_roles_limit_wait_for_a_connection_and_every_append_lands(runtime, runtime_env):
    """16 threads on one tenant whose role admits 10 used to get `too many
    connections for role` (StoreUnavailable) for the logins past 10."""
    tid = runtime_env.ids["a"]
    threads_n = 16
    assert role_limit(runtime_env, tid) < threads_n
    ctx = runtime.resolve(runtime_env.token(tid), tid)

    def request(i: int) -> None:
        with runtime.store.transaction(ctx) as conn:
            conn.execute(HOLD)
        for k in range(3):
            runtime.store.append(ctx, "conv-cap-threads", "user", f"t{i:02d}-{k}")

    assert in_threads(threads_n, request) == []
    got = sorted(m.content for m in runtime.store.history(ctx, "conv-cap-threads", limit=100).messages)
    assert got == sorted(f"t{i:02d}-{k}" for i in range(threads_n) for k in range(3))


@pytest.mark.anyio
async def test_tasks_past_the_roles_limit_wait_for_a_connection_and_every_append_lands(runtime_env):
    """30 asyncio tasks on one tenant whose role admits 10."""
    tid, tasks_n = runtime_env.ids["a"], 30
    assert role_limit(runtime_env, tid) < tasks_n
    async with AsyncTenantRuntime(jwt_settings(), runtime_env.registry_table,
                                  endpoint_url=runtime_env.sandbox.aws_endpoint_url,
                                  region=runtime_env.sandbox.region) as art:
        ctx = await art.resolve(runtime_env.token(tid), tid)

        async def work(i: int) -> None:
            async with art.store.transaction(ctx) as conn:
                await conn.execute(HOLD)
            for k in range(3):
                await art.store.append(ctx, "conv-cap-tasks", "user", f"a{i:02d}-{k}")

        await asyncio.gather(*(work(i) for i in range(tasks_n)))
        page = await art.store.history(ctx, "conv-cap-tasks", limit=200)
    assert sorted(m.content for m in page.messages) == sorted(f"a{i:02d}-{k}" for i in range(tasks_n)
                                                              for k in range(3))


def test_logins_the_server_refuses_while_other_processes_hold_the_role_wait_too(runtime_env):
    """Another process holds 7 of the role's 10 sessions: this one's logins past
    3 are refused by the server, and its requests wait for its own 3 instead."""
    tid = runtime_env.ids["b"]
    others = [runtime_env.connect_as(tid) for _ in range(role_limit(runtime_env, tid) - 3)]
    try:
        with TenantRuntime(jwt_settings(), runtime_env.registry_table,
                           endpoint_url=runtime_env.sandbox.aws_endpoint_url, region=runtime_env.sandbox.region) as rt:
            ctx = rt.resolve(runtime_env.token(tid), tid)

            def request(i: int) -> None:
                with rt.store.transaction(ctx) as conn:
                    conn.execute(HOLD)
                rt.store.append(ctx, "conv-cap-others", "user", f"o{i}")

            assert in_threads(8, request) == []
            assert sorted(m.content for m in rt.store.history(ctx, "conv-cap-others").messages) == [
                f"o{i}" for i in range(8)]
    finally:
        for conn in others:
            conn.close()


def hold_connections(rt: TenantRuntime, ctx, n: int):
    """``n`` threads each inside a transaction of ``ctx``'s tenant until the returned event is set."""
    inside, release = threading.Barrier(n + 1), threading.Event()

    def hold() -> None:
        with rt.store.transaction(ctx):
            inside.wait()
            release.wait(10)

    holders = [threading.Thread(target=hold) for _ in range(n)]
    for h in holders:
        h.start()
    inside.wait()
    return release, holders


def test_a_wait_past_its_bound_is_store_unavailable_and_another_tenant_is_served_meanwhile(runtime_env):
    """The process's cap (2 here, under the role's 10) saturated by one tenant:
    its next request waits ``tenant_connection_wait`` then fails StoreUnavailable
    (503, retry); a request freed meanwhile is served; its neighbour is served at once."""
    a, b = runtime_env.ids["a"], runtime_env.ids["b"]
    with TenantRuntime(jwt_settings(), runtime_env.registry_table, endpoint_url=runtime_env.sandbox.aws_endpoint_url,
                       region=runtime_env.sandbox.region, max_tenant_connections=2,
                       tenant_connection_wait=0.3) as rt:
        ctx_a, ctx_b = (rt.resolve(runtime_env.token(t), t) for t in (a, b))
        rt.store.append(ctx_b, "conv-cap-neighbour", "user", "warm")  # its login, secret and data key cached
        release, holders = hold_connections(rt, ctx_a, 2)
        try:
            began = time.monotonic()
            with pytest.raises(StoreUnavailable, match="no connection of tenant .* free within 0.3 s") as refused:
                rt.store.append(ctx_a, "conv-cap-wait", "user", "too late")
            assert 0.3 <= time.monotonic() - began < 2 and refused.value.status_code == 503

            began = time.monotonic()  # the neighbour's requests never queue behind a's
            rt.store.append(ctx_b, "conv-cap-neighbour", "user", "served")
            assert time.monotonic() - began < 0.3

            threading.Timer(0.1, release.set).start()  # a waiter given a connection within its bound is served
            rt.store.append(ctx_a, "conv-cap-wait", "user", "in time")
        finally:
            release.set()
            for h in holders:
                h.join()
        assert [m.content for m in rt.store.history(ctx_a, "conv-cap-wait").messages] == ["in time"]
        assert [m.content for m in rt.store.history(ctx_b, "conv-cap-neighbour").messages] == ["served", "warm"]


@pytest.mark.anyio
async def test_async_a_wait_past_its_bound_is_store_unavailable_and_another_tenant_is_served(runtime_env):
    """The same on the event loop, a cap of 1: the task waiting while the
    tenant's one connection is held fails after 0.3 s; one it is handed to in time is served."""
    a, b = runtime_env.ids["a"], runtime_env.ids["b"]
    async with AsyncTenantRuntime(jwt_settings(), runtime_env.registry_table,
                                  endpoint_url=runtime_env.sandbox.aws_endpoint_url, region=runtime_env.sandbox.region,
                                  max_tenant_connections=1, tenant_connection_wait=0.3) as art:
        ctx_a, ctx_b = [await art.resolve(runtime_env.token(t), t) for t in (a, b)]
        async with art.store.transaction(ctx_a):  # the tenant's one connection
            began = time.monotonic()
            with pytest.raises(StoreUnavailable, match="no connection of tenant .* free within 0.3 s"):
                await art.store.append(ctx_a, "conv-cap-await", "user", "too late")
            assert 0.3 <= time.monotonic() - began < 2
            await art.store.append(ctx_b, "conv-cap-aneighbour", "user", "served")  # its own cap of 1: not queued
            late = asyncio.create_task(art.store.append(ctx_a, "conv-cap-await", "user", "in time"))
            await asyncio.sleep(0.05)
        await late
        assert [m.content for m in (await art.store.history(ctx_a, "conv-cap-await")).messages] == ["in time"]
        assert [m.content for m in (await art.store.history(ctx_b, "conv-cap-aneighbour")).messages] == ["served"]
