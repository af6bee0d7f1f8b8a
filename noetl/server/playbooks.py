"""The catalog as the server uses it: register, resolve a request to an entry, and the parsed
playbook of an entry (immutable, so parsed once per process and cached).

Parsing runs off the event loop (a hostile document cannot stall other requests; the YAML
bounds are in noetl.dsl.source), and a playbook without `executor.spec.max_step_runs` gets the
server's `NOETL_MAX_STEP_RUNS`."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool

from noetl.dsl import Playbook, parse_playbook
from noetl.errors import NotFoundError, RequestError
from noetl.store import catalog

PLAYBOOK_CACHE = 512  # parsed playbooks kept per server process


class Playbooks:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        new_id: Callable[[], int],
        max_step_runs: int | None = None,
    ) -> None:
        self.pool = pool
        self.new_id = new_id
        self.max_step_runs = max_step_runs
        self._parsed: OrderedDict[int, Playbook] = OrderedDict()  # most recent last

    async def parse(self, content: str, file: str | None = None) -> Playbook:
        playbook = await asyncio.to_thread(parse_playbook, content, file)
        if playbook.max_step_runs is None and self.max_step_runs is not None:
            playbook = dataclasses.replace(playbook, max_step_runs=self.max_step_runs)
        return playbook

    async def register(self, content: str, file: str | None = None) -> dict[str, Any]:
        playbook = await self.parse(content, file)  # PlaybookError → 422, nothing written
        digest = hashlib.sha256(content.encode()).hexdigest()
        async with self.pool.connection() as conn:
            entry = await catalog.register(
                conn, self.new_id(), playbook.path, playbook.name, content, digest
            )
        self._remember(entry["catalog_id"], playbook)
        return entry

    def _remember(self, catalog_id: int, playbook: Playbook) -> None:
        self._parsed[catalog_id] = playbook
        self._parsed.move_to_end(catalog_id)
        while len(self._parsed) > PLAYBOOK_CACHE:
            self._parsed.popitem(last=False)

    async def playbook(self, catalog_id: int) -> Playbook:
        """The parsed playbook of a catalog entry."""
        cached = self._parsed.get(catalog_id)
        if cached is None:
            async with self.pool.connection() as conn:
                entry = await catalog.get_entry(conn, catalog_id=catalog_id)
            if entry is None:
                raise NotFoundError(f"catalog entry {catalog_id} does not exist")
            cached = await self.parse(entry["content"], entry["path"])
        self._remember(catalog_id, cached)
        return cached

    async def resolve(
        self,
        *,
        path: str | None = None,
        catalog_id: int | None = None,
        content: str | None = None,
        version: int | None = None,
    ) -> dict[str, Any]:
        """The catalog entry a request names (inline content is registered first), without
        its text."""
        if content is not None:
            return await self.register(content)
        async with self.pool.connection() as conn:
            if catalog_id is not None:
                entry = await catalog.get_entry(conn, catalog_id=catalog_id, content=False)
                what = f"catalog entry {catalog_id}"
            elif path is not None:
                entry = await catalog.get_entry(conn, path=path, version=version, content=False)
                what = f"playbook {path!r}" + (f" version {version}" if version else "")
            else:
                raise RequestError("give one of `path`, `catalog_id` or `playbook`")
        if entry is None:
            raise NotFoundError(f"{what} is not registered")
        return entry
