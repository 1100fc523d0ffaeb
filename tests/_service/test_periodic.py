"""The one periodic-timer loop (``natroute._service.periodic.every``)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from natroute._service.periodic import every

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
