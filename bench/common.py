"""What every benchmark shares: a fresh sandbox in a temporary directory, a
project pointed at it (this process and any spawned workers), and timing."""

from __future__ import annotations

import compileall
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]

T = TypeVar("T")
Side = tuple[list[str], dict[str, str]]  # a process's argv and what it adds to the environment


@contextmanager
def bench_sandbox(name: str) -> Iterator[tuple[Any, Any, Path]]:
    """(SandboxEndpoints, Workspace, project dir) on a sandbox of the run's own,
    stopped and deleted afterwards."""
    from tenantctl.sandbox import Sandbox
    from tenantctl.workspace import Workspace

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix=f"{name}-bench-"))
    os.chmod(work, 0o755)  # the sandbox's PostgreSQL user must reach its state directory
    box = Sandbox(work / "sandbox")
    try:
        endpoints = box.up()
        os.environ.update(endpoints.aws_env())
        os.environ["TENANTCTL_SANDBOX_DIR"] = str(endpoints.state_dir)
        os.environ.pop("TENANTCTL_TARGET", None)
        project = work / "project"
        (project / "stacks").mkdir(parents=True)
        shutil.copy(REPO / "Pulumi.yaml", project / "Pulumi.yaml")
        yield endpoints, Workspace(project_dir=project, cwd=project), project
    finally:
        box.down()
        shutil.rmtree(work, ignore_errors=True)


def compile_sources() -> str:
    """Compile the project's modules to bytecode, as installing the package does, so a timed process
    imports them as it imports its libraries (from ``__pycache__``): with an editable install and
    ``PYTHONDONTWRITEBYTECODE`` set, as on the sandbox machines, every process would compile them from
    source again while the floor's libraries load compiled. Returns the line the bench prints."""
    for tree in ("src", "infra"):
        compileall.compile_dir(REPO / tree, quiet=1)
    return "project modules imported from bytecode, as an installed package does (compileall of src/ and infra/)"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def in_turn(sides: Sequence[T], k: int) -> list[T]:
    """``sides`` in order for an even ``k`` (a round, or round + item), reversed for an odd
    one: no side always runs first, into caches the other warmed or a load the other left."""
    return list(sides) if k % 2 == 0 else list(sides)[::-1]


def interleaved_processes(cases: dict[str, dict[str, Side]], env: dict[str, str], cwd: Path,
                          rounds: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per process of each case's sides, ``rounds`` times, sides taking turns at running
    first; a side that exits non-zero ends the bench with its stderr."""
    times = {case: {side: [] for side in sides} for case, sides in cases.items()}
    for round_ in range(rounds):
        for case, sides in cases.items():
            for side in in_turn(list(sides), round_):
                argv, side_env = sides[side]
                done, seconds = timed(lambda argv=argv, side_env=side_env: subprocess.run(
                    argv, cwd=cwd, env={**env, **side_env}, capture_output=True, text=True))
                if done.returncode != 0:
                    sys.exit(f"{case} / {side}: {' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
                times[case][side].append(seconds)
        print(f"  round {round_ + 1}/{rounds}", file=sys.stderr)
    return times
