"""Errors the CLI reports as one line, each with its documented exit code."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class TenantctlError(Exception):
    """``rule``: the naming or policy rule the refusal names; ``details``: lines
    shown under the one-line message (what a refused action would have done).
    ``--json`` errors carry both."""

    exit_code = 1

    def __init__(self, message: str = "", *, rule: str | None = None, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.details = list(details or [])


class InvalidInput(TenantctlError):
    """Bad tenant id, spec or option."""

    exit_code = 3


class UsageError(InvalidInput):
    """A malformed or missing argument, or options that exclude each other, found
    by the operation rather than by the CLI's parser: exit 2 like the parser's own
    (an InvalidInput still, for callers in Python that catch that)."""

    exit_code = 2  # USAGE_ERROR, below: click's code


def require_one_or_all(tenant_id: str | None, all_: bool, cell: str | None = None) -> None:
    """UsageError unless exactly one of a tenant id, --all and (commands that take it) --cell was given."""
    if cell is not None:
        if tenant_id or all_:
            raise UsageError("Option '--cell' cannot be used with a tenant id or --all: give one of them.")
        return
    if all_ and tenant_id:
        raise UsageError("Option '--all' cannot be used with a tenant id: give one or the other.")
    if not all_ and not tenant_id:
        raise UsageError("Missing argument 'ID': give a tenant id, or --all.")


class ApplyFailed(TenantctlError):
    """The engine could not apply, destroy or preview a stack."""

    exit_code = 4


@contextmanager
def engine_step(what: str) -> Iterator[None]:
    """Anything but a TenantctlError raised inside becomes ApplyFailed("<what> failed: ...")."""
    try:
        yield
    except TenantctlError:
        raise
    except Exception as exc:
        raise ApplyFailed(f"{what} failed: {exc}") from exc


def one_line(exc: BaseException) -> str:
    """An error as a summary shows it: ours as written, anything else with its type."""
    return str(exc) if isinstance(exc, TenantctlError) else f"{type(exc).__name__}: {exc}"


@contextmanager
def contained(result: Any) -> Iterator[None]:
    """One tenant's failure recorded on its ``result`` (``ok``, ``error``) instead
    of stopping the others (fleet runs: apply, refresh)."""
    try:
        yield
    except Exception as exc:
        result.ok, result.error = False, one_line(exc)


class Conflict(TenantctlError):
    """Another operation holds the tenant's lock, or the record changed under us."""

    exit_code = 5


class Locked(Conflict):
    """Another live run holds the tenant's lock (the message names it): a fleet command skips the
    tenant, saying why, rather than failing it."""


class NotFound(TenantctlError):
    exit_code = 6


class TargetUnavailable(TenantctlError):
    """The sandbox or the configured AWS target cannot be reached or used."""

    exit_code = 7


class RegistryUnreachable(TargetUnavailable):
    """The registry table cannot be read or written (endpoint down, table
    missing, retries exhausted): exit 7, like any unavailable target."""


class PolicyViolation(TenantctlError):
    """An isolation invariant is broken (policy gate or `check`)."""

    exit_code = 8


class PostureCheckFailed(PolicyViolation):
    """The posture check after an apply (a provision, a move's finalize, a
    revive) failed: what was applied stands (recorded), the tenant is not as
    `check` wants it (e.g. drifted out of band: `provision ID` repairs)."""


class QuotaExceeded(TenantctlError):
    """No cell of the tenant's region can take it (every one full, draining, or
    its account out of VPCs, RDS instances or IAM roles), or the forced cell
    cannot: refused by placement before anything was created."""

    exit_code = 11


class DrillFailed(TenantctlError):
    """The drill ran but its verdict is fail (mismatch, or RTO/RPO over the limit)."""

    exit_code = 9


class DataCorrupt(DrillFailed):
    """A tenant's stored data failed authentication or its checksum where it
    is read whole (`search reindex`: a sealed row, a large body's object
    swapped in S3): tampered with, or another tenant's. A drill's verdict in
    all but name: the same exit code, 9."""


class BackupCorrupt(DrillFailed):
    """A backup failed authentication or its checksum (tampered, truncated or foreign)."""


class KeyUnusable(TenantctlError):
    """The tenant's KMS key cannot be used: pending deletion, disabled, or not the tenant's."""

    exit_code = 10


class NotConfirmed(TenantctlError):
    """An action that deletes or replaces something was not confirmed: no --yes
    and no terminal to ask on, or the operator said no. Nothing was changed."""

    exit_code = 13
    changed_nothing = True  # as a refusal of the policy gate before the first change says it


USAGE_ERROR = UsageError.exit_code  # click's own code for a bad flag, argument or command
CHANGES_PENDING = 12  # changes, drift or findings: distinct from a usage error, so CI can tell a typo from a diff

EXIT_CODES = {
    0: "success",
    1: "unexpected error",
    USAGE_ERROR: "usage error: unknown command or flag, missing or malformed argument",
    CHANGES_PENDING: "changes found: a preview's pending changes (`apply --preview`, `provision --preview`, "
                     "`platform preview`), `refresh`'s drift, `audit`'s findings",
    NotConfirmed.exit_code: "not confirmed: an action that deletes or replaces needs --yes (or a yes on a terminal); "
                            "nothing was changed",
    130: "interrupted (Ctrl-C): a tenant lock the run held is released with 'interrupted'",
    143: "terminated (SIGTERM): a tenant lock the run held is released with 'interrupted'",
    InvalidInput.exit_code: "invalid input: tenant id, spec or option refused (message names the rule)",
    ApplyFailed.exit_code: "the engine failed to preview/apply/destroy (nothing further is changed)",
    Conflict.exit_code: "conflict: tenant locked by another run or being moved, or its record changed concurrently",
    NotFound.exit_code: "unknown tenant, workspace or backup",
    TargetUnavailable.exit_code: "target unavailable: sandbox not running/startable, AWS or Pulumi CLI missing; a "
                                 "move's target not caught up in time (writes resumed, nothing switched)",
    PolicyViolation.exit_code: "an isolation invariant is violated",
    DrillFailed.exit_code: "a drill's verdict is fail (mismatch, corrupt backup, RTO/RPO over the limit); a move's "
                           "stores differed as of the freeze (switched back to the old store)",
    KeyUnusable.exit_code: "the tenant's KMS key is unusable (pending deletion, disabled, or not the tenant's)",
    QuotaExceeded.exit_code: "no cell of the tenant's region has room (cells full or draining, account quotas), "
                             "or a move's target tier has no slot in its target cell: refused before anything "
                             "was created",
}


_TERMINATED: list[int] = []
REDELIVER_SECONDS = 0.05  # a signal whose exception Python ignored, sent again after


class Terminated(KeyboardInterrupt):
    """A signal (SIGTERM) unwinding the run as Ctrl-C does. Its own class because CPython 3.11 marks
    a plain KeyboardInterrupt raised inside code run from a string (``exec``/``eval``: a dataclass's or
    namedtuple's generated methods, being defined while a module loads) as unhandled even when caught,
    and then ends the process by SIGINT instead of the exit code chosen; it compares the exact type."""


def interrupt_on_sigterm() -> None:
    """SIGTERM (a CI job cancelled, `kill PID`) unwinds like Ctrl-C: ``Terminated``, a
    KeyboardInterrupt, is raised in the main thread, so a run holding a tenant's registry lock
    releases it with "interrupted" in ``last_error`` instead of dying with it
    (Python's default for SIGTERM is to exit at once, no cleanup)."""

    def interrupt(signum: int, frame: Any) -> None:
        _TERMINATED.append(signum)
        raise Terminated(signal.Signals(signum).name)

    def unraisable(hook: Any) -> None:
        # Raised where Python ignores exceptions (a weakref callback, a __del__: "Exception ignored
        # in ..."), the run would go on as if never signalled: the signal (SIGTERM, or Ctrl-C's
        # SIGINT) is delivered again shortly, from a timer, so that it lands in the run's own code.
        if isinstance(hook.exc_value, KeyboardInterrupt):
            signum = _TERMINATED[-1] if isinstance(hook.exc_value, Terminated) and _TERMINATED else signal.SIGINT
            timer = threading.Timer(REDELIVER_SECONDS, os.kill, (os.getpid(), signum))
            timer.daemon = True
            timer.start()
            return
        default_unraisable(hook)

    if not getattr(sys.unraisablehook, "redelivers", False):  # wrapped once however often this is called
        default_unraisable = sys.unraisablehook
        unraisable.redelivers = True  # type: ignore[attr-defined]
        sys.unraisablehook = unraisable
    signal.signal(signal.SIGTERM, interrupt)


@contextmanager
def interrupts_within() -> Iterator[None]:
    """Ctrl-C and SIGTERM unwind the block (``interrupt_on_sigterm``) and are
    ignored after it: for a pool worker's task, which releases the tenant lock
    it holds, not the pool's loop between tasks, which the interrupt would end
    with a traceback (the pool's process, signalled with its group, shuts the
    pool down; a signal redelivered after the task lands nowhere)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt_on_sigterm()
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


def terminated() -> int:
    """The signal number that interrupted this process by ``interrupt_on_sigterm``, else 0."""
    return _TERMINATED[0] if _TERMINATED else 0
