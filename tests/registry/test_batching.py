"""Batches: who shares one, and who gets which answer."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from natroute.registry.batching import Batcher

pytestmark = pytest.mark.asyncio


class Busy(Exception):
    """Too many calls wait."""


class Database:
    """A batch runner that holds each batch until released and records it."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, int]]] = []
        self.gate = asyncio.Event()
        self.fail_next: Exception | None = None

    async def run(self, batch: list[tuple[str, int]]) -> Mapping[str, int | Exception]:
        self.batches.append(batch)
        await self.gate.wait()
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        results: dict[str, int | Exception] = {}
        for key, value in batch:
            if value < 0:
                results[key] = ValueError(f"{key} refused")
            elif value != 99:  # 99: the runner leaves the key out
                results[key] = value * 10
        return results


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_calls_arriving_during_a_batch_share_the_next() -> None:
    db = Database()
    commit: Batcher[str, int, int] = Batcher(db.run, busy=Busy)
    first = asyncio.ensure_future(commit.submit("a", 1))
    await _settle()
    assert db.batches == [[("a", 1)]]  # alone and at once: no waiting for company
    later = [asyncio.ensure_future(commit.submit(k, v)) for k, v in (("b", 2), ("c", 3))]
    await _settle()
    assert len(db.batches) == 1  # the first batch still runs
    db.gate.set()
    assert await first == 10
    assert [await f for f in later] == [20, 30]
    assert db.batches == [[("a", 1)], [("b", 2), ("c", 3)]]


async def test_a_key_is_in_a_batch_once_and_batches_are_capped() -> None:
    db = Database()
    commit: Batcher[str, int, int] = Batcher(db.run, busy=Busy, max_batch=2)
    calls = [("a", 1), ("a", 2), ("b", 3), ("c", 4), ("a", 5)]
    futures = [asyncio.ensure_future(commit.submit(k, v)) for k, v in calls]
    db.gate.set()
    assert [await f for f in futures] == [10, 20, 30, 40, 50]
    # "a" has more calls waiting: it goes to the back after each turn.
    assert db.batches == [[("a", 1), ("b", 3)], [("c", 4), ("a", 2)], [("a", 5)]]


async def test_each_caller_gets_its_own_error_and_a_failed_batch_fails_only_its_calls() -> None:
    db = Database()
    commit: Batcher[str, int, int] = Batcher(db.run, busy=Busy)
    db.gate.set()
    refused, missing, fine = (
        asyncio.ensure_future(commit.submit(k, v)) for k, v in (("r", -1), ("m", 99), ("f", 4))
    )
    with pytest.raises(ValueError, match="r refused"):
        await refused
    with pytest.raises(LookupError):
        await missing
    assert await fine == 40
    db.fail_next = ConnectionError("database gone")
    failed = [asyncio.ensure_future(commit.submit(k, 1)) for k in "xy"]
    for future in failed:
        with pytest.raises(ConnectionError, match="database gone"):
            await future
    assert await commit.submit("x", 2) == 20  # the next batch runs again


async def test_a_caller_that_gives_up_does_not_disturb_the_others() -> None:
    db = Database()
    commit: Batcher[str, int, int] = Batcher(db.run, busy=Busy)
    impatient = asyncio.ensure_future(commit.submit("a", 1))
    patient = asyncio.ensure_future(commit.submit("b", 2))
    await _settle()
    impatient.cancel()
    db.gate.set()
    assert await patient == 20
    assert impatient.cancelled()


async def test_close_fails_the_waiting_calls_and_lets_the_running_batch_finish() -> None:
    db = Database()
    commit: Batcher[str, int, int] = Batcher(db.run, busy=Busy)
    running = asyncio.ensure_future(commit.submit("a", 1))
    await _settle()
    waiting = asyncio.ensure_future(commit.submit("b", 2))
    await _settle()
    closing = asyncio.ensure_future(commit.close(lambda: RuntimeError("closed")))
    await _settle()
    with pytest.raises(RuntimeError, match="closed"):
        await waiting  # failed at once
    assert not closing.done()  # the running batch may have reached the database
    db.gate.set()
    await closing
    assert await running == 10
    with pytest.raises(RuntimeError, match="closed"):
        await commit.submit("c", 3)
    assert db.batches == [[("a", 1)]]


async def test_a_flood_for_one_key_takes_a_turn_per_batch_and_the_waiting_are_capped() -> None:
    db = Database()
    commit: Batcher[str, int, int] = Batcher(db.run, busy=Busy, max_batch=3, max_waiting=8)
    running = asyncio.ensure_future(commit.submit("x", 0))
    await _settle()  # the first batch runs: ["x"]
    flood = [asyncio.ensure_future(commit.submit("x", i)) for i in range(1, 6)]
    others = [asyncio.ensure_future(commit.submit(k, 7)) for k in "abc"]
    await _settle()
    assert len(commit) == 8
    with pytest.raises(Busy):
        await commit.submit("d", 1)  # the ninth waiting call
    db.gate.set()
    assert await running == 0
    assert [await f for f in others] == [70, 70, 70]
    assert [await f for f in flood] == [10, 20, 30, 40, 50]
    # The others did not wait behind the flood: they shared its first batches.
    assert db.batches[:3] == [[("x", 0)], [("x", 1), ("a", 7), ("b", 7)], [("c", 7), ("x", 2)]]
    assert len(commit) == 0


async def test_shared_calls_of_one_key_take_one_turn_and_one_result() -> None:
    db = Database()
    reads: Batcher[str, int, int] = Batcher(db.run, busy=Busy, share=True)
    first = asyncio.ensure_future(reads.submit("p", 1))
    await _settle()
    popular = [asyncio.ensure_future(reads.submit("p", 2)) for _ in range(50)]
    other = asyncio.ensure_future(reads.submit("q", 3))
    await _settle()
    assert len(reads) == 51
    db.gate.set()
    assert await first == 10
    assert {await f for f in popular} == {20}
    assert await other == 30
    assert db.batches == [[("p", 1)], [("p", 2), ("q", 3)]]  # one turn for all 50
    assert len(reads) == 0
