"""Batches on an event loop: calls that arrive while one batch runs share the next.

The PostgreSQL backend sends each heartbeat and each resolve to a
:class:`Batcher` instead of a statement of its own (registry README,
"Storage"): one statement (for heartbeats, one commit) then serves every
call that arrived while the previous batch was in the database. The SQLite
backend hands each batch of heartbeats to its writer thread as one job of
its group commit. At low load
a batch is one call and runs at once; under load the batches grow with the
database's round trip, so the work per call falls as the load rises.

A batch holds each key once: a second call with a key already in the batch
waits for a later one, so a batch never asks the database to change one
row twice. Every call gets its own result or error; a batch that fails as
a whole fails each of its calls with that error. The calls waiting are
capped: beyond the cap a call fails at once, as when the database is down.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from itertools import islice
from typing import Final, Generic, TypeVar

__all__ = ["Batcher"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R")

#: Most calls in one batch.
MAX_BATCH: Final = 256
#: Most calls waiting for a batch (each is a request in flight).
MAX_WAITING: Final = 65536

_Call = tuple[V, "asyncio.Future[R]"]


class Batcher(Generic[K, V, R]):
    """Run calls in batches, one batch at a time.

    Calls wait in a queue per key; a batch takes the oldest call of each of
    the first ``max_batch`` keys, and a key with more calls waiting goes to
    the back, so many calls for one key (a replay flood) take a turn per
    batch and delay no one else. Picking a batch costs its size, whatever
    waits.

    Args:
        run: runs one batch of ``(key, value)`` pairs (distinct keys) and
            returns each key's result or exception; a key it leaves out gets a
            :class:`LookupError`. An exception it raises fails the whole batch.
        busy: the error of a call beyond ``max_waiting`` (the caller answers
            503: the database is behind).
        share: the calls waiting for one key are one call (for reads): a
            batch runs the oldest one's value and gives every one its result,
            so a thousand resolves of one popular node take one turn, not a
            thousand.
        max_batch: most calls in one batch.
        max_waiting: most calls waiting.
    """

    def __init__(
        self,
        run: Callable[[list[tuple[K, V]]], Awaitable[Mapping[K, R | Exception]]],
        *,
        busy: Callable[[], Exception],
        share: bool = False,
        max_batch: int = MAX_BATCH,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self._run = run
        self._busy = busy
        self._share = share
        self._max = max_batch
        self._max_waiting = max_waiting
        self._waiting: OrderedDict[K, deque[_Call[V, R]]] = OrderedDict()
        self._count = 0
        self._task: asyncio.Task[None] | None = None
        self._closed: Callable[[], Exception] | None = None

    def __len__(self) -> int:
        """Calls waiting for a batch."""
        return self._count

    async def submit(self, key: K, value: V) -> R:
        """Run ``value`` for ``key`` in the next batch; its result.

        Raises:
            Exception: the call's own error, the error its batch failed with,
                ``busy()`` when too many calls wait, or the close error.
        """
        if self._closed is not None:
            raise self._closed()
        if self._count >= self._max_waiting:
            raise self._busy()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        calls = self._waiting.get(key)
        if calls is None:
            calls = self._waiting[key] = deque()
        calls.append((value, future))
        self._count += 1
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="batcher")
        return await future

    async def close(self, error: Callable[[], Exception]) -> None:
        """Stop: calls not yet in a batch fail with a new ``error()``, as do later ones.

        A batch already running finishes (its calls get their answers), so
        nothing the database committed is reported as failed.
        """
        self._closed = error
        waiting, self._waiting, self._count = self._waiting, OrderedDict(), 0
        for calls in waiting.values():
            for _, future in calls:
                if not future.done():
                    future.set_exception(error())
        if self._task is not None:
            await asyncio.wait([self._task])

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._next_batch()
                try:
                    results = await self._run([(key, value) for key, value, _ in batch])
                except Exception as exc:  # the batch failed as a whole
                    for _, _, futures in batch:
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                for key, _, futures in batch:
                    outcome = results.get(key, LookupError(key))
                    for future in futures:
                        if future.done():
                            continue  # its caller gave up waiting
                        if isinstance(outcome, Exception):
                            future.set_exception(outcome)
                        else:
                            future.set_result(outcome)
        finally:
            self._task = None

    def _next_batch(self) -> list[tuple[K, V, list[asyncio.Future[R]]]]:
        waiting = self._waiting
        batch: list[tuple[K, V, list[asyncio.Future[R]]]] = []
        taken = 0
        for key in list(islice(waiting, self._max)):
            calls = waiting[key]
            if self._share:
                value = calls[0][0]
                futures = [future for _, future in calls]
                calls.clear()
            else:
                value, future = calls.popleft()
                futures = [future]
            batch.append((key, value, futures))
            taken += len(futures)
            if calls:
                waiting.move_to_end(key)  # its next call waits for a later batch
            else:
                del waiting[key]
        self._count -= taken
        return batch
