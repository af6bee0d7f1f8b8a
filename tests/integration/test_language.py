"""Language features through the real server and worker: pipelines, policies, data flow."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from noetl.config import Settings
from noetl.embedded.runtime import running
from tests.conftest import event_log, run_playbook


@contextlib.asynccontextmanager
async def serving(path: str, handler: Any) -> AsyncIterator[int]:
    """An HTTP server on a free loopback port answering GET `path` with `handler`."""
    from aiohttp import web

    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


HEAD = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: lang, path: tests/lang}\n"


async def test_a_pipeline_passes_data_between_items_and_retries_a_flaky_one(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    execution = await run_playbook(
        api,
        HEAD
        + """
workload: {base: 20}
workflow:
  - step: start
    tool:
      - name: generate
        kind: python
        input: {base: "{{ base }}"}
        code: "result = {'status': 'ok', 'data': {'value': base + 1}}"
        set: {generated: "{{ output }}"}
      - name: flaky
        kind: python
        input: {value: "{{ generated.data.value }}", marker: "{{ marker }}"}
        code: |
          import os
          if not os.path.exists(marker):
              open(marker, "w").close()
              raise RuntimeError("first try fails")
          result = {"doubled": value * 2}
        spec:
          policy:
            rules:
              - when: "{{ output.status == 'error' }}"
                then: {do: retry, attempts: 3, delay: 0.05}
              - else: {then: {do: continue, set: {ctx.total: "{{ output.data.doubled }}"}}}
    next: [end]
  - step: end
    tool:
      kind: python
      input: {total: "{{ ctx.total }}", prev: "{{ result }}"}
      code: "result = [total, prev]"
""",
        {"marker": str(tmp_path / "flaky")},
    )
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == [42, {"doubled": 42}]
    events = await event_log(api, execution["execution_id"])
    claims = [e for e in events if e["event_type"] == "command.claimed" and e["step"] == "start"]
    assert len(claims) == 1  # the retry ran inside the same command, on the same worker


async def test_a_policy_can_fail_the_step_with_the_tool_error(api: httpx.AsyncClient) -> None:
    execution = await run_playbook(
        api,
        HEAD
        + """
workflow:
  - step: start
    tool:
      kind: python
      code: "raise ValueError('bad row')"
      spec:
        policy:
          rules:
            - when: "{{ output.status == 'error' }}"
              then: {do: retry, attempts: 2, delay: 0.01}
""",
    )
    assert execution["status"] == "FAILED"
    assert "ValueError: bad row" in execution["error"]


async def test_an_http_500_is_retried_by_policy_until_it_succeeds(api: httpx.AsyncClient) -> None:
    from aiohttp import web

    calls: list[str] = []

    async def flaky(request: web.Request) -> web.Response:
        calls.append(request.method)
        if len(calls) < 3:
            return web.json_response({"error": "busy"}, status=500)
        return web.json_response({"total": 7})

    async with serving("/data", flaky) as port:
        execution = await run_playbook(
            api,
            HEAD
            + f"""
workflow:
  - step: start
    tool:
      kind: http
      url: "http://127.0.0.1:{port}/data"
      spec:
        policy:
          rules:
            - when: "{{{{ output.status == 'error' and output.error.retryable }}}}"
              then: {{do: retry, attempts: 5, delay: 0.05, backoff: linear}}
            - else: {{then: {{do: continue}}}}
""",
        )
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"]["status_code"] == 200
    assert execution["result"]["data"] == {"total": 7}
    assert calls == ["GET", "GET", "GET"]


async def test_a_call_error_arc_routes_on_the_http_status(api: httpx.AsyncClient) -> None:
    """An arc reads `output.error.status` / `.kind` of a failed http call, as a policy rule
    does on the worker: the worker reports them with the failure, the log keeps them."""
    from aiohttp import web

    async def missing(request: web.Request) -> web.Response:
        return web.json_response({"error": "no such thing"}, status=404)

    async with serving("/thing", missing) as port:
        execution = await run_playbook(
            api,
            HEAD
            + f"""
workflow:
  - step: start
    tool: {{kind: http, url: "http://127.0.0.1:{port}/thing"}}
    next:
      arcs:
        - step: gone
          when: "{{{{ event.name == 'call.error' and output.error.status == 404 }}}}"
          set: {{ctx.kind: "{{{{ output.error.kind }}}}"}}
        - step: broken
          when: "{{{{ event.name == 'call.error' }}}}"
  - step: gone
    tool: {{kind: python, input: {{kind: "{{{{ ctx.kind }}}}"}}, code: "result = kind"}}
  - {{step: broken, tool: {{kind: noop, result: broken}}}}
""",
        )
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == "not_found"
    events = await event_log(api, execution["execution_id"])
    [failed] = [e for e in events if e["event_type"] == "command.failed"]
    assert failed["payload"]["error_fields"] == {
        "status": 404,
        "kind": "not_found",
        "retryable": False,
    }


async def test_an_http_step_past_the_response_limit_fails_and_the_worker_carries_on(
    settings: Settings,
) -> None:
    """NOETL_MAX_RESPONSE_BYTES reaches the worker's http tool: an endless body fails its
    step with the limit named, and the same worker runs the next execution."""
    from aiohttp import web

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        while True:
            await response.write(b"x" * 65536)

    async with (
        serving("/endless", endless) as port,
        running(settings.with_(max_response_bytes=100_000), workers=1) as runtime,
        runtime.client() as api,
    ):
        url = f"http://127.0.0.1:{port}/endless"
        failed = await run_playbook(
            api, HEAD + f"workflow:\n  - step: start\n    tool: {{kind: http, url: '{url}'}}\n"
        )
        assert failed["status"] == "FAILED"
        assert "larger than 100,000 bytes (NOETL_MAX_RESPONSE_BYTES)" in failed["error"]
        after = await run_playbook(
            api, HEAD + "workflow:\n  - step: start\n    tool: {kind: noop, result: 1}\n"
        )
        assert after["status"] == "COMPLETED" and after["result"] == 1
