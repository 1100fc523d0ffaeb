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
waits for the next one, so a batch never asks the database to change one
row twice. Every call gets its own result or error; a batch that fails as
a whole fails each of its calls with that error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Final, Generic, TypeVar

__all__ = ["Batcher"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R")

#: Most calls in one batch.
MAX_BATCH: Final = 256


class Batcher(Generic[K, V, R]):
    """Run calls in batches, one batch at a time.

    Args:
        run: runs one batch of ``(key, value)`` pairs (distinct keys) and
            returns each key's result or exception; a key it leaves out gets a
            :class:`LookupError`. An exception it raises fails the whole batch.
        max_batch: most calls in one batch.
    """

    def __init__(
        self,
        run: Callable[[list[tuple[K, V]]], Awaitable[Mapping[K, R | Exception]]],
        *,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._run = run
        self._max = max_batch
        self._waiting: list[tuple[K, V, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed: Callable[[], Exception] | None = None

    async def submit(self, key: K, value: V) -> R:
        """Run ``value`` for ``key`` in the next batch; its result.

        Raises:
            Exception: the call's own error, or the error its batch failed with.
        """
        if self._closed is not None:
            raise self._closed()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((key, value, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="batcher")
        return await future

    async def close(self, error: Callable[[], Exception]) -> None:
        """Stop: calls not yet in a batch fail with a new ``error()``, as do later ones.

        A batch already running finishes (its calls get their answers), so
        nothing the database committed is reported as failed.
        """
        self._closed = error
        waiting, self._waiting = self._waiting, []
        for _, _, future in waiting:
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
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for key, _, future in batch:
                    if future.done():
                        continue  # its caller gave up waiting
                    outcome = results.get(key, LookupError(key))
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._task = None

    def _next_batch(self) -> list[tuple[K, V, asyncio.Future[R]]]:
        batch: list[tuple[K, V, asyncio.Future[R]]] = []
        later: list[tuple[K, V, asyncio.Future[R]]] = []
        keys: set[K] = set()
        for call in self._waiting:
            if len(batch) < self._max and call[0] not in keys:
                keys.add(call[0])
                batch.append(call)
            else:
                later.append(call)
        self._waiting = later
        return batch
