"""Requests for one key that arrive while its batch runs share the next batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from noetl.batching import Batcher, KeyedBatcher


async def test_concurrent_items_of_one_key_are_handled_together_in_order() -> None:
    batches: list[list[int]] = []

    async def handler(items: Sequence[int]) -> list[int | Exception]:
        batches.append(list(items))
        await asyncio.sleep(0.01)
        return [item * 10 for item in items]

    batcher: KeyedBatcher[int, int] = KeyedBatcher(handler)
    answers = await asyncio.gather(*(batcher.submit("a", i) for i in range(5)))
    assert answers == [0, 10, 20, 30, 40]
    assert batches == [[0, 1, 2, 3, 4]]


async def test_an_exception_answers_only_its_item_and_a_crash_answers_all() -> None:
    async def handler(items: Sequence[int]) -> list[int | Exception]:
        if 99 in items:
            raise RuntimeError("database gone")
        return [ValueError("odd") if item % 2 else item for item in items]

    batcher: KeyedBatcher[int, int] = KeyedBatcher(handler)
    even, odd = await asyncio.gather(
        batcher.submit("k", 2), batcher.submit("k", 3), return_exceptions=True
    )
    assert even == 2 and isinstance(odd, ValueError)
    with pytest.raises(RuntimeError, match="database gone"):
        await batcher.submit("k", 99)
    assert await batcher.submit("k", 4) == 4  # the key works again after a failed batch


async def test_one_sender_batches_a_burst_and_what_arrives_while_it_sends() -> None:
    """`Batcher`: the items of one turn of the loop go together; those that arrive while
    their batch is being sent go in the next; the sender stays for later bursts."""
    batches: list[list[int]] = []
    sending = asyncio.Event()
    go_on = asyncio.Event()

    async def handler(items: Sequence[int]) -> list[int | Exception]:
        batches.append(list(items))
        if items[0] == 0:
            sending.set()
            await go_on.wait()
        return [ValueError("odd") if item % 2 else item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(handler)
    first = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
    await sending.wait()
    later = [asyncio.ensure_future(batcher.submit(i)) for i in (4, 5)]
    go_on.set()
    answers = await asyncio.gather(*first, *later, return_exceptions=True)
    assert [a if isinstance(a, int) else "odd" for a in answers] == [0, "odd", 20, 40, "odd"]
    assert batches == [[0, 1, 2], [4, 5]]
    sender = batcher._sender
    assert await batcher.submit(6) == 60  # a later burst: the same sender
    assert batcher._sender is sender and batches[-1] == [6]
    await batcher.close()
    assert sender is not None and sender.done()


async def test_a_failed_batch_answers_its_items_and_the_sender_goes_on() -> None:
    async def handler(items: Sequence[int]) -> list[int | Exception]:
        if 99 in items:
            raise RuntimeError("server gone")
        return list(items)

    batcher: Batcher[int, int] = Batcher(handler)
    with pytest.raises(RuntimeError, match="server gone"):
        await batcher.submit(99)
    assert await batcher.submit(4) == 4
    sent: list[int] = []
    batcher._handler = lambda items: _recorded(items, sent)
    waiting = asyncio.ensure_future(batcher.submit(5))
    await asyncio.sleep(0)  # it is queued
    waiting.cancel()  # a caller that gave up: its item is still sent, its answer dropped
    assert await batcher.submit(6) == 6
    assert sent == [5, 6]
    await batcher.close()


async def _recorded(items: Sequence[int], sent: list[int]) -> list[int | Exception]:
    sent.extend(items)
    return list(items)


async def test_a_lone_item_is_sent_from_its_callers_task() -> None:
    senders: list[asyncio.Task[object] | None] = []

    async def handler(items: Sequence[int]) -> list[int | Exception]:
        senders.append(asyncio.current_task())
        return list(items)

    batcher: Batcher[int, int] = Batcher(handler)

    async def caller() -> tuple[int, asyncio.Task[object] | None]:
        return await batcher.submit(1), asyncio.current_task()

    answer, task = await caller()
    assert answer == 1 and senders == [task]
    assert batcher._sender is None  # no sender task was needed
    await batcher.close()


async def test_an_item_whose_caller_is_cancelled_while_it_is_sent_is_sent_again() -> None:
    """As with a task per batch, the item still goes (here again: the first try was cut)."""
    sent: list[list[int]] = []
    first = asyncio.Event()

    async def handler(items: Sequence[int]) -> list[int | Exception]:
        sent.append(list(items))
        if len(sent) == 1:
            first.set()
            await asyncio.Event().wait()
        return list(items)

    batcher: Batcher[int, int] = Batcher(handler)
    caller = asyncio.ensure_future(batcher.submit(7))
    await first.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert await batcher.submit(8) == 8  # after the sender sent 7 again
    assert [item for batch in sent for item in batch] == [7, 7, 8]
    await batcher.close()


async def test_an_item_alone_does_not_wait_a_turn_for_others() -> None:
    batches: list[list[int]] = []

    async def handler(items: Sequence[int]) -> list[int | Exception]:
        batches.append(list(items))
        await asyncio.sleep(0.01)
        return list(items)

    together: Batcher[int, int] = Batcher(handler)
    await asyncio.gather(together.submit(1), together.submit(2))
    assert batches == [[1, 2]]
    batches.clear()
    alone: Batcher[int, int] = Batcher(handler)
    await asyncio.gather(alone.submit(1, alone=True), alone.submit(2))
    assert batches == [[1], [2]]  # sent at once; the other one came after it
    await together.close()
    await alone.close()


async def test_a_lone_item_is_handled_in_its_callers_task_and_later_ones_by_a_drain() -> None:
    """KeyedBatcher: an item alone for its key is handled from the caller's task; the items
    that arrive meanwhile go together in the next batch, handled by a task; a caller
    cancelled while its lone item is handled leaves those answered."""
    batches: list[tuple[list[int], asyncio.Task[object] | None]] = []
    handling = asyncio.Event()
    go_on = asyncio.Event()

    async def handler(items: Sequence[int]) -> list[int | Exception]:
        batches.append((list(items), asyncio.current_task()))
        if items[0] in (0, 10):
            handling.set()
            await go_on.wait()
        return [item * 10 for item in items]

    batcher: KeyedBatcher[int, int] = KeyedBatcher(handler)
    lone = asyncio.ensure_future(batcher.submit("k", 0))
    await handling.wait()
    later = [asyncio.ensure_future(batcher.submit("k", i)) for i in (1, 2)]
    await asyncio.sleep(0)
    go_on.set()
    assert await lone == 0 and await asyncio.gather(*later) == [10, 20]
    assert [items for items, _ in batches] == [[0], [1, 2]]
    assert batches[0][1] is lone and batches[1][1] not in (lone, *later)

    batches.clear()
    handling.clear()
    go_on.clear()
    cancelled = asyncio.ensure_future(batcher.submit("k", 10))
    await handling.wait()
    waiting = asyncio.ensure_future(batcher.submit("k", 11))
    await asyncio.sleep(0)
    cancelled.cancel()
    assert await waiting == 110
    assert cancelled.cancelled() and [items for items, _ in batches] == [[10], [11]]
    assert await batcher.submit("k", 12) == 120  # the key works as before
