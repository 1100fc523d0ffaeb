"""Background tasks of the services (``natroute._service.tasks``): timers, run until, cancel."""

from __future__ import annotations

import asyncio
import logging

import pytest

from natroute._service.tasks import cancel_and_wait, every, run_until

_log = logging.getLogger("tests.periodic")


@pytest.mark.asyncio
async def test_plain_and_async_work_and_failures_do_not_stop_the_timer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    done = asyncio.Event()

    def plain() -> None:
        calls.append("plain")
        if len(calls) == 2:
            raise RuntimeError("one bad tick")

    async def coroutine() -> None:
        calls.append("async")
        if calls.count("async") == 3:
            done.set()

    with caplog.at_level(logging.ERROR, logger="tests.periodic"):
        tasks = [
            asyncio.create_task(every(0.001, plain, name="plain", logger=_log, event="t_failed")),
            asyncio.create_task(every(0.001, coroutine, name="async", logger=_log, first=0.0)),
        ]
        await asyncio.wait_for(done.wait(), 5.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert calls.count("async") >= 3
    assert calls.count("plain") >= 2  # it went on after the failure
    failed = [r for r in caplog.records if r.getMessage() == "t_failed"]
    assert [getattr(r, "task", None) for r in failed] == ["plain"]


@pytest.mark.asyncio
async def test_first_delay_then_interval() -> None:
    fired = asyncio.Event()
    task = asyncio.create_task(every(3600.0, fired.set, name="x", logger=_log, first=0.0))
    await asyncio.wait_for(fired.wait(), 5.0)  # at once, not an hour later
    fired.clear()
    await asyncio.sleep(0.05)
    assert not fired.is_set()  # the next call is an interval away
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
async def test_run_until_cancels_the_work_when_told_and_survives_a_failing_task() -> None:
    stop = asyncio.Event()
    started = asyncio.Event()
    cancelled: list[str] = []

    async def forever(name: str) -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def fails() -> None:
        raise RuntimeError("an early failure ends only this task")

    runner = asyncio.create_task(run_until(stop.wait(), forever("a"), fails(), forever("b")))
    await asyncio.wait_for(started.wait(), 5.0)
    await asyncio.sleep(0.01)
    assert not runner.done()  # the failure did not end the others
    stop.set()
    await asyncio.wait_for(runner, 5.0)
    assert sorted(cancelled) == ["a", "b"]


@pytest.mark.asyncio
async def test_cancel_and_wait_reaps_finished_and_running_tasks() -> None:
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    running = asyncio.create_task(asyncio.sleep(3600))
    await cancel_and_wait([done, running])
    assert running.cancelled()
    await cancel_and_wait([])
