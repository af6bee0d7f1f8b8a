"""Policy retries are visible while they happen: the worker tells the server at once and the
server records a `command.retrying` event (before the attempt's outcome), which `noetl run`,
`execute --wait` and the web UI show; on real PostgreSQL and NATS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import event_log, eventually, wait_for_end

# The first try fails; the second waits for the test's go-ahead file, so the test can look at
# the log while the command is still running.
FLAKY = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {{name: flaky, path: tests/flaky}}
workflow:
  - step: start
    tool:
      - name: call
        kind: python
        input: {{marker: "{marker}", go: "{go}"}}
        code: |
          import os, time
          if not os.path.exists(marker):
              open(marker, "w").close()
              raise ConnectionError("the service is warming up")
          for _ in range(6000):
              if os.path.exists(go):
                  break
              time.sleep(0.01)
          result = {{"answer": 42}}
        spec:
          policy:
            rules:
              - when: "{{{{ output.status == 'error' }}}}"
                then: {{do: retry, attempts: 4, delay: 0.1}}
"""


def flaky_playbook(tmp_path: Path) -> tuple[str, Path]:
    go = tmp_path / "go"
    return FLAKY.format(marker=tmp_path / "marker", go=go), go


async def test_a_retry_is_recorded_while_the_command_still_runs(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    playbook, go = flaky_playbook(tmp_path)
    started = await api.post("/api/execute", json={"playbook": playbook})
    assert started.status_code == 201, started.text
    execution_id = started.json()["execution_id"]

    async def retrying() -> list[dict[str, Any]]:
        events = await event_log(api, execution_id)
        return [e for e in events if e["event_type"] == "command.retrying"]

    [retry] = await eventually(retrying)
    running = (await api.get(f"/api/executions/{execution_id}")).json()
    assert running["status"] == "RUNNING"  # seen while the step runs, not with its outcome
    assert retry["step"] == "start" and retry["command_id"] == f"{execution_id}:start"
    assert retry["attempt"] == 1 and retry["error"] == "ConnectionError: the service is warming up"
    assert retry["payload"] == {
        "item": "call",
        "try": 2,
        "attempts": 4,
        "delay": 0.1,
        "error": "ConnectionError: the service is warming up",
    }

    go.touch()
    ended = await wait_for_end(api, execution_id)
    assert ended["status"] == "COMPLETED", ended["error"]
    kinds = [e["event_type"] for e in await event_log(api, execution_id)]
    assert kinds.index("command.retrying") < kinds.index("command.completed")

    # the attempt has ended: a late notice is refused, not recorded
    issued = next(
        e for e in await event_log(api, execution_id) if e["event_type"] == "command.issued"
    )
    late = await api.post(
        f"/api/commands/{issued['event_id']}/retrying",
        json={
            "attempt": 1,
            "worker_id": "w",
            "item": "call",
            "try": 3,
            "attempts": 4,
            "delay": 0.1,
            "error": "late",
        },
    )
    assert late.status_code == 409, late.text
    assert kinds.count("command.retrying") == 1
