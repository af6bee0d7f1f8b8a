"""Requests for one key that arrive while its batch runs share the next batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from noetl.batching import KeyedBatcher


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
