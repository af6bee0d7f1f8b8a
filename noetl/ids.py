"""Snowflake ids: 64-bit integers generated in the application.

Layout (most significant first): 1 unused sign bit, 41 bits of milliseconds since
2024-01-01T00:00:00Z, 10 bits of node id, 12 bits of sequence. Ids from one generator are
strictly increasing; ids from different nodes never collide.
"""

from __future__ import annotations

import threading
import time

EPOCH_MS = 1_704_067_200_000
NODE_BITS = 10
SEQUENCE_BITS = 12
MAX_NODE = (1 << NODE_BITS) - 1
_SEQUENCE_MASK = (1 << SEQUENCE_BITS) - 1


class SnowflakeGenerator:
    def __init__(self, node_id: int) -> None:
        if not 0 <= node_id <= MAX_NODE:
            raise ValueError(f"node id must be in 0..{MAX_NODE}, got {node_id}")
        self._node = node_id
        self._last_ms = -1
        self._sequence = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            now = max(int(time.time() * 1000) - EPOCH_MS, self._last_ms)
            if now == self._last_ms:
                self._sequence = (self._sequence + 1) & _SEQUENCE_MASK
                if self._sequence == 0:  # 4096 ids in one millisecond: borrow the next one
                    now += 1
            else:
                self._sequence = 0
            self._last_ms = now
            return (
                (now << (NODE_BITS + SEQUENCE_BITS))
                | (self._node << SEQUENCE_BITS)
                | (self._sequence)
            )


def timestamp_ms(snowflake: int) -> int:
    """The Unix time in milliseconds at which a snowflake id was generated."""
    return (snowflake >> (NODE_BITS + SEQUENCE_BITS)) + EPOCH_MS
