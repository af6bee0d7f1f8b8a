"""Upstream tool fields through real playbooks: http `payload`/`endpoint`/`verify_ssl`,
postgres `credential:`, python `args`/`context`/`libs {from, import}` and script sources
(file, http), each checked by what the step returned."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from noetl.config import Settings
from noetl.tools import ToolCall, ToolError
from noetl.tools.http import HttpTool
from tests.conftest import run_playbook


async def _echo(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "method": request.method,
            "query": dict(request.query),
            "content_type": request.headers.get("Content-Type"),
            "body": (await request.read()).decode(),
        }
    )


async def _script(_: web.Request) -> web.Response:
    return web.Response(text="def main(name):\n    return {'hello': name, 'from': 'http'}\n")


@pytest.fixture(scope="module")
async def base_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/echo", _echo)
    app.router.add_get("/script.py", _script)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def _http(**config: Any) -> Any:
    tool = HttpTool()
    try:
        return await tool.run(ToolCall("http", config, {}, 1, "step"))
    finally:
        await tool.close()


async def test_http_payload_is_the_query_of_a_get_and_the_body_otherwise(base_url: str) -> None:
    got = await _http(endpoint=f"{base_url}/echo", payload={"a": 1, "b": "x"}, verify_ssl=False)
    assert got["data"]["query"] == {"a": "1", "b": "x"}
    posted = await _http(url=f"{base_url}/echo", method="POST", payload={"a": [1, 2]})
    assert (posted["data"]["content_type"], posted["data"]["body"]) == (
        "application/json",
        '{"a":[1,2]}',
    )
    form = await _http(
        url=f"{base_url}/echo",
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        payload={"grant_type": "client_credentials", "n": 5},
    )
    assert form["data"]["body"] == "grant_type=client_credentials&n=5"
    with pytest.raises(ToolError, match="one body"):
        await _http(url=f"{base_url}/echo", method="POST", payload={"a": 1}, json={"b": 2})


async def test_http_inline_auth_from_a_cloud_secret_provider_fails_naming_it(
    base_url: str,
) -> None:
    auth = {"openai": {"type": "bearer", "provider": "secret_manager", "key": "projects/x"}}
    with pytest.raises(ToolError, match=r"http auth 'openai': .* Google Secret Manager"):
        await HttpTool().run(ToolCall("http", {"url": f"{base_url}/echo"}, {}, 1, "s", auth))
    inline = {"svc": {"type": "bearer", "token": "t-123"}}
    tool = HttpTool()
    try:
        answer = await tool.run(ToolCall("http", {"url": f"{base_url}/echo"}, {}, 1, "s", inline))
    finally:
        await tool.close()
    assert answer["data"]["method"] == "GET"


async def test_upstream_python_and_postgres_fields_in_a_playbook(
    api: httpx.AsyncClient, settings: Settings, base_url: str, tmp_path: Path
) -> None:
    credential = {"name": "pg_up", "type": "postgres", "data": {"dsn": settings.database_url}}
    assert (await api.post("/api/credentials", json=credential)).status_code == 201
    script = tmp_path / "hello.py"
    script.write_text("def main(name, count=1):\n    return {'greeting': name * count}\n")
    playbook = f"""
apiVersion: noetl.io/v2
kind: Playbook
metadata: {{name: upstream_fields, path: tests/upstream_fields}}
workload: {{action: list_users, who: ann}}
workflow:
  - step: start
    tool:
      kind: postgres
      credential: pg_up
      command: "SELECT 41 + 1 AS answer"
    next: [from_file]
  - step: from_file
    tool:
      kind: python
      script: {{uri: "{script}", source: {{type: file}}}}
      input: {{name: "{{{{ who }}}}", count: 2}}
    next: [from_http]
  - step: from_http
    tool:
      kind: python
      script: {{uri: script.py, source: {{type: http, endpoint: "{base_url}/script.py"}}}}
      input: {{name: "{{{{ who }}}}"}}
    next: [end]
  - step: end
    tool:
      kind: python
      args: {{extra: 7}}
      input: {{answer: "{{{{ start.command_0.rows[0].answer }}}}"}}
      libs: {{dt: {{from: datetime, import: date}}}}
      code: |
        result = {{
            "answer": args["answer"],
            "extra": extra,
            "action": context.get("action"),
            "file": context.get("from_file"),
            "http": context["from_http"],
            "date_type": dt.__name__,
        }}
"""
    execution = await run_playbook(api, playbook)
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == {
        "answer": 42,
        "extra": 7,
        "action": "list_users",
        "file": {"greeting": "annann"},
        "http": {"hello": "ann", "from": "http"},
        "date_type": "date",
    }
