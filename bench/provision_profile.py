"""Where a warm pooled provision's time goes: per-phase timers over N pooled
tenants provisioned in a row (after a warm-up tenant), then cProfile's top
functions by cumulative time over the same kind of run.

    python bench/provision_profile.py                 # 10 timed tenants, 10 profiled
    python bench/provision_profile.py --n 20 --top 40

Phases are the provision's parts, timed by wrapping the functions that do
them: the plan pass, the apply pass (the program run that makes the changes),
state writes, the post-provision check (its database, gateway, AWS and
placement parts), placement and the registry writes. Nested phases are also
counted in their parents ("apply pass" includes its state writes)."""

from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import os
import pstats
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
        total = []
        for i in range(args.n):
            start = time.perf_counter()
            provision(ws, TenantSpec(id=f"t{i}"))
            total.append(time.perf_counter() - start)
            for name, spent in CURRENT.items():
                PHASES[name].append(spent)
            CURRENT.clear()
        report(total)
        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(args.n):
            provision(ws, TenantSpec(id=f"p{i}"))
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)
        print(out.getvalue())
        print(f"(load average {os.getloadavg()[0]:.1f})", file=sys.stderr)


if __name__ == "__main__":
    main()
