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

At exit (``freeze_at_exit``) what is alive is frozen: the interpreter's own
collections while it shuts down then skip it (after a provision ~10^6
objects, 0.45 s of a fresh process's ~2.2 s).

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
_freezing = False  # freeze_at_exit registered


@contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside the block. The setting is process-wide, so
    overlapping pauses (threads making clients) count: the last one out puts
    back what the first one found (still off when it was off). Not for long
    blocks: young garbage waits meanwhile."""
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
            if _pauses == 0 and _resume:
                gc.enable()


def freeze_at_exit() -> None:
    """At interpreter exit, freeze every live object (``gc.freeze``), so the
    collections of the interpreter's shutdown walk none of them. Shutdown is
    otherwise unchanged: threads joined, atexit handlers run, modules cleared
    and what they held freed by reference counting; only a cycle nothing
    collected before exit is left to the process's end, its finalizers not
    run (CPython does not promise them at exit either). Registered once."""
    global _freezing
    with _LOCK:
        if not _freezing:
            atexit.register(gc.freeze)
            _freezing = True
