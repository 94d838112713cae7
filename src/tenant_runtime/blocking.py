"""Where the runtime would block: one marker for every network call the sync
code makes (registry read, JWKS fetch, revocation refresh, KMS, Secrets
Manager, STS), so the async API can run that same code on the event loop when
everything it needs is cached, and on a worker thread when it is not.

``may_block()`` is called right before such a call. Outside an inline attempt
it does nothing; inside one (``AsyncTenantRuntime`` tries cached paths on the
loop first) it raises ``WouldBlock`` *before* anything was changed, and the
caller runs the whole call again on its bounded executor. One implementation
of every rule, no async twin to keep in step, and the loop never waits on I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar

_INLINE: ContextVar[bool] = ContextVar("tenant_runtime_inline", default=False)


class WouldBlock(Exception):  # noqa: N818 - a signal, not an error a caller sees
    """Raised by ``may_block()`` inside ``inline()``: redo the call off the loop."""


def may_block() -> None:
    if _INLINE.get():
        raise WouldBlock


@contextmanager
def _mode(inline_attempt: bool) -> Iterator[None]:
    token = _INLINE.set(inline_attempt)
    try:
        yield
    finally:
        _INLINE.reset(token)


def inline() -> AbstractContextManager[None]:
    """Run the body as an attempt that must not block (see the module doc)."""
    return _mode(True)


def blocking_allowed() -> AbstractContextManager[None]:
    """The body may block (a worker thread running a call the loop handed off)."""
    return _mode(False)
