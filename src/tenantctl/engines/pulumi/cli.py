"""The Pulumi CLI the Automation API drives: finding it, installing it on
request (`tenantctl setup pulumi`), and running one operation so that Ctrl-C
leaves the stack unlocked."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from tenantctl.engines.pulumi.errors import MISSING_CLI
from tenantctl.errors import TargetUnavailable

T = TypeVar("T")

# How long a first Ctrl-C waits for the CLI (which got the same SIGINT) to finish
# its in-flight resource operations before the update is cancelled.
CANCEL_GRACE_SECONDS = 30.0

# The oldest CLI the engine drives: `--config-file` on preview/up/refresh came in 3.169, and
# 3.174 imports a resource whose settings differ from the program's, then updates it, in one
# deployment (a cell taking over the RDSOSMetrics log group imports it under another cell's key).
MIN_CLI_VERSION = "3.174.0"


def sdk_version() -> str:
    return dist_version("pulumi")


def default_root(version: str | None = None) -> Path:
    """Where PulumiCommand.install puts the CLI by default."""
    return Path.home() / ".pulumi" / "versions" / (version or sdk_version())


def locate(root: Path | None = None) -> Path | None:
    """The root holding bin/pulumi (None: the one on PATH), or raise when none.

    Looks at an explicit root, then PATH, then where `tenantctl setup pulumi` and
    Pulumi's own installer put it."""
    if root is not None:
        if (root / "bin" / "pulumi").is_file():
            return root
        raise TargetUnavailable(f"{MISSING_CLI} (nothing at {root / 'bin' / 'pulumi'})")
    if shutil.which("pulumi"):
        return None
    for candidate in (default_root(), Path.home() / ".pulumi"):
        if (candidate / "bin" / "pulumi").is_file():
            return candidate
    raise TargetUnavailable(MISSING_CLI)


def command(root: Path | None = None) -> Any:
    """A pulumi.automation.PulumiCommand for the located CLI."""
    from pulumi.automation import PulumiCommand
    from pulumi.automation.errors import InvalidVersionError
    from semver import VersionInfo

    found = locate(root)
    try:
        return PulumiCommand(root=str(found) if found else None, version=VersionInfo.parse(MIN_CLI_VERSION))
    except FileNotFoundError:
        raise TargetUnavailable(MISSING_CLI) from None
    except InvalidVersionError as exc:
        raise TargetUnavailable(f"unsupported Pulumi CLI version ({exc}): run `tenantctl setup pulumi`") from None


class CliInstall(BaseModel):
    root: str
    command: str
    version: str


def install(version: str | None = None, root: Path | None = None) -> CliInstall:
    """Download and install the CLI (PulumiCommand.install); a clear error when
    the download is impossible (no internet, proxy)."""
    import subprocess
    import urllib.error

    from pulumi.automation import PulumiCommand
    from semver import VersionInfo

    wanted = version or sdk_version()
    try:
        parsed = VersionInfo.parse(wanted.lstrip("v"))
    except ValueError:
        from tenantctl.errors import UsageError

        raise UsageError(f"Invalid value for '--version': {wanted!r} is not a version (e.g. 3.150.0).") from None
    target = root or default_root(str(parsed))
    try:
        cmd = PulumiCommand.install(root=str(target), version=parsed)
    except (urllib.error.URLError, OSError, subprocess.CalledProcessError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "output", None) or exc
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace").strip().splitlines()[-1:] or ["download failed"]
            reason = reason[0]
        raise TargetUnavailable(
            f"could not install the Pulumi CLI {parsed} into {target}: {reason} "
            "(the installer downloads it: this machine needs internet access, or install the CLI by hand)"
        ) from None
    return CliInstall(root=str(target), command=cmd.command, version=str(cmd.version or parsed))


def run_cancellable(operation: Callable[[], T], cancel: Callable[[], None],
                    grace: float = CANCEL_GRACE_SECONDS) -> T:
    """Run `operation` (a blocking Automation API call) so that Ctrl-C leaves the
    stack unlocked.

    The operation runs in a worker thread; the main thread waits interruptibly.
    On Ctrl-C the CLI, in the same process group, got the SIGINT too and stops
    gracefully: wait up to `grace` seconds for it (a second Ctrl-C stops
    waiting); only if it is still running then, `cancel()` (stack.cancel())
    it, and re-raise KeyboardInterrupt. Never once it stopped: on file and S3
    backends `pulumi cancel` deletes every lock file of the stack, another
    runner's live lock included."""
    outcome: dict[str, Any] = {}
    # Events, not Thread.join: on Python 3.11 a join interrupted by Ctrl-C marks
    # the still-running thread as stopped, and later joins return at once.
    began, finished = threading.Event(), threading.Event()

    def work() -> None:
        began.set()
        try:
            outcome["value"] = operation()
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc
        finally:
            finished.set()

    worker = threading.Thread(target=work, name="pulumi-operation", daemon=True)
    try:
        # start() inside the try: it waits for the thread, and a Ctrl-C then, the
        # operation already running, gets the same grace as one a minute later.
        worker.start()
        while not finished.wait(0.2):
            pass
    except KeyboardInterrupt:
        try:
            finished.wait(grace)
        except KeyboardInterrupt:
            pass
        if began.is_set() and not finished.is_set():  # never one that did not start: it would be another's lock
            try:
                cancel()
            except Exception:  # it ended meanwhile: nothing in progress any more
                pass
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def python_env() -> dict[str, str]:
    """Run the program and the CrossGuard pack with tenantctl's own
    interpreter (it has pulumi_aws, pulumi-policy and tenantctl installed),
    whatever `python3` is first on PATH.

    The language host honours PULUMI_PYTHON_CMD; a Python policy pack is
    started by the CLI's shim as ``python3 -u -m pulumi.policy``, the first
    `python3` on PATH (sdk/python/dist/pulumi-analyzer-policy-python), so the
    interpreter's directory goes first on PATH when its `python3` is this
    interpreter (a virtualenv's bin/ always)."""
    import sys

    env = {"PULUMI_PYTHON_CMD": sys.executable, "PULUMI_SKIP_UPDATE_CHECK": "true",
           **({"VIRTUAL_ENV": os.environ["VIRTUAL_ENV"]} if "VIRTUAL_ENV" in os.environ else {})}
    here = Path(sys.executable).parent
    try:
        ours = (here / "python3").is_file() and os.path.samefile(here / "python3", sys.executable)
    except OSError:
        ours = False
    if ours:
        env["PATH"] = os.pathsep.join([str(here), os.environ.get("PATH", "")])
    return env
