"""Record the runs of tests/histories/playbooks.py on a real server (embedded PostgreSQL and
NATS, a server and a worker process) as JSON fixtures. Run by hand when a history is added:

    .venv/bin/python -m tests.histories.record

Each fixture holds the playbook, the event log as `GET /api/executions/{id}/events` returns it
and the execution as `GET /api/executions/{id}` returns it (and the same for sub-playbooks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import cluster, run_to_end
from tests.histories.playbooks import PLAYBOOKS, RECORDED

HERE = Path(__file__).resolve().parent


def _record(client: httpx.Client, execution: dict[str, Any]) -> dict[str, Any]:
    execution_id = execution["execution_id"]
    events = client.get(f"/api/executions/{execution_id}/events", params={"limit": 10000})
    items = events.json()["items"]
    everything = client.get("/api/executions", params={"limit": 1000}).json()["items"]
    children = [
        _record(client, client.get(f"/api/executions/{row['execution_id']}").json())
        for row in everything
        if row.get("parent_execution_id") == execution_id
    ]
    return {"execution": execution, "events": items, "children": children}


def main() -> None:
    with cluster(workers=1, concurrency=4) as url, httpx.Client(base_url=url, timeout=60) as client:
        for text in PLAYBOOKS.values():
            client.post("/api/catalog/register", content=text).raise_for_status()
        for name in RECORDED:
            execution = run_to_end(client, {"path": f"histories/{name}"})
            record = {"playbooks": PLAYBOOKS, **_record(client, execution)}
            path = HERE / f"{name}.json"
            path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
            print(f"{path.name}: {execution['status']}, {len(record['events'])} events")


if __name__ == "__main__":
    main()
