"""What every benchmark shares: a fresh sandbox in a temporary directory, a
project pointed at it (this process and any spawned workers), and timing."""

from __future__ import annotations

import compileall
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


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
