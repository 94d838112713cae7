"""Running the Pulumi program in-process under mocks, one run at a time.

Pulumi's runtime settings (monitor, root stack, config, registered outputs)
are process-global, so runs are serialized by ``engine.RUN_LOCK`` and each starts
from a reset runtime: that is what lets up -> up -> destroy (or several
stacks) run in one process.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import json
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pulumi
from pulumi.runtime import resource as pulumi_resource
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.proto import source_pb2
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from tenantctl import collector

Program = Callable[[str], dict[str, Any]]


class UrnMonitor(MockMonitor):
    """MockMonitor that tells the mocks each resource's URN (MockResourceArgs
    has no parent, so the URN cannot be rebuilt there) and its retain_on_delete
    option (MockResourceArgs has none). new_resource runs on the calling
    thread, hence a thread-local."""

    def __init__(self, mocks: pulumi.runtime.Mocks, current: threading.local) -> None:
        super().__init__(mocks)
        self._current = current

    def RegisterResource(self, request):  # noqa: N802 - gRPC method name
        self._current.urn = self.make_urn(request.parent, request.type, request.name)
        self._current.retain = bool(request.retainOnDelete)
        return super().RegisterResource(request)

    def ReadResource(self, request):  # noqa: N802
        self._current.urn = self.make_urn(request.parent, request.type, request.name)
        self._current.retain = False
        return super().ReadResource(request)


def _event_loop() -> asyncio.AbstractEventLoop:
    """The thread's event loop for the runs (Pulumi's ``_sync_await`` uses it),
    with an executor of its own for the registrations (``_interrupted``).
    The main thread's is closed at exit: left open (a run interrupted half way
    leaves it with pending tasks and executor threads), its ``__del__`` closed
    it while the interpreter shut down, where a signal landing printed a
    traceback. Another thread's goes with the thread."""
    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:  # a worker thread has none
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    if loop not in _EXECUTORS:
        _new_executor(loop)
        loop.set_exception_handler(_no_left_task_noise)
    if threading.current_thread() is threading.main_thread() and id(loop) not in _CLOSED_AT_EXIT:
        _CLOSED_AT_EXIT.add(id(loop))
        atexit.register(_close, loop)
    return loop


_CLOSED_AT_EXIT: set[int] = set()
_EXECUTORS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ThreadPoolExecutor] = weakref.WeakKeyDictionary()


def _new_executor(loop: asyncio.AbstractEventLoop) -> None:
    _EXECUTORS[loop] = executor = ThreadPoolExecutor(thread_name_prefix="asyncio")
    loop.set_default_executor(executor)


def _no_left_task_noise(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Pulumi's ``_sync_await``, nested in a running task (a program reading an output as it runs),
    tells asyncio it left that task and pumps the loop itself; an exception escaping the pump (Ctrl-C,
    SIGTERM as a move builds its target) never enters the task again, and asyncio's bookkeeping then
    logged "Leaving task ... does not match the current task None" with a traceback before the CLI's
    own error. That RuntimeError says nothing of the run (the exception that caused it reaches the
    caller on its own: `error: interrupted`, exit 130); anything else is logged as asyncio does."""
    error = context.get("exception")
    if isinstance(error, RuntimeError) and str(error).startswith("Leaving task ") \
            and str(error).endswith("does not match the current task None."):
        return
    loop.default_exception_handler(context)


def _interrupted(loop: asyncio.AbstractEventLoop) -> None:
    """An interrupted run's registration threads are told to end now (a busy one after its call),
    later runs here getting new ones. Left to the interpreter's exit, one could wait for work forever
    and the process not exit after `error: interrupted`: Ctrl-C landing in the main thread while it
    started that thread (the first registration starts the first), after the thread ran but before
    concurrent.futures recorded it for the shutdown it does at exit."""
    _EXECUTORS[loop].shutdown(wait=False, cancel_futures=True)
    _new_executor(loop)


def _close(loop: asyncio.AbstractEventLoop) -> None:
    if loop.is_closed() or loop.is_running():
        return
    # A run interrupted half way (Ctrl-C) leaves the program's tasks pending, never to run again: they
    # go with the loop quietly (as asyncio.gather's own do) instead of each printing "Task was destroyed
    # but it is pending!", and their coroutines that never started "was never awaited", after tenantctl's
    # `error: interrupted`. Those are closed here, where the warning is filtered (closing a started one
    # would run its cleanup code at exit).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
        for task in asyncio.all_tasks(loop):
            task._log_destroy_pending = False
            if inspect.getcoroutinestate(coro := task.get_coro()) == inspect.CORO_CREATED:
                coro.close()
        loop.close()


def _no_stack_trace() -> source_pb2.StackTrace:
    return source_pb2.StackTrace()


@contextmanager
def _no_stack_walks() -> Iterator[None]:
    """Pulumi walks the Python stack at every registration to tell its CLI where
    the resource was declared (~1 ms each, ~10 % of a program run); no mock
    reads it. The program runs in this process only for the LocalEngine, one
    run at a time (RUN_LOCK), so the walk is left out for the run and put back after."""
    walk = getattr(pulumi_resource, "_get_stack_trace", None)
    if walk is None:  # a Pulumi release without it (a private helper): nothing to leave out
        yield
        return
    pulumi_resource._get_stack_trace = _no_stack_trace
    try:
        yield
    finally:
        pulumi_resource._get_stack_trace = walk


def run_program(program: Program, project: str, stack: str, config: dict[str, Any],
                mocks: pulumi.runtime.Mocks, current: threading.local, preview: bool) -> dict[str, Any]:
    """Run ``program(stack)`` under ``mocks``; return its resolved outputs
    (unknown values are None in a preview). Caller holds RUN_LOCK."""
    loop = _event_loop()
    outputs: dict[str, Any] = {}

    async def body() -> None:
        # A preview resolves an output holding unknowns to None.
        outputs.update(await pulumi.Output.all(**program(stack)).future() or {})

    # No full collection during the run: it would walk the whole process for the run's garbage (collector.py).
    with _no_stack_walks(), collector.paused():
        pulumi_settings.ROOT.set(None)  # set_mocks only creates a root Stack when none exists
        set_all_config({k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}, [])
        pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=preview,
                                 monitor=UrnMonitor(mocks, current))
        pulumi_settings.SETTINGS.rpc_manager.clear()
        pulumi_settings.SETTINGS.outputs.clear()
        try:
            _sync_await(run_pulumi_func(body))
        except KeyboardInterrupt:
            _interrupted(loop)
            raise
    return outputs
