"""Where a warm pooled provision's time goes: per-phase timers over N pooled
tenants provisioned in a row (after a warm-up tenant), then cProfile's top
functions by cumulative time over the same kind of run, and that CPU by layer.

    python bench/provision_profile.py                 # 10 timed tenants, 10 profiled
    python bench/provision_profile.py --n 20 --top 40

Phases are the provision's parts, timed by wrapping the functions that do
them: the plan pass, the apply pass (the program run that makes the changes),
state writes, the post-provision check (its database, gateway, AWS and
placement parts), placement and the registry writes. Nested phases are also
counted in their parents ("apply pass" includes its state writes).

The profile covers every thread on its own CPU time (``time.thread_time``): the
mocks' ``RegisterResource`` (and with it every handler's cloud calls) runs on
the event loop's executor threads, and the check's areas on their own pool, so
a main-thread profile misses most of the apply pass. The executor the warm-up
started is shut down first, so its threads start again, profiled. Time spent
blocked (waiting on a queue, a lock, a socket) is left out of the layers; the
layers' shares are then applied to the unprofiled client CPU per provision (the
profiler's overhead weighs more on many small calls, so Pulumi's and asyncio's
shares are upper bounds)."""

from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import os
import pstats
import re
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from common import bench_sandbox

PHASES: dict[str, list[float]] = defaultdict(list)
CURRENT: dict[str, float] = defaultdict(float)
LOCK = threading.Lock()


def timing(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def add(start: float) -> None:
        with LOCK:  # check areas run on worker threads too
            CURRENT[name] += time.perf_counter() - start

    def consumed(gen: Iterator[Any]) -> Iterator[Any]:
        start = time.perf_counter()  # a check area is a generator: its work is done as it is consumed
        try:
            yield from gen
        finally:
            add(start)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        if inspect.isgenerator(value):
            return consumed(value)
        add(start)
        return value

    return timed


def wrap(module: Any, attr: str, name: str) -> None:
    setattr(module, attr, timing(name, getattr(module, attr)))


def instrument() -> None:
    from tenantctl import checks, placement
    from tenantctl.checks import aws_posture, db_posture, gateway_posture, network_posture
    from tenantctl.checks import placement as placement_checks
    from tenantctl.engines.local import engine, runtime, state
    from tenantctl.operations import provision
    from tenantctl.registry import RegistryWriter

    wrap(engine.LocalEngine, "_plan", "plan pass")
    wrap(runtime, "run_program", "program runs (plan + apply)")
    wrap(state.StateFile, "save", "state writes")
    wrap(provision, "apply_spec", "up (plan + apply + state)")
    wrap(checks, "check_tenant", "post-provision check")
    wrap(db_posture, "database_checks", "  check: database")
    wrap(gateway_posture, "gateway_checks", "  check: gateway")
    wrap(aws_posture, "aws_checks", "  check: aws")
    wrap(network_posture, "network_checks", "  check: network")
    wrap(placement_checks, "placement_checks", "  check: placement")
    wrap(placement, "place", "placement")
    wrap(RegistryWriter, "mark_active", "registry: mark active")


# What a thread spends blocked, not computing: left out of the layers.
BLOCKED = re.compile(r"SimpleQueue' objects|method 'acquire'|select\b|poll|recv|sleep|method 'wait'|connect|"
                     r"sendall|send'|_ssl")
LAYERS = (  # (path fragment, layer): the first that matches a function's file
    ("/pulumi_aws/", "pulumi_aws resource classes"), ("/pulumi/", "Pulumi runtime (Output, rpc, mocks)"),
    ("/google/protobuf", "protobuf"), ("/asyncio/", "asyncio"), ("/botocore/", "boto3 / http"),
    ("/boto3/", "boto3 / http"), ("/urllib3/", "boto3 / http"), ("/http/", "boto3 / http"),
    ("/email/", "boto3 / http"), ("/psycopg", "psycopg"), ("/pydantic", "pydantic"), ("/jinja2/", "jinja2"),
    ("/yaml/", "yaml"), ("/tenantctl/engines/", "tenantctl: LocalEngine (passes, handlers, state)"),
    ("/tenantctl/checks/", "tenantctl: posture check"), ("/tenantctl/policy/", "tenantctl: policy gate"),
    ("/tenantctl/", "tenantctl: other"), ("/tenant_runtime/", "tenantctl: other"),
    ("/infra/", "infra: program, providers"), ("json", "json"),
    ("typing.py", "typing / inspect / abc (mostly Pulumi's type checks)"),
    ("inspect.py", "typing / inspect / abc (mostly Pulumi's type checks)"),
    ("abc", "typing / inspect / abc (mostly Pulumi's type checks)"),
)


def layer_of(stats: dict, fn: tuple, seen: frozenset = frozenset()) -> str:
    """A function's layer by its file; a builtin's is its heaviest caller's (``isinstance``
    called by Pulumi is Pulumi's time)."""
    path, _, name = fn
    if path == "~":
        if BLOCKED.search(name):
            return "blocked"
        callers = {c: v for c, v in stats[fn][4].items() if c not in seen}
        if not callers:
            return "standard library, other"
        heaviest = max(callers, key=lambda c: callers[c][3])
        return layer_of(stats, heaviest, seen | {fn})
    return next((name for part, name in LAYERS if part in path), "standard library, other")


def layers(stats: pstats.Stats, cpu_ms: float) -> None:
    """Each layer's own time (tottime), as a share of the profiled CPU and in ms of ``cpu_ms``."""
    spent: dict[str, float] = defaultdict(float)
    for fn, row in stats.stats.items():  # type: ignore[attr-defined]
        spent[layer_of(stats.stats, fn)] += row[2]  # type: ignore[attr-defined]
    spent.pop("blocked", None)
    whole = sum(spent.values())
    print(f"{'layer (own time, every thread)':<56}{'share':>7}{'ms/tenant':>11}")
    for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"{name:<56}{seconds / whole:7.1%}{seconds / whole * cpu_ms:11.1f}")


def profiled(run: Callable[[], None]) -> pstats.Stats:
    """``run()`` under cProfile on every thread's CPU time; threads that exist before it
    (the event loop's executor) are not profiled, so it is shut down first."""
    import asyncio

    loop = asyncio.get_event_loop()
    executor = getattr(loop, "_default_executor", None)
    if executor is not None:
        executor.shutdown(wait=True)
        loop._default_executor = None  # type: ignore[attr-defined]
    profilers: list[cProfile.Profile] = []

    def on_thread_start(*_: Any) -> None:
        sys.setprofile(None)
        profiler = cProfile.Profile(time.thread_time)
        with LOCK:
            profilers.append(profiler)
        profiler.enable()

    main = cProfile.Profile(time.thread_time)
    threading.setprofile(on_thread_start)
    main.enable()
    try:
        run()
    finally:
        main.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
    stats = pstats.Stats(main)
    for profiler in profilers:  # a thread still alive keeps its profiler on: its rows so far count
        stats.add(profiler)
    return stats


def report(total: list[float]) -> None:
    print(f"{'phase':<32}{'median ms':>10}{'min ms':>9}")
    print(f"{'whole provision':<32}{statistics.median(total) * 1000:10.1f}{min(total) * 1000:9.1f}")
    for name, values in PHASES.items():
        print(f"{name:<32}{statistics.median(values) * 1000:10.1f}{min(values) * 1000:9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="tenants timed, then as many profiled (default 10)")
    parser.add_argument("--top", type=int, default=30, help="cProfile rows printed (default 30)")
    args = parser.parse_args()

    from tenantctl.models import TenantSpec
    from tenantctl.operations.provision import provision

    instrument()
    with bench_sandbox("provision-profile") as (_, ws, _project):
        ws.ensure_platform()
        provision(ws, TenantSpec(id="warm"))
        CURRENT.clear()
        total, cpu = [], []
        for i in range(args.n):
            start, start_cpu = time.perf_counter(), time.process_time()
            provision(ws, TenantSpec(id=f"t{i}"))
            total.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            for name, spent in CURRENT.items():
                PHASES[name].append(spent)
            CURRENT.clear()
        report(total)
        cpu_ms = statistics.median(cpu) * 1000
        print(f"client CPU per provision (every thread, unprofiled): median {cpu_ms:.1f} ms, "
              f"min {min(cpu) * 1000:.1f} ms")

        def run() -> None:
            for i in range(args.n):
                provision(ws, TenantSpec(id=f"p{i}"))

        stats = profiled(run)
        out = io.StringIO()
        stats.stream = out  # type: ignore[attr-defined]
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)
        print(out.getvalue())
        layers(stats, cpu_ms)
        print(f"(load average {os.getloadavg()[0]:.1f})", file=sys.stderr)


if __name__ == "__main__":
    main()
