"""What a pool worker process says (its task's progress, the notes and
warnings it writes on stderr) sent to the process that started the pool,
each line with the tenant the worker was on. That process writes them
through its own progress: stamped like its own lines, tagged with their
tenant, on its stderr (never in its --json), one writer, instead of several
processes interleaving untagged lines on one stderr.

The lines travel through a manager's queue (``relayed``): each worker talks to
the manager over a connection of its own, so a worker killed half way
through a line breaks nothing for the others (a plain multiprocessing queue
shares one lock between them all).
"""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from multiprocessing import get_context
from multiprocessing.managers import SyncManager
from typing import Any

OnLine = Callable[[str, str], None]  # (tenant id, line)

_queue: Any = None  # in a worker: the queue to the pool's process
_tenant = "-"  # in a worker: the tenant its task is on


@contextmanager
def relayed(on_line: OnLine) -> Iterator[Any]:
    """A queue for ``start`` (a pool's ``initializer``, with the queue as its
    argument); ``on_line`` is called in this process, from a thread, with each
    line the workers say, until the block ends (every line said before then)."""
    manager = SyncManager(ctx=get_context("spawn"))
    manager.start(_deaf)
    queue = manager.Queue()

    def drain() -> None:
        try:
            while (item := queue.get()) is not None:
                try:
                    on_line(*item)
                except Exception:  # a line that could not be written never stops the others
                    continue
        except (EOFError, OSError):  # the manager is gone (killed): no line comes any more
            return

    reader = threading.Thread(target=drain, name="worker-lines", daemon=True)
    reader.start()
    try:
        yield queue
    finally:
        with suppress(EOFError, OSError):
            queue.put(None)
        reader.join()
        manager.shutdown()


def _deaf() -> None:
    """The manager's initializer: Ctrl-C and SIGTERM sent to the whole process
    group (a terminal, a cancelled CI job, `timeout`) are for the run and its
    workers, which unwind and say so; the manager is shut down by the run once
    their last line is relayed (dying first, it broke the run's own unwinding
    with EOFError: exit 1 or 13 instead of 130 or 143, and a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _end_with_parent(interrupt=False)


def _end_with_parent(interrupt: bool) -> None:
    """End this process once the run that started it is gone without shutting
    it down (killed -9): a pool's processes otherwise wait for work forever,
    idle or, a task done, holding nothing. ``interrupt``: a task under way is
    interrupted first as SIGTERM would (``errors.interrupts_within``: the
    tenant's lock released, ``interrupted`` in its ``last_error``)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        if interrupt:
            os.kill(os.getpid(), signal.SIGTERM)  # ignored between tasks
            while _tenant != "-":
                time.sleep(0.2)
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def start(queue: Any) -> None:
    """A pool's initializer: this worker's stderr and tenantctl's notes go to
    ``queue``; the worker ends once the run is gone (``_end_with_parent``)."""
    global _queue
    _queue = queue
    _end_with_parent(interrupt=True)
    sys.stderr = _Lines()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("note: %(message)s"))  # as the CLI writes them (cli/app.py)
    logger = logging.getLogger("tenantctl")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


@contextmanager
def on(tenant_id: str) -> Iterator[None]:
    """In a worker: what is said in the block is ``tenant_id``'s."""
    global _tenant
    before, _tenant = _tenant, tenant_id
    try:
        yield
    finally:
        sys.stderr.flush()
        _tenant = before


def say(line: str) -> None:
    """In a worker: one line to the pool's process (dropped once that is gone: a
    line never fails the task)."""
    if _queue is None:
        return
    try:
        _queue.put((_tenant, line))
    except Exception:
        return


class _Lines(io.TextIOBase):
    """A stderr that says each complete line written to it."""

    def __init__(self) -> None:
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            say(line)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            line, self._partial = self._partial, ""
            say(line)
