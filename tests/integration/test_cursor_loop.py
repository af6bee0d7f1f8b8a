"""A cursor loop on the real PostgreSQL: the claim query leases rows of a work table a frame
at a time (FOR UPDATE SKIP LOCKED ... RETURNING), each row runs the step's pipeline on a
worker, which may enqueue more work; the loop ends when a claim returns no rows."""

from __future__ import annotations

import httpx
import psycopg

from noetl.config import Settings
from tests.conftest import event_log, run_playbook

DRAIN = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: cursor_drain, path: tests/cursor_drain}
workload: {pages: 3}
workflow:
  - step: start
    tool:
      kind: postgres
      auth: pg_cursor
      command: |
        DROP TABLE IF EXISTS cursor_work;
        CREATE TABLE cursor_work (id int, page int, status text DEFAULT 'pending',
                                  PRIMARY KEY (id, page));
        INSERT INTO cursor_work (id, page) SELECT g, 1 FROM generate_series(1, 5) g;
    next: [{step: drain}]
  - step: drain
    loop:
      cursor:
        kind: postgres
        auth: pg_cursor
        claim: |
          WITH candidate AS (
            SELECT id, page FROM cursor_work WHERE status = 'pending'
            ORDER BY id, page FOR UPDATE SKIP LOCKED
            LIMIT {{ __frame_max_rows | default(1) | int }}
          )
          UPDATE cursor_work w SET status = 'claimed' FROM candidate c
          WHERE w.id = c.id AND w.page = c.page
          RETURNING w.id, w.page;
      iterator: work
      spec:
        mode: cursor
        frame: {max_rows: 2, row_concurrency: 2, process: row, lease_seconds: 120}
    tool:
      - name: square
        kind: python
        input: {n: "{{ iter.work.id }}"}
        code: "result = {'square': n * n}"
      - name: save
        kind: postgres
        auth: pg_cursor
        command: |
          UPDATE cursor_work SET status = 'done'
          WHERE id = {{ iter.work.id }} AND page = {{ iter.work.page }};
          INSERT INTO cursor_work (id, page)
          SELECT {{ iter.work.id }}, {{ iter.work.page }} + 1
          WHERE {{ iter.work.page }} < {{ pages }} AND {{ square.square }} > 4;
    next:
      arcs:
        - {step: check, when: "{{ event.name == 'loop.done' }}"}
  - step: check
    tool:
      kind: postgres
      auth: pg_cursor
      query: "SELECT status, count(*) AS n FROM cursor_work GROUP BY status"
"""


async def test_a_cursor_loop_drains_a_postgres_work_table(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    credential = {"name": "pg_cursor", "type": "postgres", "data": {"dsn": settings.database_url}}
    assert (await api.post("/api/credentials", json=credential)).status_code == 201
    execution = await run_playbook(api, DRAIN)
    assert execution["status"] == "COMPLETED", execution["error"]
    # ids 1, 2 have one page; 3, 4, 5 three pages each: 2 + 9 rows, all done
    assert execution["result"]["rows"] == [{"status": "done", "n": 11}]
    events = await event_log(api, execution["execution_id"])
    exit_ = next(e for e in events if e["event_type"] == "step.exit" and e["step"] == "drain")
    assert exit_["result"] == {
        "count": 11,
        "succeeded": 11,
        "failed": 0,
        "stats": {"total": 11, "success": 11, "failed": 0},
    }
    claims = [
        e for e in events if e["event_type"] == "command.issued" and "/claim" in e["command_id"]
    ]
    assert len(claims) >= 6  # frames of at most 2 rows, then the empty claim
    assert all("LIMIT 2" in e["payload"]["tool"]["query"] for e in claims)
    assert settings.database_url is not None
    async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
        await conn.execute("DROP TABLE cursor_work")
