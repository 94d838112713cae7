"""The LocalEngine's event loop drops the one message asyncio logs when a run
interrupted inside Pulumi's ``_sync_await`` never enters its task again
(``runtime._no_left_task_noise``), which it recognises by its text. The
message here is asyncio's own, produced on this Python the way ``_sync_await``
produces it, so a Python that words it otherwise fails this test instead of
the traceback coming back before `error: interrupted`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tenantctl.engines.local.runtime import _no_left_task_noise


async def _left_for_good() -> None:
    """A task that leaves itself as ``_sync_await`` does before pumping the loop, and
    is not entered again (the exception that escaped the pump skipped that)."""
    loop = asyncio.get_running_loop()
    asyncio.tasks._leave_task(loop, asyncio.current_task(loop))


def _run(step: Any) -> list[dict[str, Any]]:
    """``step`` run on a loop handling errors as the LocalEngine's does; the contexts it was given."""
    seen: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        seen.append(context)
        _no_left_task_noise(loop, context)

    loop.set_exception_handler(handler)
    try:
        step(loop)
    finally:
        loop.close()
    return seen


def test_asyncios_own_left_task_error_is_not_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        seen = _run(lambda loop: loop.run_until_complete(loop.create_task(_left_for_good())))
    errors = [c.get("exception") for c in seen]
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError), seen  # asyncio raised it, as under Pulumi
    assert str(errors[0]).startswith("Leaving task "), errors
    assert caplog.records == [], caplog.text


def test_any_other_loop_error_is_logged_as_asyncio_does(caplog):
    def fails() -> None:
        raise RuntimeError("Leaving the loop for another reason")

    def step(loop: asyncio.AbstractEventLoop) -> None:
        loop.call_soon(fails)
        loop.run_until_complete(asyncio.sleep(0))

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        seen = _run(step)
    assert len(seen) == 1 and "Leaving the loop for another reason" in caplog.text, caplog.text
