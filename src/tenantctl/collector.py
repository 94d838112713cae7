"""The cyclic garbage collector paused around bulk allocation.

A full collection walks every object of the process: ~3 * 10^5 once boto3,
pulumi and pulumi_aws are loaded, ~5 * 10^5 with a provision's clients and
caches, 0.2-0.6 s each on the sandbox's two busy cores. CPython starts one
after enough young collections, so what allocates most decides how often:
imports and boto3 clients' service models (modules, classes, model dicts,
which live as long as the process: collecting while they load finds
nothing) and Pulumi program runs (~10^5 Outputs, futures and closures,
garbage when the run ends). Paused there, a fresh `tenantctl provision` makes
one full collection instead of four (and ~130 young ones instead of ~580),
and a warm process none in 24 provisions instead of one every ~6 (README,
"Where a warm pooled provision's time goes").

In a process that runs one command and exits (the CLI: ``one_command``),
what is alive is frozen (``gc.freeze``: no collection walks it again) at
the end of a ``lasting`` pause (a first import, a client) when no other
pause is open, and at exit. What such a block made lives as long as the
process, and the young collections after a plain pause walked it all once
more per generation for nothing (gen1 and full collections of a fresh
provision 0.08-0.2 s -> ~0.01 s); the interpreter's own collections while
it shuts down walked ~10^6 objects (0.45 s of a fresh process's ~2.2 s).
What was garbage at a freeze is kept to the end of the command: a bounded
amount, each import or client being made once. Long-lived processes (tests,
servers) never freeze.

Nothing is leaked: while paused, reference counting still frees what is not
in a cycle, and the first young collection after the pause takes the run's
cyclic garbage (one pass over the young objects instead of a full one).
"""

from __future__ import annotations

import atexit
import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_pauses = 0  # blocks inside a pause, in any thread
_resume = False  # whether the collector was on when the first of them began
_one_command = False  # the process runs one command and exits


@contextmanager
def paused(lasting: bool = False) -> Iterator[None]:
    """No cyclic collection inside the block. The setting is process-wide, so
    overlapping pauses (threads making clients) count: the last one out puts
    back what the first one found (still off when it was off). Not for long
    blocks: young garbage waits meanwhile. ``lasting``: what the block makes
    lives as long as the process; in one command's process it is frozen at
    the block's end unless another pause is open (a program run's objects
    are never frozen)."""
    global _pauses, _resume
    with _LOCK:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _LOCK:
            _pauses -= 1
            if _pauses == 0 and lasting and _one_command:
                gc.freeze()
            if _pauses == 0 and _resume:
                gc.enable()


def one_command() -> None:
    """This process runs one command and exits (the CLI's main): lasting
    pauses freeze, and at exit every live object is frozen, so the
    interpreter's shutdown collections walk none of them. Shutdown is
    otherwise unchanged: threads joined, atexit handlers run, modules cleared
    and what they held freed by reference counting; only a cycle nothing
    collected before exit is left to the process's end, its finalizers not
    run (CPython does not promise them at exit either)."""
    global _one_command
    with _LOCK:
        if not _one_command:
            atexit.register(gc.freeze)
            _one_command = True
