"""Step logs: what python and shell steps print is stored with the outcome, bounded and
masked, and served by `GET /api/executions/{id}/logs`, on real PostgreSQL and NATS."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import run_playbook

PRINTING = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: printing, path: tests/printing}
workflow:
  - step: start
    tool:
      kind: python
      code: |
        import sys
        print("hello from python")
        print("warning on stderr", file=sys.stderr)
        result = 1
    next: [shell]
  - step: shell
    tool: {kind: shell, cmds: ["echo out-one", "echo err-two >&2"]}
    next: [noisy]
  - step: noisy
    tool:
      kind: python
      code: |
        for i in range(20000):
            print(f"line {i:05d} " + "x" * 20)
        result = 2
    next: [boom]
  - step: boom
    tool:
      kind: python
      code: |
        def inner(n):
            raise ValueError(f"bad value {n}")

        inner(7)
"""


async def test_python_and_shell_output_is_served_per_step(api: httpx.AsyncClient) -> None:
    execution = await run_playbook(api, PRINTING)
    assert execution["status"] == "FAILED"
    url = f"/api/executions/{execution['execution_id']}/logs"
    items = (await api.get(url)).json()["items"]
    by = {(i["step"], i["stream"]): i for i in items}
    assert by["start", "stdout"]["text"] == "hello from python\n"
    assert by["start", "stderr"]["text"] == "warning on stderr\n"
    assert by["start", "stdout"]["status"] == "COMPLETED"
    assert by["shell", "stdout"]["text"] == "out-one\n"
    assert by["shell", "stderr"]["text"] == "err-two\n"

    noisy = by["noisy", "stdout"]["text"]
    assert noisy.startswith("[... ") and "characters cut; the last 65536 kept ...]" in noisy
    assert noisy.endswith("line 19999 " + "x" * 20 + "\n")
    assert len(noisy) < 64 * 1024 + 200

    boom = by["boom", "stderr"]
    assert boom["status"] == "FAILED"
    # in the playbook text `code: |` of boom is on line 29, so code line 2 is line 31
    assert "line 2 (playbook line 31), in inner" in boom["text"]
    assert "line 4 (playbook line 33), in <module>" in boom["text"]
    assert "ValueError: bad value 7" in boom["text"]

    only = (await api.get(url, params={"step": "shell"})).json()["items"]
    assert {i["step"] for i in only} == {"shell"}
    after = int(items[1]["event_id"])
    later = (await api.get(url, params={"after": after})).json()["items"]
    assert all(int(i["event_id"]) > after for i in later) and later
    assert (await api.get("/api/executions/42/logs")).status_code == 404


async def test_a_credential_printed_by_a_step_is_masked(api: httpx.AsyncClient) -> None:
    secret = f"planted-{uuid.uuid4().hex}"
    created = await api.post(
        "/api/credentials",
        json={"name": "leaky", "type": "generic", "data": {"password": secret}},
    )
    assert created.status_code == 201, created.text
    playbook = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: leaky, path: tests/leaky}
keychain: [{name: k, credential: leaky}]
workflow:
  - step: start
    tool:
      kind: python
      input: {pw: "{{ keychain.k.password }}"}
      code: |
        print("the password is", pw)
        result = len(pw)
"""
    execution = await run_playbook(api, playbook)
    assert execution["status"] == "COMPLETED", execution["error"]
    items = (await api.get(f"/api/executions/{execution['execution_id']}/logs")).json()["items"]
    assert [i["text"] for i in items] == ["the password is ***\n"]
    events = (await api.get(f"/api/executions/{execution['execution_id']}/events")).text
    assert secret not in events


async def test_a_policy_retry_is_written_to_the_steps_log(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "retry.yaml"
    execution = await run_playbook(api, example.read_text(), {"marker": str(tmp_path / "m")})
    assert execution["status"] == "COMPLETED", execution["error"]
    items = (await api.get(f"/api/executions/{execution['execution_id']}/logs")).json()["items"]
    (stderr,) = [i["text"] for i in items if i["stream"] == "stderr"]
    assert stderr.startswith("Traceback (most recent call last):")  # the failed try's
    assert stderr.endswith(
        "ConnectionError: the service is warming up\n"
        "flaky: retry 2/3 in 0.2 s: ConnectionError: the service is warming up\n"
    )


PIPELINE = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: items, path: tests/items}
workflow:
  - step: start
    tool:
      - name: first
        kind: python
        code: "result = 1"
      - name: second
        kind: python
        code: |
          x = 1
          raise KeyError("nope")
"""


async def test_a_pipeline_items_traceback_points_at_its_playbook_line(
    api: httpx.AsyncClient,
) -> None:
    execution = await run_playbook(api, PIPELINE)
    assert execution["status"] == "FAILED"
    stderr = await _stderr_of(api, execution)
    assert "item second #" in stderr and ", line 2 (playbook line 14), in <module>" in stderr


async def test_a_single_tool_run_by_its_policy_maps_its_traceback_too(
    api: httpx.AsyncClient,
) -> None:
    playbook = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: policy, path: tests/policy}
workflow:
  - step: start
    tool:
      kind: python
      code: |
        raise KeyError("nope")
      spec:
        policy:
          rules:
            - when: "{{ output.status == 'error' }}"
              then: {do: fail}
"""
    execution = await run_playbook(api, playbook)
    assert execution["status"] == "FAILED"
    stderr = await _stderr_of(api, execution)
    assert ", line 1 (playbook line 9), in <module>" in stderr, stderr


async def _stderr_of(api: httpx.AsyncClient, execution: dict[str, Any]) -> str:
    """The one stderr text of an execution's step logs."""
    items = (await api.get(f"/api/executions/{execution['execution_id']}/logs")).json()["items"]
    (stderr,) = [i["text"] for i in items if i["stream"] == "stderr"]
    return str(stderr)
