"""Language features through the real server and worker: pipelines, policies, data flow."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import event_log, run_playbook

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

    app = web.Application()
    app.router.add_get("/data", flaky)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
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
    finally:
        await runner.cleanup()
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

    app = web.Application()
    app.router.add_get("/thing", missing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
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
    finally:
        await runner.cleanup()
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == "not_found"
    events = await event_log(api, execution["execution_id"])
    [failed] = [e for e in events if e["event_type"] == "command.failed"]
    assert failed["payload"]["error_fields"] == {
        "status": 404,
        "kind": "not_found",
        "retryable": False,
    }
