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


async def _answer(
    handler: Handler[Item, Answer], batch: Sequence[tuple[Item, asyncio.Future[Answer]]]
) -> None:
    """Hand `batch`'s items to `handler` and each answer to its caller's future (a caller
    that has gone is skipped)."""
    try:
        answers = await handler([item for item, _ in batch])
    except Exception as exc:  # the whole batch failed: every caller gets the error
        answers = [exc] * len(batch)
    for (_, future), answer in zip(batch, answers, strict=True):
        if future.done():
            continue
        if isinstance(answer, Exception):
            future.set_exception(answer)
        else:
            future.set_result(answer)


class KeyedBatcher(Generic[Item, Answer]):
    """Batches per key. An item that finds nothing waiting or being handled for its key waits
    one turn of the loop for others of the key; if none came it is handled from its caller's
    task (each step of a sequential chain reports so: no task per report, no hand-over to
    another task and back), else the batch is handled by a drain task, which no caller's
    cancellation stops, and so are the items that arrive while a batch is handled."""

    def __init__(self, handler: Handler[Item, Answer], max_batch: int = 256) -> None:
        self._handler = handler
        self._max = max_batch
        self._waiting: dict[Hashable, list[tuple[Item, asyncio.Future[Answer]]]] = {}
        self._draining: set[asyncio.Task[None]] = set()

    async def submit(self, key: Hashable, item: Item) -> Answer:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        queue = self._waiting.get(key)
        if queue is not None:  # a batch of this key waits or is handled: the next one
            queue.append((item, future))
            return await future
        queue = self._waiting[key] = [(item, future)]
        try:
            await asyncio.sleep(0)  # let the items that arrived together join the first batch
        except asyncio.CancelledError:  # the item stays: handled by the task, answer dropped
            future.cancel()
            self._start_drain(key)
            raise
        if len(queue) > 1:
            self._start_drain(key)
            return await future
        self._waiting[key] = []  # what arrives while this one is handled: the next batch
        try:
            await _answer(self._handler, queue)
        finally:
            if self._waiting.get(key):
                self._start_drain(key)
            else:
                self._waiting.pop(key, None)
        return future.result()

    def _start_drain(self, key: Hashable) -> None:
        task = asyncio.get_running_loop().create_task(self._drain(key))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _drain(self, key: Hashable) -> None:
        while True:
            queue = self._waiting.get(key)
            if not queue:
                self._waiting.pop(key, None)
                return
            batch, self._waiting[key] = queue[: self._max], queue[self._max :]
            await _answer(self._handler, batch)


class Batcher(Generic[Item, Answer]):
    """`KeyedBatcher` for one key, made for a worker's reports: the same batches, fewer turns
    of the loop. An item that finds nothing being sent waits one turn of the loop; if no other
    came meanwhile it is sent from its caller's task (a worker running one command at a time
    reports each outcome so: no task per report, no hand-over to another task and back);
    else the items go together, sent by a sender task that stays (until `close`), which also
    sends the items that arrive while a batch is being sent, in the next batch. One batch is
    sent at a time. A caller cancelled while its item waits or is sent leaves the item to the
    sender (sent, or sent again: its answer is dropped), as KeyedBatcher's task would."""

    def __init__(self, handler: Handler[Item, Answer], max_batch: int = 256) -> None:
        self._handler = handler
        self._max = max_batch
        self._queue: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._busy = False  # a caller or the sender is sending, or about to
        self._wake: asyncio.Future[None] | None = None  # pending while the sender waits
        self._sender: asyncio.Task[None] | None = None

    async def submit(self, item: Item, *, alone: bool = False) -> Answer:
        """`item`'s answer. `alone`: the caller knows that no other item can come meanwhile
        (a worker running one command): it is sent at once, without the turn of waiting."""
        if self._busy:  # the batch being sent, or about to be, is not ours: the next one is
            return await self._queued(item)
        self._busy = True
        try:
            if not alone:
                await asyncio.sleep(0)  # let the items that arrive together join
        except asyncio.CancelledError:
            self._queue.insert(0, (item, asyncio.get_running_loop().create_future()))
            self._hand_over()
            raise
        if self._queue:  # others came: one batch, from the sender
            future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
            self._queue.insert(0, (item, future))
            self._hand_over()
            return await future
        try:
            answers = await self._handler([item])
        except asyncio.CancelledError:
            self._queue.insert(0, (item, asyncio.get_running_loop().create_future()))
            raise
        except Exception as exc:  # the whole batch failed: its caller gets the error
            answers = [exc]
        finally:
            if self._queue:  # arrived while this one was sent: the next batch
                self._hand_over()
            else:
                self._busy = False
        (answer,) = answers
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def close(self) -> None:
        """Stop the sender (items still queued get no answer: close when none is waiting)."""
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        self._busy = False

    async def _queued(self, item: Item) -> Answer:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        return await future

    def _hand_over(self) -> None:
        """The queue is the sender's (the batcher stays busy until it is empty)."""
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())
        elif self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self._queue:
                batch, self._queue = self._queue[: self._max], self._queue[self._max :]
                await _answer(self._handler, batch)
            self._busy = False
            self._wake = loop.create_future()
            await self._wake
