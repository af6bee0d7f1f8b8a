"""Resource bombs: YAML aliases, deep JSON, chunked bodies, templates and runaway routing get
a clear 4xx or fail their execution with the reason, while /health keeps answering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx

from tests.conftest import run_playbook

HEADER = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: bomb, path: tests/bomb}
"""

ALIAS_BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


async def test_a_yaml_alias_bomb_is_a_422_and_health_keeps_answering(
    api: httpx.AsyncClient,
) -> None:
    bombs = [api.post("/api/catalog/register", content=ALIAS_BOMB) for _ in range(3)]
    health = [api.get("/health") for _ in range(3)]
    answers = await asyncio.gather(*bombs, *health)
    for bomb in answers[:3]:
        assert bomb.status_code == 422, bomb.text
        assert "aliases" in bomb.json()["message"]
    assert [h.status_code for h in answers[3:]] == [200, 200, 200]


async def test_a_merge_key_bomb_and_a_bomb_in_a_key_are_422(api: httpx.AsyncClient) -> None:
    lines = ['a0: &a0 {k: "x"}']
    for level in range(1, 24):
        lines.append(f"a{level}: &a{level} {{x: *a{level - 1}, y: *a{level - 1}}}")
    lines.append("? *a23\n: boom")
    response = await api.post("/api/catalog/register", content="\n".join(lines))
    assert response.status_code == 422, response.text


async def test_deep_yaml_and_deep_json_are_4xx(api: httpx.AsyncClient) -> None:
    deep_yaml = HEADER + "workload: " + "[" * 5000 + "]" * 5000 + "\n"
    response = await api.post("/api/catalog/register", content=deep_yaml)
    assert response.status_code == 422, response.text
    assert "deep" in response.json()["message"]
    for depth in (500, 100_000):
        body = '{"path": "p", "payload": {"x": ' + "[" * depth + "]" * depth + "}}"
        response = await api.post(
            "/api/execute", content=body, headers={"content-type": "application/json"}
        )
        assert 400 <= response.status_code < 500, (depth, response.text)


async def test_an_oversized_playbook_is_refused(api: httpx.AsyncClient) -> None:
    text = HEADER + "workload:\n" + "".join(f"  k{i}: {'x' * 60}\n" for i in range(40_000))
    response = await api.post("/api/catalog/register", content=text)
    assert response.status_code in {413, 422}, response.text
    assert "bytes" in response.json()["message"]


async def test_a_chunked_body_over_the_limit_is_413(api: httpx.AsyncClient) -> None:
    def chunks() -> Callable[[], AsyncIterator[bytes]]:
        async def body() -> AsyncIterator[bytes]:
            yield b'{"path": "p", "payload": {"x": "'
            for _ in range(6):
                yield b"#" * (1024 * 1024)
            yield b'"}}'

        return body

    for path in ("/api/execute", "/api/catalog/register", "/api/events"):
        response = await api.post(
            path, content=chunks()(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413, (path, response.text)
        assert "NOETL_MAX_PAYLOAD_BYTES" in response.json()["message"]


async def test_a_template_bomb_in_a_condition_fails_the_execution(api: httpx.AsyncClient) -> None:
    execution = await run_playbook(
        api,
        HEADER
        + """workload: {k: 1000000000}
workflow:
  - step: start
    tool: {kind: noop}
    next:
      - step: end
        when: "{{ ('a' * k) | length > 0 }}"
  - step: end
    tool: {kind: noop}
""",
    )
    assert execution["status"] == "FAILED"
    assert "the limit is" in execution["error"] and "start" in execution["error"]


async def test_a_template_bomb_in_an_input_fails_on_the_server_and_on_the_worker(
    api: httpx.AsyncClient,
) -> None:
    server_side = await run_playbook(
        api,
        HEADER
        + """workflow:
  - step: start
    tool:
      kind: python
      input: {x: "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"}
      code: "result = x"
""",
    )
    assert server_side["status"] == "FAILED"
    assert "operations" in server_side["error"]
    worker_side = await run_playbook(
        api,
        HEADER
        + """workflow:
  - step: start
    tool:
      - name: one
        kind: noop
      - name: two
        kind: python
        input: {x: "{{ range(10 ** 9) | list }}"}
        code: "result = x"
""",
    )
    assert worker_side["status"] == "FAILED"
    assert "the limit is" in worker_side["error"]


async def test_runaway_routing_fails_after_the_step_run_limit(api: httpx.AsyncClient) -> None:
    execution = await run_playbook(
        api,
        HEADER
        + """executor: {spec: {max_step_runs: 25}}
workflow:
  - step: start
    tool: {kind: noop}
    next: [start]
""",
    )
    assert execution["status"] == "FAILED"
    assert "25 step runs" in execution["error"] and "max_step_runs" in execution["error"]
