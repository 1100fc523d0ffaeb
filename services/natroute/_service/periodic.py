"""The one periodic-timer loop of the services.

``every(interval, work, ...)`` calls ``work`` every ``interval`` seconds until
its task is cancelled; a coroutine result is awaited, so the same loop runs
the sidecar's plain callbacks and the beacon's coroutines. A call that raises
is logged (the service's own event name, with the task's name) and the loop
goes on: one bad tick never stops a timer.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable

__all__ = ["every"]


async def every(
    interval: float,
    work: Callable[[], object],
    *,
    name: str,
    logger: logging.Logger,
    event: str = "task_failed",
    first: float | None = None,
) -> None:
    """Run ``work`` every ``interval`` seconds, forever (cancel the task to stop).

    Args:
        interval: seconds between calls.
        work: a callable; when it returns an awaitable, that is awaited.
        name: the timer's name in the failure log (``extra={"task": name}``).
        logger: the service's logger.
        event: the failure log's event name.
        first: delay before the first call (default: ``interval``).
    """
    delay = interval if first is None else first
    while True:
        await asyncio.sleep(delay)
        delay = interval
        try:
            result = work()
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception(event, extra={"task": name})
