"""Background tasks of the services: the one periodic timer, and running tasks until told.

* :func:`every` calls ``work`` every ``interval`` seconds until its task is
  cancelled; a coroutine result is awaited, so the same loop runs the
  sidecar's plain callbacks and the beacon's coroutines. A call that raises is
  logged (the service's own event name, with the task's name) and the loop
  goes on: one bad tick never stops a timer.
* :func:`run_until` runs coroutines as tasks until an awaitable completes
  (a signal, a test's event), then cancels them.
* :func:`cancel_and_wait` cancels tasks and waits until they are gone.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

__all__ = ["cancel_and_wait", "every", "run_until"]


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


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has finished (their errors are dropped)."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def run_until(until: Awaitable[object], *work: Coroutine[Any, Any, object]) -> None:
    """Run each of ``work`` as a task until ``until`` completes, then cancel them all.

    A task that ends early (or fails) does not end the others; ``until`` decides.
    """
    tasks = [asyncio.create_task(coroutine) for coroutine in work]
    try:
        await until
    finally:
        await cancel_and_wait(tasks)
