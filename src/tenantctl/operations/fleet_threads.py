"""Fleet reads run in a bounded pool of threads (`usage --all`, `cost --all`, `report`, `check`
and `refresh` over several tenants, `audit`'s key reads; and `search reindex` over several tenants,
each tenant's own write; `hibernate --all`, each waiting for its instance to stop): each item's
work waits on AWS and the database, so several items' waits overlap, while the answers come back
in the items' own order (the rows a command prints do not depend on which finished first) and
each is reported as it finishes (progress on stderr).

An interrupt (Ctrl-C) cancels every item not yet started and re-raises at once: the command
exits 130 after the items already running finish (at most one per thread), not after the rest.

Not here: `apply`'s and `cell evacuate`'s worker processes (a tenant's Pulumi run or move, each in
a process of its own so a crash takes only that one; they share only the --parallel check), and
the pools inside one item (a tenant's three posture areas, one prefix's object copies).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenantctl.errors import UsageError

T = TypeVar("T")
R = TypeVar("R")

PARALLEL = 8  # as `check --all`, `refresh`, `audit`: reads only (`search reindex`: 4, writes)


def _ignore(*_: Any) -> None:
    return None


@dataclass
class Watch:
    """Who follows a fleet read: ``on_plan(n)`` once the n items are known, ``on_result(answer)``
    as each finishes (in the caller's thread, never two at once)."""

    on_plan: Callable[[int], None] = field(default=_ignore)
    on_result: Callable[[Any], None] = field(default=_ignore)

    @classmethod
    def of(cls, on_plan: Callable[[int], None] | None = None,
           on_result: Callable[[Any], None] | None = None) -> Watch:
        """From a command's optional callbacks (None: nobody follows that part)."""
        return cls(on_plan=on_plan or _ignore, on_result=on_result or _ignore)


def require_parallel(parallel: int) -> None:
    """The --parallel check of the fleet commands (typer checks the CLI's first: exit 2 either way)."""
    if parallel < 1:
        raise UsageError(f"Invalid value for '--parallel': {parallel} is not in the range x>=1.")


def in_threads(work: Callable[[T], R], items: Sequence[T], parallel: int = PARALLEL,
               watch: Watch | None = None) -> list[R]:
    """``work`` of each of ``items`` in at most ``parallel`` threads (1: in this thread, one after
    another), the answers in the items' order."""
    require_parallel(parallel)
    watch = watch or Watch()
    watch.on_plan(len(items))
    if parallel == 1 or len(items) < 2:
        answers = []
        for item in items:
            answers.append(work(item))
            watch.on_result(answers[-1])
        return answers
    found: dict[int, R] = {}
    pool = ThreadPoolExecutor(max_workers=min(parallel, len(items)), thread_name_prefix="fleet-read")
    try:
        futures = {pool.submit(work, item): i for i, item in enumerate(items)}
        for future in as_completed(futures):
            found[futures[future]] = future.result()
            watch.on_result(found[futures[future]])
    except BaseException:  # Ctrl-C (or a bug): nothing more starts; the running ones end on their own
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [found[i] for i in range(len(items))]
