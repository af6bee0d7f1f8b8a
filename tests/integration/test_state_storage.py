"""The state snapshot, rewritten by every transaction of its execution, stays compressed in
its row (storage MAIN, migration 0009) instead of going out of line to TOAST on each write."""

from __future__ import annotations

import httpx
import psycopg

from noetl.config import Settings
from noetl.embedded.runtime import running
from tests.conftest import wait_for_end


def _chain(steps: int) -> str:
    lines = ["apiVersion: noetl.io/v2", "kind: Playbook", "metadata: {name: chain, path: t/chain}"]
    lines.append("workflow:")
    for k in range(steps):
        lines.append(f"  - step: s{k}")
        lines.append(f"    tool: {{kind: noop, result: {{i: {k}, text: '{'x' * 40}'}}}}")
        if k < steps - 1:
            lines.append(f"    next: [s{k + 1}]")
    return "\n".join(lines) + "\n"


async def test_a_large_state_snapshot_is_kept_compressed_in_its_row(settings: Settings) -> None:
    async with running(settings, workers=1) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (await api.post("/api/execute", json={"playbook": _chain(80)})).json()
        execution = await wait_for_end(api, started["execution_id"], timeout=120)
    assert execution["status"] == "COMPLETED"
    async with await psycopg.AsyncConnection.connect(str(settings.database_url)) as db:
        storage = await db.execute(
            "SELECT attstorage FROM pg_attribute"
            " WHERE attrelid = 'noetl.execution'::regclass AND attname = 'state'"
        )
        assert (await storage.fetchone()) == ("m",)
        sizes = await db.execute(
            "SELECT octet_length(state::text), pg_column_size(state),"
            " pg_column_compression(state) FROM noetl.execution WHERE execution_id = %s",
            (int(started["execution_id"]),),
        )
        raw, stored, method = await sizes.fetchone() or (0, 0, None)
    assert raw > 8000 and stored < raw / 3 and method is not None  # compressed, ~10 KB of JSON
