"""Group concurrent requests by key and hand each group to one call.

While a batch for a key runs, new items for that key queue up; when it finishes they all go
in the next batch. One execution's concurrent reports thus share one transaction (one lock, one
state write) instead of queueing on its row lock one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")

Handler = Callable[[Sequence[Item]], Awaitable[list[Answer | Exception]]]


class KeyedBatcher(Generic[Item, Answer]):
    def __init__(self, handler: Handler[Item, Answer], max_batch: int = 256) -> None:
        self._handler = handler
        self._max = max_batch
        self._waiting: dict[Hashable, list[tuple[Item, asyncio.Future[Answer]]]] = {}
        self._draining: set[asyncio.Task[None]] = set()

    async def submit(self, key: Hashable, item: Item) -> Answer:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        queue = self._waiting.get(key)
        if queue is None:
            self._waiting[key] = [(item, future)]
            task = asyncio.create_task(self._drain(key))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        else:
            queue.append((item, future))
        return await future

    async def _drain(self, key: Hashable) -> None:
        await asyncio.sleep(0)  # let the requests that arrived together join the first batch
        while True:
            queue = self._waiting.get(key)
            if not queue:
                self._waiting.pop(key, None)
                return
            batch, self._waiting[key] = queue[: self._max], queue[self._max :]
            try:
                answers = await self._handler([item for item, _ in batch])
            except Exception as exc:  # the whole batch failed: every caller gets the error
                answers = [exc] * len(batch)
            for (_, future), answer in zip(batch, answers, strict=True):
                if future.done():
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)


class Batcher(Generic[Item, Answer]):
    """`KeyedBatcher` for one key, with a sender task that stays (until `close`) instead of
    one per batch: a worker reports every outcome through one, and that task and its start
    cost more than the rest of batching did. The same batches: the first item of a burst
    wakes the sender, which lets one more turn of the loop pass before it takes the queue;
    items that arrive while a batch runs go in the next one."""

    def __init__(self, handler: Handler[Item, Answer], max_batch: int = 256) -> None:
        self._handler = handler
        self._max = max_batch
        self._queue: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._wake: asyncio.Future[None] | None = None  # pending while the sender waits
        self._sender: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Answer:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._queue.append((item, future))
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send())
        elif self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        return await future

    async def close(self) -> None:
        """Stop the sender (items still queued get no answer: close when none is waiting)."""
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake = loop.create_future()
                await self._wake
            await asyncio.sleep(0)  # let the items that arrived together join the first batch
            while self._queue:
                batch, self._queue = self._queue[: self._max], self._queue[self._max :]
                try:
                    answers = await self._handler([item for item, _ in batch])
                except Exception as exc:  # the whole batch failed: every caller gets the error
                    answers = [exc] * len(batch)
                for (_, future), answer in zip(batch, answers, strict=True):
                    if future.done():
                        continue
                    if isinstance(answer, Exception):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
